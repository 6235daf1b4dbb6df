"""Configuration: Dynomite's ``dyn_o_mite:`` YAML, read into a frozen ``NodeConfig``.

Theory of operation
-------------------
``model`` defines the frozen value classes, ``keys`` the table of every
accepted key (parser, status, help, range) and ``load`` reads a file through
that table, reporting the first problem as a one-line ``ConfigError`` with
file, line and column.  This package only re-exports the public names.
"""

from __future__ import annotations

from trinomite.config.keys import KEYS as KEYS
from trinomite.config.keys import Key as Key
from trinomite.config.keys import Status as Status
from trinomite.config.load import ConfigError as ConfigError
from trinomite.config.load import load_config as load_config
from trinomite.config.load import parse_config as parse_config
from trinomite.config.model import Consistency as Consistency
from trinomite.config.model import DataStore as DataStore
from trinomite.config.model import DatastoreSpec as DatastoreSpec
from trinomite.config.model import HostPort as HostPort
from trinomite.config.model import NodeConfig as NodeConfig
from trinomite.config.model import SecureServerOption as SecureServerOption
from trinomite.config.model import Seed as Seed
from trinomite.config.model import UnixPath as UnixPath

__all__ = [
    "KEYS",
    "ConfigError",
    "Consistency",
    "DataStore",
    "DatastoreSpec",
    "HostPort",
    "Key",
    "NodeConfig",
    "SecureServerOption",
    "Seed",
    "Status",
    "UnixPath",
    "load_config",
    "parse_config",
]
