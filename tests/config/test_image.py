"""The Docker image holds the code and nothing of a developer's checkout: no virtualenv,
secret, database, demo password or history. No Docker engine is needed: the build context
is computed by applying .dockerignore as Docker does (moby's patternmatcher)."""

import os
import re
from pathlib import Path

import pytest

from tests.live import ROOT

# What `make run` and `make test` leave in a checkout, whether or not this one holds them.
LEFT_BY_A_DEVELOPER = [
    ".env", ".env.production", "db.sqlite3", "db.sqlite3-journal", "var/demo-credentials.txt",
    "var/storage/datasets/digits/manifests/1.json", "var/simulation.png", ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/django/__init__.py", ".git/config", ".git/objects/ab/cdef",
    "test-artifacts/ops.png", "bench/out/ingest.json", "staticfiles/flywheel.css",
    "flywheel/__pycache__/models.cpython-311.pyc", ".pytest_cache/v/cache/nodeids", "tls/server.key",
    "gunicorn.log", "sim/old.sqlite3",
]
SECRET_OR_LOCAL = re.compile(r"(^|/)(\.env($|\.)|\.venv/|\.git/|var/|db\.sqlite3|[^/]*\.sqlite3$|[^/]*\.key$|"
                             r"test-artifacts/|__pycache__/|\.pytest_cache/)")


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
                if i + 1 < len(pattern) and pattern[i + 1] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if exclusion else line).lstrip("/")
        rules.append((exclusion, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules) -> bool:
    """Docker's MatchesOrParentMatches: a pattern matches the file or one of its directories;
    the last pattern that matches decides, a '!' one taking the file back."""
    parents = path.split("/")[:-1]
    matched = False
    for exclusion, regex in rules:
        if exclusion != matched:
            continue
        match = bool(regex.match(path)) or any(regex.match("/".join(parents[:i + 1])) for i in range(len(parents)))
        if match:
            matched = not exclusion
    return matched


def build_context(paths, rules) -> list[str]:
    return sorted(p for p in paths if not ignored(p, rules))


def checkout_files() -> list[str]:
    found = []
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", "node_modules")]
        found += [str(Path(directory, f).relative_to(ROOT)) for f in files]
    return found


@pytest.fixture(scope="module")
def rules():
    return dockerignore_rules((ROOT / ".dockerignore").read_text())


def test_the_build_context_holds_no_secret_database_virtualenv_or_history(rules):
    context = build_context(checkout_files() + LEFT_BY_A_DEVELOPER, rules)
    leaked = [p for p in context if SECRET_OR_LOCAL.search(p) and p != ".env.example"]  # the documented template
    assert leaked == []


def test_the_build_context_holds_what_the_service_needs(rules):
    context = set(build_context(checkout_files(), rules))
    for needed in ("manage.py", "requirements.txt", "pyproject.toml", "config/settings.py", "flywheel/models.py",
                   "flywheel/migrations/0001_initial.py", "labeling/static/labeling/workspace.js",
                   "templates/base.html", "static/flywheel.css", ".env.example"):
        assert needed in context, needed


def test_the_matcher_reads_patterns_as_docker_does():
    rules = dockerignore_rules("var\n**/*.pyc\n*.md\n!README.md\n")
    assert ignored("var/storage/a", rules) and ignored("a/b/c.pyc", rules) and ignored("CHANGES.md", rules)
    assert not ignored("README.md", rules) and not ignored("docs/api.md", rules) and not ignored("vars.py", rules)


def test_the_image_records_its_code_version():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG FLYWHEEL_CODE_VERSION" in dockerfile
    assert "ENV FLYWHEEL_CODE_VERSION=${FLYWHEEL_CODE_VERSION}" in dockerfile
    assert "\nUSER " in dockerfile  # the service does not run as root
