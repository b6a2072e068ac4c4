"""The dump the sentinel writes while no Python thread of the parent can run.

Standard library only, like ``_sentinel_main`` (which loads this file by
path: the sentinel runs with ``python -I -S`` and never imports freezewatch).
It duplicates, in small, what the watchdog's sinks do: the name
(``freeze-<UTC stamp>-<pid>-<seq>``), the rules for files in the dump
directory (``_sinks/dumpdir``: a trusted directory opened ``O_DIRECTORY|
O_NOFOLLOW``, temporary files ``O_EXCL|O_NOFOLLOW|O_NONBLOCK`` 0600 under an
unpredictable name, then a rename relative to the directory's descriptor),
the headline of the .txt (``_snapshot/render``), faulthandler's and py-spy's
output parsed into the contract's frames.

A new dump is linked into place (``link``, never ``rename``): if the name
exists already (the watchdog took the same sequence number in the same
instant) the link fails and the next number is tried, so the sentinel never
replaces a file it did not write. Its rewrites (native stack added, a later
capture) replace only its own file.

The document carries ``complete: false`` and ``written_by: "sentinel"``; the
watchdog completes it (tasks, threads, in-flight units, ``complete: true``,
the duration) when it runs again, under the same name.
"""

from __future__ import annotations

import contextlib
import json
import linecache
import os
import re
import stat
import time
from typing import Any

_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.+?)\s*$')
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_TMP = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK
          | os.O_CLOEXEC)
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_CODE = 300
MAX_FRAMES = 200
PENDING: dict[str, Any] = {
    "ok": False, "text": None, "threads": [], "source": "sentinel",
    "error": "native capture still running (this file is rewritten)"}


# -- stacks ----------------------------------------------------------------------------

def frame(path: str, line: int, function: str) -> dict[str, Any]:
    if path and not path.startswith("<"):
        path = os.path.abspath(path)
    try:
        code = linecache.getline(path, line).strip()[:MAX_CODE] or None
    except Exception:  # a file that cannot be read: no code line
        code = None
    return {"file": path, "line": line, "function": function, "code": code}


def parse_faulthandler(text: str) -> dict[int, list[dict[str, Any]]]:
    """faulthandler's text -> thread ident -> frames, outermost first."""
    stacks: dict[int, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for ln in text.splitlines():
        m = _THREAD.match(ln)
        if m:
            current = stacks.setdefault(int(m.group(1), 16), [])
            continue
        m = _FRAME.match(ln)
        if m and current is not None and len(current) < MAX_FRAMES:
            current.append(frame(m.group(1), int(m.group(2)), m.group(3)))
    return {tid: frames[::-1] for tid, frames in stacks.items()}


def is_app(path: str, libs: list[str], pkg: str) -> bool:
    """Outside the standard library, site-packages and freezewatch (``frames.is_app_file``)."""
    if not path or path.startswith("<frozen") or (pkg and path.startswith(pkg)):
        return False
    if path.startswith("<"):
        return True
    return not path.startswith(tuple(libs)) and "site-packages" not in path


def app_frame(frames: list[dict[str, Any]], libs: list[str], pkg: str) -> dict[str, Any] | None:
    for f in reversed(frames):
        if is_app(f["file"], libs, pkg):
            return dict(f)
    return None


def idle(frames: list[dict[str, Any]], idle_at: Any) -> bool:
    """The stack waits in the loop's selector (``_gil.idle``)."""
    if not frames:
        return True
    top = frames[-1]
    if top["function"] == "select" and top["file"].endswith("selectors.py"):
        return True
    return bool(idle_at) and [top["file"], top["line"]] == list(idle_at)


def native(code: int | None, out: str, err: str, limit: float, over: bool) -> dict[str, Any]:
    """py-spy's result as the contract's ``native`` (``native.native_from_output``, in small)."""
    def fail(error: str, text: str | None = None) -> dict[str, Any]:
        return {"ok": False, "text": text, "error": error, "threads": [], "source": "sentinel"}

    if over:
        return fail("py-spy output exceeded its bound and was dropped")
    if code in (124, -9):
        return fail(f"py-spy timed out after {limit:g} s and was killed (SIGINT, then SIGKILL)")
    if code != 0 or not out.strip():
        lines = (err or out).strip().splitlines()
        return fail("py-spy failed: " + (lines[-1] if lines else f"exit status {code}"))
    try:
        raw = json.loads(out)
        threads = [_thread(t) for t in raw[:1000]]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return fail("py-spy output is not the JSON expected from 'py-spy dump --json'")
    text = []
    for t in threads:
        tid = f"0x{t['thread_id']:x}" if isinstance(t["thread_id"], int) else "?"
        text.append(f"Thread {tid} {t['name'] or ''} (os tid {t['os_thread_id']})"
                    + (" [holds the GIL]" if t["owns_gil"] else ""))
        text.extend(f"    {f['function']} ({os.path.basename(f['file'])})" if f["native"]
                    else f"    {f['function']} ({f['file']}:{f['line']})"
                    for f in reversed(t["frames"]))
    return {"ok": True, "text": "\n".join(text), "error": None, "threads": threads,
            "source": "sentinel"}


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _thread(t: dict[str, Any]) -> dict[str, Any]:
    frames = [{"function": str(f.get("name") or "?"),
               "file": str(f.get("filename") or f.get("short_filename") or "?"),
               "line": _int(f.get("line")) or 0, "native": f.get("module") is not None}
              for f in (t.get("frames") or [])[:MAX_FRAMES]]
    name = t.get("thread_name")
    return {"thread_id": _int(t.get("thread_id")), "os_thread_id": _int(t.get("os_thread_id")),
            "name": name if isinstance(name, str) else None, "owns_gil": bool(t.get("owns_gil")),
            "active": bool(t.get("active")), "frames": frames[::-1]}


def python_frames(nat: dict[str, Any], ident: int) -> tuple[list[dict[str, Any]], bool] | None:
    """The loop thread's Python frames in py-spy's capture, and whether it owned the
    GIL in a C function (``_gil.holds_gil_in_c``); None if it is not there."""
    for t in nat.get("threads") or []:
        if t["thread_id"] == ident:
            frames = [frame(f["file"], f["line"], f["function"])
                      for f in t["frames"] if not f["native"]]
            in_c = t["owns_gil"] and bool(t["frames"]) and t["frames"][-1]["native"]
            return (frames, in_c) if frames else None
    return None


# -- the kernel's view of the loop thread ---------------------------------------------

def kernel(parent: int, tid: int, cpu0: float | None, window: float) -> dict[str, Any]:
    """State, wchan, syscall and CPU of a thread of ``parent`` (``procview.KernelView``)."""
    base = f"/proc/{parent}/task/{tid}"
    view: dict[str, Any] = {"ok": False, "state": None, "wchan": None, "syscall": None,
                            "syscall_nr": None, "fd": None, "fd_target": None, "tcp": None,
                            "cpu_seconds": None, "cpu_delta": None, "cpu_window": None,
                            "cpu_growing": False, "error": None, "read_by": "sentinel"}
    try:
        with open(f"{base}/stat", "rb") as f:
            view["state"] = f.read().rsplit(b")", 1)[1].split()[0].decode()
        view["ok"] = True
        with contextlib.suppress(OSError), open(f"{base}/wchan", "rb") as f:
            w = f.read().decode(errors="replace").strip()
            view["wchan"] = None if w in ("", "0") else w
        with contextlib.suppress(OSError, ValueError, IndexError), \
                open(f"{base}/syscall", "rb") as f:
            first = f.read().split()[0].decode()
            if first == "running":
                view["syscall"] = "running"
            else:
                nr = int(first)
                view["syscall_nr"] = nr
                view["syscall"] = "none" if nr < 0 else f"syscall {nr}"
    except (OSError, IndexError) as e:
        view["error"] = f"cannot read {base}/stat: {e}"
    cpu = thread_cpu(parent, tid)
    if cpu is not None:
        view["cpu_seconds"] = round(cpu, 6)
        if cpu0 is not None and window > 0:
            delta = max(0.0, cpu - cpu0)
            view.update(cpu_delta=round(delta, 6), cpu_window=round(window, 3),
                        cpu_growing=delta >= max(0.002, 0.05 * window))
    return view


def thread_cpu(parent: int, tid: int, field: int = 0) -> float | None:
    """Seconds a thread of ``parent`` ran (``field`` 0) or waited for a CPU (1)."""
    try:
        with open(f"/proc/{parent}/task/{tid}/schedstat", "rb") as f:
            return int(f.read().split()[field]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


# -- the files ------------------------------------------------------------------------

def dump_name(kind: str, detected_at: float, pid: int, seq: int) -> str:
    prefix = "stall" if kind == "stall" else "freeze"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(detected_at))
    return f"{prefix}-{stamp}-{pid}-{seq:04d}"


def open_dir(path: str) -> int:
    """The dump directory, trusted as ``dumpdir.vet`` trusts it (never repaired here:
    the watchdog does that; the sentinel only refuses)."""
    try:
        fd = os.open(path, _O_DIR)
    except FileNotFoundError:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, _O_DIR)
    st = os.fstat(fd)
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), 0)
            or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        os.close(fd)
        raise PermissionError(f"{path!r} is not a dump directory to trust")
    return fd


def _write(dir_fd: int, name: str, data: bytes, new: bool) -> None:
    tmp = f".{name}.{os.getpid()}.{os.urandom(8).hex()}.tmp"
    fd = os.open(tmp, _O_TMP, 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # never over a name that exists (FileExistsError: the caller moves on)
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        else:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)


def write_pair(dump_dir: str, doc: dict[str, Any], next_seq: Any,
               stem: str | None = None) -> str:
    """Write ``doc`` as a dump pair (``stem``: rewrite that one of ours); returns the
    .json path. ``next_seq()`` reserves a sequence number (shared with the watchdog)."""
    fd = open_dir(dump_dir)
    try:
        txt = render(doc).encode("utf-8", "replace")
        js = json.dumps(doc, indent=1, default=str).encode("utf-8", "replace")
        if stem is None:
            for _ in range(50):
                cand = dump_name(doc["kind"], doc["detected_at"], doc["pid"], next_seq())
                try:
                    _write(fd, cand + ".txt", txt, new=True)
                except FileExistsError:
                    continue
                stem = cand
                break
            else:
                raise FileExistsError("no free dump name")
        else:
            st = os.stat(stem + ".json", dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):  # not ours any more: leave it
                raise FileExistsError(stem)
            _write(fd, stem + ".txt", txt, new=False)
        _write(fd, stem + ".json", js, new=False)
    finally:
        os.close(fd)
    return os.path.join(dump_dir, stem + ".json")


# -- the .txt ---------------------------------------------------------------------------

def _esc(v: Any) -> str:
    return _CTRL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                     else f"\\u{ord(m.group()):04x}", str(v))


def _where(f: dict[str, Any] | None) -> str:
    return f"{_esc(f['file'])}:{f['line']} in {_esc(f['function'])}" if f else "(none)"


def render(doc: dict[str, Any]) -> str:
    """The .txt of the sentinel's dump: ``render.render``'s headline, then what it saw."""
    loop = doc["loop"]
    word = "FREEZE (update)" if doc["kind"] == "freeze-update" else "FREEZE"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["detected_at"]))
    lines = [f"{word}: event loop {_esc(loop['name'])!r} blocked for "
             f"{doc['blocked_for']:.2f} s (threshold {doc['threshold']:.2f} s)",
             f"  at {when}, pid {doc['pid']} on {_esc(doc['hostname'])}, thread "
             f"{_esc(loop['thread_name'])!r} ({loop['thread_id']})",
             "  written by the sentinel while no Python thread could run: tasks, threads "
             "and requests follow when the process runs again (complete: false)", ""]
    bf, af = doc["blocking_frame"], doc["app_frame"]
    lines.append(f"Blocked at:  {_where(bf)}")
    if bf.get("code"):
        lines.append(f"             {_esc(bf['code'])}")
    if af and af != bf:
        lines.append(f"App line:    {_where(af)}")
        if af.get("code"):
            lines.append(f"             {_esc(af['code'])}")
    elif not af:
        lines.append("App line:    (no application frame on this stack)")
    lines.append(f"Cause:       {doc['cause']} \u2014 {_esc(doc['kernel_summary'])}")
    if doc.get("gil_held"):
        lines.append(f"GIL:         held during the freeze (captured by {doc['captured_by']})")
    lines += ["", "Loop thread stack (most recent call last):"]
    for f in doc["loop_thread"]["frames"] or []:
        lines.append(f"  {_where(f)}")
        if f.get("code"):
            lines.append(f"      {_esc(f['code'])}")
    nat = doc["native"]
    lines += ["", "Native stacks (py-spy):"]
    if nat.get("ok"):
        lines.extend("  " + _esc(ln) for ln in (nat.get("text") or "").splitlines())
    else:
        lines.append(f"  unavailable: {_esc(nat.get('error'))}")
    return "\n".join(lines) + "\n"
