"""What `align` and `finetune` train, on which data, with which loss; the loop is in `train.py`.

No upstream counterpart for alignment; fine-tuning optimises upstream's own MusicGen loss
(`audiocraft/solvers/musicgen.py`: cross-entropy over the delay pattern), restricted to the
conditioner (projection / adapter, optionally the encoder) and optional LoRA on cross-attention.

Both tasks cache what does not change during training: the frozen encoder's states per text,
and for alignment the teacher's targets (computed once, per text, without padding; see
`features.py`). Each batch is padded to the longest text of the *global* batch, so that every
process of a distributed run computes exactly what one process would.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.conditioners import ConditioningAttributes, HFEncoderConditioner, build_conditioner
from ..modules.conditioners.hf_adapter import HFAdapterConditioner
from ..utils.export import save_torch
from .data import encode_audio_tokens, random_codes, read_captions, read_manifest, read_pairs, segment, split_holdout
from .features import (conditions, cross_attention_tap, encoder_states, groups_by_length, lm_outputs, no_tap, pad,
                       token_lengths)
from .lora import apply_lora
from .losses import feature_loss, lm_cross_entropy, next_token_kl, parse_weights, xattn_loss


def text_attribute(lm, attribute: str | None = None) -> str:
    """The text attribute whose conditioner is trained (the model's only one, unless named)."""
    names = lm.condition_provider.text_conditions
    if attribute is None:
        if len(names) != 1:
            raise ValueError(f"the model has text conditioners {names}: choose one with --attribute")
        return names[0]
    if attribute not in names:
        raise ValueError(f"the model has no text conditioner {attribute!r}; it has {names}")
    return attribute


def new_student(cfg, lm, finetune: bool = False) -> HFAdapterConditioner:
    """A fresh `hf_adapter` conditioner for `cfg.student` (seeded: the same init in every process)."""
    torch.manual_seed(cfg.seed)
    return HFAdapterConditioner(cfg.student, lm.dim, adapter=cfg.adapter, finetune=finetune, device=cfg.device,
                                pooling=cfg.pooling, layer=cfg.layer).eval()


def cached(path: Path, key: str, dist, compute) -> dict:
    """`compute()` once: rank 0 computes and saves to `path`; the others wait, then read it.

    A file that cannot be read (truncated, damaged) is computed again by rank 0, with a warning.
    """
    def read():
        if not path.is_file():
            return None
        try:
            data = torch.load(path, weights_only=True)
        except Exception as exc:  # a damaged cache is recomputed, never a traceback
            if dist.rank != 0:
                raise RuntimeError(f"rank {dist.rank}: the feature cache {path} written by rank 0 cannot be read "
                                   f"({type(exc).__name__}: {str(exc)[:200]})") from None
            warnings.warn(f"{path} cannot be read ({type(exc).__name__}); computing it again")
            return None
        return data if isinstance(data, dict) and data.get("key") == key else None

    data = read() if dist.rank == 0 else None
    if dist.rank == 0 and data is None:
        data = {"key": key, **compute()}
        save_torch(data, path, overwrite=True)
    dist.barrier()
    if dist.rank != 0:
        data = read()
        if data is None:
            raise RuntimeError(f"rank {dist.rank}: the feature cache {path} written by rank 0 is missing; all "
                               "processes must share one file system (or set --cache-dir to a shared folder)")
    return data


CACHE_FORMAT = 2  # bump when what the caches hold changes


def fingerprint(**fields) -> str:
    """Key of a cache file: everything its content depends on."""
    fields["format"] = CACHE_FORMAT
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


class Task:
    """Common part: a frozen LM whose conditioner for `attribute` is `self.cond` (trained)."""

    lm: nn.Module
    cond: nn.Module
    attribute: str
    train_idx: list[int]
    heldout_idx: list[int]
    lengths: list[int]  # tokens of each sample's text (pads the global batch)

    def trainable(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.lm.named_parameters() if p.requires_grad}

    def batch_length(self, idx: list[int]) -> int:
        return max(self.lengths[i] for i in idx)

    def loss(self, idx: list[int], length: int | None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def _freeze(self) -> None:
        # The loaders give a float16 LM on accelerators (for generation); gradients that flow back
        # through it to the conditioner are computed in float32.
        self.lm.float().eval().requires_grad_(False)
        self.cond.requires_grad_(True)  # projection + adapter (+ the encoder when it is a submodule)

    @torch.no_grad()
    def evaluate(self, batch_size: int) -> dict[str, float]:
        """Mean held-out losses, every text run unpadded (as it would be alone at generation)."""
        was_training = self.cond.training
        self.cond.eval()
        totals: dict[str, float] = defaultdict(float)
        for group in groups_by_length([self.lengths[i] for i in self.heldout_idx], batch_size):
            idx = [self.heldout_idx[j] for j in group]
            total, terms = self.loss(idx, None)
            for name, value in {"loss": total.item(), **terms}.items():
                totals[name] += value * len(idx)
        self.cond.train(was_training)
        return {name: value / len(self.heldout_idx) for name, value in totals.items()}


class AlignTask(Task):
    """Match the teacher (the model's own conditioner) with a new encoder + adapter; no audio."""

    def __init__(self, cfg, dist):
        from ..models.loaders import LM_FILE, load_lm_model, resolve_file

        if not cfg.student:
            raise ValueError("align needs --student: the new encoder (hub id in the local cache, or a folder)")
        if bool(cfg.captions) == bool(cfg.pairs):
            raise ValueError("align needs exactly one of --captions (one per line) or --pairs (student/teacher texts)")
        self.weights = parse_weights(cfg.losses)
        self.device = torch.device(cfg.device)
        self.lm = lm = load_lm_model(cfg.model, device=cfg.device)
        self.attribute = attr = text_attribute(lm, cfg.attribute)
        teacher = lm.condition_provider.conditioners[attr]
        # Captions are deduplicated so that no held-out caption is also a training one.
        pairs = read_pairs(cfg.pairs) if cfg.pairs else [(c, c) for c in dict.fromkeys(read_captions(cfg.captions))]
        self.train_idx, self.heldout_idx = split_holdout(len(pairs), cfg.holdout, cfg.seed)
        self.cond = student = new_student(cfg, lm)
        self.cfg = cfg
        source = resolve_file(cfg.model, LM_FILE).stat()
        key = fingerprint(pairs=pairs, model=str(cfg.model), size=source.st_size, mtime=source.st_mtime_ns,
                          student=cfg.student, layer=cfg.layer, codes=cfg.codes, steps=cfg.code_steps, seed=cfg.seed,
                          targets=sorted(self.weights), attribute=attr)

        def compute() -> dict:
            states = encoder_states(student, [s for s, _ in pairs], cfg.batch_size)
            teacher_conds = conditions(teacher, [t for _, t in pairs], cfg.batch_size)
            codes = self._codes([t for _, t in pairs], cfg)
            means = torch.stack([c.mean(0) for c in teacher_conds])
            data = {"states": states, "codes": codes, "teacher_mean": means, "feature_scale": means.pow(2).mean()}
            if "kl" in self.weights or "xattn" in self.weights:
                out = lm_outputs(lm, attr, teacher_conds, codes, xattn="xattn" in self.weights,
                                 batch_size=cfg.batch_size)
                # float16 halves the memory of N x K x T x card log-probabilities; the error it adds
                # (~1e-3 in log-probability) is far below the KL values that matter.
                data.update(mask=out["mask"], logprobs=out["logprobs"].half())
                if "xattn" in out:
                    data["xattn"] = out["xattn"].half()
                    data["xattn_scale"] = out["xattn"].pow(2).mean(dim=(0, 2, 3))  # [layers]
            return data

        self.data = cached(Path(cfg.cache_dir) / "align_features.pt", key, dist, compute)
        self.lengths = [s.shape[0] for s in self.data["states"]]
        lm.condition_provider.conditioners[attr] = student
        self._freeze()

    def _codes(self, teacher_texts: list[str], cfg) -> torch.Tensor:
        """Code sequences [N, K, T] the LM reads while its predictions are compared."""
        lm = self.lm
        if cfg.codes == "random":
            return random_codes(len(teacher_texts), lm.num_codebooks, cfg.code_steps, lm.card, cfg.seed)
        if cfg.codes != "teacher":
            raise ValueError(f"--codes must be 'random' or 'teacher', got {cfg.codes!r}")
        # What the teacher itself generates for each text (sampled, with its CFG): in-distribution
        # sequences, where a trained LM's conditioning matters the way it does at generation.
        torch.manual_seed(cfg.seed)
        out = []
        for start in range(0, len(teacher_texts), cfg.batch_size):
            chunk = teacher_texts[start:start + cfg.batch_size]
            attrs = [ConditioningAttributes(text={self.attribute: t}) for t in chunk]
            out.append(lm.generate(None, attrs, max_gen_len=cfg.code_steps, use_sampling=True, top_k=250).cpu())
        return torch.cat(out)

    def loss(self, idx: list[int], length: int | None) -> tuple[torch.Tensor, dict[str, float]]:
        data, dev = self.data, self.device
        states, mask = pad([data["states"][i] for i in idx], length)
        cond, cond_mask = self.cond.project(states.to(dev), mask.to(dev))
        terms: dict[str, torch.Tensor] = {}
        if "kl" in self.weights or "xattn" in self.weights:
            with (cross_attention_tap(self.lm) if "xattn" in self.weights else no_tap()) as tapped:
                out = self.lm.compute_predictions(data["codes"][idx].to(dev), [],
                                                  condition_tensors={self.attribute: (cond, cond_mask)})
            if "kl" in self.weights:
                terms["kl"] = next_token_kl(data["logprobs"][idx].to(dev), out.logits, data["mask"].to(dev))
            if "xattn" in self.weights:
                terms["xattn"] = xattn_loss(tapped, data["xattn"][idx].to(dev), data["xattn_scale"].to(dev))
        if "feature" in self.weights:
            terms["feature"] = feature_loss(cond, cond_mask, data["teacher_mean"][idx].to(dev),
                                            data["feature_scale"].to(dev))
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, {name: value.item() for name, value in terms.items()}


class FinetuneTask(Task):
    """Upstream's LM loss on (audio, caption) pairs, training the conditioner and optional LoRA."""

    def __init__(self, cfg, dist):
        from ..models import MusicGen

        if not cfg.manifest:
            raise ValueError("finetune needs --manifest (JSONL of audio files and captions)")
        model = MusicGen.get_pretrained(cfg.model, device=cfg.device)
        self.device = torch.device(cfg.device)
        self.lm = lm = model.lm
        self.attribute = attr = text_attribute(lm, cfg.attribute)
        self.cfg = cfg
        items = read_manifest(cfg.manifest, cfg.audio_dir)
        token_dir = Path(cfg.cache_dir) / "tokens"
        if dist.rank == 0:  # rank 0 encodes; the others then read its cache
            encode_audio_tokens(items, model.compression_model, token_dir, cfg.device)
        dist.barrier()
        codes, self.encoded_now = encode_audio_tokens(items, model.compression_model, token_dir, cfg.device)
        pieces = segment(codes, cfg.segment_steps)
        self.codes = torch.stack([piece for _, piece in pieces])  # [N, K, steps]
        train_files, _ = split_holdout(len(items), cfg.holdout, cfg.seed)
        train_files = set(train_files)
        self.train_idx = [i for i, (f, _) in enumerate(pieces) if f in train_files]
        self.heldout_idx = [i for i, (f, _) in enumerate(pieces) if f not in train_files]
        if not self.train_idx or not self.heldout_idx:
            raise ValueError(f"after the holdout split, {len(self.train_idx)} training and {len(self.heldout_idx)} "
                             "held-out segments remain: add audio or lower --segment-steps")

        self.train_encoder = cfg.train_encoder
        if cfg.student:
            self.cond = new_student(cfg, lm, finetune=cfg.train_encoder)
            lm.condition_provider.conditioners[attr] = self.cond
        else:
            self.cond = self._own_conditioner(lm, attr, cfg)
        texts = sorted({items[f].description for f, _ in pieces})
        text_id = {t: i for i, t in enumerate(texts)}
        self.texts = [items[f].description for f, _ in pieces]
        self.text_idx = [text_id[t] for t in self.texts]
        if self.train_encoder:
            per_text = token_lengths(self.cond, texts)
        else:
            key = fingerprint(texts=texts, conditioner=self.cond.config(), model=str(cfg.model), seed=cfg.seed)
            self.states = cached(Path(cfg.cache_dir) / "finetune_states.pt", key, dist,
                                 lambda: {"states": encoder_states(self.cond, texts, cfg.batch_size)})["states"]
            per_text = [s.shape[0] for s in self.states]
        self.lengths = [per_text[i] for i in self.text_idx]
        self._freeze()
        self.lora = apply_lora(lm, cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets)) if cfg.lora_rank else []

    @staticmethod
    def _own_conditioner(lm, attr: str, cfg) -> HFEncoderConditioner:
        """The model's conditioner, rebuilt with its encoder as a submodule when the encoder trains."""
        cond = lm.condition_provider.conditioners[attr]
        if not isinstance(cond, HFEncoderConditioner):
            raise ValueError(f"conditioner {attr!r} is a {type(cond).__name__}, not a Hugging Face encoder: give "
                             "--student to fine-tune with a new encoder")
        spec = cond.config()
        name = spec["model"]
        if cfg.train_encoder and not spec[name]["finetune"]:
            kwargs = {**spec[name], "finetune": True, "device": cfg.device}
            new = build_conditioner(name, lm.dim, **kwargs).to(cfg.device)
            missing, unexpected = new.load_state_dict(cond.state_dict(), strict=False)
            if unexpected or any(not k.startswith("encoder.") for k in missing):
                raise RuntimeError(f"cannot carry the conditioner over: missing {missing}, unexpected {unexpected}")
            cond = lm.condition_provider.conditioners[attr] = new.eval()
        return cond

    def loss(self, idx: list[int], length: int | None) -> tuple[torch.Tensor, dict[str, float]]:
        dev = self.device
        if self.train_encoder:
            inputs = self.cond.tokenize([self.texts[i] for i in idx])
            states, mask = self.cond.encode(inputs)
            if length is not None and length > states.shape[1]:  # pad to the global batch's length
                states = F.pad(states, (0, 0, 0, length - states.shape[1]))
                mask = F.pad(mask, (0, length - mask.shape[1]))
        else:
            states, mask = pad([self.states[self.text_idx[i]] for i in idx], length)
        cond, cond_mask = self.cond.project(states.to(dev), mask.to(dev))
        codes = self.codes[idx].to(dev)
        out = self.lm.compute_predictions(codes, [], condition_tensors={self.attribute: (cond, cond_mask)})
        ce = lm_cross_entropy(out.logits, codes, out.mask)
        return ce, {"ce": ce.item()}


TASKS = {"align": AlignTask, "finetune": FinetuneTask}

