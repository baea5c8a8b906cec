"""Checks of a rendered report's HTML, as a reader meets it (used on planted pages and on every smoke report).

Parsed with the standard library's HTMLParser: headings, the prose a reader sees (rendered Markdown and text
outputs, not folded code), tables and the elements around them, and the report header's parameter table.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

REPRS = re.compile(r"\b(PosixPath|WindowsPath|PurePosixPath|np\.float64|np\.int64|array|tensor|Timestamp|dtype)\(|"
                   r"<(?:function|class|module) |object at 0x[0-9a-f]+")
"""Python reprs that must not reach a reader (a Path, numpy scalar or array, tensor, object address)."""
RAW_MATH = re.compile(r"\^\{|\\(?:alpha|gamma|mathrm|frac|sum)\b|\$[^$\s][^$]*\$")
"""TeX that would show raw without MathJax (reports use Unicode maths)."""


class _Report(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headings: list[tuple[int, str]] = []  # (level, text), in order
        self.after_heading: dict[int, str] = {}  # index of a heading → text until the next heading
        self.prose: list[str] = []  # text outside code inputs
        self.tables = 0
        self.tables_in_scroller = 0
        self.param_rows = 0
        self.changed_rows = 0
        self.param_cells_source = False
        self._stack: list[tuple[str, str]] = []  # (tag, class)
        self._heading: list[str] | None = None
        self._level = 0

    def _classes(self) -> str:
        return " ".join(c for _, c in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag in ("br", "img", "meta", "link", "input", "hr", "col"):
            return
        self._stack.append((tag, cls))
        if re.fullmatch(r"h[1-6]", tag):
            self._heading, self._level = [], int(tag[1])
        if tag == "table":
            self.tables += 1
            # Output areas and rendered Markdown scroll sideways (the report template); the header's parameter
            # table wraps its values instead.
            if any(c in self._classes() for c in ("jp-OutputArea-output", "jp-RenderedMarkdown", "scroll",
                                                   "wsae-header")):
                self.tables_in_scroller += 1
        if tag == "tr" and "wsae-params" in self._classes():
            self.param_rows += 1
            if "wsae-changed" in cls:
                self.changed_rows += 1

    def handle_endtag(self, tag: str) -> None:
        if any(t == tag for t, _ in self._stack):  # an end tag of a void element (<br/>) closes nothing
            while self._stack:
                t, _ = self._stack.pop()
                if t == tag:
                    break
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            text = " ".join("".join(self._heading).split()).replace("¶", "").strip()
            self.headings.append((self._level, text))
            self.after_heading[len(self.headings) - 1] = ""
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)
            return
        classes = self._classes()
        if any(t in ("style", "script") for t, _ in self._stack):
            return
        if "jp-InputArea" in classes or "wsae-code" in classes:
            if "out_dir = " in data and "jp-InputArea" in classes:
                self.param_cells_source = True
            return
        self.prose.append(data)
        if self.headings:
            self.after_heading[len(self.headings) - 1] += data


def check_report(text: str) -> list[str]:
    """Problems a reader would meet in one report's HTML; [] when it reads as a finished report."""
    r = _Report()
    r.feed(text)
    problems = []
    conclusions = [i for i, (_, h) in enumerate(r.headings) if h.lower() == "conclusion"]
    if len(conclusions) != 1:
        problems.append(f"{len(conclusions)} 'Conclusion' headings (want exactly one)")
    else:
        i = conclusions[0]
        if not r.after_heading.get(i, "").strip():
            problems.append("the conclusion is empty")
        if any(level <= r.headings[i][0] for level, _ in r.headings[i + 1:]):
            problems.append("the conclusion is not the last section")
    prose = " ".join(r.prose)
    for m in REPRS.finditer(prose):
        problems.append(f"Python repr in the prose: {prose[max(0, m.start() - 30):m.end() + 30]!r}")
    for m in RAW_MATH.finditer(prose):
        problems.append(f"raw TeX in the prose: {prose[max(0, m.start() - 20):m.end() + 20]!r}")
    if r.tables != r.tables_in_scroller:
        problems.append(f"{r.tables - r.tables_in_scroller} of {r.tables} tables outside a scrolling container")
    if "Not finished" in text or "Incomplete report" in text:
        problems.append("the page says the run did not finish")
    if r.param_cells_source:
        problems.append("a parameters cell is rendered (the header shows the parameters once)")
    if r.param_rows == 0:
        problems.append("no parameter table in the header")
    if text.count("class=\"wsae-params\"") != 1:
        problems.append("the run's parameters are not shown exactly once")
    if re.search(r"<details class=\"wsae-params\"\s+open", text):
        problems.append("the parameters are not folded")
    return problems


def header_rows(text: str) -> tuple[int, int]:
    """(parameter rows, highlighted rows) of a report's header."""
    r = _Report()
    r.feed(text)
    return r.param_rows - 1, r.changed_rows  # minus the heading row


class IndexPage(HTMLParser):
    """The index's claim rows ({id: {"badge", "key"}}) and every link and image target, in order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.rows: dict[str, dict] = {}
        self._row: str | None = None
        self._in_key = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        target = a.get("href") or a.get("src")
        if tag in ("a", "img") and target:
            self.hrefs.append(target)
        if tag == "tr" and a.get("data-claim"):
            self._row = a["data-claim"]
            self.rows[self._row] = {"badge": "", "key": ""}
        if self._row and tag == "span" and "badge" in (a.get("class") or ""):
            self.rows[self._row]["badge"] = "?"
        if self._row and tag == "td" and a.get("class") == "key":
            self._in_key = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_key = False
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row and self.rows[self._row]["badge"] == "?":
            self.rows[self._row]["badge"] = data.strip()
        if self._row and self._in_key:
            self.rows[self._row]["key"] += data


def dead_links(text: str, folder) -> list[str]:
    """Relative links and images of a page under `folder` whose target does not exist (anchors: no such id)."""
    from pathlib import Path

    dead = []
    for href in IndexPage(text).hrefs:
        if href.startswith(("http:", "https:", "data:", "mailto:")):
            continue
        if href.startswith("#"):
            if f"id='{href[1:]}'" not in text and f'id="{href[1:]}"' not in text:
                dead.append(href)
        elif not (Path(folder) / href.split("#")[0]).exists():
            dead.append(href)
    return dead
