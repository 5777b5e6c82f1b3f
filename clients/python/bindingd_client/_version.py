"""The client version, in its own module so internals can read it without importing the package."""

__version__ = "0.1.0"
