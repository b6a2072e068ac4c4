"""The package version (one place: __init__, the CLI and the sinks read it)."""

__version__ = "0.1.0"
