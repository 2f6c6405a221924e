"""Pure tensor functions (no nn.Module, no parameters): scans, selective scan, SSD, FFT convolution."""

from torchssm.ops.scan import linear_scan, linear_scan_naive

__all__ = ["linear_scan", "linear_scan_naive"]
