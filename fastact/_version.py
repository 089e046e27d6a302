"""The package version (a leaf: the runtime report and the package read it)."""

__version__ = "0.1.0"
