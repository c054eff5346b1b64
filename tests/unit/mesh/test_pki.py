"""The mesh CA issues short-lived X.509-SVIDs that verify against it and nothing else."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshctl.pki import (
    SERVICE_LIFETIME,
    CertificateAuthority,
    Pki,
    device_id,
    envoy_id,
    service_id,
    spiffe_ids,
    user_id,
)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    # Valid since yesterday, so certificates that expired earlier today still chain to it.
    return CertificateAuthority.create(now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))


def _verify_client(ca: CertificateAuthority, leaf: x509.Certificate, at: dt.datetime) -> None:
    verifier = PolicyBuilder().store(Store([ca.certificate])).time(at).build_client_verifier()
    verifier.verify(leaf, [])


def test_identities_follow_the_spiffe_layout() -> None:
    assert service_id("us-east", "control") == "spiffe://hvac.local/region/us-east/svc/control"
    assert envoy_id("eu-west") == "spiffe://hvac.local/region/eu-west/envoy"
    assert device_id("b1", "ahu-3") == "spiffe://hvac.local/device/b1/ahu-3"
    assert user_id("alice") == "spiffe://hvac.local/user/alice"


@pytest.mark.parametrize("bad", ["", "Upper", "a/b", "x" * 64, "1abc", "a b"])
def test_identity_segments_that_could_escape_the_path_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        service_id("us-east", bad)


def test_a_service_certificate_has_one_spiffe_uri_san_and_an_ecdsa_p256_key(
    ca: CertificateAuthority,
) -> None:
    issued = ca.issue(service_id("us-east", "optimizer"))
    cert = issued.certificate
    assert spiffe_ids(cert) == ["spiffe://hvac.local/region/us-east/svc/optimizer"]
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_service_certificates_live_hours_not_days(ca: CertificateAuthority) -> None:
    cert = ca.issue(service_id("eu-west", "audit")).certificate
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(hours=1) <= lifetime <= SERVICE_LIFETIME + dt.timedelta(minutes=5)
    assert lifetime < dt.timedelta(days=1)


def test_a_leaf_verifies_against_its_ca_and_reports_its_spiffe_id(
    ca: CertificateAuthority,
) -> None:
    cert = ca.issue(user_id("alice")).certificate
    verifier = PolicyBuilder().store(Store([ca.certificate])).build_client_verifier()
    verified = verifier.verify(cert, [])
    names = verified.subjects or []
    assert x509.UniformResourceIdentifier("spiffe://hvac.local/user/alice") in names


def test_a_leaf_of_another_ca_does_not_verify(ca: CertificateAuthority) -> None:
    stranger = CertificateAuthority.create().issue(user_id("mallory")).certificate
    with pytest.raises(VerificationError):
        _verify_client(ca, stranger, dt.datetime.now(dt.UTC))


def test_an_expired_certificate_can_be_made_for_tests_and_does_not_verify(
    ca: CertificateAuthority,
) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    cert = ca.issue(user_id("old"), dt.timedelta(hours=1), not_before=start).certificate
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    _verify_client(ca, cert, start + dt.timedelta(minutes=30))  # it was good while it lasted
    with pytest.raises(VerificationError):
        _verify_client(ca, cert, dt.datetime.now(dt.UTC))


def test_no_leaf_outlives_its_ca() -> None:
    short_ca = CertificateAuthority.create(lifetime=dt.timedelta(hours=2))
    cert = short_ca.issue(service_id("us-east", "gateway"), dt.timedelta(days=3)).certificate
    assert cert.not_valid_after_utc <= short_ca.certificate.not_valid_after_utc


def test_a_non_spiffe_identity_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError):
        ca.issue("https://hvac.local/user/alice")


def test_pki_reissue_writes_a_new_key_and_serial_atomically(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    first = pki.issue("us-east.envoy", envoy_id("us-east"))
    before = x509.load_pem_x509_certificate(first.cert.read_bytes())
    key_before = first.key.read_bytes()
    second = pki.issue("us-east.envoy", envoy_id("us-east"))
    after = x509.load_pem_x509_certificate(second.cert.read_bytes())
    assert second == first
    assert after.serial_number != before.serial_number
    assert second.key.read_bytes() != key_before
    assert first.key.stat().st_mode & 0o077 == 0  # the key is private to its owner
    assert not list((tmp_path / "pki").glob("*.tmp"))


def test_the_ca_is_created_once_and_reused(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    first = pki.authority().certificate
    assert pki.authority().certificate == first
    paths = pki.issue("x", user_id("bob"))
    leaf = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    assert leaf.issuer == first.subject


def test_a_user_certificate_carries_the_role_in_its_subject(tmp_path: Path) -> None:
    paths = Pki(tmp_path / "pki").issue_user("carol", "operator")
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    unit = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in unit] == ["operator"]
    assert spiffe_ids(cert) == ["spiffe://hvac.local/user/carol"]


def test_a_ca_near_its_end_is_replaced_rather_than_issuing_stunted_certificates(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path / "pki")
    old = CertificateAuthority.create(lifetime=dt.timedelta(hours=1))
    old.save(pki.ca_cert, tmp_path / "pki" / "ca.key")
    assert pki.renew_ca_if_ending()
    renewed = pki.authority()
    assert not pki.renew_ca_if_ending()
    assert renewed.certificate.serial_number != old.certificate.serial_number
    assert renewed.certificate.not_valid_after_utc > dt.datetime.now(dt.UTC) + SERVICE_LIFETIME
