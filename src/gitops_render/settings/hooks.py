"""makejinja's ``exec_pre`` / ``exec_post`` hooks, with a time limit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Literal

from gitops_render.core.errors import ToolFailedError, ToolTimeoutError
from gitops_render.settings.model import Settings

__all__ = ["run_exec_hooks"]


def run_exec_hooks(settings: Settings, stage: Literal["pre", "post"]) -> None:
    """Run ``exec_pre`` or ``exec_post`` like makejinja: ``subprocess.run(cmd, shell=True)``.

    Commands run in ``settings.root`` (makejinja uses the caller's directory, which
    is the repository root in practice) with the inherited environment. A failing
    command raises :class:`ToolFailedError`, one that runs longer than
    ``exec_timeout`` seconds is stopped and raises :class:`ToolTimeoutError`; both
    stop the run.
    """
    commands = settings.exec_pre if stage == "pre" else settings.exec_post
    for cmd in commands:
        # its own process group, so that a timeout stops the command's children too
        proc = subprocess.Popen(cmd, shell=True, cwd=settings.root, start_new_session=True)  # noqa: S602
        try:
            returncode = proc.wait(timeout=settings.exec_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise ToolTimeoutError(f"exec_{stage}", f"command {cmd!r} did not finish within "
                                   f"{settings.exec_timeout:g}s and was stopped",
                                   hint="fix the command, or raise exec_timeout (seconds) in the settings") from None
        if returncode != 0:
            raise ToolFailedError(f"exec_{stage}", f"command {cmd!r} failed with exit code {returncode}",
                                  returncode=returncode,
                                  hint=f"fix the command or remove it from exec_{stage}")
