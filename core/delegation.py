"""Request delegation: handing a connection and the bytes already read to another process.

This is tiercel's analogue of HTTP.sys queue transfer (``IHttpSysRequestDelegationFeature``).
A front server reads a connection's first request head, finds the delegation rule whose URL
prefix takes it, and passes the socket itself plus every byte it has read to the process that
owns the rule's *queue* (a unix socket, given as a path). The receiving server serves the
connection as if it had accepted it: no byte is proxied, the front is out of the path.

Theory of operation. The engine decides and the adapters move sockets:

- ``DelegationRules`` is the table of ``(URL prefix, queue path)`` the front was configured
  with, matched with HTTP.sys's rules (``url_prefixes.PrefixTable``).
- The HTTP/1.1 engine consults it for the *first* request of a cleartext connection only. A
  connection is handed over whole, so later keep-alive requests go to the same process; TLS
  and HTTP/2 connections are never delegated (their state cannot move between processes).
- On a match the engine emits ``ConnectionDelegated`` with the bytes received so far and stops
  touching the connection; the adapter sends the socket and those bytes with ``encode_handoff``
  over the queue (SCM_RIGHTS) and closes its own descriptor without a FIN.
- The receiving adapter reads handoff messages from its queue, ``decode_handoff`` them, and
  starts a connection on the socket with the bytes fed in first.

The wire format of one handoff (one datagram on a SOCK_SEQPACKET unix socket, the socket in
its ancillary data): ``b"TDLG"``, a version byte, a two-byte big-endian length, that many
bytes of JSON metadata (the client and local addresses the front saw, which may come from a
PROXY protocol header rather than the socket), then the raw bytes read so far.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError
from .url_prefixes import PrefixTable, UrlPrefix, parse_url_prefix

__all__ = [
    "HANDOFF_MAX_SIZE",
    "DelegationRules",
    "Handoff",
    "HandoffError",
    "decode_handoff",
    "encode_handoff",
    "parse_delegation_rule",
]

MAGIC = b"TDLG"
VERSION = 1
# Largest handoff datagram: the head limits are well under this, and a front never reads
# more than its request buffer (1 MiB by default) before deciding. Receivers read this much.
HANDOFF_MAX_SIZE = 2 * 1024 * 1024
# A rule written as a bare path (``/api/=QUEUE``) takes that path on every host and port.
ANY_PORT = 0


class HandoffError(ValueError):
    """A datagram on a delegation queue is not a tiercel handoff."""


@dataclass(frozen=True, slots=True)
class Handoff:
    data: bytes  # every byte the front read from the connection, unparsed
    remote_address: tuple[str, int] | None  # the client, as the front saw it
    local_address: tuple[str, int] | None


def encode_handoff(handoff: Handoff) -> bytes:
    meta = json.dumps(
        {
            "remote": list(handoff.remote_address) if handoff.remote_address else None,
            "local": list(handoff.local_address) if handoff.local_address else None,
        },
        separators=(",", ":"),
    ).encode()
    return MAGIC + bytes([VERSION]) + len(meta).to_bytes(2, "big") + meta + handoff.data


def _address(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and 0 <= value[1] <= 65535
    ):
        return (value[0], value[1])
    raise HandoffError(f"bad address in handoff metadata: {value!r}")


def decode_handoff(message: bytes) -> Handoff:
    if not message.startswith(MAGIC):
        raise HandoffError("not a tiercel handoff (bad magic)")
    if len(message) < 7 or message[4] != VERSION:
        raise HandoffError(f"unsupported handoff version {message[4:5]!r}")
    meta_length = int.from_bytes(message[5:7], "big")
    meta_end = 7 + meta_length
    if len(message) < meta_end:
        raise HandoffError("truncated handoff metadata")
    try:
        meta = json.loads(message[7:meta_end])
    except ValueError as exc:
        raise HandoffError(f"bad handoff metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise HandoffError("bad handoff metadata: not an object")
    return Handoff(
        data=message[meta_end:],
        remote_address=_address(meta.get("remote")),
        local_address=_address(meta.get("local")),
    )


def parse_delegation_rule(text: str) -> tuple[UrlPrefix, str]:
    """``PREFIX=QUEUE``, e.g. ``http://+:8080/api/=/run/tiercel/api.queue``; a bare path
    prefix (``/api/=/run/tiercel/api.queue``) means every host on every port."""
    prefix_text, sep, queue = text.rpartition("=")
    if not sep or not prefix_text or not queue:
        raise ConfigError(
            f"delegation rule {text!r}: write it as URL_PREFIX=QUEUE_PATH, "
            "e.g. /api/=/run/tiercel/api.queue or http://+:8080/api/=/run/tiercel/api.queue"
        )
    if prefix_text.startswith("/"):
        prefix = dataclasses.replace(
            parse_url_prefix("http://+:80" + prefix_text), port=ANY_PORT, text=prefix_text
        )
    else:
        prefix = parse_url_prefix(prefix_text)
    if prefix.scheme != "http":
        raise ConfigError(
            f"delegation rule {text!r}: only http:// prefixes can be delegated "
            "(a TLS connection's state cannot move to another process)"
        )
    if not queue.startswith("/"):
        raise ConfigError(
            f"delegation rule {text!r}: the queue must be an absolute unix socket path"
        )
    return prefix, queue


class DelegationRules:
    """URL prefix → queue path, matched the way HTTP.sys matches its prefixes."""

    def __init__(self, rules: Iterable[tuple[UrlPrefix, str]]) -> None:
        self._table: PrefixTable[str] = PrefixTable(rules)
        if not len(self._table):
            raise ConfigError("delegation needs at least one rule (URL_PREFIX=QUEUE_PATH)")

    @classmethod
    def parse(cls, texts: Iterable[str]) -> DelegationRules:
        return cls(parse_delegation_rule(text) for text in texts)

    @property
    def queues(self) -> list[str]:
        return list(dict.fromkeys(queue for _, queue in self._table))

    def queue_for(self, host: str, port: int, path: str, local_ip: str | None = None) -> str | None:
        """The queue that takes this request (cleartext only), or None to serve it here."""
        found = self._table.match("http", host, port, path, local_ip)
        if found is None and port != ANY_PORT:
            found = self._table.match("http", host, ANY_PORT, path, local_ip)
        return None if found is None else found.target

    def describe(self) -> list[str]:
        """One line per rule for the start-up log: ``/api/ -> /run/tiercel/api.queue``."""
        return [f"{prefix.text} -> {queue}" for prefix, queue in self._table]
