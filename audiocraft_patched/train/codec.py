"""Train a small EnCodec (our SEANet + RVQ) on world clips; write upstream's export file.

Upstream trains EnCodec with `audiocraft/solvers/compression.py` (reconstruction + adversarial
losses, balancer). Here the recipe is cut to what a CPU-hour allows: energy-relative waveform MSE
plus multi-resolution spectral convergence, a data-dependent init, EMA k-means codebooks with a
commitment loss, no discriminator.

    python -m audiocraft_patched.train.codec --out runs/codec --steps 2500 --seed 0
"""
from __future__ import annotations

import argparse
import copy
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..models.builders import get_compression_model
from ..models.encodec import EncodecModel
from ..utils import schedule
from ..utils.export import save_checkpoint
from ..utils.tiny import tiny_encodec_config
from ..world.synth import SAMPLE_RATE, random_attributes, render
from .rvq import TrainableResidualVectorQuantizer

CODEC_FILE = "compression_state_dict.bin"


def world_codec_config(n_q: int = 4, card: int = 256, n_filters: int = 8, dimension: int = 32) -> dict:
    """Upstream's encodec config shape for the world codec: 16 kHz mono, hop 320 (50 frames/s)."""
    cfg = tiny_encodec_config(SAMPLE_RATE, 1, n_q=n_q, card=card, ratios=(8, 5, 4, 2))
    # No LSTM: on one CPU thread it would cost more than all the convolutions together.
    cfg["seanet"].update(dimension=dimension, n_filters=n_filters, lstm=0)
    return cfg


def spectral_convergence(pred: torch.Tensor, target: torch.Tensor, sizes: tuple[int, ...] = (256, 512, 1024)
                         ) -> torch.Tensor:
    """Multi-resolution spectral convergence ||S_pred| - |S|| / ||S||, per clip, averaged.

    Args:
        pred, target: [B, S] waveforms.
    """
    loss = pred.new_zeros(())
    for n_fft in sizes:
        window = torch.hann_window(n_fft, device=pred.device)
        spec = [torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs() for x in (pred, target)]
        loss = loss + ((spec[0] - spec[1]).norm(dim=(1, 2)) / (spec[1].norm(dim=(1, 2)) + 1e-7)).mean()
    return loss / len(sizes)


def high_band_loss(pred: torch.Tensor, target: torch.Tensor, low_hz: float = 4000.0, n_fft: int = 256,
                   floor_db: float = 50.0) -> torch.Tensor:
    """L1 between the log power envelopes of the band above `low_hz` (per short frame), averaged.

    The hi-hats live above 5 kHz and carry a small share of the energy, so the waveform and
    spectral-convergence terms let a small codec drop them. What the density analyzer reads is
    this band's dB envelope; matching it in dB weighs a hit as much as the melody.

    Args:
        pred, target: [B, S] waveforms.
    """
    window = torch.hann_window(n_fft, device=pred.device)
    first_bin = int(low_hz * n_fft / SAMPLE_RATE)
    env = [10 * torch.log10(torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True)
                            .abs().pow(2)[:, first_bin:].sum(1) + 1e-10) for x in (pred, target)]
    # Like the analyzer, ignore what lies 50 dB below the clip's loudest hit: the silence between
    # hits would otherwise dominate (any leak reads as tens of dB against a -100 dB target).
    floor = env[1].amax(dim=1, keepdim=True).detach() - floor_db
    pred_db, target_db = torch.maximum(env[0], floor), torch.maximum(env[1], floor)
    return (pred_db - target_db).abs().mean() / 10  # in units of 10 dB, next to the other terms (~0.1-1)


def relative_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Waveform MSE divided by each clip's energy: quiet clips weigh as much as loud ones. [B, C, S]."""
    return ((pred - target).pow(2).mean(dim=(1, 2)) / (target.pow(2).mean(dim=(1, 2)) + 1e-8)).mean()


@torch.no_grad()
def data_dependent_init(model: EncodecModel, wav: torch.Tensor, out_std: float = 0.1) -> None:
    """Rescale every conv so that its output has unit std on `wav` (the last one: `out_std`); zero biases.

    The weight-norm paper's data-dependent init (Salimans & Kingma, 2016), with one scale per
    layer. Without it the default init shrinks the signal at every layer: the decoder's output
    then hardly depends on its input, and training settles on one constant waveform.

    Args:
        wav: [B, C, S] a batch of training audio.
    """
    convs = [m for part in (model.encoder, model.decoder) for m in part.modules() if hasattr(m, "weight_g")]
    for i, conv in enumerate(convs):
        if conv.bias is not None:
            conv.bias.zero_()
        seen = []
        handle = conv.register_forward_hook(lambda mod, inp, out: seen.append(out.std()))
        model.decoder(model.encoder(wav))
        handle.remove()
        target = out_std if i == len(convs) - 1 else 1.0
        conv.weight_g.mul_(target / (seen[0] + 1e-8))


def warmup_cosine(steps: int, warmup: float = 0.05):
    """Learning-rate factor: linear warm-up over `warmup` of the steps, then cosine to 10%."""
    n_warm = max(1, int(warmup * steps))
    return partial(schedule.warmup_cosine, steps=steps, warmup=n_warm)  # the one schedule (utils/schedule.py)


def world_batch(rng: np.random.Generator, batch: int, seconds: float) -> torch.Tensor:
    """[batch, 1, seconds * SAMPLE_RATE] random world clips."""
    attrs = [random_attributes(rng) for _ in range(batch)]
    seeds = rng.integers(0, 2 ** 31, batch)
    return torch.from_numpy(np.stack([render(a, int(s), seconds) for a, s in zip(attrs, seeds)]))[:, None]


def train_codec(out: Path, steps: int = 2500, seed: int = 0, batch: int = 8, seconds: float = 1.0,
                lr: float = 1e-3, commit_weight: float = 1.0, log_every: int = 50, warmup_unquantized: int = 300,
                high_band_weight: float = 0.0, init: Path | None = None, **config) -> EncodecModel:
    """Train and export the world codec to `out / CODEC_FILE`; returns it in eval mode.

    `init`: a folder with a codec export to start from (its config wins over `config`).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init is not None:
        from omegaconf import OmegaConf

        from ..models.loaders import load_compression_model_ckpt

        pkg = load_compression_model_ckpt(Path(init))
        cfg = OmegaConf.to_container(OmegaConf.create(pkg["xp.cfg"]))
    else:
        cfg = world_codec_config(**config)
    model = get_compression_model(copy.deepcopy(cfg))
    rvq = cfg["rvq"]
    if init is None:
        data_dependent_init(model, world_batch(rng, 4, 0.5))
    # A short EMA memory and a low dead-code threshold suit short runs with few vectors per batch
    # (400 per step against 256 entries: upstream's threshold of 2 would restart most entries at every step).
    model.quantizer = TrainableResidualVectorQuantizer(model.encoder.dimension, rvq["n_q"], bins=rvq["bins"],
                                                       decay=0.95, threshold_ema_dead_code=0.3, seed=seed)
    if init is not None:
        model.load_state_dict(pkg["best_state"])
    params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    model.train()
    start, running = time.time(), []
    for step in range(1, steps + 1):
        wav = world_batch(rng, batch, seconds)
        latent = model.encoder(wav)
        if step > warmup_unquantized:
            quantized, _, commit = model.quantizer(latent)
        else:  # a plain autoencoder first, so the codebooks start on latents that carry the signal
            quantized, commit = latent, latent.new_zeros(())
        recon = model.decoder(quantized)[..., :wav.shape[-1]]
        # The waveform term learns fast (every waveform of the world is deterministic given its
        # notes); the spectral one holds the balance of the harmonics, which the timbre is made of.
        # (Log-magnitude losses drove this small model to a constant near-silent output.)
        rec = relative_mse(recon, wav) + spectral_convergence(recon[:, 0], wav[:, 0])
        if high_band_weight:
            rec = rec + high_band_weight * high_band_loss(recon[:, 0], wav[:, 0])
        loss = rec + commit_weight * commit
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running.append([rec.item(), commit.item()])
        if step % log_every == 0 or step == steps:
            r, c = np.mean(running, 0)
            running = []
            print(f"codec step {step}/{steps} recon {r:.4f} commit {c:.4f} ({time.time() - start:.0f} s)", flush=True)
        if step % 250 == 0 or step == steps:
            export_codec(model, cfg, out)
    return model.eval()


@torch.no_grad()
def roundtrip_adherence(model: EncodecModel, n: int = 36, seed: int = 123) -> dict[str, float]:
    """What the analyzers read back from `n` real world clips after encode + decode (5 s each).

    The clips are those of `tests/world/test_world.py`'s scorer check (seed 123, clip seeds 10000+i).
    """
    from ..world.analyze import adherence

    rng = np.random.default_rng(seed)
    attrs = [random_attributes(rng) for _ in range(n)]
    wav = torch.from_numpy(np.stack([render(a, 10_000 + i) for i, a in enumerate(attrs)]))[:, None]
    model.eval()
    codes, scale = model.encode(wav)
    out = model.decode(codes, scale)[:, 0, :wav.shape[-1]].numpy()
    return adherence(list(out), attrs)


def export_codec(model: EncodecModel, cfg: dict, out: Path) -> Path:
    """Save the codec in upstream's export format (the trainable quantizer's buffers as they are)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_checkpoint(Path(out) / CODEC_FILE, state, cfg, overwrite=True)  # exported again every 250 steps
    return Path(out) / CODEC_FILE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-q", type=int, default=4)
    parser.add_argument("--card", type=int, default=256)
    parser.add_argument("--n-filters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--warmup-unquantized", type=int, default=300)
    parser.add_argument("--high-band-weight", type=float, default=0.0,
                        help="weight of the dB-envelope loss above 4 kHz (the hi-hat band)")
    parser.add_argument("--init", type=Path, default=None, help="start from the codec export in this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = train_codec(args.out, args.steps, args.seed, args.batch, args.seconds, args.lr, n_q=args.n_q,
                        card=args.card, n_filters=args.n_filters, log_every=args.log_every,
                        warmup_unquantized=args.warmup_unquantized, high_band_weight=args.high_band_weight,
                        init=args.init)
    acc = roundtrip_adherence(model)
    print("round trip (36 real clips): " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()), flush=True)


if __name__ == "__main__":
    main()
