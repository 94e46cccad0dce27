"""Export of trained generators for users: ``bigtrain export`` and ``bigtrain.load_generator``."""
from bigtrain.models.snapshot import CONFIG, WEIGHTS, ExportError, is_export, load_generator, read_config
from .run import FORMATS, export_generator

__all__ = ["CONFIG", "FORMATS", "WEIGHTS", "ExportError", "export_generator", "is_export", "load_generator",
           "read_config"]
