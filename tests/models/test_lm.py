"""LMModel: the cached generation path equals full forward passes (the plain path), in fp32."""
import pytest
import torch

from audiocraft_patched.models import MusicGen
from audiocraft_patched.models.lm import apply_cfg
from audiocraft_patched.modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes
from audiocraft_patched.modules.matmul_forms import MatmulForms


@pytest.fixture(scope="module")
def lm(tiny_musicgen_dir):
    return MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").lm


def plain_greedy(lm, conditions, steps, cfg_coef):
    """Greedy generation recomputing the whole sequence every step: no cache, no hoisting."""
    B, K = len(conditions), lm.num_codebooks
    tensors = lm.condition_tensors(conditions + ClassifierFreeGuidanceDropout(p=1.0)(conditions))
    pattern = lm.pattern_provider.get_pattern(steps)
    codes = torch.full((B, K, steps), -1)
    seq, _, mask = pattern.build_pattern_sequence(codes, lm.special_token_id)
    with torch.no_grad():
        for offset in range(1, seq.shape[-1]):
            current = seq[..., :offset]
            logits = lm(torch.cat([current, current]), [], condition_tensors=tensors)[:, :, -1]
            token = apply_cfg(*logits.split(B), cfg_coef).argmax(-1, keepdim=True)
            token[~mask[:, offset:offset + 1].expand(B, -1, -1)] = lm.special_token_id
            seq[..., offset:offset + 1] = token
    return pattern.revert_pattern_sequence(seq, special_token=-1)[0]


def test_cached_generation_equals_plain_path(lm):
    conditions = [ConditioningAttributes(text={"description": t}) for t in ["dark techno", None, "soft flute"]]
    expected = plain_greedy(lm, conditions, 12, cfg_coef=3.0)
    got = lm.generate(conditions=conditions, max_gen_len=12, use_sampling=False, cfg_coef=3.0, check=True)
    assert torch.equal(got, expected)


def test_step_logits_match_full_forward(lm):
    conditions = [ConditioningAttributes(text={"description": "epic organ"})] * 2
    tensors = lm.condition_tensors(conditions)
    seq = torch.randint(lm.card, (2, lm.num_codebooks, 9))
    with torch.no_grad():
        full = lm(seq, [], condition_tensors=tensors)[:, :, :, :]
        from audiocraft_patched.models.lm import _Stream

        stream = _Stream(tensors)
        first = lm._step(stream, seq[..., :4], capacity=9)  # several steps at once, then one by one
        rest = [lm._step(stream, seq[..., t:t + 1], capacity=9) for t in range(4, 9)]
    torch.testing.assert_close(first, full[:, :, 3], atol=1e-5, rtol=0)
    for t, logits in zip(range(4, 9), rest):
        torch.testing.assert_close(logits, full[:, :, t], atol=1e-5, rtol=0)


def test_generate_rejects_training_mode(lm):
    lm.train()
    try:
        with pytest.raises(RuntimeError, match="eval mode"):
            lm.generate(num_samples=1, max_gen_len=4)
    finally:
        lm.eval()


def test_bfloat16_generation(tiny_musicgen_dir):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu", dtype="bf16")
    assert next(model.lm.parameters()).dtype == torch.bfloat16
    assert next(model.lm.condition_provider.conditioners["description"].encoder.parameters()).dtype == torch.bfloat16
    model.set_generation_params(duration=0.4, use_sampling=False)
    wav, tokens = model.generate(["calm piano", None], return_tokens=True)
    assert wav.dtype == torch.float32 and tokens.shape == (2, 4, 10) and (tokens < model.lm.card).all()
    with pytest.raises(ValueError, match="dtype must be"):
        model.set_dtype("int8")


@pytest.mark.parametrize("w_at_x", [False, True])
def test_both_matmul_forms_give_the_plain_path_tokens(lm, w_at_x):
    """Whichever product form the machine measures fastest, greedy tokens equal the plain path's."""
    import copy

    conditions = [ConditioningAttributes(text={"description": t}) for t in ["dark techno", "soft flute"]]
    expected = plain_greedy(lm, conditions, 10, cfg_coef=3.0)
    lm = copy.deepcopy(lm)  # its own forms: the fixture's stay as they were
    forms = lm.transformer.matmul_forms
    assert all(layer.matmul_forms is forms and layer.self_attn.matmul_forms is forms for layer in lm.transformer.layers)
    forms.set(4, torch.float32, "cpu", w_at_x)  # 2 samples x 2 for CFG
    forms.measure = False
    got = lm.generate(conditions=conditions, max_gen_len=10, use_sampling=False, cfg_coef=3.0)
    assert torch.equal(got, expected) and forms.forms[MatmulForms.key(4, torch.float32, torch.device("cpu"))] == w_at_x
    assert ("W @ x.T" if w_at_x else "F.linear") in forms.describe()
