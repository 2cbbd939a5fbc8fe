"""Whether the autoscaler can act, and a log that stays short while it cannot.

A loop that fails every second must neither look healthy nor fill the disk: the health endpoint
turns 503 after a few failing ticks and names the error, and the log says each error once, then
at most once a minute with a count, then once more when it clears.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.alerts import AutoscalerHealth

#: Consecutive failing ticks before the autoscaler reports itself unhealthy (about 3 s at the
#: default 1 s tick): one slow engine answer is not an outage, three in a row are.
FAILING_AFTER_TICKS = 3
#: How often an error that keeps repeating is logged again.
REPEAT_LOG_SECONDS = 60.0
_ERROR_CHARS = 500


def one_line(exc: BaseException) -> str:
    """The error as one bounded line: its type and message, newlines folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:_ERROR_CHARS] if text else type(exc).__name__


@dataclass
class ActuatorHealth:
    """The actuator is failing once its `current()` or `scale_to()` has raised on
    FAILING_AFTER_TICKS consecutive ticks that called it; the first tick whose calls to it all
    return makes it healthy again. A tick that fails before it reaches the actuator (Redis down)
    neither counts nor clears: it says nothing about whether the engine would act."""

    failed_ticks: int = 0
    failing_since: float | None = None
    last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failed_ticks >= FAILING_AFTER_TICKS

    def failed(self, exc: BaseException, now: float) -> None:
        if self.failed_ticks == 0:
            self.failing_since = now
        self.failed_ticks += 1
        self.last_error = one_line(exc)

    def succeeded(self) -> None:
        self.failed_ticks = 0
        self.failing_since = None
        self.last_error = None

    def status(self) -> AutoscalerHealth:
        return AutoscalerHealth(
            failing=self.failing,
            failed_ticks=self.failed_ticks,
            failing_since=self.failing_since,
            last_error=self.last_error,
        )


class RepeatLog:
    """Logs failing ticks without a line per tick: a new error gets one WARNING line, the same
    error again at most one line per `every` seconds with how often it has failed, the first
    success after failures one INFO line. Tracebacks go to DEBUG only. "The same" is the same
    one-line text: an error whose text changes each time is logged each time."""

    def __init__(
        self, log: logging.Logger, every: float = REPEAT_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.every = every
        self.clock = clock
        self.error: str | None = None
        self.count = 0
        self.logged_at = 0.0

    def failed(self, exc: BaseException) -> None:
        line, now = one_line(exc), self.clock()
        if line != self.error:
            self.error, self.count, self.logged_at = line, 1, now
            self.log.warning("autoscaler tick failed: %s", line)
        else:
            self.count += 1
            if now - self.logged_at >= self.every:
                self.logged_at = now
                self.log.warning("autoscaler tick still failing (%d times): %s", self.count, line)
        self.log.debug("autoscaler tick failed", exc_info=exc)

    def succeeded(self) -> None:
        if self.error is None:
            return
        self.log.info("autoscaler tick succeeded again after %d failures of: %s", self.count, self.error)
        self.error, self.count = None, 0
