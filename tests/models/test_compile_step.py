"""compile_step: fixed-shape caches, the compiled decode step, and the eager fallbacks."""
import warnings

import pytest
import torch

from audiocraft_patched.models import MusicGen
from audiocraft_patched.models import lm as lm_module

TEXTS = ["calm piano with soft drums", "fast loud drums"]


@pytest.fixture()
def model(tiny_musicgen_dir):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    model.set_generation_params(duration=0.4, use_sampling=False, cfg_coef=3.0)
    return model


def tokens(model, texts=TEXTS, prompt=None):
    if prompt is None:
        return model.generate(texts, return_tokens=True)[1]
    return model.generate_continuation(prompt, model.sample_rate, texts, return_tokens=True)[1]


def test_fixed_shape_caches_compute_what_growing_caches_do(model, monkeypatch):
    """The compiled step's cache layout, run eagerly: same tokens, with and without a prompt."""
    prompt = torch.linspace(-0.5, 0.5, model.sample_rate // 5).repeat(2, 1, 1)
    reference, continued = tokens(model), tokens(model, prompt=prompt)
    monkeypatch.setattr(lm_module.LMModel, "_compiled", lambda self: lm_module._decode)
    monkeypatch.setattr(model.lm, "compiled_step", True)
    assert torch.equal(tokens(model), reference)
    assert torch.equal(tokens(model, prompt=prompt), continued)


def test_compiled_step_gives_the_eager_tokens(model):
    if lm_module.compiler_note() is not None:
        pytest.skip(lm_module.compiler_note())
    longer = ["a much longer text than the others, for a new text length", "drums"]  # same batch, other length
    reference, other = tokens(model), tokens(model, longer)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent fallback to eager
        assert model.compile_step() is True
        assert torch.equal(tokens(model), reference)
        # Another text length reuses the graph (the cross-attention length is dynamic).
        assert torch.equal(tokens(model, longer), other)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    model.set_generation_params(duration=0.4, use_sampling=True, top_k=20, cfg_coef=3.0)
    torch.manual_seed(5)
    compiled = tokens(model)
    model.compile_step(False)
    torch.manual_seed(5)
    assert torch.equal(compiled, tokens(model))


def test_more_graphs_than_dynamos_recompile_limit_stay_compiled(model):
    """One graph per batch size (and capacity bucket, quantization mode) of the one compiled `_decode`: past
    dynamo's recompile_limit (8 by default, here 1) dynamo would run eager without an error, so the compiled
    step raises the limit for its own calls."""
    if lm_module.compiler_note() is not None:
        pytest.skip(lm_module.compiler_note())
    batches = (TEXTS, TEXTS[:1])
    references = [tokens(model, texts) for texts in batches]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(recompile_limit=1):
        model.compile_step()
        for texts, reference in zip(batches, references):
            assert torch.equal(tokens(model, texts), reference)
        assert torch._dynamo.config.recompile_limit == 1  # the user's setting is back after each step
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # batch 1 compiled too, not eager


def test_without_a_compiler_it_warns_once_and_stays_eager(model, monkeypatch):
    reference = tokens(model)
    monkeypatch.setattr(lm_module, "compiler_note", lambda: "no C++ compiler for torch.compile (test)")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler.*stays eager"):
        assert model.compile_step() is False
    assert torch.equal(tokens(model), reference)


def test_a_failing_compilation_falls_back_to_eager_with_one_warning(model, monkeypatch):
    reference = tokens(model)

    def broken(*args):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(lm_module, "compiler_note", lambda: None)
    monkeypatch.setattr(lm_module.LMModel, "_compiled", lambda self: broken)
    assert model.compile_step() is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(tokens(model), reference)
    notes = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(notes) == 1 and "inductor exploded" in notes[0] and "continues eager" in notes[0]
    assert model.lm.compiled_step is False


def test_cli_generate_compile(tiny_musicgen_dir, tmp_path, monkeypatch):
    from audiocraft_patched import cli

    def generate(name, *extra):
        out = tmp_path / f"{name}.wav"
        assert cli.main(["generate", str(tiny_musicgen_dir), "calm piano", "--duration", "0.4", "--seed", "1", "-q",
                         "-o", str(out), *extra]) == 0
        return out.read_bytes()

    plain = generate("plain")
    monkeypatch.setattr(lm_module, "compiler_note", lambda: "no C++ compiler for torch.compile (test)")
    with pytest.warns(RuntimeWarning, match="stays eager"):
        assert generate("no-compiler", "--compile") == plain
    monkeypatch.setattr(lm_module, "compiler_note", lambda: None)
    monkeypatch.setattr(lm_module.LMModel, "_compiled", lambda self: lm_module._decode)  # the fixed-shape path
    assert generate("fixed", "--compile") == plain


def test_a_sliding_window_stays_eager(model, monkeypatch):
    monkeypatch.setattr(lm_module, "compiler_note", lambda: None)
    monkeypatch.setattr(model.lm.transformer.layers[0].self_attn, "past_context", 4)
    with pytest.warns(RuntimeWarning, match="past_context.*stays eager"):
        assert model.compile_step() is False


def test_int4_compiles_one_graph(model):
    """int4 weights cache their kernel layout lazily: the eager first step fills it before tracing."""
    if lm_module.compiler_note() is not None:
        pytest.skip(lm_module.compiler_note())
    model.quantize("int4", group_size=32)  # the tiny widths take torch's int4 kernel at this group size
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model.compile_step()
        first, second = tokens(model), tokens(model)
    assert torch.equal(first, second)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def assert_one_graph_with(model, reference):
    """Compiled from scratch: the tokens `reference`, one graph, no graph break, no eager fallback."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model.compile_step()
        assert torch.equal(tokens(model), reference)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]


@pytest.mark.parametrize("mode", ["w8a8", "int8-dynamic"])
def test_int8_activation_modes_compile_one_graph_with_the_eager_tokens(model, mode):
    """The int8 x int8 product (`torch._int_mm`) and the per-row rounding of its input trace into the graph;
    so does fbgemm's dynamic product (its packed weights made eagerly, before tracing)."""
    if lm_module.compiler_note() is not None:
        pytest.skip(lm_module.compiler_note())
    model.quantize(mode)
    reference = tokens(model)
    assert_one_graph_with(model, reference)


def test_the_attention_window_grows_by_blocks_in_one_graph(model):
    """3 s at 25 frames/s: the window of attended slots grows 64 -> 128 within a capacity of 256."""
    model.set_generation_params(duration=3.0, use_sampling=False, cfg_coef=3.0)
    reference = tokens(model)
    windows = []
    write = lm_module.KVCache.write

    def spy(cache, k, v):
        windows.append(cache.visible.shape[-1])
        return write(cache, k, v)

    with pytest.MonkeyPatch.context() as patch:  # the fixed-shape layout, eager: every window is seen
        patch.setattr(lm_module.LMModel, "_compiled", lambda self: lm_module._decode)
        patch.setattr(lm_module.KVCache, "write", spy)
        patch.setattr(model.lm, "compiled_step", True)
        assert torch.equal(tokens(model), reference)
    assert sorted(set(windows)) == [64, 128]
    if lm_module.compiler_note() is not None:
        pytest.skip(lm_module.compiler_note())
    assert_one_graph_with(model, reference)
