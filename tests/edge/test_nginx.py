"""tiercel behind a real nginx (the README's "Deploying" example): nginx terminates TLS and
forwards X-Forwarded-For/-Proto/-Host/-Prefix over kept-alive HTTP/1.1 upstream connections.
One tiercel trusts nginx, a second one trusts only 10.0.0.0/8 and so must ignore the headers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from edge_peers import CLIENT_ADDRESS, PROXY_ADDRESS, Proxy, Tiercel, client, seen
from processes import free_port
from support import require_peer, write_certificate

pytestmark = pytest.mark.peer("nginx")
APP_HOST = {"host": "app.example"}

# The README's nginx example, plus a TLS listener (to show X-Forwarded-Proto) and a second
# upstream whose tiercel does not trust nginx. nginx runs its workers as "nobody" when started by
# root, and those could not reach pytest's private temporary directory: {user} keeps them root.
CONFIG = """\
{user}
worker_processes 1;
error_log stderr info;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;

  upstream tiercel {{
    server 127.0.0.1:{trusting};
    keepalive 8;
  }}
  upstream distrustful {{
    server 127.0.0.1:{distrustful};
  }}

  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl;
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    client_max_body_size 10m;

    location / {{
      proxy_pass http://tiercel;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }}
    location /app/ {{
      proxy_pass http://tiercel/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Prefix /app;
    }}
    location /distrustful/ {{
      proxy_pass http://distrustful/;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }}
  }}
}}
"""


@dataclass
class Site:
    http: int
    https: int
    tls: ssl.SSLContext
    trusting: Tiercel
    distrustful: Tiercel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    nginx = require_peer("nginx")
    directory = tmp_path_factory.mktemp("nginx")
    pems = write_certificate(directory, "app.example", "127.0.0.1")  # the config names them
    tls = ssl.create_default_context(cafile=str(pems.ca))

    with contextlib.ExitStack() as stack:
        trusting = stack.enter_context(
            Tiercel("--forwarded-headers", "--allowed-hosts", "app.example")
        )
        distrustful = stack.enter_context(
            Tiercel("--forwarded-headers", "--forwarded-trusted", "10.0.0.0/8")
        )
        http, https = free_port(), free_port()
        config = directory / "nginx.conf"
        config.write_text(
            CONFIG.format(
                user="user root;" if os.geteuid() == 0 else "",
                dir=directory,
                http=http,
                https=https,
                trusting=trusting.port,
                distrustful=distrustful.port,
            )
        )
        base = [nginx, "-e", "stderr", "-p", str(directory), "-c", str(config)]
        stack.enter_context(
            Proxy("nginx", [*base, "-g", "daemon off;"], [*base, "-t"], directory, [http, https])
        )
        yield Site(http, https, tls, trusting, distrustful)


def test_app_sees_the_client_scheme_and_host_nginx_saw(site: Site) -> None:
    with client(site.tls) as http:
        answer = seen(http.get(f"https://127.0.0.1:{site.https}/where?x=1", headers=APP_HOST))
    assert answer["client"] == [CLIENT_ADDRESS, 0]  # X-Forwarded-For carries no port
    assert answer["scheme"] == "https"
    assert answer["host"] == "app.example"
    assert answer["path"] == "/where"
    assert answer["root_path"] == ""
    assert answer["http_version"] == "1.1"
    # What the forwarded values replaced: nginx's own connection and the upstream's name.
    assert answer["headers"]["x-original-for"].startswith(f"{PROXY_ADDRESS}:")
    assert answer["headers"]["x-original-proto"] == "http"
    assert answer["headers"]["x-original-host"] == "tiercel"


def test_prefix_becomes_the_root_path(site: Site) -> None:
    with client() as http:
        answer = seen(http.get(f"http://127.0.0.1:{site.http}/app/items/7", headers=APP_HOST))
    assert answer["root_path"] == "/app"
    assert answer["path"] == "/app/items/7"  # ASGI's path includes root_path
    assert answer["scheme"] == "http"
    assert answer["client"] == [CLIENT_ADDRESS, 0]


def test_upstream_connections_are_kept_alive(site: Site) -> None:
    with client() as http:
        upstream_ends = [
            seen(http.get(f"http://127.0.0.1:{site.http}/n/{i}", headers=APP_HOST))["headers"][
                "x-original-for"
            ]
            for i in range(6)
        ]
    # nginx's address and port on its side of each upstream connection: fewer distinct
    # connections than requests means tiercel kept them open and nginx reused them.
    assert len(set(upstream_ends)) < len(upstream_ends), upstream_ends


def test_post_body_passes_intact(site: Site) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    with client(site.tls) as http:
        answer = seen(
            http.post(f"https://127.0.0.1:{site.https}/upload", content=body, headers=APP_HOST)
        )
    assert answer["method"] == "POST"
    assert answer["body_length"] == len(body)
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_tiercels_400_reaches_the_client_and_its_log(site: Site) -> None:
    with client() as http:
        response = http.get(f"http://127.0.0.1:{site.http}/", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert response.headers.get("server", "").startswith("nginx")  # nginx passed it on
    # As in ASP.NET, a forwarded set whose X-Forwarded-Host is not allowed is not applied at all,
    # so the line names nginx's connection and the upstream Host nginx wrote.
    line = site.trusting.wait_for(r"^rejected 400 from .*$").group(0)
    assert f"from {PROXY_ADDRESS}:" in line, line
    assert line.endswith("[host_not_allowed]"), line


def test_untrusted_proxy_headers_are_ignored(site: Site) -> None:
    with client(site.tls) as http:
        answer = seen(http.get(f"https://127.0.0.1:{site.https}/distrustful/x", headers=APP_HOST))
    assert answer["client"][0] == PROXY_ADDRESS
    assert answer["client"][1] != 0  # nginx's own port: the socket peer
    assert answer["scheme"] == "http"
    assert answer["host"] == "distrustful"
    assert answer["headers"]["x-forwarded-for"] == CLIENT_ADDRESS  # left for the app to see
    assert not any(name.startswith("x-original-") for name in answer["headers"])
