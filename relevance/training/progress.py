"""Progress of long training work (an epoch, the catalog stage): steps done, the mean loss so far and an estimate
of the time left. A tqdm bar when stderr is a terminal; elsewhere (a log file, a scheduler, Spark's executors) a
plain line every `every_seconds`. It reads only the losses it is given and the clock, so it never changes what is
trained: the same seed gives the same model with or without it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

# purity: no pyspark torch transformers

PLAIN_EVERY_SECONDS = 30.0
FALLBACK_SIZE = (100, 24)  # columns and lines of a terminal that reports none


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def bar_width(stream: TextIO) -> dict[str, object]:
    """tqdm's size settings: follow the terminal's size, or a fixed FALLBACK_SIZE where the terminal reports none (a
    pseudo-terminal without a size: `script`, `docker exec -t`), on which tqdm would draw nothing."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": FALLBACK_SIZE[0], "nrows": FALLBACK_SIZE[1]}


def duration(seconds: float) -> str:
    """`1h02m`, `3m05s` or `42s`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class StepProgress:
    """The progress of `total` steps called `label` ("epoch 2/3", "catalog"): call `step(loss)` after each step and
    `close()` at the end (or use it as a context manager). Plain lines go to `log`, one per `every_seconds` (default
    PLAIN_EVERY_SECONDS), never after the last step (the caller reports the end). With `enabled` false (another
    process of a distributed group reports) it shows nothing."""

    def __init__(self, label: str, total: int, log: Callable[[str], None] = print, stream: TextIO | None = None,
                 every_seconds: float | None = None, clock: Callable[[], float] = time.monotonic,
                 enabled: bool = True) -> None:
        stream = sys.stderr if stream is None else stream
        self.label, self.total, self.log, self.clock = label, total, log, clock
        self.every_seconds = PLAIN_EVERY_SECONDS if every_seconds is None else every_seconds
        self.enabled = enabled and total > 0
        self.done, self.loss_sum = 0, 0.0
        self.started = self.last_line = clock()
        self.bar = (tqdm(total=total, desc=f"  {label}", file=stream, leave=False, unit="step",
                         **bar_width(stream)) if self.enabled and is_terminal(stream) else None)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.done if self.done else float("nan")

    def step(self, loss: float) -> None:
        """One step done, with its loss."""
        self.done += 1
        self.loss_sum += loss
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {self.mean_loss:.4f}", refresh=False)
            self.bar.update(1)
            return
        now = self.clock()
        if now - self.last_line >= self.every_seconds and self.done < self.total:
            self.last_line = now
            self.log(self.line(now))

    def line(self, now: float) -> str:
        """The plain progress line at clock time `now`."""
        elapsed = now - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        return (f"  {self.label}: step {self.done}/{self.total} ({self.done / self.total:.0%}), loss {self.mean_loss:.4f}, "
                f"{duration(elapsed)} elapsed, about {duration(left) if self.done else '?'} left")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
