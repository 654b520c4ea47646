"""edgevit: compress timm vision transformers, export them for edge runtimes, measure them."""
__version__ = "0.1.0"
