"""Residual vector quantizer (RVQ) for inference: latent frames <-> codebook indices.

Mirrors `audiocraft/quantization/vq.py`, `core_vq.py` and `base.py` (audiocraft 1.3.0) with the
same module tree, hence the same state dict keys:
`vq.layers.<k>._codebook.{inited, cluster_size, embed, embed_avg}`. Only `embed` is used here;
the other buffers are the training state (EMA statistics, k-means flag), kept so that
checkpoints round-trip. Training (EMA updates, k-means init, dead-code expiry, losses) is not
ported. Upstream's per-layer `project_in/out` are always identities for this quantizer (it never
sets a codebook dim), so they are left out: they hold no weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Upstream constructor arguments that only matter for training; accepted so that configs build.
_TRAINING_ONLY_ARGS = frozenset([
    "q_dropout", "decay", "kmeans_init", "kmeans_iters", "threshold_ema_dead_code",
    "orthogonal_reg_weight", "orthogonal_reg_active_codes_only", "orthogonal_reg_max_codes",
])


class BaseQuantizer(nn.Module):
    """What `EncodecModel` needs from a quantizer."""

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
    """

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        embed = torch.empty(codebook_size, dim)
        nn.init.kaiming_uniform_(embed)  # upstream's init when k-means is off
        # Buffers in upstream's order; only `embed` is read at inference.
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        self.codebook_size = codebook_size

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

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self._codebook = EuclideanCodebook(dim, codebook_size)
        self.codebook_size = codebook_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._codebook.encode(x.transpose(1, 2))  # [B, T]

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self._codebook.decode(indices).transpose(1, 2)  # [B, D, T]


class ResidualVectorQuantization(nn.Module):
    """Stack of codebooks; each one quantizes what the previous ones left (arXiv:2107.03312)."""

    def __init__(self, num_quantizers: int, dim: int, codebook_size: int):
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(dim, codebook_size) for _ in range(num_quantizers))

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
        **training_kwargs: upstream's training-only arguments (`q_dropout`, `decay`,
            `kmeans_init`, `kmeans_iters`, `threshold_ema_dead_code`, `orthogonal_reg_*`);
            accepted so that upstream configs build, and ignored.
    """

    def __init__(self, dimension: int = 256, n_q: int = 8, *, bins: int = 1024, **training_kwargs):
        super().__init__()
        unknown = set(training_kwargs) - _TRAINING_ONLY_ARGS
        if unknown:
            raise TypeError(f"unexpected ResidualVectorQuantizer arguments: {sorted(unknown)}")
        self.dimension = dimension
        self.bins = bins
        self.max_n_q = n_q
        self.n_q = n_q
        self.vq = ResidualVectorQuantization(n_q, dimension, bins)

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
