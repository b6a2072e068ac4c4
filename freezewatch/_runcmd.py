"""``freezewatch run``: the child's environment and the hand-over to the command.

Why a ``sitecustomize`` on PYTHONPATH and not a ``.pth`` file: a ``.pth``
must sit in site-packages, which setuptools cannot put there portably from
a wheel *and* from an editable install (coverage.py and pytest-cov need
custom build steps for it, and it is left behind on uninstall). PYTHONPATH
is the documented way to add start-up code to one run only: it reaches the
command and every Python process it starts (uvicorn's worker and reloader
processes), and nothing outlives the run. The hook chains to any
``sitecustomize`` it shadows.

Why ``exec`` and not a child process: the command *becomes* this process.
Its pid is the one a supervisor (systemd, Docker's PID 1, Kubernetes)
watches and signals, signals reach it directly with nothing to forward, and
its exit status - or its death by a signal - is the status the caller sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from . import _boot, _config
from ._autostart import ENV as AUTOSTART_ENV
from ._config import DEFAULT_DUMP_DIR, ENV_PREFIX

BOOT_DIR = os.path.dirname(os.path.abspath(_boot.__file__))
"""The directory holding the start-up ``sitecustomize.py``."""


def child_environ(
    environ: Mapping[str, str], *, threshold: str | None = None, dump_dir: str | None = None,
    metrics_port: str | None = None,
) -> dict[str, str]:
    """``environ`` plus what the command needs to start watched."""
    env = dict(environ)
    for name, value in (("threshold", threshold), ("dump_dir", dump_dir),
                        ("metrics_port", metrics_port)):
        if value is not None:
            env[ENV_PREFIX + name.upper()] = value
    # Absolute, so every process of the command writes to the same directory
    # whatever directory it runs in.
    dump = env.get(ENV_PREFIX + "DUMP_DIR") or DEFAULT_DUMP_DIR
    env[ENV_PREFIX + "DUMP_DIR"] = os.path.abspath(os.path.expanduser(dump))
    env[AUTOSTART_ENV] = "1"
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOT_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOT_DIR, *rest])
    return env


FLAGS = {"threshold": "--threshold", "dump_dir": "--dump-dir", "metrics_port": "--metrics-port"}
"""The settings ``run`` takes as options, and each option's name."""


def check_settings(env: Mapping[str, str], flags: Mapping[str, str | None]) -> None:
    """Validate the command's settings once, before it starts; ValueError (or
    TypeError) naming the option, not its environment variable, when the bad
    value came from an option of ``run`` (``flags``: setting -> value given)."""
    try:
        _config.load({}, env)
    except (ValueError, TypeError) as e:
        message = str(e)
        for name, value in flags.items():
            if value is not None:
                env_name = f"{ENV_PREFIX}{name.upper()} environment variable"
                message = message.replace(f"from {env_name}", f"from {FLAGS[name]}")
        raise type(e)(message) from None


def execute(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Replace this process with ``cmd`` (POSIX); elsewhere run it and return its status."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execvpe(cmd[0], list(cmd), dict(env))  # returns only by raising OSError
    # Windows has no real exec: run the command as a child and pass its status on.
    return subprocess.call(list(cmd), env=dict(env))  # pragma: no cover - not POSIX
