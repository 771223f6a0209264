"""Unit tests of the alignment package: adapters, the hf_adapter conditioner, LoRA, losses, metrics, data."""
import json

import pytest
import torch

from audiocraft_patched.modules.conditioners.adapters import build_adapter
from audiocraft_patched.align.data import read_manifest, read_pairs, split_holdout
from audiocraft_patched.align.features import pad
from audiocraft_patched.align.lora import apply_lora, merged_state_dict
from audiocraft_patched.align.losses import lm_cross_entropy, next_token_kl, parse_weights, top1_agreement
from audiocraft_patched.align.metrics import apply_map, least_squares_map, linear_cka, mean_cosine, retrieval
from audiocraft_patched.models.builders import get_conditioner_provider, get_debug_lm_model


def _batch(lengths, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pad([torch.randn(n, dim, generator=g) for n in lengths])


@pytest.mark.parametrize("spec", [{"kind": "linear"}, {"kind": "mlp", "hidden": 20, "depth": 2},
                                  {"kind": "resampler", "width": 16, "n_tokens": 3, "num_heads": 2}])
def test_adapters_shapes_masks_and_null_rows(spec):
    torch.manual_seed(0)
    adapter = build_adapter(12, **spec).eval()
    x, mask = _batch([5, 2, 4])
    mask[1] = 0  # an empty text: the null condition
    out, out_mask = adapter(x, mask)
    assert out.shape[0] == 3 and out.shape[-1] == adapter.out_dim and out_mask.shape == out.shape[:2]
    assert out_mask[1].sum() == 0 and out_mask[0].sum() > 0
    if spec["kind"] == "resampler":
        assert out.shape[1] == 3 and torch.all(out[1] == 0) and torch.isfinite(out).all()
        # Padding never changes a row's output: the keys are masked.
        alone, _ = adapter(x[2:3, :4], mask[2:3, :4])
        torch.testing.assert_close(out[2], alone[0], atol=1e-6, rtol=0)


def test_build_adapter_errors_say_what_to_fix():
    with pytest.raises(ValueError, match="unknown adapter kind 'conv'"):
        build_adapter(8, kind="conv")
    with pytest.raises(ValueError, match="no option.*'n_tokens'.*options are"):
        build_adapter(8, kind="mlp", n_tokens=4)
    with pytest.raises(ValueError, match="divisible"):
        build_adapter(8, kind="resampler", width=10, num_heads=4)


def test_hf_adapter_linear_equals_hf_and_builds_from_config(tiny_t5_dir):
    texts = ["calm piano", None, "fast techno beat with synth and bass"]
    provider = get_conditioner_provider(32, {"conditioners": {
        "a": {"model": "hf", "hf": {"name": str(tiny_t5_dir)}},
        "b": {"model": "hf_adapter", "hf_adapter": {"name": str(tiny_t5_dir), "adapter": {"kind": "linear"}}},
        "c": {"model": "hf_adapter", "hf_adapter": {"name": str(tiny_t5_dir),
                                                    "adapter": {"kind": "mlp", "hidden": 24}}},
    }})
    a, b, c = (provider.conditioners[k] for k in "abc")
    b.output_proj.load_state_dict(a.output_proj.state_dict())
    ea, ma = a(a.tokenize(texts))
    eb, mb = b(b.tokenize(texts))
    assert torch.equal(ma, mb)
    torch.testing.assert_close(eb, ea, atol=0, rtol=0)
    assert sorted(provider.state_dict()) == sorted(
        [f"conditioners.a.output_proj.{p}" for p in ("weight", "bias")]
        + [f"conditioners.b.output_proj.{p}" for p in ("weight", "bias")]
        + [f"conditioners.c.{k}" for k in ("adapter.net.0.weight", "adapter.net.0.bias", "output_proj.weight",
                                           "output_proj.bias")])
    ec, mc = c(c.tokenize(texts))
    assert ec.shape == (3, ma.shape[1], 32) and torch.all(ec[1] == 0)


def test_lora_starts_as_identity_and_merges_exactly():
    torch.manual_seed(0)
    lm = get_debug_lm_model()
    codes = torch.randint(400, (2, 4, 6), generator=torch.Generator().manual_seed(0))
    cond = {"description": (torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.long))}
    with torch.no_grad():
        before = lm.compute_predictions(codes, [], condition_tensors=cond).logits
    lm.requires_grad_(False)
    params = apply_lora(lm, rank=2, targets=("q", "k", "v", "out"))
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in lm.named_parameters() if "original" in n)
    with torch.no_grad():
        torch.testing.assert_close(lm.compute_predictions(codes, [], condition_tensors=cond).logits, before,
                                   equal_nan=True, atol=0, rtol=0)
        for p in params:
            p.add_(torch.randn_like(p) * 0.3)
        changed = lm.compute_predictions(codes, [], condition_tensors=cond).logits
    assert not torch.allclose(changed.nan_to_num(), before.nan_to_num())
    fresh = get_debug_lm_model()
    fresh.load_state_dict(merged_state_dict(lm))  # plain upstream keys, strict
    with torch.no_grad():
        torch.testing.assert_close(fresh.compute_predictions(codes, [], condition_tensors=cond).logits, changed,
                                   equal_nan=True, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="subset of"):
        apply_lora(fresh, rank=2, targets=("x",))


def test_losses():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1:, 0] = False
    assert next_token_kl(logits.log_softmax(-1), logits, mask).abs() < 1e-6
    assert next_token_kl(logits.log_softmax(-1), logits.flip(0), mask) > 0.1
    assert top1_agreement(logits.log_softmax(-1), logits * 2, mask) == 1
    codes = torch.randint(7, (2, 3, 5), generator=g)
    full = mask.expand(2, -1, -1)
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[:, k][full[:, k]], codes[:, k][full[:, k]])
                            for k in range(3)]).mean()
    torch.testing.assert_close(lm_cross_entropy(logits, codes, full), expected)
    assert parse_weights("kl=1, feature=0.5") == {"kl": 1.0, "feature": 0.5}
    assert parse_weights("xattn") == {"xattn": 1.0}
    with pytest.raises(ValueError, match="losses must name"):
        parse_weights("mse=1")


def test_metrics_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 10, generator=g)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(60, 10, generator=g)) < 0.5
    y = x @ torch.randn(10, 6, generator=g) + 0.5  # an affine map of x
    w = least_squares_map(x[:30], y[:30])
    assert mean_cosine(apply_map(x[30:], w), y[30:]) == pytest.approx(1.0, abs=1e-9)
    assert retrieval(apply_map(x[30:], w), y[30:]) == {"r@1": 1.0, "r@5": 1.0}
    shuffled = retrieval(torch.randn(30, 6, generator=g), y[30:])
    assert shuffled["r@1"] < 0.3 and shuffled["r@1"] <= shuffled["r@5"]


def test_data_readers(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("ruhiger Jazz\tcalm jazz\n\nlauter Rock\tloud rock\n", encoding="utf-8")
    assert read_pairs(tsv) == [("ruhiger Jazz", "calm jazz"), ("lauter Rock", "loud rock")]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps({"student": "安静的爵士", "teacher": "calm jazz"}) + "\n", encoding="utf-8")
    assert read_pairs(jsonl) == [("安静的爵士", "calm jazz")]
    tsv.write_text("no tab here\n")
    with pytest.raises(ValueError, match="pairs.tsv:1: expected 'student text<TAB>teacher text'"):
        read_pairs(tsv)
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    (tmp_path / "b.json").write_text(json.dumps({"description": "sidecar caption"}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "a.wav", "description": "inline"}) + "\n" + json.dumps({"path": "b.wav"}))
    assert [i.description for i in read_manifest(manifest)] == ["inline", "sidecar caption"]
    manifest.write_text(json.dumps({"path": "a.wav"}))
    with pytest.raises(ValueError, match="no caption for .*a.wav"):
        read_manifest(manifest)
    train, held = split_holdout(10, 0.2, seed=1)
    assert len(held) == 2 and sorted(train + held) == list(range(10)) and split_holdout(10, 0.2, 1) == (train, held)
    with pytest.raises(ValueError, match="holdout"):
        split_holdout(3, 5, 0)
