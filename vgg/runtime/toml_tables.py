"""The experiment files' TOML (profiles.toml, runs.toml, the tables), read and checked: a syntax error,
a table that is not one, an unknown or missing key, or a value of the wrong type or range is one
line naming the file, the table, the key and what is expected."""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml_file(path: Path, what: str, missing_hint: str = "") -> dict:
    """A TOML file's data; a missing file (`what`, with `missing_hint`) or a syntax error names the file."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist{missing_hint}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None


@dataclass(frozen=True)
class Key:
    """What a key of a table may hold: a value of `kinds` for which `valid` holds, described in words
    by `expected` ("a positive integer")."""

    kinds: tuple[type, ...]
    expected: str
    valid: Callable[[object], bool] = lambda value: True
    required: bool = False


def positive_int(required: bool = False) -> Key:
    return Key((int,), "a positive integer", lambda v: v > 0, required)


def count(required: bool = False) -> Key:
    return Key((int,), "an integer of at least 0", lambda v: v >= 0, required)


def number(expected: str, valid: Callable[[float], bool], required: bool = False) -> Key:
    return Key((int, float), expected, valid, required)


def text(required: bool = False, expected: str = "a string") -> Key:
    return Key((str,), expected, lambda v: True, required)


def fraction_key(required: bool = False) -> Key:
    return Key((str, int), 'a positive fraction, e.g. "2/7"', _positive_fraction, required)


def numbers(expected: str) -> Key:
    return Key((list,), expected, lambda v: all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def _positive_fraction(value: object) -> bool:
    try:
        return Fraction(str(value)) > 0
    except (ValueError, ZeroDivisionError):
        return False


def toml_value(value: object) -> str:
    """A value as TOML writes it (strings in double quotes)."""
    return json.dumps(value, default=str)


def check_table(where: str, table: object, keys: dict[str, Key]) -> dict:
    """`table` (from `where`, e.g. "experiments/profiles.toml [smoke]"), checked against `keys`."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of keys, got {toml_value(table)}")
    for name in table:
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"{where}: unknown key {name}{hint}; known keys: {', '.join(keys)}")
    for name, key in keys.items():
        if name not in table:
            if key.required:
                raise ValueError(f"{where}: missing key {name} ({key.expected})")
            continue
        value = table[name]
        wrong_kind = isinstance(value, bool) and bool not in key.kinds or not isinstance(value, key.kinds)
        if wrong_kind or not key.valid(value):
            raise ValueError(f"{where}: {name} = {toml_value(value)} is not {key.expected}")
    return table
