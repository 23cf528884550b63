"""Lines of Python per subpackage of synthbrain/ at two commits, as a Markdown table.

    python tools/line_counts.py 096212c main

reads each commit's files from git (``git ls-tree`` and ``git cat-file``; the work tree is not
touched, so any two commits of the repository can be compared). Per package (``synthbrain/<sub>/``,
every file below it; the modules directly in ``synthbrain/`` together as ``(top-level modules)``):
files, all lines, and *code* lines: lines holding a token that is neither a comment nor part of a
string statement (docstrings), so blank lines, comments and docstrings are left out. The last
columns are the change in code lines and in files from the first commit to the second.
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tokenize
from collections import defaultdict

PACKAGE = "synthbrain"
TOP = "(top-level modules)"


def git(*args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], input=input, capture_output=True, check=True).stdout


def python_files(commit: str) -> dict[str, bytes]:
    """Path -> content of every ``.py`` file under synthbrain/ at ``commit``."""
    paths = [p for p in git("ls-tree", "-r", "--name-only", commit, "--", f"{PACKAGE}/").decode().splitlines() if p.endswith(".py")]
    out = git("cat-file", "--batch", input="".join(f"{commit}:{p}\n" for p in paths).encode())
    files, at = {}, 0
    for path in paths:
        header_end = out.index(b"\n", at)
        size = int(out[at:header_end].split()[2])
        files[path] = out[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
    return files


def code_lines(source: bytes) -> int:
    """Lines with a token that is not a comment and not inside a string statement (a docstring)."""
    text = source.decode("utf-8")
    strings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            strings.update(range(node.lineno, node.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
    lines = set()
    for token in tokenize.tokenize(io.BytesIO(source).readline):
        if token.type not in skip:
            lines.update(line for line in range(token.start[0], token.end[0] + 1) if line not in strings)
    return len(lines)


def package_of(path: str) -> str:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 else TOP


def counts(commit: str) -> dict[str, tuple[int, int, int]]:
    """Package -> (files, lines, code lines) at ``commit``."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for path, source in python_files(commit).items():
        row = totals[package_of(path)]
        row[0] += 1
        row[1] += source.count(b"\n") + (0 if source.endswith(b"\n") or not source else 1)
        row[2] += code_lines(source)
    return {name: tuple(row) for name, row in totals.items()}


def table(before: str, after: str) -> str:
    a, b = counts(before), counts(after)
    names = sorted(set(a) | set(b), key=lambda n: (n == TOP, n))
    head = (
        f"| package | files {before} | lines {before} | code {before} | files {after} | lines {after} | code {after} | code change |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows = []
    for name in [*names, "total"]:
        x = tuple(map(sum, zip(*a.values()))) if name == "total" else a.get(name, (0, 0, 0))
        y = tuple(map(sum, zip(*b.values()))) if name == "total" else b.get(name, (0, 0, 0))
        label = f"**{name}**" if name == "total" else f"`{name}`"
        rows.append(f"| {label} | {x[0]} | {x[1]} | {x[2]} | {y[0]} | {y[1]} | {y[2]} | {y[2] - x[2]:+d} |")
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="a commit (hash, branch or tag), e.g. 096212c")
    parser.add_argument("after", nargs="?", default="HEAD", help="a second commit (default: HEAD)")
    args = parser.parse_args(argv)
    labels = []
    for commit in (args.before, args.after):
        try:
            labels.append(git("rev-parse", "--short", f"{commit}^{{commit}}").decode().strip())
        except subprocess.CalledProcessError:
            parser.error(f"{commit!r} is not a commit of this repository")
    sys.stdout.write(table(*labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
