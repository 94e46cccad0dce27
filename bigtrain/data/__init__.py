"""Datasets and streams: in-memory arrays and WebDataset shards behind one DataSource."""
from .arrays import ArrayStream, DataConfig, ImageArray, fit_resolution, load_images
from .shards import DataError, ShardSet, is_shard_source, open_shards, read_epoch
from .source import DataSource, open_data

__all__ = ["ArrayStream", "DataConfig", "DataError", "DataSource", "ImageArray", "ShardSet", "fit_resolution",
           "is_shard_source", "load_images", "open_data", "open_shards", "read_epoch"]
