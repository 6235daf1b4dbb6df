"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists ``{public name: submodule}``; ``lazy_exports`` returns the
module-level ``__getattr__`` and ``__dir__`` that import a submodule the
first time one of its names is used and cache the value in the package, so
``import trinomite`` (which pytest does at every start, for the plugin)
costs almost nothing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(public)

    return getattr_, dir_
