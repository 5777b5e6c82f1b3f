"""Configuration: find, read, check and resolve bindingd.yaml for one env.

`load_config` is the entry point; everything downstream reads the `model` types it returns.
"""

from bindingd.config.errors import ConfigError
from bindingd.config.loader import CONFIG_FILE, find_config, load_config
from bindingd.config.model import (
    ACCESS_MODES,
    BINDING_TYPES,
    LOCAL,
    Binding,
    Config,
    Connection,
    Gateway,
    Location,
)

__all__ = [
    "ACCESS_MODES",
    "BINDING_TYPES",
    "CONFIG_FILE",
    "LOCAL",
    "Binding",
    "Config",
    "ConfigError",
    "Connection",
    "Gateway",
    "Location",
    "find_config",
    "load_config",
]
