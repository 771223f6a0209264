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
from pathlib import Path

import numpy as np
import torch

from ..models.builders import get_compression_model
from ..models.encodec import EncodecModel
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

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        progress = (step - n_warm) / max(1, steps - n_warm)
        return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))
    return factor


def world_batch(rng: np.random.Generator, batch: int, seconds: float) -> torch.Tensor:
    """[batch, 1, seconds * SAMPLE_RATE] random world clips."""
    attrs = [random_attributes(rng) for _ in range(batch)]
    seeds = rng.integers(0, 2 ** 31, batch)
    return torch.from_numpy(np.stack([render(a, int(s), seconds) for a, s in zip(attrs, seeds)]))[:, None]


def train_codec(out: Path, steps: int = 2500, seed: int = 0, batch: int = 8, seconds: float = 1.0,
                lr: float = 1e-3, commit_weight: float = 1.0, log_every: int = 50, warmup_unquantized: int = 300,
                **config) -> EncodecModel:
    """Train and export the world codec to `out / CODEC_FILE`; returns it in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = world_codec_config(**config)
    model = get_compression_model(copy.deepcopy(cfg))
    rvq = cfg["rvq"]
    data_dependent_init(model, world_batch(rng, 4, 0.5))
    # A short EMA memory and a low dead-code threshold suit short runs with few vectors per batch
    # (400 per step against 256 entries: upstream's threshold of 2 would restart most entries at every step).
    model.quantizer = TrainableResidualVectorQuantizer(model.encoder.dimension, rvq["n_q"], bins=rvq["bins"],
                                                       decay=0.95, threshold_ema_dead_code=0.3, seed=seed)
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_codec(args.out, args.steps, args.seed, args.batch, args.seconds, args.lr, n_q=args.n_q, card=args.card,
                n_filters=args.n_filters, log_every=args.log_every,
                warmup_unquantized=args.warmup_unquantized)


if __name__ == "__main__":
    main()
