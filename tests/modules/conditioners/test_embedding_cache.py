"""The conditioners' embedding cache: bit-identical on or off, invalidated by any encoder change, fast, bounded."""
import statistics
import time

import pytest
import torch

from audiocraft_patched.models import MusicGen
from audiocraft_patched.modules.conditioners import HFEncoderConditioner
from audiocraft_patched.modules.conditioners.cache import TextEmbeddingCache
from audiocraft_patched.utils.tiny import make_tiny_t5

BATCHES = [["calm piano with soft drums", "fast techno beat at 120 bpm"], ["calm piano with soft drums"],
           ["fast techno beat at 120 bpm", None, "calm piano with soft drums", ""], [None, None]]


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
    return [str(make_tiny_t5(tmp_path_factory.mktemp(f"t5-{seed}"), d_model=32, num_heads=2, d_kv=8, d_ff=32,
                             seed=seed)) for seed in (0, 1)]


def pair(folder, **kwargs):
    """(uncached, cached) conditioners on the same encoder and projection."""
    plain = HFEncoderConditioner(folder, output_dim=8, **kwargs).eval()
    cached = HFEncoderConditioner(folder, output_dim=8, cache=True, **kwargs).eval()
    cached.output_proj.load_state_dict(plain.output_proj.state_dict())
    return plain, cached


def run(cond, texts):
    with torch.no_grad():
        return cond(cond.tokenize(texts))


def assert_identical(a, b):
    assert a[0].shape == b[0].shape and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # bit for bit, signed zeros included
    assert torch.equal(a[0].view(torch.int32), b[0].view(torch.int32))


@pytest.mark.parametrize("pooling", ["none", "mean"])
def test_bit_identical_on_or_off(t5_dirs, pooling):
    plain, cached = pair(t5_dirs[0], pooling=pooling)
    for _ in range(2):  # misses, then hits
        for texts in BATCHES:
            assert_identical(run(cached, texts), run(plain, texts))
    assert cached.cache.hits == len(BATCHES) and cached.cache.misses == len(BATCHES)
    # One entry per batch: the same text in another batch is another entry, since its encoding
    # depends on the batch's padded length.
    assert len(cached.cache) == len(BATCHES)
    inputs = cached.tokenize(BATCHES[0])
    assert set(inputs) == {"attention_mask"} and inputs.cached is not None  # a hit: no token ids, the states
    inputs["attention_mask"].zero_()  # whoever gets a hit may modify it: the cache keeps its own copy
    assert_identical(run(cached, BATCHES[0]), run(plain, BATCHES[0]))


def test_generate_same_tokens_with_cache(tiny_musicgen_dir):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    model.set_generation_params(duration=0.2, top_k=10)
    texts = ["calm piano with soft drums", None]
    torch.manual_seed(3)
    expected = model.generate(texts, return_tokens=True)[1]
    cond = model.lm.condition_provider.conditioners["description"]
    cond.enable_cache()
    for _ in range(2):
        torch.manual_seed(3)
        assert torch.equal(model.generate(texts, return_tokens=True)[1], expected)
    assert cond.cache.hits == 1 and cond.cache.misses == 1


def test_changed_encoder_never_hits(t5_dirs):
    shared = TextEmbeddingCache()
    a = HFEncoderConditioner(t5_dirs[0], output_dim=8, cache=shared).eval()
    b = HFEncoderConditioner(t5_dirs[1], output_dim=8, cache=shared).eval()  # same config, other weights
    b.output_proj.load_state_dict(a.output_proj.state_dict())
    texts = BATCHES[0]
    first = run(a, texts)
    assert not torch.equal(run(b, texts)[0], first[0]) and shared.hits == 0
    assert a.fingerprint() != b.fingerprint()
    # in-place edit of a weight (as an optimizer step does): new fingerprint, fresh result
    fingerprint = a.fingerprint()
    with torch.no_grad():
        a.encoder.shared.weight.mul_(2.0)
    assert a.fingerprint() != fingerprint
    changed = run(a, texts)
    assert not torch.equal(changed[0], first[0]) and shared.hits == 0
    plain = HFEncoderConditioner(t5_dirs[0], output_dim=8).eval()
    plain.encoder.load_state_dict(a.encoder.state_dict())
    plain.output_proj.load_state_dict(a.output_proj.state_dict())
    assert_identical(changed, run(plain, texts))
    # load_state_dict back to the original weights: the original entry is valid again
    a.encoder.load_state_dict(HFEncoderConditioner(t5_dirs[0], output_dim=8).encoder.state_dict())
    assert a.fingerprint() == fingerprint
    assert_identical(run(a, texts), first)
    assert shared.hits == 1
    # other settings are other entries
    other = HFEncoderConditioner(t5_dirs[0], output_dim=8, cache=shared, layer=1).eval()
    run(other, texts)
    assert shared.hits == 1


def test_hit_costs_under_a_millisecond(t5_dirs):
    _, cached = pair(t5_dirs[0])
    texts = BATCHES[2]
    run(cached, texts)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        run(cached, texts)
        times.append(time.perf_counter() - start)
    assert cached.cache.hits == 50
    assert statistics.median(times) < 1e-3, f"median hit (tokenize + forward) {statistics.median(times) * 1e3:.2f} ms"


def test_memory_bounds():
    cache = TextEmbeddingCache(max_entries=2, max_bytes=10_000)
    for key in "abc":
        cache.put(key, torch.zeros(1, 4, 8), torch.ones(1, 4))
    assert len(cache) == 2 and cache.get("a", "cpu") is None and cache.get("c", "cpu") is not None
    cache.get("b", "cpu")  # b is now the most recently used: d evicts c
    cache.put("d", torch.zeros(1, 4, 8), torch.ones(1, 4))
    assert cache.get("b", "cpu") is not None and cache.get("c", "cpu") is None
    cache.put("big", torch.zeros(100, 100), torch.ones(1, 1))  # over the whole byte budget: not kept in memory
    assert cache.get("big", "cpu") is None and cache.nbytes <= 10_000
    with pytest.raises(ValueError, match="must be positive"):
        TextEmbeddingCache(max_entries=0)


def test_disk_cache_survives_a_restart(t5_dirs, tmp_path):
    plain, _ = pair(t5_dirs[0])
    first = HFEncoderConditioner(t5_dirs[0], output_dim=8, cache_dir=str(tmp_path)).eval()
    first.output_proj.load_state_dict(plain.output_proj.state_dict())
    expected = run(first, BATCHES[2])
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == 1 and not list(tmp_path.rglob(".tmp-*"))  # written atomically, no leftovers
    entry = torch.load(files[0], weights_only=True)  # plain tensors: safe to load
    assert set(entry) == {"format", "key", "states", "mask"}
    second = HFEncoderConditioner(t5_dirs[0], output_dim=8, cache_dir=str(tmp_path)).eval()  # empty memory
    second.output_proj.load_state_dict(plain.output_proj.state_dict())
    assert_identical(run(second, BATCHES[2]), expected)
    assert second.cache.hits == 1
    assert_identical(run(plain, BATCHES[2]), expected)
    files[0].write_bytes(b"damaged")  # a damaged file is a miss, recomputed
    third = HFEncoderConditioner(t5_dirs[0], output_dim=8, cache_dir=str(tmp_path)).eval()
    third.output_proj.load_state_dict(plain.output_proj.state_dict())
    assert_identical(run(third, BATCHES[2]), expected)
    assert third.cache.hits == 0


def test_cache_stays_out_of_training(t5_dirs):
    cond = HFEncoderConditioner(t5_dirs[0], output_dim=8, cache=True, word_dropout=0.5)
    cond.train()
    cond(cond.tokenize(BATCHES[0]))
    assert len(cond.cache) == 0  # random word dropout: nothing to reuse
    tuned = HFEncoderConditioner(t5_dirs[0], output_dim=8, cache=True, finetune=True)
    embeds, _ = tuned(tuned.tokenize(BATCHES[0]))
    assert embeds.requires_grad and len(tuned.cache) == 0  # a cached tensor would cut the encoder's graph
    with torch.no_grad():
        tuned.eval()(tuned.tokenize(BATCHES[0]))
    assert len(tuned.cache) == 1
