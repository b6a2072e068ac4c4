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
HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver",
           "multiprocessing.semaphore_tracker")
"""multiprocessing's helper processes (``python -c 'from multiprocessing.resource_tracker
import main; main(fd)'``): they run no event loop, close stdin/stdout, and live as
long as the server; freezewatch never starts in them. Its spawned *workers*
(``multiprocessing.spawn``: uvicorn ``--workers``) are watched."""


def is_helper(argv: list[str]) -> bool:
    """True for a multiprocessing helper process (from ``sys.orig_argv``)."""
    if "-c" not in argv:
        return False
    code = argv[argv.index("-c") + 1] if argv.index("-c") + 1 < len(argv) else ""
    return any(f"from {h} import" in code for h in HELPERS)


def start() -> None:
    """Install freezewatch for the first loop the main thread runs (once per process)."""
    if _state.autostarted or threading.current_thread() is not threading.main_thread():
        return
    if is_helper(list(getattr(sys, "orig_argv", sys.argv))):
        return
    _state.autostarted = True
    # A forked child (gunicorn workers, multiprocessing "fork") has no
    # watchdog thread: freezewatch closes the parent's handles there.
    # Registered after freezewatch's own fork handler, so it runs after
    # that reset and watches the child's first loop afresh.
    if _install() and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_install)
    try:
        from . import _autoname

        _autoname.enable()  # requests named under uvicorn (gunicorn's UvicornWorker), aiohttp
    except Exception as e:  # boundary: never the application's start
        print(f"freezewatch: requests not named in pid {os.getpid()}: {e}", file=sys.stderr)


def _install() -> bool:
    try:
        from ._install import install

        install()
    except Exception as e:  # boundary: the application must start even so
        print(f"freezewatch: not watching pid {os.getpid()}: {e}", file=sys.stderr)
        return False
    return True
