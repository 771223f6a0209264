"""`align` and `compare-encoders` on tiny AudioGen and MAGNeT checkpoints (issue 11, item 6).

They run and their outputs load as the same generator. For MAGNeT the LM metrics (KL, top-1) come
from one teacher-forced forward with full attention (`compute_predictions`, no decoding stage):
a measure of how alike two conditionings steer the LM, not of MAGNeT's masked decoding.
"""
import json

import pytest

from audiocraft_patched.cli import main
from audiocraft_patched.models import load_generator
from test_audiogen_parity import tiny_t5_large_dir  # noqa: F401  (fixture)
from test_magnet_audiogen_tools import KINDS, folder, other_encoder  # noqa: F401  (fixtures)

pytestmark = pytest.mark.upstream

CAPTIONS = [f"{what} {where}" for what in ("rain", "a dog barking", "a car passing", "wind", "footsteps", "a door")
            for where in ("at night", "in a city", "far away", "close by")]  # 24: compare-encoders wants ~20


def test_align_and_compare_encoders(folder, other_encoder, tmp_path):
    kind, path = folder
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n")
    out = tmp_path / "aligned"
    assert main(["align", str(path), "--student", str(other_encoder), "-o", str(out), "--captions", str(captions),
                 "--steps", "2", "--batch-size", "4", "--holdout", "2", "-q", "--code-steps", "6"]) == 0
    aligned = load_generator(out, "cpu")
    assert type(aligned) is KINDS[kind][1]
    report = tmp_path / "compare.json"
    assert main(["compare-encoders", str(path), str(out), "--captions", str(captions), "--code-steps", "6",
                 "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert len(rows) == 1 and all(isinstance(rows[0][key], float) for key in ("cka", "kl", "top1"))
