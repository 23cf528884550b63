"""The documentation site builds without a warning: ``mkdocs build --strict`` over docs/ and the API
reference of docs/reference/ (mkdocstrings reads the docstrings of this checkout's ``synthbrain``).

It fails on a link between pages that leads nowhere, an anchor that a page lacks, and an object named
by a ``::: synthbrain.X`` line that no longer exists. mkdocs and mkdocstrings come with the test extra,
so CI runs it; without them it skips, saying so.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
# mkdocstrings_handlers is mkdocstrings-python's package (the "python" handler)
MISSING = [name for name in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers") if importlib.util.find_spec(name) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install -e '.[test]' brings the documentation tools"
)


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_site_builds_strict_and_renders_every_reference(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    # every `::: synthbrain.X` line of the reference became a section with that id on its page
    pages = sorted((ROOT / "docs" / "reference").glob("*.md"))
    assert len(pages) >= 9
    rendered = 0
    for page in pages:
        names = re.findall(r"^::: (synthbrain[\w.]*)\s*$", page.read_text(), flags=re.M)
        out = tmp_path / "site" / "reference" / ("" if page.stem == "index" else page.stem) / "index.html"
        html = out.read_text()
        for name in names:
            assert f'id="{name}"' in html, f"{page.name}: {name} not rendered"
            rendered += 1
        # the docstrings' Sphinx roles (:func:`x`) are shown as code, not as raw role text
        assert not re.search(r":(func|meth|class|mod|data|attr):<code>", html), f"{page.name}: raw Sphinx roles"
    assert rendered >= 50
    # the model card outside docs/ that docs/index.md links is a page of the site, its own link into docs/ rewritten
    card = (tmp_path / "site" / "model-card" / "index.html").read_text()
    assert 'href="../benchmarks/autoencoder-detail/' in card
    assert 'href="model-card/"' in (tmp_path / "site" / "index.html").read_text()


def test_a_reference_to_a_missing_object_fails_the_build(tmp_path):
    """The check the test above relies on: a ``:::`` line naming nothing stops the strict build."""
    docs = tmp_path / "docs"
    (docs / "reference").mkdir(parents=True)
    (docs / "index.md").write_text("# x\n")
    (docs / "reference" / "bad.md").write_text("# bad\n\n::: synthbrain.grid.NoSuchThing\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"site_name: t\ndocs_dir: {docs}\nplugins:\n  - mkdocstrings:\n      handlers:\n        python:\n          paths: [{ROOT}]\n"
    )
    result = build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "synthbrain.grid.NoSuchThing" in result.stderr
