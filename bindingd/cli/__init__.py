"""The bindingd command line."""

from bindingd.cli.main import main

__all__ = ["main"]
