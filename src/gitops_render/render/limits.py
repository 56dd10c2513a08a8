"""A time limit per template, so an endless loop in a template stops the run instead of hanging it.

The limit uses ``SIGALRM`` (``setitimer``), so it interrupts pure-Python work such as a
``{% for %}`` over ``range(10**12)`` or a plugin filter that never returns. It is active
only in the main thread (the only one that receives signals); elsewhere templates run
without a limit. The previous ``SIGALRM`` handler and timer are restored afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

__all__ = ["TemplateClock", "TemplateTimeout", "template_clock"]


class TemplateTimeout(BaseException):  # not an Exception: template and plugin code must not catch it
    """Raised inside the template that exceeded its time limit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within {seconds:g} s")
        self.seconds = seconds


@dataclass
class TemplateClock:
    """Arms the limit for one template at a time (:meth:`arm`/:meth:`disarm`)."""

    seconds: float
    active: bool

    def arm(self) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def disarm(self) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)


@contextmanager
def template_clock(seconds: float) -> Iterator[TemplateClock]:
    """A clock whose :meth:`TemplateClock.arm` starts ``seconds`` for the next template."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield TemplateClock(seconds, active=False)
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal API
        raise TemplateTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    pending, interval = signal.getitimer(signal.ITIMER_REAL)
    clock = TemplateClock(seconds, active=True)
    try:
        yield clock
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pending:
            signal.setitimer(signal.ITIMER_REAL, pending, interval)
