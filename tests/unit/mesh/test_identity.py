"""A service believes x-forwarded-client-cert only from Envoy, and reads the original caller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshkit.identity import (
    CallerIdentity,
    caller_identity,
    identity_from_xfcc,
    parse_xfcc,
    peer_host,
)

USER = "spiffe://hvac.local/user/alice"
ENVOY_EAST = "spiffe://hvac.local/region/us-east/envoy"
ENVOY_WEST = "spiffe://hvac.local/region/eu-west/envoy"


@dataclass
class FakeContext:
    """Only what caller_identity reads: the peer string and the request metadata."""

    peer_address: str
    metadata: Sequence[tuple[str, str]]

    def peer(self) -> str:
        return self.peer_address

    def invocation_metadata(self) -> Sequence[tuple[str, str]]:
        return self.metadata


def test_a_quoted_subject_with_commas_and_semicolons_stays_one_field() -> None:
    header = f'By={ENVOY_EAST};Hash=ab12;Subject="CN=user/alice,OU=admin;x";URI={USER}'
    [element] = parse_xfcc(header)
    assert element == {
        "By": ENVOY_EAST,
        "Hash": "ab12",
        "Subject": "CN=user/alice,OU=admin;x",
        "URI": USER,
    }


def test_after_a_failover_hop_the_original_caller_is_the_first_element() -> None:
    header = f"By={ENVOY_EAST};URI={USER},By={ENVOY_WEST};URI={ENVOY_EAST}"
    identity = identity_from_xfcc(header)
    assert identity == CallerIdentity(USER, "", (ENVOY_EAST, ENVOY_WEST))
    assert identity.kind == "user"


def test_a_service_identity_reports_its_kind() -> None:
    header = f"By={ENVOY_EAST};URI=spiffe://hvac.local/region/us-east/svc/gateway"
    identity = identity_from_xfcc(header)
    assert identity is not None and identity.kind == "svc"


def test_an_element_without_a_spiffe_uri_names_nobody() -> None:
    assert identity_from_xfcc(f"By={ENVOY_EAST};Hash=ab") is None
    assert identity_from_xfcc("") is None


def test_peer_strings_give_their_address() -> None:
    assert peer_host("ipv4:127.0.0.2:5555") == "127.0.0.2"
    assert peer_host("ipv6:[::1]:5555") == "::1"
    assert peer_host("unix:/tmp/sock") == ""


def test_the_header_is_believed_from_the_envoy_address_only() -> None:
    xfcc = [("x-forwarded-client-cert", f"By={ENVOY_EAST};URI={USER}")]
    from_envoy = FakeContext("ipv4:127.0.0.2:40000", xfcc)
    from_elsewhere = FakeContext("ipv4:127.0.0.1:40000", xfcc)
    assert caller_identity(from_envoy, ["127.0.0.2"]) == CallerIdentity(USER, "", (ENVOY_EAST,))
    assert caller_identity(from_elsewhere, ["127.0.0.2"]) is None


def test_two_headers_are_ambiguous_and_name_nobody() -> None:
    twice = [
        ("x-forwarded-client-cert", f"URI={USER}"),
        ("x-forwarded-client-cert", "URI=spiffe://hvac.local/user/bob"),
    ]
    assert caller_identity(FakeContext("ipv4:127.0.0.2:1", twice), ["127.0.0.2"]) is None
