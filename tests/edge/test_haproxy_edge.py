"""tiercel behind a real HAProxy, as in the README's "Deploying" example: ``option forwardfor``
with HTTP/2 (``proto h2``) to tiercel, TLS ended at HAProxy, and ``send-proxy-v2`` to a tiercel
that requires the PROXY protocol. HAProxy's h2 sends ``:scheme https`` even over cleartext
(haproxy/haproxy#77, by design), which tiercel refuses like Kestrel unless
``--allow-alternate-schemes``; X-Forwarded-Proto then gives the app the real scheme. The PROXY
header bytes and their TLVs are checked in tests/proxy_protocol/test_haproxy.py; here the point
is the command line a deployment uses. HAProxy strips a ``/app`` prefix itself (``replace-path``)
and names it in X-Forwarded-Prefix, to tiercel over h2 and, from a second frontend, over h1."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme
from edge_peers import CLIENT_ADDRESS, PROXY_ADDRESS, Proxy, Tiercel, client, seen
from processes import free_port
from support import require_peer

pytestmark = pytest.mark.peer("haproxy")
APP_HOST = {"host": "app.example"}

CONFIG = """\
global
  log stderr format raw local0 info
defaults
  mode http
  log global
  timeout connect 2s
  timeout client 10s
  timeout server 10s

frontend web
  bind 127.0.0.1:{http}
  bind 127.0.0.1:{https} ssl crt {dir}/site.pem
  option forwardfor
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
  http-request set-header X-Forwarded-Prefix /app if {{ path_beg /app/ }}
  http-request replace-path ^/app(/.*) \\1
  default_backend tiercel
backend tiercel
  server s1 127.0.0.1:{forwarded} proto h2

frontend web_h1
  bind 127.0.0.1:{h1}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Prefix /app if {{ path_beg /app/ }}
  http-request replace-path ^/app(/.*) \\1
  default_backend tiercel_h1
backend tiercel_h1
  server s1 127.0.0.1:{forwarded}

frontend strict_scheme
  bind 127.0.0.1:{strict}
  option forwardfor
  default_backend strict_scheme
backend strict_scheme
  retries 0
  server s1 127.0.0.1:{strict_scheme} proto h2

frontend web_proxy_protocol
  bind 127.0.0.1:{pp}
  default_backend tiercel_proxy_protocol
backend tiercel_proxy_protocol
  server s1 127.0.0.1:{proxy_protocol} send-proxy-v2

frontend untrusted_forwardfor
  bind 127.0.0.1:{untrusted_fwd}
  option forwardfor
  default_backend distrustful
backend distrustful
  server s1 127.0.0.1:{distrustful}

frontend untrusted_proxy_protocol
  bind 127.0.0.1:{untrusted_pp}
  default_backend distrustful_proxy_protocol
backend distrustful_proxy_protocol
  retries 0
  server s1 127.0.0.1:{distrustful_pp} send-proxy-v2
"""


@dataclass
class Site:
    ports: dict[str, int]
    tls: ssl.SSLContext
    distrustful_pp: Tiercel
    strict_scheme: Tiercel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    haproxy = require_peer("haproxy")
    directory = tmp_path_factory.mktemp("haproxy")
    ca = trustme.CA()
    ca.issue_cert("app.example", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        directory / "site.pem"
    )
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    command_lines = {
        "forwarded": [
            "--forwarded-headers",
            "--allowed-hosts",
            "app.example",
            "--allow-alternate-schemes",
        ],
        "strict_scheme": ["--forwarded-headers"],
        "proxy_protocol": ["--proxy-protocol", "required", "--proxy-trusted", "127.0.0.1"],
        "distrustful": ["--forwarded-headers", "--forwarded-trusted", "10.0.0.0/8"],
        "distrustful_pp": [
            "--proxy-protocol",
            "required",
            "--proxy-trusted",
            "10.0.0.0/8",
            "--log-level",
            "warning",
            "--rejection-log-level",
            "warning",
        ],
    }
    fronts = {
        name: free_port()
        for name in ("http", "https", "h1", "strict", "pp", "untrusted_fwd", "untrusted_pp")
    }
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(Tiercel(*args)) for name, args in command_lines.items()
        }
        config = directory / "haproxy.cfg"
        config.write_text(
            CONFIG.format(dir=directory, **fronts, **{k: s.port for k, s in servers.items()})
        )
        stack.enter_context(
            Proxy(
                "haproxy",
                [haproxy, "-f", str(config), "-db"],
                [haproxy, "-c", "-f", str(config)],
                directory,
                list(fronts.values()),
            )
        )
        yield Site(fronts, tls, servers["distrustful_pp"], servers["strict_scheme"])


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_forwardfor_over_h2(site: Site, scheme: str) -> None:
    with client(site.tls) as http:
        url = f"{scheme}://127.0.0.1:{site.ports[scheme]}/where"
        answer = seen(http.get(url, headers=APP_HOST))
    assert answer["http_version"] == "2"
    assert answer["client"] == [CLIENT_ADDRESS, 0]
    assert answer["scheme"] == scheme
    assert answer["host"] == "app.example"
    assert answer["headers"]["x-original-for"].startswith(f"{PROXY_ADDRESS}:")
    assert answer["path"] == "/where"
    assert answer["root_path"] == ""


@pytest.mark.parametrize(
    ("front", "scheme", "version"),
    [("http", "http", "2"), ("https", "https", "2"), ("h1", "http", "1.1")],
)
def test_forwarded_prefix_becomes_the_root_path(
    site: Site, front: str, scheme: str, version: str
) -> None:
    with client(site.tls) as http:
        url = f"{scheme}://127.0.0.1:{site.ports[front]}/app/items/7"
        answer = seen(http.get(url, headers=APP_HOST))
    assert answer["http_version"] == version
    assert answer["root_path"] == "/app"
    assert answer["path"] == "/app/items/7"  # ASGI's path includes root_path
    assert answer["headers"]["x-original-prefix"] == ""  # HAProxy stripped the prefix
    assert answer["scheme"] == scheme
    assert answer["client"] == [CLIENT_ADDRESS, 0]
    assert answer["host"] == "app.example"


def test_host_filtering_behind_haproxy(site: Site) -> None:
    with client() as http:
        response = http.get(
            f"http://127.0.0.1:{site.ports['http']}/", headers={"host": "evil.example"}
        )
    assert response.status_code == 400


def test_haproxys_h2_scheme_is_refused_by_default_and_says_why(site: Site) -> None:
    with client() as http:
        response = http.get(f"http://127.0.0.1:{site.ports['strict']}/", headers=APP_HOST)
    assert response.status_code == 502, response.status_code
    line = site.strict_scheme.wait_for(r"^rejected .*$").group(0)
    assert ":scheme 'https' does not match the connection" in line, line
    assert line.endswith("[h2_malformed_request]"), line


def test_send_proxy_v2(site: Site) -> None:
    with client() as http:
        for _ in range(3):
            response = http.get(f"http://127.0.0.1:{site.ports['pp']}/where", headers=APP_HOST)
            answer = seen(response)
            # PROXY carries the port too; httpx keeps one connection, so it is the same one.
            local_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
            assert answer["client"] == [CLIENT_ADDRESS, local_port]
            assert answer["server"] == ["127.0.0.1", site.ports["pp"]]
            assert answer["scheme"] == "http"
            assert answer["host"] == "app.example"


def test_untrusted_forwardfor_is_ignored(site: Site) -> None:
    with client() as http:
        url = f"http://127.0.0.1:{site.ports['untrusted_fwd']}/x"
        answer = seen(http.get(url, headers=APP_HOST))
    assert answer["client"][0] == PROXY_ADDRESS
    assert answer["client"][1] != 0
    assert answer["headers"]["x-forwarded-for"] == CLIENT_ADDRESS
    assert not any(name.startswith("x-original-") for name in answer["headers"])


def test_untrusted_proxy_header_is_refused_and_logged_at_the_chosen_level(site: Site) -> None:
    with client() as http:
        response = http.get(f"http://127.0.0.1:{site.ports['untrusted_pp']}/", headers=APP_HOST)
    assert response.status_code in (502, 503), response.status_code  # HAProxy's own answer
    # --log-level warning hides INFO lines; --rejection-log-level warning still shows this one.
    line = site.distrustful_pp.wait_for(r"^rejected closed from .*$").group(0)
    assert f"from {PROXY_ADDRESS}:" in line, line
    assert "listening on" not in site.distrustful_pp.text
