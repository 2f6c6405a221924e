"""Argument checks shared across the library: a number that must lie in the unit interval (a probability, a
fraction, a ratio), refused with one line that names the argument, what it is and the interval.

    from torchssm.checks import unit_interval
    p = unit_interval("accent_augment", p, "a probability")                      # [0, 1]
    f = unit_interval("val_fraction", f, "a fraction", include_one=False)  # [0, 1)
"""

from __future__ import annotations

import numbers


def unit_interval(name: str, value, what: str = "a number", *, include_one: bool = True) -> float:
    """``value`` as a float when it is a real number (not a bool) in [0, 1] (``include_one=False``: [0, 1));
    otherwise ``ValueError("<name> must be <what> in [0, 1], got <value>")``. NaN is refused."""
    interval = "[0, 1]" if include_one else "[0, 1)"
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (is_number and 0.0 <= value and (value <= 1.0 if include_one else value < 1.0)):
        raise ValueError(f"{name} must be {what} in {interval}, got {value!r}")
    return float(value)
