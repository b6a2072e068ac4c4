"""Imports run one way (trio-style): the package's layering, checked from its source.

Every import counts, top-level, inside a function or under TYPE_CHECKING.
A module may import only modules of a lower layer, or of its own layer
without a cycle; third-party packages are imported only where they belong.
Adding a module means giving it a layer here: that is where a newcomer
learns their room (docs/developers.md tells the same story).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from layering_support import PACKAGE, cycles, graph, imports, modules

# Lowest first. A module imports only from its own layer or those above it in this list.
LAYERS: list[set[str]] = [
    # 0: pure data, the detector, the global state department, standalone programs
    {"_state", "_events", "_detect", "_verdicts", "_decisions", "_snapshot", "_snapshot.model",
     "_rundelay", "_loopwait", "_selector", "_sentinel_main", "_sentinel_dump",
     "_sentinel_freeze",
     "_cli_errors", "_cli_color", "_boot", "_sinks",
     "_version", "_pager", "_html_css", "_html_text", "_redact", "_sigcheck", "_dumpread",
     "_snapshot.cpu", "_snapshot.context", "_snapshot.render", "_snapshot.procview",
     "_sinks.scrub", "_snapshot.render_waits"},
    # 1: capture (reads frames, tasks, /proc), units of work in flight
    {"_snapshot.frames", "_snapshot.tasks", "_snapshot.threads", "_snapshot.waits",
     "_snapshot.native", "_snapshot.gcwatch", "_snapshot.cause", "_snapshot.capture",
     "_snapshot.otel_context", "_snapshot.wait_source", "_snapshot.primitives",
     "_snapshot.holders", "_snapshot.jobs", "_snapshot.waitgraph", "_inflight", "_allow",
     "_html_timeline", "_html_detail"},
    # 2: the sinks and services; the layers outside the GIL
    {"_sinks.report", "_sinks.log", "_sinks.metrics", "_sinks.workers", "_sinks.health",
     "_sinks.serve",
     "_sinks.sdnotify", "_sinks.dumpfile", "_sinks.retention", "_sinks.otel", "_sinks.sentry",
     "_sinks.dumpdir", "_config",
     "_faulthandler", "_sentinel", "_sentinel_share"},
    # 3: what the handle and the watchdog share
    {"_gil", "_registry"},
    # 4: the handle
    {"_handle"},
    # 5: observing a loop; py-spy off the watchdog thread
    {"_observe", "_native_jobs", "_gil_pin"},
    # 6: decisions to sinks
    {"_pipeline"},
    # 7: the thread
    {"_watchdog"},
    # 8: install/uninstall
    {"_install", "otel", "sentry"},
    # 9: the public surface and the tools built on it
    {"__init__", "__main__", "_autostart", "_autoname", "_runcmd", "_boot.sitecustomize",
     "aiohttp", "asgi", "pytest_plugin", "cli", "_cli_report", "_report_html"},
]

THIRD_PARTY_HOMES = {
    "structlog": {"_sinks.log"},
    "prometheus_client": {"_sinks.metrics", "_sinks.workers", "_sinks.serve", "_install"},
    "aiohttp": {"aiohttp"},
    "pytest": {"pytest_plugin"},
    "opentelemetry": {"_sinks.otel", "_snapshot.otel_context", "otel"},
    "sentry_sdk": {"_sinks.sentry", "sentry"},
}
"""Where each optional dependency may be imported (``_install`` only marks a
process dead in prometheus-client's multiprocess directory at exit)."""

PURE_STDLIB = {"__future__", "dataclasses", "math", "collections", "typing"}
"""All the detector may import: it reads no clock and touches no thread."""

MAX_LINES = 400


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"module {name!r} has no layer: add it to LAYERS in {__file__}")


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import against the direction, every cycle, every misplaced dependency."""
    mods = modules(root)
    out: list[str] = []
    edges = graph(root)
    for cycle in cycles(edges):
        out.append("import cycle: " + " -> ".join(cycle))
    for name, deps in sorted(edges.items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(name):
                out.append(f"{name} (layer {layer_of(name)}) imports {dep} "
                           f"(layer {layer_of(dep)}): against the direction")
    for name, path in mods.items():
        inner, outer = imports(name, path, mods)
        for pkg, homes in THIRD_PARTY_HOMES.items():
            if pkg in outer and name not in homes:
                out.append(f"{name} imports {pkg}: only {sorted(homes)} may")
        if name in ("_decisions", "_state") and inner:
            out.append(f"{name} imports freezewatch modules {sorted(inner)}: it must import none")
        pure = {"_detect": {"_decisions", "_verdicts"}, "_verdicts": {"_decisions"}}
        if name in pure and inner - pure[name]:
            out.append(f"{name} imports {sorted(inner - pure[name])}: only its data, "
                       "_decisions (and _verdicts)")
        if name in ("_detect", "_verdicts", "_decisions") and outer - PURE_STDLIB:
            out.append(f"{name} imports {sorted(outer - PURE_STDLIB)}: it must stay pure")
    return out


def test_imports_run_one_way() -> None:
    assert violations() == []


def test_every_module_has_a_layer_and_none_is_over_400_lines() -> None:
    long = {}
    for name, path in modules().items():
        layer_of(name)
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long[name] = n
    assert long == {}, f"modules over {MAX_LINES} lines: split them along their subjects"


def test_an_import_against_the_direction_is_caught(tmp_path: Path) -> None:
    """The check can fail: an in-function import of the watchdog from the state
    department, and a structlog import in the detector, are both reported."""
    copy = tmp_path / "freezewatch"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    state = copy / "_state.py"
    state.write_text(state.read_text() + "\n\ndef _peek() -> object:\n"
                     "    from . import _watchdog\n    return _watchdog\n")
    detect = copy / "_detect.py"
    detect.write_text(detect.read_text().replace(
        "import math\n", "import math\n\nif False:\n    import structlog  # noqa\n", 1))
    found = violations(copy)
    assert any(v.startswith("import cycle:") and "_watchdog" in v for v in found), found
    assert any(v.startswith("_state (layer 0) imports _watchdog") for v in found), found
    assert any("_detect imports structlog" in v for v in found), found
    assert any("_detect imports ['structlog']" in v for v in found), found
