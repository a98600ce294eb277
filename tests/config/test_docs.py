"""The docs stay true to the code: every API route is in the contract (docs/api.md), every
route the contract lists exists, and every link between the docs leads somewhere."""

import re

from django.urls import URLPattern, URLResolver, get_resolver

from tests.live import ROOT

API = (ROOT / "docs" / "api.md").read_text()


def _routes(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def _shape(path: str) -> str:
    """A path with every parameter, however it is written (<int:run_id>, {id}), as {}."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", "/" + path.lstrip("/"))


def test_every_api_route_is_in_the_contract():
    documented = {_shape(p) for p in re.findall(r"`(/api/[^`\s]*)`", API)}
    routes = {_shape(r) for r in _routes(get_resolver().url_patterns) if r.startswith("api/")}
    assert routes, "no API routes found?"
    assert sorted(routes - documented) == []


def test_every_route_the_contract_lists_exists():
    index = API[API.index("## Endpoint index"):]
    listed = {_shape(p) for p in re.findall(r"`(/api/[^`\s]*)`", index)}
    routes = {_shape(r) for r in _routes(get_resolver().url_patterns)}
    assert sorted(listed - routes) == []


def test_every_link_in_the_readme_and_the_docs_leads_to_a_file():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
