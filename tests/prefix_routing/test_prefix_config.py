"""The apps file: the README's example, listen addresses derived from prefixes, --urls checks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from tiercel.apps.prefix_router import check_listeners, listen_urls, load_config, parse_config
from tiercel.core.addresses import parse_urls
from tiercel.core.errors import ConfigError

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Port sharing by URL prefix", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README section has no toml example"
    return match.group(1)


def test_readme_example_is_a_valid_apps_file() -> None:
    entries = parse_config(tomllib.loads(readme_example()), "README")
    assert [entry.name for entry in entries] == ["api", "site", "admin"]
    assert entries[0].spec == "shop.api:app"
    admin = entries[2]
    assert admin.spec is None and admin.module is not None
    assert admin.module.command == ("tiercel", "shop.admin:app")
    assert admin.module.path_base == ""
    assert listen_urls(entries) in ("http://[::]:8080", "http://0.0.0.0:8080")


def entries_for(*prefixes: str) -> list:
    apps = "".join(
        f'[[app]]\nname = "a{i}"\nprefixes = ["{prefix}"]\napp = "m:a{i}"\n'
        for i, prefix in enumerate(prefixes)
    )
    return parse_config(tomllib.loads(apps))


@pytest.mark.parametrize(
    ("prefixes", "urls"),
    [
        (["http://127.0.0.1:81/"], "http://127.0.0.1:81"),
        (["http://127.0.0.1:81/", "http://[::1]:81/x/"], "http://127.0.0.1:81;http://[::1]:81"),
        (["http://127.0.0.1:81/", "http://+:81/x/"], "http://ANY:81"),
        (["http://example.com:81/", "http://127.0.0.1:82/"], "http://ANY:81;http://127.0.0.1:82"),
        (["https://+/", "http://*/"], "http://ANY:80;https://ANY:443"),
    ],
)
def test_listen_urls_from_prefixes(prefixes: list[str], urls: str) -> None:
    derived = listen_urls(entries_for(*prefixes))
    assert derived in (urls.replace("ANY", "[::]"), urls.replace("ANY", "0.0.0.0"))


def test_urls_must_cover_every_prefix() -> None:
    entries = entries_for("http://+:81/", "https://+:8443/x/")
    check_listeners(entries, tuple(parse_urls("http://127.0.0.1:81;https://0.0.0.0:8443")))
    with pytest.raises(ConfigError, match=r"app 'a1': prefix 'https://\+:8443/x/' is on https"):
        check_listeners(entries, tuple(parse_urls("http://127.0.0.1:81;http://0.0.0.0:8443")))


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no apps; add at least one \[\[app\]\]"):
        load_config(empty)
    named_twice = tmp_path / "twice.toml"
    named_twice.write_text(
        '[[app]]\nname = "x"\nprefixes = ["http://+/a/"]\napp = "m:a"\n'
        '[[app]]\nname = "x"\nprefixes = ["http://+/b/"]\napp = "m:b"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="two apps are named 'x'"):
        load_config(named_twice)
