"""Page long output on a terminal the way git does: ``$PAGER``, else ``less``.

Only when stdout is a terminal: piped or redirected output is written as is.
The pager command is run by the shell (``sh -c``, as git runs it), so
``PAGER='less -S'`` works. An empty ``PAGER`` or ``cat`` means no pager. When
``LESS`` is unset it is set to ``FRX`` for the pager, as git sets it: quit if
the text fits on one screen (``F``), pass colour codes through (``R``), do
not clear the screen on exit (``X``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import IO

DEFAULT = "less"
ENV_DEFAULTS = {"LESS": "FRX", "LV": "-c"}  # git's defaults for less and lv
SHELL_NOT_FOUND = 127


def pager_command(environ: Mapping[str, str], stream: IO[str]) -> str | None:
    """The pager to run for ``stream``, or None to write directly."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    cmd = environ.get("PAGER", DEFAULT).strip()
    if cmd in ("", "cat"):
        return None
    return cmd


def page(text: str, *, enabled: bool = True, stream: IO[str] | None = None,
         environ: Mapping[str, str] | None = None) -> None:
    """Write ``text`` to ``stream`` (stdout) through the pager when it is a terminal."""
    out = sys.stdout if stream is None else stream
    env = os.environ if environ is None else environ
    cmd = pager_command(env, out) if enabled else None
    if cmd is None or not _through(cmd, text, out, env):
        out.write(text)
        out.flush()


def _through(cmd: str, text: str, out: IO[str], environ: Mapping[str, str]) -> bool:
    """Run ``cmd`` with ``text`` on its stdin; False if it could not be started."""
    env = {**ENV_DEFAULTS, **environ}
    out.flush()
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE, stdout=out, env=env)
    except OSError:  # no shell: write directly
        return False
    stdin = proc.stdin
    try:
        if stdin is not None:  # always, with stdin=PIPE; the check is for the type checker
            stdin.write(text.encode(encoding, errors="replace"))
            stdin.close()
    except BrokenPipeError:  # the person quit the pager early (or it is not there)
        pass
    try:
        status = proc.wait()
    except KeyboardInterrupt:  # ctrl-C reaches the pager too; let it finish
        status = proc.wait()
    # The shell's "command not found": nothing was shown, so show it here.
    return status != SHELL_NOT_FOUND
