"""Start-up hook of ``freezewatch run``: watch this process without touching its code.

``freezewatch run -- CMD`` puts this file's directory first on PYTHONPATH and
sets FREEZEWATCH_AUTOSTART=1. Every Python process started under it (the
command and its Python children: uvicorn workers, ``--reload`` servers)
imports this module at start-up, because ``site`` imports ``sitecustomize``
after setting up sys.path. It then

1. takes its directory off sys.path again, so the application's path is as
   it would be without freezewatch;
2. imports the ``sitecustomize`` it shadows, if the interpreter has one
   (Debian's, a company's), so that one still runs;
3. installs freezewatch for the first event loop the main thread starts.

It must never break the program it starts: every failure is one line on
stderr. ``python -I``/``-E``/``-S`` skip PYTHONPATH or site, so they skip it.
"""

import os
import sys

_HERE = os.path.normcase(os.path.dirname(os.path.abspath(__file__)))


def _is_here(entry: str) -> bool:
    try:
        return os.path.normcase(os.path.abspath(entry or os.curdir)) == _HERE
    except (TypeError, ValueError):
        return False


def _chain() -> None:
    """Import the sitecustomize this one shadows, as ``site`` would have."""
    me = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # type: ignore[import-not-found]  # noqa: F401  (the next one)
    except ImportError as e:
        if e.name != "sitecustomize":
            print(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                  f"{type(e).__name__}: {e}", file=sys.stderr)
    except Exception as e:  # as site.execsitecustomize reports it
        print(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
              f"{type(e).__name__}: {e}", file=sys.stderr)
    finally:
        # The import system takes whatever is in sys.modules["sitecustomize"]
        # when this module finishes: the shadowed one if it loaded, else us.
        if "sitecustomize" not in sys.modules and me is not None:
            sys.modules["sitecustomize"] = me


def _start() -> None:
    try:
        from freezewatch._autostart import start
    except ImportError as e:
        print(f"freezewatch: not watching {sys.executable} (pid {os.getpid()}): "
              f"cannot import freezewatch there: {e}", file=sys.stderr)
        return
    start()


sys.path[:] = [p for p in sys.path if not _is_here(p)]
_chain()
if os.environ.get("FREEZEWATCH_AUTOSTART", "") not in ("", "0"):
    _start()
