"""bigtrain: distributed training for large GANs."""
__version__ = "0.1.0"
