"""HTTP.sys URL prefixes: parsing, and which registration a request reaches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tiercel.core.errors import ConfigError
from tiercel.core.url_prefixes import HostKind, PrefixTable, host_from_header, parse_url_prefix

# --- parsing ---------------------------------------------------------------------------------

PARSED = [
    # text, scheme, kind, host, port, path
    ("http://+:80/api/", "http", HostKind.STRONG_WILDCARD, "+", 80, "/api/"),
    ("http://*:8080/", "http", HostKind.WEAK_WILDCARD, "*", 8080, "/"),
    ("https://example.com:443/app/", "https", HostKind.EXPLICIT, "example.com", 443, "/app/"),
    ("http://127.0.0.1:5000/", "http", HostKind.IP_BOUND, "127.0.0.1", 5000, "/"),
    ("http://[::1]:81/a/b/", "http", HostKind.IP_BOUND, "::1", 81, "/a/b/"),
    ("http://[0:0::1]:81/", "http", HostKind.IP_BOUND, "::1", 81, "/"),
    ("HTTP://Example.COM:80/", "http", HostKind.EXPLICIT, "example.com", 80, "/"),
    ("http://example.com./", "http", HostKind.EXPLICIT, "example.com", 80, "/"),
    ("http://+", "http", HostKind.STRONG_WILDCARD, "+", 80, "/"),
    ("https://+/secure", "https", HostKind.STRONG_WILDCARD, "+", 443, "/secure/"),
    ("http://*:80/api", "http", HostKind.WEAK_WILDCARD, "*", 80, "/api/"),
    ("http://+:80/My%20App/", "http", HostKind.STRONG_WILDCARD, "+", 80, "/My App/"),
    ("http://bücher.de:80/", "http", HostKind.EXPLICIT, "bücher.de", 80, "/"),
    ("http://my_host:80/", "http", HostKind.EXPLICIT, "my_host", 80, "/"),
    ("  http://+:65535/x/  ", "http", HostKind.STRONG_WILDCARD, "+", 65535, "/x/"),
    ("http://localhost:1/", "http", HostKind.EXPLICIT, "localhost", 1, "/"),
]


@pytest.mark.parametrize("case", PARSED, ids=[case[0] for case in PARSED])
def test_parse(case: tuple[str, str, HostKind, str, int, str]) -> None:
    text, scheme, kind, host, port, path = case
    prefix = parse_url_prefix(text)
    assert (prefix.scheme, prefix.host_kind, prefix.host, prefix.port, prefix.path) == (
        scheme,
        kind,
        host,
        port,
        path,
    )
    assert prefix.path_base == path[:-1]
    assert parse_url_prefix(prefix.canonical) == prefix


BAD = [
    ("", "empty"),
    ("+:80/api/", "no scheme"),
    ("ftp://+:80/", "scheme must be http or https"),
    ("http://:80/", "no host"),
    ("http:///api/", "no host"),
    ("http://+:/", "empty port"),
    ("http://+:0/", "fixed port"),
    ("http://+:080/", "leading zeros"),
    ("http://+:65536/", "1 to 65535"),
    ("http://+:http/", "not a number"),
    ("http://+:80/api/?x=1", "query string"),
    ("http://+:80/#top", "fragment"),
    ("http://user@+:80/", "user name"),
    ("http://+:80//api/", "empty segment"),
    ("http://+:80/a/../b/", "'..' segment"),
    ("http://*.example.com:80/", "partial wildcards"),
    ("http://0.0.0.0:80/", "names no interface"),
    ("http://[::]:80/", "names no interface"),
    ("http://[::1:80/", "unclosed"),
    ("http://[::1]x:80/", "after the IPv6"),
    ("http://::1:80/", "in brackets"),
    ("http://[zz]:80/", "not an IPv6"),
    ("http://300.1.1.1:80/", "not an IPv4"),
    ("http://exa mple.com:80/", "not a host name"),
    ("http://a..b:80/", "not a host name"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_prefixes_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url_prefix(text)
    assert message in str(caught.value)
    assert "invalid URL prefix" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("Example.com:8080", "example.com"),
        ("example.com", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:80", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.1:5000", "127.0.0.1"),
        ("", ""),
    ],
)
def test_host_from_header(value: str, host: str) -> None:
    assert host_from_header(value) == host


# --- routing ---------------------------------------------------------------------------------

REGISTRATIONS = [
    "http://+:80/vroot/",
    "http://adatum.com:80/",
    "http://adatum.com:80/shop/",
    "http://*:80/",
    "http://*:80/api/v1/",
    "http://127.0.0.1:80/",
    "http://127.0.0.1:80/local/",
    "http://[::1]:80/six/",
    "https://+:443/",
    "http://+:81/a/",
    "http://+:81/a/b/",
    "http://+:81/A/b/c/",
]


@pytest.fixture(scope="module")
def table() -> PrefixTable[str]:
    return PrefixTable((parse_url_prefix(text), text) for text in REGISTRATIONS)


ROUTES = [
    # scheme, host header, port, path, local ip, winner, path base, remaining
    # The documented example: the strong wildcard beats the explicit host, then explicit
    # beats the weak wildcard.
    (
        "http",
        "adatum.com",
        80,
        "/vroot/subdir/file.htm",
        None,
        "http://+:80/vroot/",
        "/vroot",
        "/subdir/file.htm",
    ),
    ("http", "adatum.com", 80, "/default.htm", None, "http://adatum.com:80/", "", "/default.htm"),
    ("http", "contoso.com", 80, "/default.htm", None, "http://*:80/", "", "/default.htm"),
    # Explicit host: case-insensitive, port in Host ignored, trailing dot ignored.
    (
        "http",
        "ADATUM.com:80",
        80,
        "/shop/cart",
        None,
        "http://adatum.com:80/shop/",
        "/shop",
        "/cart",
    ),
    ("http", "adatum.com.", 80, "/shop", None, "http://adatum.com:80/shop/", "/shop", ""),
    # Path matching is on segments and caseless; the base keeps the request's spelling.
    ("http", "adatum.com", 80, "/shopping", None, "http://adatum.com:80/", "", "/shopping"),
    ("http", "x", 80, "/VRoot/Page", None, "http://+:80/vroot/", "/VRoot", "/Page"),
    ("http", "x", 80, "/vroot", None, "http://+:80/vroot/", "/vroot", ""),
    ("http", "x", 80, "/vroot/", None, "http://+:80/vroot/", "/vroot", "/"),
    ("http", "x", 80, "/vrootx", None, "http://*:80/", "", "/vrootx"),
    # A strong-wildcard match wins even when a weak wildcard has a longer path...
    ("http", "x", 80, "/vroot/api/v1/", None, "http://+:80/vroot/", "/vroot", "/api/v1/"),
    # ...and an explicit host wins over the weak wildcard's longer path.
    ("http", "adatum.com", 80, "/api/v1/x", None, "http://adatum.com:80/", "", "/api/v1/x"),
    ("http", "other", 80, "/api/v1/x", None, "http://*:80/api/v1/", "/api/v1", "/x"),
    ("http", "other", 80, "/api/v2/x", None, "http://*:80/", "", "/api/v2/x"),
    # IP-bound prefixes match on the local address, not on Host; they beat only `*`.
    ("http", "whatever", 80, "/local/x", "127.0.0.1", "http://127.0.0.1:80/local/", "/local", "/x"),
    (
        "http",
        "whatever",
        80,
        "/local/x",
        "::ffff:127.0.0.1",
        "http://127.0.0.1:80/local/",
        "/local",
        "/x",
    ),
    ("http", "whatever", 80, "/local/x", "10.0.0.1", "http://*:80/", "", "/local/x"),
    ("http", "whatever", 80, "/local/x", None, "http://*:80/", "", "/local/x"),
    ("http", "adatum.com", 80, "/local/x", "127.0.0.1", "http://adatum.com:80/", "", "/local/x"),
    ("http", "127.0.0.1", 80, "/six/", "::1", "http://[::1]:80/six/", "/six", "/"),
    ("http", "127.0.0.1", 80, "/six/", "0:0::1", "http://[::1]:80/six/", "/six", "/"),
    # Scheme and port must match exactly.
    ("https", "adatum.com", 443, "/vroot/", None, "https://+:443/", "", "/vroot/"),
    ("HTTPS", "adatum.com", 443, "/", None, "https://+:443/", "", "/"),
    # Longest path within a bucket, whatever order the registrations came in.
    ("http", "x", 81, "/a/b/c/d", None, "http://+:81/A/b/c/", "/a/b/c", "/d"),
    ("http", "x", 81, "/a/b/x", None, "http://+:81/a/b/", "/a/b", "/x"),
    ("http", "x", 81, "/a/bb", None, "http://+:81/a/", "/a", "/bb"),
    ("http", "x", 81, "/a//b/", None, "http://+:81/a/", "/a", "//b/"),
    # A missing Host cannot match an explicit host but still reaches wildcards.
    ("http", "", 80, "/x", None, "http://*:80/", "", "/x"),
]


@pytest.mark.parametrize("case", ROUTES)
def test_routing(
    table: PrefixTable[str], case: tuple[str, str, int, str, str | None, str, str, str]
) -> None:
    scheme, host, port, path, local_ip, winner, base, rest = case
    found = table.match(scheme, host, port, path, local_ip)
    assert found is not None
    assert (found.target, found.path_base, found.remaining_path) == (winner, base, rest)
    assert found.path_base + found.remaining_path == path


@pytest.mark.parametrize(
    ("scheme", "host", "port", "path"),
    [
        ("http", "x", 82, "/"),  # nobody on that port
        ("https", "x", 80, "/"),  # nobody for https on port 80
        ("http", "x", 81, "/b/"),  # port 81 has /a/ only
        ("http", "x", 81, "/ab"),
        ("http", "x", 81, "*"),  # OPTIONS * reaches only a root prefix
    ],
)
def test_no_match(table: PrefixTable[str], scheme: str, host: str, port: int, path: str) -> None:
    assert table.match(scheme, host, port, path) is None


def test_options_star_reaches_a_root_prefix(table: PrefixTable[str]) -> None:
    found = table.match("http", "x", 80, "*")
    assert found is not None
    assert (found.target, found.path_base, found.remaining_path) == ("http://*:80/", "", "*")


def test_unicode_host_matches_its_punycode_host_header() -> None:
    table = PrefixTable([(parse_url_prefix("http://bücher.de:80/"), "books")])
    found = table.match("http", "xn--bcher-kva.de", 80, "/")
    assert found is not None and found.target == "books"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://+:80/api/", "http://+:80/API"),
        ("http://Example.com:80/", "http://example.com/"),
        ("http://[::1]:80/", "http://[0::1]:80/"),
        ("https://+/", "https://+:443/"),
    ],
)
def test_duplicate_registration_is_refused(first: str, second: str) -> None:
    with pytest.raises(ConfigError, match="registered twice"):
        PrefixTable([(parse_url_prefix(first), 1), (parse_url_prefix(second), 2)])


def test_same_path_in_different_buckets_is_allowed() -> None:
    table = PrefixTable(
        [
            (parse_url_prefix("http://+:80/x/"), "strong"),
            (parse_url_prefix("http://*:80/x/"), "weak"),
            (parse_url_prefix("http://h:80/x/"), "explicit"),
        ]
    )
    assert len(table) == 3
    assert [prefix.host for prefix, _ in table] == ["+", "*", "h"]


# --- properties ------------------------------------------------------------------------------

segment = st.sampled_from(["a", "b", "A", "api", "Api", "v1", "x y", "é"])
paths = st.lists(segment, max_size=4).map(lambda parts: "/" + "/".join(parts))
hosts = st.sampled_from(["+", "*", "h.example", "other.example", "127.0.0.1"])
prefix_texts = st.builds(
    lambda host, port, parts: f"http://{host}:{port}/" + "".join(p + "/" for p in parts),
    hosts,
    st.sampled_from([80, 81]),
    st.lists(segment, max_size=3),
)


def _table(texts: list[str]) -> PrefixTable[str]:
    table: PrefixTable[str] = PrefixTable()
    for text in texts:
        prefix = parse_url_prefix(text)
        if prefix.key() not in {known.key() for known, _ in table}:
            table.add(prefix, text)
    return table


requests = st.tuples(
    st.sampled_from(["h.example", "other.example", "third"]),
    st.sampled_from([80, 81]),
    paths,
    st.sampled_from([None, "127.0.0.1", "10.1.1.1"]),
)


@given(st.lists(prefix_texts, max_size=8), requests)
def test_winner_path_is_a_segment_prefix_of_the_request(
    texts: list[str], request: tuple[str, int, str, str | None]
) -> None:
    host, port, path, local_ip = request
    found = _table(texts).match("http", host, port, path, local_ip)
    if found is None:
        return
    assert found.path_base + found.remaining_path == path
    assert found.path_base.lower() == found.prefix.path_base.lower()
    assert found.remaining_path == "" or found.remaining_path.startswith("/")
    assert found.prefix.port == port


@given(st.lists(prefix_texts, max_size=8), requests)
def test_winner_is_best_by_bucket_then_length(
    texts: list[str], request: tuple[str, int, str, str | None]
) -> None:
    """Checked against a brute-force reading of the rules over every registration."""
    host, port, path, local_ip = request
    table = _table(texts)
    found = table.match("http", host, port, path, local_ip)
    candidates = []
    for prefix, _ in table:
        if prefix.port != port:
            continue
        if prefix.host_kind is HostKind.EXPLICIT and prefix.host != host:
            continue
        if prefix.host_kind is HostKind.IP_BOUND and prefix.host != local_ip:
            continue
        under = (path.lower() + "/").startswith(prefix.path.lower())
        if under:
            candidates.append((prefix.host_kind, -len(prefix.segments), prefix))
    if not candidates:
        assert found is None
        return
    best = min(candidates, key=lambda c: (c[0], c[1]))
    assert found is not None
    assert (found.prefix.host_kind, len(found.prefix.segments)) == (best[0], -best[1])


@given(st.lists(prefix_texts, max_size=6), requests, st.lists(segment, min_size=1, max_size=3))
def test_unrelated_registration_does_not_change_the_result(
    texts: list[str], request: tuple[str, int, str, str | None], extra: list[str]
) -> None:
    """A longer prefix under a path the request is not under changes nothing."""
    host, port, path, local_ip = request
    table = _table(texts)
    before = table.match("http", host, port, path, local_ip)
    unrelated = "/zz-unrelated/" + "".join(p + "/" for p in extra)
    for kind_host in ("+", "*", host):
        table = _table([*texts, f"http://{kind_host}:{port}{unrelated}"])
        after = table.match("http", host, port, path, local_ip)
        assert (after is None) == (before is None)
        if before is not None and after is not None:
            assert (after.target, after.path_base) == (before.target, before.path_base)
    other_port = _table([*texts, f"http://+:{port + 100}/"])
    after = other_port.match("http", host, port, path, local_ip)
    assert (after.target if after else None) == (before.target if before else None)
