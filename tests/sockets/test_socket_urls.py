"""Parsing ``fd://``, ``systemd://`` and ``unix:...?mode=`` listen URLs (no sockets involved)."""

from __future__ import annotations

import pytest
from tiercel.core.addresses import parse_url, parse_urls
from tiercel.core.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "scheme", "fd"),
    [
        ("fd://3", "http", 3),
        ("FD://0", "http", 0),
        ("fd:7", "http", 7),
        ("fd://12?tls", "https", 12),
    ],
)
def test_fd_urls(url, scheme, fd):
    endpoint = parse_url(url)
    assert (endpoint.kind, endpoint.scheme, endpoint.fd) == ("fd", scheme, fd)


@pytest.mark.parametrize(
    ("url", "scheme", "name"),
    [
        ("systemd://", "http", ""),
        ("systemd:", "http", ""),
        ("systemd://web", "http", "web"),
        ("systemd://tiercel.socket?tls", "https", "tiercel.socket"),
    ],
)
def test_systemd_urls(url, scheme, name):
    endpoint = parse_url(url)
    assert (endpoint.kind, endpoint.scheme, endpoint.systemd_name) == ("systemd", scheme, name)


@pytest.mark.parametrize(
    ("url", "mode"),
    [
        ("unix:/run/a.sock", None),
        ("unix:/run/a.sock?mode=0660", 0o660),
        ("unix:///a?mode=600", 0o600),
    ],
)
def test_unix_modes(url, mode):
    endpoint = parse_url(url)
    assert endpoint.kind == "unix" and endpoint.unix_mode == mode
    assert endpoint.unix_path is not None and "?" not in endpoint.unix_path


def test_mixed_with_other_urls():
    kinds = [
        e.kind for e in parse_urls("fd://3;systemd://web;unix:/a?mode=0600;http://127.0.0.1:0")
    ]
    assert kinds == ["fd", "systemd", "unix", "ip"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("fd://", "write the descriptor number"),
        ("fd://-1", "write the descriptor number"),
        ("fd://3x", "write the descriptor number"),
        ("fd://3?tls&tls", "option 'tls' is given twice"),
        ("systemd://a:b", "FileDescriptorName="),
        ("systemd://a b", "FileDescriptorName="),
        ("systemd://web?mode=0660", "unknown option 'mode'"),
        ("unix:/a?mode=", "mode '' is not an octal permission"),
        ("unix:/a?mode=66", "mode '66' is not an octal permission"),
        ("unix:/a?mode=0o660", "mode '0o660' is not an octal permission"),
        ("unix:/a?tls", "unknown option 'tls'"),
        ("unix:relative?mode=0660", "absolute path"),
    ],
)
def test_bad_urls(url, words):
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    message = str(caught.value)
    assert url in message and words in message
