"""Upstream audiocraft source trees: a release's sdist from PyPI, a local folder, or the installed package.

A "tree" is a folder holding the `audiocraft/` package (and, for an sdist or a git checkout,
`config/` and `tests/` beside it). None of these functions writes into a tree it was given.
"""
from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

PACKAGE = "audiocraft"
_VERSION = re.compile(r"^\d+(\.\d+)*([a-z]+\d*)?$")
_SKIP = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "*.egg-info")


class UpstreamError(RuntimeError):
    """An upstream tree could not be found, downloaded or read; says what to do instead."""


def looks_like_version(text: str) -> bool:
    return bool(_VERSION.match(text))


def check_tree(path: Path) -> Path:
    """`path` if it holds an upstream `audiocraft/` package, else an error that says what is there."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise UpstreamError(f"{path} is not a folder; give an upstream source tree, a git checkout of "
                            "facebookresearch/audiocraft, or a release version such as 1.3.0")
    if not (path / PACKAGE / "__init__.py").is_file():
        raise UpstreamError(f"{path} has no {PACKAGE}/__init__.py: not an upstream audiocraft tree (give the folder "
                            f"that contains {PACKAGE}/, setup.py and config/)")
    return path


def tree_version(path: Path) -> str | None:
    """`__version__` of the tree's audiocraft package, read without importing it."""
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]",
                      (Path(path) / PACKAGE / "__init__.py").read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else None


def download_sdist(version: str | None, dest: Path) -> Path:
    """Download audiocraft==version's source distribution (None: the latest) with pip, unpack it, return the tree."""
    if version is not None and not looks_like_version(version):
        raise UpstreamError(f"{version!r} is neither an existing folder nor a release version such as 1.3.0")
    dest.mkdir(parents=True, exist_ok=True)
    requirement = PACKAGE if version is None else f"{PACKAGE}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(dest.glob(f"{PACKAGE}-*.tar.gz"))
    if proc.returncode != 0 or len(archives) != 1:
        raise UpstreamError(f"could not download the sdist of {requirement} with pip (exit {proc.returncode}):\n"
                            f"{(proc.stderr or proc.stdout).strip()[-2000:]}\nCheck that the version exists on PyPI "
                            "and that PyPI is reachable, or pass a local tree with --onto PATH.")
    return unpack(archives[0], dest)


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack an sdist safely (no absolute paths, no `..`, no links out) and return its top folder."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            target = (dest / member.name).resolve()
            if not str(target).startswith(str(dest.resolve())) or member.islnk() or member.issym():
                raise UpstreamError(f"{archive} has an unsafe entry {member.name!r}; refusing to unpack it")
        kept = [m for m in members if m.isfile() or m.isdir()]
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and 3.12+ warns without a filter)
            tar.extractall(dest, members=kept, filter="data")
        else:
            tar.extractall(dest, members=kept)
    tops = {Path(m.name).parts[0] for m in members if m.name}
    if len(tops) != 1:
        raise UpstreamError(f"{archive} does not unpack into one folder (found {sorted(tops)})")
    return check_tree(dest / tops.pop())


def installed_tree(dest: Path, version: str | None = None) -> Path:
    """Copy the installed `audiocraft` package into dest/audiocraft after checking it is unmodified.

    pip records a sha256 for each installed file (the distribution's RECORD); every `.py` file of
    the package must match it, so a tree made this way is the release as published.

    Args:
        dest: empty or missing folder to hold the tree.
        version: the release the installed package must be (None: any).
    """
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise UpstreamError(f"{PACKAGE} is not installed in this environment "
                            f"(pip install --no-deps {PACKAGE}=={version or 'VERSION'})") from None
    if version is not None and dist.version != version:
        raise UpstreamError(f"the installed {PACKAGE} is {dist.version}, not {version}")
    checked = 0
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if parts[0] != PACKAGE or "__pycache__" in parts or file.hash is None:
            continue
        data = Path(str(file.locate())).read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.new(file.hash.mode, data).digest()).rstrip(b"=").decode()
        if digest != file.hash.value:
            raise UpstreamError(f"the installed {PACKAGE} has a modified file {file}; reinstall it "
                                f"(pip install --force-reinstall --no-deps {PACKAGE}=={dist.version})")
        checked += 1
    if not checked:
        raise UpstreamError(f"the installed {PACKAGE} lists no files to check (no RECORD); reinstall it with pip")
    source = Path(str(dist.locate_file(PACKAGE)))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest / PACKAGE, ignore=_SKIP)
    return check_tree(dest)


def base_tree(version: str, dest: Path) -> Path:
    """The tree of release `version`: the installed package when it is that release, else its sdist."""
    try:
        return installed_tree(dest / "installed", version)
    except UpstreamError:
        return download_sdist(version, dest / "sdist")


def copy_tree(source: Path, dest: Path, paths: list[str] | None = None) -> None:
    """Copy a tree, or only `paths` of it (those that exist), leaving .git and caches behind."""
    source, dest = Path(source), Path(dest)
    if paths is None:
        shutil.copytree(source, dest, ignore=_SKIP, dirs_exist_ok=True)
        return
    for rel in paths:
        if (source / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)
