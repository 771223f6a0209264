"""Git plumbing for the patch series: a throw-away repository, deterministic commits, patch parsing.

Everything runs with the user's and the system's git configuration switched off and a fixed
identity and date, so that regenerating the series twice gives the same bytes (`git
format-patch --zero-commit --no-signature` leaves no hash or version in the files) and so that no
user setting (signing, hooks, autocrlf, a pager) changes what git does here.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

IDENTITY = {"name": "audiocraft-patched", "email": "audiocraft-patched@users.noreply.github.com"}
# A fixed date (audiocraft 1.3.0's release month) so that the series does not change on regeneration.
DATE = "2024-06-03T00:00:00+00:00"


class GitError(RuntimeError):
    """A git command failed where failure means the tool cannot go on (not a patch conflict)."""


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": IDENTITY["name"], "GIT_AUTHOR_EMAIL": IDENTITY["email"], "GIT_AUTHOR_DATE": DATE,
        "GIT_COMMITTER_NAME": IDENTITY["name"], "GIT_COMMITTER_EMAIL": IDENTITY["email"],
        "GIT_COMMITTER_DATE": DATE, "LC_ALL": "C", "GIT_PAGER": "cat",
    })
    env.update(extra or {})
    return env


def git(*args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run `git args` in `cwd` (isolated configuration); raise GitError with its output if `check`."""
    if shutil.which("git") is None:
        raise GitError("git is not installed (or not on PATH); the patch tools need git >= 2.25")
    cmd = ["git", "-c", "core.autocrlf=false", "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null",
           "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env or git_env(), input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GitError(f"`git {' '.join(args)}` failed in {cwd} (exit {proc.returncode}):\n"
                       f"{proc.stdout}{proc.stderr}".rstrip())
    return proc


def init_repo(folder: Path, message: str = "upstream") -> str:
    """Make `folder` a repository whose first commit holds all its files; return that commit."""
    git("init", "-q", cwd=folder)
    git("add", "-A", "-f", ".", cwd=folder)
    git("commit", "-q", "--allow-empty", "-m", message, cwd=folder)
    return git("rev-parse", "HEAD", cwd=folder).stdout.strip()


def commit_all(folder: Path, message: str) -> None:
    git("add", "-A", "-f", ".", cwd=folder)
    git("commit", "-q", "-m", message, cwd=folder)


def format_patches(folder: Path, since: str, out_dir: Path) -> list[Path]:
    """`git format-patch` of the commits after `since` into out_dir; returns the files, in order."""
    proc = git("format-patch", "--zero-commit", "--no-signature", "--no-binary", "-o", str(out_dir), since,
               cwd=folder)
    return [Path(line) if Path(line).is_absolute() else folder / line for line in proc.stdout.split()]


@dataclass
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    header: str  # the whole `@@ ... @@ context` line


@dataclass
class FileDiff:
    path: str
    old_blob: str  # abbreviated blob id of the pre-image (all zeros for a new file)
    new_file: bool = False
    hunks: list[Hunk] = field(default_factory=list)


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_patch(text: str) -> list[FileDiff]:
    """Files and hunks of one `git format-patch` file (git's extended diff format)."""
    files: list[FileDiff] = []
    for line in text.splitlines():
        if line.startswith("diff --git "):
            path = line.split(" b/", 1)[1] if " b/" in line else line.split()[-1]
            files.append(FileDiff(path=path, old_blob=""))
        elif not files:
            continue
        elif line.startswith("new file mode"):
            files[-1].new_file = True
        elif line.startswith("index ") and ".." in line:
            files[-1].old_blob = line.split()[1].split("..")[0]
        elif (match := _HUNK.match(line)) is not None:
            a, b, c, d = match.groups()
            files[-1].hunks.append(Hunk(int(a), int(b or 1), int(c), int(d or 1), line))
    return files


def split_hunks(text: str) -> list[tuple[str, int, str]]:
    """(path, hunk number from 1, a patch of that hunk alone) for each hunk of a modified file."""
    out: list[tuple[str, int, str]] = []
    header: list[str] = []
    hunk: list[str] = []
    path, number = "", 0

    def flush():
        if hunk:
            out.append((path, number, "".join(header + hunk)))

    for line in text.splitlines(keepends=True):
        if line.startswith("diff --git "):
            flush()
            header, hunk, number = [line], [], 0
            path = line.rstrip("\n").split(" b/", 1)[-1]
        elif line.startswith("@@") and header:
            flush()
            hunk, number = [line], number + 1
        elif hunk:
            hunk.append(line)
        elif header:
            header.append(line)
    flush()
    return out


def blob_id(data: bytes) -> str:
    """Git's id of a blob with this content (what `git hash-object` prints)."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
