"""A small asyncio service for the metrics tests, run as a subprocess.

It installs freezewatch (name "app", threshold 0.3 s, metrics server on
``--port`` unless 0), answers on stdout ``ready PID`` once its loop runs, then
obeys one command per stdin line: ``freeze SECONDS`` blocks the loop with
time.sleep and then prints ``froze START END`` (Unix times); ``exit`` returns.
freezewatch's log lines go to stderr so stdout stays this small protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import structlog

import freezewatch


async def main(args: argparse.Namespace) -> None:
    freezewatch.install(threshold=0.3, interval=0.05, dump_dir=args.dump_dir, native=False,
                        metrics_port=args.port, name="app", dump_rate_window=0)
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.3)
    if args.initial_freeze:
        time.sleep(args.initial_freeze)  # a freeze before "ready": every worker has one
        await asyncio.sleep(0.3)
    print("ready", os.getpid(), flush=True)
    while True:
        # stdin is read on an executor thread: the loop stays free (and freezable).
        cmd = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not cmd or cmd[0] == "exit":
            return
        if cmd[0] == "freeze":
            start = time.time()
            time.sleep(float(cmd[1]))
            end = time.time()
            await asyncio.sleep(0.3)  # the watchdog sees the answer and ends the freeze
            print("froze", start, end, flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--dump-dir", required=True)
    p.add_argument("--initial-freeze", type=float, default=0.0)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(p.parse_args()))
