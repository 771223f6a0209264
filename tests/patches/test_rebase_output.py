"""`rebase -o DIR` and `write_series` never delete or overwrite what they did not write (issue 16, item 1)."""

import pytest

from audiocraft_patched.patching.__main__ import main as patching_main
from audiocraft_patched.patching.rebase import RebaseError, rebase
from audiocraft_patched.patching.series import BASE_TRAILER, read_series, write_series
from audiocraft_patched.patching.upstream import installed_tree

OUR_PATCH = f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n\n{BASE_TRAILER}x\n---\n"


def test_write_series_removes_only_our_stale_patches_inside_the_folder(tmp_path):
    out, outside = tmp_path / "q", tmp_path / "outside.patch"
    out.mkdir()
    outside.write_text(OUR_PATCH)                       # ours, but outside the folder
    (out / "mine.patch").write_text("the user's own notes\n")  # inside, but not ours
    (out / "0009-old.patch").write_text(OUR_PATCH)      # inside and ours: the only one to go
    (out / "link.patch").symlink_to(outside)            # a link is never ours
    new = out / "0001-new.patch"
    new.write_text(OUR_PATCH)
    (out / "series").write_text(f"mine.patch\n../outside.patch\n{outside}\n0009-old.patch\nlink.patch\n")
    write_series(out, [new], "audiocraft==1.3.0")
    assert outside.read_text() == OUR_PATCH and (out / "mine.patch").is_file() and (out / "link.patch").is_symlink()
    assert not (out / "0009-old.patch").exists()
    assert [p.name for p in read_series(out)[0]] == ["0001-new.patch"]


def test_write_series_replaces_a_linked_series_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    out = tmp_path / "q"
    out.mkdir()
    (out / "series").symlink_to(target)
    (out / "0001-new.patch").write_text(OUR_PATCH)
    write_series(out, [out / "0001-new.patch"], "b")
    assert target.read_text() == "keep me\n" and not (out / "series").is_symlink()


def test_rebase_refuses_a_non_empty_output_folder_before_any_work(tmp_path, capsys):
    out = tmp_path / "q"
    out.mkdir()
    (out / "mine.patch").write_text("x\n")
    (out / "series").write_text("mine.patch\n../outside.patch\n")
    (tmp_path / "outside.patch").write_text("y\n")
    with pytest.raises(RebaseError, match="not empty.*--overwrite"):
        rebase("no-such-version", out)  # refused before looking for the tree
    assert patching_main(["rebase", "--onto", str(tmp_path), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "mine.patch").read_text() == "x\n" and (tmp_path / "outside.patch").read_text() == "y\n"
    (tmp_path / "file").write_text("")
    with pytest.raises(RebaseError, match="not a folder"):
        rebase("no-such-version", tmp_path / "file", overwrite=True)


@pytest.mark.upstream
def test_rebase_overwrite_keeps_the_users_files(tmp_path_factory, tmp_path):
    tree = installed_tree(tmp_path_factory.mktemp("upstream-1.3.0"), "1.3.0")
    out = tmp_path / "q"
    out.mkdir()
    (out / "mine.patch").write_text("x\n")
    (out / "series").write_text("mine.patch\n../outside.patch\n")
    (tmp_path / "outside.patch").write_text(OUR_PATCH)
    report = rebase(tree, out, overwrite=True)
    assert report.exit_code == 0 and len(report.written) == 4
    assert (out / "mine.patch").read_text() == "x\n" and (tmp_path / "outside.patch").read_text() == OUR_PATCH
    assert sorted(p.name for p in out.iterdir()) == sorted([*(p.name for p in report.written), "mine.patch", "series"])
