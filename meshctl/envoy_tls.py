"""Envoy TLS pieces: file-watched SDS secrets and the mTLS contexts built on them.

Certificates reach Envoy through SDS from files (``path_config_source`` with a watched
directory), and each ``TlsCertificate`` also watches the PKI directory: re-issuing a certificate
(``meshctl.pki`` renames new files into place) makes Envoy load it without a restart.
"""

from __future__ import annotations

import json
from pathlib import Path

from betterproto2 import Casing
from envoy_data_plane.envoy.config.core.v3 import (
    ApiVersion,
    ConfigSource,
    DataSource,
    PathConfigSource,
    TransportSocket,
    WatchedDirectory,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    DownstreamTlsContext,
    SdsSecretConfig,
    Secret,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    TlsCertificate,
    TlsParameters,
    TlsParametersTlsProtocol,
    UpstreamTlsContext,
)
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.google.protobuf import Any as AnyProto

from meshctl.pki import CertPaths

_TLS_TYPE = "envoy.transport_sockets.tls"


def secret_file(sds_dir: Path, name: str) -> Path:
    """The SDS file holding the secret ``name``."""
    return sds_dir / f"{name}.json"


def sds_document(name: str, paths: CertPaths) -> str:
    """The SDS file content (a ``DiscoveryResponse``) for one certificate and key."""
    secret = Secret(
        name=name,
        tls_certificate=TlsCertificate(
            certificate_chain=DataSource(filename=str(paths.cert)),
            private_key=DataSource(filename=str(paths.key)),
            # Reload both files when anything is renamed into the PKI directory.
            watched_directory=WatchedDirectory(path=str(paths.cert.parent)),
        ),
    )
    response = DiscoveryResponse(
        version_info="1",
        type_url="type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        resources=[AnyProto.pack(secret)],
    )
    return json.dumps(response.to_dict(casing=Casing.SNAKE), indent=1)


def sds_config(sds_dir: Path, name: str) -> SdsSecretConfig:
    """A reference to the secret ``name``, read from its file in ``sds_dir`` and watched."""
    return SdsSecretConfig(
        name=name,
        sds_config=ConfigSource(
            path_config_source=PathConfigSource(
                path=str(secret_file(sds_dir, name)),
                watched_directory=WatchedDirectory(path=str(sds_dir)),
            ),
            resource_api_version=ApiVersion.V3,
        ),
    )


def _tls_parameters() -> TlsParameters:
    return TlsParameters(
        tls_minimum_protocol_version=TlsParametersTlsProtocol.TLSv1_2,
        tls_maximum_protocol_version=TlsParametersTlsProtocol.TLSv1_3,
    )


def _uri_matcher(matcher: StringMatcher) -> SubjectAltNameMatcher:
    return SubjectAltNameMatcher(san_type=SubjectAltNameMatcherSanType.URI, matcher=matcher)


def downstream_mtls(
    sds_dir: Path, secret: str, ca_file: Path, peers: list[StringMatcher]
) -> TransportSocket:
    """Server side: TLS 1.2+, ``h2``, a client certificate from ``ca_file`` whose URI SAN
    matches one of ``peers`` is required; anything else fails the handshake."""
    context = DownstreamTlsContext(
        require_client_certificate=True,
        common_tls_context=CommonTlsContext(
            tls_params=_tls_parameters(),
            alpn_protocols=["h2"],
            tls_certificate_sds_secret_configs=[sds_config(sds_dir, secret)],
            validation_context=CertificateValidationContext(
                trusted_ca=DataSource(filename=str(ca_file)),
                match_typed_subject_alt_names=[_uri_matcher(m) for m in peers],
            ),
        ),
    )
    return TransportSocket(name=_TLS_TYPE, typed_config=AnyProto.pack(context))


def upstream_mtls(
    sds_dir: Path, secret: str, ca_file: Path, server_id: str, sni: str
) -> TransportSocket:
    """Client side: present ``secret``, accept only a server whose URI SAN is ``server_id``."""
    context = UpstreamTlsContext(
        sni=sni,
        common_tls_context=CommonTlsContext(
            tls_params=_tls_parameters(),
            alpn_protocols=["h2"],
            tls_certificate_sds_secret_configs=[sds_config(sds_dir, secret)],
            validation_context=CertificateValidationContext(
                trusted_ca=DataSource(filename=str(ca_file)),
                match_typed_subject_alt_names=[_uri_matcher(StringMatcher(exact=server_id))],
            ),
        ),
    )
    return TransportSocket(name=_TLS_TYPE, typed_config=AnyProto.pack(context))
