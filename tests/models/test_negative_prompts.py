"""Negative prompts (`negative_prompts=`, `--negative`): the text CFG's null row encodes instead of nothing."""
import pytest
import torch

from audiocraft_patched.cli import main
from audiocraft_patched.models import MusicGen
from audiocraft_patched.modules.conditioners.negative import negative_conditions


@pytest.fixture(scope="module")
def model(tiny_musicgen_dir):
    return MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")


def tokens(model, texts, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model.generate(texts, return_tokens=True, **kwargs)[1]


def test_without_negatives_nothing_changes(model):
    model.set_generation_params(duration=0.4, top_k=20)
    plain = tokens(model, ["rock", "jazz"])
    assert torch.equal(plain, tokens(model, ["rock", "jazz"], negative_prompts=None))
    assert torch.equal(plain, tokens(model, ["rock", "jazz"], negative_prompts=[None, None]))
    assert not torch.equal(plain, tokens(model, ["rock", "jazz"], negative_prompts=["calm piano", None]))


def test_the_negative_text_is_the_null_row(model):
    """Same tokens as the LM given null conditions whose text is the negative prompt."""
    model.set_generation_params(duration=0.4, top_k=20)
    ours = tokens(model, ["rock"], negative_prompts=["calm piano"])
    attributes = model._text_attributes(["rock"])
    nulls = negative_conditions(model.lm.condition_provider, attributes, ["calm piano"])
    assert nulls[0].text["description"] == "calm piano" and attributes[0].text["description"] == "rock"
    torch.manual_seed(0)
    direct = model.lm.generate(None, attributes, max_gen_len=int(0.4 * model.frame_rate), null_conditions=nulls,
                               **model.generation_params)
    assert torch.equal(ours, direct)


def test_two_step_cfg_and_the_embedding_cache(model):
    """Two-step CFG encodes the negatives in their own pass (padded apart from the prompts: not one batch's tokens)."""
    model.set_generation_params(duration=0.4, use_sampling=False, two_step_cfg=True)
    two_step = tokens(model, ["rock", "jazz"], negative_prompts=["calm piano", None])
    assert not torch.equal(two_step, tokens(model, ["rock", "jazz"]))
    attributes = model._text_attributes(["rock", "jazz"])
    nulls = negative_conditions(model.lm.condition_provider, attributes, ["calm piano", None])
    torch.manual_seed(0)
    direct = model.lm.generate(None, attributes, max_gen_len=int(0.4 * model.frame_rate), null_conditions=nulls,
                               **model.generation_params)
    assert model.generation_params["two_step_cfg"] and torch.equal(two_step, direct)
    # The embedding cache: the negatives are texts like any other, and hits give the same tokens.
    model.set_generation_params(duration=0.4, use_sampling=False)
    uncached = tokens(model, ["rock", "jazz"], negative_prompts=["calm piano", None])
    conditioner = model.lm.condition_provider.conditioners["description"]
    conditioner.enable_cache()
    try:
        first = tokens(model, ["rock", "jazz"], negative_prompts=["calm piano", None])
        second = tokens(model, ["rock", "jazz"], negative_prompts=["calm piano", None])
        assert conditioner.cache.hits >= 1  # the second call's texts, negative included, come from the cache
    finally:
        conditioner.disable_cache()
    assert torch.equal(first, uncached) and torch.equal(second, uncached)


def test_continuation_and_windows_take_negatives(model):
    model.set_generation_params(duration=0.6, use_sampling=False)
    prompt = torch.randn(1, 1, int(0.2 * model.sample_rate)) * 0.1
    plain = model.generate_continuation(prompt, model.sample_rate, ["rock"], return_tokens=True)[1]
    negative = model.generate_continuation(prompt, model.sample_rate, ["rock"], negative_prompts=["calm piano"],
                                           return_tokens=True)[1]
    assert plain.shape == negative.shape and not torch.equal(plain, negative)
    # Past max_duration (18.5 s) every window is guided by the negative prompt; shape check only (cheap).
    model.lm.generate, calls = _spy(model.lm.generate)
    try:
        model.set_generation_params(duration=19.0, extend_stride=18.4, use_sampling=False)
        model.generate(["rock"], negative_prompts=["calm piano"])
    finally:
        del model.lm.generate
    assert len(calls) == 2 and all(c["null_conditions"][0].text["description"] == "calm piano" for c in calls)


def _spy(function):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return function(*args, **kwargs)

    return spy, calls


def test_bad_negatives_are_refused(model):
    with pytest.raises(TypeError, match="negative_prompts must be a list of strings, not one string"):
        model.generate(["rock"], negative_prompts="calm")
    with pytest.raises(ValueError, match="2 negative prompts for 1 samples"):
        model.generate(["rock"], negative_prompts=["calm", "soft"])


def test_cli_negative(tmp_path, tiny_musicgen_dir, capsys):
    args = ["generate", str(tiny_musicgen_dir), "rock", "jazz", "--duration", "0.2", "-q", "--seed", "0"]
    assert main(args + ["--negative", "calm piano", "-o", str(tmp_path / "n.wav")]) == 0
    assert main(args + ["-o", str(tmp_path / "p.wav")]) == 0
    assert (tmp_path / "n_0.wav").read_bytes() != (tmp_path / "p_0.wav").read_bytes()
    assert main(args + ["--negative", "a", "--negative", "b", "--negative", "c", "-o", str(tmp_path / "x.wav")]) == 2
    assert "3 --negative for 2 samples" in capsys.readouterr().err


def test_on_the_world_model_a_negative_prompt_is_heard_less():
    """24 seeds, each a batch of [no negative, negative]: the README's numbers (flute 11 -> 3, quiet 19 -> 0)."""
    from audiocraft_patched.world.analyze import analyze

    model = MusicGen.get_pretrained("default", device="cpu")
    model.set_generation_params(duration=1.0)
    cases = (("a loud fast melody in a high register with busy hi-hats", "instrument", "flute"),
             ("a fast flute melody in a high register with busy hi-hats", "loudness", "quiet"))
    for caption, attribute, negative in cases:
        heard = [0, 0]
        for seed in range(24):
            torch.manual_seed(seed)
            clips = model.generate([caption, caption], negative_prompts=[None, negative])[:, 0].numpy()
            for i, clip in enumerate(clips):
                heard[i] += analyze(clip)[attribute] == negative
        assert heard[0] >= 8 and heard[1] <= min(heard[0] - 6, heard[0] / 2), (negative, heard)
