"""Certificates for https:// endpoints: loading, SNI selection, client certificates, reload.

The engine takes a ready ``ssl.SSLContext``; building one reads files, so it happens here.
Contexts follow Kestrel and RFC 7540 section 9.2: TLS 1.2 at least, no compression, no
renegotiation, and only AEAD ciphers with forward secrecy for TLS 1.2 (the HTTP/2 "blacklist"
then cannot be negotiated). TLS 1.3 suites are all allowed.

SNI picks a certificate by the name the client asked for: the exact name, then the longest
matching ``*.example.com`` wildcard, then the default. ``CertificateStore.reload()`` rebuilds
every context from the files; connections already open keep theirs, new ones get the new ones.
A reload that fails leaves the old certificates in place and says why.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass, field

from tiercel.core.errors import ConfigError
from tiercel.core.tls import remember_server_name

log = logging.getLogger("tiercel.error")

# ECDHE/DHE key exchange with AES-GCM or ChaCha20-Poly1305: nothing on RFC 7540 Appendix A.
H2_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
CLIENT_CERT_MODES = ("none", "allow", "require")


@dataclass(frozen=True)
class CertificateFiles:
    certfile: str
    keyfile: str | None = None
    password: str | None = None

    def mtimes(self) -> tuple[float, ...]:
        paths = [self.certfile] + ([self.keyfile] if self.keyfile else [])
        return tuple(os.stat(p).st_mtime if os.path.exists(p) else 0.0 for p in paths)


@dataclass(frozen=True)
class TlsOptions:
    default: CertificateFiles
    sni: dict[str, CertificateFiles] = field(default_factory=dict)
    client_certificate_mode: str = "none"
    ca_certs: str | None = None
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.client_certificate_mode not in CLIENT_CERT_MODES:
            raise ConfigError(
                f"client certificate mode must be one of {', '.join(CLIENT_CERT_MODES)} "
                f"(got {self.client_certificate_mode!r})"
            )
        if not self.handshake_timeout > 0:
            raise ConfigError(
                f"the TLS handshake timeout must be > 0 seconds (got {self.handshake_timeout})"
            )


def build_context(files: CertificateFiles, options: TlsOptions, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(H2_TLS12_CIPHERS)
    for path in (files.certfile, files.keyfile):
        if path and not os.path.isfile(path):
            raise ConfigError(f"certificate file {path!r} does not exist")
    try:
        context.load_cert_chain(files.certfile, files.keyfile, files.password)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"cannot load the certificate {files.certfile!r}"
            + (f" with key {files.keyfile!r}" if files.keyfile else "")
            + f": {exc.reason or exc} (is it PEM, does the key match, is the password right?)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read certificate files: {exc}") from None
    mode = options.client_certificate_mode
    if mode != "none":
        context.verify_mode = ssl.CERT_OPTIONAL if mode == "allow" else ssl.CERT_REQUIRED
        try:
            if options.ca_certs:
                context.load_verify_locations(options.ca_certs)
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load the client CA certificates: {exc}") from None
    context.set_alpn_protocols(alpn)
    return context


class CertificateStore:
    """The live set of contexts for one https endpoint."""

    def __init__(self, options: TlsOptions, alpn: list[str]) -> None:
        self.options = options
        self.alpn = alpn
        self.default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._mtimes: tuple[float, ...] = ()
        self._build()

    def _all_files(self) -> list[CertificateFiles]:
        return [self.options.default, *self.options.sni.values()]

    def _build(self) -> None:
        # Read the times before the files: a file replaced while it is being loaded then
        # still counts as changed, and the next poll loads it again.
        mtimes = tuple(t for f in self._all_files() for t in f.mtimes())
        default = build_context(self.options.default, self.options, self.alpn)
        by_name = {
            name.lower(): build_context(files, self.options, self.alpn)
            for name, files in self.options.sni.items()
        }
        default.sni_callback = self._select
        self.default, self._by_name = default, by_name
        self._mtimes = mtimes

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower()
            exact = self._by_name.get(name)
            if exact is not None:
                return exact
            best: tuple[int, ssl.SSLContext] | None = None
            for pattern, context in self._by_name.items():
                wildcard = pattern.startswith("*.") and name.endswith(pattern[1:])
                # "*.example.com" covers "a.example.com", not "example.com" itself.
                if wildcard and name != pattern[2:] and (best is None or len(pattern) > best[0]):
                    best = (len(pattern), context)
            if best is not None:
                return best[1]
        return self.default

    def _select(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        remember_server_name(ssl_object, server_name)
        chosen = self.context_for(server_name)
        if chosen is not ssl_object.context:
            ssl_object.context = chosen

    def reload(self) -> bool:
        """Rebuild from the files. False (and the old certificates stay) when that fails."""
        try:
            self._build()
        except ConfigError as exc:
            log.error("certificate reload failed, keeping the old certificates: %s", exc)
            return False
        log.info("certificates reloaded")
        return True

    def changed_on_disk(self) -> bool:
        return tuple(t for f in self._all_files() for t in f.mtimes()) != self._mtimes
