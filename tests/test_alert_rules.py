"""`EventLoopFrozen` pages on a frozen loop reliably: `promtool test rules` on series
that model a 5 s, a 60 s and a permanent freeze, scraped every 5 s, 15 s and 60 s.

The model is what freezewatch exports (docs/metrics.md): the blocked gauge is the
freeze's age from the threshold on and 0 otherwise; the freezes counter steps at
detection; the duration histogram observes the full duration when the freeze
ends. A scrape samples each at its own instant, so a short freeze can fall
between two scrapes of the gauge: the rule must still fire, once, and not flap.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from metrics_support import NO_PROMETHEUS, PROMTOOL, ROOT

from freezewatch._sinks.metrics import DURATION_BUCKETS

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMETHEUS)

RULES = ROOT / "scripts" / "prometheus" / "freezewatch-rules.yml"
LABELS = {"job": "api", "instance": "10.0.0.7:9464", "loop": "MainThread"}
THRESHOLD = 1.0  # freezewatch's threshold: the gauge and the counter move from here on
PAGE_AFTER = 2.5  # the rule's limit (a duration bucket bound)
START = 62.0  # the freeze begins between scrapes
HORIZON = 40 * 60
EVAL_EVERY = 15
WINDOW = 600  # the rule's increase() range


def _series(name: str, values: list[float], **extra: str) -> dict[str, str]:
    labels = ",".join(f'{k}="{v}"' for k, v in {**LABELS, **extra}.items())
    return {"series": f"{name}{{{labels}}}", "values": " ".join(f"{v:g}" for v in values)}


class Freeze:
    """One freeze from START lasting ``duration`` seconds (None: it never ends)."""

    def __init__(self, duration: float | None, scrape: int) -> None:
        self.end = None if duration is None else START + duration
        self.duration = duration
        self.scrape = scrape
        self.times = list(range(0, HORIZON + 1, scrape))

    def gauge(self, t: float) -> float:
        frozen = t >= START + THRESHOLD and (self.end is None or t < self.end)
        return t - START if frozen else 0.0

    def ended(self, t: float) -> bool:
        return self.end is not None and t >= self.end

    def input_series(self) -> list[dict[str, str]]:
        base = "freezewatch_freeze_duration_seconds"
        d = self.duration
        out = [
            _series("freezewatch_loop_blocked_seconds", [self.gauge(t) for t in self.times]),
            _series("freezewatch_freezes_total",
                    [float(t >= START + THRESHOLD) for t in self.times]),
            _series(base + "_count", [float(self.ended(t)) for t in self.times]),
            _series(base + "_sum", [d if (d and self.ended(t)) else 0.0 for t in self.times]),
        ]
        for bound in (*DURATION_BUCKETS, float("inf")):
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            out.append(_series(base + "_bucket",
                               [float(self.ended(t) and d is not None and d <= bound)
                                for t in self.times], le=le))
        return out

    def _gauge_fires(self, t: float) -> bool:
        last = max(s for s in self.times if s <= t)
        return self.gauge(last) > PAGE_AFTER

    def _histogram_fires(self, t: float, left_open: bool) -> bool | None:
        inside = [s for s in self.times if (s > t - WINDOW if left_open else s >= t - WINDOW)
                  and s <= t]
        if len(inside) < 2 or self.duration is None or self.duration <= PAGE_AFTER:
            return False
        return not self.ended(inside[0]) and self.ended(inside[-1])

    def fires(self, t: float) -> bool | None:
        """Whether the rule must fire at ``t``; None where PromQL versions differ
        (a sample exactly at the start of the range)."""
        if self._gauge_fires(t):
            return True
        closed, open_ = self._histogram_fires(t, False), self._histogram_fires(t, True)
        return closed if closed == open_ else None


def _annotations() -> dict[str, str]:
    """EventLoopFrozen's annotations, with the labels filled in."""
    text = RULES.read_text()
    rule = text[text.index("alert: EventLoopFrozen"):]
    rule = rule[:rule.index("- alert:", 1)] if "- alert:" in rule[1:] else rule
    found = dict(re.findall(r'^\s+(summary|description): "(.*)"$', rule, re.M))

    def fill(s: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: LABELS[m.group(1)], s)

    return {k: fill(v) for k, v in found.items()}


def _eval_times() -> Iterator[int]:
    return iter(range(0, HORIZON + 1, EVAL_EVERY))


def _run_promtool(tmp_path: Path, freeze: Freeze) -> tuple[subprocess.CompletedProcess[str],
                                                            list[int]]:
    expected = {"labels": {**LABELS, "severity": "page"}}
    tests = []
    firing_at: list[int] = []
    for t in _eval_times():
        want = freeze.fires(t)
        if want is None:
            continue
        if want:
            firing_at.append(t)
        tests.append({
            "eval_time": f"{t}s", "alertname": "EventLoopFrozen",
            # promtool compares annotations too: they carry no $value, so they are known.
            "exp_alerts": [{"exp_labels": expected["labels"],
                            "exp_annotations": _annotations()}] if want else [],
        })
    # YAML is a superset of JSON: no YAML library needed.
    doc = {"rule_files": [str(RULES)], "evaluation_interval": f"{EVAL_EVERY}s",
           "tests": [{"interval": f"{freeze.scrape}s", "input_series": freeze.input_series(),
                      "alert_rule_test": tests}]}
    path = tmp_path / "frozen.test.yml"
    path.write_text(json.dumps(doc, indent=1))
    proc = subprocess.run([str(PROMTOOL), "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    return proc, firing_at


@pytest.mark.parametrize("scrape", [5, 15, 60], ids=lambda s: f"scrape{s}s")
@pytest.mark.parametrize("duration", [5.0, 60.0, None], ids=["5s", "60s", "permanent"])
def test_event_loop_frozen_pages_once_per_freeze(
    tmp_path: Path, duration: float | None, scrape: int
) -> None:
    """EventLoopFrozen fires for a 5 s, a 60 s and a permanent freeze at any usual scrape
    interval, stays firing without a gap while the freeze lasts and for 10 minutes after
    it ended (one notification, no flapping), and resolves after that."""
    freeze = Freeze(duration, scrape)
    proc, firing_at = _run_promtool(tmp_path, freeze)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert firing_at, "the model says the alert never fires"
    first = firing_at[0]
    # It pages within a scrape interval and an evaluation of the freeze passing 2.5 s
    # (a short one: of its end, when the histogram has it).
    assert first - START <= min(duration or PAGE_AFTER, 5.0) + scrape + EVAL_EVERY, first
    # One continuous firing period: no flapping.
    assert firing_at == list(range(first, firing_at[-1] + 1, EVAL_EVERY))
    if freeze.end is None:
        assert firing_at[-1] == HORIZON
    else:
        assert freeze.end + 9 * 60 <= firing_at[-1] <= freeze.end + WINDOW + scrape + EVAL_EVERY


def test_no_freeze_no_page(tmp_path: Path) -> None:
    """A loop that never froze (or froze shorter than 2.5 s) does not page."""
    freeze = Freeze(2.0, 15)
    proc, firing_at = _run_promtool(tmp_path, freeze)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert firing_at == []
