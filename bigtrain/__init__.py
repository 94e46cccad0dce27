"""bigtrain: distributed training for large GANs."""
from ._version import __version__

__all__ = ["__version__", "load_generator"]


def __getattr__(name):  # `bigtrain.load_generator` without importing torch on `import bigtrain`
    if name == "load_generator":
        from bigtrain.export import load_generator
        return load_generator
    raise AttributeError(f"module 'bigtrain' has no attribute {name!r}")
