"""The documentation cannot rot: its links resolve and its marked code blocks run.

* Every relative link and anchor in ``README.md``, ``CHANGELOG.md``, ``docs/*.md`` and
  ``bench/README.md`` must name a file of the repository and, after ``#``, a heading of that
  file (GitHub's slugs).
* A fenced ``python`` block right after ``<!-- runnable -->`` is run as a script, in a fresh
  directory that is also the temporary directory. After ``<!-- runnable: METHOD /path -->`` the
  ``app`` it defines must also answer that request with ``200`` (through werkzeug's test client,
  with wsgiref's ``wsgi.file_wrapper``); once the response is closed no hook may have logged a
  failure and no temporary file may be left.
* A fenced ``python`` block right after ``<!-- example: FILE -->`` must appear, as it is, in
  ``FILE``: an app under ``examples/`` that a test serves (``tests/test_frameworks.py``).
* No tracked file points outside the repository, and ``README.md`` stays a front page: at most
  10,000 bytes.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.util import FileWrapper

import pytest
from werkzeug.test import Client

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        ROOT / "bench" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) and ![alt](target); the text may hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
MARKER = re.compile(r"^<!--\s*(runnable|example)\s*(?::\s*(.*?))?\s*-->$")


@dataclass
class MarkedBlock:
    """A code block that a marker comment asks to run or to find in an example."""

    path: Path
    line: int  # of the marker
    kind: str  # "runnable" or "example"
    argument: str  # after the colon: "GET /path", or the example file
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def marked_blocks(path: Path) -> list[MarkedBlock]:
    """The blocks of ``path`` marked ``<!-- runnable... -->`` or ``<!-- example: ... -->``.

    :raises AssertionError: a marker is not followed by a fenced ``python`` block.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for index, line in enumerate(lines):
        marker = MARKER.match(line.strip())
        if not marker:
            continue
        where = f"{path.relative_to(ROOT)}:{index + 1}"
        start = next((i for i in range(index + 1, len(lines)) if lines[i].strip()), len(lines))
        assert start < len(lines) and lines[start].strip() == "```python", (
            f"{where}: {line.strip()} must be followed by a ```python block"
        )
        end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{where}: the ```python block is never closed"
        code = "\n".join(lines[start + 1 : end]) + "\n"
        blocks.append(MarkedBlock(path, index + 1, marker[1], marker[2] or "", code))
    return blocks


BLOCKS = [block for path in DOCS for block in marked_blocks(path)]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines of ``text`` outside fenced code blocks, with their 1-based numbers."""
    lines = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = []
    for char in text:
        if char in " -_" or unicodedata.category(char)[0] in "LNM":
            kept.append("-" if char == " " else char)
    return "".join(kept)


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: heading slugs (numbered when repeated), HTML anchors."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    """The relative link targets of a Markdown file, with their line numbers."""
    links = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto: ...
                links.append((number, target))
    return links


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One message per relative link or anchor of ``path`` that does not resolve in ``root``."""
    broken = []
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not linked.is_relative_to(root) or not linked.exists():
            broken.append(f"{where}: no such file in the repository")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{where}: no heading with the anchor #{anchor} in {linked.name}")
    return broken


def test_github_slug() -> None:
    assert github_slug("Quick start") == "quick-start"
    assert github_slug("Flask: init_app") == "flask-init_app"
    assert github_slug("`add_cleanup(environ, fn)`") == "add_cleanupenviron-fn"
    assert github_slug("Hook, ConfigError, wrap") == "hook-configerror-wrap"
    assert github_slug("[Django](x.md) views") == "django-views"


def test_broken_links_are_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](#title) [bad](#nope) [gone](missing.md) `[code](#in-code)`\n"
        "![up](" + ".." + "/outside.png)\n\n```\n[x](#in-fence)\n```\n"
    )
    assert anchors(page) == {"title"}
    assert broken_links(page, root=tmp_path) == [
        "page.md:3: #nope: no heading with the anchor #nope in page.md",
        "page.md:3: missing.md: no such file in the repository",
        "page.md:4: " + ".." + "/outside.png: no such file in the repository",
    ]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


# A path that climbs out of its file's folder, in any text: a link, inline code or a comment.
# The folder beside the repository that holds what only its developers have (spelt so that
# this line does not name it).
SHARED = ".." + "/shared"
CLIMBING_PATH = re.compile(r"(?:\.\./)+[\w][\w./-]*")


def tracked_texts() -> Iterator[tuple[str, Path, str]]:
    """The name, path and text of each file git tracks that is UTF-8 text."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        path = ROOT / name
        try:
            yield name, path, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue


def test_no_tracked_file_points_outside_the_repository() -> None:
    # Users have the repository only: whatever a file names must be in it.
    outside = []
    for name, path, text in tracked_texts():
        for number, line in enumerate(text.splitlines(), 1):
            for target in CLIMBING_PATH.findall(line):
                resolved = (path.parent / target.rstrip(".")).resolve()
                # Tests make folders of their own, to which their paths may climb.
                in_a_test = name.startswith("tests/") and not target.startswith(SHARED)
                if not in_a_test and not (resolved.is_relative_to(ROOT) and resolved.exists()):
                    outside.append(f"{name}:{number}: {target}")
    assert outside == []


def test_the_readme_is_a_front_page() -> None:
    # What a newcomer reads first stays short; the reference and the history live elsewhere.
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 10_000, f"README.md is {size:,} bytes, over 10,000: move detail to docs/"


def test_no_tracked_file_holds_a_merge_conflict() -> None:
    # In a docstring or a Markdown page, conflict markers pass every other check.
    marker = re.compile(r"^(<{7}|>{7}|={7})( |$)", re.MULTILINE)
    assert [name for name, _, text in tracked_texts() if marker.search(text)] == []


def test_marked_blocks_are_found() -> None:
    page = ROOT / "docs" / "frameworks.md"
    blocks = marked_blocks(page)
    assert {b.kind for b in blocks} == {"example"}
    assert all(b.code.strip() and b.argument.startswith("examples/") for b in blocks)
    assert {b.kind for b in BLOCKS} == {"runnable", "example"}


def run_block(block: MarkedBlock, workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Run a ``runnable`` block in ``workdir``; request ``METHOD /path`` of its ``app`` if asked."""
    namespace = {"__name__": "__main__", "__file__": str(workdir / "block.py")}
    exec(compile(block.code, f"{block.id} (runnable block)", "exec"), namespace)
    if not block.argument:
        return
    method, _, target = block.argument.partition(" ")
    client = Client(namespace["app"])
    with caplog.at_level(logging.WARNING, logger="cleanup_middleware"):
        response = client.open(
            target, method=method, environ_overrides={"wsgi.file_wrapper": FileWrapper}
        )
        body = response.get_data()
        response.close()
    assert response.status_code == 200, body[:500]
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "runnable"], ids=lambda b: b.id)
def test_runnable_block(
    block: MarkedBlock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_block(block, tmp_path, caplog)
    assert os.listdir(tmp_path) == [], "the block left files behind"


def test_runnable_block_that_leaks_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The control: the README's plain WSGI block with its hook left out keeps its file.
    hook = "    add_cleanup(environ, os.unlink, path)"
    [plain] = [b for b in BLOCKS if b.kind == "runnable" and hook in b.code]
    leaky = MarkedBlock(
        plain.path, plain.line, plain.kind, plain.argument, plain.code.replace(hook, "")
    )
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_block(leaky, tmp_path, caplog)
    assert len(os.listdir(tmp_path)) == 1


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "example"], ids=lambda b: b.id)
def test_example_block_is_in_its_file(block: MarkedBlock) -> None:
    example = ROOT / block.argument
    assert example.is_file(), f"{block.id}: no file {block.argument}"
    assert block.code in example.read_text(encoding="utf-8"), (
        f"{block.id}: the block is no longer in {block.argument}; copy it from there again"
    )
