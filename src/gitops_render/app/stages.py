"""Stage events of a run (render, encrypt, write, validate) for whoever shows progress.

The pipeline calls a :class:`StageReporter` at the start and end of each stage; it
never prints. The CLI's reporter shows a live line with a spinner, counts and a bar
on a terminal, and nothing otherwise. ``advance`` is there for stages that can count
their items (a stage that cannot only reports start and done).

>>> r = NullReporter()
>>> r.start("render", total=3); r.advance("render"); r.done("render", "3 files")
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullReporter", "StageReporter"]


class StageReporter(Protocol):
    """Receives the stage events of one run."""

    def start(self, stage: str, total: int | None = None) -> None:
        """``stage`` begins; ``total`` items when known."""

    def advance(self, stage: str, n: int = 1) -> None:
        """``n`` more items of ``stage`` are done."""

    def done(self, stage: str, detail: str) -> None:
        """``stage`` finished; ``detail`` is its count line (``"1234 files"``)."""


class NullReporter:
    """A reporter that shows nothing (library callers, non-terminals)."""

    def start(self, stage: str, total: int | None = None) -> None:
        """Nothing."""

    def advance(self, stage: str, n: int = 1) -> None:
        """Nothing."""

    def done(self, stage: str, detail: str) -> None:
        """Nothing."""
