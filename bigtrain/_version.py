"""The version of bigtrain (read by setup.py and written into exports)."""
__version__ = "0.1.0"
