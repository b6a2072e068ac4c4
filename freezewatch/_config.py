"""Settings: defaults, their FREEZEWATCH_* environment twins, validation.

Every setting is read once, at install(), and validated there: a bad value
raises ValueError naming the setting, the value and where it came from, so a
misconfiguration surfaces at start-up and never at freeze time.
Precedence: explicit keyword argument > environment variable > default.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from . import _redact

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
    idle_beat_every: float = 10.0
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
    redact: Callable[[str], str] = dataclasses.field(
        default=_redact.redact, compare=False, repr=False)
    """The redaction rule for every text recorded from the application (request
    names and URLs, task names, exception text): ``str -> str`` (keyword only;
    default: ``_redact.redact``, see docs/security.md). Use it through
    ``_redact.apply(cfg.redact, text)``, which falls back to the default if it fails."""
    contextvars: tuple[str, ...] = ()
    """structlog context variables (``bind_contextvars`` keys) copied into dumps;
    none by default (they may hold secrets). ``FREEZEWATCH_CONTEXTVARS=a,b``."""


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


class _Setting:
    """Where one value came from, for error messages."""

    def __init__(self, name: str, value: Any, source: str) -> None:
        self.name, self.value, self.source = name, value, source

    def fail(self, why: str) -> ValueError:
        return ValueError(f"{self.name} {why}, got {self.value!r} from {self.source}")


class _Callable:
    """The kind of a setting that takes a function (``redact``)."""


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
        if kind is list:  # names: "a,b" or a sequence of str
            items = v.split(",") if isinstance(v, str) else list(v)
            if not all(isinstance(x, str) for x in items):
                raise ValueError
            return tuple(x.strip() for x in items if x.strip())
        if kind is _Callable:
            if not callable(v):
                raise ValueError
            return v
    except (TypeError, ValueError):
        pass
    what = {int: "a number", float: "a number", list: "a list of names", _Callable: "a callable"}
    raise setting.fail(f"must be {what.get(kind) or kind.__name__}")


_KINDS: dict[str, type] = {
    "threshold": float, "interval": float, "dump_dir": str, "native": bool,
    "native_timeout": float, "pyspy_path": str, "stall_after": float,
    "faulthandler": bool, "sentinel": bool,
    "update_after": tuple, "dump_rate_window": float, "max_dumps": int,
    "max_dump_bytes": int, "idle_beat_every": float, "name": str,
    "metrics_port": int, "metrics_addr": str, "liveness_limit": float,
    "systemd_watchdog": bool, "registry": object, "redact": _Callable, "contextvars": list,
}
_NO_ENV = frozenset({"registry", "redact"})  # objects, not something an environment can hold
# Variables of ours that are not settings: read elsewhere, never "unknown".
_OTHER_ENV = frozenset({"FREEZEWATCH_AUTOSTART"})
_FLOATS = ("threshold", "interval", "native_timeout", "stall_after", "dump_rate_window",
           "idle_beat_every", "liveness_limit")
_log = logging.getLogger("freezewatch")
_warned: set[str] = set()  # unknown variables already warned about, once per process


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
    _warn_unknown(env)
    cfg = Config(**values)

    def where(name: str) -> _Setting:
        return settings.get(name) or _Setting(name, getattr(cfg, name), "the default")

    for name in _FLOATS:  # inf turns a timer off or overflows at freeze time; nan compares False
        if not math.isfinite(getattr(cfg, name)):
            raise where(name).fail("must be a finite number")
    if not all(math.isfinite(x) for x in cfg.update_after):
        raise where("update_after").fail("must be finite seconds")
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
    _check_text(cfg, where)
    if cfg.pyspy_path:
        _check_pyspy(where("pyspy_path"))
    # The real path: the directory is then opened with O_NOFOLLOW (dumpdir).
    dump_dir = os.path.realpath(os.path.expanduser(cfg.dump_dir or DEFAULT_DUMP_DIR))
    _check_dump_dir(dump_dir, where("dump_dir"))
    return dataclasses.replace(cfg, dump_dir=dump_dir)


def _warn_unknown(env: Mapping[str, str]) -> None:
    """A FREEZEWATCH_* variable that is no setting (a typo: FREEZEWATCH_TRESHOLD) is
    logged once per process, as a warning on the stdlib ``freezewatch`` logger.

    A log record and not ``warnings.warn``: applications (and test suites) that
    turn warnings into errors would otherwise fail to start over a typo, and
    this is about the environment, not about code that a warning filter targets.
    """
    known = {ENV_PREFIX + n.upper() for n in _FIELDS if n not in _NO_ENV} | _OTHER_ENV
    for var in sorted(env):
        if var.startswith(ENV_PREFIX) and var not in known and var not in _warned:
            _warned.add(var)
            close = [k for k in known if _close(var, k)]
            hint = f" (did you mean {sorted(close)[0]}?)" if close else ""
            _log.warning("freezewatch: unknown environment variable %s ignored%s", var, hint)


def _close(a: str, b: str) -> bool:
    """Two names one edit apart (a letter missing, extra, changed or swapped)."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _check_text(cfg: Config, where: Any) -> None:
    """Names shown in dumps, logs and terminals: no control characters."""
    if _redact.escape(cfg.name) != cfg.name:
        raise where("name").fail("must not contain control characters")
    for var in cfg.contextvars:
        if not var.isidentifier():
            raise where("contextvars").fail(f"must be context variable names ({var!r} is not)")


def _check_pyspy(setting: _Setting) -> None:
    path = str(setting.value)
    if not os.path.isfile(path):
        raise setting.fail("must name an existing py-spy executable (no such file)")
    if not os.access(path, os.X_OK):
        raise setting.fail("must name an executable file (it is not executable)")


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
    """Create the dump directory (0700), vet it (owner, mode: see _sinks/dumpdir),
    prove a file can be written there, and remove temporary files left behind."""
    from ._sinks import dumpdir

    try:
        fd = dumpdir.open_dir(path)
    except dumpdir.UnsafeDirError as e:
        raise ValueError(f"dump_dir {path!r} (from {setting.source}) is not safe: "
                         f"{e}") from None
    except OSError as e:
        raise ValueError(
            f"dump_dir {path!r} (from {setting.source}) cannot be created or "
            f"written: {e.strerror or e}"
        ) from None
    try:
        probe = f".freezewatch-probe.{os.getpid()}"
        dumpdir.write_atomic(fd, probe, b"")
        os.unlink(probe, dir_fd=fd)
        dumpdir.remove_stale_tmp(fd)
    except OSError as e:
        raise ValueError(
            f"dump_dir {path!r} (from {setting.source}) cannot be written: {e.strerror or e}"
        ) from None
    finally:
        os.close(fd)

