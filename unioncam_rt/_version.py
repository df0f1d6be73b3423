"""The package version: its one source (pyproject.toml reads it; modules import it from here)."""

__version__ = "0.3.1"
