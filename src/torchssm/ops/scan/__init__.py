"""Linear recurrence h_t = a_t * h_{t-1} + b_t (diagonal, real or complex)."""

from torchssm.ops.scan.api import linear_scan
from torchssm.ops.scan.naive import linear_scan_naive

__all__ = ["linear_scan", "linear_scan_naive"]
