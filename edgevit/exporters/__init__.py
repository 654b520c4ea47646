"""Exporters lower the compressed PyTorch model to one runtime's artifact bundle.

Runtime modules (onnx, openvino, ...) are imported lazily inside each exporter, so
importing edgevit never imports a runtime.
"""
from edgevit.exporters import litert as _litert, onnx as _onnx, openvino as _openvino  # noqa: F401  (register)
from edgevit.exporters.base import EXPORTERS, Bundle, ExportContext, Exporter, LoweringPlan, TargetProfile, load_profile

__all__ = ["EXPORTERS", "Bundle", "ExportContext", "Exporter", "LoweringPlan", "TargetProfile", "load_profile"]
