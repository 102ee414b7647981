"""Sphinx configuration of uws-hub's documentation site (`make docs`).

Built like JupyterHub's: Sphinx with MyST Markdown, the PyData theme and
copy buttons. The pages are the Markdown files in docs/, the same ones
README.md links to and GitHub shows, so they keep GitHub-style links
(``[x](user-guide.md#job-states)``). Two pages are produced from other sources:

- ``config-reference.md`` is written from the traits by
  ``generate_config_reference.py`` (tests/unit/test_docs.py fails when it is stale);
  Sphinx renders that file as it is, so the traits stay the one source.
- ``rest-api.md`` renders ``openapi.yaml`` (checked against the real hub by
  tests/integration/test_openapi.py) with sphinxcontrib-openapi, as static HTML: the build
  and the site fetch nothing from the network.

``make docs`` builds with ``-W --keep-going``: a broken link or anchor, a page
left out of the index's toctree or a malformed page fails the build.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path

import sphinx_mdinclude
import yaml
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinxcontrib.openapi.renderers import HttpdomainRenderer

from uws_hub._version import __version__

logger = logging.getLogger(__name__)

project = "uws-hub"
author = "uws-hub contributors"
copyright = f"{datetime.date.today().year}, {author}"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx_copybutton",
    "sphinxcontrib.openapi",
]
root_doc = "index"
source_suffix = {".md": "markdown"}
# Everything here that is not a page: the build output, and images that
# pages reference (they are copied when a page uses them).
exclude_patterns = ["_build", "images"]
# Code blocks without a language are shown as they are, not guessed at.
highlight_language = "none"

# -- MyST ----------------------------------------------------------------------
# GitHub-style anchors for headings down to ####, so links such as
# `api.md#read-a-jobs-output` work on GitHub and in the site alike (a link to a
# missing anchor is a warning, hence an error with -W).
myst_heading_anchors = 4
myst_enable_extensions = [
    "colon_fence",
    "deflist",
]

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"uws-hub {release}"
html_theme_options = {
    # the first pages in the top bar, the others under "More"
    "header_links_before_dropdown": 4,
    "navigation_with_keys": False,
    "show_toc_level": 1,
}
# The pages are all at the top level, so the left sidebar (a section's pages)
# would be empty: the top bar and each page's "On this page" navigate instead.
html_sidebars = {"**": []}
# No "view source" links: the sources are the Markdown files in the repository.
html_show_sourcelink = False
html_copy_source = False

# -- The REST API page ---------------------------------------------------------------
HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


class OpenAPIByTagDirective(SphinxDirective):
    """``.. uws-openapi:: openapi.yaml``: the document's description, then its
    operations in one section per tag: the tags of its ``tags`` list in that
    order, then any other tag its operations name.

    sphinxcontrib-openapi's renderer that reads Markdown descriptions and lists
    request and response fields cannot group by tag, so this directive hands it
    one tag's operations at a time. An operation without a tag is reported (an
    error with -W), so none is left out of the page unnoticed.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        relpath, abspath = self.env.relfn2path(self.arguments[0])
        self.env.note_dependency(relpath)
        spec = yaml.safe_load(Path(abspath).read_text())
        result = self.parse_markdown(spec.get("info", {}).get("description", ""))
        for tag, paths in self.paths_by_tag(spec, relpath).items():
            section = nodes.section(ids=[f"api-{tag}"], names=[f"api-{tag}"])
            section += nodes.title(text=tag.capitalize())
            # the whole document, for the $refs into its components
            tagged = copy.deepcopy({**spec, "paths": paths})
            renderer = HttpdomainRenderer(self.state, {"uri": Path(abspath).as_uri()})
            section += renderer.render(tagged)
            result.append(section)
        return result

    def paths_by_tag(self, spec: dict, relpath: str) -> dict[str, dict]:
        """``{tag: paths}``, each path item with only that tag's operations."""
        by_tag: dict[str, dict] = {tag["name"]: {} for tag in spec.get("tags", [])}
        for path, item in spec["paths"].items():
            common = {key: value for key, value in item.items() if key not in HTTP_METHODS}
            for method in HTTP_METHODS:
                if method not in item:
                    continue
                tags = item[method].get("tags", [])
                if not tags:
                    logger.warning(
                        f"{relpath}: {method.upper()} {path} has no tag, so it is not on this page",
                        location=self.get_location(),
                    )
                for tag in tags:
                    by_tag.setdefault(tag, {}).setdefault(path, dict(common))[method] = item[method]
        return {tag: paths for tag, paths in by_tag.items() if paths}

    def parse_markdown(self, text: str) -> list[nodes.Node]:
        """openapi.yaml's descriptions are Markdown; this directive runs in reST."""
        if not text:
            return []
        container = nodes.container()
        self.state.nested_parse(
            StringList(sphinx_mdinclude.convert(text).splitlines(), self.get_source_info()[0]),
            self.content_offset,
            container,
        )
        return container.children


def setup(app):
    app.add_directive("uws-openapi", OpenAPIByTagDirective)
