"""earlyexit: backbones, exit heads, MAC counting, training, exit policies and evaluation for the
early-exit notebook collection. ``earlyexit.wrap(model, exit_after)`` gives a model of your own exits
(``earlyexit.wrapping``)."""
__version__ = "0.1.0"


def __getattr__(name: str):
    """``earlyexit.wrap`` without importing torch on ``import earlyexit``."""
    if name == "wrap":
        from .wrapping import wrap
        return wrap
    raise AttributeError(f"module 'earlyexit' has no attribute {name!r}")
