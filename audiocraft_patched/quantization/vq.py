"""Residual vector quantizer (RVQ): latent frames <-> codebook indices, and its training forward.

Mirrors `audiocraft/quantization/vq.py`, `core_vq.py` and `base.py` (audiocraft 1.3.0) with the
same module tree, hence the same state dict keys:
`vq.layers.<k>._codebook.{inited, cluster_size, embed, embed_avg}`. `encode`/`decode` only read
`embed`. `forward(x, frame_rate)` is upstream's training forward: straight-through quantized
latent, codes, bandwidth and commitment loss (`QuantizedResult`), and in training mode the
codebooks learn as upstream's do (k-means init on the first batch, EMA updates, dead-code
restarts; `q_dropout` draws the number of codebooks per batch). Not ported: the orthogonal
regularization (`orthogonal_reg_weight` must be 0) and distributed codebook sync. Upstream's
per-layer `project_in/out` are always identities for this quantizer, so they are left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizedResult:
    """What a quantizer's `forward` returns (upstream's class of the same name)."""

    x: torch.Tensor  # quantized latent (straight-through), or the decoded audio from EncodecModel.forward
    codes: torch.Tensor  # [B, K, T]
    bandwidth: torch.Tensor  # kb/s used, per batch item
    penalty: torch.Tensor | None = None  # commitment loss
    metrics: dict = field(default_factory=dict)


class BaseQuantizer(nn.Module):
    """What `EncodecModel` needs from a quantizer."""

    def forward(self, x: torch.Tensor, frame_rate: int) -> QuantizedResult:
        """[B, D, T] latent -> `QuantizedResult` (training round trip)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, T] latent -> [B, K, T] codes."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, K, T] codes -> [B, D, T] latent."""
        raise NotImplementedError

    @property
    def total_codebooks(self) -> int:
        raise NotImplementedError

    @property
    def num_codebooks(self) -> int:
        raise NotImplementedError

    def set_num_codebooks(self, n: int) -> None:
        raise NotImplementedError


class DummyQuantizer(BaseQuantizer):
    """No quantization ('no_quant'): the "codes" are the latent itself, as [B, 1, D, T]."""

    def forward(self, x: torch.Tensor, frame_rate: int) -> QuantizedResult:
        codes = x.unsqueeze(1)
        # Upstream counts 32 bits per float value.
        return QuantizedResult(x, codes, torch.tensor(codes.numel() * 32 * frame_rate / 1000 / len(x)).to(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.squeeze(1)

    @property
    def total_codebooks(self) -> int:
        return 1

    @property
    def num_codebooks(self) -> int:
        return 1

    def set_num_codebooks(self, n: int) -> None:
        raise AttributeError("the dummy quantizer has a fixed number of codebooks (1)")


class EuclideanCodebook(nn.Module):
    """One codebook of `codebook_size` vectors; a vector's code is its nearest entry.

    Args:
        dim: vector size D.
        codebook_size: number of entries N.
        kmeans_init: start empty and take the entries from k-means on the first training batch.
        kmeans_iters: iterations of that k-means.
        decay: EMA decay of the entry statistics in training.
        epsilon: Laplace smoothing of the entry counts.
        threshold_ema_dead_code: in training, entries used less than this (EMA count) restart
            on random vectors of the batch.
    """

    def __init__(self, dim: int, codebook_size: int, kmeans_init: bool = False, kmeans_iters: int = 10,
                 decay: float = 0.8, epsilon: float = 1e-5, threshold_ema_dead_code: float = 2):
        super().__init__()
        embed = torch.zeros(codebook_size, dim)
        if not kmeans_init:
            nn.init.kaiming_uniform_(embed)  # upstream's init when k-means is off
        # Buffers in upstream's order; only `embed` is read at inference.
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code

    def _sample(self, vectors: torch.Tensor) -> torch.Tensor:
        """`codebook_size` random rows of [M, D] vectors (with repeats when M is smaller)."""
        if len(vectors) >= self.codebook_size:
            return vectors[torch.randperm(len(vectors), device=vectors.device)[:self.codebook_size]]
        return vectors[torch.randint(0, len(vectors), (self.codebook_size,), device=vectors.device)]

    @torch.no_grad()
    def _kmeans_init(self, vectors: torch.Tensor) -> None:
        means = self._sample(vectors)
        counts = torch.zeros(self.codebook_size, device=vectors.device)
        for _ in range(self.kmeans_iters):
            assign = torch.cdist(vectors, means).argmin(dim=-1)
            counts = torch.bincount(assign, minlength=self.codebook_size).to(vectors.dtype)
            sums = torch.zeros_like(means).index_add_(0, assign, vectors)
            # An entry that got no vector keeps its place.
            means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], means)
        self.embed.copy_(means)
        self.embed_avg.copy_(means)
        self.cluster_size.copy_(counts)
        self.inited.fill_(1)

    @torch.no_grad()
    def _learn(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        """One training step: restart dead entries, then EMA k-means on [M, D] vectors and their [M] codes."""
        dead = self.cluster_size < self.threshold_ema_dead_code
        if dead.any():
            self.embed.copy_(torch.where(dead[:, None], self._sample(vectors), self.embed))
        onehot = F.one_hot(indices, self.codebook_size).to(vectors.dtype)  # [M, N]
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(onehot.t() @ vectors, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., D] vectors -> (nearest entries [..., D], indices [...]); learns in training mode."""
        vectors = x.detach().reshape(-1, x.shape[-1]).float()
        if self.training and not self.inited.item():
            self._kmeans_init(vectors)
        indices = self.encode(x.detach())
        quantized = self.decode(indices)  # read before this batch's update, as upstream
        if self.training:
            self._learn(vectors, indices.reshape(-1))
        return quantized, indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] vectors -> [...] indices of the nearest entries."""
        flat = x.reshape(-1, x.shape[-1])  # [M, D]
        embed = self.embed.t()  # [D, N]
        # Squared distances, written as upstream does so that near-ties break the same way.
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed + embed.pow(2).sum(0, keepdim=True)
        return dist.argmin(dim=-1).view(x.shape[:-1])

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """[...] indices -> [..., D] vectors."""
        return F.embedding(indices, self.embed)


class VectorQuantization(nn.Module):
    """A codebook on conv layout: [B, D, T] <-> [B, T] indices."""

    def __init__(self, dim: int, codebook_size: int, commitment_weight: float = 1.0, **codebook_kwargs):
        super().__init__()
        self._codebook = EuclideanCodebook(dim, codebook_size, **codebook_kwargs)
        self.codebook_size = codebook_size
        self.commitment_weight = commitment_weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, D, T] -> (quantized [B, D, T], indices [B, T], commitment loss [1])."""
        vectors = x.transpose(1, 2)
        quantized, indices = self._codebook(vectors)
        loss = torch.zeros(1, device=x.device, requires_grad=self.training)
        if self.training:
            quantized = vectors + (quantized - vectors).detach()  # straight-through
            if self.commitment_weight > 0:
                loss = loss + self.commitment_weight * F.mse_loss(quantized.detach(), vectors)
        return quantized.transpose(1, 2), indices, loss

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._codebook.encode(x.transpose(1, 2))  # [B, T]

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self._codebook.decode(indices).transpose(1, 2)  # [B, D, T]


class ResidualVectorQuantization(nn.Module):
    """Stack of codebooks; each one quantizes what the previous ones left (arXiv:2107.03312)."""

    def __init__(self, num_quantizers: int, dim: int, codebook_size: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(dim, codebook_size, **layer_kwargs)
                                    for _ in range(num_quantizers))

    def forward(self, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, D, T] -> (quantized [B, D, T], codes [n_q, B, T], losses [n_q, 1])."""
        residual = x
        quantized_out = torch.zeros_like(x)
        codes, losses = [], []
        for layer in self.layers[:n_q]:
            quantized, indices, loss = layer(residual)
            quantized = quantized.detach()
            residual = residual - quantized
            quantized_out = quantized_out + quantized
            codes.append(indices)
            losses.append(loss)
        if self.training:  # straight-through over the whole stack (the per-layer ones are detached)
            quantized_out = x + (quantized_out - x).detach()
        return quantized_out, torch.stack(codes), torch.stack(losses)

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """[B, D, T] -> [n_q, B, T] codes."""
        residual = x
        codes = []
        for layer in self.layers[:n_q]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            codes.append(indices)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[K, B, T] codes -> [B, D, T], the sum of the K first codebooks' vectors in order."""
        out = self.layers[0].decode(codes[0])
        for layer, indices in zip(self.layers[1:], codes[1:]):
            out = out + layer.decode(indices)
        return out


class ResidualVectorQuantizer(BaseQuantizer):
    """RVQ with `n_q` codebooks of `bins` entries, of which the first `num_codebooks` are used.

    Args:
        dimension: latent channels D.
        n_q: number of codebooks (`total_codebooks`).
        bins: entries per codebook (the LM's cardinality). Keyword-only: upstream's third
            positional argument is `q_dropout`.
        q_dropout: in training, each batch uses a random number of codebooks in [1, n_q].
        decay, kmeans_init, kmeans_iters, threshold_ema_dead_code: codebook training, see
            `EuclideanCodebook` (upstream's defaults).
        orthogonal_reg_*: upstream's orthogonal regularization; only its off state (weight 0).
    """

    def __init__(self, dimension: int = 256, n_q: int = 8, *, bins: int = 1024, q_dropout: bool = False,
                 decay: float = 0.99, kmeans_init: bool = True, kmeans_iters: int = 10,
                 threshold_ema_dead_code: float = 2, orthogonal_reg_weight: float = 0.0,
                 orthogonal_reg_active_codes_only: bool = False, orthogonal_reg_max_codes: int | None = None):
        super().__init__()
        if orthogonal_reg_weight:
            raise NotImplementedError("the orthogonal regularization of the codebooks is not ported; "
                                      "use orthogonal_reg_weight=0")
        self.dimension = dimension
        self.bins = bins
        self.max_n_q = n_q
        self.n_q = n_q
        self.q_dropout = q_dropout
        self.vq = ResidualVectorQuantization(n_q, dimension, bins, decay=decay, kmeans_init=kmeans_init,
                                             kmeans_iters=kmeans_iters,
                                             threshold_ema_dead_code=threshold_ema_dead_code)

    def forward(self, x: torch.Tensor, frame_rate: int) -> QuantizedResult:
        """Training round trip of a latent.

        Args:
            x: [B, D, T] latent.
            frame_rate: latent frames per second (for the bandwidth).
        Returns:
            `QuantizedResult`: `x` the quantized latent (gradients pass straight through to the
            input), `codes` [B, K, T], `bandwidth` in kb/s, `penalty` the mean commitment loss.
        """
        n_q = self.n_q
        if self.training and self.q_dropout:
            n_q = int(torch.randint(1, self.n_q + 1, (1,)).item())
        bits_per_frame = math.log2(self.bins) * frame_rate / 1000
        quantized, codes, losses = self.vq(x, n_q)
        return QuantizedResult(quantized, codes.transpose(0, 1), torch.tensor(n_q * bits_per_frame).to(x),
                               penalty=losses.mean())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize a latent.

        Args:
            x: [B, D, T] float latent.
        Returns:
            [B, K, T] int64 codes, K = `num_codebooks`.
        """
        if x.dim() != 3 or x.shape[1] != self.dimension:
            raise ValueError(f"expected a latent [B, {self.dimension}, T], got {tuple(x.shape)}")
        return self.vq.encode(x, self.n_q).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum the codebook vectors of `codes`.

        Args:
            codes: [B, K, T] integer codes, 1 <= K <= `total_codebooks`; codebook k is used for
                row k (any K: not only `num_codebooks`).
        Returns:
            [B, D, T] float latent.
        """
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.max_n_q:
            raise ValueError(f"expected codes [B, K, T] with 1 <= K <= {self.max_n_q}, got {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex():
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        return self.vq.decode(codes.transpose(0, 1))

    @property
    def total_codebooks(self) -> int:
        return self.max_n_q

    @property
    def num_codebooks(self) -> int:
        return self.n_q

    def set_num_codebooks(self, n: int) -> None:
        """Use the first `n` codebooks when encoding."""
        if not 1 <= n <= self.max_n_q:
            raise ValueError(f"number of codebooks must be in [1, {self.max_n_q}], got {n}")
        self.n_q = n
