"""Who is calling: the caller's SPIFFE ID, as Envoy vouches for it.

Envoy terminates the caller's mutual TLS and passes the verified identity in the
``x-forwarded-client-cert`` header (XFCC): ``By=<envoy>;Hash=…;Subject="…";URI=<caller>``, with
one comma-separated element per proxy hop, the original caller first. Anyone who can open a
connection can send that header, so it is believed only when the connection itself comes from
Envoy: in the mesh Envoy connects to services from a dedicated loopback address
(``HVAC_TRUSTED_PROXIES``, default ``127.0.0.2``), and services listen on loopback only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

XFCC_HEADER = "x-forwarded-client-cert"
TRUSTED_PROXIES_ENV = "HVAC_TRUSTED_PROXIES"
DEFAULT_TRUSTED_PROXIES = ("127.0.0.2",)


class RpcContext(Protocol):
    """What is read of a servicer context (``grpc.ServicerContext`` or its asyncio twin)."""

    def peer(self) -> str: ...

    def invocation_metadata(self) -> Any: ...


@dataclass(frozen=True)
class CallerIdentity:
    """The verified caller: its SPIFFE ID, certificate subject, and the proxies it came through."""

    spiffe_id: str
    subject: str = ""
    proxies: tuple[str, ...] = ()  # SPIFFE IDs of the Envoys (``By=``), first hop first

    @property
    def kind(self) -> str:
        """``svc``, ``user`` or ``device`` (the first path segment that says what it is)."""
        parts = self.spiffe_id.split("/")[3:]
        if parts[:1] == ["region"] and len(parts) >= 4:
            return parts[2]
        return parts[0] if parts else ""


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (XFCC quotes values holding , ; =)."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_xfcc(header: str) -> list[dict[str, str]]:
    """The elements of an XFCC header, each a mapping of its keys (``By``, ``URI``, ...)."""
    elements = []
    for element in _split(header, ","):
        if not element.strip():
            continue
        fields: dict[str, str] = {}
        for pair in _split(element, ";"):
            key, sep, value = pair.partition("=")
            if sep:
                fields[key.strip()] = _unquote(value.strip())
        elements.append(fields)
    return elements


def identity_from_xfcc(header: str) -> CallerIdentity | None:
    """The original caller named by an XFCC header, or None when it names none."""
    elements = parse_xfcc(header)
    if not elements or not elements[0].get("URI", "").startswith("spiffe://"):
        return None
    first = elements[0]
    proxies = tuple(e["By"] for e in elements if e.get("By"))
    return CallerIdentity(first["URI"], first.get("Subject", ""), proxies)


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string (``ipv4:127.0.0.2:5555`` -> ``127.0.0.2``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""


def trusted_proxies() -> tuple[str, ...]:
    """Addresses whose XFCC header is believed, from ``HVAC_TRUSTED_PROXIES``."""
    raw = os.environ.get(TRUSTED_PROXIES_ENV)
    if raw is None:
        return DEFAULT_TRUSTED_PROXIES
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def caller_identity(
    context: RpcContext,
    proxies: Sequence[str] | None = None,
) -> CallerIdentity | None:
    """The caller of the current RPC, or None when it is unknown or not vouched for by Envoy."""
    allowed = trusted_proxies() if proxies is None else tuple(proxies)
    if peer_host(context.peer()) not in allowed:
        return None
    headers = [value for key, value in context.invocation_metadata() or () if key == XFCC_HEADER]
    if len(headers) != 1 or not isinstance(headers[0], str):
        return None  # none, or ambiguous: never guess
    return identity_from_xfcc(headers[0])
