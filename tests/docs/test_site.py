"""The documentation site's generated reference covers the whole policy model and the CLI, and the docs say which
MCP protocol revisions the installed SDK speaks. ``make docs`` (in ``make test``) builds the site with --strict;
these tests read the generators it runs (``docs/hooks.py``) and the pages."""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from mcp_guard import CODES
from mcp_guard._policy.conditions import CONTEXT_PATHS, OPERATORS
from mcp_guard._policy.model import PolicyDocument

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
import hooks  # noqa: E402  (docs/ is not a package)


def models_of(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold (lists, maps and unions looked through), once each."""
    found: list[type[BaseModel]] = []
    pending: list[object] = [model]
    while pending:
        current = pending.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            if current not in found:
                found.append(current)
                pending += [info.annotation for info in current.model_fields.values()]
        else:
            pending += list(typing.get_args(current))
    return found


def names_of(model: type[BaseModel]) -> set[str]:
    """Every key a policy file may use for the model's fields: names, aliases and validation aliases."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        choices = getattr(info.validation_alias, "choices", None) or []
        names.update(str(c) for c in choices)
    return names


def test_every_policy_field_of_every_object_is_in_the_reference() -> None:
    page = hooks.render((DOCS / "reference" / "policy.md").read_text(encoding="utf-8"))
    models = models_of(PolicyDocument)
    assert {m.__name__ for m in models} >= {"PolicyDocument", "Rule", "AllTools", "Limit", "Approval"}
    for model in models:
        for name in names_of(model):
            assert f"`{name}`" in page, f"{model.__name__}.{name} is not in the policy reference"
    assert "on_deny" in page  # an alias is named where its field is described


def test_every_condition_operator_path_and_code_is_in_the_reference() -> None:
    page = hooks.render((DOCS / "reference" / "policy.md").read_text(encoding="utf-8"))
    for op in OPERATORS:
        assert f"| `{op}` |" in page, op
    for path in CONTEXT_PATHS:
        assert f"| `{path}` |" in page, path
    for code in CODES:
        assert f"| `{code}` |" in page, code


def test_the_generators_refuse_what_they_cannot_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    # A new operator (or code) in the model without a line in the docs stops the build instead of being left out.
    monkeypatch.delitem(hooks.OPERATORS, "glob")
    with pytest.raises(ValueError, match="operators"):
        hooks.condition_ops()
    monkeypatch.delitem(hooks.CODES, "hidden")
    with pytest.raises(ValueError, match="codes"):
        hooks.codes()
    with pytest.raises(ValueError, match="unknown generated section"):
        hooks.render("<!-- generated: nothing -->")


def test_the_cli_reference_has_every_subcommand() -> None:
    from mcp_guard._cli.main import build_parser

    page = hooks.render((DOCS / "reference" / "cli.md").read_text(encoding="utf-8"))
    names = [name for name, _ in hooks._subcommands(build_parser())]
    assert {"validate", "explain", "schema", "test", "usage", "audit", "init", "proxy", "inbox"} <= set(names)
    for name in names:
        assert f"## mcp-guard {name}\n" in page
        assert f"usage: mcp-guard {name}" in page


def test_the_docs_name_the_protocol_revisions_the_installed_sdk_negotiates() -> None:
    from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS
    from mcp.types import LATEST_PROTOCOL_VERSION

    proxy = (DOCS / "guides" / "proxy.md").read_text(encoding="utf-8")
    section = proxy[proxy.index("## MCP protocol revisions") :]
    for revision in SUPPORTED_PROTOCOL_VERSIONS:
        assert revision in section, revision
    assert f"| {LATEST_PROTOCOL_VERSION} |" in section


def test_every_page_is_in_the_navigation_and_every_marker_is_known() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == set(re.findall(r": ([\w/-]+\.md)$", nav, re.MULTILINE))
    for page in pages:
        for name in hooks.MARKER.findall((DOCS / page).read_text(encoding="utf-8")):
            assert name in hooks.GENERATORS, (page, name)


def test_the_readme_links_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), link
    assert len(readme.splitlines()) < 300  # the first hour; the rest lives in docs/
