"""What the demos print after their run: the dump they wrote and the lines it pins."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

RULE = "=" * 78


def dump_of_this_run(dump_dir: str, prefix: str, started: float,
                     last: bool = False) -> tuple[str, dict[str, Any]] | None:
    """The first (or last) ``prefix-*.json`` dump written since ``started``."""
    paths = sorted(
        (os.path.join(dump_dir, n) for n in os.listdir(dump_dir)
         if n.startswith(prefix + "-") and n.endswith(".json")),
        key=os.path.getmtime,
    )
    paths = [p for p in paths if os.path.getmtime(p) >= started]
    if not paths:
        print(f"demo: no {prefix} dump was written - that is a bug", file=sys.stderr)
        return None
    path = paths[-1] if last else paths[0]
    with open(path, encoding="utf-8") as f:
        return path, json.load(f)


def frame_line(label: str, frame: dict[str, Any] | None) -> None:
    if frame:
        print(f"  {label:<11}: {frame['file']}:{frame['line']} in {frame['function']}   "
              f"{frame['code']}")


def txt_head(path: str, lines: int) -> None:
    print(f"  read it    : less {path[:-5]}.txt")
    print(RULE)
    print("first lines of the .txt report:\n")
    with open(path[:-5] + ".txt", encoding="utf-8") as f:
        for _, line in zip(range(lines), f, strict=False):
            print("  " + line.rstrip())
