"""The patch series itself: what each patch changes and says, and how it is regenerated.

`regenerate(upstream)` rebuilds `patches/` from our package and an upstream tree: in a
throw-away repository holding the upstream files the series touches, one commit per concern,
then `git format-patch`. Nothing in `patches/*.patch` is written by hand; the texts that are not
generated from the package (the config and the upstream-side test) live in `patches/src/`.
"""
from __future__ import annotations

import ast
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..utils.export import atomic_write
from .copies import TARGET_PATH, make_upstream_copy
from .gitrepo import commit_all, format_patches, git, init_repo
from .upstream import base_tree, check_tree, tree_version

REPO_ROOT = Path(__file__).resolve().parents[2]
PATCHES_DIR = REPO_ROOT / "patches"
SOURCES_DIR = PATCHES_DIR / "src"
SERIES_FILE = "series"
BASE_VERSION = "1.3.0"  # the upstream release the committed series is made against
BUILDERS = "audiocraft/models/builders.py"
CONFIG = "config/conditioner/text2music_hf.yaml"
UPSTREAM_TEST = "tests/modules/test_hf_conditioner.py"
IMPORT_LINE = "from ..modules.hf_conditioner import HFEncoderConditioner"
# Single-line imports that every release since 1.0.0 has, in order of preference: our import goes
# after one of them, away from the multi-line import lists that releases extend.
IMPORT_ANCHORS = ("from ..utils.utils import dict_from_config", "from .. import quantization as qt",
                  "from .unet import DiffusionUnet")
_T5_BRANCH = re.compile(r"^(?P<indent>[ \t]*)if model_type == (?P<q>['\"])t5(?P=q):[ \t]*$")
BASE_TRAILER = "Upstream-Base: "


class SeriesError(RuntimeError):
    """The series cannot be made against this upstream tree; says which anchor was missing."""


@dataclass(frozen=True)
class PatchSpec:
    """One patch: its commit message and the function that makes its change in a work tree.

    `change(upstream, work, ours)` reads the pristine upstream tree (and our package folder,
    None for this installation) and writes into the work tree.
    """

    subject: str
    body: str
    change: Callable[[Path, Path, Path | None], None]
    touches: tuple[str, ...]  # files it creates or edits, relative to the tree root


def edit_builders(text: str) -> str:
    """builders.py with one import line and an `hf` branch right after the `t5` branch.

    The `hf` branch is the `t5` branch's body with `T5Conditioner` replaced, so it follows
    whatever that release passes to conditioners (device, output_dim, kwargs).
    """
    if "HFEncoderConditioner" in text:
        raise SeriesError(f"{BUILDERS} already mentions HFEncoderConditioner: the tree is already patched")
    lines = text.splitlines(keepends=True)
    anchor = next((i for name in IMPORT_ANCHORS for i, line in enumerate(lines) if line.rstrip() == name), None)
    if anchor is None:  # no known anchor: after the last import of the module's leading import block
        imports = [n for n in ast.parse(text).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if not imports:
            raise SeriesError(f"{BUILDERS} has no top-level import to put `{IMPORT_LINE}` after")
        anchor = imports[-1].end_lineno - 1
    starts = [i for i, line in enumerate(lines) if _T5_BRANCH.match(line.rstrip("\n"))]
    if len(starts) != 1:
        raise SeriesError(f"{BUILDERS} should have exactly one `if model_type == 't5':` branch, found {len(starts)}")
    start = starts[0]
    match = _T5_BRANCH.match(lines[start].rstrip("\n"))
    indent, quote = match.group("indent"), match.group("q")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > len(indent)):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    body = lines[start + 1:end]
    if not any("T5Conditioner" in line for line in body):
        raise SeriesError(f"the t5 branch of {BUILDERS} does not build T5Conditioner; cannot derive the hf branch")
    branch = [f"{indent}elif model_type == {quote}hf{quote}:\n"]
    branch += [line.replace("T5Conditioner", "HFEncoderConditioner") for line in body]
    out = lines[:end] + branch + lines[end:]
    out.insert(anchor + 1, IMPORT_LINE + "\n")
    return "".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _write(work: Path, rel: str, text: str) -> None:
    (work / rel).parent.mkdir(parents=True, exist_ok=True)
    (work / rel).write_text(text, encoding="utf-8")


def _add_module(upstream: Path, work: Path, ours: Path | None) -> None:
    _write(work, TARGET_PATH, make_upstream_copy(upstream, ours=ours))


def _edit_builders(upstream: Path, work: Path, ours: Path | None) -> None:
    _write(work, BUILDERS, edit_builders((upstream / BUILDERS).read_text(encoding="utf-8")))


def _copy_source(rel: str) -> Callable[[Path, Path, Path | None], None]:
    def change(upstream: Path, work: Path, ours: Path | None) -> None:
        _write(work, rel, (SOURCES_DIR / rel).read_text(encoding="utf-8"))
    return change


SPECS = (
    PatchSpec(
        "modules: add hf_conditioner (any HF text encoder)",
        "What: a new module, audiocraft/modules/hf_conditioner.py, with HFEncoderConditioner: a\n"
        "TextConditioner on any Hugging Face text encoder, named by hub id or local folder, its width\n"
        "read from the model's config; its options are audiocraft-patched's (pooling, hidden layer,\n"
        "...). No upstream file changes.\n\n"
        "Why: T5Conditioner accepts ten whitelisted T5 names and keeps their widths in a hand-written\n"
        "table, so MusicGen cannot be conditioned on another encoder without editing it. With the\n"
        "defaults and a T5, HFEncoderConditioner gives T5Conditioner's outputs on the same weights,\n"
        "and its state_dict has the same keys (a frozen encoder stays out of checkpoints).\n\n"
        "The file is generated from audiocraft_patched.modules.conditioners.hf_encoder by\n"
        "`python -m audiocraft_patched.patching regenerate`: change it there, not here.",
        _add_module, (TARGET_PATH,)),
    PatchSpec(
        "builders: build `model: hf` conditioners",
        "What: get_conditioner_provider builds HFEncoderConditioner for `model: hf`; one import line\n"
        "and one `elif model_type == 'hf':` branch.\n\n"
        "Why: upstream dispatches conditioner types by hand, so a new type needs a branch. To keep the\n"
        "patch rebasable, the import is a line of its own among single-line imports (the multi-line\n"
        "conditioner import list is left alone: releases extend it) and the branch follows the t5\n"
        "branch, not the `else: raise` where releases add types.",
        _edit_builders, (BUILDERS,)),
    PatchSpec(
        "config: add conditioner/text2music_hf",
        "What: config/conditioner/text2music_hf.yaml, text2music with `model: hf` for the description.\n\n"
        "Why: to train or fine-tune MusicGen on another text encoder by choosing\n"
        "`conditioner=text2music_hf conditioners.description.hf.name=...`; with t5-base and the\n"
        "defaults it is text2music.",
        _copy_source(CONFIG), (CONFIG,)),
    PatchSpec(
        "tests: tiny offline tests of HFEncoderConditioner",
        "What: tests/modules/test_hf_conditioner.py on a random T5 and a random BERT built in the test\n"
        "(no download): same outputs as T5Conditioner on the same T5, widths from the config, zero\n"
        "embeddings at padding and for empty texts, frozen encoders out of the state_dict, and\n"
        "builders building `model: hf` from config/conditioner/text2music_hf.yaml.\n\n"
        "Why: so that upstream's test suite covers the new conditioner.",
        _copy_source(UPSTREAM_TEST), (UPSTREAM_TEST,)),
)


def describe_tree(tree: Path) -> str:
    """How a tree is named in the series: `audiocraft==1.3.0`, or a version plus a git commit."""
    version = tree_version(tree) or "unknown"
    if (tree / ".git").exists():
        head = git("rev-parse", "HEAD", cwd=tree, check=False).stdout.strip()
        if head:
            return f"audiocraft {version} at git commit {head}"
    return f"audiocraft=={version}"


def series_header(base: str) -> str:
    return ("# Hugging Face text encoders for upstream audiocraft: a patch series made by audiocraft-patched.\n"
            f"# base: {base}\n"
            "# Apply in this order (git am -3 / git apply); regenerate, do not edit: see patches/README.md.\n")


def read_series(series_dir: Path) -> tuple[list[Path], str | None]:
    """Patch files listed in `series_dir/series`, in order, and the base it names."""
    series = Path(series_dir) / SERIES_FILE
    if not series.is_file():
        raise SeriesError(f"{series} does not exist: give the folder holding the patch series (--series)")
    base, patches = None, []
    for line in series.read_text(encoding="utf-8").splitlines():
        if line.startswith("# base:"):
            base = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            patch = series.parent / line.strip()
            if not patch.is_file():
                raise SeriesError(f"{series} lists {line.strip()}, which is not in {series.parent}")
            patches.append(patch)
    if not patches:
        raise SeriesError(f"{series} lists no patches")
    return patches, base


def is_our_patch(path: Path) -> bool:
    """A patch file this tool wrote: a regular file (not a link) carrying our base trailer."""
    if path.is_symlink() or not path.is_file() or path.suffix != ".patch":
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return any(line.startswith(BASE_TRAILER) for line in f)


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder that is a file, or holds anything, unless `overwrite`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SeriesError(f"{out_dir} exists and is not a folder: give a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise SeriesError(f"{out_dir} is not empty: give a new or empty folder, or --overwrite to replace the "
                          "series in it (only patches this tool wrote are removed)")


def write_file_atomic(path: Path, data: bytes) -> Path:
    """Replace `path` through the package's atomic writer (`utils/export.py`).

    The rename replaces a link at `path` instead of writing through it, and an interruption
    leaves the old file or the new one, never half of either.
    """
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite=True)


def _stale_patch(out_dir: Path, line: str, keep: set[str]) -> Path | None:
    """The file a line of an earlier `series` names, if it is ours to delete.

    Only a bare file name directly inside out_dir (no folder part, no `..`, not absolute) that
    holds a patch we wrote: a series file is input, and must not steer a deletion elsewhere.
    """
    name = line.strip()
    if not name or name.startswith("#") or name in keep or name in (".", "..") or "/" in name or "\\" in name:
        return None
    path = Path(out_dir) / name
    return path if is_our_patch(path) else None


def write_series(out_dir: Path, patches: list[Path], base: str) -> Path:
    """Write `series` for the given patch files (already in out_dir).

    Patches that an earlier `series` in out_dir listed and this one does not are removed when
    they are ours (see `_stale_patch`); every other file is left alone.
    """
    names = [p.name for p in patches]
    series = Path(out_dir) / SERIES_FILE
    if series.is_file() and not series.is_symlink():
        for line in series.read_text(encoding="utf-8", errors="replace").splitlines():
            stale = _stale_patch(Path(out_dir), line, set(names))
            if stale is not None:
                stale.unlink()
    text = series_header(base) + "".join(f"{name}\n" for name in names)
    write_file_atomic(series, text.encode("utf-8"))
    return series


def regenerate(upstream: Path | None = None, out_dir: Path = PATCHES_DIR, base: str | None = None,
               ours: Path | None = None) -> list[Path]:
    """Rebuild the series from our package against an upstream tree; return the patch files.

    Args:
        upstream: the upstream source tree; None: release BASE_VERSION (the installed package if it
            is that release and unmodified, else its sdist, downloaded with pip).
        out_dir: where the series goes (patches/ by default).
        base: how the series names its base (default: from the tree, e.g. `audiocraft==1.3.0`).
        ours: our package folder to copy from (default: this installation's `audiocraft_patched/`).
    """
    with tempfile.TemporaryDirectory(prefix="acp-regen-") as tmp:
        tmp = Path(tmp)
        tree = check_tree(upstream) if upstream is not None else base_tree(BASE_VERSION, tmp / "upstream")
        base = base or describe_tree(tree)
        work = tmp / "work"
        work.mkdir()
        for spec in SPECS:
            for rel in spec.touches:
                if (tree / rel).is_file():
                    _write(work, rel, (tree / rel).read_text(encoding="utf-8"))
        first = init_repo(work)
        for spec in SPECS:
            spec.change(tree, work, ours)
            commit_all(work, f"{spec.subject}\n\n{spec.body}\n\n{BASE_TRAILER}{base}\n")
        staging = tmp / "patches"
        made = format_patches(work, first, staging)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for patch in made:
            write_file_atomic(out_dir / patch.name, patch.read_bytes())
            written.append(out_dir / patch.name)
        write_series(out_dir, written, base)
        return written
