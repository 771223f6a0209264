"""One training loop for `align` and `finetune`: seeded, resumable, single process or distributed.

No upstream counterpart (upstream trains with its dora/flashy solvers). The same command runs
alone or under `torchrun --nproc_per_node N`: each process takes its slice of the same global
batch, gradients are averaged with one all-reduce (gloo on CPU, nccl on GPU), so N processes
make the same updates as one process with the same global batch.

Outputs, in `out/`: the model (`state_dict.bin` + `compression_state_dict.bin`, upstream's
format), `train_state.pt` (trainable weights, optimizer, RNG, step: what `--resume` reads),
`log.jsonl` (one line per logged step) and `metrics.json` (held-out losses before / after).
Every file is written atomically. As `swap`, a run never writes into its source checkpoint or
student folder, and never over an earlier run unless told: `--resume` continues it (and needs
its train state), `--overwrite` starts over.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.export import save_torch, write_text
from ..utils.schedule import warmup_cosine
from .config import RESUME_KEYS, TrainConfig  # noqa: F401  (TrainConfig: also imported from here)
from .export import export_musicgen

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
RUN_FILES = (STATE_FILE, LOG_FILE, METRICS_FILE, "state_dict.bin", "compression_state_dict.bin")  # what a run writes
STATE_KEYS = ("step", "params", "optimizer", "rng", "py_rng", "before", "config")
@dataclass
class Dist:
    """This process's place in a distributed run (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this run created the process group, so it also ends it

    @classmethod
    def from_env(cls, device: str) -> "Dist":
        """Join the process group that `torchrun` (or a spawner setting the same variables) describes."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owns)

    def close(self) -> None:
        if self.owns_group:
            torch.distributed.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors over processes, in place, with one all-reduce."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def device_for(cfg: TrainConfig) -> str:
    """Under torchrun on GPUs, each process takes the GPU of its LOCAL_RANK."""
    if torch.device(cfg.device).type == "cuda" and torch.device(cfg.device).index is None:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return cfg.device


def batch_indices(step: int, train_idx: list[int], batch_size: int, seed: int) -> list[int]:
    """The global batch of `step`: a fresh seeded permutation each epoch, the remainder dropped."""
    per_epoch = len(train_idx) // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(train_idx)} training samples")
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return [train_idx[i] for i in order[position * batch_size:(position + 1) * batch_size].tolist()]


def learning_rate(cfg: TrainConfig, step: int) -> float:
    return warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr)


def _check_resume(saved: dict, cfg: TrainConfig) -> None:
    now = dataclasses.asdict(cfg)
    changed = {k: (saved.get(k), now[k]) for k in RESUME_KEYS if json.dumps(saved.get(k), default=str)
               != json.dumps(now[k], default=str)}
    if changed:
        raise ValueError(f"--resume with settings that differ from the saved run: {changed} (saved, now). Resume "
                         "with the same settings, or write to a new --out folder")


def check_output(cfg: TrainConfig) -> None:
    """Refuse an `out` that is a source folder, or holds a run that neither --resume nor --overwrite names."""
    out = Path(cfg.out).expanduser().resolve()
    for role, source in (("source checkpoint", cfg.model), ("student encoder", cfg.student)):
        if source and Path(source).expanduser().exists() and Path(source).expanduser().resolve() == out:
            raise ValueError(f"-o {cfg.out} is the {role} ({source}): the run would replace its files; choose another "
                             "-o (a new or empty folder)")
    if cfg.resume:
        if not (out / STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume: {out / STATE_FILE} does not exist: nothing to resume; run without "
                                    "--resume to start (with --overwrite if the folder holds an older run)")
        return
    existing = sorted(name for name in RUN_FILES if (out / name).exists())
    if existing and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a run ({', '.join(existing)}): --resume to continue it, "
                              "--overwrite to start over (its checkpoint, train state and log are replaced), or "
                              "choose another -o")


def read_state(path: Path) -> dict:
    """The train state `--resume` continues from, or a ValueError saying the file is damaged."""
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as exc:  # truncated, empty, not a torch file, or holding objects weights_only refuses
        saved, why = None, f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        missing = [k for k in STATE_KEYS if k not in saved] if isinstance(saved, dict) else list(STATE_KEYS)
        why = f"it lacks {missing}" if missing else None
    if why is not None:
        raise ValueError(f"{path} cannot be read as a train state ({why}): it is damaged or was not written by "
                         "align/finetune; restore it, or start over with --overwrite instead of --resume")
    return saved


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        write_text(path, "".join(line + "\n" for line in lines), overwrite=True)


def train(cfg: TrainConfig) -> dict:
    """Run `cfg.mode` to `cfg.steps`, write the model to `cfg.out`, return the held-out metrics."""
    from tqdm import tqdm

    from .tasks import TASKS

    from ..models.musicgen import checkpoint_location

    # The model names generate takes ('default': the embedded model's folder).
    cfg = dataclasses.replace(cfg, device=device_for(cfg), model=checkpoint_location(cfg.model))
    check_output(cfg)  # before any work: a refusal costs nothing
    saved = read_state(Path(cfg.out) / STATE_FILE) if cfg.resume else None
    dist = Dist.from_env(cfg.device)
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {dist.world} processes")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    task = TASKS[cfg.mode](cfg, dist)
    if cfg.batch_size > len(task.train_idx):
        # A short caption file (30 captions: 27 after the hold-out) is not an error: each step takes all of them.
        size = len(task.train_idx) - len(task.train_idx) % dist.world
        if size == 0:
            raise ValueError(f"{len(task.train_idx)} training samples cannot be split over {dist.world} processes: "
                             "give more captions or run fewer processes")
        warnings.warn(f"batch_size {cfg.batch_size} is larger than the {len(task.train_idx)} training samples; "
                      f"using {size} (set --batch-size to choose)")
        cfg = dataclasses.replace(cfg, batch_size=size)
    params = task.trainable()
    names = sorted(params)
    optimizer = torch.optim.AdamW([params[n] for n in names], lr=cfg.lr, weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed + 1)  # dropout draws; resumed from the saved state below
    state_file, log_file = out / STATE_FILE, out / LOG_FILE
    start, before = 0, None
    if saved is not None:
        _check_resume(saved["config"], cfg)
        with torch.no_grad():
            for name in names:
                params[name].copy_(saved["params"][name])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        version, internal, gauss = saved["py_rng"]  # word dropout draws from Python's RNG
        random.setstate((version, tuple(internal), gauss))
        start, before = saved["step"], saved["before"]
        if dist.rank == 0:
            _trim_log(log_file, start)
    elif dist.rank == 0 and log_file.exists():
        log_file.unlink()
    if before is None:
        before = task.evaluate(cfg.batch_size) if dist.rank == 0 else {}

    def log(record: dict) -> None:
        if dist.rank == 0:
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")

    def save(step: int) -> None:
        if dist.rank == 0:
            save_torch({"step": step, "params": {n: params[n].detach().cpu() for n in names},
                        "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                        "py_rng": list(random.getstate()), "before": before,
                        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str))}, state_file,
                       overwrite=True)

    if start == 0:
        log({"step": 0, "heldout": before})
    task.cond.train()
    per_rank = cfg.batch_size // dist.world
    bar = tqdm(total=cfg.steps, initial=start, desc=cfg.mode, disable=not cfg.progress or dist.rank != 0)
    for step in range(start, cfg.steps):
        idx = batch_indices(step, task.train_idx, cfg.batch_size, cfg.seed)
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, terms = task.loss(idx[dist.rank * per_rank:(dist.rank + 1) * per_rank], task.batch_length(idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for name in names:  # a parameter outside this step's graph still takes part in the all-reduce
            if params[name].grad is None:
                params[name].grad = torch.zeros_like(params[name])
        stats = torch.tensor([loss.item(), *terms.values()], device=loss.device)  # logged, averaged over ranks
        dist.average([params[n].grad for n in names] + [stats])
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([params[n] for n in names], cfg.grad_clip)
        optimizer.step()
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{stats[0].item():.4f}")
        if done % cfg.log_every == 0 or done == cfg.steps:
            log({"step": done, "loss": stats[0].item(), "lr": lr, **dict(zip(terms, stats[1:].tolist()))})
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps and dist.rank == 0:
            log({"step": done, "heldout": task.evaluate(cfg.batch_size)})
            task.cond.train()
        if done % cfg.save_every == 0 or done == cfg.steps:
            save(done)
    bar.close()
    result = {"before": before}
    if dist.rank == 0:
        result["after"] = task.evaluate(cfg.batch_size)
        log({"step": cfg.steps, "heldout": result["after"]})
        export_musicgen(task.lm, task.lm.cfg, cfg.model, out, overwrite=True)
        write_text(out / METRICS_FILE, json.dumps(result, indent=2), overwrite=True)
    dist.barrier()
    dist.close()
    return result
