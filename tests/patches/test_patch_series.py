"""The patch series in patches/: up to date with the package, applies to 1.3.0, and `rebase` reports truthfully.

The upstream 1.3.0 tree is the installed `audiocraft` package copied after checking every file
against pip's RECORD hashes (so it is the release as published, byte for byte the sdist's
`audiocraft/`); the series only adds files under `config/` and `tests/`, so nothing else of the
sdist matters to it.
"""
import argparse
import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audiocraft_patched.patching import PATCHES_DIR, SPECS, CopyError, edit_builders, make_upstream_copy, rebase
from audiocraft_patched.patching.__main__ import main as patching_main, stale_files
from audiocraft_patched.patching.copies import COPY_MARK, SOURCE_MODULE, TARGET_PATH
from audiocraft_patched.patching.rebase import (APPLIED, CONFLICT, MERGED, OFFSET, RebaseError, add_rebase_parser,
                                                cmd_rebase)
from audiocraft_patched.patching.series import BUILDERS, SeriesError, read_series, regenerate
from audiocraft_patched.patching.upstream import installed_tree, unpack

pytestmark = pytest.mark.upstream
OURS = Path(__file__).resolve().parents[2] / "audiocraft_patched"


@pytest.fixture(scope="module")
def upstream_tree(tmp_path_factory) -> Path:
    return installed_tree(tmp_path_factory.mktemp("upstream-1.3.0"), "1.3.0")


def fresh_copy(tree: Path, dest: Path) -> Path:
    shutil.copytree(tree, dest)
    return dest


def digest(tree: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(tree)).encode() + path.read_bytes())
    return h.hexdigest()


def check_style(text: str) -> None:
    """What upstream's flake8 would reject in a generated file, for the checks that matter here."""
    tree = ast.parse(text)
    lines = text.splitlines()
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert all(len(line) <= 120 and line == line.rstrip() for line in lines)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
            for alias in node.names:
                assert (alias.asname or alias.name).split(".")[0] in used, f"unused import {alias.name}"
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            before = lines[first - 3:first]
            assert before[1:] == ["", ""] and before[0] != "", f"two blank lines before {node.name}"


def test_series_is_up_to_date_with_the_package(upstream_tree, tmp_path):
    regenerate(upstream_tree, tmp_path / "fresh")
    assert stale_files(tmp_path / "fresh", PATCHES_DIR) == [], \
        "patches/ has drifted from audiocraft_patched: run `python -m audiocraft_patched.patching regenerate`"
    assert patching_main(["check", "--upstream", str(upstream_tree)]) == 0


def test_drift_is_detected(upstream_tree, tmp_path):
    ours = fresh_copy(OURS, tmp_path / "ours")
    source = ours / "modules" / "conditioners" / "hf_encoder.py"
    source.write_text(source.read_text() + "\n\nEXTRA = 1\n")
    regenerate(upstream_tree, tmp_path / "fresh", ours=ours)
    assert stale_files(tmp_path / "fresh", PATCHES_DIR) == [read_series(PATCHES_DIR)[0][0].name]


def test_generated_module_marks_its_source_and_is_clean(upstream_tree):
    text = make_upstream_copy(upstream_tree)
    assert text.startswith(f"{COPY_MARK}{SOURCE_MODULE}")
    check_style(text)
    assert "register_encoder" not in text and "class T5Conditioner" not in text
    imports = [n for n in ast.parse(text).body if isinstance(n, ast.ImportFrom) and n.level]
    assert [(n.level, n.module) for n in imports] == [(1, "conditioners")]
    assert {a.name for a in imports[0].names} >= {"TextConditioner"}


def test_copier_follows_new_family_files(upstream_tree, tmp_path):
    """A family module that hf_encoder starts using is copied in, ahead of it, with its imports fixed."""
    ours = fresh_copy(OURS, tmp_path / "ours")
    package = ours / "modules" / "conditioners"
    (package / "acp_test_family.py").write_text(
        '"""Encoder families."""\nfrom __future__ import annotations\n\nimport logging\n\nimport torch\n\n'
        "from .base import ConditionType, TextConditioner\n\nlogger = logging.getLogger(__name__)\n"
        'ACP_TEST_TABLE = {"t5": "encoder"}\n\n\ndef acp_test_zeros(cond: ConditionType) -> torch.Tensor:\n'
        "    return torch.zeros_like(cond[0])\n\n\ndef acp_test_lazy() -> type:\n"
        "    return TextConditioner\n")
    source = package / "hf_encoder.py"
    lines = source.read_text().splitlines(keepends=True)
    last_import = [n for n in ast.parse("".join(lines)).body if isinstance(n, (ast.Import, ast.ImportFrom))][-1]
    lines.insert(last_import.end_lineno, "import logging\n\nfrom .acp_test_family import ACP_TEST_TABLE\n")
    lines.append("\n\nlogger = logging.getLogger(__name__)\n\n\ndef acp_test_uses(name: str) -> str:\n"
                 "    from .acp_test_family import acp_test_lazy\n\n"
                 "    return ACP_TEST_TABLE[name] + acp_test_lazy().__name__\n\n\n"
                 "def acp_test_t5() -> type:\n    return T5Conditioner\n")
    source.write_text("".join(lines))
    copy = make_upstream_copy(upstream_tree, ours=ours)
    check_style(copy)
    mark = f"{COPY_MARK}audiocraft_patched.modules.conditioners.acp_test_family"
    assert copy.index(mark) < copy.index("ACP_TEST_TABLE = {")
    assert copy.index("def acp_test_lazy") < copy.index("class HFEncoderConditioner")
    assert copy.count("logger = logging.getLogger(__name__)") == 1  # the same statement, once
    assert "from .acp_test_family" not in copy and "from .base" not in copy
    namespace: dict = {}
    exec(compile(copy.replace("from .conditioners import", "from audiocraft_patched.modules.conditioners import"),
                 TARGET_PATH, "exec"), namespace)
    assert namespace["acp_test_uses"]("t5") == "encoderTextConditioner"
    # Our T5Conditioner is left out for upstream's own, which the copy then imports.
    assert "class T5Conditioner" not in copy and "T5Conditioner" in next(
        line for line in copy.splitlines() if line.startswith("from .conditioners import"))
    family = package / "acp_test_family.py"
    family.write_text(family.read_text() + "\n\ndef acp_test_uses():\n    pass\n")
    with pytest.raises(CopyError, match="defined by both"):
        make_upstream_copy(upstream_tree, ours=ours)


def test_builders_edit_anchors_on_stable_lines(upstream_tree):
    text = (upstream_tree / BUILDERS).read_text()
    edited = edit_builders(text)
    added = [line for line in edited.splitlines() if line not in text.splitlines()]
    assert added == ["from ..modules.hf_conditioner import HFEncoderConditioner", "        elif model_type == 'hf':",
                     "            conditioners[str(cond)] = HFEncoderConditioner(output_dim=output_dim, "
                     "device=device, **model_args)"]
    lines = edited.splitlines()
    assert lines[lines.index(added[1]) - 2].strip() == "if model_type == 't5':"
    with pytest.raises(SeriesError, match="already patched"):
        edit_builders(edited)


def test_series_applies_to_1_3_0_with_git_apply(upstream_tree, tmp_path):
    tree = fresh_copy(upstream_tree, tmp_path / "tree")
    patches, base = read_series(PATCHES_DIR)
    assert base == "audiocraft==1.3.0" and len(patches) == len(SPECS)
    run = subprocess.run(["git", "apply", "--check", "-v", *map(str, patches)], cwd=tree, capture_output=True,
                         text=True, env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert "offset" not in run.stderr
    for patch in patches:  # each header says what, why and the base
        header = patch.read_text().split("\n---\n")[0]
        assert "What:" in header and "Why:" in header and "Upstream-Base: audiocraft==1.3.0" in header
        assert header.startswith("From 0000000000000000000000000000000000000000 ")


def test_rebase_onto_1_3_0_refreshes_to_the_same_series(upstream_tree, tmp_path):
    before = digest(upstream_tree)
    report = rebase(upstream_tree, tmp_path / "out")
    assert [r.status for r in report.results] == [APPLIED] * len(SPECS)
    assert report.exit_code == 0 and digest(upstream_tree) == before  # never touched without --in-place
    assert stale_files(tmp_path / "out", PATCHES_DIR) == []


def test_rebase_reports_offsets_and_refreshes_line_numbers(upstream_tree, tmp_path):
    tree = fresh_copy(upstream_tree, tmp_path / "tree")
    builders = tree / BUILDERS
    builders.write_text(builders.read_text().replace("import typing as tp\n", "import typing as tp\nimport os\n\n"))
    report = rebase(tree, tmp_path / "out")
    by_name = {r.name[:4]: r for r in report.results}
    assert by_name["0002"].status == OFFSET and len(by_name["0002"].details) == 2
    assert all("offset +2 lines" in d and BUILDERS in d for d in by_name["0002"].details)
    assert {r.status for k, r in by_name.items() if k != "0002"} == {APPLIED}
    again = rebase(tree, tmp_path / "out2", series_dir=tmp_path / "out")
    assert [r.status for r in again.results] == [APPLIED] * len(SPECS)


def test_rebase_reports_a_conflict_and_writes_nothing(upstream_tree, tmp_path, capsys):
    tree = fresh_copy(upstream_tree, tmp_path / "tree")
    builders = tree / BUILDERS
    t5_line = "conditioners[str(cond)] = T5Conditioner(output_dim=output_dim, device=device, **model_args)"
    builders.write_text(builders.read_text().replace(t5_line, t5_line.replace("**model_args", "**dict(model_args)")))
    before = digest(tree)
    parser = argparse.ArgumentParser()
    add_rebase_parser(parser.add_subparsers())
    args = parser.parse_args(["rebase", "--onto", str(tree), "-o", str(tmp_path / "out"), "--in-place"])
    assert cmd_rebase(args) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "0002-" in line)
    assert line.endswith(f": {CONFLICT}")
    assert f"{BUILDERS}: hunk #2 (@@ -138,6 +139,8 @@): context not found" in out
    assert f"{BUILDERS}: 3-way merge left conflict markers" in out
    assert out.count(f": {APPLIED}\n") == len(SPECS) - 1
    assert not (tmp_path / "out").exists() and digest(tree) == before


def test_rebase_three_way_merges_a_nearby_change(upstream_tree, tmp_path):
    tree = fresh_copy(upstream_tree, tmp_path / "tree")
    builders = tree / BUILDERS
    builders.write_text(builders.read_text().replace("if model_type == 't5':", "if model_type in ('t5', 'flan_t5'):"))
    report = rebase(tree, tmp_path / "out", in_place=True)
    assert [r.status for r in report.results][1] == MERGED and report.exit_code == 0
    patched = builders.read_text()
    assert "if model_type in ('t5', 'flan_t5'):" in patched and "elif model_type == 'hf':" in patched
    assert (tree / TARGET_PATH).is_file() and (tree / "config/conditioner/text2music_hf.yaml").is_file()


def test_rebase_cannot_run_exit_2(upstream_tree, tmp_path, capsys):
    assert patching_main(["rebase", "--onto", str(tmp_path)]) == 2  # a folder without audiocraft/
    assert "not an upstream audiocraft tree" in capsys.readouterr().err
    assert patching_main(["rebase", "--onto", "not a version"]) == 2
    assert patching_main(["rebase", "--onto", str(upstream_tree), "--series", str(tmp_path)]) == 2
    with pytest.raises(RebaseError, match="--in-place needs the path"):
        rebase("1.3.0", in_place=True)


def test_sdist_unpack(upstream_tree, tmp_path):
    import tarfile

    archive = tmp_path / "audiocraft-1.3.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(upstream_tree, arcname="audiocraft-1.3.0")
    tree = unpack(archive, tmp_path / "x")
    assert (tree / BUILDERS).read_text() == (upstream_tree / BUILDERS).read_text()


def test_module_entry_point_runs():
    run = subprocess.run([sys.executable, "-m", "audiocraft_patched.patching", "--help"], capture_output=True,
                         text=True)
    assert run.returncode == 0 and "regenerate" in run.stdout and "rebase" in run.stdout
