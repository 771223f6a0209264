"""Audio conversions (sample rate, channels, PCM formats) and volume normalization.

Mirrors `audiocraft/data/audio_utils.py` (audiocraft 1.3.0): same function names, signatures and
numerics, without its two heavy dependencies.

- Resampling: upstream calls `julius.resample_frac`. `resample_frac` below is our own
  windowed-sinc polyphase resampler built to give the same samples (same filter: `zeros`
  zero crossings, Hann-squared window, cutoff `rolloff * min(sr) / 2`, kernels summing to one,
  edge samples replicated), to ~1e-6.
- Loudness: upstream calls `torchaudio.transforms.Loudness` (ITU-R BS.1770-4). `loudness` below
  reproduces torchaudio's variant of it, quirks included (see there).
"""
from __future__ import annotations

import functools
import logging
import math

import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)

def convert_audio_channels(wav: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """Give `wav` the requested number of channels.

    Mono is downmixed by averaging all channels; mono to many replicates the one channel (as a
    view: clone it before writing into it); many to fewer keeps the first `channels`.

    Args:
        wav: audio, [..., C, T].
        channels: number of channels wanted.

    Returns:
        Audio, [..., channels, T].

    Raises:
        ValueError: if `wav` has fewer than 2 dimensions, if `channels` < 1, or if more channels
            are asked of a multi-channel input than it has (there is no obvious upmix then).
    """
    if wav.dim() < 2:
        raise ValueError(f"wav must be [..., C, T], got shape {tuple(wav.shape)}; "
                         "use wav[None] for a single channel")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    *batch, src_channels, length = wav.shape
    if src_channels == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if src_channels == 1:
        return wav.expand(*batch, channels, length)
    if src_channels > channels:
        return wav[..., :channels, :]
    raise ValueError(f"cannot turn {src_channels} channels into {channels}: only mono can be "
                     "upmixed; downmix to mono first with convert_audio_channels(wav, 1)")


@functools.lru_cache(maxsize=16)
def _resample_kernels(old_sr: int, new_sr: int, zeros: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase filters for `resample_frac`, computed once per rate pair.

    Output sample `j` sits at input position `j * old_sr / new_sr`. Within a period of `new_sr`
    outputs, output `i` (phase `i`) needs its own filter; the next period reuses the same filters
    `old_sr` input samples later, hence one strided convolution with `new_sr` output channels.

    Args:
        old_sr: input rate, reduced by the gcd.
        new_sr: output rate, reduced by the gcd.
        zeros: zero crossings of the sinc kept on each side.
        rolloff: cutoff as a fraction of the lower Nyquist frequency.

    Returns:
        (kernels [new_sr, 1, 2 * width + old_sr] float32, width), where `width` is the number of
        input samples each filter reaches before its period starts.
    """
    # Same float expression as julius, so that `width` rounds up identically.
    cutoff = min(old_sr, new_sr) * rolloff
    width = math.ceil(zeros * old_sr / cutoff)
    # The filters are computed in float32, with julius's order of operations: its float32
    # rounding (up to ~1e-5 per tap for 441/320) is part of upstream's output, and in float64 we
    # would differ from it by ~1e-4 on unit-variance noise.
    taps = torch.arange(-width, width + old_sr, dtype=torch.float32)  # input offsets
    phases = (-torch.arange(new_sr, dtype=torch.float64) / new_sr).float()[:, None]
    # Distance from each tap to the output position, in units of the filter's zero crossings.
    t = (phases + taps / old_sr) * cutoff
    t = t.clamp(-zeros, zeros) * math.pi  # [new_sr, taps]
    window = torch.cos(t / zeros / 2) ** 2
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernels = sinc * window
    # Unit DC gain for every phase: a constant signal stays constant.
    kernels = kernels / kernels.sum(dim=-1, keepdim=True)
    return kernels[:, None, :], width


def resample_frac(wav: torch.Tensor, old_sr: int, new_sr: int, zeros: int = 24,
                  rolloff: float = 0.945) -> torch.Tensor:
    """Resample with a windowed sinc, as `julius.resample_frac` does.

    Fast when `old_sr / new_sr` reduces to a fraction with small terms (32000 -> 16000 is 2/1,
    44100 -> 32000 is 441/320). Filters are cached per rate pair.

    Args:
        wav: audio, [..., T], floating point.
        old_sr: sample rate of `wav`.
        new_sr: sample rate wanted.
        zeros: zero crossings of the sinc kept on each side; more is sharper and slower.
        rolloff: low-pass cutoff as a fraction of the lower of the two Nyquist frequencies; below 1
            to leave room for the imperfect filter's transition band.

    Returns:
        Audio, [..., floor(T * new_sr / old_sr)], same dtype and device as `wav`.
    """
    if int(old_sr) != old_sr or int(new_sr) != new_sr or old_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {old_sr} -> {new_sr}")
    if not wav.dtype.is_floating_point:
        raise ValueError(f"wav must be floating point, got {wav.dtype}; convert it with f32_pcm(wav)")
    gcd = math.gcd(int(old_sr), int(new_sr))
    old_sr, new_sr = int(old_sr) // gcd, int(new_sr) // gcd
    if old_sr == new_sr:
        return wav
    kernels, width = _resample_kernels(old_sr, new_sr, zeros, rolloff)
    *batch, length = wav.shape
    if length == 0:
        return wav.new_zeros(*batch, 0)
    x = wav.reshape(-1, 1, length)
    # Past the edges, assume the signal holds its first/last value (as julius does), which avoids
    # the click that zero padding would filter into the ends.
    x = F.pad(x, (width, width + old_sr), mode="replicate")
    y = F.conv1d(x, kernels.to(wav), stride=old_sr)  # [N, new_sr, periods]
    y = y.transpose(1, 2).reshape(*batch, -1)  # interleave the phases back into time
    return y[..., :new_sr * length // old_sr]


def convert_audio(wav: torch.Tensor, from_rate: float, to_rate: float, to_channels: int) -> torch.Tensor:
    """Resample `wav` and give it `to_channels` channels.

    Args:
        wav: audio, [..., C, T], floating point.
        from_rate: sample rate of `wav` (truncated to an integer, as upstream does).
        to_rate: sample rate wanted (truncated to an integer).
        to_channels: number of channels wanted; see `convert_audio_channels`.

    Returns:
        Audio, [..., to_channels, T * to_rate / from_rate].
    """
    # Resample before the channel change, as upstream does, so that float rounding matches.
    wav = resample_frac(wav, int(from_rate), int(to_rate))
    return convert_audio_channels(wav, to_channels)


def _biquad(wav: torch.Tensor, b: tuple[float, float, float], a: tuple[float, float, float]) -> torch.Tensor:
    """Apply the IIR filter `b / a` (a[0] need not be 1), from rest, along the last dimension.

    Rather than a sample-by-sample recursion (slow in Python), convolve with the filter's impulse
    response, cut where it has decayed below 1e-13 of its peak: the truncation is below float32
    precision. The filter must be stable.

    Args:
        wav: signal, [..., T], float64.
        b: numerator coefficients (b0, b1, b2).
        a: denominator coefficients (a0, a1, a2).

    Returns:
        Filtered signal, [..., T].
    """
    b0, b1, b2 = (coef / a[0] for coef in b)
    a1, a2 = a[1] / a[0], a[2] / a[0]
    length = wav.shape[-1]
    response = []
    x1 = x2 = y1 = y2 = 0.0
    peak = 0.0
    for n in range(length):
        x0 = 1.0 if n == 0 else 0.0
        y0 = b0 * x0 + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        response.append(y0)
        x1, x2, y1, y2 = x0, x1, y0, y1
        peak = max(peak, abs(y0))
        # Past the FIR part, a quiet pair of outputs means the rest of the response is quieter still.
        if n > 2 and max(abs(y1), abs(y2)) < 1e-13 * peak:
            break
    h = torch.tensor(response, dtype=wav.dtype, device=wav.device)
    # Zero-pad past the full convolution length (no circular wrap), to a power of two: FFT time
    # varies tenfold with the factors of the size.
    n_fft = 1 << (length + len(response) - 2).bit_length()
    spectrum = torch.fft.rfft(wav, n_fft) * torch.fft.rfft(h, n_fft)
    return torch.fft.irfft(spectrum, n_fft)[..., :length]


# BS.1770 channel weights for L, R, C, Ls, Rs (the LFE channel is excluded by the standard).
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


def loudness(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Integrated loudness in LUFS, per ITU-R BS.1770-4, as `torchaudio.functional.loudness` has it.

    K-weighting, then the mean square of 400 ms blocks (75% overlap), channel-weighted, gated at
    -70 LUFS, then at 10 LU below the loudness of what passed. As in torchaudio (and so upstream):

    - the K-weighting filters are RBJ-cookbook biquads designed at `sample_rate` (+4 dB shelf at
      1500 Hz, Q 1/sqrt(2); 38 Hz high-pass, Q 0.5), close to but not the 48 kHz coefficients of
      the standard: a 1 kHz sine at -20 dBFS measures -23.045 LUFS, not -23.01;
    - each filter's output is clamped to [-1, 1] (torchaudio's `lfilter` default), so audio that
      the shelf boosts past full scale measures quieter: a full-scale 1 kHz sine gives -3.276,
      not -3.01.

    Args:
        wav: audio, [..., C, T] with C <= 5 (L, R, C, Ls, Rs), T at least 400 ms.
        sample_rate: sample rate of `wav`.

    Returns:
        Loudness, [...], in the dtype of `wav`; -inf where no block passes the gates (silence).
    """
    if wav.dim() < 2:
        raise ValueError(f"wav must be [..., C, T], got shape {tuple(wav.shape)}; use wav[None] for mono")
    channels = wav.shape[-2]
    if channels > len(_CHANNEL_WEIGHTS):
        raise ValueError(f"loudness supports up to {len(_CHANNEL_WEIGHTS)} channels (L, R, C, Ls, Rs), "
                         f"got {channels}")
    block = int(round(0.4 * sample_rate))
    hop = int(round(block * 0.25))
    if wav.shape[-1] < block:
        raise ValueError(f"loudness needs at least 400 ms of audio ({block} samples at {sample_rate} Hz), "
                         f"got {wav.shape[-1]}; use the 'peak' or 'rms' strategy for shorter clips")
    x = wav.to(torch.float64)

    # K-weighting stage 1: high shelf, +4 dB above ~1.5 kHz (the head's acoustic effect).
    gain = 10 ** (4.0 / 40)
    w0 = 2 * math.pi * 1500.0 / sample_rate
    alpha = math.sin(w0) / 2 * math.sqrt(2)  # sin(w0) / (2 Q), Q = 1/sqrt(2)
    cos_w0, root = math.cos(w0), 2 * math.sqrt(gain) * alpha
    shelf_b = (gain * ((gain + 1) + (gain - 1) * cos_w0 + root),
               -2 * gain * ((gain - 1) + (gain + 1) * cos_w0),
               gain * ((gain + 1) + (gain - 1) * cos_w0 - root))
    shelf_a = ((gain + 1) - (gain - 1) * cos_w0 + root,
               2 * ((gain - 1) - (gain + 1) * cos_w0),
               (gain + 1) - (gain - 1) * cos_w0 - root)
    # torchaudio's lfilter clamps its output to [-1, 1]; upstream's loudness numbers include it.
    x = _biquad(x, shelf_b, shelf_a).clamp(-1, 1)

    # K-weighting stage 2: 38 Hz high-pass (RLB weighting).
    w0 = 2 * math.pi * 38.0 / sample_rate
    alpha = math.sin(w0) / (2 * 0.5)
    cos_w0 = math.cos(w0)
    x = _biquad(x, ((1 + cos_w0) / 2, -1 - cos_w0, (1 + cos_w0) / 2),
                (1 + alpha, -2 * cos_w0, 1 - alpha)).clamp(-1, 1)

    energy = x.square().unfold(-1, block, hop).mean(dim=-1)  # [..., C, blocks]
    weights = torch.tensor(_CHANNEL_WEIGHTS[:channels], dtype=x.dtype, device=x.device)[:, None]

    def to_lufs(power: torch.Tensor) -> torch.Tensor:
        return -0.691 + 10 * torch.log10(power)

    def gated_power(gate: torch.Tensor) -> torch.Tensor:
        """Channel-weighted power of the mean energy of the blocks in `gate` ([..., blocks])."""
        kept = gate[..., None, :].to(x.dtype)
        mean = (energy * kept).sum(dim=-1) / kept.sum(dim=-1)  # [..., C]; nan if nothing kept
        return (mean * weights[:, 0]).sum(dim=-1)

    block_lufs = to_lufs((energy * weights).sum(dim=-2))  # [..., blocks]
    above_abs = block_lufs > -70.0
    relative_gate = to_lufs(gated_power(above_abs)) - 10.0
    power = gated_power(above_abs & (block_lufs > relative_gate[..., None]))
    lufs = torch.where(power.isnan(), torch.full_like(power, -math.inf), to_lufs(power))
    return lufs.to(wav.dtype)


def normalize_loudness(wav: torch.Tensor, sample_rate: int, loudness_headroom_db: float = 14,
                       loudness_compressor: bool = False, energy_floor: float = 2e-3) -> torch.Tensor:
    """Scale `wav` to an integrated loudness of `-loudness_headroom_db` LUFS.

    Args:
        wav: audio, [C, T], at least 400 ms long.
        sample_rate: sample rate of `wav`.
        loudness_headroom_db: target loudness below 0 LUFS, in dB.
        loudness_compressor: soft-clip the result with tanh.
        energy_floor: audio whose RMS is below this is returned unchanged (too quiet to measure).

    Returns:
        Audio, [C, T].
    """
    rms = wav.pow(2).mean().sqrt().item()
    if rms < energy_floor:
        return wav
    input_lufs = loudness(wav, sample_rate).item()
    if not math.isfinite(input_lufs):
        raise ValueError(f"cannot measure the loudness of this audio (RMS {rms:.3g}, but every 400 ms "
                         "block is below -70 LUFS after K-weighting, e.g. a DC offset); "
                         "use the 'peak' or 'rms' strategy")
    gain = 10.0 ** ((-loudness_headroom_db - input_lufs) / 20.0)
    out = gain * wav
    if loudness_compressor:
        out = torch.tanh(out)
    return out


def _clip_wav(wav: torch.Tensor, log_clipping: bool = False, stem_name: str | None = None) -> torch.Tensor:
    """Clamp `wav` to [-1, 1] in place, as upstream does, logging how much was clipped when asked.

    Returns `wav` too (upstream returns None), so that `wav = _clip_wav(...)` reads naturally.
    """
    peak = wav.abs().max().item()
    if log_clipping and peak > 1:
        fraction = (wav.abs() > 1).float().mean().item()
        logger.warning("clipping %s: %.3g%% of the samples exceed full scale (peak %.3g); a little is fine",
                       stem_name or "audio", 100 * fraction, peak)
    return wav.clamp_(-1, 1)


def normalize_audio(wav: torch.Tensor, normalize: bool = True,
                    strategy: str = "peak", peak_clip_headroom_db: float = 1,
                    rms_headroom_db: float = 18, loudness_headroom_db: float = 14,
                    loudness_compressor: bool = False, log_clipping: bool = False,
                    sample_rate: int | None = None,
                    stem_name: str | None = None) -> torch.Tensor:
    """Bring `wav` to a safe level for writing, by the given strategy.

    Strategies:
        'peak': scale so that the largest sample is `peak_clip_headroom_db` below full scale.
        'clip': clamp at `peak_clip_headroom_db` below full scale, no scaling.
        'rms': scale the RMS of the mono mix to `rms_headroom_db` below full scale, then clamp
            at full scale.
        'loudness': scale to `-loudness_headroom_db` LUFS (BS.1770), optionally soft-clip with
            tanh, then clamp at full scale. Needs `sample_rate` and 400 ms of audio.
        'none' or '': leave as is; the audio must already be within (-1, 1).

    Args:
        wav: audio, [C, T].
        normalize: scale by the strategy. If False, 'peak' and 'rms' only scale down, and only
            when the audio would otherwise clip; 'clip' and 'loudness' are unaffected.
        strategy: one of the above.
        peak_clip_headroom_db: headroom for 'peak' and 'clip', in dB.
        rms_headroom_db: headroom for 'rms', in dB; much larger than the peak one, as music peaks
            well above its RMS.
        loudness_headroom_db: target for 'loudness', in dB below 0 LUFS.
        loudness_compressor: soft-clip with tanh after 'loudness' scaling.
        log_clipping: log a warning when 'rms' or 'loudness' leave samples to clamp.
        sample_rate: sample rate of `wav`, needed by 'loudness'.
        stem_name: name to show in the clipping warning.

    Returns:
        Audio, [C, T]. Never modifies `wav` in place.
    """
    scale_peak = 10 ** (-peak_clip_headroom_db / 20)
    scale_rms = 10 ** (-rms_headroom_db / 20)
    if strategy == "peak":
        peak = wav.abs().max()
        # Silence stays silence (upstream would divide by zero and write NaN).
        if peak > 0:
            rescaling = scale_peak / peak
            if normalize or rescaling < 1:
                wav = wav * rescaling
    elif strategy == "clip":
        wav = wav.clamp(-scale_peak, scale_peak)
    elif strategy == "rms":
        mono = wav.mean(dim=0) if wav.dim() > 1 else wav
        rms = mono.pow(2).mean().sqrt()
        if rms > 0:
            rescaling = scale_rms / rms
            if normalize or rescaling < 1:
                wav = wav * rescaling
        # A copy: without rescaling, `wav` is still the caller's tensor (upstream clips that one in place).
        wav = _clip_wav(wav.clone(), log_clipping=log_clipping, stem_name=stem_name)
    elif strategy == "loudness":
        if sample_rate is None:
            raise ValueError("strategy='loudness' needs sample_rate=...")
        wav = normalize_loudness(wav, sample_rate, loudness_headroom_db, loudness_compressor)
        wav = _clip_wav(wav.clone(), log_clipping=log_clipping, stem_name=stem_name)  # may be the caller's
    elif strategy in ("none", ""):
        peak = wav.abs().max().item()
        if peak >= 1:
            raise ValueError(f"audio peaks at {peak:.3g}, which would clip, and strategy={strategy!r} does "
                             "not rescale; pick strategy='peak', 'clip', 'rms' or 'loudness'")
    else:
        raise ValueError(f"unknown strategy {strategy!r}; pick one of 'peak', 'clip', 'rms', 'loudness', 'none'")
    return wav


def f32_pcm(wav: torch.Tensor) -> torch.Tensor:
    """Convert PCM audio to float in [-1, 1): int16 / 2**15, int32 / 2**31; floats pass through.

    Args:
        wav: audio, any shape, float, int16 or int32.

    Returns:
        Float audio, same shape (float32 for integer inputs).
    """
    if wav.dtype.is_floating_point:
        return wav
    if wav.dtype == torch.int16:
        return wav.float() / 2**15
    if wav.dtype == torch.int32:
        return wav.float() / 2**31
    raise ValueError(f"unsupported wav dtype {wav.dtype}; expected a float, int16 or int32 tensor")


def i16_pcm(wav: torch.Tensor) -> torch.Tensor:
    """Convert float audio in [-1, 1] to int16 PCM; int16 passes through.

    Scales by 2**15, the inverse of `f32_pcm`, unless a sample would then reach 2**15 (a +1.0
    sample), in which case it scales by 2**15 - 1 instead. The int16 range is asymmetric, so no
    rule gives both no clipping and `i16_pcm(f32_pcm(x)) == x`.

    Args:
        wav: audio, any shape, float within [-1, 1] or int16.

    Returns:
        int16 audio, same shape.
    """
    if wav.dtype.is_floating_point:
        peak = wav.abs().max().item() if wav.numel() else 0.0
        if peak > 1:
            raise ValueError(f"float audio must lie within [-1, 1] for int16, peak is {peak:.3g}; "
                             "scale it first, e.g. with normalize_audio(wav)")
        candidate = (wav * 2**15).round()
        if candidate.numel() and candidate.max() >= 2**15:
            candidate = (wav * (2**15 - 1)).round()
        return candidate.short()
    if wav.dtype != torch.int16:
        raise ValueError(f"unsupported wav dtype {wav.dtype}; expected a float or int16 tensor")
    return wav
