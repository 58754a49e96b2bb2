"""Progress: a tqdm bar on a terminal, plain log lines when stderr is a file or a pipe.

A logged run (``clip-adapter train … 2> log.txt``, a CI job, a notebook's captured
stderr) gets one line when a long step starts and then at most one every
``LOG_EVERY_S`` seconds, so a 10-minute encoding is never silent and a log is never
flooded with carriage returns. ``CLIP_ADAPTER_NO_PROGRESS=1`` silences both.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

LOG_EVERY_S = 15.0
LOG_AFTER_S = 2.0  # steps shorter than this print nothing at all


class LogProgress:
    """The part of tqdm's interface the toolkit uses, writing occasional lines to stderr.

    Example:
        >>> bar = LogProgress(total=3, desc="demo", unit="img")
        >>> bar.update(3); bar.close()
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", **_: Any) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.announced = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.start >= LOG_AFTER_S and (not self.announced or now - self.last >= LOG_EVERY_S):
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.announced:
            self._line(time.monotonic(), done=True)

    def _line(self, now: float, done: bool = False) -> None:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        share = f"/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.n}{share} {self.unit} in {elapsed:.0f} s "
            f"({rate:.1f} {self.unit}/s){tail}{' — done' if done else ''}",
            file=sys.stderr,
            flush=True,
        )
        self.announced, self.last = True, now

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(LogProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def progress(total: int | None = None, desc: str = "", unit: str = "it", **kwargs: Any):
    """A tqdm bar on a TTY (stderr), occasional log lines otherwise, nothing with CLIP_ADAPTER_NO_PROGRESS.

    Example:
        >>> bar = progress(total=3, desc="demo")
        >>> bar.update(3); bar.close()
    """
    if os.environ.get("CLIP_ADAPTER_NO_PROGRESS"):
        return _Silent(total, desc, unit)
    if not sys.stderr.isatty():
        return LogProgress(total, desc, unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, **kwargs)
