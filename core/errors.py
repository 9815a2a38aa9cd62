"""Errors the engine raises.

Two kinds, as in h11: a ``RemoteProtocolError`` means the peer broke the protocol and carries
the status code the server answers with; a ``LocalProtocolError`` means our side (the app, or
the adapter) asked for something the protocol does not allow, and its message says what to fix.
"""

from __future__ import annotations


class TiercelError(Exception):
    """Base of every error tiercel raises on purpose."""


class ConfigError(TiercelError, ValueError):
    """Bad configuration. The message names the setting and how to fix it."""


class RemoteProtocolError(TiercelError):
    """The peer sent something the protocol forbids.

    ``status`` is the HTTP status to answer with while no response has started; ``reason`` is a
    short machine-friendly tag used for rejection telemetry and logs.
    """

    def __init__(
        self, message: str, status: int = 400, reason: str = "bad_request", detail: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        # Logged (escaped) but never sent back: e.g. the offending request target.
        self.detail = detail


class LocalProtocolError(TiercelError):
    """The app or adapter tried something the protocol forbids (e.g. CR/LF in a header)."""


class RequestBodyTooLarge(RemoteProtocolError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body larger than the limit of {limit} bytes", 413, "body_too_large"
        )
