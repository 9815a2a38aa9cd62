"""Between HTTP.sys structures and Python values: pure Python over ctypes memory, no DLL calls.

``parse_request`` reads a received HTTP_REQUEST_V2 (and everything it points to, which the
kernel places in the same buffer) into a ``ParsedRequest``. ``ResponseBuffers`` builds an
HTTP_RESPONSE_V2 plus its data chunks from a status, headers and body pieces, and keeps every
buffer it points to alive for as long as the call that uses it. The body bytes are never
copied: each chunk points into the ``bytes`` object the app sent.

Both run on Linux too, where the tests feed them structures laid out by a fake kernel.
"""

from __future__ import annotations

import ctypes
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from tiercel.core.response_cache import response_lifetime
from tiercel.core.status import reason_phrase

from .binding import (
    AF_INET,
    AF_INET6,
    AUTH_TYPE_NAMES,
    HTTP_CACHE_POLICY,
    HTTP_DATA_CHUNK,
    HTTP_KNOWN_HEADER,
    HTTP_MULTIPLE_KNOWN_HEADERS,
    HTTP_REQUEST_AUTH_INFO,
    HTTP_REQUEST_FLAG_HTTP2,
    HTTP_REQUEST_FLAG_MORE_ENTITY_BODY_EXISTS,
    HTTP_REQUEST_INFO,
    HTTP_REQUEST_V2,
    HTTP_RESPONSE_INFO,
    HTTP_RESPONSE_V2,
    HTTP_UNKNOWN_HEADER,
    REQUEST_KNOWN_HEADERS,
    RESPONSE_KNOWN_HEADERS,
    VERBS,
    HttpAuthStatusSuccess,
    HttpCachePolicyTimeToLive,
    HttpDataChunkFromMemory,
    HttpRequestInfoTypeAuth,
    HttpVerbUnknown,
)

Headers = list[tuple[bytes, bytes]]
Address = tuple[str, int]

_RESPONSE_HEADER_IDS = {name: index for index, name in enumerate(RESPONSE_KNOWN_HEADERS)}


@dataclass(frozen=True)
class Authentication:
    """Who HTTP.sys authenticated (kernel-mode Negotiate, NTLM, Basic...)."""

    scheme: str  # "Negotiate", "NTLM", "Basic", "Kerberos", "Digest"
    user: str | None  # DOMAIN\\name, when the token could be resolved
    token: int  # the access token handle (closed once the user name is read)


@dataclass(frozen=True)
class ParsedRequest:
    request_id: int
    connection_id: int
    url_context: int
    method: str
    http_version: str  # "1.1", "1.0", "2"
    scheme: str
    raw_target: bytes
    raw_path: bytes
    path: str  # percent-decoded
    query_string: bytes
    headers: Headers  # lower-case names: known headers first, in HTTP_HEADER_ID order
    remote_address: Address | None
    local_address: Address | None
    body: bytes  # what came with the request (HTTP_RECEIVE_REQUEST_FLAG_COPY_BODY)
    more_body: bool  # HttpReceiveRequestEntityBody has more
    authentication: Authentication | None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        return int(value) if value is not None and value.isdigit() else None


def _bytes(pointer: int | None, length: int) -> bytes:
    return ctypes.string_at(pointer, length) if pointer and length else b""


def _wide(pointer: int | None, byte_length: int) -> str:
    return _bytes(pointer, byte_length).decode("utf-16-le", errors="replace")


def sockaddr(pointer: int | None) -> Address | None:
    """A SOCKADDR_IN / SOCKADDR_IN6 (Windows' AF_INET6 = 23) as (host, port)."""
    if not pointer:
        return None
    family = ctypes.c_uint16.from_address(pointer).value
    port = int.from_bytes(ctypes.string_at(pointer + 2, 2), "big")
    if family == AF_INET:
        return ".".join(str(b) for b in ctypes.string_at(pointer + 4, 4)), port
    if family == AF_INET6:
        raw = ctypes.string_at(pointer + 8, 16)
        return str(ipaddress.IPv6Address(raw)), port
    return None


def _split_target(raw_target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request target; an absolute-form target keeps only its path."""
    target = raw_target
    if not target.startswith(b"/"):
        match = re.match(rb"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?]*", target)
        if match is not None:
            target = target[match.end() :] or b"/"
    path, _, query = target.partition(b"?")
    return path, query


def parse_request(address: int, token_user: object = None) -> ParsedRequest:
    """Read the HTTP_REQUEST_V2 at ``address`` (the start of the receive buffer).

    ``token_user(token) -> str | None`` names the account behind an authenticated request's
    access token (binding.HttpApi.token_user); without it the user stays None.
    """
    request = HTTP_REQUEST_V2.from_address(address)
    if request.Verb == HttpVerbUnknown or request.Verb not in VERBS:
        method = _bytes(request.pUnknownVerb, request.UnknownVerbLength).decode("latin-1")
    else:
        method = VERBS[request.Verb]
    major, minor = request.Version.MajorVersion, request.Version.MinorVersion
    http2 = bool(request.Flags & HTTP_REQUEST_FLAG_HTTP2) or major == 2
    http_version = "2" if http2 else f"{major}.{minor}"
    raw_target = _bytes(request.pRawUrl, request.RawUrlLength)
    raw_path, query = _split_target(raw_target)
    full_url = _wide(request.CookedUrl.pFullUrl, request.CookedUrl.FullUrlLength)
    scheme = "https" if request.pSslInfo or full_url.lower().startswith("https:") else "http"

    headers: Headers = []
    known = request.Headers.KnownHeaders
    for index, name in enumerate(REQUEST_KNOWN_HEADERS):
        header = known[index]
        if header.RawValueLength or header.pRawValue:
            headers.append((name, _bytes(header.pRawValue, header.RawValueLength)))
    if request.Headers.UnknownHeaderCount:
        unknown = (HTTP_UNKNOWN_HEADER * request.Headers.UnknownHeaderCount).from_address(
            request.Headers.pUnknownHeaders
        )
        for header in unknown:
            name = _bytes(header.pName, header.NameLength).lower()
            headers.append((name, _bytes(header.pRawValue, header.RawValueLength)))

    body = b""
    if request.EntityChunkCount:
        chunks = (HTTP_DATA_CHUNK * request.EntityChunkCount).from_address(request.pEntityChunks)
        body = b"".join(
            _bytes(chunk.FromMemory.pBuffer, chunk.FromMemory.BufferLength)
            for chunk in chunks
            if chunk.DataChunkType == HttpDataChunkFromMemory
        )

    return ParsedRequest(
        request_id=request.RequestId,
        connection_id=request.ConnectionId,
        url_context=request.UrlContext,
        method=method,
        http_version=http_version,
        scheme=scheme,
        raw_target=raw_target,
        raw_path=raw_path,
        path=unquote(raw_path.decode("latin-1"), errors="replace"),
        query_string=query,
        headers=headers,
        remote_address=sockaddr(request.Address.pRemoteAddress),
        local_address=sockaddr(request.Address.pLocalAddress),
        body=body,
        more_body=bool(request.Flags & HTTP_REQUEST_FLAG_MORE_ENTITY_BODY_EXISTS),
        authentication=_authentication(request, token_user),
    )


def _authentication(request: HTTP_REQUEST_V2, token_user: object) -> Authentication | None:
    if not request.RequestInfoCount or not request.pRequestInfo:
        return None
    infos = (HTTP_REQUEST_INFO * request.RequestInfoCount).from_address(request.pRequestInfo)
    for info in infos:
        if info.InfoType != HttpRequestInfoTypeAuth or not info.pInfo:
            continue
        auth = HTTP_REQUEST_AUTH_INFO.from_address(info.pInfo)
        if auth.AuthStatus != HttpAuthStatusSuccess or auth.AuthType not in AUTH_TYPE_NAMES:
            return None
        token = auth.AccessToken or 0
        user = token_user(token) if callable(token_user) and token else None
        return Authentication(AUTH_TYPE_NAMES[auth.AuthType], user, token)
    return None


# -- responses ---------------------------------------------------------------------------------


class ResponseBuffers:
    """An HTTP_RESPONSE_V2 and everything it points to, alive as long as this object.

    Known response headers given once go in ``KnownHeaders``; every other header is an unknown
    header, as given.
    """

    def __init__(
        self,
        status: int,
        reason: bytes | None,
        headers: Headers,
        chunks: Sequence[bytes],
        *,
        http_version: tuple[int, int] = (1, 1),
        cache_seconds: int | None = None,
    ) -> None:
        self._keep: list[object] = []
        response = HTTP_RESPONSE_V2()
        response.Version.MajorVersion, response.Version.MinorVersion = http_version
        response.StatusCode = status
        phrase = reason if reason is not None else reason_phrase(status)
        response.ReasonLength = len(phrase)
        response.pReason = self._pointer(phrase)

        # A known header given more than once goes, every value, among the unknown headers
        # (as Katana did): Windows and Wine both send those verbatim, while Wine ignores the
        # HTTP_MULTIPLE_KNOWN_HEADERS response info.
        counts: dict[int, int] = {}
        for name, _ in headers:
            header_id = _RESPONSE_HEADER_IDS.get(name.lower())
            if header_id is not None:
                counts[header_id] = counts.get(header_id, 0) + 1
        unknown: Headers = []
        for name, value in headers:
            header_id = _RESPONSE_HEADER_IDS.get(name.lower())
            if header_id is None or counts[header_id] > 1:
                unknown.append((name, value))
                continue
            slot = response.Headers.KnownHeaders[header_id]
            slot.RawValueLength = len(value)
            slot.pRawValue = self._pointer(value) if value else self._pointer(b"\0")
        if unknown:
            array = (HTTP_UNKNOWN_HEADER * len(unknown))()
            for item, (name, value) in zip(array, unknown, strict=True):
                item.NameLength, item.pName = len(name), self._pointer(name)
                item.RawValueLength, item.pRawValue = len(value), self._pointer(value)
            self._keep.append(array)
            response.Headers.UnknownHeaderCount = len(unknown)
            response.Headers.pUnknownHeaders = ctypes.addressof(array)
        self.chunk_count, self.chunks_address = self.add_chunks(chunks)
        response.EntityChunkCount = self.chunk_count
        response.pEntityChunks = self.chunks_address
        self.response = response
        self.cache_policy: HTTP_CACHE_POLICY | None = None
        if cache_seconds:
            self.cache_policy = HTTP_CACHE_POLICY(HttpCachePolicyTimeToLive, cache_seconds)

    def _pointer(self, data: bytes) -> int:
        """The address of ``data``'s own bytes (no copy); kept alive with this object."""
        self._keep.append(data)
        return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0

    def add_chunks(self, chunks: Sequence[bytes]) -> tuple[int, int]:
        """An HTTP_DATA_CHUNK array over ``chunks``: (count, address), 0 for none."""
        pieces = [chunk for chunk in chunks if chunk]
        if not pieces:
            return 0, 0
        array = (HTTP_DATA_CHUNK * len(pieces))()
        for item, piece in zip(array, pieces, strict=True):
            item.DataChunkType = HttpDataChunkFromMemory
            item.FromMemory.pBuffer = self._pointer(piece)
            item.FromMemory.BufferLength = len(piece)
        self._keep.append(array)
        return len(pieces), ctypes.addressof(array)

    @property
    def address(self) -> int:
        return ctypes.addressof(self.response)

    @property
    def cache_policy_address(self) -> int | None:
        return ctypes.addressof(self.cache_policy) if self.cache_policy is not None else None


class EntityChunks(ResponseBuffers):
    """Only data chunks, for HttpSendResponseEntityBody."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._keep = []
        self.chunk_count, self.chunks_address = self.add_chunks(chunks)


def read_response(address: int) -> tuple[int, bytes, Headers, bytes]:
    """Decode an HTTP_RESPONSE_V2 back into (status, reason, headers, body): what HTTP.sys
    would send. For tests and for debugging a response that came out wrong."""
    response = HTTP_RESPONSE_V2.from_address(address)
    reason = _bytes(response.pReason, response.ReasonLength)
    headers: Headers = []
    for index, name in enumerate(RESPONSE_KNOWN_HEADERS):
        slot = response.Headers.KnownHeaders[index]
        if slot.pRawValue:
            headers.append((name, _bytes(slot.pRawValue, slot.RawValueLength)))
    if response.ResponseInfoCount:
        infos = (HTTP_RESPONSE_INFO * response.ResponseInfoCount).from_address(
            response.pResponseInfo
        )
        for info in infos:
            multiple = HTTP_MULTIPLE_KNOWN_HEADERS.from_address(info.pInfo)
            known = (HTTP_KNOWN_HEADER * multiple.KnownHeaderCount).from_address(
                multiple.KnownHeaders
            )
            name = RESPONSE_KNOWN_HEADERS[multiple.HeaderId]
            headers += [(name, _bytes(k.pRawValue, k.RawValueLength)) for k in known]
    if response.Headers.UnknownHeaderCount:
        unknown = (HTTP_UNKNOWN_HEADER * response.Headers.UnknownHeaderCount).from_address(
            response.Headers.pUnknownHeaders
        )
        headers += [
            (_bytes(h.pName, h.NameLength), _bytes(h.pRawValue, h.RawValueLength)) for h in unknown
        ]
    body = read_chunks(response.EntityChunkCount, response.pEntityChunks)
    return response.StatusCode, reason, headers, body


def read_chunks(count: int, address: int | None) -> bytes:
    if not count or not address:
        return b""
    chunks = (HTTP_DATA_CHUNK * count).from_address(address)
    return b"".join(_bytes(c.FromMemory.pBuffer, c.FromMemory.BufferLength) for c in chunks)


# -- framing and caching rules -----------------------------------------------------------------


def kernel_cache_seconds(
    method: str, status: int, headers: Headers, wall_time: float
) -> int | None:
    """How long HTTP.sys's kernel cache may keep this response, or None: never.

    The kernel cache's rules, which the engine's response cache follows too
    (``response_lifetime`` in core/response_cache.py): GET only, 200, ``Cache-Control: public``
    with ``s-maxage`` or ``max-age`` (s-maxage wins), or an ``Expires`` date (against the
    response's ``Date``, else ``wall_time``); and no ``Set-Cookie``, ``Vary`` or ``Pragma``.
    The kernel takes whole seconds.
    """
    if method != "GET" or status != 200:
        return None
    lifetime = response_lifetime(headers, wall_time)
    seconds = int(lifetime) if lifetime is not None else 0
    return seconds if seconds > 0 else None
