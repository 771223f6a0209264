"""`python -m audiocraft_patched.patching {regenerate,check,rebase}`; see the package docstring."""
from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from .copies import CopyError
from .gitrepo import GitError
from .rebase import add_rebase_parser
from .series import PATCHES_DIR, SERIES_FILE, SeriesError, read_series, regenerate
from .upstream import UpstreamError, download_sdist, looks_like_version


def _upstream(arg: str | None, tmp: Path) -> Path | None:
    """--upstream: a folder as is, a version downloaded, None for the series' base release."""
    if arg is None or Path(arg).expanduser().exists():
        return None if arg is None else Path(arg).expanduser()
    if looks_like_version(arg):
        return download_sdist(arg, tmp)
    raise UpstreamError(f"--upstream {arg!r} is neither a folder nor a release version")


def stale_files(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Series files that differ between two folders (missing on either side counts)."""
    expected = [p.name for p in read_series(expected_dir)[0]] + [SERIES_FILE]
    actual = [p.name for p in read_series(actual_dir)[0]] + [SERIES_FILE]
    names = sorted(set(expected) | set(actual))
    return [n for n in names if n not in expected or n not in actual
            or not filecmp.cmp(expected_dir / n, actual_dir / n, shallow=False)]


def cmd_regenerate(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="acp-upstream-") as tmp:
        written = regenerate(_upstream(args.upstream, Path(tmp)), args.out_dir)
    print("\n".join(f"wrote {p}" for p in written) + f"\nwrote {args.out_dir / SERIES_FILE}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="acp-check-") as tmp:
        fresh = Path(tmp) / "fresh"
        regenerate(_upstream(args.upstream, Path(tmp)), fresh)
        stale = stale_files(fresh, args.series)
    if stale:
        print(f"{args.series} is out of date with audiocraft_patched ({', '.join(stale)}); run "
              "`python -m audiocraft_patched.patching regenerate`", file=sys.stderr)
        return 1
    print(f"{args.series} matches audiocraft_patched")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audiocraft_patched.patching", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    regen = sub.add_parser("regenerate", help="rewrite the patch series from audiocraft_patched")
    check = sub.add_parser("check", help="exit 1 when the series and audiocraft_patched have drifted apart")
    for p in (regen, check):
        p.add_argument("--upstream", default=None, metavar="PATH|VERSION",
                       help="upstream tree to make the series against (default: the base release, from the "
                            "installed package when it is that release, else downloaded)")
    regen.add_argument("-o", "--out-dir", type=Path, default=PATCHES_DIR)
    regen.set_defaults(func=cmd_regenerate)
    check.add_argument("--series", type=Path, default=PATCHES_DIR)
    check.set_defaults(func=cmd_check)
    add_rebase_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CopyError, GitError, SeriesError, UpstreamError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
