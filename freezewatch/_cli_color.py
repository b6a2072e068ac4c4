"""Colour for ``freezewatch show`` on a terminal: the rendered text, with ANSI codes.

The renderer (``_snapshot/render.py``) writes the plain .txt that dump files
carry; colour is added here, line by line, only for a terminal.
"""

from __future__ import annotations

import os
import re
from typing import IO, Any

RESET = "\033[0m"
BOLD = "\033[1m"
DIM = "\033[2m"
RED = "\033[31m"
YELLOW = "\033[33m"
CYAN = "\033[36m"

_SECTION = re.compile(
    r"^(Loop thread stack|Await chain|Tasks:|Thread |Native stacks|Capture errors)")


def want_color(choice: str | None, stream: IO[str]) -> bool:
    """``--color``/``--no-color`` first, then NO_COLOR (no-color.org), then: is it a terminal?"""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _where(f: Any) -> str | None:
    if not isinstance(f, dict):
        return None
    return f"{f.get('file')}:{f.get('line')} in {f.get('function')}"


def colorize(text: str, doc: dict[str, Any]) -> str:
    """Headline red (yellow for a stall), the blocking and application lines bold,
    and those two frames picked out wherever a stack shows them."""
    blocking, app = _where(doc.get("blocking_frame")), _where(doc.get("app_frame"))
    out = []
    for i, line in enumerate(text.splitlines()):
        if i == 0:
            out.append(f"{BOLD}{YELLOW if doc.get('kind') == 'stall' else RED}{line}{RESET}")
        elif line.startswith("Blocked at:"):
            out.append(f"{BOLD}Blocked at:{RESET}{BOLD}{YELLOW}{line[11:]}{RESET}")
        elif line.startswith("App line:"):
            out.append(f"{BOLD}App line:{RESET}{BOLD}{CYAN}{line[9:]}{RESET}")
        elif _SECTION.match(line):
            out.append(f"{BOLD}{line}{RESET}")
        elif blocking and line.strip() == blocking:
            out.append(f"{YELLOW}{line}{RESET}")
        elif app and line.strip() == app:
            out.append(f"{CYAN}{line}{RESET}")
        elif line.startswith("  ") and ("site-packages" in line or "/lib/python" in line):
            out.append(f"{DIM}{line}{RESET}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"
