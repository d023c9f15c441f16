"""The package version (here, below every layer, so that a report can print it)."""
__version__ = "0.1.0"
