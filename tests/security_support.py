"""Helpers for tests/test_security_*.py: an attacker as a second user, secrets in dumps."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

NOBODY = 65534
"""The attacker's uid (and gid): 'nobody', unused by the tests' own files."""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the attacker is a second user (uid 65534): only root can become one")


def as_user(uid: int, action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child that dropped to ``uid``; fail if it fails.

    The child only makes ``os`` calls and leaves with ``os._exit``: safe in a
    process with threads.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            action()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the attacker's action failed"


def all_text(dump_dir: Path, events: Any = None) -> str:
    """Every dump (.json, .txt) in ``dump_dir`` and every captured event, as one text."""
    parts = [p.read_text(errors="replace") for p in sorted(dump_dir.glob("*-*.*"))]
    if events is not None:
        parts.append(json.dumps(events.items, default=str))
    return "\n".join(parts)
