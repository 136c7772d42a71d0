"""Export a hybrid to ONNX or torch.export (.pt2), with a parity check against PyTorch eager."""

from hybridize.export.onnx_export import export_onnx
from hybridize.export.parity import CheckOptions, ParityReport
from hybridize.export.pt2_export import export_pt2

__all__ = ["CheckOptions", "ParityReport", "export_onnx", "export_pt2"]
