"""EnCodec: the audio tokenizer of MusicGen (waveform <-> [B, K, T] codes), and its builders.

Mirrors `audiocraft/models/encodec.py` (CompressionModel, EncodecModel,
InterleaveStereoCompressionModel) and the compression part of `audiocraft/models/builders.py`
(`get_compression_model`, `get_wrapped_compression_model`, `get_debug_compression_model`) of
audiocraft 1.3.0, with `EncodecModel.forward`, the training round trip (encode, quantize with
the quantizer's training forward, decode; returns a `QuantizedResult`). The DAC and Hugging
Face wrappers and `get_pretrained` are not ported.

The builders read plain dicts (an upstream `xp.cfg` resolved with
`OmegaConf.to_container(..., resolve=True)`), not OmegaConf objects.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from ..modules.seanet import SEANetDecoder, SEANetEncoder
from ..modules.errors import ValueAssertionError
from ..quantization import BaseQuantizer, DummyQuantizer, QuantizedResult, ResidualVectorQuantizer


class CompressionModel(ABC, nn.Module):
    """What the LM needs from an audio tokenizer."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, C, S] waveform -> ([B, K, T] codes, scale or None). See `EncodecModel.encode`."""

    @abstractmethod
    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """[B, K, T] codes -> [B, C, S] waveform. See `EncodecModel.decode`."""

    @abstractmethod
    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, K, T] codes -> [B, D, T] continuous latent."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """Audio channels."""

    @property
    @abstractmethod
    def frame_rate(self) -> float:
        """Code frames per second."""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Audio samples per second."""

    @property
    @abstractmethod
    def cardinality(self) -> int:
        """Entries per codebook."""

    @property
    @abstractmethod
    def num_codebooks(self) -> int:
        """Codebooks used by `encode`."""

    @property
    @abstractmethod
    def total_codebooks(self) -> int:
        """Codebooks the model has."""

    @abstractmethod
    def set_num_codebooks(self, n: int) -> None:
        """Use the first `n` codebooks when encoding."""


class EncodecModel(CompressionModel):
    """SEANet encoder -> quantizer -> SEANet decoder, on raw waveforms.

    Args:
        encoder: [B, channels, S] -> [B, D, T] (e.g. `SEANetEncoder`).
        decoder: [B, D, T] -> [B, channels, S'] (e.g. `SEANetDecoder`).
        quantizer: [B, D, T] <-> [B, K, T] codes.
        frame_rate: code frames per second (sample_rate // hop length).
        sample_rate: audio samples per second.
        channels: audio channels.
        causal: whether encoder and decoder are causal.
        renormalize: divide the input by its RMS volume before encoding, and multiply the
            decoded audio by it (the `scale` of `encode`/`decode`).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, quantizer: BaseQuantizer,
                 frame_rate: int, sample_rate: int, channels: int, causal: bool = False,
                 renormalize: bool = False):
        super().__init__()
        if causal and renormalize:
            # The scale is computed over the whole input, which a causal model cannot see.
            raise ValueError("a causal model does not support renormalize")
        self.encoder = encoder
        self.decoder = decoder
        self.quantizer = quantizer
        self._frame_rate = frame_rate
        self._sample_rate = sample_rate
        self._channels = channels
        self.causal = causal
        self.renormalize = renormalize

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def frame_rate(self) -> float:
        return self._frame_rate

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def cardinality(self) -> int:
        return self.quantizer.bins

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.total_codebooks

    def set_num_codebooks(self, n: int) -> None:
        self.quantizer.set_num_codebooks(n)

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Divide [B, C, S] audio by its volume when renormalizing; returns (x, [B, 1] scale)."""
        if not self.renormalize:
            return x, None
        mono = x.mean(dim=1, keepdim=True)
        scale = 1e-8 + mono.pow(2).mean(dim=2, keepdim=True).sqrt()  # [B, 1, 1] RMS volume
        return x / scale, scale.view(-1, 1)

    def postprocess(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Multiply [B, C, S] audio by the [B, 1] scale of `preprocess`, if any."""
        if scale is None:
            return x
        if not self.renormalize:
            raise ValueError("got a scale, but this model does not renormalize")
        return x * scale.view(-1, 1, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Audio to codes.

        Args:
            x: [B, C, S] float waveform, C = `channels`.
        Returns:
            codes: [B, K, T] int64 codes, K = `num_codebooks`, T = ceil(S / hop length).
            scale: [B, 1] volume when `renormalize`, else None.
        """
        if x.dim() != 3 or x.shape[1] != self.channels:
            raise ValueError(f"expected audio [B, {self.channels}, S], got {tuple(x.shape)}")
        x, scale = self.preprocess(x)
        return self.quantizer.encode(self.encoder(x)), scale

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Codes to audio.

        Args:
            codes: [B, K, T] integer codes.
            scale: [B, 1] volume returned by `encode`, or None.
        Returns:
            [B, C, T * hop length] waveform. It keeps the encoder's right padding: cut it to the
            input length when that is known.
        """
        return self.postprocess(self.decoder(self.decode_latent(codes)), scale)

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizer.decode(codes)

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """Training round trip: audio [B, C, S] -> `QuantizedResult` whose `x` is the decoded audio.

        The quantizer runs its training forward (straight-through gradients, commitment loss in
        `penalty`, `bandwidth` in kb/s); the output is cut to S samples and rescaled back when
        renormalizing.
        """
        if x.dim() != 3:
            raise ValueAssertionError(f"expected audio [B, C, S], got {tuple(x.shape)}")
        length = x.shape[-1]
        x, scale = self.preprocess(x)
        result = self.quantizer(self.encoder(x), self.frame_rate)
        out = self.decoder(result.x)
        # The decoder gives whole frames: drop what the encoder's padding added.
        result.x = self.postprocess(out[..., :length], scale)
        return result


class InterleaveStereoCompressionModel(CompressionModel):
    """Stereo from a mono model: each channel is coded alone and the codes are interleaved.

    With per-channel codes [B, K, T], left (L) and right (R), the codes are [B, 2K, T] with
    rows L0, R0, L1, R1, ..., or with `per_timestep` [B, K, 2T] with frames L0, R0, L1, R1, ...

    Args:
        model: a mono compression model.
        per_timestep: interleave along time instead of codebooks.
    """

    def __init__(self, model: CompressionModel, per_timestep: bool = False):
        super().__init__()
        if model.channels != 1:
            raise ValueError(f"the wrapped model must be mono, it has {model.channels} channels")
        self.model = model
        self.per_timestep = per_timestep

    @property
    def total_codebooks(self) -> int:
        """Codebooks of the mono model (before interleaving)."""
        return self.model.total_codebooks

    @property
    def num_codebooks(self) -> int:
        """Rows of the interleaved codes: twice the mono model's unless `per_timestep`."""
        return self.model.num_codebooks * (1 if self.per_timestep else 2)

    def set_num_codebooks(self, n: int) -> None:
        """Set the mono model's number of codebooks (before interleaving)."""
        self.model.set_num_codebooks(n)

    @property
    def num_virtual_steps(self) -> int:
        """Code frames per real frame."""
        return 2 if self.per_timestep else 1

    @property
    def frame_rate(self) -> float:
        return self.model.frame_rate * self.num_virtual_steps

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def channels(self) -> int:
        return 2

    @property
    def cardinality(self) -> int:
        return self.model.cardinality

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, 2, S] audio -> (interleaved codes, [B, 2, 1] scales or None)."""
        if x.dim() != 3 or x.shape[1] != 2:
            raise ValueError(f"expected stereo audio [B, 2, S], got {tuple(x.shape)}")
        left, scale_left = self.model.encode(x[:, :1])
        right, scale_right = self.model.encode(x[:, 1:])
        batch, k, t = left.shape
        if self.per_timestep:
            codes = torch.stack([left, right], dim=-1).reshape(batch, k, 2 * t)  # [B, K, T, 2]
        else:
            codes = torch.stack([left, right], dim=2).reshape(batch, 2 * k, t)  # [B, K, 2, T]
        scales = None
        if scale_left is not None and scale_right is not None:
            scales = torch.stack([scale_left, scale_right], dim=1)
        return codes, scales

    def get_left_right_codes(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interleaved codes -> ([B, K, T] left, [B, K, T] right)."""
        batch, k, t = codes.shape
        if self.per_timestep:
            left, right = codes.reshape(batch, k, t // 2, 2).unbind(-1)
        else:
            left, right = codes.reshape(batch, k // 2, 2, t).unbind(2)
        return left, right

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Interleaved [B, K', T'] codes (as `encode` gives) -> [B, 2, S] audio.

        Args:
            codes: interleaved codes with K' = `num_codebooks` rows and T' a multiple of
                `num_virtual_steps`.
            scale: [B, 2, 1] scales from `encode`, or None.
        """
        if codes.dim() != 3:
            raise ValueError(f"expected codes [B, K, T], got {tuple(codes.shape)}")
        batch, k, t = codes.shape
        if k != self.num_codebooks or t % self.num_virtual_steps:
            raise ValueError(f"expected interleaved codes with {self.num_codebooks} codebooks and a multiple "
                             f"of {self.num_virtual_steps} steps, got {tuple(codes.shape)}")
        scale_left = scale_right = None
        if scale is not None:
            if scale.shape[:2] != (batch, 2):
                raise ValueError(f"expected scales [{batch}, 2, 1], got {tuple(scale.shape)}")
            scale_left, scale_right = scale[:, 0], scale[:, 1]
        left, right = self.get_left_right_codes(codes)
        return torch.cat([self.model.decode(left, scale_left), self.model.decode(right, scale_right)], dim=1)

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("interleaved stereo codes have no single latent")


def build_compression_model(cfg: dict[str, Any]) -> CompressionModel:
    """Build the compression model of an upstream compression config.

    Args:
        cfg: a resolved plain-dict upstream config with `compression_model: encodec`, the
            `encodec` section (`autoencoder: seanet`, `quantizer: rvq | no_quant`,
            `sample_rate`, `channels`, `causal`, `renormalize`), `seanet` (shared SEANet
            arguments, plus `encoder` / `decoder` dicts of per-side overrides), the quantizer's
            section (`rvq`), and optionally `device`.
    Returns:
        An `EncodecModel` on `cfg['device']` (default CPU), with fresh weights.
    """
    if cfg.get("compression_model") != "encodec":
        raise ValueError(f"compression_model {cfg.get('compression_model')!r} is not supported: only 'encodec' is "
                         "ported (set compression_model: encodec in the config)")
    kwargs = dict(cfg["encodec"])
    autoencoder, quantizer_name = kwargs.pop("autoencoder"), kwargs.pop("quantizer")
    if autoencoder != "seanet":
        raise ValueError(f"encodec.autoencoder {autoencoder!r} is not supported: only 'seanet' is ported")
    seanet = dict(cfg["seanet"])
    encoder_overrides = seanet.pop("encoder", None) or {}
    decoder_overrides = seanet.pop("decoder", None) or {}
    encoder = SEANetEncoder(**{**seanet, **encoder_overrides})
    decoder = SEANetDecoder(**{**seanet, **decoder_overrides})

    quantizer: BaseQuantizer
    if quantizer_name == "rvq":
        quantizer = ResidualVectorQuantizer(**{**cfg["rvq"], "dimension": encoder.dimension})
    elif quantizer_name == "no_quant":
        quantizer = DummyQuantizer(**cfg.get("no_quant", {}))
    else:
        raise ValueError(f"encodec.quantizer {quantizer_name!r} is not supported: use 'rvq' or 'no_quant'")

    kwargs.pop("renorm", None)  # deprecated upstream, replaced by `renormalize`
    renormalize = kwargs.pop("renormalize", False)
    frame_rate = kwargs["sample_rate"] // encoder.hop_length
    model = EncodecModel(encoder, decoder, quantizer, frame_rate=frame_rate, renormalize=renormalize, **kwargs)
    return model.to(cfg.get("device", "cpu"))


def wrap_compression_model(model: CompressionModel, cfg: dict[str, Any]) -> CompressionModel:
    """Adapt a compression model to an LM config, as upstream's `get_wrapped_compression_model`.

    Args:
        model: the compression model of the LM's checkpoint.
        cfg: the LM's resolved plain-dict config. Reads `interleave_stereo_codebooks`
            (`{use, per_timestep}`) and `compression_model_n_q` (None: all codebooks).
    """
    stereo = dict(cfg.get("interleave_stereo_codebooks") or {})
    if stereo.pop("use", False):
        model = InterleaveStereoCompressionModel(model, **stereo)
    n_q = cfg.get("compression_model_n_q")
    if n_q is not None:
        model.set_num_codebooks(n_q)
    return model


def get_debug_compression_model(device: torch.device | str = "cpu", sample_rate: int = 32000) -> EncodecModel:
    """A tiny random mono EnCodec for tests: 25 Hz, 4 codebooks of 400 entries, latent dim 32.

    Same architecture as upstream's debug model; the weights are a fresh random init (upstream
    also fits its codebooks with k-means on random latents).
    """
    ratios = {16000: [10, 8, 8], 32000: [10, 8, 16]}
    if sample_rate not in ratios:
        raise ValueError(f"the debug compression model exists for {sorted(ratios)} Hz, not {sample_rate}")
    seanet = dict(n_filters=4, n_residual_layers=1, dimension=32, ratios=ratios[sample_rate])
    model = EncodecModel(SEANetEncoder(**seanet), SEANetDecoder(**seanet),
                         ResidualVectorQuantizer(dimension=32, n_q=4, bins=400),
                         frame_rate=25, sample_rate=sample_rate, channels=1)
    return model.to(device).eval()
