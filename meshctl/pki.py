"""The mesh's local certificate authority: ECDSA P-256 keys, SPIFFE IDs in URI SANs.

Every identity in the mesh is a SPIFFE ID in the single URI SAN of an X.509 certificate
(an X.509-SVID):

- a service instance: ``spiffe://hvac.local/region/<region>/svc/<name>``;
- a region's Envoy: ``spiffe://hvac.local/region/<region>/envoy``;
- an edge device: ``spiffe://hvac.local/device/<building>/<device>``;
- a person: ``spiffe://hvac.local/user/<name>`` (their role in the subject's OU).

Leaf certificates live hours, not years: re-issuing is cheap and Envoy picks new files up
without a restart (see ``meshctl.envoy_config``). Files are written atomically (temporary
file, then rename), so a reader never sees half a certificate or a key that does not match
its certificate once both have been replaced; ``Pki`` lays the files out in a state directory.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "hvac.local"
CA_LIFETIME = dt.timedelta(days=30)
SERVICE_LIFETIME = dt.timedelta(hours=12)
USER_LIFETIME = dt.timedelta(hours=12)
DEVICE_LIFETIME = dt.timedelta(hours=24)
# Certificates are dated a little in the past so that small clock skew does not reject them.
_BACKDATE = dt.timedelta(minutes=5)
_SEGMENT = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# Names Envoy's server certificate answers to: one per service virtual host, and loopback.
MESH_DNS_NAMES = (f"*.{TRUST_DOMAIN}", TRUST_DOMAIN, "localhost")


def _segment(kind: str, value: str) -> str:
    if not _SEGMENT.fullmatch(value):
        raise ValueError(f"{kind} {value!r} must match {_SEGMENT.pattern}")
    return value


def service_id(region: str, service: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """SPIFFE ID of ``service`` running in ``region``."""
    region, service = _segment("region", region), _segment("service", service)
    return f"spiffe://{trust_domain}/region/{region}/svc/{service}"


def envoy_id(region: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """SPIFFE ID of the Envoy of ``region``."""
    return f"spiffe://{trust_domain}/region/{_segment('region', region)}/envoy"


def device_id(building: str, device: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """SPIFFE ID of an edge device of ``building``."""
    building, device = _segment("building", building), _segment("device", device)
    return f"spiffe://{trust_domain}/device/{building}/{device}"


def user_id(name: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """SPIFFE ID of a person."""
    return f"spiffe://{trust_domain}/user/{_segment('user', name)}"


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    spiffe_id: str
    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both files atomically; the key is readable by its owner only."""
        atomic_write(key_path, self.key_pem, mode=0o600)
        atomic_write(cert_path, self.cert_pem, mode=0o644)


class CertificateAuthority:
    """A self-signed CA that signs X.509-SVIDs for one trust domain."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self.certificate = certificate

    @classmethod
    def create(
        cls,
        trust_domain: str = TRUST_DOMAIN,
        lifetime: dt.timedelta = CA_LIFETIME,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """A new CA with a fresh P-256 key; it may sign leaf certificates only (path length 0)."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = (now or _now()) - _BACKDATE
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} mesh CA"),
            ]
        )
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC private key")
        return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))

    def save(self, cert_path: Path, key_path: Path) -> None:
        atomic_write(key_path, _key_pem(self._key), mode=0o600)
        atomic_write(cert_path, self.cert_pem, mode=0o644)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        spiffe_id: str,
        lifetime: dt.timedelta = SERVICE_LIFETIME,
        *,
        dns_names: tuple[str, ...] = (),
        organizational_unit: str | None = None,
        not_before: dt.datetime | None = None,
    ) -> Issued:
        """A leaf certificate for ``spiffe_id`` valid from ``not_before`` for ``lifetime``.

        The certificate is good for both TLS server and client authentication (every mesh
        identity may be either), carries exactly one URI SAN, and is never valid past the CA.
        ``not_before`` in the past with a short ``lifetime`` makes an expired certificate
        (tests use that).
        """
        if not spiffe_id.startswith("spiffe://"):
            raise ValueError(f"not a SPIFFE ID: {spiffe_id!r}")
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before if not_before is not None else _now() - _BACKDATE
        end = min(start + lifetime, self.certificate.not_valid_after_utc)
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, self._trust_domain())]
        if organizational_unit:
            attributes.append(
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit)
            )
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id.split("/", 3)[3]))
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(name) for name in dns_names]
        ca_key_id = x509.SubjectKeyIdentifier.from_public_key(self.certificate.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), False
            )
            .sign(self._key, hashes.SHA256())
        )
        return Issued(
            spiffe_id, certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)
        )

    def _trust_domain(self) -> str:
        values = self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(values[0].value) if values else TRUST_DOMAIN


def spiffe_ids(certificate: x509.Certificate) -> list[str]:
    """The ``spiffe://`` URI SANs of ``certificate``."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return [uri for uri in uris if uri.startswith("spiffe://")]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class CertPaths:
    """Where one identity's certificate and key live."""

    cert: Path
    key: Path


class Pki:
    """The CA and the issued certificates of one state directory (``<state>/pki``).

    ``ca.pem`` is the trust bundle every party uses; ``<name>.pem``/``<name>.key`` hold the
    identity called ``name`` (``us-east.envoy``, ``us-east.svc.optimizer``, ``user.admin``).
    """

    def __init__(self, root: Path, trust_domain: str = TRUST_DOMAIN) -> None:
        self.root = root
        self.trust_domain = trust_domain

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def _ca_key(self) -> Path:
        return self.root / "ca.key"

    def authority(self) -> CertificateAuthority:
        """The CA, created on first use and loaded afterwards."""
        if self.ca_cert.exists() and self._ca_key.exists():
            return CertificateAuthority.load(self.ca_cert, self._ca_key)
        ca = CertificateAuthority.create(self.trust_domain)
        ca.save(self.ca_cert, self._ca_key)
        return ca

    def renew_ca_if_ending(self) -> bool:
        """Replace a CA that could no longer cover a full service certificate lifetime (call it
        before anything trusts the CA: running Envoys keep the CA they started with)."""
        ca = self.authority()
        if ca.certificate.not_valid_after_utc > _now() + SERVICE_LIFETIME:
            return False
        CertificateAuthority.create(self.trust_domain).save(self.ca_cert, self._ca_key)
        return True

    def paths(self, name: str) -> CertPaths:
        return CertPaths(self.root / f"{name}.pem", self.root / f"{name}.key")

    def issue(
        self,
        name: str,
        spiffe_id: str,
        lifetime: dt.timedelta = SERVICE_LIFETIME,
        *,
        dns_names: tuple[str, ...] = (),
        organizational_unit: str | None = None,
    ) -> CertPaths:
        """Issue (or re-issue: a new key and serial) the identity ``name``; its file paths."""
        issued = self.authority().issue(
            spiffe_id,
            lifetime,
            dns_names=dns_names,
            organizational_unit=organizational_unit,
        )
        paths = self.paths(name)
        issued.write(paths.cert, paths.key)
        return paths

    def issue_user(self, name: str, role: str) -> CertPaths:
        """A person's certificate; ``role`` (viewer, operator, admin, auditor) goes in the OU."""
        return self.issue(
            f"user.{name}",
            user_id(name, self.trust_domain),
            USER_LIFETIME,
            organizational_unit=_segment("role", role),
        )
