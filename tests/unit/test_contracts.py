"""The contracts keep the rules of protos/README.md: every rule here is checked on every RPC."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import hvac
import pytest
from buf.validate import validate_pb2
from google.api import field_behavior_pb2
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.descriptor_pb2 import MethodOptions

from meshctl import protogen

ROOT = Path(__file__).resolve().parents[2]

# Request fields that deliberately carry no protovalidate rule, each with the reason.
UNVALIDATED_FIELDS: dict[str, str] = {}

# Mutating RPCs that neither carry a request_id nor are idempotent by a natural key.
NON_IDEMPOTENT_METHODS: dict[str, str] = {
    "hvac.control.v1.ControlService.Connect": (
        "a device session: each message is deduplicated by its own sequence number"
    ),
}


def _modules() -> Iterator[ModuleType]:
    for info in pkgutil.walk_packages(hvac.__path__, "hvac."):
        if info.name.endswith("_pb2"):
            yield importlib.import_module(info.name)


FILES: list[FileDescriptor] = [m.DESCRIPTOR for m in _modules()]
SERVICES: list[ServiceDescriptor] = [s for f in FILES for s in f.services_by_name.values()]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]


def _messages(descriptor: Descriptor) -> Iterator[Descriptor]:
    yield descriptor
    for nested in descriptor.nested_types:
        yield from _messages(nested)


def _all_messages() -> Iterator[Descriptor]:
    for file in FILES:
        for message in file.message_types_by_name.values():
            yield from _messages(message)


def _request_fields(root: Descriptor) -> Iterator[FieldDescriptor]:
    """Every field reachable from a request message, within our own packages."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        message = stack.pop()
        if message.full_name in seen or message.GetOptions().map_entry:
            continue
        seen.add(message.full_name)
        for field in message.fields:
            yield field
            target = field.message_type
            if target is not None and target.GetOptions().map_entry:
                target = target.fields_by_name["value"].message_type
            if target is not None and target.full_name.startswith("hvac."):
                stack.append(target)


def test_every_service_package_is_generated() -> None:
    packages = {s.full_name.rsplit(".", 1)[0] for s in SERVICES}
    assert packages == {
        "hvac.optimizer.v1",
        "hvac.control.v1",
        "hvac.audit.v1",
        "hvac.gateway.v1",
    }


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_every_request_field_has_a_validation_rule(method: MethodDescriptor) -> None:
    missing = [
        field.full_name
        for field in _request_fields(method.input_type)
        if not field.GetOptions().HasExtension(validate_pb2.field)
        and field.full_name not in UNVALIDATED_FIELDS
    ]
    assert not missing, f"fields without a protovalidate rule: {missing}"


def test_every_field_declares_its_behavior() -> None:
    missing = [
        field.full_name
        for message in _all_messages()
        if not message.GetOptions().map_entry
        for field in message.fields
        if not field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    ]
    assert not missing, f"fields without google.api.field_behavior: {missing}"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_mutating_methods_are_idempotent_or_carry_a_request_id(method: MethodDescriptor) -> None:
    level = method.GetOptions().idempotency_level
    if level in (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT):
        return
    if method.full_name in NON_IDEMPOTENT_METHODS:
        return
    assert "request_id" in method.input_type.fields_by_name, (
        f"{method.full_name} mutates but has no request_id and is not declared IDEMPOTENT"
    )


def _service_config(service: ServiceDescriptor) -> dict[str, object]:
    folder = ROOT / "protos" / Path(*service.full_name.split(".")[:-1])
    config: dict[str, object] = json.loads((folder / "service_config.json").read_text())
    return config


def _method_configs(service: ServiceDescriptor) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for entry in _service_config(service)["methodConfig"]:  # type: ignore[attr-defined]
        for name in entry["name"]:
            assert name["service"] == service.full_name
            found[name.get("method", "*")] = entry
    return found


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.full_name)
def test_service_config_covers_every_method_and_retries_only_safe_ones(
    service: ServiceDescriptor,
) -> None:
    configs = _method_configs(service)
    for method in service.methods:
        entry = configs.get(method.name) or configs.get("*")
        assert entry is not None, f"{method.full_name} has no entry in service_config.json"
        policy = entry.get("retryPolicy")
        if policy is None:
            continue
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]  # type: ignore[index]
        safe = method.GetOptions().idempotency_level in (
            MethodOptions.NO_SIDE_EFFECTS,
            MethodOptions.IDEMPOTENT,
        ) or ("request_id" in method.input_type.fields_by_name)
        assert safe, f"{method.full_name} is retried but is not safe to repeat"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.full_name)
async def test_grpc_accepts_the_service_config(service: ServiceDescriptor) -> None:
    config = json.dumps(_service_config(service))
    async with grpc.aio.insecure_channel(
        "127.0.0.1:1", options=[("grpc.service_config", config)]
    ) as channel:
        assert channel.get_state() is not None


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``gen/`` and a buf image generated afresh from ``protos/``."""
    folder = tmp_path_factory.mktemp("regen")
    protogen.generate(folder / "gen", folder / "image.binpb")
    return folder / "gen", folder / "image.binpb"


def test_generated_code_is_fresh(regenerated: tuple[Path, Path]) -> None:
    assert protogen.stale_files(regenerated[0], ROOT / "gen") == []


def test_buf_lint_is_clean(regenerated: tuple[Path, Path]) -> None:
    buf = Path(sys.executable).parent / "buf"
    result = subprocess.run(
        [str(buf), "lint", str(regenerated[1]), "--path", "hvac"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
