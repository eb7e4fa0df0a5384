"""Sphinx configuration for rxws's documentation.

Build it with ``bash docs/build.sh`` (HTML with warnings as errors, then the doctests),
from a virtual environment with the ``docs`` extra: ``pip install -e ".[docs]"``.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
# jupyter_core warns about its data paths unless told which scheme to use.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

import rxws  # noqa: E402

project = "rxws"
author = "rxws contributors"
copyright = "rxws contributors"
release = rxws.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "myst_nb",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"rxws {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- autodoc and napoleon (Google-style docstrings) ------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# ``Attributes:`` sections become field lists, so an attribute that autodoc also
# documents on its own is not described twice.
napoleon_use_ivar = True
napoleon_custom_sections = [("Example", "examples_style")]

# -- doctest: the examples in the guides and the docstrings ---------------------------

doctest_global_setup = """
import asyncio
import logging
# The examples break connections on purpose; keep rxws's warnings out of the build log.
logging.getLogger("rxws").addHandler(logging.NullHandler())
import rxws
from rxws import *
from rxws.ops import idle_timeout, reconnect, rotate, stream_filter
from rxws.limits import Limits, RateBudget, Shards, TokenBucket
url = "ws://127.0.0.1:9/stream"
feed = rxws.connect(url)
"""
doctest_default_flags = (
    __import__("doctest").ELLIPSIS
    | __import__("doctest").NORMALIZE_WHITESPACE
    | __import__("doctest").DONT_ACCEPT_TRUE_FOR_1
)

# -- notebooks: executed at build time by myst-nb -------------------------------------

NOTEBOOKS_SRC = ROOT / "notebooks"
NOTEBOOKS_DST = HERE / "_notebooks"  # generated; ignored by git


def _copy_notebooks() -> None:
    """Copy notebooks/*.ipynb next to the sources (Sphinx reads only its own folder)."""
    NOTEBOOKS_DST.mkdir(exist_ok=True)
    wanted = {p.name for p in NOTEBOOKS_SRC.glob("*.ipynb")}
    for stale in NOTEBOOKS_DST.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name in wanted:
        src, dst = NOTEBOOKS_SRC / name, NOTEBOOKS_DST / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


_copy_notebooks()

nb_execution_mode = "force"  # run every notebook on every build, against the demo exchange
nb_execution_timeout = 60  # seconds per cell
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# -- the API reference is complete, and every alias of a documented object resolves --

# Every name in the __all__ of these modules must be documented (under that name, or
# as the same object under another name).
PUBLIC_MODULES = [
    "rxws",
    "rxws.ops",
    "rxws.events",
    "rxws.errors",
    "rxws.testing",
    "rxws.protocols",
    "rxws.limits",
    "rxws.nats",
    "rxws.compat",
    "rxws.transports",
]


def _lookup(dotted: str) -> Any:
    """The object a dotted name imports as, or a sentinel when it does not."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return _MISSING
        return obj
    return _MISSING


_MISSING = object()


def _documented(env: Any) -> dict[int, str]:
    """``id(object) -> the name it is documented under`` for every Python object entry."""
    cached = getattr(env, "_rxws_documented", None)
    if cached is not None:
        return cached
    found: dict[int, str] = {}
    for name, entry in env.get_domain("py").objects.items():
        if getattr(entry, "aliased", False) or entry.objtype == "module":
            continue
        obj = _lookup(name)
        if obj is not _MISSING and not isinstance(obj, (str, int, float, tuple, type(None))):
            found.setdefault(id(obj), name)
    env._rxws_documented = found
    return found


def _resolve_alias(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``rxws.ConnectionLost`` to where the same class is documented."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("rxws"):
        return None
    obj = _lookup(target)
    if obj is _MISSING:
        return None
    name = _documented(env).get(id(obj))
    if name is None or name == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
    )


def _check_complete(app: Any, env: Any) -> None:
    """Warn (an error under -W) for a public name that the reference does not document."""
    from sphinx.util import logging

    logger = logging.getLogger("rxws.docs")
    env._rxws_documented = None
    documented = _documented(env)
    entries = env.get_domain("py").objects
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            full = f"{module_name}.{name}"
            obj = getattr(module, name)
            if full in entries or id(obj) in documented:
                continue
            if isinstance(obj, type(sys)) and obj.__name__ in entries:
                continue  # a submodule, documented on its own page
            logger.warning("the API reference does not document %s", full)


# napoleon reads the first line of an attribute's or property's docstring as
# ``type: description``, so "Non-fatal errors: ParseError, ..." or "A ws:// URL" would
# show a made-up type. rxws writes those docstrings as plain prose: keep them as written.
_PROSE_KINDS = ("attribute", "property", "data")
_prose: dict[str, list[str]] = {}


def _keep_prose(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what in _PROSE_KINDS:
        _prose[name] = list(lines)


def _restore_prose(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    kept = _prose.pop(name, None)
    if kept is not None:
        lines[:] = kept


# Marble diagrams and trees are literal blocks (``::``) like code examples; Python
# highlighting would colour their dashes and hashes as if they were code.
_DIAGRAM = re.compile(r"[─├└│]|^\s*[a-z][\w ]*:\s+[-^]", re.MULTILINE)


def _plain_diagrams(app: Any, doctree: Any) -> None:
    from docutils import nodes

    for block in doctree.findall(nodes.literal_block):
        if block.get("language") in (None, "default") and _DIAGRAM.search(block.astext()):
            block["language"] = "none"


def setup(app: Any) -> dict[str, Any]:
    """Hook the alias resolution, the completeness check and the prose fix into the build."""
    app.connect("autodoc-process-docstring", _keep_prose, priority=400)  # before napoleon
    app.connect("autodoc-process-docstring", _restore_prose, priority=600)  # after it
    app.connect("doctree-read", _plain_diagrams)
    app.connect("missing-reference", _resolve_alias)
    app.connect("env-check-consistency", _check_complete)
    return {"parallel_read_safe": True}
