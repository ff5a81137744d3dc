"""softlib: human label uncertainty and image classifiers."""
__version__ = "0.1.0"
