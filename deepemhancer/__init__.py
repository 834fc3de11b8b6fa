"""DeepEMhancer on PyTorch: cryo-EM map post-processing that keeps the map's placement.

The engine has no Scipion import. Entry points: ``enhance`` (the pipeline), ``read_map`` /
``write_map`` (maps with their geometry), the ``deepemhancer`` command line.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "enhance", "EnhanceOptions", "load_model", "Map", "read_map", "write_map"]


def __getattr__(name):
    # Lazy: ``import deepemhancer`` stays cheap (no torch) for the CLI's --help and the plugin.
    if name in ("enhance", "EnhanceOptions"):
        from . import pipeline as module
    elif name == "load_model":
        from .models import loaded as module
    elif name in ("Map", "read_map", "write_map"):
        from . import mapio as module
    else:
        raise AttributeError(f"module 'deepemhancer' has no attribute {name!r}")
    return getattr(module, name)
