"""Job functions for the supervised worker's tests (the worker processes import them by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pid() -> int:
    """The process the job ran in."""
    return os.getpid()


def sleep_once(marker: str) -> int:
    """The first run notes its process in `marker` and sleeps (to be killed); a later run returns at once."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(600)
    return os.getpid()


def hang_once(marker: str) -> int:
    """The first run hangs where RQ's timeout cannot stop it (SIGALRM blocked, as in a C call that ignores
    signals); a later run returns at once."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(600)
    return os.getpid()
