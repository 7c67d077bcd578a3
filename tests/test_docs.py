"""The documentation site builds with the README's command (warnings are errors) from a clean
copy of docs/ and examples/, so it cannot rot: the API reference has a page for every name
of ``meanfield.__all__``, the design document and the getting-started page render, and the
gallery (every example and every registered study, at their quick sizes) runs and shows
the figures it drew, each example downloadable as a notebook."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import meanfield as mf

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMAND = "python -m sphinx -W -b html docs docs/_build/html"
GENERATED = ("_build", "api", "_studies", "gallery", "study_gallery", "sg_execution_times.rst")
"""What a build writes into docs/ (docs/conf.py; in .gitignore): left out of the copy."""

TOOLS = ("sphinx", "sphinx_gallery", "furo", "myst_parser", "numpydoc")


def build(tmp_path: Path, gallery: bool) -> Path:
    """The README's command run on a clean copy of docs/ and examples/; the HTML directory."""
    for tool in TOOLS:
        pytest.importorskip(tool, reason="the docs tools are in the dev extra: pip install -e '.[dev]'")
    source = tmp_path / "src"
    shutil.copytree(ROOT / "docs", source / "docs", ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
    shutil.copytree(ROOT / "examples", source / "examples", ignore=shutil.ignore_patterns("*.png", "__pycache__"))
    command = shlex.split(COMMAND)
    assert command[:2] == ["python", "-m"]
    env = {**os.environ, "MEANFIELD_DOCS_GALLERY": "1" if gallery else "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, *command[1:], "--keep-going", "-q"], cwd=source, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    return source / "docs" / "_build" / "html"


def test_the_readme_gives_the_command():
    assert COMMAND in README.read_text()


def test_the_docs_tools_are_in_the_extras():
    """CI installs .[dev] only: the docs extra's packages are in it too."""
    import configparser

    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    names = {section: {re.split(r"[<>=!\[ ]", line.strip())[0] for line in extras["options.extras_require"][section]
                       .strip().splitlines()} for section in ("dev", "docs")}
    assert {"sphinx", "sphinx-gallery", "furo", "myst-parser", "numpydoc"} <= names["docs"] <= names["dev"]


def _public_functions():
    return [name for name in mf.__all__ if inspect.isfunction(getattr(mf, name))]


@pytest.mark.parametrize("name", _public_functions())
def test_every_public_function_has_numpydoc_sections(name):
    """Parameters names every parameter of the signature (a line may name several: ``resume,
    overwrite``), and Returns is there unless the function returns None."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    function = getattr(mf, name)
    doc = docscrape.FunctionDoc(function)
    documented = {part.strip().lstrip("*") for entry in doc["Parameters"] for part in entry.name.split(",")}
    signature = inspect.signature(function)
    assert set(signature.parameters) <= documented, f"{name}: Parameters lacks {set(signature.parameters) - documented}"
    if signature.return_annotation not in (None, "None"):
        assert doc["Returns"], f"{name}: no Returns section"


def _links(page: Path) -> set[str]:
    return set(re.findall(r'(?:href|src)="([^"#]+)', page.read_text()))


@pytest.mark.slow
def test_the_site_builds_and_lists_the_whole_api(tmp_path):
    """Without running the gallery (its pages are there, without output): every public name
    has its page, documenting ``meanfield.NAME`` from its docstring."""
    html = build(tmp_path, gallery=False)
    api = html / "api" / "index.html"
    links = _links(api)
    for name in mf.__all__:
        page = html / "api" / f"meanfield.{name}.html"
        assert f"meanfield.{name}.html" in links, name
        assert f'id="meanfield.{name}"' in page.read_text(), name
    for page in ("index.html", "getting_started.html", "design.html", "gallery/index.html",
                 "study_gallery/index.html"):
        assert (html / page).is_file(), page
    design = (html / "design.html").read_text()
    assert "6. Architecture" in design and "<em>θ Ψ" not in design  # rendered, its subscripts not emphasis
    for name in mf.bundled_studies():
        assert (html / "study_gallery" / f"plot_{name}.html").is_file(), name


@pytest.mark.slow
def test_the_gallery_runs_and_its_pages_show_their_figures(tmp_path):
    """Every example and every study's page shows at least one figure it drew (an image the
    build holds) and offers the example as a script and as a notebook."""
    html = build(tmp_path, gallery=True)
    examples = sorted((ROOT / "examples").glob("plot_*.py"))
    pages = [html / "gallery" / f"{path.stem}.html" for path in examples]
    pages += [html / "study_gallery" / f"plot_{name}.html" for name in mf.bundled_studies()]
    assert len(pages) >= 4 + len(mf.bundled_studies())
    for page in pages:
        links = _links(page)
        figures = [link for link in links if re.search(r"_images/sphx_glr_plot_\w+_\d{3}\.png$", link)]
        assert figures, f"{page.name} shows no figure"
        for link in figures:
            assert (page.parent / link).resolve().is_file(), (page.name, link)
        for suffix in (".py", ".ipynb"):
            downloads = [link for link in links if link.startswith("../_downloads/") and link.endswith(suffix)]
            assert downloads and (page.parent / downloads[0]).resolve().is_file(), (page.name, suffix)
