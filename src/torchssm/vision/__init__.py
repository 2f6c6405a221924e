"""2-D state-space models: scan orders, patch embedding, 2-D mixers (cross-scan with any registered
layer, Spatial-Mamba, S4ND), image data sets and a multi-scale restoration network (docs/vision.md).

The 2-D mixers are registered layers (``build_layer("cross_scan" | "spatial_mamba" | "s4nd", d,
grid=(H, W))``). Importing the package loads the layers only; data, restoration and the CLI modules
(scikit-image, matplotlib) are imported where they are used.
"""

from torchssm.vision.cross_scan import CrossScan2D
from torchssm.vision.patch import PatchEmbed
from torchssm.vision.s4nd import S4ND
from torchssm.vision.scan_orders import ORDERS, VMAMBA_CROSS_SCAN, inverse, scan_order
from torchssm.vision.spatial_mamba import SpatialMamba

__all__ = ["CrossScan2D", "PatchEmbed", "S4ND", "SpatialMamba", "ORDERS", "VMAMBA_CROSS_SCAN", "inverse", "scan_order"]
