"""mkdocs hooks (named in mkdocs.yml): Markdown pages kept outside docs/ brought into the site.

docs/index.md links the embedded models' cards, e.g. ``../synthbrain/models/default/README.md``: files outside
docs/ that GitHub shows but mkdocs cannot reach (``mkdocs build --strict`` stops on it). ``on_files`` adds each
file of ``OUTSIDE`` to the site under its page name there; ``on_page_markdown`` points every link to such a file
at that page, and every link in such a page back into docs/ at the page it names (resolved from where the file
really lies). Any other link that leaves docs/ is left alone, and mkdocs reports it as broken.

``SphinxRoles`` (a griffe extension, named in mkdocs.yml's mkdocstrings options) shows the Sphinx roles of the
docstrings (``:func:`~synthbrain.grid.Grid```, ``:meth:`name <path>```) as code, the way Sphinx would print them,
instead of the raw role text that Markdown leaves.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import griffe
from mkdocs.structure.files import File

# repository path -> page name in the site
OUTSIDE = {"synthbrain/models/default/README.md": "model-card.md", "synthbrain/models/default-2mm/README.md": "model-card-2mm.md"}

_LINK = re.compile(r"\]\(([^)\s#]+)((?:#[^)\s]*)?)\)")


def _repo(config) -> Path:
    return Path(config.config_file_path).parent


def on_files(files, config):
    for source, page in OUTSIDE.items():
        files.append(File.generated(config, page, abs_src_path=str(_repo(config) / source)))
    return files


def on_page_markdown(markdown, page, config, files):
    pages = {page_name: source for source, page_name in OUTSIDE.items()}
    docs = Path(config.docs_dir).relative_to(_repo(config)).as_posix()
    uri = page.file.src_uri
    where = posixpath.dirname(pages.get(uri, f"{docs}/{uri}"))

    def relink(match: re.Match) -> str:
        target, anchor = match.groups()
        if ":" in target or target.startswith("/"):
            return match.group(0)
        path = posixpath.normpath(posixpath.join(where, target))
        if path in OUTSIDE:
            path = OUTSIDE[path]
        elif uri in pages and path.startswith(f"{docs}/"):
            path = path[len(docs) + 1 :]
        else:
            return match.group(0)
        return f"]({posixpath.relpath(path, posixpath.dirname(uri) or '.')}{anchor})"

    return _LINK.sub(relink, markdown)


_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|exc|obj|const):`([^`<]+?)(?:\s*<[^`>]+>)?`")


def _role_text(match: re.Match) -> str:
    name = match.group(1).strip()
    return f"`{name[1:].rsplit('.', 1)[-1]}`" if name.startswith("~") else f"`{name}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_role_text, obj.docstring.value)
