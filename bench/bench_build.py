"""The bench's models: MusicGen shapes with random weights, written once, loaded by each implementation.

The LM and codec configs are upstream's own (`config/model/lm/musicgen_lm.yaml` with
`model_scale: small`, `conditioner/text2music.yaml`, and `model/encodec/encodec_large_nq4_s640.yaml`
for the 32 kHz EnCodec), built by our builders, randomly initialised as upstream's training
init does, and saved in upstream's export format. Upstream 1.3.0 and audiocraft_patched load
that folder through their `MusicGen.get_pretrained`; transformers gets a converted copy
(`bench_hf.py`). The text encoder is a random T5 with t5-base's config and a small sentencepiece
vocabulary trained on captions, put in the Hugging Face cache under the name `t5-base`, the
only way upstream's `T5Conditioner` accepts it. Everything is built offline.
"""
from __future__ import annotations

import copy
import inspect
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
T5_NAME = "t5-base"  # what upstream's T5Conditioner whitelists; our export names it too


@dataclass(frozen=True)
class Shape:
    """Sizes of one benchmark model (LM, text encoder, codec)."""

    name: str
    dim: int
    num_layers: int
    num_heads: int
    n_q: int  # codebooks
    card: int  # entries per codebook
    # T5Config kwargs; d_model must be 768 for upstream, which reads t5-base's width from a table.
    t5: dict = field(default_factory=dict)
    codec_dim: int = 128  # SEANet latent width
    codec_filters: int = 64  # SEANet n_filters
    sample_rate: int = 32000
    ratios: tuple[int, ...] = (8, 5, 4, 4)  # hop 640: 50 frames/s at 32 kHz

    @property
    def frame_rate(self) -> float:
        hop = 1
        for ratio in self.ratios:
            hop *= ratio
        return self.sample_rate / hop


SHAPES = {
    # musicgen-small: LM 1024 wide, 24 layers, 16 heads, 4 x 2048 codebooks; t5-base; EnCodec 32 kHz.
    "small": Shape("small", dim=1024, num_layers=24, num_heads=16, n_q=4, card=2048,
                   t5=dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                           relative_attention_num_buckets=32)),
    # A few-second smoke shape; its T5 equals tests/conftest.py's `tiny_t5_dir`, so both may share a cache.
    "tiny": Shape("tiny", dim=32, num_layers=2, num_heads=4, n_q=4, card=64,
                  t5=dict(d_model=768, d_kv=8, d_ff=32, num_layers=2, num_heads=2, relative_attention_num_buckets=8),
                  codec_dim=16, codec_filters=4),
}


def import_upstream():
    """Upstream audiocraft 1.3.0 (with the stand-ins of tests/upstream.py), or None if not installed."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from upstream import import_upstream as _import
    finally:
        sys.path.remove(str(REPO / "tests"))
    return _import()


def prompts(n: int) -> list[str]:
    """n distinct music captions (from the templates the tokenizer was trained on)."""
    from audiocraft_patched.utils.tiny import captions

    unique = list(dict.fromkeys(captions(50 * n + 100)))
    if len(unique) < n:
        raise ValueError(f"the caption templates give {len(unique)} distinct captions, {n} asked")
    return unique[:n]


def lm_config(shape: Shape) -> dict:
    """Upstream's musicgen_lm + text2music config (an `xp.cfg`) at this shape."""
    from audiocraft_patched.utils.tiny import tiny_musicgen_config

    return tiny_musicgen_config(T5_NAME, dim=shape.dim, num_layers=shape.num_layers, num_heads=shape.num_heads,
                                n_q=shape.n_q, card=shape.card, sample_rate=shape.sample_rate, segment_duration=30.0)


def codec_config(shape: Shape) -> dict:
    """Upstream's encodec/default.yaml with encodec_large_nq4_s640's overrides, at this shape."""
    from audiocraft_patched.utils.tiny import tiny_encodec_config

    cfg = tiny_encodec_config(shape.sample_rate, 1, n_q=shape.n_q, card=shape.card, ratios=shape.ratios)
    cfg["seanet"].update(dimension=shape.codec_dim, n_filters=shape.codec_filters)
    return cfg


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache this process reads (fixed when huggingface_hub is imported)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def write_t5(folder: Path, shape: Shape, seed: int = 0) -> Path:
    """A random T5 encoder with `shape.t5`'s config and a sentencepiece tokenizer, saved to `folder`."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from audiocraft_patched.utils.tiny import GENRES, INSTRUMENTS, MOODS, captions, train_sentencepiece

    with tempfile.TemporaryDirectory() as tmp:
        train_sentencepiece(Path(tmp), captions() + GENRES + INSTRUMENTS + MOODS)
        tokenizer = T5Tokenizer.from_pretrained(tmp, extra_ids=0)
        tokenizer.save_pretrained(folder)
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      **shape.t5)
    torch.manual_seed(seed)
    T5EncoderModel(config).eval().save_pretrained(folder)
    return folder


def ensure_t5(shape: Shape) -> Path:
    """The snapshot folder of `t5-base` in the current HF cache, written there if absent.

    An existing entry is reused only if it has this shape's sizes (the test suite's tiny T5 has
    the tiny shape's); anything else is refused rather than benchmarked under a wrong shape.
    """
    repo = hf_cache_dir() / f"models--{T5_NAME}"
    snapshot = repo / "snapshots" / ("0" * 40)
    if (repo / "refs" / "main").is_file():
        found = json.loads((snapshot / "config.json").read_text())
        wrong = {k: (found.get(k), v) for k, v in shape.t5.items() if found.get(k) != v}
        if wrong:
            raise RuntimeError(f"the Hugging Face cache {hf_cache_dir()} already holds a '{T5_NAME}' with other sizes "
                               f"(found, wanted: {wrong}); run the bench with its own cache (the default when run "
                               "as a script)")
        return snapshot
    write_t5(snapshot, shape)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def write_export(folder: Path, shape: Shape, seed: int = 0) -> Path:
    """Random MusicGen weights at `shape`, in upstream's export format (reused if already there)."""
    from audiocraft_patched.models.builders import get_compression_model, get_lm_model
    from audiocraft_patched.utils.tiny import randomize_codebooks, save_export

    marker = folder / "bench-shape.json"
    spec = json.dumps({"shape": asdict(shape), "seed": seed}, sort_keys=True)
    if marker.is_file() and marker.read_text() == spec:
        return folder
    lm_cfg, codec_cfg = lm_config(shape), codec_config(shape)
    torch.manual_seed(seed)
    lm = get_lm_model(copy.deepcopy(lm_cfg))  # upstream's init: truncated gaussian, depthwise scaled
    codec = get_compression_model(copy.deepcopy(codec_cfg))
    randomize_codebooks(codec, torch.Generator().manual_seed(seed))
    # A folder of another shape is rebuilt in place (the marker said so): replacing is intended.
    save_export(folder / "state_dict.bin", lm.state_dict(), lm_cfg, overwrite=True)
    save_export(folder / "compression_state_dict.bin", codec.state_dict(), codec_cfg, overwrite=True)
    marker.write_text(spec)
    return folder


def load_ours(export: Path, dtype: torch.dtype = torch.float32):
    """audiocraft_patched's MusicGen from the export, in `dtype`, through the API it has today.

    Returns:
        (model, how): `how` names the call that set the dtype.
    """
    from audiocraft_patched.models import MusicGen

    if dtype == torch.float32:
        return MusicGen.get_pretrained(str(export), device="cpu"), "MusicGen.get_pretrained"
    if "dtype" in inspect.signature(MusicGen.get_pretrained).parameters:
        return MusicGen.get_pretrained(str(export), device="cpu", dtype=dtype), "MusicGen.get_pretrained(dtype=)"
    model = MusicGen.get_pretrained(str(export), device="cpu")
    return cast_ours(model, dtype)


def with_own_lm(model):
    """A MusicGen sharing `model`'s codec but holding a copy of its LM (and text encoder), to cast or quantize."""
    other = copy.copy(model)
    other.lm = copy.deepcopy(model.lm)  # (the codec's weight_norm tensors refuse deepcopy; it is not cast)
    return other


def cast_ours(model, dtype: torch.dtype):
    """Cast an already loaded model of ours; returns (model, name of the call used)."""
    for method in ("set_dtype", "to_dtype"):
        if hasattr(model, method):
            getattr(model, method)(dtype)
            return model, f"MusicGen.{method}"
    model.lm.to(dtype)
    return model, "lm.to"


def load_upstream(export: Path):
    """Upstream 1.3.0's MusicGen from the export (float32: upstream's CPU path)."""
    from audiocraft.models import MusicGen as UpstreamMusicGen

    return UpstreamMusicGen.get_pretrained(str(export), device="cpu")


def attributes(texts: list[str | None], upstream: bool = False) -> list:
    """One `ConditioningAttributes` per text, of upstream's class or ours."""
    if upstream:
        from audiocraft.modules.conditioners import ConditioningAttributes
    else:
        from audiocraft_patched.modules.conditioners import ConditioningAttributes
    return [ConditioningAttributes(text={"description": t}) for t in texts]


def lm_generate(model, texts: list[str], frames: int, upstream: bool = False) -> torch.Tensor:
    """Codes [B, K, frames] from `model.lm.generate`: greedy, CFG 3 (2B rows), conditioning included."""
    with torch.no_grad():
        return model.lm.generate(None, attributes(texts, upstream), max_gen_len=frames, use_sampling=False,
                                 cfg_coef=3.0, two_step_cfg=False)


def pattern_logits(model, texts: list[str], codes: torch.Tensor, upstream: bool = False) -> torch.Tensor:
    """Logits [B, K, S, card] of the delay-pattern sequence of `codes` [B, K, T] (one full pass)."""
    with torch.no_grad():
        return model.lm(pattern_sequence(model, codes), attributes(texts, upstream)).float()


def pattern_sequence(model, codes: torch.Tensor) -> torch.Tensor:
    """The delay-pattern sequence [B, K, S] the LM reads for `codes` [B, K, T]."""
    lm = model.lm
    sequence, _, _ = lm.pattern_provider.get_pattern(codes.shape[-1]).build_pattern_sequence(
        codes, lm.special_token_id)
    return sequence
