"""`audiocraft-patched rebase`: carry the patch series onto another upstream tree.

    audiocraft-patched rebase --onto 1.2.0 -o new-patches      # a release, from PyPI (pip download)
    audiocraft-patched rebase --onto ~/src/audiocraft           # a local tree or git checkout
    audiocraft-patched rebase --onto ~/src/audiocraft --in-place

The upstream files the series touches are copied into a throw-away git repository, and each
patch is applied there in order: `git apply --check` first (exact context, perhaps at an offset),
else `git am -3` (a 3-way merge on the series' base files, fetched when the target lacks them).
Each patch is reported as applied, applied with offset, applied with a 3-way merge, or conflict
(with the file and hunk). When all apply, the refreshed series (new context and line numbers,
new base) is written to OUT_DIR, which must be new or empty unless --overwrite is given (even then,
only patch files this tool wrote are removed). The user's tree is only changed with --in-place.
Exit status: 0 all applied, 1 conflicts, 2 could not run.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .gitrepo import FileDiff, GitError, format_patches, git, git_env, init_repo, parse_patch, split_hunks
from .series import (BASE_TRAILER, PATCHES_DIR, SeriesError, check_out_dir, describe_tree, read_series,
                     write_file_atomic, write_series)
from .upstream import UpstreamError, base_tree, check_tree, copy_tree, download_sdist, tree_version

APPLIED, OFFSET, MERGED, CONFLICT = "applied", "applied with offset", "applied with 3-way merge", "conflict"
LATEST = "latest"
_CHECKING = re.compile(r"^Checking patch (?P<file>.+)\.\.\.$")
_OFFSET = re.compile(r"^Hunk #(?P<n>\d+) succeeded at (?P<at>\d+)(?: \(offset (?P<off>-?\d+) lines?\))?\.$")
_FAILED = re.compile(r"^error: patch failed: (?P<file>.+):(?P<line>\d+)$")
_FILE_ERROR = re.compile(r"^error: (?P<file>[^:]+): (?P<why>already exists in (?:the )?working directory|"
                         r"does not exist in index|No such file or directory|does not match index)$")


class RebaseError(RuntimeError):
    """The rebase could not run (no git, no upstream tree, no series): exit status 2."""


@dataclass
class PatchResult:
    name: str
    status: str  # APPLIED, OFFSET, MERGED or CONFLICT
    details: list[str] = field(default_factory=list)  # per file and hunk: offsets, conflicts

    def format(self) -> str:
        lines = [f"  {self.name}: {self.status}"]
        return "\n".join(lines + [f"      {d}" for d in self.details])


@dataclass
class RebaseReport:
    onto: str  # the upstream the series was applied to, as the refreshed series names it
    results: list[PatchResult]
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def conflicts(self) -> list[PatchResult]:
        return [r for r in self.results if r.status == CONFLICT]

    @property
    def exit_code(self) -> int:
        return 1 if self.conflicts else 0

    def format(self) -> str:
        lines = [f"rebasing {len(self.results)} patches onto {self.onto}"] + [r.format() for r in self.results]
        lines += [f"note: {n}" for n in self.notes]
        if self.conflicts:
            lines.append(f"{len(self.conflicts)} patch(es) conflict: nothing written. Resolve them in an upstream "
                         "checkout (git am -3, fix, git am --continue) or adapt audiocraft_patched.patching and "
                         "regenerate.")
        elif self.written:
            lines.append(f"wrote the refreshed series ({len(self.written)} patches + series) to "
                         f"{self.written[0].parent}")
        return "\n".join(lines)


def _hunk_label(diff: FileDiff | None, old_start: int) -> str:
    if diff is None:
        return f"hunk at line {old_start}"
    for number, hunk in enumerate(diff.hunks, 1):
        if hunk.old_start == old_start:
            return f"hunk #{number} ({hunk.header.split(' @@')[0]} @@)"
    return f"hunk at line {old_start}"


def read_check(output: str, diffs: list[FileDiff]) -> tuple[list[str], list[str]]:
    """`git apply --check -v` output -> (offset details, failure details), per file and hunk."""
    by_path = {d.path: d for d in diffs}
    offsets, failures, current = [], [], ""
    for line in output.splitlines():
        if (m := _CHECKING.match(line)) is not None:
            current = m.group("file")
        elif (m := _OFFSET.match(line)) is not None and m.group("off"):
            hunk = by_path[current].hunks[int(m.group("n")) - 1] if current in by_path else None
            header = f" ({hunk.header.split(' @@')[0]} @@)" if hunk else ""
            offsets.append(f"{current}: hunk #{m.group('n')}{header} at line {m.group('at')}, "
                           f"offset {int(m.group('off')):+d} lines")
        elif (m := _FAILED.match(line)) is not None:
            path = m.group("file")
            failures.append(f"{path}: {_hunk_label(by_path.get(path), int(m.group('line')))}: context not found")
        elif (m := _FILE_ERROR.match(line)) is not None:
            failures.append(f"{m.group('file')}: {m.group('why')}")
    return offsets, failures


def failing_hunks(work: Path, text: str, diffs: list[FileDiff]) -> list[str]:
    """Every hunk whose context is not in the work tree (`git apply` stops at a file's first one)."""
    by_path = {d.path: d for d in diffs}
    out = []
    for path, number, single in split_hunks(text):
        if git("apply", "--check", "-", cwd=work, check=False, input=single).returncode != 0:
            hunk = by_path[path].hunks[number - 1] if path in by_path else None
            header = f" ({hunk.header.split(' @@')[0]} @@)" if hunk else ""
            out.append(f"{path}: hunk #{number}{header}: context not found")
    return out


def apply_one(work: Path, patch: Path) -> PatchResult:
    """Apply one patch in the work repository (committing it) or report why it does not apply."""
    text = patch.read_text(encoding="utf-8")
    diffs = parse_patch(text)
    check = git("apply", "--check", "-v", str(patch), cwd=work, check=False)
    offsets, failures = read_check(check.stdout + check.stderr, diffs)
    if check.returncode != 0 and any(f.endswith("context not found") for f in failures):
        failures = [f for f in failures if not f.endswith("context not found")] + failing_hunks(work, text, diffs)
    if check.returncode == 0:
        git("am", "-q", str(patch), cwd=work)
        return PatchResult(patch.name, OFFSET if offsets else APPLIED, offsets)
    merge = git("am", "-q", "-3", str(patch), cwd=work, check=False)
    if merge.returncode == 0:
        return PatchResult(patch.name, MERGED, [f"{f} (resolved by the 3-way merge)" for f in failures])
    unmerged = git("diff", "--name-only", "--diff-filter=U", cwd=work, check=False).stdout.split()
    details = sorted(failures, key=lambda f: f.split(":")[0] not in unmerged)  # merge-conflicted files first
    details += [f"{path}: 3-way merge left conflict markers" for path in unmerged]
    if "could not build fake ancestor" in merge.stdout + merge.stderr:
        details.append("no 3-way merge: the series' base files were not available")
    git("am", "--abort", cwd=work, check=False)
    return PatchResult(patch.name, CONFLICT, details or [(merge.stdout + merge.stderr).strip()[-500:]])


def _provide_base_blobs(work: Path, diffs: list[FileDiff], base: str | None, tmp: Path) -> str | None:
    """Store the series' pre-image files in the work repo, so `git am -3` can merge; None or a note."""
    missing = {d.path: d.old_blob for d in diffs if not d.new_file and d.old_blob
               and git("cat-file", "-e", f"{d.old_blob}^{{blob}}", cwd=work, check=False).returncode != 0}
    if not missing:
        return None
    version = base.split("==", 1)[1] if base and base.startswith("audiocraft==") else None
    if version is None:
        return f"3-way merge unavailable: the series' base ({base}) is not a release to fetch its files from"
    try:
        tree = base_tree(version, tmp / "base")
    except UpstreamError as exc:
        return f"3-way merge unavailable: could not get the base audiocraft=={version}: {exc}"
    for path, blob in missing.items():
        if (tree / path).is_file():
            stored = git("hash-object", "-w", str(tree / path), cwd=work).stdout.strip()
            if not stored.startswith(blob):
                return f"3-way merge unavailable for {path}: the base release's file is not the patch's pre-image"
    return None


def rebase(onto: str | Path = LATEST, out_dir: Path | None = None, series_dir: Path = PATCHES_DIR,
           in_place: bool = False, overwrite: bool = False) -> RebaseReport:
    """Apply the series in `series_dir` to an upstream tree; see the module docstring.

    Args:
        onto: a release version ('1.2.0'), 'latest', or the path of a local tree / git checkout.
        out_dir: where to write the refreshed series when every patch applies (None: nowhere).
        series_dir: the folder with `series` and the patches.
        in_place: also apply the refreshed series to the tree at `onto` (a path).
        overwrite: allow a non-empty out_dir; the series in it is replaced, and only patch files
            this tool wrote that the old `series` listed are removed.
    Raises:
        RebaseError: when the rebase cannot run at all.
    """
    try:
        if out_dir is not None:  # before any work: a refusal costs nothing
            check_out_dir(Path(out_dir), overwrite)
        patches, base = read_series(series_dir)
    except SeriesError as exc:
        raise RebaseError(str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="acp-rebase-") as tmp:
        tmp = Path(tmp)
        try:
            if Path(str(onto)).expanduser().exists():
                tree = check_tree(Path(str(onto)))
                label = describe_tree(tree)
            elif in_place:
                raise RebaseError(f"--in-place needs the path of a tree to change; {onto!r} is not a folder")
            else:
                tree = download_sdist(None if onto == LATEST else str(onto), tmp / "download")
                label = f"audiocraft=={tree_version(tree)}"
        except UpstreamError as exc:
            raise RebaseError(str(exc)) from exc
        diffs = {p: parse_patch(p.read_text(encoding="utf-8")) for p in patches}
        work = tmp / "work"
        work.mkdir()
        copy_tree(tree, work, sorted({d.path for ds in diffs.values() for d in ds}))
        try:
            first = init_repo(work)
            report = RebaseReport(label, [])
            note = _provide_base_blobs(work, [d for ds in diffs.values() for d in ds], base, tmp)
            if note:
                report.notes.append(note)
            report.results = [apply_one(work, patch) for patch in patches]
            if report.conflicts:
                return report
            refreshed = _refresh(work, first, tmp / "refreshed", label)
            if out_dir is not None:
                report.written = _write_out(refreshed, Path(out_dir), label)
            if in_place:
                _apply_in_place(refreshed, tree)
                report.notes.append(f"applied the series to {tree} (working files only, nothing committed)")
        except GitError as exc:
            raise RebaseError(str(exc)) from exc
        return report


def _refresh(work: Path, first: str, staging: Path, label: str) -> list[Path]:
    """The applied commits as patches again, their base trailer naming the new upstream."""
    patches = format_patches(work, first, staging)
    for patch in patches:
        text = patch.read_text(encoding="utf-8")
        patch.write_text(re.sub(rf"^{re.escape(BASE_TRAILER)}.*$", f"{BASE_TRAILER}{label}", text, count=1,
                                flags=re.M), encoding="utf-8")
    return patches


def _write_out(refreshed: list[Path], out_dir: Path, label: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for patch in refreshed:
        write_file_atomic(out_dir / patch.name, patch.read_bytes())
        written.append(out_dir / patch.name)
    write_series(out_dir, written, label)
    return written


def _apply_in_place(patches: list[Path], tree: Path) -> None:
    """`git apply` the refreshed series to the user's tree: all patches or, if any fails, none."""
    # Keep git from treating a repository above the tree as the one to patch.
    env = git_env({"GIT_CEILING_DIRECTORIES": str(tree.parent)})
    args = [str(p) for p in patches]
    check = git("apply", "--check", *args, cwd=tree, env=env, check=False)
    if check.returncode != 0:
        raise RebaseError(f"the series applies in a clean copy but not to {tree} itself (local changes?); nothing "
                          f"was changed:\n{check.stderr.strip()}")
    git("apply", *args, cwd=tree, env=env)


def cmd_rebase(args: argparse.Namespace) -> int:
    try:
        report = rebase(args.onto, args.out_dir, args.series, in_place=args.in_place, overwrite=args.overwrite)
    except RebaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return report.exit_code


def add_rebase_parser(subparsers) -> argparse.ArgumentParser:
    """Register `rebase` on an argparse subparsers object (`audiocraft-patched rebase ...`)."""
    parser = subparsers.add_parser(
        "rebase", help="carry the upstream patch series (patches/) onto another audiocraft release or tree",
        description=__doc__.split("\n\n")[1].strip() + "\n\n" + "\n\n".join(__doc__.split("\n\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onto", default=LATEST, metavar="VERSION|PATH",
                        help="a release on PyPI (e.g. 1.2.0; default: the latest), or a local source tree or git "
                             "checkout")
    parser.add_argument("-o", "--out-dir", type=Path, default=None,
                        help="write the refreshed series here when every patch applies (a new or empty folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow a non-empty --out-dir: replace the series in it, removing only patch files "
                             "this tool wrote")
    parser.add_argument("--series", type=Path, default=PATCHES_DIR,
                        help=f"the series to rebase (default {PATCHES_DIR})")
    parser.add_argument("--in-place", action="store_true",
                        help="also apply the series to the tree at --onto PATH (it is never changed otherwise)")
    parser.set_defaults(func=cmd_rebase)
    return parser
