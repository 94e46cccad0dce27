"""Datasets and streams."""
from .arrays import ArrayStream, DataConfig, ImageArray, fit_resolution, load_images

__all__ = ["ArrayStream", "DataConfig", "ImageArray", "fit_resolution", "load_images"]
