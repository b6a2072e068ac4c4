"""Zero-code activation: what ``freezewatch run``'s start-up hook calls.

``start()`` runs in every Python process started under ``freezewatch run``,
at interpreter start-up, before the application's code: no loop exists yet,
so ``install()`` watches the first loop that starts running in the main
thread (``asyncio.run``, ``uvloop.run``, ``uvicorn.run``, ``web.run_app``).
Settings come from the FREEZEWATCH_* environment variables the command line
set. It never raises: a process freezewatch cannot watch runs unwatched,
with one line on stderr saying why.
"""

from __future__ import annotations

import os
import sys
import threading

from . import _state

ENV = "FREEZEWATCH_AUTOSTART"


def start() -> None:
    """Install freezewatch for the first loop the main thread runs (once per process)."""
    if _state.autostarted or threading.current_thread() is not threading.main_thread():
        return
    _state.autostarted = True
    # A forked child (gunicorn workers, multiprocessing "fork") has no
    # watchdog thread: freezewatch closes the parent's handles there.
    # Registered after freezewatch's own fork handler, so it runs after
    # that reset and watches the child's first loop afresh.
    if _install() and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_install)


def _install() -> bool:
    try:
        from ._install import install

        install()
    except Exception as e:  # boundary: the application must start even so
        print(f"freezewatch: not watching pid {os.getpid()}: {e}", file=sys.stderr)
        return False
    return True
