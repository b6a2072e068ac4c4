"""py-spy's output bounded and validated (issue 11, defect 6); the signal check (defect 2)."""

from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from freezewatch import _sigcheck
from freezewatch._snapshot import native


def _fake(tmp_path: Path, body: str) -> str:
    path = tmp_path / "py-spy"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_huge_output_is_bounded(tmp_path: Path) -> None:
    """30 MB of py-spy output: not kept; native.ok false, saying why."""
    fake = _fake(tmp_path, "head -c 31457280 /dev/zero | tr '\\0' 'x'")
    result = native.capture_native(os.getpid(), fake, 20.0)
    assert result.ok is False
    assert result.error == "py-spy output exceeded 256 kB and was dropped"
    assert result.text is None


def test_non_json_output_is_not_ok(tmp_path: Path) -> None:
    """Output that is not py-spy's JSON: ok false with an error (the text kept, bounded)."""
    fake = _fake(tmp_path, "echo 'Thread 0x1 (idle): \"MainThread\"'")
    result = native.capture_native(os.getpid(), fake, 20.0)
    assert result.ok is False
    assert result.error is not None and "not the JSON expected" in result.error
    assert result.text is not None and "MainThread" in result.text


def test_json_of_the_wrong_shape_is_not_ok() -> None:
    """JSON that is not a list of thread objects is refused too."""
    for out in ('[1, 2]', '{"threads": []}', '[' * 50_000 + ']' * 50_000):
        result = native.native_from_output(0, out, "", 5.0, "watchdog")
        assert result.ok is False, out[:20]


def test_output_over_the_bound_from_the_sentinel_path() -> None:
    """native_from_output (the sentinel's way in) refuses output over the bound."""
    result = native.native_from_output(0, "[]" + " " * native.MAX_OUTPUT, "", 5.0, "sentinel")
    assert result.ok is False and "exceeded" in (result.error or "")


SIG = signal.SIGRTMAX - 6  # not the one freezewatch uses (SIGRTMAX - 3)


@pytest.fixture
def spare_signal() -> Iterator[int]:
    before = signal.getsignal(SIG)
    try:
        yield SIG
    finally:
        faulthandler.unregister(SIG)
        signal.signal(SIG, before if before is not None else signal.SIG_DFL)


def test_claim_follows_the_kernel(spare_signal: int) -> None:
    """A Claim taken after faulthandler.register is ours until the app resets the signal
    (SIG_DFL, which would kill us on the next send) or installs its own handler."""
    assert _sigcheck.Claim.take(spare_signal) is None  # SIG_DFL: nothing to claim
    assert _sigcheck.caught(os.getpid(), spare_signal) is False
    faulthandler.register(spare_signal, all_threads=False)
    claim = _sigcheck.Claim.take(spare_signal)
    assert claim is not None and claim.still_ours()
    assert _sigcheck.caught(os.getpid(), spare_signal) is True
    signal.signal(spare_signal, signal.SIG_DFL)
    assert not claim.still_ours()
    assert _sigcheck.caught(os.getpid(), spare_signal) is False
    signal.signal(spare_signal, lambda *a: None)
    assert not claim.still_ours()
    assert _sigcheck.caught(os.getpid(), spare_signal) is True  # caught, but not by us
    signal.signal(spare_signal, signal.SIG_IGN)
    assert not claim.still_ours()
    assert _sigcheck.caught(os.getpid(), spare_signal) is False


def test_caught_unknown_without_proc(tmp_path: Path) -> None:
    """No /proc entry: unknown (None), never a guess."""
    assert _sigcheck.caught(os.getpid(), SIG, proc=str(tmp_path)) is None
    assert _sigcheck.caught(os.getpid(), 0) is None
