"""The same weights in transformers' `MusicgenForConditionalGeneration`, and its generation.

Converts an upstream-format MusicGen export (`state_dict.bin` + `compression_state_dict.bin`)
plus the T5 folder into a transformers MusicGen: decoder layers get q/k/v split from
`in_proj_weight`, `fc1`/`fc2` from `linear1`/`linear2`, and the three layer norms renamed;
`enc_to_dec_proj` is the conditioner's `output_proj`; the audio encoder is transformers'
`EncodecModel` with the SEANet/RVQ weights renamed. The bench checks the conversion on logits
and decoded audio before it times anything.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch

# Our LM's parameter name -> transformers' (per layer; attention weights are split separately).
_LAYER_NAMES = {"norm1": "self_attn_layer_norm", "norm_cross": "encoder_attn_layer_norm", "norm2": "final_layer_norm",
                "linear1": "fc1", "linear2": "fc2"}
_ATTENTION_NAMES = {"self_attn": "self_attn", "cross_attention": "encoder_attn"}
# SEANet / RVQ names of audiocraft -> transformers' EncodecModel (applied in order).
_CODEC_RENAMES = [(r"\.model\.", ".layers."), (r"\.conv\.conv\.", ".conv."), (r"\.convtr\.convtr\.", ".conv."),
                  (r"weight_g$", "parametrizations.weight.original0"),
                  (r"weight_v$", "parametrizations.weight.original1"),
                  (r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook.")]


def decoder_state(lm_state: dict[str, torch.Tensor], n_q: int, num_layers: int) -> dict[str, torch.Tensor]:
    """Our/upstream LM state dict -> `MusicgenForConditionalGeneration` keys (decoder + enc_to_dec_proj)."""
    biased = [k for k in lm_state if k.startswith("transformer.") and k.endswith("bias") and "norm" not in k]
    if biased:
        raise ValueError(f"transformers' MusicGen has no attention/feed-forward biases, the LM has {biased[:3]}...; "
                         "convert a config with bias_attn=False and bias_ff=False (as musicgen_lm.yaml)")
    top = "decoder.model.decoder."
    out = {}
    for k in range(n_q):
        out[f"{top}embed_tokens.{k}.weight"] = lm_state[f"emb.{k}.weight"]
        out[f"decoder.lm_heads.{k}.weight"] = lm_state[f"linears.{k}.weight"]
    for i in range(num_layers):
        src, dst = f"transformer.layers.{i}.", f"{top}layers.{i}."
        for ours, theirs in _ATTENTION_NAMES.items():
            q, k, v = lm_state[f"{src}{ours}.in_proj_weight"].chunk(3)  # [Wq; Wk; Wv]
            out.update({f"{dst}{theirs}.q_proj.weight": q.clone(), f"{dst}{theirs}.k_proj.weight": k.clone(),
                        f"{dst}{theirs}.v_proj.weight": v.clone(),
                        f"{dst}{theirs}.out_proj.weight": lm_state[f"{src}{ours}.out_proj.weight"]})
        for ours, theirs in _LAYER_NAMES.items():
            for kind in ("weight", "bias") if ours.startswith("norm") else ("weight",):
                out[f"{dst}{theirs}.{kind}"] = lm_state[f"{src}{ours}.{kind}"]
    for kind in ("weight", "bias"):
        out[f"{top}layer_norm.{kind}"] = lm_state[f"out_norm.{kind}"]
        out[f"enc_to_dec_proj.{kind}"] = lm_state[f"condition_provider.conditioners.description.output_proj.{kind}"]
    return out


def codec_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our/upstream EnCodec state dict -> transformers' `EncodecModel` keys."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in _CODEC_RENAMES:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def hf_config(lm_cfg: dict, codec_cfg: dict, t5_folder: Path):
    """A `MusicgenConfig` with the sizes of our LM / codec configs and the T5 folder's config."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    lm, seanet, rvq = lm_cfg["transformer_lm"], codec_cfg["seanet"], codec_cfg["rvq"]
    if seanet["causal"] or not seanet["true_skip"] or codec_cfg["encodec"]["renormalize"]:
        raise ValueError("the conversion covers non-causal EnCodec with true_skip and no renormalization (MusicGen's)")
    frame_rate = codec_cfg["sample_rate"] / torch.tensor(seanet["ratios"]).prod().item()
    audio = EncodecConfig(
        sampling_rate=codec_cfg["sample_rate"], audio_channels=codec_cfg["channels"], num_filters=seanet["n_filters"],
        upsampling_ratios=list(seanet["ratios"]), codebook_size=rvq["bins"], hidden_size=seanet["dimension"],
        # transformers picks the number of codebooks from the bandwidth: n_q * log2(bins) * frame_rate bits/s.
        target_bandwidths=[rvq["n_q"] * torch.tensor(rvq["bins"]).log2().item() * frame_rate / 1000],
        use_causal_conv=False, normalize=False, pad_mode=seanet["pad_mode"], use_conv_shortcut=False,
        num_lstm_layers=seanet["lstm"], compress=seanet["compress"],
        residual_kernel_size=seanet["residual_kernel_size"], kernel_size=seanet["kernel_size"],
        last_kernel_size=seanet["last_kernel_size"],
        dilation_growth_rate=seanet["dilation_base"], num_residual_layers=seanet["n_residual_layers"],
        norm_type=seanet["norm"], trim_right_ratio=seanet["decoder"]["trim_right_ratio"], chunk_length_s=None,
        overlap=None)
    decoder = MusicgenDecoderConfig(
        vocab_size=lm["card"], max_position_embeddings=4096, num_hidden_layers=lm["num_layers"],
        ffn_dim=lm["hidden_scale"] * lm["dim"], num_attention_heads=lm["num_heads"], hidden_size=lm["dim"],
        num_codebooks=lm["n_q"], audio_channels=1, activation_function=lm["activation"], dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=lm["card"], bos_token_id=lm["card"],
        decoder_start_token_id=lm["card"])
    return MusicgenConfig(text_encoder=T5Config.from_pretrained(t5_folder).to_dict(), audio_encoder=audio.to_dict(),
                          decoder=decoder.to_dict())


def convert(export: Path, t5_folder: Path, out: Path | None = None):
    """Build a transformers MusicGen holding the export's weights (saved to `out` if given)."""
    from omegaconf import OmegaConf
    from transformers import MusicgenForConditionalGeneration, T5EncoderModel

    from audiocraft_patched.models.builders import as_dict

    lm_pkg = torch.load(export / "state_dict.bin", weights_only=True)
    codec_pkg = torch.load(export / "compression_state_dict.bin", weights_only=True)
    lm_cfg = as_dict(OmegaConf.create(lm_pkg["xp.cfg"]))
    codec_cfg = as_dict(OmegaConf.create(codec_pkg["xp.cfg"]))
    config = hf_config(lm_cfg, codec_cfg, t5_folder)
    model = MusicgenForConditionalGeneration(config).eval()
    state = decoder_state(lm_pkg["best_state"], lm_cfg["transformer_lm"]["n_q"], lm_cfg["transformer_lm"]["num_layers"])
    state.update({f"audio_encoder.{k}": v for k, v in codec_state(codec_pkg["best_state"]).items()})
    state.update({f"text_encoder.{k}": v for k, v in T5EncoderModel.from_pretrained(t5_folder).state_dict().items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"conversion to transformers' MusicGen: missing {missing[:5]}, unexpected {unexpected[:5]}")
    card = lm_cfg["transformer_lm"]["card"]
    model.generation_config.update(decoder_start_token_id=card, pad_token_id=card, bos_token_id=card,
                                   max_length=4096)
    if out is not None:
        model.save_pretrained(out)
    return model


def load(folder: Path, dtype: torch.dtype = torch.float32):
    """A converted model saved by `convert`, loaded the way transformers users do."""
    from transformers import MusicgenForConditionalGeneration

    return MusicgenForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()


def text_inputs(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


def generate(model, tokenizer, texts: list[str], frames: int, decode: bool = False) -> torch.Tensor:
    """Greedy generation with guidance 3 (2B rows): codes [B, K, frames], or audio if `decode`.

    Without `decode`, the codec's decode is skipped so that the LM alone is timed, as for the
    other implementations (transformers' `generate` always decodes).
    """
    K = model.decoder.num_codebooks
    kwargs = dict(do_sample=False, guidance_scale=3.0, max_new_tokens=frames + K - 1)  # start token + delays
    with torch.no_grad():
        if decode:
            return model.generate(**text_inputs(tokenizer, texts), **kwargs)
        # An instance attribute shadows the method for this call; the codes come back as "audio".
        model.audio_encoder.decode = lambda codes, audio_scales=None, **_: SimpleNamespace(audio_values=codes)
        try:
            codes = model.generate(**text_inputs(tokenizer, texts), **kwargs)
        finally:
            del model.audio_encoder.decode
    return codes[0]  # [1, B, K, T] -> [B, K, T]


def pattern_logits(model, tokenizer, texts: list[str], sequence: torch.Tensor) -> torch.Tensor:
    """Logits [B, K, S, card] for a delay-pattern sequence [B, K, S] (one full pass)."""
    B, K, S = sequence.shape
    with torch.no_grad():
        out = model(**text_inputs(tokenizer, texts), decoder_input_ids=sequence.reshape(B * K, S))
    return out.logits.reshape(B, K, S, -1).float()


def decode(model, codes: torch.Tensor) -> torch.Tensor:
    """Codes [B, K, T] -> audio [B, C, S] with transformers' EnCodec."""
    with torch.no_grad():
        return model.audio_encoder.decode(codes[None], audio_scales=[None] * codes.shape[0]).audio_values
