"""docs/: every method has a page with the agreed sections; every ``experiments/...yaml`` the docs
name exists, parses, and is a complete LightningCLI config of the page's own method (or a
logger fragment); every relative link resolves."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
CONFIG_RE = re.compile(r"experiments/[A-Za-z0-9_./-]+?\.yaml")
LINK_RE = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")

CLASS_RE = re.compile(r"ltcl_lightning\.methods\.\w+\.[A-Z]\w*")
#: method page -> the model classes its configs may use: the ones the page names (none: any)
METHOD_PAGES = {p.name: set(CLASS_RE.findall(p.read_text())) for p in sorted((DOCS / "methods").glob("*.md"))}
RECIPE_MODELS = {
    yaml.safe_load(p.read_text())["model"]["class_path"] for p in (REPO / "experiments").rglob("*.yaml") if p.parent.name != "logger"
}
SECTIONS = (
    "## The method in three sentences",
    "## Reproduce",
    "## Differences from the official code",
    "## Published numbers",
    "## What we measured",
)


def _named_configs(page: Path) -> list[str]:
    return sorted(set(CONFIG_RE.findall(page.read_text())))


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_method_has_a_page_linked_from_the_index():
    index = (DOCS / "README.md").read_text()
    for name in METHOD_PAGES:
        assert f"(methods/{name})" in index, f"docs/README.md does not link methods/{name}"
    named = set().union(*METHOD_PAGES.values())
    for path in named:
        _import(path)  # a page names only classes that exist
    assert RECIPE_MODELS <= named, f"recipes use {sorted(RECIPE_MODELS - named)}, which no docs/methods page names"


@pytest.mark.parametrize("name", sorted(METHOD_PAGES))
def test_method_page_has_the_sections_and_names_a_config(name):
    text = (DOCS / "methods" / name).read_text()
    for s in SECTIONS:
        assert s in text, f"docs/methods/{name}: missing section {s!r}"
    measured = text.split("## What we measured", 1)[1].strip()
    assert measured, f"docs/methods/{name}: say what was measured, or 'Not measured yet'"
    assert _named_configs(DOCS / "methods" / name), f"docs/methods/{name} names no experiments/ config"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_named_configs_exist_and_are_cli_configs(page):
    allowed = (METHOD_PAGES.get(page.name) or None) if page.parent.name == "methods" else None
    for rel in _named_configs(page):
        path = REPO / rel
        assert path.is_file(), f"{page.relative_to(REPO)} names {rel}, which does not exist"
        cfg = yaml.safe_load(path.read_text())
        assert isinstance(cfg, dict), f"{rel} is not a YAML mapping"
        if path.parent.name == "logger":
            # a fragment for a second --config: a logger and callbacks appended with `callbacks+`
            trainer = cfg.get("trainer", {})
            assert "class_path" in trainer.get("logger", {}), f"{rel}: no trainer.logger.class_path"
            assert "callbacks+" in trainer, f"{rel}: use `callbacks+:` so the first config's callbacks are kept"
            for cb in trainer["callbacks+"]:
                _import(cb["class_path"])
            _import(trainer["logger"]["class_path"])
            continue
        for key in ("model", "data"):
            assert isinstance(cfg.get(key), dict) and "class_path" in cfg[key], f"{rel}: no {key}.class_path"
            _import(cfg[key]["class_path"])
        assert "trainer" in cfg, f"{rel}: no trainer section"
        if allowed is not None:
            assert cfg["model"]["class_path"] in allowed, (
                f"{page.relative_to(REPO)} names {rel}, whose model is {cfg['model']['class_path']}, not {sorted(allowed)}"
            )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_resolve(page):
    for target in LINK_RE.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"


def test_config_regex_finds_paths_in_prose():
    assert CONFIG_RE.findall("run `ltcl fit --config experiments/cifar100_lt/proco.yaml`, or experiments/a-b/c_d.yaml.") == [
        "experiments/cifar100_lt/proco.yaml",
        "experiments/a-b/c_d.yaml",
    ]


@pytest.mark.parametrize(
    "recipe",
    sorted(
        p.relative_to(REPO).as_posix()
        for p in (REPO / "experiments").rglob("*.yaml")
        if p.parent.name != "logger" and p.name != "quickstart.yaml"
    ),
)
def test_recipe_header_names_the_page_with_its_differences(recipe):
    """Said once: a recipe's header names the recipe and its source, and links the method page
    that lists the differences from the official code (the page names the recipe's model)."""
    text = (REPO / recipe).read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    pages = re.findall(r"Differences from the official code: docs/methods/(\w+\.md)", header)
    assert len(pages) == 1, f"{recipe}: the header should link its docs/methods page once"
    model = yaml.safe_load(text)["model"]["class_path"]
    assert not METHOD_PAGES[pages[0]] or model in METHOD_PAGES[pages[0]], f"{recipe}: docs/methods/{pages[0]} does not name {model}"


@pytest.mark.parametrize("name", sorted(n for n, classes in METHOD_PAGES.items() if classes))
def test_method_docstring_links_its_page(name):
    """Said once: the page lists the differences from the official code; the module docstring
    of the page's method (the first class it names) links it instead of repeating them."""
    first = CLASS_RE.search((DOCS / "methods" / name).read_text()).group(0)
    module = importlib.import_module(first.rpartition(".")[0])
    assert f"docs/methods/{name}" in (module.__doc__ or ""), f"{module.__name__}'s docstring should link docs/methods/{name}"
