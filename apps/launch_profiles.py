"""Launch profiles: ``tiercel --launch-profile NAME``, as ``dotnet run --launch-profile`` does it.

Where profiles come from, in this order (the order also decides the default profile):

1. ``Properties/launchSettings.json`` under the project directory (the working directory the
   command starts in), which is the only place ``dotnet run`` looks; or, for Python projects
   without a ``Properties`` folder, ``launchSettings.json`` in the project directory itself.
   Having both is an error, so nobody edits the file that is not read.
2. ``[tool.tiercel.profiles.NAME]`` tables in the project's ``pyproject.toml``.

A name that appears twice, compared case-insensitively, is an error, whether inside one file or
across the two. The JSON file is JSON with comments and trailing commas, which is what
Visual Studio writes and ``dotnet run`` accepts (``strip_json_comments`` turns it into JSON
without moving a single character, so ``json``'s line and column numbers stay true).

Only ``Project`` profiles (serve the app in this process, the ``dotnet run`` meaning) and
``Executable`` profiles (run ``executablePath`` instead) can be used; ``IISExpress``, ``IIS``
and ``Docker`` belong to Visual Studio. Without ``--launch-profile``, the first ``Project``
profile is used, as ``dotnet run`` does.

Everything here is reading and deciding, with no side effects, until ``apply_launch_plan``:
that one writes ``os.environ``, changes the working directory and, for an ``Executable``
profile, replaces this process with the program.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from tiercel.core.errors import ConfigError

LAUNCH_SETTINGS_PATHS = (Path("Properties") / "launchSettings.json", Path("launchSettings.json"))
PYPROJECT = Path("pyproject.toml")
PROJECT = "Project"
EXECUTABLE = "Executable"
USABLE_COMMANDS = (PROJECT, EXECUTABLE)
VISUAL_STUDIO_COMMANDS = frozenset({"IISExpress", "IIS", "Docker", "DockerCompose", "WSL2"})
# Keys of a launchSettings.json profile that mean something only to Visual Studio or to a
# browser; accepted everywhere and ignored.
IGNORED_KEYS = frozenset(
    {"launchbrowser", "launchurl", "dotnetrunmessages", "inspecturi", "sslport", "$schema"}
)
# Profile keys matched case-insensitively, as dotnet run does; the value is the canonical name.
PROFILE_KEYS = {
    key.lower(): key
    for key in (
        "commandName",
        "applicationUrl",
        "environmentVariables",
        "commandLineArgs",
        "workingDirectory",
        "executablePath",
    )
}
# Set for the app, like dotnet run's DOTNET_LAUNCH_PROFILE, so it can tell which profile ran it.
PROFILE_NAME_VARIABLE = "TIERCEL_LAUNCH_PROFILE"
# Set by `tiercel module` for the app processes it starts: they must bind the port it chose, so
# a profile they would only pick up by default is not applied.
MODULE_PORT_VARIABLE = "TIERCEL_PORT"


class LaunchProfileError(ConfigError):
    """A launch settings file or profile that cannot be used; the message is one line."""


@dataclass(frozen=True)
class LaunchProfile:
    """One profile as written in its file (nothing expanded yet)."""

    name: str
    command_name: str
    source: str  # the file, as shown to the user (relative to the project directory)
    application_url: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    command_line_args: str | tuple[str, ...] | None = None  # a string is split shell-like
    working_directory: str | None = None
    executable_path: str | None = None

    @property
    def usable(self) -> bool:
        return self.command_name in USABLE_COMMANDS


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with its variables expanded and its arguments split, ready to apply."""

    profile: LaunchProfile
    urls: str | None
    environment: dict[str, str]
    arguments: list[str]
    working_directory: Path
    executable: str | None


@dataclass
class LaunchPlan:
    """What the command will do: its parsed arguments, and the profile to apply, if any."""

    args: argparse.Namespace
    argv: list[str]  # the profile's arguments followed by the explicit ones
    resolved: ResolvedProfile | None = None
    program_args: list[str] = field(default_factory=list)  # after `--`, for an Executable
    notes: list[str] = field(default_factory=list)  # lines to log once logging is set up
    # For tiercel processes this one starts (workers): the profile folded into the arguments,
    # since they start in the profile's working directory with its variables already set.
    child_argv: list[str] = field(default_factory=list)


# -- JSON with comments ----------------------------------------------------------------------


def strip_json_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments and trailing commas blanked out.

    Comments become spaces (their newlines are kept) and a trailing comma becomes a space, so
    every remaining character keeps its line and column, and a JSON error points at the right
    place in the file. Comment markers inside strings are string content, not comments. An
    unterminated block comment raises ``ValueError`` naming where it opened.
    """
    out = list(text)
    pending_comma: int | None = None  # index of a comma not yet followed by a value
    previous = ""  # the last character outside strings and comments that is not whitespace
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            pending_comma = None
            previous = char
            index += 1
            while index < length and text[index] != '"':
                if text[index] == "\\":
                    index += 1
                if index < length and text[index] == "\n":
                    break  # an unterminated string: json reports it
                index += 1
            index += 1
        elif text.startswith("//", index):
            while index < length and text[index] not in "\r\n":
                out[index] = " "
                index += 1
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                line, column = _line_column(text, index)
                raise ValueError(f"unterminated /* comment (line {line} column {column})")
            for position in range(index, end + 2):
                if text[position] not in "\r\n":
                    out[position] = " "
            index = end + 2
        elif char in "}]":
            if pending_comma is not None:
                out[pending_comma] = " "
                pending_comma = None
            previous = char
            index += 1
        elif char == ",":
            # Trailing only after a value: "[,]" and "[1,,]" stay errors, as in .NET.
            pending_comma = None if previous in ("", "[", "{", ",", ":") else index
            previous = char
            index += 1
        else:
            if not char.isspace():
                pending_comma = None
                previous = char
            index += 1
    return "".join(out)


def _line_column(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers keys differing only in case: profile names are compared
    case-insensitively, as dotnet run compares them."""

    case_duplicates: list[str]


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    result = _JsonObject(pairs)
    seen: dict[str, str] = {}
    result.case_duplicates = []
    for key, _ in pairs:
        if key.casefold() in seen:
            result.case_duplicates.append(f"{seen[key.casefold()]!r} and {key!r}")
        seen[key.casefold()] = key
    return result


# Where a parser's message says the error is: json's "msg: line 3 column 5 (char 40)", our
# comment stripper's "msg (line 3 column 5)", tomllib's "msg (at line 3, column 5)".
_ERROR_POSITION = re.compile(r"(?:: | \()(?:at )?line (\d+),? column (\d+)")


def _not_valid(source: str, kind: str, error: ValueError) -> LaunchProfileError:
    """``source:LINE:COLUMN: not valid JSON (reason)`` from a parser's error."""
    text = str(error)
    match = _ERROR_POSITION.search(text)
    if match is None:
        where, reason = source, text
    else:
        where, reason = f"{source}:{match.group(1)}:{match.group(2)}", text[: match.start()]
    return LaunchProfileError(
        f"{where}: not valid {kind} ({reason}); fix the file or run with --no-launch-profile"
    )


def parse_launch_settings(text: str, source: str) -> list[LaunchProfile]:
    """The profiles of a launchSettings.json file, in file order."""
    if text.startswith("\ufeff"):  # Visual Studio writes a byte order mark
        text = text[1:]
    try:
        document = json.loads(strip_json_comments(text), object_pairs_hook=_json_object)
    except ValueError as exc:  # json.JSONDecodeError, or an unterminated /* comment
        raise _not_valid(source, "JSON", exc) from None
    if not isinstance(document, dict) or not isinstance(document.get("profiles"), dict):
        raise LaunchProfileError(
            f'{source}: expected an object with a "profiles" object in it '
            '({"profiles": {"NAME": {"commandName": "Project", ...}}})'
        )
    profiles: _JsonObject = document["profiles"]
    duplicates = profiles.case_duplicates
    if duplicates:
        raise LaunchProfileError(
            f"{source}: profile names differ only in case ({'; '.join(duplicates)}); "
            "names are case-insensitive, rename one"
        )
    return [_profile_from_json(name, body, source) for name, body in profiles.items()]


def _profile_from_json(name: str, body: Any, source: str) -> LaunchProfile:
    where = f"{source}: profile {name!r}"
    values = _profile_values(body, where, "an object", strict=False)
    return _build_profile(name, values, source, where, default_command="")  # "": not usable


def _profile_values(body: Any, where: str, kind: str, strict: bool) -> dict[str, Any]:
    """The profile's keys under their canonical names (matched case-insensitively). An unknown
    key is tooling's business in launchSettings.json, as in dotnet run; with ``strict`` (a
    pyproject table only tiercel reads) it is an error, so a typo is not silently ignored."""
    if not isinstance(body, dict):
        raise LaunchProfileError(f"{where} must be {kind}")
    values: dict[str, Any] = {}
    for key, value in body.items():
        canonical = PROFILE_KEYS.get(key.lower())
        if canonical is not None:
            values[canonical] = value
        elif strict and key.lower() not in IGNORED_KEYS:
            raise LaunchProfileError(
                f"{where}: unknown key {key!r}; the keys are " + ", ".join(PROFILE_KEYS.values())
            )
    return values


# -- pyproject.toml --------------------------------------------------------------------------


def parse_pyproject_profiles(text: str, source: str) -> list[LaunchProfile]:
    """The ``[tool.tiercel.profiles.NAME]`` tables of a pyproject.toml, in file order."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _not_valid(source, "TOML", exc) from None
    tool = document.get("tool", {})
    tiercel = tool.get("tiercel", {}) if isinstance(tool, dict) else {}
    profiles = tiercel.get("profiles", {}) if isinstance(tiercel, dict) else {}
    if not isinstance(profiles, dict):
        raise LaunchProfileError(
            f"{source}: tool.tiercel.profiles must be a table of [tool.tiercel.profiles.NAME]"
        )
    result = []
    for name, body in profiles.items():
        where = f"{source}: [tool.tiercel.profiles.{name}]"
        values = _profile_values(body, where, "a table", strict=True)
        result.append(_build_profile(name, values, source, where, default_command=PROJECT))
    _reject_duplicate_names(result)
    return result


# -- the profile model -----------------------------------------------------------------------


def _build_profile(
    name: str, values: dict[str, Any], source: str, where: str, default_command: str | None
) -> LaunchProfile:
    command_name = values.get("commandName", default_command)
    if not isinstance(command_name, str):
        raise LaunchProfileError(f'{where}: "commandName" must be a string such as "Project"')
    environment = values.get("environmentVariables", {})
    if not isinstance(environment, dict):
        raise LaunchProfileError(
            f'{where}: "environmentVariables" must be an object of NAME: "value" pairs'
        )
    for variable, value in environment.items():
        if not variable or "=" in variable or "\0" in variable:
            raise LaunchProfileError(
                f"{where}: {variable!r} cannot be an environment variable name "
                "(it must be non-empty, without '=' or NUL)"
            )
        if not isinstance(value, str):
            scalar = isinstance(value, (bool, int, float))
            hint = f" (write {json.dumps(json.dumps(value))})" if scalar else ""
            raise LaunchProfileError(
                f"{where}: environment variable {variable} must be a string{hint}"
            )
        if "\0" in value:
            raise LaunchProfileError(f"{where}: environment variable {variable} holds a NUL")
    arguments = values.get("commandLineArgs")
    if isinstance(arguments, list):
        if not all(isinstance(item, str) for item in arguments):
            raise LaunchProfileError(f'{where}: "commandLineArgs" must hold only strings')
        arguments = tuple(arguments)
    elif arguments is not None and not isinstance(arguments, str):
        raise LaunchProfileError(
            f'{where}: "commandLineArgs" must be a string (or a list of strings)'
        )
    urls = values.get("applicationUrl")
    if isinstance(urls, list) and all(isinstance(item, str) for item in urls):
        urls = ";".join(urls)
    elif urls is not None and not isinstance(urls, str):
        raise LaunchProfileError(
            f'{where}: "applicationUrl" must be a string of ";"-separated URLs'
        )
    for key in ("workingDirectory", "executablePath"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise LaunchProfileError(f'{where}: "{key}" must be a string')
    return LaunchProfile(
        name=name,
        command_name=command_name,
        source=source,
        application_url=urls,
        environment=tuple(environment.items()),
        command_line_args=arguments,
        working_directory=values.get("workingDirectory"),
        executable_path=values.get("executablePath"),
    )


def _reject_duplicate_names(profiles: Sequence[LaunchProfile]) -> None:
    seen: dict[str, LaunchProfile] = {}
    for profile in profiles:
        other = seen.get(profile.name.casefold())
        if other is not None:
            places = (
                f"in {profile.source}"
                if other.source == profile.source
                else f"in {other.source} and {profile.source}"
            )
            raise LaunchProfileError(
                f"launch profile {profile.name!r} is defined twice ({other.name!r} and "
                f"{profile.name!r} {places}); names are case-insensitive, rename or remove one"
            )
        seen[profile.name.casefold()] = profile


def load_profiles(project_dir: Path) -> tuple[list[LaunchProfile], list[str]]:
    """Every profile of the project, launchSettings.json's first; and the files read."""
    found = [path for path in LAUNCH_SETTINGS_PATHS if (project_dir / path).is_file()]
    if len(found) > 1:
        raise LaunchProfileError(
            f"both {found[0].as_posix()} and {found[1].as_posix()} exist; keep one "
            "(Properties/launchSettings.json is where dotnet run looks)"
        )
    profiles: list[LaunchProfile] = []
    files: list[str] = []
    for relative in found:
        source = relative.as_posix()
        profiles += parse_launch_settings(_read(project_dir / relative, source), source)
        files.append(source)
    pyproject = project_dir / PYPROJECT
    if pyproject.is_file():
        from_toml = parse_pyproject_profiles(_read(pyproject, PYPROJECT.name), PYPROJECT.name)
        if from_toml:
            profiles += from_toml
            files.append(PYPROJECT.name)
    _reject_duplicate_names(profiles)
    return profiles, files


def _read(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LaunchProfileError(f"cannot read {source}: {reason}") from None


def select_profile(profiles: Sequence[LaunchProfile], name: str | None) -> LaunchProfile | None:
    """The profile named (case-insensitively), or by default the first ``Project`` one."""
    if name is None:
        return next((p for p in profiles if p.command_name == PROJECT), None)
    for profile in profiles:
        if profile.name.casefold() == name.casefold():
            if not profile.usable:
                raise LaunchProfileError(
                    f"launch profile {profile.name!r} in {profile.source} "
                    f"{_why_unusable(profile)}; tiercel runs "
                    f"{' and '.join(USABLE_COMMANDS)} profiles"
                )
            return profile
    if not profiles:
        raise LaunchProfileError(
            f"--launch-profile {name}: no launch profiles found (looked for "
            f"{', '.join(p.as_posix() for p in LAUNCH_SETTINGS_PATHS)} and "
            "[tool.tiercel.profiles.NAME] in pyproject.toml)"
        )
    raise LaunchProfileError(
        f"no launch profile named {name!r}; available: {describe_profiles(profiles)}"
    )


def describe_profiles(profiles: Sequence[LaunchProfile]) -> str:
    return ", ".join(
        repr(p.name) + ("" if p.usable else f" ({p.command_name or 'no commandName'}, not usable)")
        for p in profiles
    )


def _why_unusable(profile: LaunchProfile) -> str:
    if not profile.command_name:
        return 'has no "commandName"'
    if profile.command_name in VISUAL_STUDIO_COMMANDS:
        return f"has commandName {profile.command_name!r}, which only Visual Studio runs"
    return f"has an unknown commandName {profile.command_name!r}"


# -- variables -------------------------------------------------------------------------------

_DOLLAR_REFERENCE = re.compile(r"\$(?:\{([^}]+)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_variables(text: str, environ: Mapping[str, str]) -> str:
    """``%NAME%`` (as launchSettings.json and .NET write it), ``${NAME}`` and ``$NAME``.

    A reference to a variable that is not set stays as written, as both .NET's
    ``Environment.ExpandEnvironmentVariables`` and ``os.path.expandvars`` leave it; after an
    unknown ``%NAME``, its closing ``%`` may open the next reference, as in .NET. One pass:
    a value put in is never expanded again.
    """
    pieces: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%":
            end = text.find("%", index + 1)
            name = text[index + 1 : end] if end > index + 1 else ""
            if name in environ and name:
                pieces.append(environ[name])
                index = end + 1
                continue
        elif char == "$":
            match = _DOLLAR_REFERENCE.match(text, index)
            if match and (match.group(1) or match.group(2)) in environ:
                pieces.append(environ[match.group(1) or match.group(2)])
                index = match.end()
                continue
        pieces.append(char)
        index += 1
    return "".join(pieces)


def split_arguments(arguments: str | tuple[str, ...] | None, where: str) -> list[str]:
    """commandLineArgs as a list: a string is split with POSIX shell quoting rules."""
    if arguments is None:
        return []
    if isinstance(arguments, tuple):
        return list(arguments)
    try:
        return shlex.split(arguments)
    except ValueError as exc:
        raise LaunchProfileError(f"{where}: commandLineArgs {arguments!r}: {exc}") from None


def resolve_profile(
    profile: LaunchProfile, environ: Mapping[str, str], project_dir: Path
) -> ResolvedProfile:
    """Expand every value against the environment tiercel started with.

    Values see the starting environment, not each other, as in dotnet run. Arguments are split
    before they are expanded, so a variable's value is always one argument, spaces and all.
    """
    where = f"launch profile {profile.name!r} in {profile.source}"
    environment = {name: expand_variables(value, environ) for name, value in profile.environment}
    arguments = [
        expand_variables(argument, environ)
        for argument in split_arguments(profile.command_line_args, where)
    ]
    urls = None
    if profile.application_url is not None:
        expanded = expand_variables(profile.application_url, environ)
        urls = ";".join(part.strip() for part in expanded.split(";") if part.strip()) or None
    working_directory = project_dir
    if profile.working_directory:
        working_directory = project_dir / expand_variables(profile.working_directory, environ)
        if not working_directory.is_dir():
            raise LaunchProfileError(
                f"{where}: workingDirectory {profile.working_directory!r} is not a directory"
            )
    executable = None
    if profile.command_name == EXECUTABLE:
        executable = _find_executable(profile, environ, environment, project_dir, where)
    return ResolvedProfile(
        profile=profile,
        urls=urls,
        environment=environment,
        arguments=arguments,
        working_directory=working_directory,
        executable=executable,
    )


def _find_executable(
    profile: LaunchProfile,
    environ: Mapping[str, str],
    environment: Mapping[str, str],
    project_dir: Path,
    where: str,
) -> str:
    if not profile.executable_path:
        raise LaunchProfileError(
            f'{where}: an Executable profile needs "executablePath", the program to run'
        )
    path = expand_variables(profile.executable_path, environ)
    if os.sep in path or (os.altsep and os.altsep in path):
        candidate = project_dir / path  # an absolute path stays absolute
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    else:
        search_path = environment.get("PATH", environ.get("PATH"))
        found = shutil.which(path, path=search_path)
        if found:
            return found
    raise LaunchProfileError(f"{where}: executablePath {path!r} is not an executable program")


# -- the command line ------------------------------------------------------------------------


def add_launch_profile_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("launch profiles")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--launch-profile",
        metavar="NAME",
        help="use this profile from Properties/launchSettings.json, launchSettings.json or "
        "[tool.tiercel.profiles.NAME] in pyproject.toml (default: the first Project profile)",
    )
    exclusive.add_argument(
        "--no-launch-profile", action="store_true", help="read no launch settings"
    )


def plan_launch(
    make_parser: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str],
    project_dir: Path,
    environ: Mapping[str, str],
) -> LaunchPlan:
    """Parse the command line and pick the profile; nothing is applied yet.

    The profile's commandLineArgs are parsed first and the explicit arguments on top of them,
    so an explicit flag wins, and APP may come from the profile. Usage errors in the explicit
    arguments exit through argparse as before; everything about the profile raises
    ``LaunchProfileError``.
    """
    parser = make_parser()
    argv = list(argv)
    own, program_args = argv, []
    if "--" in argv:  # after `--`: the arguments of an Executable profile's program
        split = argv.index("--")
        own, program_args = argv[:split], argv[split + 1 :]
    args = parser.parse_args(own)
    if args.no_launch_profile or (args.launch_profile is None and MODULE_PORT_VARIABLE in environ):
        return _plan_without_profile(parser, argv, own, program_args)
    profiles, files = load_profiles(project_dir)
    profile = select_profile(profiles, args.launch_profile)
    if profile is None:
        plan = _plan_without_profile(parser, argv, own, program_args)
        if profiles:
            plan.notes.append(
                f"no usable launch profile in {' or '.join(files)} (profiles: "
                f"{describe_profiles(profiles)}); starting without one"
            )
        return plan
    resolved = resolve_profile(profile, environ, project_dir)
    if profile.command_name == EXECUTABLE:
        given = sorted(_flags(_without_profile_options(own)) - {"--log-level"})
        if given or args.app:
            raise LaunchProfileError(
                f"launch profile {profile.name!r} runs {resolved.executable}, so tiercel "
                f"options do not apply ({', '.join(given) or args.app}); put the program's "
                "arguments in commandLineArgs or after --"
            )
        return LaunchPlan(args=args, argv=own, resolved=resolved, program_args=program_args)
    if program_args:
        own = argv  # `--` was argparse's, not a program's
    where = f"launch profile {profile.name!r} in {profile.source}: commandLineArgs"
    if {"--launch-profile", "--no-launch-profile"} & _flags(resolved.arguments):
        raise LaunchProfileError(f"{where} cannot choose launch profiles")
    from_profile = _parse_quietly(make_parser(), resolved.arguments, where)
    profile_arguments = resolved.arguments
    if from_profile.app is not None and args.app is not None:  # the explicit APP wins
        profile_arguments = _without_app(resolved.arguments, from_profile, make_parser)
    app_from_profile = from_profile.app
    args = parser.parse_args(own, namespace=from_profile)
    if args.app is None:  # an optional positional is reset to its default by the second parse
        args.app = app_from_profile
    child_argv = ["--no-launch-profile", *profile_arguments, *_without_profile_options(own)]
    if args.urls is None and resolved.urls is not None:
        args.urls = resolved.urls  # explicit --urls > applicationUrl > TIERCEL_URLS
        child_argv[1:1] = ["--urls", resolved.urls]
    return LaunchPlan(
        args=args, argv=[*resolved.arguments, *own], resolved=resolved, child_argv=child_argv
    )


def _plan_without_profile(
    parser: argparse.ArgumentParser, argv: list[str], own: list[str], program_args: list[str]
) -> LaunchPlan:
    if program_args:
        return LaunchPlan(args=parser.parse_args(argv), argv=argv, child_argv=argv)
    return LaunchPlan(args=parser.parse_args(own), argv=own, child_argv=argv)


def _without_app(
    arguments: list[str],
    parsed: argparse.Namespace,
    make_parser: Callable[[], argparse.ArgumentParser],
) -> list[str]:
    """The profile's arguments without its APP, found by trying each token that spells it:
    the right one leaves every other value as it was."""
    wanted = {**vars(parsed), "app": None}
    for index, token in enumerate(arguments):
        if token == parsed.app:
            rest = arguments[:index] + arguments[index + 1 :]
            try:
                if vars(_parse_quietly(make_parser(), rest, "")) == wanted:
                    return rest
            except LaunchProfileError:
                continue
    raise LaunchProfileError(f"cannot tell APP {parsed.app!r} from the other arguments")


def _without_profile_options(arguments: list[str]) -> list[str]:
    """``arguments`` without ``--launch-profile NAME`` (argparse already accepted them, so an
    option that abbreviates ``--launch-profile`` can only be that one)."""
    result: list[str] = []
    skip_value = False
    for index, argument in enumerate(arguments):
        if skip_value:
            skip_value = False
            continue
        if argument == "--":
            result += arguments[index:]
            break
        name, equals, _ = argument.partition("=")
        if len(name) > 2 and "--launch-profile".startswith(name):
            skip_value = not equals
            continue
        result.append(argument)
    return result


def _flags(arguments: Sequence[str]) -> set[str]:
    return {a.split("=")[0] for a in arguments if a.startswith("--")}


def _parse_quietly(
    parser: argparse.ArgumentParser, arguments: list[str], where: str
) -> argparse.Namespace:
    def error(message: str) -> NoReturn:
        raise LaunchProfileError(f"{where}: {message}")

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_args(arguments)


# -- applying ---------------------------------------------------------------------------------


def apply_launch_plan(plan: LaunchPlan, log: Callable[[str], None]) -> int | None:
    """Apply the chosen profile to this process; an exit code if the command is over.

    Project: the profile's variables go into ``os.environ`` (before the app is imported) and
    the working directory changes. Executable: the program replaces this process (on Windows,
    which cannot do that, it runs as a child and its exit code is returned).
    """
    for note in plan.notes:
        log(note)
    resolved = plan.resolved
    if resolved is None:
        return None
    profile = resolved.profile
    log(f"using launch profile {profile.name!r} from {profile.source}")
    environment = {**resolved.environment, PROFILE_NAME_VARIABLE: profile.name}
    if resolved.executable is not None:
        child_env = {**os.environ, **environment}
        if resolved.urls:
            child_env["TIERCEL_URLS"] = resolved.urls  # what ASPNETCORE_URLS is to dotnet run
        command = [resolved.executable, *resolved.arguments, *plan.program_args]
        sys.stdout.flush()
        sys.stderr.flush()
        if os.name == "posix":
            os.chdir(resolved.working_directory)
            os.execve(resolved.executable, command, child_env)
        return subprocess.call(command, env=child_env, cwd=resolved.working_directory)
    os.environ.update(environment)
    os.chdir(resolved.working_directory)
    return None
