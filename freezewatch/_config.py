"""Settings: defaults, their FREEZEWATCH_* environment twins, validation.

Every setting is read once, at install(), and validated there: a bad value
raises ValueError naming the setting, the value and where it came from, so a
misconfiguration surfaces at start-up and never at freeze time.
Precedence: explicit keyword argument > environment variable > default.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "FREEZEWATCH_"
DEFAULT_DUMP_DIR = "freezewatch-dumps"


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings in force for one watched loop (see the README for each)."""

    threshold: float = 1.0
    """Seconds a heartbeat may stay unanswered before the loop counts as frozen."""
    interval: float = 0.1
    """Seconds between checks of each loop; must be below ``threshold``."""
    dump_dir: str = DEFAULT_DUMP_DIR
    """Directory for dump files (created 0700); absolute after validation."""
    native: bool = True
    """Run py-spy for a native trace in each freeze dump."""
    native_timeout: float = 5.0
    """Hard limit for one py-spy run, enforced from outside the process."""
    pyspy_path: str = ""
    """py-spy executable; empty: next to the interpreter, then PATH."""
    faulthandler: bool = True
    """Pin freezes that hold the GIL with faulthandler: the sentinel signals the loop
    thread, whose faulthandler handler writes its stack (docs/native.md). Needs the
    sentinel; off leaves faulthandler entirely to the application."""
    sentinel: bool = True
    """A helper process acts when the watchdog itself cannot (GIL held): it signals
    the loop threads for faulthandler and runs py-spy (docs/native.md)."""
    stall_after: float = 30.0
    """Default seconds a watch() unit may stay open before a stall dump."""
    update_after: tuple[float, ...] = (10.0, 60.0, 600.0)
    """Seconds after detection for freeze-update dumps; the last one repeats."""
    dump_rate_window: float = 60.0
    """At most one dump per blocking-frame signature in this many seconds."""
    max_dumps: int = 200
    """Retention: at most this many dumps (a .json/.txt pair is one dump)."""
    max_dump_bytes: int = 100_000_000
    """Retention: at most this many bytes of dump files in dump_dir."""
    idle_beat_every: float = 2.0
    """A loop idle in its selector still gets a real heartbeat this often."""
    name: str = ""
    """Name of the loop in dumps, logs and metrics; default: its thread's name."""
    metrics_port: int = 0
    """Serve /metrics and /healthz from a thread on this port; 0: no server."""
    metrics_addr: str = "127.0.0.1"
    """Address the metrics server binds; loopback unless chosen otherwise."""
    liveness_limit: float = 10.0
    """Seconds a loop may stay frozen before /healthz says 503 and the systemd
    watchdog stops being fed."""
    systemd_watchdog: bool = True
    """Send WATCHDOG=1 to systemd (NOTIFY_SOCKET, WATCHDOG_USEC) while loops answer."""
    registry: Any = dataclasses.field(default=None, compare=False, repr=False)
    """prometheus_client registry for the metrics (keyword only, no environment
    twin); None: prometheus-client's default registry."""


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


class _Setting:
    """Where one value came from, for error messages."""

    def __init__(self, name: str, value: Any, source: str) -> None:
        self.name, self.value, self.source = name, value, source

    def fail(self, why: str) -> ValueError:
        return ValueError(f"{self.name} {why}, got {self.value!r} from {self.source}")


def _coerce(setting: _Setting, kind: type) -> Any:
    v = setting.value
    try:
        if kind is bool:
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.strip().lower() in {"1", "true", "yes", "on"}:
                return True
            if isinstance(v, str) and v.strip().lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError
        if kind is float:
            if isinstance(v, bool):
                raise ValueError
            return float(v)
        if kind is int:
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            return int(v)
        if kind is tuple:
            items = v.split(",") if isinstance(v, str) else list(v)
            return tuple(float(x) for x in items if str(x).strip())
        if kind is str:
            return os.fspath(v) if v is not None else ""
        if kind is object:
            return v
    except (TypeError, ValueError):
        pass
    raise setting.fail(f"must be {'a number' if kind in (int, float) else kind.__name__}")


_KINDS: dict[str, type] = {
    "threshold": float, "interval": float, "dump_dir": str, "native": bool,
    "native_timeout": float, "pyspy_path": str, "stall_after": float,
    "faulthandler": bool, "sentinel": bool,
    "update_after": tuple, "dump_rate_window": float, "max_dumps": int,
    "max_dump_bytes": int, "idle_beat_every": float, "name": str,
    "metrics_port": int, "metrics_addr": str, "liveness_limit": float,
    "systemd_watchdog": bool, "registry": object,
}
_NO_ENV = frozenset({"registry"})  # an object, not something an environment can hold


def load(kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Build a validated Config from install() keywords and the environment."""
    env = os.environ if environ is None else environ
    unknown = set(kwargs) - set(_FIELDS)
    if unknown:
        raise TypeError(f"install() got unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    settings: dict[str, _Setting] = {}
    for name in _FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if name in kwargs and kwargs[name] is not None:
            s = _Setting(name, kwargs[name], f"install({name}=...)")
        elif env_name in env and name not in _NO_ENV:
            s = _Setting(name, env[env_name], f"{env_name} environment variable")
        else:
            continue
        settings[name] = s
        values[name] = _coerce(s, _KINDS[name])
    cfg = Config(**values)

    def where(name: str) -> _Setting:
        return settings.get(name) or _Setting(name, getattr(cfg, name), "the default")

    for name in ("threshold", "interval", "native_timeout", "stall_after", "idle_beat_every"):
        if not getattr(cfg, name) > 0:
            raise where(name).fail("must be > 0")
    if cfg.interval >= cfg.threshold:
        raise where("interval").fail(f"must be below threshold ({cfg.threshold})")
    if cfg.dump_rate_window < 0:
        raise where("dump_rate_window").fail("must be >= 0")
    if any(not x > 0 for x in cfg.update_after) or list(cfg.update_after) != sorted(
        cfg.update_after
    ):
        raise where("update_after").fail("must be increasing positive seconds")
    for name in ("max_dumps", "max_dump_bytes"):
        if getattr(cfg, name) < 1:
            raise where(name).fail("must be >= 1")
    _check_metrics(cfg, where)
    dump_dir = os.path.abspath(os.path.expanduser(cfg.dump_dir or DEFAULT_DUMP_DIR))
    _check_dump_dir(dump_dir, where("dump_dir"))
    return dataclasses.replace(cfg, dump_dir=dump_dir)


def _check_metrics(cfg: Config, where: Any) -> None:
    """Metrics settings; whether the port can be bound is checked when binding."""
    if not 0 <= cfg.metrics_port <= 65535:
        raise where("metrics_port").fail("must be 0 (off) or a TCP port up to 65535")
    if cfg.metrics_port and not cfg.metrics_addr.strip():
        raise where("metrics_addr").fail("must be an address to bind")
    if not cfg.liveness_limit > 0:
        raise where("liveness_limit").fail("must be > 0")
    reg = cfg.registry
    if reg is not None and not (callable(getattr(reg, "register", None))
                                and callable(getattr(reg, "collect", None))):
        raise where("registry").fail("must be a prometheus_client CollectorRegistry")


def _check_dump_dir(path: str, setting: _Setting) -> None:
    """Create the dump directory (0700) and prove a file can be written there."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".freezewatch-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(
            f"dump_dir {path!r} (from {setting.source}) cannot be created or "
            f"written: {e.strerror or e}"
        ) from None

