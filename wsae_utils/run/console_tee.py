"""Progress of a running notebook on the console, at a bounded rate, while the bars themselves stay in run.log.

In a workflow run the kernel's progress bars (`wsae_utils.runlog.progress`) and the runner's per-cell bar go to
the job's text log, never into the report. `ConsoleTee` follows that log from a thread of the runner and prints
one short line per change (`[results/lm/acts] cells 12/40 · LM activation pass: 45% 44.0k/98.3k tok
[02:10<02:40, 338tok/s]`) to the runner's stderr, which Snakemake passes to the terminal of `make run`: at most
one line per `interval` seconds per job, and a "no new progress" line when nothing moved for `quiet_after` of
them, so a slow job can be told from a hung one.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import IO

INTERVAL_ENV = "WSAE_CONSOLE_INTERVAL"
"""Seconds between console lines of one job (default 30; 0 turns the console lines off)."""
DEFAULT_INTERVAL = 30.0
CELLS_DESC = "cells"
_BAR = re.compile(r"\|[^|]*\|")  # tqdm's bar glyphs between two pipes
_SPACES = re.compile(r"\s+")


def console_interval() -> float:
    """The configured interval in seconds (`WSAE_CONSOLE_INTERVAL`, else 30)."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


def compact(line: str) -> str:
    """A tqdm line without its bar glyphs and repeated spaces."""
    return _SPACES.sub(" ", _BAR.sub(" ", line)).strip()


def is_progress(line: str) -> bool:
    """Whether a log line is a tqdm progress line (percent or count with a rate in brackets)."""
    return bool(re.search(r"\d+%|\d+/\d+", line)) and "[" in line and "]" in line


class ConsoleTee:
    """Follow a text log and print its latest progress to `stream`, at most once per `interval` seconds."""

    def __init__(self, log_path: str | Path, label: str, interval: float | None = None,
                 stream: IO[str] | None = None, quiet_after: int = 10) -> None:
        self.path = Path(log_path)
        self.label = label
        self.interval = console_interval() if interval is None else interval
        self.stream = stream if stream is not None else sys.stderr
        self.quiet_after = quiet_after
        self._offset = 0
        self._cells = ""
        self._latest = ""
        self._shown = ("", "")
        self._last_change = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> str | None:
        """Read what the log gained, and print (and return) a line when the progress changed or stalled."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self._offset)
                text = f.read()
                self._offset = f.tell()
        except OSError:
            return None
        for segment in re.split(r"[\r\n]+", text):
            if not is_progress(segment):
                continue
            line = compact(segment)
            if line.startswith(CELLS_DESC):
                self._cells = line.split("[")[0].replace(f"{CELLS_DESC}:", CELLS_DESC).strip()
            else:
                self._latest = line
        now = time.monotonic()
        state = (self._cells, self._latest)
        if state != self._shown and any(state):
            self._shown, self._last_change = state, now
            message = " · ".join(s for s in state if s)
        elif any(state) and now - self._last_change >= self.quiet_after * max(self.interval, 1e-9):
            quiet = int(now - self._last_change) // 60
            message = f"no new progress for {quiet} min (last: {self._latest or self._cells})"
            self._last_change = now
        else:
            return None
        print(f"[{self.label}] {message}", file=self.stream, flush=True)
        return message

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def __enter__(self) -> ConsoleTee:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name=f"console-tee {self.label}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
