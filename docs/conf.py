"""Sphinx configuration of meanfield's documentation site.

Build it with the README's command (warnings are errors)::

    python -m sphinx -W -b html docs docs/_build/html

The site follows the code without editing: the API reference is written from
``meanfield.__all__`` (one page per public name, from its docstring), and the gallery's
"Bundled studies" section from the registry of studies (``mf.bundled_studies()``): one
example per study, its quick check and its figure. Both are written here, at the start of
every build, into docs/api/ and docs/_studies/ (generated, not in git). The hand-written
examples are in examples/. ``MEANFIELD_DOCS_GALLERY=0`` builds the site without running the
examples (the gallery's pages then have no output: a fast check of everything else).
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this checkout's meanfield, installed or not
sys.path.insert(0, str(DOCS))  # gallery_scraper

import meanfield  # noqa: E402

project = "meanfield"
author = "the meanfield authors"
copyright = "the meanfield authors"  # noqa: A001 - Sphinx's name for it
version = release = meanfield.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "studies", "**/*.ipynb", "**/*.py.md5", "**/*.codeobj.json", "_studies/*.rst"]
templates_path = ["_templates"]

# --- the theme -------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"meanfield {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# --- Markdown (docs/design.md) ---------------------------------------------------------------
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3  # design.md's own links to its sections (#11-network-risk-gradient-flow)

# --- the API reference: autodoc + autosummary, numpydoc sections -----------------------------
autosummary_generate = True
autosummary_imported_members = True  # the public names are imported into meanfield from its layers
autosummary_ignore_module_all = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signature line is in the docstring's Parameters
autodoc_default_options = {"members": True, "undoc-members": False, "exclude-members": "model_config"}
autodoc_class_signature = "separated"  # a class's page opens with its docstring, not pydantic's constructor
numpydoc_show_class_members = False  # autodoc's :members: documents the methods
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# There is no network where this is built: nothing is fetched (no intersphinx).
suppress_warnings = ["config.cache"]


def _kind(obj) -> str:
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return "Exceptions"
    return "Classes" if inspect.isclass(obj) else "Functions"


def write_api_page(path: Path = DOCS / "api" / "index.rst") -> Path:
    """docs/api/index.rst: every name of ``meanfield.__all__``, functions, classes and
    exceptions, each in an autosummary table whose stubs autosummary writes beside it."""
    groups: dict[str, list[str]] = {"Functions": [], "Classes": [], "Exceptions": []}
    for name in meanfield.__all__:
        groups[_kind(getattr(meanfield, name))].append(name)
    lines = ["API reference", "=============", "",
             "Everything is a name of ``import meanfield as mf`` (``mf.__all__``); what each returns",
             "is in its page. The design behind them, equations included, is in :doc:`../design`.", "",
             ".. currentmodule:: meanfield", ""]
    for title, names in groups.items():
        if names:
            lines += [title, "-" * len(title), "", ".. autosummary::", "   :toctree: .",
                      "   :nosignatures:", "", *(f"   {name}" for name in names), ""]
    _write_if_changed(path, "\n".join(lines))
    return path


STUDY_EXAMPLE = '''"""
{title}
{underline}

The bundled study ``{name}``: {summary}.

{citation}

Its reduced check (``quick=True``) runs a smaller grid in seconds to a minute and measures
what that grid can, beside the published values; ``mf.study("{name}")`` runs the full
study (``meanfield study {name}`` on the command line), whose numbers are in :doc:`/studies`.
"""

import meanfield as mf

result = mf.study("{name}", quick=True)
print(result)  # result.table is this table as a pandas DataFrame, the same columns for every study

# %%
# The study's figure, drawn from the quick check's results.
result.figure("{name}.png")
'''


def write_study_examples(directory: Path = DOCS / "_studies") -> list[str]:
    """One gallery example per registered study (docs/_studies/plot_NAME.py) and the
    section's header; examples of studies no longer registered are removed."""
    from meanfield.studies import studies

    registry = studies()
    directory.mkdir(exist_ok=True)
    _write_if_changed(directory / "GALLERY_HEADER.rst", "\n".join([
        "Bundled studies", "---------------", "",
        "Every study registered in ``meanfield.studies`` (``mf.bundled_studies()``), each at its",
        "reduced size: its table beside the published values and its figure. A new study (one",
        "module of ``meanfield/studies/``) gets its page here at the next build.", ""]))
    for name, entry in registry.items():
        title = f"{name}: {entry.title}"
        _write_if_changed(directory / f"plot_{name}.py", STUDY_EXAMPLE.format(
            title=title, underline="=" * len(title), name=name, summary=entry.title, citation=entry.citation))
    for stale in directory.glob("plot_*.py"):
        if stale.stem[len("plot_"):] not in registry:
            stale.unlink()
    return sorted(registry)


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file holds it already (an unchanged file is not rebuilt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


write_api_page()
write_study_examples()

# --- the gallery -----------------------------------------------------------------------------
from gallery_scraper import FigureFiles  # noqa: E402

sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples"), str(DOCS / "_studies")],
    "gallery_dirs": ["gallery", "study_gallery"],
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib", FigureFiles()),
    "capture_repr": ("_repr_html_",),  # tables; not the path a figure call returns
    "plot_gallery": os.environ.get("MEANFIELD_DOCS_GALLERY", "1") != "0",
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "show_signature": False,
    "min_reported_time": 1,
    "matplotlib_animations": False,
}
