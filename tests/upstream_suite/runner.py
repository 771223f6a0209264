"""Run upstream audiocraft 1.3.0's own unit tests against audiocraft_patched.

The project never carries upstream's test files: they are taken at test time from the release's
source distribution, downloaded with pip (`pip download --no-deps --no-binary :all:`, the way
`patching/upstream.py` fetches a release) into a cache folder and checked against the sha256
pinned below. The in-scope files are copied to a scratch folder with `audiocraft` rewritten to
`audiocraft_patched` in their imports, and run there by pytest in a subprocess.

    python tests/upstream_suite/runner.py [--cache DIR] [pytest args...]

Upstream's model-level tests (tests/models, tests/quantization) are not in the sdist; our own
tests of the same behaviours are `tests/upstream_suite/test_upstream_models.py`.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from audiocraft_patched.patching.upstream import UpstreamError, download_sdist

VERSION = "1.3.0"
# sha256 of audiocraft-1.3.0.tar.gz as published on PyPI: a changed archive is refused.
SDIST_SHA256 = "d82ade3eb4f934ee1adb438ae687a2bf59d33ca4a20039beab072548c038ac80"

# Test files of the sdist that exercise what we mirror: every test in them must pass.
IN_SCOPE = (
    "tests/modules/test_codebooks_patterns.py",
    "tests/modules/test_conv.py",
    "tests/modules/test_seanet.py",
    "tests/modules/test_transformer.py",
    "tests/modules/test_lstm.py",
    "tests/data/test_audio_utils.py",
)
# Every other test file of the sdist, with the reason it is not run. A file of the sdist in
# neither list fails the suite, so a new upstream test is never skipped silently.
OUT_OF_SCOPE = {
    "tests/adversarial/test_discriminators.py": "adversarial discriminators: EnCodec training, not ported",
    "tests/adversarial/test_losses.py": "adversarial losses: EnCodec training, not ported",
    "tests/losses/test_losses.py": "spectral/SI-SNR training losses: not ported",
    "tests/modules/test_activations.py": "custom gated activations: no supported model uses them",
    "tests/modules/test_rope.py": "rotary embeddings: no supported model uses them",
    "tests/data/test_audio_dataset.py": "audio datasets (training data loading): not ported",
    "tests/data/test_audio.py": "torchaudio/av reading and mp3/ogg/flac/m4a formats: we read and write WAV only",
}
# Support files the in-scope tests import.
SUPPORT = ("tests/__init__.py", "tests/modules/__init__.py", "tests/data/__init__.py",
           "tests/common_utils/__init__.py", "tests/common_utils/temp_utils.py",
           "tests/common_utils/wav_utils.py")

_IMPORT = re.compile(r"^(\s*)(from|import)(\s+)audiocraft(?=[\s.])", re.M)


class SuiteError(RuntimeError):
    """The upstream suite could not be fetched or prepared; says what to do."""


def default_cache() -> Path:
    root = os.environ.get("AUDIOCRAFT_PATCHED_UPSTREAM_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audiocraft_patched" / "upstream"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist_tree(cache: Path | None = None) -> Path:
    """The unpacked audiocraft 1.3.0 sdist, downloaded once into `cache` and checked by hash."""
    cache = Path(cache or default_cache()) / VERSION
    archive = cache / f"audiocraft-{VERSION}.tar.gz"
    tree = cache / f"audiocraft-{VERSION}"
    if archive.is_file() and _sha256(archive) == SDIST_SHA256 and (tree / "tests").is_dir():
        return tree
    # Download into a fresh folder and move it into place, so a killed run leaves no half tree.
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        try:
            fresh = download_sdist(VERSION, Path(tmp))
        except UpstreamError as err:
            raise SuiteError(str(err)) from None
        got = _sha256(Path(tmp) / archive.name)
        if got != SDIST_SHA256:
            raise SuiteError(f"audiocraft-{VERSION}.tar.gz has sha256 {got}, expected {SDIST_SHA256}; "
                             "the download is not the published release")
        if cache.exists():
            shutil.rmtree(cache)
        cache.mkdir()
        shutil.move(str(Path(tmp) / archive.name), archive)
        shutil.move(str(fresh), tree)
    return tree


def rewrite_imports(source: str) -> str:
    """`from audiocraft.x import y` / `import audiocraft` -> the same with audiocraft_patched."""
    return _IMPORT.sub(r"\1\2\3audiocraft_patched", source)


def prepare(tree: Path, dest: Path) -> list[Path]:
    """Copy the in-scope test files and their support files to `dest`, imports rewritten."""
    found = {p.relative_to(tree).as_posix() for p in (tree / "tests").rglob("test_*.py")}
    unknown = sorted(found - set(IN_SCOPE) - set(OUT_OF_SCOPE))
    missing = sorted(set(IN_SCOPE) - found)
    if unknown or missing:
        raise SuiteError(f"the sdist's test files changed: not classified {unknown}, missing {missing}; "
                         "add each to IN_SCOPE or OUT_OF_SCOPE in tests/upstream_suite/runner.py")
    for rel in SUPPORT + IN_SCOPE:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rewrite_imports((tree / rel).read_text(encoding="utf-8")), encoding="utf-8")
    # An empty config keeps pytest from reading this project's pytest.ini / conftest.
    (dest / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return [dest / rel for rel in IN_SCOPE]


def run(pytest_args: list[str], cache: Path | None = None) -> int:
    """Fetch, prepare and run the suite; returns pytest's exit code."""
    tree = sdist_tree(cache)
    with tempfile.TemporaryDirectory(prefix="acp-upstream-tests-") as tmp:
        dest = Path(tmp)
        files = prepare(tree, dest)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(dest / "pytest.ini"),
               "--rootdir", str(dest), *map(str, files), *pytest_args]
        return subprocess.run(cmd, cwd=dest, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help=f"download cache (default {default_cache()})")
    args, pytest_args = parser.parse_known_args(argv)
    try:
        return run(pytest_args, args.cache)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
