"""Session-wide test set-up.

Without a GPU, the Triton kernels are tested on the CPU by Triton's interpreter, which reads
TRITON_INTERPRET when Triton is first imported: set it here, before any test module imports it, so
every module sees the same mode whatever the collection order.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# --- time per test area against its budget (issue 13: the default run stays under ~10 minutes) ---------
AREA_BUDGET_S = 45.0  # default (not slow) tests of one area, on an unloaded 2-core machine
_area_seconds: dict = {}


def _area(nodeid: str) -> str:
    """The top-level folder under tests/ of a test ("ops" for tests/ops/test_scan.py::x), or its file."""
    parts = nodeid.split("::")[0].split("/")
    parts = parts[parts.index("tests") + 1 :] if "tests" in parts else parts
    return parts[0] if parts else nodeid


def pytest_runtest_logreport(report):
    area = _area(report.nodeid)
    _area_seconds[area] = _area_seconds.get(area, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Seconds per area (setup + call + teardown of its tests); areas over budget are flagged, not failed."""
    if not _area_seconds:
        return
    tr = terminalreporter
    marks = config.getoption("markexpr") or "all tests"
    tr.write_sep("=", f"time per test area (-m {marks!r}; budget {AREA_BUDGET_S:.0f} s each for the default run)")
    for area, seconds in sorted(_area_seconds.items(), key=lambda kv: -kv[1]):
        over = seconds > AREA_BUDGET_S
        flag = "   OVER BUDGET: mark its slowest tests @pytest.mark.slow" if over else ""
        tr.write_line(f"{seconds:8.1f} s  {area}{flag}", red=over)
    tr.write_line(f"{sum(_area_seconds.values()):8.1f} s  in all")
