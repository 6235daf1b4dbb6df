"""Reading a Dynomite ``dyn_o_mite:`` YAML file into a ``NodeConfig``.

Theory of operation
-------------------
::

    text ──ruamel round-trip loader, every plain scalar kept as text──▶ CommentedMap
         ──_pool(): exactly one root key (the pool name), a mapping under it──▶ body
         ──drop field-less deprecated keys──▶ settings
         ──cattrs: one structure hook per key, built from keys.KEYS──▶ NodeConfig
         ──warn about DEPRECATED / DEAD keys, in file order

The round-trip loader keeps the line and column of every key, value and list
item, so any problem can be reported where it is.  Every plain scalar stays
a string (``_TextResolver``) because Dynomite's setters read the text: the
key's parser in ``keys.KEYS`` decides what it means.

cattrs does the structuring with ``forbid_extra_keys`` (unknown keys) and
detailed validation, which collects every failing key into one
``ClassValidationError`` whose sub-exceptions name their attribute in
``__notes__``.  ``_first_error`` maps each back to its position and raises
the first one in file order as a ``ConfigError``; missing required keys come
after all others (Dynomite checks them after parsing) and point at the root
key.

Error handling
--------------
Every problem with the file, from ``open()`` to a bad value, raises
``ConfigError``, whose ``str()`` is one line::

    conf/x.yml:7:12: key 'timeout': found 'abc', expected a whole number of milliseconds
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.resolver import VersionedResolver

from trinomite.config.keys import KEYS_BY_NAME, UNSET, Invalid, Key, Status
from trinomite.config.model import STATS_LISTEN_FILE_DEFAULT, NodeConfig

__all__ = ["ConfigError", "load_config", "parse_config"]

_log = logging.getLogger("trinomite.config")

_ROOT = "one root key, the pool name (like dyn_o_mite:), with the settings indented under it"

#: Keys users commonly try, with what to do instead (dynomite.md section 1.2).
_UNKNOWN_HINTS = {
    "redis_requirepass": "the datastore's password is datastore_password; the clients' "
    "is requirepass",
    "redis": "replaced by data_store: 0 in Dynomite in 2015",
}


class ConfigError(Exception):
    """A configuration file is unreadable or invalid.

    Attributes:
        source: The file name (or ``"<string>"``).
        line, column: 1-based position of the offending value, or of the key
            when the key itself is the problem; ``None`` when there is none.
        key: The key concerned, if any.
        found: What was found, quoted when it is text (``'abc'``).
        expected: What would have been accepted.
        problem: A description used instead of "found ...", if any.
    """

    def __init__(
        self,
        source: str,
        line: int | None = None,
        column: int | None = None,
        *,
        key: str | None = None,
        found: str | None = None,
        expected: str | None = None,
        problem: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.key = key
        self.found = found
        self.expected = expected
        self.problem = problem
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}:{self.column}"
        what = f"key '{self.key}': " if self.key is not None else ""
        detail = self.problem if self.problem is not None else f"found {self.found}"
        if self.expected is not None:
            detail += f", expected {self.expected}"
        return f"{where}: {what}{detail}"


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate the configuration file at ``path``.

    Error handling:
        Raises ``ConfigError`` when the file cannot be read or is invalid.
        Deprecated and ignored keys are logged as warnings on the
        ``trinomite.config`` logger.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, problem=f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, problem="cannot read the file: it is not UTF-8 text") from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> NodeConfig:
    """Validate configuration ``text``; ``source`` names it in messages.

    Error handling:
        As ``load_config``.
    """
    pool_name, body, root_position = _pool(_read_yaml(text, source), source)
    settings = {}
    for name, value in body.items():
        if not isinstance(name, str):
            raise ConfigError(
                source, *_key_position(body, name), found=_describe(name), expected="a key name"
            )
        key = KEYS_BY_NAME.get(name)
        if key is None or key.stored:
            settings[name] = value
    try:
        config = _CONVERTER.structure(settings, NodeConfig)
    except ClassValidationError as group:
        raise _first_error(group, body, source, root_position) from None
    for name in body:
        _warn_if_ignored(KEYS_BY_NAME[name], body, source)
    _check_users(config, body, source)
    if "stats_listen" not in body:  # Dynomite's admin port, for drop-in files
        config = attrs.evolve(config, stats_listen=STATS_LISTEN_FILE_DEFAULT)
    return attrs.evolve(config, pool_name=pool_name, source=source)


def _check_users(config: NodeConfig, body: CommentedMap, source: str) -> None:
    """Each client user once, and no ``default`` user beside ``requirepass``."""
    names = ["default"] if config.requirepass else []
    for index, user in enumerate(config.users):
        if user.name in names:
            why = " (requirepass is the default user's password)" if user.name == "default" else ""
            raise ConfigError(
                source,
                *_value_position(body, "users", index),
                key="users",
                problem=f"user '{user.name}' is defined twice{why}",
            )
        names.append(user.name)


# ---- YAML ------------------------------------------------------------------


class _TextResolver(VersionedResolver):
    """No implicit types: every plain scalar is a string, as for Dynomite."""

    @property
    def versioned_resolver(self) -> dict[str, list[Any]]:
        return {}


def _read_yaml(text: str, source: str) -> object:
    yaml = YAML(typ="rt")
    yaml.Resolver = _TextResolver
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # A duplicate key's context ("while constructing a mapping") is noise.
        context = None if isinstance(exc, DuplicateKeyError) else exc.context
        problem = ", ".join(part for part in (context, exc.problem) if part)
        position = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigError(source, *position, problem=f"YAML syntax error: {problem}") from None
    except YAMLError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ConfigError(source, problem=f"YAML error: {first_line}") from None


def _pool(document: object, source: str) -> tuple[str, CommentedMap, tuple[int, int]]:
    """Check the root structure; return (pool name, settings mapping, root key position)."""
    if document is None:
        raise ConfigError(source, 1, 1, problem="the file is empty", expected=_ROOT)
    if not isinstance(document, CommentedMap) or not document:
        raise ConfigError(source, 1, 1, found=_describe(document), expected=_ROOT)
    name, *others = document
    if others:
        raise ConfigError(
            source,
            *_key_position(document, others[0]),
            key=str(others[0]),
            found="a second root key",
            expected=_ROOT,
        )
    if not isinstance(name, str) or not name:
        raise ConfigError(source, 1, 1, found=_describe(name), expected=_ROOT)
    body = document[name]
    if not isinstance(body, CommentedMap):
        raise ConfigError(
            source,
            *_value_position(document, name),
            key=name,
            found=_describe(body),
            expected="the settings as an indented mapping of key: value lines",
        )
    return name, body, _key_position(document, name)


def _key_position(mapping: CommentedMap, key: object) -> tuple[int, int]:
    line, column = mapping.lc.key(key)
    return line + 1, column + 1


def _value_position(mapping: CommentedMap, key: str, index: int | None = None) -> tuple[int, int]:
    value = mapping[key]
    if index is not None and isinstance(value, CommentedSeq):
        line, column = value.lc.item(index)
    elif value == "":
        # An empty value has no position of its own: point at its key.
        return _key_position(mapping, key)
    else:
        line, column = mapping.lc.value(key)
    return line + 1, column + 1


def _describe(raw: object) -> str:
    """``raw`` for "found ...": quoted text, or what kind of YAML node it is."""
    if isinstance(raw, str):
        if not raw:
            return "an empty value"
        text = raw if len(raw) <= 80 else raw[:77] + "..."
        return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + "'"
    if isinstance(raw, dict):
        return "a mapping"
    if isinstance(raw, list):
        return "a list" if raw else "an empty list"
    return f"a tagged value of type {type(raw).__name__} (YAML tags are not supported)"


# ---- structuring -----------------------------------------------------------


def _structure_hook(key: Key, default: object) -> Callable[[object, object], object]:
    def structure(raw: object, _type: object) -> object:
        value = key.parser.parse(raw)
        return default if value is UNSET else value

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    overrides: dict[str, Any] = {
        # Not keys: pool_name is the root key's name, source the file name.
        "pool_name": override(omit=True),
        "source": override(omit=True),
    }
    for field in attrs.fields(NodeConfig):
        if field.name in KEYS_BY_NAME:
            hook = _structure_hook(KEYS_BY_NAME[field.name], field.default)
            overrides[field.name] = override(struct_hook=hook)
    converter.register_structure_hook(
        NodeConfig,
        make_dict_structure_fn(NodeConfig, converter, _cattrs_forbid_extra_keys=True, **overrides),
    )
    return converter


_CONVERTER = _make_converter()


def _first_error(
    group: ClassValidationError,
    body: CommentedMap,
    source: str,
    root_position: tuple[int, int],
) -> ConfigError:
    """The first error of ``group`` in file order, missing keys last."""
    ranked: list[tuple[tuple[int, int, int], ConfigError]] = []
    for exc in group.exceptions:
        if isinstance(exc, ForbiddenExtraKeysError):
            for name in exc.extra_fields:
                position = _key_position(body, name)
                error = ConfigError(source, *position, key=name, problem=_unknown(name))
                ranked.append(((0, *position), error))
            continue
        name = next(note.name for note in exc.__notes__ if hasattr(note, "name"))
        if isinstance(exc, KeyError):
            error = ConfigError(
                source,
                *root_position,
                key=name,
                problem="missing",
                expected=KEYS_BY_NAME[name].parser.described,
            )
            ranked.append(((1, *root_position), error))
        elif isinstance(exc, ValueError):
            index = exc.index if isinstance(exc, Invalid) else None
            expected = exc.expected if isinstance(exc, Invalid) else str(exc)
            raw = body[name] if index is None else body[name][index]
            position = _value_position(body, name, index)
            error = ConfigError(
                source,
                *position,
                key=name,
                found=_describe(raw),
                expected=expected.removeprefix("expected "),
            )
            ranked.append(((0, *position), error))
        else:
            raise group
    return min(ranked, key=lambda pair: pair[0])[1]


def _unknown(name: str) -> str:
    hint = _UNKNOWN_HINTS.get(name)
    if hint is None:
        close = difflib.get_close_matches(name, KEYS_BY_NAME, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see docs/configuration.md"
    return f"unknown key ({hint})"


def _warn_if_ignored(key: Key, body: CommentedMap, source: str) -> None:
    if key.status is Status.NORMAL:
        return
    line, column = _key_position(body, key.name)
    _log.warning(
        "%s:%d:%d: key '%s' is %s: %s",
        source,
        line,
        column,
        key.name,
        key.status.value,
        key.why,
    )
