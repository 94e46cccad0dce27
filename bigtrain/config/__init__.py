"""Configuration: typed dataclass schema + YAML loading with key-naming errors."""
from .loader import apply_overrides, deep_merge, dump_yaml, load_config, read_yaml
from .schema import ConfigError, Sources, build, iter_fields, require, to_dict

__all__ = ["ConfigError", "Sources", "apply_overrides", "build", "deep_merge", "dump_yaml",
           "iter_fields", "load_config", "read_yaml", "require", "to_dict"]
