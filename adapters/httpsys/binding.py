"""ctypes declarations of httpapi.dll's HTTP Server API 2.0, and the few kernel32/advapi32 calls
the adapter needs around it (an I/O completion port, cancellation, the user behind a token).

Only declarations and thin call wrappers live here; what the adapter does with them is in
``adapter.py``, and the translation between these structures and Python values in
``marshal.py``. Every integer type is spelled with its exact width (``ULONG`` is 32 bits on
Windows but ``c_ulong`` is 64 on Linux), so the structures have the Windows x64 layout on any
64-bit platform: the marshalling is unit-tested on Linux with structures built by a fake kernel.

Loading the DLLs is deferred to ``HttpApi.load()``, which raises ``HttpApiUnavailable`` (a
ConfigError: one line, no traceback) where there is no httpapi.dll.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import (
    POINTER,
    Structure,
    Union,
    byref,
    c_int32,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
    c_wchar_p,
    sizeof,
)
from typing import Any

from tiercel.core.errors import ConfigError

ULONG = c_uint32
USHORT = c_uint16
ULONGLONG = c_uint64
HANDLE = c_void_p
PVOID = c_void_p
PCSTR = c_void_p  # read with ctypes.string_at(pointer, length)
PCWSTR = c_void_p  # UTF-16-LE, read with string_at(pointer, byte_length)
BOOLEAN = c_uint8

# -- constants ---------------------------------------------------------------------------------

HTTPAPI_VERSION_2 = (2, 0)
HTTP_INITIALIZE_SERVER = 0x1

HTTP_CREATE_REQUEST_QUEUE_FLAG_OPEN_EXISTING = 0x1
HTTP_CREATE_REQUEST_QUEUE_FLAG_CONTROLLER = 0x2

HTTP_RECEIVE_REQUEST_FLAG_COPY_BODY = 0x1
HTTP_RECEIVE_REQUEST_ENTITY_BODY_FLAG_FILL_BUFFER = 0x1

HTTP_SEND_RESPONSE_FLAG_DISCONNECT = 0x1
HTTP_SEND_RESPONSE_FLAG_MORE_DATA = 0x2
HTTP_SEND_RESPONSE_FLAG_BUFFER_DATA = 0x4

HTTP_REQUEST_FLAG_MORE_ENTITY_BODY_EXISTS = 0x1
HTTP_REQUEST_FLAG_HTTP2 = 0x4

# HTTP_SERVER_PROPERTY
HttpServerAuthenticationProperty = 0
HttpServerQosProperty = 2
HttpServerQueueLengthProperty = 4
HttpServer503VerbosityProperty = 6
HttpServerBindingProperty = 7

# HTTP_QOS_SETTING_TYPE
HttpQosSettingTypeConnectionLimit = 1

# HTTP_AUTH_ENABLE_* (AuthSchemes) and HTTP_REQUEST_AUTH_TYPE
HTTP_AUTH_ENABLE_BASIC = 0x1
HTTP_AUTH_ENABLE_NTLM = 0x4
HTTP_AUTH_ENABLE_NEGOTIATE = 0x8
HTTP_AUTH_ENABLE_KERBEROS = 0x10
AUTH_TYPE_NAMES = {1: "Basic", 2: "Digest", 3: "NTLM", 4: "Negotiate", 5: "Kerberos"}
HttpAuthStatusSuccess = 0
HttpRequestInfoTypeAuth = 0
HttpResponseInfoTypeMultipleKnownHeaders = 0

# HTTP_DATA_CHUNK_TYPE
HttpDataChunkFromMemory = 0

# HTTP_CACHE_POLICY_TYPE
HttpCachePolicyNocache = 0
HttpCachePolicyTimeToLive = 2

# Win32 error codes the adapter tells apart.
NO_ERROR = 0
ERROR_ACCESS_DENIED = 5
ERROR_SHARING_VIOLATION = 32
ERROR_HANDLE_EOF = 38
ERROR_INVALID_PARAMETER = 87
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_ALREADY_EXISTS = 183
ERROR_MORE_DATA = 234
ERROR_OPERATION_ABORTED = 995
ERROR_IO_PENDING = 997
ERROR_CONNECTION_INVALID = 1229
ERROR_NOT_FOUND = 1168

INFINITE = 0xFFFFFFFF

# HTTP_HEADER_ID: the request's known headers, by index.
REQUEST_KNOWN_HEADERS: tuple[bytes, ...] = (
    b"cache-control", b"connection", b"date", b"keep-alive", b"pragma", b"trailer",
    b"transfer-encoding", b"upgrade", b"via", b"warning", b"allow", b"content-length",
    b"content-type", b"content-encoding", b"content-language", b"content-location",
    b"content-md5", b"content-range", b"expires", b"last-modified", b"accept",
    b"accept-charset", b"accept-encoding", b"accept-language", b"authorization", b"cookie",
    b"expect", b"from", b"host", b"if-match", b"if-modified-since", b"if-none-match",
    b"if-range", b"if-unmodified-since", b"max-forwards", b"proxy-authorization", b"referer",
    b"range", b"te", b"translate", b"user-agent",
)  # fmt: skip
# The response's known headers: the first 20 are shared with the request.
RESPONSE_KNOWN_HEADERS: tuple[bytes, ...] = (
    *REQUEST_KNOWN_HEADERS[:20],
    b"accept-ranges", b"age", b"etag", b"location", b"proxy-authenticate", b"retry-after",
    b"server", b"set-cookie", b"vary", b"www-authenticate",
)  # fmt: skip
HttpHeaderRequestMaximum = len(REQUEST_KNOWN_HEADERS)  # 41
HttpHeaderResponseMaximum = len(RESPONSE_KNOWN_HEADERS)  # 30

# HTTP_VERB: the parsed verbs, by value (HttpVerbUnknown = 1 means "see pUnknownVerb").
VERBS = {
    3: "OPTIONS", 4: "GET", 5: "HEAD", 6: "POST", 7: "PUT", 8: "DELETE", 9: "TRACE",
    10: "CONNECT", 11: "TRACK", 12: "MOVE", 13: "COPY", 14: "PROPFIND", 15: "PROPPATCH",
    16: "MKCOL", 17: "LOCK", 18: "UNLOCK", 19: "SEARCH",
}  # fmt: skip
HttpVerbUnknown = 1

AF_INET = 2
AF_INET6 = 23  # Windows' value, not Linux's 10

# -- structures --------------------------------------------------------------------------------


class HTTPAPI_VERSION(Structure):
    _fields_ = (("HttpApiMajorVersion", USHORT), ("HttpApiMinorVersion", USHORT))


class HTTP_VERSION(Structure):
    _fields_ = (("MajorVersion", USHORT), ("MinorVersion", USHORT))


class HTTP_COOKED_URL(Structure):
    _fields_ = (
        ("FullUrlLength", USHORT),  # in bytes, without the terminating NUL
        ("HostLength", USHORT),
        ("AbsPathLength", USHORT),
        ("QueryStringLength", USHORT),
        ("pFullUrl", PCWSTR),
        ("pHost", PCWSTR),
        ("pAbsPath", PCWSTR),
        ("pQueryString", PCWSTR),
    )


class HTTP_TRANSPORT_ADDRESS(Structure):
    _fields_ = (("pRemoteAddress", PVOID), ("pLocalAddress", PVOID))


class HTTP_KNOWN_HEADER(Structure):
    _fields_ = (("RawValueLength", USHORT), ("pRawValue", PCSTR))


class HTTP_UNKNOWN_HEADER(Structure):
    _fields_ = (
        ("NameLength", USHORT),
        ("RawValueLength", USHORT),
        ("pName", PCSTR),
        ("pRawValue", PCSTR),
    )


class HTTP_REQUEST_HEADERS(Structure):
    _fields_ = (
        ("UnknownHeaderCount", USHORT),
        ("pUnknownHeaders", PVOID),  # HTTP_UNKNOWN_HEADER[UnknownHeaderCount]
        ("TrailerCount", USHORT),
        ("pTrailers", PVOID),
        ("KnownHeaders", HTTP_KNOWN_HEADER * HttpHeaderRequestMaximum),
    )


class HTTP_RESPONSE_HEADERS(Structure):
    _fields_ = (
        ("UnknownHeaderCount", USHORT),
        ("pUnknownHeaders", PVOID),
        ("TrailerCount", USHORT),
        ("pTrailers", PVOID),
        ("KnownHeaders", HTTP_KNOWN_HEADER * HttpHeaderResponseMaximum),
    )


class _FROM_MEMORY(Structure):
    _fields_ = (("pBuffer", PVOID), ("BufferLength", ULONG))


class HTTP_BYTE_RANGE(Structure):
    _fields_ = (("StartingOffset", ULONGLONG), ("Length", ULONGLONG))


class _FROM_FILE_HANDLE(Structure):
    _fields_ = (("ByteRange", HTTP_BYTE_RANGE), ("FileHandle", HANDLE))


class _DATA_CHUNK_UNION(Union):
    _fields_ = (("FromMemory", _FROM_MEMORY), ("FromFileHandle", _FROM_FILE_HANDLE))


class HTTP_DATA_CHUNK(Structure):
    _anonymous_ = ("u",)
    _fields_ = (("DataChunkType", c_int32), ("u", _DATA_CHUNK_UNION))


class HTTP_REQUEST_INFO(Structure):
    _fields_ = (("InfoType", c_int32), ("InfoLength", ULONG), ("pInfo", PVOID))


class HTTP_REQUEST_AUTH_INFO(Structure):
    _fields_ = (
        ("AuthStatus", c_int32),
        ("SecStatus", c_int32),
        ("Flags", ULONG),
        ("AuthType", c_int32),
        ("AccessToken", HANDLE),
        ("ContextAttributes", ULONG),
        ("PackedContextLength", ULONG),
        ("PackedContextType", ULONG),
        ("PackedContext", PVOID),
        ("MutualAuthDataLength", ULONG),
        ("pMutualAuthData", PVOID),
        ("PackageNameLength", USHORT),
        ("pPackageName", PCWSTR),
    )


class HTTP_REQUEST_V2(Structure):
    _fields_ = (
        ("Flags", ULONG),
        ("ConnectionId", ULONGLONG),
        ("RequestId", ULONGLONG),
        ("UrlContext", ULONGLONG),
        ("Version", HTTP_VERSION),
        ("Verb", c_int32),
        ("UnknownVerbLength", USHORT),
        ("RawUrlLength", USHORT),
        ("pUnknownVerb", PCSTR),
        ("pRawUrl", PCSTR),
        ("CookedUrl", HTTP_COOKED_URL),
        ("Address", HTTP_TRANSPORT_ADDRESS),
        ("Headers", HTTP_REQUEST_HEADERS),
        ("BytesReceived", ULONGLONG),
        ("EntityChunkCount", USHORT),
        ("pEntityChunks", PVOID),  # HTTP_DATA_CHUNK[EntityChunkCount]
        ("RawConnectionId", ULONGLONG),
        ("pSslInfo", PVOID),
        # V2 additions
        ("RequestInfoCount", USHORT),
        ("pRequestInfo", PVOID),  # HTTP_REQUEST_INFO[RequestInfoCount]
    )


class HTTP_MULTIPLE_KNOWN_HEADERS(Structure):
    _fields_ = (
        ("HeaderId", c_int32),
        ("Flags", ULONG),
        ("KnownHeaderCount", USHORT),
        ("KnownHeaders", PVOID),  # HTTP_KNOWN_HEADER[KnownHeaderCount]
    )


class HTTP_RESPONSE_INFO(Structure):
    _fields_ = (("Type", c_int32), ("Length", ULONG), ("pInfo", PVOID))


class HTTP_RESPONSE_V2(Structure):
    _fields_ = (
        ("Flags", ULONG),
        ("Version", HTTP_VERSION),
        ("StatusCode", USHORT),
        ("ReasonLength", USHORT),
        ("pReason", PCSTR),
        ("Headers", HTTP_RESPONSE_HEADERS),
        ("EntityChunkCount", USHORT),
        ("pEntityChunks", PVOID),
        # V2 additions
        ("ResponseInfoCount", USHORT),
        ("pResponseInfo", PVOID),
    )


class HTTP_CACHE_POLICY(Structure):
    _fields_ = (("Policy", c_int32), ("SecondsToLive", ULONG))


class HTTP_PROPERTY_FLAGS(Structure):
    _fields_ = (("Present", ULONG),)


class HTTP_BINDING_INFO(Structure):
    _fields_ = (("Flags", HTTP_PROPERTY_FLAGS), ("RequestQueueHandle", HANDLE))


class HTTP_QOS_SETTING_INFO(Structure):
    _fields_ = (("QosType", c_int32), ("QosSetting", PVOID))


class HTTP_CONNECTION_LIMIT_INFO(Structure):
    _fields_ = (("Flags", HTTP_PROPERTY_FLAGS), ("MaxConnections", ULONG))


class HTTP_SERVER_AUTHENTICATION_DIGEST_PARAMS(Structure):
    _fields_ = (
        ("DomainNameLength", USHORT),
        ("DomainName", PVOID),
        ("RealmLength", USHORT),
        ("Realm", PVOID),
    )


class HTTP_SERVER_AUTHENTICATION_BASIC_PARAMS(Structure):
    _fields_ = (("RealmLength", USHORT), ("Realm", PVOID))


class HTTP_SERVER_AUTHENTICATION_INFO(Structure):
    _fields_ = (
        ("Flags", HTTP_PROPERTY_FLAGS),
        ("AuthSchemes", ULONG),
        ("ReceiveMutualAuth", BOOLEAN),
        ("ReceiveContextHandle", BOOLEAN),
        ("DisableNTLMCredentialCaching", BOOLEAN),
        ("ExFlags", c_uint8),
        ("DigestParams", HTTP_SERVER_AUTHENTICATION_DIGEST_PARAMS),
        ("BasicParams", HTTP_SERVER_AUTHENTICATION_BASIC_PARAMS),
    )


class OVERLAPPED(Structure):
    _fields_ = (
        ("Internal", c_uint64),
        ("InternalHigh", c_uint64),
        ("Offset", ULONG),
        ("OffsetHigh", ULONG),
        ("hEvent", HANDLE),
    )


# Sizes seen working against Wine's and Windows' httpapi.dll (x64).
EXPECTED_SIZES = {
    "HTTP_REQUEST_V2": (HTTP_REQUEST_V2, 864),
    "HTTP_RESPONSE_V2": (HTTP_RESPONSE_V2, 568),
    "HTTP_DATA_CHUNK": (HTTP_DATA_CHUNK, 32),
    "HTTP_UNKNOWN_HEADER": (HTTP_UNKNOWN_HEADER, 24),
    "HTTP_REQUEST_AUTH_INFO": (HTTP_REQUEST_AUTH_INFO, 80),
    "OVERLAPPED": (OVERLAPPED, 32),
}


def layout_problems() -> list[str]:
    """Structures whose size differs from the x64 layout (empty on a 64-bit platform)."""
    return [
        f"{name} is {sizeof(struct)} bytes, expected {size}"
        for name, (struct, size) in EXPECTED_SIZES.items()
        if sizeof(struct) != size
    ]


# -- loading -----------------------------------------------------------------------------------


class HttpApiUnavailable(ConfigError):
    """There is no httpapi.dll here (not Windows), or it lacks the HTTP Server API 2.0."""


class HttpApiError(OSError):
    """An HTTP Server API call failed; ``winerror`` is its Win32 error code."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(code, f"{call} failed with Win32 error {code} ({_describe(code)})")
        self.call = call
        self.code = code


def _describe(code: int) -> str:
    known = {
        ERROR_ACCESS_DENIED: "access denied: reserve the URL with netsh http add urlacl, "
        "or run as an administrator",
        ERROR_SHARING_VIOLATION: "another process has registered this URL",
        ERROR_ALREADY_EXISTS: "already exists",
        ERROR_CALL_NOT_IMPLEMENTED: "not implemented by this httpapi.dll",
        ERROR_INVALID_PARAMETER: "invalid parameter",
        ERROR_OPERATION_ABORTED: "cancelled",
        ERROR_CONNECTION_INVALID: "the client has gone",
        ERROR_NOT_FOUND: "not found",
        ERROR_HANDLE_EOF: "end of the request body",
    }
    return known.get(code, "see the Win32 error codes")


def running_under_wine() -> bool:
    """Wine's ntdll exports wine_get_version; Windows' does not."""
    if sys.platform != "win32":
        return False
    try:
        ntdll = ctypes.WinDLL("ntdll")  # type: ignore[attr-defined,unused-ignore]
        return hasattr(ntdll, "wine_get_version")
    except (OSError, AttributeError):
        return False


_U64P = POINTER(c_uint64)
_U32P = POINTER(c_uint32)
_SIGNATURES: dict[str, tuple[Any, ...]] = {
    "HttpInitialize": (HTTPAPI_VERSION, ULONG, PVOID),
    "HttpTerminate": (ULONG, PVOID),
    "HttpCreateServerSession": (HTTPAPI_VERSION, _U64P, ULONG),
    "HttpCloseServerSession": (ULONGLONG,),
    "HttpCreateUrlGroup": (ULONGLONG, _U64P, ULONG),
    "HttpCloseUrlGroup": (ULONGLONG,),
    "HttpCreateRequestQueue": (HTTPAPI_VERSION, c_wchar_p, PVOID, ULONG, POINTER(HANDLE)),
    "HttpCloseRequestQueue": (HANDLE,),
    "HttpShutdownRequestQueue": (HANDLE,),
    "HttpSetUrlGroupProperty": (ULONGLONG, c_int32, PVOID, ULONG),
    "HttpSetRequestQueueProperty": (HANDLE, c_int32, PVOID, ULONG, ULONG, PVOID),
    "HttpAddUrlToUrlGroup": (ULONGLONG, c_wchar_p, ULONGLONG, ULONG),
    "HttpReceiveHttpRequest": (HANDLE, ULONGLONG, ULONG, PVOID, ULONG, _U32P, PVOID),
    "HttpReceiveRequestEntityBody": (HANDLE, ULONGLONG, ULONG, PVOID, ULONG, _U32P, PVOID),
    "HttpSendHttpResponse": (
        HANDLE, ULONGLONG, ULONG, PVOID, PVOID, _U32P, PVOID, ULONG, PVOID, PVOID,
    ),
    "HttpSendResponseEntityBody": (
        HANDLE, ULONGLONG, ULONG, USHORT, PVOID, _U32P, PVOID, ULONG, PVOID, PVOID,
    ),
    "HttpCancelHttpRequest": (HANDLE, ULONGLONG, PVOID),
}  # fmt: skip


class HttpApi:
    """httpapi.dll's calls, each returning its Win32 error code, plus the kernel32 helpers.

    ``supports_entity_body`` is False under Wine 8, whose HttpSendResponseEntityBody,
    HttpCancelHttpRequest and HttpShutdownRequestQueue are stubs that abort the process.
    """

    def __init__(self, httpapi: Any, kernel32: Any, advapi32: Any, under_wine: bool) -> None:
        self._dll = httpapi
        self._kernel32 = kernel32
        self._advapi32 = advapi32
        self.under_wine = under_wine
        self.supports_entity_body = not under_wine
        self.supports_cancel_request = not under_wine
        self.supports_shutdown_queue = not under_wine
        for name, argtypes in _SIGNATURES.items():
            function = getattr(httpapi, name)
            function.argtypes = argtypes
            function.restype = ULONG
        k = kernel32
        k.CreateIoCompletionPort.argtypes = (HANDLE, HANDLE, c_uint64, ULONG)
        k.CreateIoCompletionPort.restype = HANDLE
        k.GetQueuedCompletionStatus.argtypes = (
            HANDLE, _U32P, _U64P, POINTER(c_void_p), ULONG,
        )  # fmt: skip
        k.GetQueuedCompletionStatus.restype = c_int32
        k.PostQueuedCompletionStatus.argtypes = (HANDLE, ULONG, c_uint64, PVOID)
        k.PostQueuedCompletionStatus.restype = c_int32
        k.CancelIoEx.argtypes = (HANDLE, PVOID)
        k.CancelIoEx.restype = c_int32
        k.CloseHandle.argtypes = (HANDLE,)
        k.CloseHandle.restype = c_int32
        advapi32.GetTokenInformation.argtypes = (HANDLE, c_int32, PVOID, ULONG, _U32P)
        advapi32.GetTokenInformation.restype = c_int32
        advapi32.LookupAccountSidW.argtypes = (
            c_wchar_p, PVOID, PVOID, _U32P, PVOID, _U32P, _U32P,
        )  # fmt: skip
        advapi32.LookupAccountSidW.restype = c_int32

    @classmethod
    def load(cls) -> HttpApi:
        if sys.platform != "win32":
            raise HttpApiUnavailable(
                f"the httpsys adapter needs Windows' httpapi.dll, which {sys.platform} does not "
                "have; use --adapter asyncio (or run on Windows)"
            )
        problems = layout_problems()
        if problems:
            raise HttpApiUnavailable(
                "the httpsys adapter needs a 64-bit Python: " + "; ".join(problems)
            )
        try:
            httpapi = ctypes.WinDLL("httpapi", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
            advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
            httpapi.HttpAddUrlToUrlGroup  # noqa: B018 - the HTTP Server API 2.0 is present
        except (OSError, AttributeError) as exc:
            raise HttpApiUnavailable(
                f"the httpsys adapter cannot load httpapi.dll (HTTP Server API 2.0): {exc}"
            ) from None
        return cls(httpapi, kernel32, advapi32, running_under_wine())

    def __getattr__(self, name: str) -> Any:
        """The raw httpapi.dll functions (``api.HttpReceiveHttpRequest(...)``)."""
        if name in _SIGNATURES:
            return getattr(self._dll, name)
        raise AttributeError(name)

    @staticmethod
    def version() -> HTTPAPI_VERSION:
        return HTTPAPI_VERSION(*HTTPAPI_VERSION_2)

    def check(self, call: str, code: int) -> None:
        if code != NO_ERROR:
            raise HttpApiError(call, code)

    # -- completion port -------------------------------------------------------------------

    def create_completion_port(self) -> int:
        port = self._kernel32.CreateIoCompletionPort(HANDLE(-1 & 0xFFFFFFFFFFFFFFFF), None, 0, 0)
        if not port:
            raise HttpApiError("CreateIoCompletionPort", ctypes.get_last_error())
        return int(port)

    def associate(self, port: int, handle: int, key: int) -> None:
        if not self._kernel32.CreateIoCompletionPort(handle, port, key, 0):
            raise HttpApiError("CreateIoCompletionPort", ctypes.get_last_error())

    def wait_completion(self, port: int) -> tuple[int, int, int, int]:
        """Block for the next packet: (error, bytes, key, OVERLAPPED address or 0)."""
        transferred = c_uint32()
        key = c_uint64()
        overlapped = c_void_p()
        ok = self._kernel32.GetQueuedCompletionStatus(
            port, byref(transferred), byref(key), byref(overlapped), INFINITE
        )
        error = NO_ERROR if ok else ctypes.get_last_error()
        return error, transferred.value, key.value, overlapped.value or 0

    def post_completion(self, port: int, key: int) -> None:
        self._kernel32.PostQueuedCompletionStatus(port, 0, key, None)

    def cancel_io(self, handle: int, overlapped: OVERLAPPED | None) -> None:
        """CancelIoEx: one operation, or (None) every operation on the handle."""
        self._kernel32.CancelIoEx(handle, byref(overlapped) if overlapped is not None else None)

    def close_handle(self, handle: int) -> None:
        self._kernel32.CloseHandle(handle)

    # -- authentication --------------------------------------------------------------------

    def token_user(self, token: int) -> str | None:
        """DOMAIN\\name of the account behind an access token (then the token is closed)."""
        try:
            size = c_uint32(0)
            self._advapi32.GetTokenInformation(token, 1, None, 0, byref(size))  # TokenUser
            if not size.value:
                return None
            buffer = ctypes.create_string_buffer(size.value)
            if not self._advapi32.GetTokenInformation(token, 1, buffer, size, byref(size)):
                return None
            sid = c_void_p.from_buffer(buffer).value  # TOKEN_USER.User.Sid
            name = ctypes.create_unicode_buffer(256)
            domain = ctypes.create_unicode_buffer(256)
            name_len, domain_len, use = c_uint32(256), c_uint32(256), c_uint32()
            if not self._advapi32.LookupAccountSidW(
                None, sid, name, byref(name_len), domain, byref(domain_len), byref(use)
            ):
                return None
            return f"{domain.value}\\{name.value}" if domain.value else name.value
        finally:
            self.close_handle(token)
