"""Python frames -> plain Frame records, and which of them is application code.

This module and tasks.py are the only places that touch interpreter
internals (``sys._current_frames``, ``cr_await``/``gi_yieldfrom``/``ag_await``);
both are exercised by the suite on every supported Python.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import site
import sys
import sysconfig
import types

from .model import Frame

MAX_FRAMES = 200
"""Frames kept per stack; the innermost ones are kept when a stack is deeper."""
MAX_CODE = 300
"""Characters kept of a source line."""

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _library_prefixes() -> tuple[str, ...]:
    paths: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    with contextlib.suppress(AttributeError):  # old virtualenv's site.py lacks it
        paths.update(site.getsitepackages())
    user = getattr(site, "USER_SITE", None)
    if user:
        paths.add(user)
    out = {os.path.realpath(p) for p in paths} | {os.path.abspath(p) for p in paths}
    return tuple(sorted(p.rstrip(os.sep) + os.sep for p in out))


_LIBRARY = _library_prefixes()


def is_app_file(path: str) -> bool:
    """True for files outside the standard library, site-packages and freezewatch."""
    if not path or path.startswith("<frozen") or path.startswith(_PKG_DIR):
        return False
    if path.startswith("<"):
        return True  # <string>, <stdin>: code the application handed to Python itself
    return not path.startswith(_LIBRARY) and "site-packages" not in path


def source_line(path: str, line: int) -> str | None:
    try:
        text = linecache.getline(path, line).strip()
    except Exception:  # a broken loader must not break a capture
        return None
    return text[:MAX_CODE] if text else None


def frame_record(frame: types.FrameType) -> Frame:
    code = frame.f_code
    path = code.co_filename
    if path and not path.startswith("<"):
        path = os.path.abspath(path)
    line = frame.f_lineno or code.co_firstlineno
    return Frame(path, line, getattr(code, "co_qualname", code.co_name), source_line(path, line))


def stack_records(frame: types.FrameType | None) -> tuple[Frame, ...]:
    """The stack ending at ``frame``, outermost first, innermost MAX_FRAMES kept."""
    raw: list[types.FrameType] = []
    while frame is not None and len(raw) < MAX_FRAMES:
        raw.append(frame)
        frame = frame.f_back
    raw.reverse()
    return tuple(frame_record(f) for f in raw)


_OUR_FILES = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def blocking_frame(frames: tuple[Frame, ...]) -> Frame | None:
    """The innermost frame that is not freezewatch's own: a hook of ours that runs
    on the loop thread (the gc.callbacks hook during a collection, the beat) is
    where the thread happened to be, never what blocked it."""
    for f in reversed(frames):
        if not f.file.startswith(_OUR_FILES):
            return f
    return frames[-1] if frames else None


def app_frame(frames: tuple[Frame, ...]) -> Frame | None:
    """The innermost frame that lies in application code."""
    for f in reversed(frames):
        if is_app_file(f.file):
            return f
    return None


def thread_top_frames() -> dict[int, types.FrameType]:
    """The current innermost frame of every thread (a fresh dict, ours to keep)."""
    return sys._current_frames()
