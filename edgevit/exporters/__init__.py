"""Exporters lower the compressed PyTorch model to one runtime's artifact bundle.

Each runtime's declaration (runtimes/<name>.yaml) names the exporter class that writes its
bundles; exporters and their runtime modules are imported only when used, so importing
edgevit never imports a runtime.
"""
from edgevit.exporters.base import Bundle, ExportContext, Exporter, LoweringPlan, TargetProfile, load_profile

__all__ = ["Bundle", "ExportContext", "Exporter", "LoweringPlan", "TargetProfile", "load_profile"]
