"""The other workers' loops, read from prometheus-client's multiprocess directory.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) one process serves
/healthz for every worker of the server, so it must know how blocked the
other workers' loops are. It needs no file of its own for that: every
worker's watchdog thread already writes its loops' blocked time each round
(the ``livemax`` gauge file ``gauge_livemax_<pid>.db``) and the time of the
last answered heartbeat (``gauge_livemin_<pid>.db``). Each file is read on
its own with prometheus-client's public ``MultiProcessCollector.merge``, so
the values stay per pid.

A worker whose watchdog cannot write any more (a C call holding its GIL, a
watchdog thread that died) leaves a stale blocked value behind; its last
heartbeat then grows old, and a heartbeat older than ``liveness_limit`` plus
the idle beat period counts as blocked for that long. A dead pid's files
(a killed worker, no ``child_exit`` hook) are ignored.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import time
from typing import Any

from . import metrics as _metrics

_FILE = re.compile(r"^gauge_(livemax|livemin)_(\d+)\.db$")
BLOCKED = _metrics.PREFIX + "loop_blocked_seconds"
HEARTBEAT = _metrics.PREFIX + "loop_last_heartbeat_timestamp_seconds"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


def _values(path: str, metric: str) -> dict[str, float]:
    """loop name -> value of ``metric`` in one value file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    out: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):  # removed meanwhile, or being written
        for fam in MultiProcessCollector.merge([path]):  # type: ignore[no-untyped-call]
            if fam.name != metric:
                continue
            for s in fam.samples:
                loop = s.labels.get("loop")
                if loop is not None:
                    out[loop] = float(s.value)
    return out


def other_workers(liveness_limit: float, idle_beat_every: float) -> list[dict[str, Any]]:
    """One entry per loop of every other live worker: loop, pid, blocked_seconds."""
    path = _metrics.multiprocess_dir()
    if not path:
        return []
    me = os.getpid()
    files: dict[int, dict[str, str]] = {}
    for f in glob.glob(os.path.join(glob.escape(path), "gauge_live*.db")):
        m = _FILE.match(os.path.basename(f))
        if m and int(m.group(2)) != me:
            files.setdefault(int(m.group(2)), {})[m.group(1)] = f
    now = time.time()
    entries: list[dict[str, Any]] = []
    for pid in sorted(files):
        if not _alive(pid):
            continue
        blocked = _values(files[pid]["livemax"], BLOCKED) if "livemax" in files[pid] else {}
        beats = _values(files[pid]["livemin"], HEARTBEAT) if "livemin" in files[pid] else {}
        for loop in sorted(set(blocked) | set(beats)):
            b = blocked.get(loop, 0.0)
            beat = beats.get(loop)
            if beat is not None and beat > 0:
                silent = now - beat
                if silent > liveness_limit + idle_beat_every:  # its watchdog went quiet
                    b = max(b, silent)
            entries.append({"loop": loop, "pid": pid, "blocked_seconds": round(b, 3),
                            "liveness_limit": liveness_limit})
    return entries
