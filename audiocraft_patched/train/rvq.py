"""Training path for the residual vector quantizer: EMA k-means codebooks + straight-through.

Upstream trains its RVQ in `audiocraft/quantization/core_vq.py` (EMA codebook updates, k-means
init, dead-code expiry, commitment loss). This is our own compact version of that recipe,
built as a subclass of our inference `ResidualVectorQuantizer`, so the trained module has the
same buffers (`vq.layers.<k>._codebook.{inited, cluster_size, embed, embed_avg}`) and its
state dict loads into the inference quantizer unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..quantization.vq import EuclideanCodebook, ResidualVectorQuantizer


def _ema_update(book: EuclideanCodebook, vectors: torch.Tensor, indices: torch.Tensor, decay: float,
                dead_threshold: float, generator: torch.Generator | None) -> None:
    """One EMA k-means step on `book` from [M, D] vectors assigned to [M] indices."""
    onehot = F.one_hot(indices, book.codebook_size).type(vectors.dtype)  # [M, N]
    book.cluster_size.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
    book.embed_avg.mul_(decay).add_(onehot.t() @ vectors, alpha=1 - decay)
    # Laplace smoothing keeps rarely used entries from dividing by ~0.
    n = book.cluster_size.sum()
    size = (book.cluster_size + 1e-5) / (n + book.codebook_size * 1e-5) * n
    book.embed.copy_(book.embed_avg / size[:, None])
    dead = book.cluster_size < dead_threshold
    if dead.any():
        # Entries nobody uses restart on random vectors of the batch (upstream's dead-code expiry).
        pick = torch.randint(len(vectors), (int(dead.sum()),), generator=generator, device=vectors.device)
        book.embed[dead] = vectors[pick]
        book.embed_avg[dead] = vectors[pick]
        book.cluster_size[dead] = 1.0


class TrainableResidualVectorQuantizer(ResidualVectorQuantizer):
    """`ResidualVectorQuantizer` that also trains.

    Args:
        dimension, n_q, bins: as `ResidualVectorQuantizer`.
        decay: EMA decay of the codebook statistics.
        threshold_ema_dead_code: entries whose EMA usage falls below this restart on data.
        seed: seed of the k-means init and dead-code restarts.
    """

    def __init__(self, dimension: int = 256, n_q: int = 8, *, bins: int = 1024, decay: float = 0.99,
                 threshold_ema_dead_code: float = 2.0, seed: int = 0):
        super().__init__(dimension, n_q, bins=bins)
        self.decay = decay
        self.threshold = threshold_ema_dead_code
        self.generator = torch.Generator().manual_seed(seed)
        for layer in self.vq.layers:
            layer._codebook.inited.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize a latent, updating codebooks when training.

        Args:
            x: [B, D, T] latent.
        Returns:
            quantized: [B, D, T], straight-through (gradients flow to `x` as if unquantized).
            codes: [B, K, T] indices.
            commit_loss: scalar, mean squared distance of each stage's residual to its entry.
        """
        residual = x.detach()
        quantized = torch.zeros_like(x)
        codes = []
        for layer in self.vq.layers[:self.n_q]:
            book = layer._codebook
            flat = residual.transpose(1, 2).reshape(-1, residual.shape[1])  # [B*T, D]
            if self.training and not book.inited.item():
                pick = torch.randperm(len(flat), generator=self.generator)[:book.codebook_size]
                pick = pick[torch.arange(book.codebook_size) % len(pick)]
                book.embed.copy_(flat[pick])
                book.embed_avg.copy_(flat[pick])
                book.cluster_size.fill_(1.0)
                book.inited.fill_(1)
            indices = book.encode(flat)
            if self.training:
                _ema_update(book, flat, indices, self.decay, self.threshold, self.generator)
            chosen = book.decode(indices).view(residual.shape[0], residual.shape[2], -1).transpose(1, 2)
            codes.append(indices.view(residual.shape[0], residual.shape[2]))
            residual = residual - chosen
            quantized = quantized + chosen
        # Commitment: pull the encoder output towards the sum of chosen entries.
        return x + (quantized - x).detach(), torch.stack(codes, 1), F.mse_loss(x, quantized.detach())
