"""Typed configuration read from environment variables.

A service's config is one frozen dataclass; each field names its variable and documents itself::

    @dataclass(frozen=True)
    class OptimizerConfig:
        port: int = env("HVAC_OPTIMIZER_PORT", 0, "TCP port on 127.0.0.1; 0 picks a free one")

``from_env(OptimizerConfig)`` reads the variables, converts them to the annotated types and
raises ``ConfigError`` naming the variable when a value does not parse.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration variable is missing or does not parse."""


def env(name: str, default: Any, doc: str) -> Any:
    """Declare a dataclass field read from the environment variable ``name``."""
    return dataclasses.field(default=default, metadata={"env": name, "doc": doc})


def from_env(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build ``cls`` from ``environ`` (default ``os.environ``); ``overrides`` win over both."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in overrides and overrides[field.name] is not None:
            values[field.name] = overrides[field.name]
            continue
        name = field.metadata.get("env")
        if name and name in environ:
            values[field.name] = _parse(name, environ[name], hints[field.name])
    return cls(**values)


def describe(cls: type[Any]) -> list[tuple[str, str, str]]:
    """``(variable, default, doc)`` for every field, for ``--help`` and the docs."""
    return [
        (f.metadata["env"], repr(f.default), f.metadata["doc"])
        for f in dataclasses.fields(cls)
        if "env" in f.metadata
    ]


def _parse(name: str, raw: str, kind: Any) -> Any:
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    if optional:
        if raw == "":
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
            return lowered in _TRUE
        if kind in (int, float, str, Path):
            return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from exc
    raise ConfigError(f"{name}: unsupported type {kind!r}")
