"""--threads is bounded by the CPUs available, with an argparse error instead of a segfault (issue 16, item 8)."""
import re

import pytest

from audiocraft_patched.cli import build_parser
from audiocraft_patched.utils.threads import available_cpus, check_threads


@pytest.mark.parametrize("value, message", [
    ("100000", "threads must be 0 .torch's default. or between 1 and {cpus} .the CPUs available here., got 100000"),
    ("-1", "between 1 and {cpus}.*got -1"),
    ("two", "not a whole number: 'two'"),
])
def test_generate_threads_out_of_range_is_a_usage_error(value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["generate", "calm piano", "--threads", value])
    assert exit_info.value.code == 2
    assert re.search(message.format(cpus=available_cpus()), capsys.readouterr().err)


def test_threads_in_range_are_kept():
    cpus = available_cpus()
    for value in (0, 1, cpus):
        assert build_parser().parse_args(["generate", "x", "--threads", str(value)]).threads == value
    with pytest.raises(ValueError, match="between 1 and"):
        check_threads(0, allow_default=False)
    with pytest.raises(TypeError, match="whole number"):
        check_threads(1.5)
