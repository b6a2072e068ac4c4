"""Fill a directory with many realistic dumps, to time ``freezewatch report`` on it.

    python scripts/make_dumps.py /tmp/dumps10k --count 10000
    time freezewatch report /tmp/dumps10k

The template is a real dump: a small program is run under ``freezewatch run``
until it freezes once (or pass --template DUMP.json). Each copy moves it in
time (over the last week), onto one of --places blocking lines, and gives it
a duration; about one in ten is a stall and one in twenty a freeze-update of
an earlier freeze, as a busy service's directory would hold. Each .json gets
its .txt twin, as freezewatch writes them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from freezewatch._snapshot.render import render

FREEZER = """
import asyncio, time

async def main():
    await asyncio.sleep(0.2)
    time.sleep(0.8)
    await asyncio.sleep(0.3)

asyncio.run(main())
"""


def real_dump() -> dict[str, Any]:
    """Run a small program under `freezewatch run` and return the dump it produced."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "freezer.py")
        script.write_text(FREEZER)
        env = dict(os.environ, FREEZEWATCH_NATIVE="0")
        subprocess.run([sys.executable, "-m", "freezewatch", "run", "--threshold", "0.3",
                        "--dump-dir", tmp, "--", sys.executable, str(script)],
                       check=True, env=env, capture_output=True)
        (path,) = Path(tmp).glob("freeze-*.json")
        return json.loads(path.read_text())  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--places", type=int, default=40, help="distinct blocking lines")
    ap.add_argument("--template", help="a real dump to copy (default: make one)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    template = json.loads(Path(args.template).read_text()) if args.template else real_dump()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    now = time.time()
    places = [(f"/srv/app/service/module{i % 7}.py", 10 + 13 * i, f"handler_{i}")
              for i in range(args.places)]
    freezes: list[str] = []
    for seq in range(1, args.count + 1):
        doc = copy.deepcopy(template)
        file, line, function = places[min(int(rnd.expovariate(0.15)), args.places - 1)]
        roll = rnd.random()
        kind = "stall" if roll < 0.1 else "freeze-update" if roll < 0.15 and freezes else "freeze"
        detected = now - rnd.uniform(0, 7 * 86400)
        frame = {"file": file, "line": line, "function": function, "code": "do_blocking_io()"}
        doc.update(kind=kind, detected_at=detected, blocking_frame=frame, app_frame=frame,
                   blocked_for=round(rnd.uniform(0.3, 5.0), 3))
        doc.pop("duration", None)
        if kind == "freeze":
            doc["duration"] = round(doc["blocked_for"] + rnd.expovariate(0.5), 3)
        elif kind == "freeze-update":
            doc.update(first_dump=rnd.choice(freezes), update=1, frame_moved=False)
        prefix = "stall" if kind == "stall" else "freeze"
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(detected))
        name = f"{prefix}-{stamp}-{4000 + seq % 50}-{seq:04d}"
        (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
        (out / f"{name}.txt").write_text(render(doc))
        if kind == "freeze":
            freezes.append(f"{name}.json")
    size = sum(p.stat().st_size for p in out.glob("*.json"))
    print(f"{args.count} dumps in {out} ({size / 1e6:.1f} MB of .json)")


if __name__ == "__main__":
    main()
