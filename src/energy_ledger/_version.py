"""The package version (one place, imported by the core and the shell)."""

__version__ = "0.1.0"
