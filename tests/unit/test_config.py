from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from meshkit.config import ConfigError, describe, env, from_env
from meshkit.server import ServerConfig


@dataclass(frozen=True)
class Sample:
    port: int = env("X_PORT", 0, "port")
    ratio: float = env("X_RATIO", 0.5, "ratio")
    name: str = env("X_NAME", "a", "name")
    enabled: bool = env("X_ENABLED", False, "flag")
    path: Path | None = env("X_PATH", None, "optional path")


def test_defaults_apply_when_variables_are_absent() -> None:
    assert from_env(Sample, {}) == Sample()


def test_variables_are_converted_to_the_annotated_types() -> None:
    got = from_env(
        Sample,
        {"X_PORT": "8080", "X_RATIO": "0.25", "X_NAME": "b", "X_ENABLED": "yes", "X_PATH": "/t"},
    )
    assert got == Sample(port=8080, ratio=0.25, name="b", enabled=True, path=Path("/t"))


def test_an_empty_optional_variable_means_none() -> None:
    assert from_env(Sample, {"X_PATH": ""}).path is None


def test_overrides_win_over_the_environment_and_none_overrides_are_ignored() -> None:
    got = from_env(Sample, {"X_PORT": "1"}, port=2, name=None)
    assert (got.port, got.name) == (2, "a")


@pytest.mark.parametrize(
    ("variables", "named"),
    [({"X_PORT": "eighty"}, "X_PORT"), ({"X_ENABLED": "maybe"}, "X_ENABLED")],
)
def test_a_bad_value_names_the_variable(variables: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        from_env(Sample, variables)


def test_every_server_setting_is_documented() -> None:
    rows = describe(ServerConfig)
    assert {r[0] for r in rows} >= {"HVAC_HOST", "HVAC_PORT", "HVAC_SHUTDOWN_GRACE_S"}
    assert all(doc for _, _, doc in rows)


def test_services_bind_loopback_by_default() -> None:
    assert from_env(ServerConfig, {}).host == "127.0.0.1"
