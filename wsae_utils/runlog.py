"""Progress bars and log lines that go to the run's text log, never into an executed report.

The notebook runner sets `WSAE_LOG` to the rule's text log before the kernel starts; every long loop in the
package uses `progress(...)`, which writes a coarse tqdm bar to that file (or to the console when run by hand
outside a workflow, where no log is set). Reports therefore never carry progress-bar output or tqdm warnings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_ENV = "WSAE_LOG"
_handle: IO[str] | None = None


def log_stream() -> IO[str]:
    """The run's log file when the runner set one (opened once, line-buffered), else the console's stderr."""
    global _handle
    path = os.environ.get(LOG_ENV)
    if not path:
        return sys.__stderr__ or sys.stderr
    if _handle is None or _handle.closed:
        _handle = open(path, "a", buffering=1)  # noqa: SIM115 (kept open for the kernel's lifetime)
    return _handle


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Iterator[T] | tqdm:
    """A tqdm bar on the run log (never in the report); same arguments as `tqdm.tqdm`.

    In a workflow run the bar updates at most every 30 s so logs stay short; by hand, every 0.5 s.
    """
    to_log = bool(os.environ.get(LOG_ENV))
    kwargs.setdefault("mininterval", 30.0 if to_log else 0.5)
    kwargs.setdefault("ascii", to_log)
    kwargs.setdefault("dynamic_ncols", not to_log)
    if kwargs.pop("disable", False):
        kwargs["disable"] = True
    return tqdm(iterable, file=log_stream(), **kwargs)


def log(message: str) -> None:
    """One line in the run log (or on the console's stderr by hand)."""
    print(message, file=log_stream(), flush=True)
