"""torchssm.checks: the unit-interval check the library's probabilities, fractions and ratios share."""

import math

import numpy as np
import pytest

from torchssm.checks import unit_interval


def test_unit_interval_accepts_real_numbers_and_returns_floats():
    for value in (0, 0.0, 0.5, 1, np.float32(0.25), np.float64(1.0)):
        out = unit_interval("p", value, "a probability")
        assert type(out) is float and out == float(value)
    assert unit_interval("f", 0.999, "a fraction", include_one=False) == 0.999


@pytest.mark.parametrize(
    ("value", "include_one", "message"),
    [
        (1.5, True, r"p must be a probability in \[0, 1\], got 1.5"),
        (-0.1, True, r"p must be a probability in \[0, 1\], got -0.1"),
        (1.0, False, r"p must be a probability in \[0, 1\), got 1.0"),
        (math.nan, True, r"got nan"),
        (True, True, r"got True"),  # a bool is not a probability
        ("0.5", True, r"got '0.5'"),
        (None, False, r"in \[0, 1\), got None"),
    ],
)
def test_unit_interval_refuses_with_one_line(value, include_one, message):
    with pytest.raises(ValueError, match=message):
        unit_interval("p", value, "a probability", include_one=include_one)


def test_library_arguments_use_it():
    """A few of the arguments that share the check (their messages name the argument and the interval)."""
    from torchssm.audio.accents import sample_accent
    from torchssm.train.schedule import WarmupCosine

    with pytest.raises(ValueError, match=r"p_change must be a probability in \[0, 1\], got 2"):
        sample_accent(np.random.default_rng(0), p_change=2)
    with pytest.raises(ValueError, match=r"min_ratio must be a ratio in \[0, 1\], got -1"):
        WarmupCosine(10, 0, min_ratio=-1)
