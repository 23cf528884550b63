"""The guidance that README.md and docs/downstream.md show is what the downstream benchmark's report
generated from its runs (issue 31), copied verbatim, never written or edited by hand: README.md the
guidance table, docs/downstream.md every table of the report's guidance section."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "benchmarks" / "downstream-shares.md"
HEADING = "## Guidance: which share or schedule of generated images, for n real subjects"


def _guidance_tables(report: str) -> list[str]:
    """The markdown tables (header, rule and rows each) of the report's guidance section, in order."""
    if HEADING not in report:
        raise ValueError(f"no guidance heading {HEADING!r} in the report")
    section = report.split(HEADING, 1)[1].split("\n## ", 1)[0]
    tables, current = [], []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def test_the_guidance_tables_are_read_from_their_section_only():
    report = (
        f"# r\n\n{HEADING}\n\ntext\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n### t\n\n| c |\n| --- |\n| 3 |\n"
        "\n## next section\n\n| other | table |\n"
    )
    assert _guidance_tables(report) == ["| a | b |\n| --- | --- |\n| 1 | 2 |", "| c |\n| --- |\n| 3 |"]
    with pytest.raises(ValueError, match="no guidance heading"):
        _guidance_tables("# a report without guidance\n")


@pytest.mark.parametrize(("doc", "which"), [("README.md", slice(0, 1)), ("docs/downstream.md", slice(None))])
def test_docs_show_the_guidance_the_report_generated(doc, which):
    tables = _guidance_tables(REPORT.read_text())
    assert tables and all(table.count("\n") >= 2 for table in tables), "the report's guidance has no table with rows"
    text = (ROOT / doc).read_text()
    for table in tables[which]:
        assert table in text, (
            f"{doc} does not show this table of {REPORT.relative_to(ROOT)} verbatim; copy it from the report "
            f"(python benchmarks/downstream.py ... --report-only writes it):\n{table}"
        )
