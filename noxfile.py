"""Sessions: `nox` runs lint, typecheck and tests; `nox -s bench` runs the benchmarks."""

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def lint(session):
    session.install("ruff==0.17.6")  # pinned: formatting rules change between versions
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session):
    session.install("mypy>=1.10", "h11>=0.16", "hpack>=4.1")
    # core/ is checked strictly on its own: it imports nothing from the rest of tiercel.
    session.run("mypy", "--strict", "core")


@nox.session(python=PYTHON)
def tests(session):
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON, name="httpsys-wine")
def httpsys_wine(session):
    """Only the HTTP.sys adapter's tests, in a Windows CPython under Wine (.ci/wine-stage).

    The tests session runs them too (tests/httpsys); this one is for working on the adapter.
    """
    session.install("-e", ".[test]")
    session.run("bash", ".ci/wine-stage", external=True)
    session.run("pytest", "tests/httpsys", *session.posargs)


@nox.session(python=PYTHON)
def bench(session):
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)
