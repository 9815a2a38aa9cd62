"""Launch profiles without running anything: the JSON-with-comments reader, both file formats,
selection, variable expansion and how the command line is put together."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tiercel.apps.cli import build_parser
from tiercel.apps.launch_profiles import (
    LaunchProfile,
    LaunchProfileError,
    expand_variables,
    load_profiles,
    parse_launch_settings,
    parse_pyproject_profiles,
    plan_launch,
    resolve_profile,
    select_profile,
    strip_json_comments,
)

# -- JSON with comments and trailing commas --------------------------------------------------

STRIP_CASES = [
    ('{"a": 1} // end', {"a": 1}),
    ('{"a": /* inline */ 1}', {"a": 1}),
    ('{\n  // line\n  "a": 1,\n}', {"a": 1}),
    ("[1, 2, 3,]", [1, 2, 3]),
    ("[1, 2, 3 , \n ]", [1, 2, 3]),
    ('{"a": [1,], "b": {"c": 2,},}', {"a": [1], "b": {"c": 2}}),
    ('{"a": 1, // trailing comma, then a comment\n}', {"a": 1}),
    ('{"a": 1, /* c */ }', {"a": 1}),
    ('{"url": "http://x//y"}', {"url": "http://x//y"}),
    ('{"c": "/* not a comment */"}', {"c": "/* not a comment */"}),
    ('{"q": "say \\"hi\\" // still text", "n": 1}', {"q": 'say "hi" // still text', "n": 1}),
    ('{"b": "back\\\\"} // the string ended at the quote', {"b": "back\\"}),
    ('{"comma": ",}"}', {"comma": ",}"}),
    ('{"a": 1 /* multi\nline\n*/ }', {"a": 1}),
    ("/**/[/***/1/*/*/]", [1]),
]


@pytest.mark.parametrize(("text", "value"), STRIP_CASES)
def test_strip_json_comments(text, value):
    stripped = strip_json_comments(text)
    assert json.loads(stripped) == value
    assert len(stripped) == len(text)
    assert [i for i, c in enumerate(stripped) if c == "\n"] == [
        i for i, c in enumerate(text) if c == "\n"
    ]


@pytest.mark.parametrize("text", ["[1,,]", "[,]", '{"a": 1,,}', "{,}"])
def test_only_one_trailing_comma_is_forgiven(text):
    with pytest.raises(json.JSONDecodeError):
        json.loads(strip_json_comments(text))


def test_unterminated_block_comment_says_where_it_opened():
    with pytest.raises(ValueError, match=r"line 2 column 3"):
        strip_json_comments('{"a": 1,\n  /* never closed\n}')


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
COMMENTS = st.sampled_from(["", " // c, }", ' /* "x" ] */', " /*/ //*/", " // \\"])


@given(JSON_VALUES)
def test_plain_json_passes_through_unchanged(value):
    text = json.dumps(value, ensure_ascii=False)
    assert strip_json_comments(text) == text


@given(JSON_VALUES, st.lists(COMMENTS, min_size=1), st.booleans())
def test_comments_and_trailing_commas_do_not_change_the_value(value, comments, commas):
    # indent=1 puts every token boundary at a line end, where a comment may always go.
    lines = json.dumps(value, indent=1, ensure_ascii=False).split("\n")
    decorated = []
    for index, line in enumerate(lines):
        closing = index + 1 < len(lines) and lines[index + 1].strip() in ("}", "]", "},", "],")
        comma = "," if commas and closing and not line.rstrip().endswith(("{", "[")) else ""
        decorated.append(line + comma + comments[index % len(comments)])
    text = "\n".join(decorated)
    stripped = strip_json_comments(text)
    assert json.loads(stripped) == value
    assert len(stripped) == len(text)


# -- launchSettings.json ---------------------------------------------------------------------

SETTINGS = """\
{
  "$schema": "https://json.schemastore.org/launchsettings.json",
  "iisSettings": {"iisExpress": {"applicationUrl": "http://localhost:1234", "sslPort": 0}},
  "profiles": {
    "IIS Express": {"commandName": "IISExpress", "launchBrowser": true},
    "http": {
      "commandName": "Project",
      "dotnetRunMessages": true,
      "launchBrowser": true,
      "applicationUrl": "http://localhost:5080",
      "environmentVariables": {"ASPNETCORE_ENVIRONMENT": "Development"},
    },
    "tool": {"commandName": "Executable", "executablePath": "python3"},
    "https": {
      "CommandName": "Project",
      "applicationUrl": "https://localhost:7080;http://localhost:5080",
      "commandLineArgs": "app:app --certfile 'dev cert.pem'",
    },
  },
}
"""


def test_reads_what_visual_studio_writes():
    profiles = parse_launch_settings("\ufeff" + SETTINGS, "Properties/launchSettings.json")
    assert [p.name for p in profiles] == ["IIS Express", "http", "tool", "https"]
    assert [p.usable for p in profiles] == [False, True, True, True]
    http = profiles[1]
    assert http.application_url == "http://localhost:5080"
    assert http.environment == (("ASPNETCORE_ENVIRONMENT", "Development"),)
    assert profiles[3].command_name == "Project"  # keys are case-insensitive, as in dotnet run
    assert profiles[2].executable_path == "python3"


def test_default_is_the_first_project_profile_and_names_are_case_insensitive():
    profiles = parse_launch_settings(SETTINGS, "launchSettings.json")
    assert select_profile(profiles, None).name == "http"
    assert select_profile(profiles, "HTTPS").name == "https"
    assert select_profile(profiles, "Tool").name == "tool"


def test_unknown_name_lists_the_available_ones():
    profiles = parse_launch_settings(SETTINGS, "launchSettings.json")
    with pytest.raises(LaunchProfileError) as caught:
        select_profile(profiles, "staging")
    message = str(caught.value)
    assert "'staging'" in message
    assert "'IIS Express' (IISExpress, not usable), 'http', 'tool', 'https'" in message
    assert "\n" not in message


def test_a_visual_studio_profile_asked_for_by_name_is_refused():
    profiles = parse_launch_settings(SETTINGS, "launchSettings.json")
    with pytest.raises(LaunchProfileError, match="'IISExpress', which only Visual Studio runs"):
        select_profile(profiles, "iis express")


def test_no_usable_default_is_not_an_error():
    profiles = parse_launch_settings(
        '{"profiles": {"IIS": {"commandName": "IIS"}}}', "launchSettings.json"
    )
    assert select_profile(profiles, None) is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{\n  "profiles": {\n    "a": {"commandName": "Project"\n  }\n}', ":5:2"),
        ('{"profiles": {}}\n// fine\n{', ":3:1"),
        ('{\n "profiles": {"a": {"commandName": Project}}}', ":2:36"),
        ("{\n  /* open\n", ":2:3"),
    ],
)
def test_malformed_json_names_file_line_and_column(text, where):
    with pytest.raises(LaunchProfileError) as caught:
        parse_launch_settings(text, "Properties/launchSettings.json")
    message = str(caught.value)
    assert message.startswith("Properties/launchSettings.json" + where + ": not valid JSON")
    assert "--no-launch-profile" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[]", 'a "profiles" object'),
        ('{"profiles": []}', 'a "profiles" object'),
        ('{"profiles": {"a": 1}}', "must be an object"),
        ('{"profiles": {"a": {"commandName": 1}}}', '"commandName" must be a string'),
        ('{"profiles": {"a": {"commandName": "Project", "environmentVariables": []}}}', "NAME"),
        (
            '{"profiles": {"a": {"commandName": "Project", "environmentVariables": {"N": 8}}}}',
            'environment variable N must be a string (write "8")',
        ),
        ('{"profiles": {"a": {"commandName": "Project", "commandLineArgs": 3}}}', "a string"),
        (
            '{"profiles": {"a": {"environmentVariables": {"DEBUG": true}}}}',
            'environment variable DEBUG must be a string (write "true")',
        ),
        ('{"profiles": {"a": {"environmentVariables": {"A=B": ""}}}}', "cannot be an environment"),
        ('{"profiles": {"a": {"environmentVariables": {"": ""}}}}', "cannot be an environment"),
        ('{"profiles": {"dev": {}, "Dev": {}}}', "differ only in case"),
    ],
)
def test_bad_profiles_get_one_line(text, problem):
    with pytest.raises(LaunchProfileError) as caught:
        parse_launch_settings(text, "launchSettings.json")
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


# -- pyproject.toml --------------------------------------------------------------------------

PYPROJECT = """\
[project]
name = "demo"

[tool.tiercel.profiles.dev]
applicationUrl = ["http://127.0.0.1:8000", "http://[::1]:8000"]
commandLineArgs = ["demo.main:app", "--root-path", "/my app"]
environmentVariables = { APP_ENV = "development" }

[tool.tiercel.profiles.worker]
commandName = "Executable"
executablePath = "python3"
commandLineArgs = "-m demo.worker --once"
"""


def test_pyproject_profiles():
    profiles = parse_pyproject_profiles(PYPROJECT, "pyproject.toml")
    dev, worker = profiles
    assert dev.command_name == "Project"  # the default in pyproject.toml
    assert dev.application_url == "http://127.0.0.1:8000;http://[::1]:8000"
    assert dev.command_line_args == ("demo.main:app", "--root-path", "/my app")
    assert dev.environment == (("APP_ENV", "development"),)
    assert worker.command_name == "Executable"
    assert parse_pyproject_profiles('[project]\nname = "x"\n', "pyproject.toml") == []


def test_pyproject_typo_is_an_error():
    with pytest.raises(LaunchProfileError, match=r"unknown key 'aplicationUrl'.*applicationUrl"):
        parse_pyproject_profiles(
            '[tool.tiercel.profiles.dev]\naplicationUrl = "x"\n', "pyproject.toml"
        )


def test_pyproject_syntax_error_names_line_and_column():
    with pytest.raises(LaunchProfileError, match=r"^pyproject.toml:2:\d+: not valid TOML"):
        parse_pyproject_profiles("[tool.tiercel.profiles.dev]\ncommandName = \n", "pyproject.toml")


def write(directory: Path, relative: str, text: str) -> None:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_launch_settings_come_before_pyproject(tmp_path):
    write(tmp_path, "pyproject.toml", PYPROJECT)
    write(tmp_path, "Properties/launchSettings.json", SETTINGS)
    profiles, files = load_profiles(tmp_path)
    assert files == ["Properties/launchSettings.json", "pyproject.toml"]
    assert [p.name for p in profiles][-2:] == ["dev", "worker"]
    assert select_profile(profiles, None).name == "http"


def test_the_same_name_in_both_files_is_an_error(tmp_path):
    write(tmp_path, "pyproject.toml", PYPROJECT)
    write(tmp_path, "launchSettings.json", '{"profiles": {"DEV": {"commandName": "Project"}}}')
    with pytest.raises(LaunchProfileError, match=r"in launchSettings\.json and pyproject\.toml"):
        load_profiles(tmp_path)


def test_both_launch_settings_locations_is_an_error(tmp_path):
    write(tmp_path, "launchSettings.json", SETTINGS)
    write(tmp_path, "Properties/launchSettings.json", SETTINGS)
    with pytest.raises(LaunchProfileError, match="keep one"):
        load_profiles(tmp_path)


def test_no_files_no_profiles(tmp_path):
    assert load_profiles(tmp_path) == ([], [])


# -- variables -------------------------------------------------------------------------------

ENVIRON = {"HOME": "/home/ann", "PORT": "8080", "EMPTY": "", "SPACED": "a b"}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("%HOME%/app", "/home/ann/app"),
        ("${HOME}/app", "/home/ann/app"),
        ("$HOME/app", "/home/ann/app"),
        ("http://localhost:%PORT%;http://[::1]:$PORT", "http://localhost:8080;http://[::1]:8080"),
        ("%NOPE% and $NOPE and ${NOPE}", "%NOPE% and $NOPE and ${NOPE}"),
        ("100% sure, 50%", "100% sure, 50%"),
        ("%NOPE%HOME%", "%NOPE/home/ann"),  # .NET's scan: an unknown name's % opens the next
        ("[%EMPTY%]", "[]"),
        ("%%", "%%"),
        ("$", "$"),
        ("$1", "$1"),
        ("${HOME", "${HOME"),
        ("%HOME", "%HOME"),
    ],
)
def test_expand_variables(text, expanded):
    assert expand_variables(text, ENVIRON) == expanded


NAMES = st.sampled_from(["A", "B_2", "LONG_NAME"])
LITERALS = st.text(alphabet=st.characters(blacklist_characters="%$"))


@given(
    st.lists(st.tuples(LITERALS, NAMES, st.sampled_from(["%{}%", "${{{}}}", "${}"]))),
    st.dictionaries(NAMES, st.text(), min_size=3),
)
def test_expansion_puts_each_value_in_once(pieces, environ):
    # values may hold % and $ themselves: they must come out as they are, never expanded again
    text = expected = ""
    for literal, name, form in pieces:
        text += literal + form.format(name) + "/"  # "/" ends a $NAME
        expected += literal + environ[name] + "/"
    assert expand_variables(text, environ) == expected


@given(LITERALS, st.dictionaries(NAMES, st.text()))
def test_text_without_references_is_unchanged(text, environ):
    assert expand_variables(text, environ) == text


def test_values_are_expanded_against_the_starting_environment(tmp_path):
    profile = LaunchProfile(
        name="dev",
        command_name="Project",
        source="launchSettings.json",
        application_url=" http://127.0.0.1:%PORT% ; ",
        environment=(("FIRST", "$HOME"), ("SECOND", "$FIRST")),
        command_line_args="--root-path $SPACED 'x y'",
    )
    resolved = resolve_profile(profile, ENVIRON, tmp_path)
    assert resolved.urls == "http://127.0.0.1:8080"
    assert resolved.environment == {"FIRST": "/home/ann", "SECOND": "$FIRST"}
    # split first, expanded after: a value with spaces stays one argument
    assert resolved.arguments == ["--root-path", "a b", "x y"]
    assert resolved.working_directory == tmp_path


def test_bad_quoting_and_missing_directories_are_errors(tmp_path):
    base = LaunchProfile(name="dev", command_name="Project", source="launchSettings.json")
    with pytest.raises(LaunchProfileError, match="No closing quotation"):
        resolve_profile(
            LaunchProfile(**{**base.__dict__, "command_line_args": "'open"}), {}, tmp_path
        )
    with pytest.raises(LaunchProfileError, match="workingDirectory 'nowhere'"):
        resolve_profile(
            LaunchProfile(**{**base.__dict__, "working_directory": "nowhere"}), {}, tmp_path
        )
    with pytest.raises(LaunchProfileError, match='needs "executablePath"'):
        resolve_profile(
            LaunchProfile(**{**base.__dict__, "command_name": "Executable"}), {}, tmp_path
        )


# -- the command line ------------------------------------------------------------------------

DEV = """{"profiles": {"dev": {
  "commandName": "Project",
  "applicationUrl": "http://127.0.0.1:7001",
  "commandLineArgs": "profile_app:app --adapter trio --max-request-body-size none --sni a=b",
  "workingDirectory": "src",
}}}"""


@pytest.fixture
def project(tmp_path):
    write(tmp_path, "Properties/launchSettings.json", DEV)
    (tmp_path / "src").mkdir()
    return tmp_path


def plan(project: Path, *argv: str, **environ: str):
    return plan_launch(build_parser, list(argv), project, environ)


def test_profile_arguments_apply_and_explicit_ones_win(project):
    launch = plan(project, "--adapter", "threads", "--sni", "c=d")
    args = launch.args
    assert launch.resolved.profile.name == "dev"
    assert args.app == "profile_app:app"  # APP from commandLineArgs
    assert args.adapter == "threads"
    assert args.max_request_body_size is None
    assert args.sni == ["a=b", "c=d"]
    assert args.urls == "http://127.0.0.1:7001"
    assert launch.resolved.working_directory == project / "src"
    assert launch.argv[:2] == ["profile_app:app", "--adapter"]


def test_explicit_app_and_urls_beat_the_profile(project):
    args = plan(project, "mine:app", "--urls", "http://127.0.0.1:0").args
    assert args.app == "mine:app"
    assert args.urls == "http://127.0.0.1:0"


def test_application_url_beats_the_environment_variable(project):
    # TIERCEL_URLS is read later, only when args.urls is still empty
    assert plan(project, TIERCEL_URLS="http://0.0.0.0:1").args.urls == "http://127.0.0.1:7001"


def test_no_launch_profile_skips_even_a_broken_file(project):
    write(project, "Properties/launchSettings.json", "{ broken")
    launch = plan(project, "--no-launch-profile", "x:app")
    assert launch.resolved is None
    assert launch.args.app == "x:app"
    assert launch.args.urls is None


def test_both_options_together_are_a_usage_error(project):
    with pytest.raises(SystemExit) as caught:
        plan(project, "--launch-profile", "dev", "--no-launch-profile")
    assert caught.value.code == 2


def test_module_children_skip_the_default_profile_but_not_a_named_one(project):
    assert plan(project, TIERCEL_PORT="4000").resolved is None
    assert plan(project, "--launch-profile", "DEV", TIERCEL_PORT="4000").resolved is not None


def test_bad_profile_arguments_name_the_profile(project):
    write(
        project,
        "Properties/launchSettings.json",
        '{"profiles": {"dev": {"commandName": "Project", "commandLineArgs": "--adapter tokio"}}}',
    )
    with pytest.raises(LaunchProfileError) as caught:
        plan(project)
    message = str(caught.value)
    assert message.startswith("launch profile 'dev' in Properties/launchSettings.json")
    assert "tokio" in message


def test_profile_arguments_cannot_pick_a_profile(project):
    write(
        project,
        "Properties/launchSettings.json",
        '{"profiles": {"a": {"commandName": "Project", "commandLineArgs": "--launch-profile b"}}}',
    )
    with pytest.raises(LaunchProfileError, match="cannot choose launch profiles"):
        plan(project)


def test_a_double_dash_without_an_executable_profile_is_argparse_business(tmp_path):
    assert plan(tmp_path, "--", "app:app").args.app == "app:app"


def test_executable_profile(tmp_path):
    write(
        tmp_path,
        "launchSettings.json",
        json.dumps(
            {
                "profiles": {
                    "run": {
                        "commandName": "Executable",
                        "executablePath": sys.executable,
                        "commandLineArgs": "-c 'print(1)'",
                    }
                }
            }
        ),
    )
    launch = plan(tmp_path, "--launch-profile", "run", "--", "extra")
    assert launch.resolved.executable == sys.executable
    assert launch.resolved.arguments == ["-c", "print(1)"]
    assert launch.program_args == ["extra"]
    with pytest.raises(LaunchProfileError, match=r"tiercel options do not apply \(--urls\)"):
        plan(tmp_path, "--launch-profile", "run", "--urls", "http://127.0.0.1:0")
    write(
        tmp_path,
        "launchSettings.json",
        '{"profiles": {"run": {"commandName": "Executable", "executablePath": "./missing"}}}',
    )
    with pytest.raises(LaunchProfileError, match=r"'\./missing' is not an executable program"):
        plan(tmp_path, "--launch-profile", "run")


@pytest.mark.parametrize(
    "choose", [["--launch-profile", "dev"], ["--launch-profile=DEV"], ["--launch", "dev"]]
)
def test_workers_get_the_profile_folded_into_their_arguments(project, choose):
    launch = plan(project, *choose, "--adapter", "threads", "x:app")
    assert launch.child_argv == [
        "--no-launch-profile",
        "--urls",
        "http://127.0.0.1:7001",
        *["--adapter", "trio", "--max-request-body-size", "none"],  # the explicit APP wins
        *["--sni", "a=b", "--adapter", "threads", "x:app"],
    ]
    child = plan(project / "src", *launch.child_argv)
    assert child.resolved is None
    assert {**vars(child.args), "no_launch_profile": False, "launch_profile": None} == {
        **vars(launch.args),
        "launch_profile": None,
    }


def test_without_a_profile_workers_get_the_arguments_as_given(tmp_path):
    assert plan(tmp_path, "a:app", "--urls", "x").child_argv == ["a:app", "--urls", "x"]


def test_workers_get_the_profile_app(project):
    launch = plan(project)
    assert launch.child_argv[3] == "profile_app:app"
    assert plan(project / "src", *launch.child_argv).args.app == "profile_app:app"


def test_profiles_without_a_known_command_are_not_usable():
    profiles = parse_launch_settings(
        '{"profiles": {"bare": {}, "odd": {"commandName": "Odd"},'
        ' "ok": {"commandName": "Project"}}}',
        "launchSettings.json",
    )
    assert select_profile(profiles, None).name == "ok"
    with pytest.raises(LaunchProfileError, match='has no "commandName"'):
        select_profile(profiles, "bare")
    with pytest.raises(LaunchProfileError, match="an unknown commandName 'Odd'"):
        select_profile(profiles, "odd")
    with pytest.raises(LaunchProfileError, match=r"'bare' \(no commandName, not usable\)"):
        select_profile(profiles, "other")
