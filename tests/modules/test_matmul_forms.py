"""MatmulForms: the form is timed once per machine, kept in the calibration file, and reused."""
import json
import warnings

import pytest
import torch

from audiocraft_patched.modules import matmul_forms
from audiocraft_patched.modules.matmul_forms import ENV, Calibration, MatmulForms, calibration_path

WEIGHTS = [torch.randn(8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
CPU = torch.device("cpu")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOCRAFT_PATCHED_HOME", str(tmp_path))
    monkeypatch.delenv(ENV, raising=False)
    return tmp_path


def rig_race(monkeypatch, winner: bool) -> None:
    """A clock under which `winner` (True: `W @ x.T`) takes 1 s per timing and the other 10 s."""
    def timings():
        while True:  # time_forms alternates F.linear, W @ x.T; each timing reads the clock twice
            for form in (False, True):
                yield 0.0
                yield 1.0 if form == winner else 10.0

    forms = timings()
    monkeypatch.setattr(matmul_forms.time, "perf_counter", lambda: next(forms))


@pytest.mark.parametrize("winner", [False, True])
def test_race_result_is_saved_and_reused_whatever_the_timer_says_later(home, monkeypatch, winner):
    rig_race(monkeypatch, winner)
    first = MatmulForms()
    assert first.choose(WEIGHTS, rows=2) is winner
    assert "measured (saved to" in first.describe()
    saved = json.loads(calibration_path().read_text())["forms"]
    assert list(saved.values()) == ["W @ x.T" if winner else "F.linear"]
    threads = torch.get_num_threads()
    assert f"torch {torch.__version__} | {threads} threads | 2 rows | float32 | cpu" in next(iter(saved))

    rig_race(monkeypatch, not winner)  # a later process on a loaded machine: the race now goes the other way
    later = MatmulForms()
    assert later.choose(WEIGHTS, rows=2) is winner
    assert f"[calibration {calibration_path()}]" in later.describe()
    assert MatmulForms().choose([w.bfloat16() for w in WEIGHTS], rows=2) is (not winner)  # another key: raced


def test_env_var_forces_a_form_and_measure_recalibrates(home, monkeypatch):
    rig_race(monkeypatch, True)
    assert MatmulForms().choose(WEIGHTS, rows=2) is True
    monkeypatch.setenv(ENV, "linear")
    forced = MatmulForms()
    assert forced.choose(WEIGHTS, rows=2) is False and f"forced by {ENV}" in forced.describe()
    monkeypatch.setenv(ENV, "wx")
    assert MatmulForms().choose(WEIGHTS, rows=2) is True
    monkeypatch.setenv(ENV, "measure")
    rig_race(monkeypatch, False)
    assert MatmulForms().choose(WEIGHTS, rows=2) is False  # timed again, the file's entry replaced
    monkeypatch.delenv(ENV)
    assert MatmulForms().choose(WEIGHTS, rows=2) is False
    monkeypatch.setenv(ENV, "fastest")
    with pytest.raises(ValueError, match="linear .*wx .*measure"):
        MatmulForms().choose(WEIGHTS, rows=2)


def test_corrupt_or_unwritable_file_measures_with_one_warning(home, monkeypatch):
    path = calibration_path()
    path.write_text("{not json")
    rig_race(monkeypatch, True)
    forms = MatmulForms()
    with pytest.warns(RuntimeWarning, match="unreadable") as caught:
        assert forms.choose(WEIGHTS, rows=2) is True
        assert forms.choose([w.bfloat16() for w in WEIGHTS], rows=2) is True
    assert len(caught) == 1 and path.read_text() == "{not json"  # left for the user to look at
    assert "this process only" in forms.describe()

    blocked = home / "file"
    blocked.write_text("")
    calibration = Calibration(blocked / "matmul_forms.json")  # its folder is a file: cannot be written
    with pytest.warns(RuntimeWarning, match="not writable"):
        assert MatmulForms(calibration=calibration).choose(WEIGHTS, rows=2) is True


def test_fixed_forms_ignore_file_and_env(home, monkeypatch):
    monkeypatch.setenv(ENV, "wx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forms = MatmulForms(measure=False)
        assert forms.choose(WEIGHTS, rows=2) is False and not calibration_path().exists()
        forms.set(2, torch.float32, CPU, True)
        assert forms.choose(WEIGHTS, rows=2) is True and "[set by hand]" in forms.describe()
