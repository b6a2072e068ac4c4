"""How long ``freezewatch report DIR --html OUT.html`` takes on 10,000 dumps, and how big.

    python scripts/report_html_bench.py                    # 10,000 dumps, best of 3
    python scripts/report_html_bench.py --count 50000 --rounds 1
    python scripts/report_html_bench.py --dir /tmp/dumps10k --keep

The dumps are copies of one real dump (a small program is run under
``freezewatch run`` until it freezes once; or pass --template DUMP.json),
each moved in time over a week, onto one of --places blocking lines (a few
costly ones, a long tail), into one of --processes worker processes, with a
duration; one in ten is a stall, one in twenty a freeze-update of an earlier
freeze and one in fifty a freeze that never ended. They are written as
freezewatch writes them (mode 0600, a ``.txt`` twin: the template's own text,
since only the ``.json`` is read by the report). The time is the wall time
of the whole command, interpreter start-up included, as a person would wait
for it (best and median of --rounds), and its CPU time (user + system: what
other processes on a shared machine do not add to).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def fill(out: Path, template_path: Path, count: int, places: int = 150, processes: int = 60,
         seed: int = 1, now: float | None = None) -> None:
    """Write ``count`` dumps made from the real dump at ``template_path`` into ``out``."""
    rnd = random.Random(seed)
    template: dict[str, Any] = json.loads(template_path.read_text())
    twin = template_path.with_suffix(".txt").read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    spots = [(f"/srv/app/service/module{i % 9}.py", 10 + 13 * i, f"handler_{i}")
             for i in range(places)]
    causes = ("blocked syscall", "blocked syscall", "CPU spin", "lock wait", "GIL held",
              "garbage collection")
    varying = ("kind", "pid", "detected_at", "blocking_frame", "app_frame", "blocked_for",
               "cause", "duration", "first_dump", "update", "frame_moved")
    # The parts every copy shares are encoded once (10,000 encodings of the whole took most
    # of the time); each copy is its own keys spliced in front of them.
    shared = json.dumps({k: v for k, v in template.items() if k not in varying})[1:]
    freezes: list[str] = []
    for seq in range(1, count + 1):
        file, line, function = spots[min(int(rnd.expovariate(0.08)), places - 1)]
        roll = rnd.random()
        kind = "stall" if roll < 0.1 else "freeze-update" if roll < 0.15 and freezes else "freeze"
        detected = now - rnd.uniform(0, 7 * 86400)
        pid = 4000 + rnd.randrange(processes)
        frame = {"file": file, "line": line, "function": function, "code": "do_blocking_io()"}
        doc = dict(kind=kind, pid=pid, detected_at=detected, blocking_frame=frame,
                   app_frame=frame, blocked_for=round(rnd.uniform(0.3, 5.0), 3),
                   cause=causes[(line + seq) % len(causes)])
        if kind == "freeze" and rnd.random() > 0.02:
            doc["duration"] = round(doc["blocked_for"] + rnd.expovariate(0.5), 3)
        elif kind == "freeze-update":
            doc.update(first_dump=rnd.choice(freezes), update=1, frame_moved=False)
        prefix = "stall" if kind == "stall" else "freeze"
        name = f"{prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(detected))}-{pid}-{seq:05d}"
        body = (json.dumps(doc)[:-1] + ", " + shared).encode()
        for suffix, data in ((".json", body), (".txt", twin)):
            fd = os.open(out / (name + suffix), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        if kind == "freeze":
            freezes.append(f"{name}.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", help="where the dumps go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the dumps and the page")
    ap.add_argument("--template", help="a real dump to copy (default: make one)")
    args = ap.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="fw-html-bench-"))
    dumps = work / "dumps"
    if dumps.exists():
        shutil.rmtree(dumps)
    if args.template:
        template = Path(args.template)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from make_dumps import real_dump

        template = work / "template" / "freeze-20250101T000000Z-1-0001.json"
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_text(json.dumps(real_dump()))
        template.with_suffix(".txt").write_text("(template)\n")
    t0 = time.perf_counter()
    fill(dumps, template, args.count)
    made = time.perf_counter() - t0
    size_in = sum(p.stat().st_size for p in dumps.glob("*.json"))
    print(f"{args.count:,} dumps ({size_in / 1e6:.1f} MB of .json) written in {made:.1f} s "
          f"to {dumps}")
    out = work / "report.html"
    cmd = [sys.executable, "-m", "freezewatch", "report", str(dumps), "--html", str(out)]
    times, cpus = [], []
    for _ in range(args.rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    size = out.stat().st_size
    marks = out.read_text().count('<rect class="mark')
    print(f"freezewatch report --html on {args.count:,} dumps: best {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s over {args.rounds} run(s) (CPU "
          f"{min(cpus):.2f}-{max(cpus):.2f} s); "
          f"page {size / 1e6:.2f} MB ({size:,} bytes), {marks:,} timeline marks")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
