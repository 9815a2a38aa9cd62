"""tiercel behind a real Apache httpd: mod_proxy_http over HTTP/1.1 (it adds X-Forwarded-For,
-Host and -Server by itself) and mod_proxy_http2 with ``ProxyPass /h2/ h2c://...`` (HTTP/2
with prior knowledge to tiercel's cleartext listener). Apache does not send X-Forwarded-Prefix
itself: mod_headers adds it where a sub-path is proxied to tiercel's root."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from edge_peers import CLIENT_ADDRESS, PROXY_ADDRESS, Proxy, Tiercel, client, seen
from processes import free_port
from support import require_peer

pytestmark = pytest.mark.peer("apache2")
APP_HOST = {"host": "app.example"}
MODULES = "/usr/lib/apache2/modules"

# Called as apache2 directly (apache2ctl needs Debian's /etc/apache2/envvars); log_config is
# built in. Apache will not serve as root, so under root its children run as nobody.
CONFIG = """\
ServerRoot {dir}
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}
ErrorLog {dir}/error.log
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule proxy_http2_module {modules}/mod_proxy_http2.so
LoadModule headers_module {modules}/mod_headers.so

ProxyPass /h2/app/ h2c://127.0.0.1:{tiercel}/
<Location /h2/app/>
  RequestHeader set X-Forwarded-Prefix /h2/app
</Location>
ProxyPass /h2/ h2c://127.0.0.1:{tiercel}/
ProxyPass /app/ http://127.0.0.1:{tiercel}/
<Location /app/>
  RequestHeader set X-Forwarded-Prefix /app
</Location>
ProxyPass /distrustful/ http://127.0.0.1:{distrustful}/
ProxyPass / http://127.0.0.1:{tiercel}/
"""


@dataclass
class Site:
    port: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    apache = require_peer("apache2")
    directory = tmp_path_factory.mktemp("apache")
    with contextlib.ExitStack() as stack:
        trusting = stack.enter_context(
            Tiercel("--forwarded-headers", "--allowed-hosts", "app.example")
        )
        distrustful = stack.enter_context(
            Tiercel("--forwarded-headers", "--forwarded-trusted", "10.0.0.0/8")
        )
        port = free_port()
        config = directory / "httpd.conf"
        config.write_text(
            CONFIG.format(
                dir=directory,
                port=port,
                modules=MODULES,
                user="User nobody\nGroup nogroup" if os.geteuid() == 0 else "",
                tiercel=trusting.port,
                distrustful=distrustful.port,
            )
        )
        base = [apache, "-d", str(directory), "-f", str(config)]
        stack.enter_context(
            Proxy("apache2", [*base, "-DFOREGROUND"], [*base, "-t"], directory, [port])
        )
        yield Site(port)


@pytest.mark.parametrize(("prefix", "version"), [("", "1.1"), ("/h2", "2")])
def test_app_sees_the_client_and_host_apache_saw(site: Site, prefix: str, version: str) -> None:
    with client() as http:
        answer = seen(http.get(f"http://127.0.0.1:{site.port}{prefix}/where", headers=APP_HOST))
    assert answer["http_version"] == version
    assert answer["client"] == [CLIENT_ADDRESS, 0]
    assert answer["host"] == "app.example"  # from X-Forwarded-Host; Host is tiercel's address
    assert answer["headers"]["x-original-host"] == f"127.0.0.1:{answer['server'][1]}"
    assert answer["scheme"] == "http"
    assert answer["path"] == "/where"
    assert answer["root_path"] == ""


@pytest.mark.parametrize(("prefix", "version"), [("/app", "1.1"), ("/h2/app", "2")])
def test_forwarded_prefix_becomes_the_root_path(site: Site, prefix: str, version: str) -> None:
    with client() as http:
        answer = seen(http.get(f"http://127.0.0.1:{site.port}{prefix}/items/7", headers=APP_HOST))
    assert answer["http_version"] == version
    assert answer["root_path"] == prefix
    assert answer["path"] == f"{prefix}/items/7"  # ASGI's path includes root_path
    assert answer["headers"]["x-original-prefix"] == ""  # Apache stripped the prefix
    assert answer["client"] == [CLIENT_ADDRESS, 0]
    assert answer["host"] == "app.example"


def test_post_body_passes_intact_over_h2c(site: Site) -> None:
    body = os.urandom(700_000)
    with client() as http:
        response = http.post(
            f"http://127.0.0.1:{site.port}/h2/upload", content=body, headers=APP_HOST
        )
    answer = seen(response)
    assert answer["http_version"] == "2"
    assert answer["body_length"] == len(body)
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_untrusted_proxy_headers_are_ignored(site: Site) -> None:
    with client() as http:
        answer = seen(http.get(f"http://127.0.0.1:{site.port}/distrustful/x", headers=APP_HOST))
    assert answer["client"][0] == PROXY_ADDRESS
    assert answer["client"][1] != 0
    assert answer["host"] == f"127.0.0.1:{answer['server'][1]}"
    assert answer["headers"]["x-forwarded-for"] == CLIENT_ADDRESS
    assert answer["headers"]["x-forwarded-host"] == "app.example"
