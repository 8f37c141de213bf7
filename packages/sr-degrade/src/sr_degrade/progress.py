"""A progress line for long jobs: count, rate and ETA on stderr, no dependencies.

On a terminal the line redraws in place (at most 10 times a second); otherwise (logs, CI) a line
is printed every `log_every` seconds, so long jobs stay observable without flooding a log.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def plural(n: int, word: str, many: str | None = None) -> str:
    """ "1 shard", "2 shards", "0 images": the count and the word in the right number."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Usage: `with Progress(total, "build", unit="img") as bar: ... bar.update(1, extra="3 shards")`."""

    def __init__(
        self,
        total: int | None,
        label: str,
        unit: str = "it",
        stream: TextIO | None = None,
        log_every: float = 10.0,
        enabled: bool = True,
    ):
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_every
        self.enabled = enabled
        self.count = 0
        self.extra = ""
        self.start = time.perf_counter()
        self._last = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        done = f"{self.count}/{self.total}" if self.total is not None else f"{self.count}"
        text = f"{self.label}: {done} {self.unit} | {rate:.1f} {self.unit}/s | {_duration(self.elapsed)}"
        if self.total is not None and rate > 0:
            text += f" | ETA {_duration(max(self.total - self.count, 0) / rate)}"
        return f"{text} | {self.extra}" if self.extra else text

    def update(self, n: int = 1, extra: str | None = None) -> None:
        self.count += n
        if extra is not None:
            self.extra = extra
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._emit()

    def _emit(self, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._emit(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
