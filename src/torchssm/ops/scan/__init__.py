"""Linear recurrence h_t = a_t * h_{t-1} + b_t (diagonal, real or complex), and the LRU's recurrence on it."""

from torchssm.ops.scan.api import linear_scan
from torchssm.ops.scan.lru import lru_scan, lru_scan_reference
from torchssm.ops.scan.naive import linear_scan_naive

__all__ = ["linear_scan", "linear_scan_naive", "lru_scan", "lru_scan_reference"]
