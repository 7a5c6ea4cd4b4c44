"""earlyexit: backbones, exit heads, MAC counting, training, exit policies and evaluation for the
early-exit notebook collection."""
__version__ = "0.1.0"
