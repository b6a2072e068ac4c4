"""CPU time of a process tree from /proc, for bench.py and its workers.

/proc/<pid>/schedstat is the main thread only; a process's CPU is the sum of
/proc/<pid>/task/*/schedstat (ns on CPU, wait ns, times scheduled in). A
watched process may also own helper processes (freezewatch's sentinel, a
py-spy run): their CPU is part of what freezewatch costs, so the figures here
cover the whole tree of live descendants.
"""

from __future__ import annotations

import os


def thread_cpu(pid: int) -> tuple[int, int]:
    """(ns on CPU, times scheduled in) summed over the threads of ``pid``."""
    run = slices = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:  # the thread ended between listdir and open
            continue
        run += int(fields[0])
        slices += int(fields[2])
    return run, slices


def task_cpu(pid: int) -> dict[int, tuple[int, int]]:
    """{thread id: (ns on CPU, times scheduled in)} for each thread of ``pid``."""
    out: dict[int, tuple[int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[0]), int(fields[2]))
    return out


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tree_cpu(pid: int) -> dict[int, tuple[int, int]]:
    """{pid: (ns on CPU, times scheduled in)} for ``pid`` and its live descendants."""
    return {p: thread_cpu(p) for p in (pid, *descendants(pid))}


def delta(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
          only: int | None = None) -> tuple[int, int]:
    """CPU ns and slices spent between two tree_cpu() readings (a process born
    in between counts from zero; one that ended in between is lost).
    ``only``: just that pid (the others: pass ``only=-pid``)."""
    run = slices = 0
    for p, (r, s) in after.items():
        if only is not None and ((only > 0 and p != only) or (only < 0 and p == -only)):
            continue
        r0, s0 = before.get(p, (0, 0))
        run += r - r0
        slices += s - s0
    return run, slices
