"""Upstream audiocraft 1.3.0's own unit tests (from its sdist, fetched at test time) pass against us."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import runner  # noqa: E402
from upstream_models import sdist_tree  # noqa: E402

# Tests per in-scope file of the 1.3.0 sdist (parametrizations included): 162 in all.
EXPECTED = {"test_codebooks_patterns": 123, "test_conv": 8, "test_seanet": 7, "test_transformer": 10,
            "test_lstm": 2, "test_audio_utils": 12}


def test_rewrite_imports_touches_only_audiocraft_imports():
    source = ("from audiocraft.modules import pad1d\nimport audiocraft\n    from audiocraft import models\n"
              "import audiocraft_x\nfrom ..common_utils import x  # audiocraft.modules\n")
    assert runner.rewrite_imports(source) == (
        "from audiocraft_patched.modules import pad1d\nimport audiocraft_patched\n"
        "    from audiocraft_patched import models\nimport audiocraft_x\n"
        "from ..common_utils import x  # audiocraft.modules\n")


def test_unclassified_upstream_test_file_is_refused(tmp_path):
    tree = tmp_path / "tree"
    for rel in runner.SUPPORT + runner.IN_SCOPE + ("tests/modules/test_new_thing.py",):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("")
    with pytest.raises(runner.SuiteError, match="test_new_thing"):
        runner.prepare(tree, tmp_path / "out")


def test_upstream_sdist_suite_passes(tmp_path):
    tree = sdist_tree("its test suite")
    report = tmp_path / "report.xml"
    files = runner.prepare(tree, tmp_path / "suite")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "suite/pytest.ini"),
           "--rootdir", str(tmp_path / "suite"), f"--junitxml={report}", *map(str, files)]
    proc = subprocess.run(cmd, cwd=tmp_path / "suite", capture_output=True, text=True, timeout=900)
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    counts: dict[str, int] = {}
    bad = []
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")[2]  # tests.<dir>.<module>[.<Class>]
        counts[module] = counts.get(module, 0) + 1
        if any(child.tag in ("failure", "error", "skipped") for child in case):
            bad.append(f"{case.get('classname')}::{case.get('name')}")
    assert not bad, f"{len(bad)} upstream tests did not pass: {bad}\n{proc.stdout[-3000:]}"
    assert counts == EXPECTED, counts
    assert proc.returncode == 0
