"""Forwarded headers on bytes, through both protocol engines (ASP.NET ForwardedHeaders rules)."""

from __future__ import annotations

import ipaddress

import h2.events
import pytest
from fwd_helpers import ALL, PROXY, h1, h2_request, header, options
from tiercel.core.errors import ConfigError
from tiercel.core.forwarded import ForwardedHeaders, ForwardedOptions, host_allowed

XFF = "X-Forwarded-For"


def test_single_proxy_sets_client_scheme_host_prefix_and_keeps_originals():
    stream, _ = h1(
        [
            (XFF, "203.0.113.7:4711"),
            ("X-Forwarded-Proto", "HTTPS"),
            ("X-Forwarded-Host", "public.example"),
            ("X-Forwarded-Prefix", "/api"),
        ]
    )
    assert stream is not None
    assert stream.remote_address == ("203.0.113.7", 4711)
    assert stream.scheme == "https"
    assert header(stream, b"host") == [b"public.example"]
    assert stream.path_base == "/api" and stream.path == "/x"
    assert header(stream, b"x-original-for") == [b"127.0.0.1:50000"]
    assert header(stream, b"x-original-proto") == [b"http"]
    assert header(stream, b"x-original-host") == [b"app.test"]
    assert header(stream, b"x-original-prefix") == [b""]
    for name in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"):
        assert header(stream, name) == []  # all consumed


def test_off_by_default_and_untouched_without_options():
    stream, _ = h1([(XFF, "203.0.113.7")], ForwardedOptions())
    assert stream is not None and stream.remote_address == PROXY
    assert header(stream, b"x-forwarded-for") == [b"203.0.113.7"]


def test_untrusted_peer_is_ignored_entirely():
    stream, _ = h1([(XFF, "203.0.113.7"), ("X-Forwarded-Proto", "https")], peer=("198.51.100.1", 1))
    assert stream is not None
    assert stream.remote_address == ("198.51.100.1", 1) and stream.scheme == "http"
    assert header(stream, b"x-forwarded-for") == [b"203.0.113.7"]
    assert header(stream, b"x-original-for") == []


def test_chain_limit_one_takes_only_the_rightmost_entry():
    stream, _ = h1([(XFF, "203.0.113.7, 10.0.0.2"), ("X-Forwarded-Proto", "https, http")])
    assert stream is not None
    assert stream.remote_address == ("10.0.0.2", 0)
    assert stream.scheme == "http"
    assert header(stream, b"x-forwarded-for") == [b"203.0.113.7"]
    assert header(stream, b"x-forwarded-proto") == [b"https"]


def test_chain_limit_two_walks_while_the_sender_is_trusted():
    trusted = options(known_networks=("127.0.0.0/8", "10.0.0.0/8"), forward_limit=2)
    stream, _ = h1(
        [(XFF, "198.51.100.9, 203.0.113.7, 10.0.0.2"), ("X-Forwarded-Proto", "https, http")],
        trusted,
    )
    assert stream is not None
    assert stream.remote_address == ("203.0.113.7", 0)
    assert stream.scheme == "https"
    assert header(stream, b"x-forwarded-for") == [b"198.51.100.9"]
    assert header(stream, b"x-forwarded-proto") == []


def test_chain_stops_at_the_first_untrusted_hop():
    opts = options(forward_limit=None)  # only loopback is trusted
    stream, _ = h1([(XFF, "198.51.100.9, 203.0.113.7, 10.0.0.2")], opts)
    assert stream is not None
    assert stream.remote_address == ("10.0.0.2", 0)  # 10.0.0.2 is not trusted: stop there
    assert header(stream, b"x-forwarded-for") == [b"198.51.100.9, 203.0.113.7"]


def test_no_limit_with_everyone_trusted():
    opts = options(forward_limit=None, known_networks=("0.0.0.0/0", "::/0"))
    stream, _ = h1([(XFF, "198.51.100.9"), (XFF, "203.0.113.7, 10.0.0.2")], opts)
    assert stream is not None and stream.remote_address == ("198.51.100.9", 0)
    assert header(stream, b"x-forwarded-for") == []


def test_several_header_lines_are_joined():
    opts = options(forward_limit=2, known_networks=("127.0.0.0/8", "10.0.0.0/8"))
    stream, _ = h1([(XFF, "203.0.113.7"), (XFF, "10.0.0.2")], opts)
    assert stream is not None and stream.remote_address == ("203.0.113.7", 0)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("2001:db8::1", ("2001:db8::1", 0)),
        ("[2001:db8::1]", ("2001:db8::1", 0)),
        ("[2001:db8::1]:8443", ("2001:db8::1", 8443)),
        ("[2001:DB8:0::1]:1", ("2001:db8::1", 1)),
        ("192.0.2.1:65535", ("192.0.2.1", 65535)),
        ("::ffff:192.0.2.1", ("::ffff:c000:201", 0)),
    ],
)
def test_address_forms(entry, expected):
    stream, _ = h1([(XFF, entry)])
    assert stream is not None and stream.remote_address == expected


@pytest.mark.parametrize(
    "entry",
    ["not-an-ip", "192.0.2.1:99999", "192.0.2.1:x", "[2001:db8::1", "2001:db8::1]:1", "1.2.3"],
)
def test_malformed_entry_stops_processing_and_keeps_what_was_applied(entry):
    opts = options(forward_limit=3, known_networks=("0.0.0.0/0",))
    stream, _ = h1(
        [(XFF, f"198.51.100.9, {entry}, 10.0.0.2"), ("X-Forwarded-Proto", "a, b, https")], opts
    )
    assert stream is not None
    assert stream.remote_address == ("10.0.0.2", 0)  # the first set was applied
    assert stream.scheme == "https"
    assert header(stream, b"x-forwarded-for") == [f"198.51.100.9, {entry}".encode()]


def test_malformed_first_entry_changes_nothing():
    stream, _ = h1([(XFF, "garbage"), ("X-Forwarded-Proto", "https")])
    assert stream is not None and stream.remote_address == PROXY and stream.scheme == "http"
    assert header(stream, b"x-original-for") == []


def test_unknown_node_applies_its_set_but_not_an_address():
    opts = options(forward_limit=None)
    stream, _ = h1([(XFF, "192.0.2.1, unknown"), ("X-Forwarded-Proto", "http, https")], opts)
    assert stream is not None
    assert stream.remote_address == PROXY
    assert stream.scheme == "https"
    assert header(stream, b"x-forwarded-for") == [b"192.0.2.1"]


def test_ipv6_loopback_peer_is_trusted_and_ipv4_mapped_peers_too():
    stream, _ = h1([(XFF, "192.0.2.1")], peer=("::1", 5))
    assert stream is not None and stream.remote_address == ("192.0.2.1", 0)
    assert header(stream, b"x-original-for") == [b"[::1]:5"]
    stream, _ = h1([(XFF, "192.0.2.1")], peer=("::ffff:127.0.0.1", 5))
    assert stream is not None and stream.remote_address == ("192.0.2.1", 0)


def test_trusted_networks():
    opts = options(known_networks=(ipaddress.ip_network("10.1.0.0/16"),))
    stream, _ = h1([(XFF, "192.0.2.1")], opts, peer=("10.1.2.3", 1))
    assert stream is not None and stream.remote_address == ("192.0.2.1", 0)
    stream, _ = h1([(XFF, "192.0.2.1")], opts, peer=("127.0.0.1", 1))
    assert stream is not None and stream.remote_address == ("127.0.0.1", 1)


def test_unix_socket_peer_counts_as_trusted_for_the_first_hop():
    stream, _ = h1([(XFF, "192.0.2.1")], peer=None)
    assert stream is not None and stream.remote_address == ("192.0.2.1", 0)
    assert header(stream, b"x-original-for") == []


def test_asymmetric_counts_use_what_is_there():
    opts = options(forward_limit=2, known_networks=("0.0.0.0/0",))
    stream, _ = h1([(XFF, "192.0.2.1"), ("X-Forwarded-Proto", "https, http")], opts)
    assert stream is not None
    assert stream.remote_address == ("192.0.2.1", 0) and stream.scheme == "https"


def test_invalid_proto_host_prefix_are_skipped_not_fatal():
    stream, _ = h1(
        [
            (XFF, "192.0.2.1"),
            ("X-Forwarded-Proto", "ht tp"),
            ("X-Forwarded-Host", "bad host"),
            ("X-Forwarded-Prefix", "no-slash"),
        ]
    )
    assert stream is not None and stream.remote_address == ("192.0.2.1", 0)
    assert stream.scheme == "http" and stream.path_base == ""
    assert header(stream, b"host") == [b"app.test"]


def test_prefix_is_unescaped_and_trailing_slash_dropped():
    stream, _ = h1([("X-Forwarded-Prefix", "/my%20app/")])
    assert stream is not None and stream.path_base == "/my app"


def test_only_enabled_headers_are_used():
    opts = options(headers=ForwardedHeaders.X_FORWARDED_PROTO)
    stream, _ = h1([(XFF, "192.0.2.1"), ("X-Forwarded-Proto", "https")], opts)
    assert stream is not None and stream.remote_address == PROXY and stream.scheme == "https"
    assert header(stream, b"x-forwarded-for") == [b"192.0.2.1"]


# -- RFC 7239 -----------------------------------------------------------------------------


def test_rfc7239_basic():
    stream, _ = h1([("Forwarded", 'for=192.0.2.60;proto=https;host="example.com:8443";by=x')])
    assert stream is not None
    assert stream.remote_address == ("192.0.2.60", 0)
    assert stream.scheme == "https"
    assert header(stream, b"host") == [b"example.com:8443"]
    assert header(stream, b"forwarded") == []
    assert header(stream, b"x-original-host") == [b"app.test"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('For="[2001:db8:cafe::17]:4711"', ("2001:db8:cafe::17", 4711)),
        ('for="[2001:db8:cafe::17]"', ("2001:db8:cafe::17", 0)),
        ('for="192.0.2.43:_hidden"', ("192.0.2.43", 0)),
        ('for="\\1\\9\\2.0.2.43"', ("192.0.2.43", 0)),
        ("for=192.0.2.43 ; proto=https", ("192.0.2.43", 0)),
    ],
)
def test_rfc7239_node_forms(value, expected):
    stream, _ = h1([("Forwarded", value)])
    assert stream is not None and stream.remote_address == expected


@pytest.mark.parametrize(
    "value",
    [
        'for="2001:db8::1"',  # IPv6 must be bracketed
        "for=[2001:db8::1]",  # and quoted
        'for="192.0.2.1',  # unterminated quote
        "for=192.0.2.1;for=192.0.2.2",  # a parameter twice
        "for",  # no value
        "for=192.0.2.1 proto=https",
    ],
)
def test_rfc7239_malformed_element_changes_nothing(value):
    stream, _ = h1([("Forwarded", value)])
    assert stream is not None and stream.remote_address == PROXY
    assert header(stream, b"forwarded") == [value.encode()]


def test_rfc7239_chain_and_quoted_commas():
    opts = options(forward_limit=2, known_networks=("127.0.0.0/8", "10.0.0.0/8"))
    value = 'for=198.51.100.1, for="[2001:db8::2]";host="a, b", for=10.0.0.5;proto=https'
    stream, _ = h1([("Forwarded", value)], opts)
    assert stream is not None
    # 10.0.0.5 is trusted, so the middle element applies too; its host is invalid (space).
    assert stream.remote_address == ("2001:db8::2", 0)
    assert stream.scheme == "https"
    assert header(stream, b"host") == [b"app.test"]
    assert header(stream, b"forwarded") == [b"for=198.51.100.1"]


def test_rfc7239_malformed_element_stops_the_walk():
    opts = options(forward_limit=None, known_networks=("0.0.0.0/0",))
    stream, _ = h1([("Forwarded", 'for=198.51.100.1, for="oops, for=10.0.0.5')], opts)
    assert stream is not None and stream.remote_address == PROXY  # quote swallows the rest
    stream, _ = h1([("Forwarded", "for=198.51.100.1, for=[x], for=10.0.0.5")], opts)
    assert stream is not None and stream.remote_address == ("10.0.0.5", 0)
    assert header(stream, b"forwarded") == [b"for=198.51.100.1, for=[x]"]


def test_rfc7239_unknown_and_obfuscated():
    stream, _ = h1([("Forwarded", "for=unknown;proto=https")])
    assert stream is not None and stream.remote_address == PROXY and stream.scheme == "https"
    stream, _ = h1([("Forwarded", "for=_gazonk;proto=https")])
    assert stream is not None and stream.remote_address == PROXY and stream.scheme == "https"


def test_x_forwarded_wins_over_forwarded_when_both_present():
    stream, _ = h1([("Forwarded", "for=192.0.2.1"), (XFF, "192.0.2.2")])
    assert stream is not None and stream.remote_address == ("192.0.2.2", 0)
    assert header(stream, b"forwarded") == [b"for=192.0.2.1"]


def test_untrusted_peer_ignores_forwarded():
    stream, _ = h1([("Forwarded", "for=192.0.2.1;proto=https")], peer=("192.0.2.99", 1))
    assert stream is not None and stream.remote_address == ("192.0.2.99", 1)
    assert stream.scheme == "http"


# -- allowed hosts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("example.com", True),
        ("EXAMPLE.com:8080", True),
        ("api.example.com", False),
        ("sub.wild.test", True),
        ("a.b.wild.test", True),
        ("wild.test", False),  # *.wild.test does not match the root
        ("xwild.test", False),
        ("[::1]:80", True),
        ("evil.com", False),
        ("bücher.test", True),
        ("xn--bcher-kva.test", True),
    ],
)
def test_host_allowed(host, ok):
    opts = ForwardedOptions(allowed_hosts=("example.com", "*.wild.test", "::1", "BÜCHER.test"))
    assert host_allowed(host, opts.allowed_hosts) is ok


def test_host_not_allowed_answers_400_over_http1_before_the_app():
    opts = ForwardedOptions(allowed_hosts=("example.com",))
    stream, out = h1([("Host", "evil.com")], opts)
    assert stream is None
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"host not allowed" in out
    stream, out = h1([("Host", "example.com:8000")], opts)
    assert stream is not None


def test_host_not_allowed_answers_400_over_http2():
    opts = ForwardedOptions(allowed_hosts=("example.com",))
    stream, events = h2_request([], opts, authority="evil.com")
    assert stream is None
    responses = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert responses and dict(responses[0].headers)[b":status"] == b"400"
    stream, _ = h2_request([], opts, authority="example.com")
    assert stream is not None


def test_forwarded_host_is_checked_against_allowed_hosts():
    opts = options(allowed_hosts=("example.com", "*.example.com"))
    stream, _ = h1([("Host", "example.com"), ("X-Forwarded-Host", "www.example.com")], opts)
    assert stream is not None and header(stream, b"host") == [b"www.example.com"]
    # A forwarded host outside the list is not applied (ASP.NET); the original one passes.
    stream, _ = h1([("Host", "example.com"), ("X-Forwarded-Host", "evil.com")], opts)
    assert stream is not None and header(stream, b"host") == [b"example.com"]
    # The forwarded host replaces the original first, so the check sees the forwarded one.
    stream, _ = h1([("Host", "evil.com"), ("X-Forwarded-Host", "example.com")], opts)
    assert stream is not None and header(stream, b"host") == [b"example.com"]


# -- HTTP/2 --------------------------------------------------------------------------------


def test_http2_forwarded_values():
    stream, _ = h2_request(
        [
            (XFF, "[2001:db8::7]:99"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.example"),
            ("X-Forwarded-Prefix", "/p"),
        ]
    )
    assert stream is not None
    assert stream.remote_address == ("2001:db8::7", 99)
    assert stream.scheme == "https"
    assert header(stream, b"host") == [b"public.example"]
    assert stream.path_base == "/p"
    assert header(stream, b"x-original-host") == [b"app.test"]


def test_http2_untrusted_peer():
    stream, _ = h2_request([(XFF, "192.0.2.1")], peer=("192.0.2.50", 9))
    assert stream is not None and stream.remote_address == ("192.0.2.50", 9)


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"forward_limit": 0}, "forward_limit"),
        ({"forward_limit": True}, "forward_limit"),
        ({"known_networks": ("10.0.0.1/8",)}, "known_networks"),
        ({"known_networks": ("nope",)}, "known_networks"),
        ({"headers": ALL, "known_networks": ()}, "known_networks"),
        ({"allowed_hosts": ("example.com:80",)}, "allowed_hosts"),
        ({"allowed_hosts": ("a*.example.com",)}, "allowed_hosts"),
        ({"allowed_hosts": ("",)}, "allowed_hosts"),
        ({"headers": 3}, "ForwardedHeaders"),
    ],
)
def test_bad_options_name_the_setting(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ForwardedOptions(**kwargs)


def test_engine_config_rejects_wrong_type():
    from tiercel.core.config import EngineConfig

    with pytest.raises(ConfigError, match="forwarded"):
        EngineConfig(forwarded="yes")  # type: ignore[arg-type]
