"""Stopping the local processes we start (each in its own session, so its children go too)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM the process group of ``proc``, wait up to ``timeout`` s, then SIGKILL it;
    return the exit code (at once when it has already exited)."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(10)
    except ProcessLookupError:  # the group went away between poll and kill
        return proc.wait(10)
