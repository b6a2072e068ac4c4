"""The ``freezewatch`` command: ``run`` a program watched, ``show`` a dump, ``report`` a directory.

argparse, not click or typer: three subcommands with a handful of options
each need nothing more, and the standard library keeps the watchdog's
dependency list (installed into every service) as short as it is. Errors are
one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._cli_errors import EXIT_FAILED, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_USAGE, CliError
from ._dumpread import parse_dump, read_dump_bytes
from ._redact import escape
from ._version import __version__

PROG = "freezewatch"

RUN_EXAMPLES = """\
examples:
  freezewatch run -- python worker.py
  freezewatch run --threshold 0.5 --dump-dir /var/log/app/freezes -- uvicorn app:app
  freezewatch run -- python -m mypackage.service --port 8080
  FREEZEWATCH_NATIVE=0 freezewatch run -- python -m aiohttp.web -P 8080 app:init

The command runs with freezewatch installed on the first event loop its main
thread starts (asyncio or uvloop), in it and in every Python process it
starts. Every FREEZEWATCH_* variable applies; the options here set them.
The exit status is the command's own (a command killed by a signal dies of
the same signal).
"""
SHOW_EXAMPLES = """\
examples:
  freezewatch show freezewatch-dumps/freeze-20250101T120000Z-4242-0001.json
  freezewatch show --no-color DUMP.json | less
  PAGER='less -S' freezewatch show DUMP.json    # on a terminal it pages: $PAGER, else less
"""
REPORT_EXAMPLES = """\
examples:
  freezewatch report freezewatch-dumps
  freezewatch report /var/log/app/freezes --since 24h
  freezewatch report /var/log/app/freezes --since 2025-01-01 --json | jq '.groups[0]'
  freezewatch report /var/log/app/freezes --since 24h --html last-night.html

Freezes and stalls are grouped by the line they blocked at (file:line in
function) and sorted by the total time they cost. --since takes an age
(90s, 30m, 2h, 7d, 1w) or an ISO 8601 date or time (UTC unless it says).
"""
MAIN_EXAMPLES = """\
examples:
  freezewatch run -- uvicorn app:app        # watch a program without changing its code
  freezewatch show DUMP.json                # read one dump
  freezewatch report freezewatch-dumps      # which line cost the most time

'freezewatch COMMAND --help' shows each command's options.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (``prog: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _parser() -> _Parser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog=PROG, description="Find out why an asyncio program stopped answering.",
                epilog=MAIN_EXAMPLES, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run a command with freezewatch watching its event loop",
                         usage="%(prog)s [OPTIONS] -- COMMAND [ARG ...]",
                         description="Run COMMAND with freezewatch watching its event loop, "
                         "without changing its code.", epilog=RUN_EXAMPLES, formatter_class=fmt)
    run.add_argument("--threshold", metavar="SECONDS",
                     help="seconds a loop may stay unresponsive (FREEZEWATCH_THRESHOLD)")
    run.add_argument("--dump-dir", metavar="DIR",
                     help="where dumps go (FREEZEWATCH_DUMP_DIR; default ./freezewatch-dumps)")
    run.add_argument("--metrics-port", metavar="PORT",
                     help="serve Prometheus metrics on 127.0.0.1:PORT (FREEZEWATCH_METRICS_PORT)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]",
                     help="the program to run, after '--'")

    show = sub.add_parser("show", help="print a dump as the readable report",
                          description="Print a JSON dump as the readable report "
                          "(in colour on a terminal).", epilog=SHOW_EXAMPLES, formatter_class=fmt)
    show.add_argument("file", metavar="FILE", help="a freeze-*.json or stall-*.json dump")
    colour = show.add_mutually_exclusive_group()
    colour.add_argument("--no-color", dest="color", action="store_const", const="never",
                        help="never colour (also: NO_COLOR set, or output not a terminal)")
    colour.add_argument("--color", dest="color", action="store_const", const="always",
                        help="colour even when the output is not a terminal")
    show.add_argument("--no-pager", dest="pager", action="store_false",
                      help="do not page on a terminal (default: $PAGER, else less, as git)")

    rep = sub.add_parser("report", help="which lines cost the most time, from a dump directory",
                         description="Group the freezes and stalls in DIR by the line they "
                         "blocked at, sorted by total time lost.", epilog=REPORT_EXAMPLES,
                         formatter_class=fmt)
    rep.add_argument("dir", metavar="DIR", help="a dump directory")
    rep.add_argument("--since", metavar="WHEN",
                     help="only dumps detected since WHEN: an age (2h, 30m, 7d) or ISO date")
    rep.add_argument("--json", action="store_true", help="print JSON for machines")
    rep.add_argument("--top", type=int, metavar="N",
                     help="show the N costliest places (table default 20; 0: all)")
    rep.add_argument("--html", metavar="OUT.html",
                     help="write the report as one self-contained page to OUT.html: a timeline, "
                     "the places ranked, the detail of each (opens offline)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``freezewatch`` console script; returns the exit status."""
    _safe_stdout()
    parser = _parser()
    prog = PROG
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        prog = f"{PROG} {args.command}"
        return {"run": _run, "show": _show, "report": _report}[args.command](args)
    except CliError as e:
        print(f"{prog}: error: {escape(str(e))}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `freezewatch report DIR | head`: the reader left
        _silence_stdout()
        return 0
    except Exception as e:  # boundary: a bug or an odd file must not end in a traceback
        print(f"{prog}: error: internal error: {type(e).__name__}: {escape(str(e))}",
              file=sys.stderr)
        return EXIT_FAILED


def _safe_stdout() -> None:
    # Source lines in dumps can hold any character; a terminal or pipe that
    # cannot encode one gets a replacement, not a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would report the broken pipe again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


# -- run ----------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from . import _runcmd

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise CliError("no command to run: freezewatch run [OPTIONS] -- COMMAND [ARG ...]",
                       EXIT_USAGE)
    env = _runcmd.child_environ(os.environ, threshold=args.threshold, dump_dir=args.dump_dir,
                                metrics_port=args.metrics_port)
    try:  # bad settings fail here, once, not in every child; a bad option is named
        _runcmd.check_settings(env, {"threshold": args.threshold, "dump_dir": args.dump_dir,
                                     "metrics_port": args.metrics_port})
    except (ValueError, TypeError) as e:
        raise CliError(str(e), EXIT_USAGE) from None
    try:
        return _runcmd.execute(cmd, env)
    except FileNotFoundError:
        raise CliError(f"command not found: {cmd[0]}", EXIT_NOT_FOUND) from None
    except PermissionError:
        raise CliError(f"command not executable: {cmd[0]}", EXIT_NOT_EXECUTABLE) from None
    except OSError as e:
        raise CliError(f"cannot run {cmd[0]}: {e.strerror or e}", EXIT_NOT_EXECUTABLE) from None




def load_dump(path: str) -> dict[str, Any]:
    """Read a JSON dump; CliError with one clear line when it is not one."""
    shown = escape(path)
    if os.path.isdir(path):
        raise CliError(f"{shown} is a directory (for a directory: freezewatch report {shown})")
    if path.endswith(".txt") and os.path.exists(path[:-4] + ".json"):
        path = path[:-4] + ".json"  # the person pointed at the twin; read the data
        shown = escape(path)
    try:
        data = read_dump_bytes(path)
    except FileNotFoundError:
        raise CliError(f"no such file: {shown}") from None
    except OSError as e:
        raise CliError(f"cannot read {shown}: {e.strerror or e}") from None
    except ValueError as e:
        raise CliError(f"{shown} is not a dump file: {e}") from None
    try:
        doc = parse_dump(data)
    except ValueError as e:
        raise CliError(f"{shown} is not a JSON dump: {escape(str(e))}") from None
    if not isinstance(doc, dict) or doc.get("schema") != "freezewatch/1":
        raise CliError(f"{shown} is not a freezewatch dump (no \"schema\": \"freezewatch/1\")")
    return doc


def _show(args: argparse.Namespace) -> int:
    from ._cli_color import colorize, want_color
    from ._pager import page
    from ._snapshot.render import clean, render

    doc = clean(load_dump(args.file))  # every string escaped: nothing raw reaches the terminal
    try:
        text = render(doc)
        if want_color(args.color, sys.stdout):
            text = colorize(text, doc)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
        # A file with the right schema but wrong types (a list where an object goes).
        raise CliError(f"{escape(args.file)} is a malformed freezewatch dump "
                       f"({type(e).__name__}: {escape(str(e))})") from None
    page(text, enabled=args.pager)  # $PAGER (else less) when stdout is a terminal
    return 0


# -- report ---------------------------------------------------------------------
def _report(args: argparse.Namespace) -> int:
    from . import _cli_report

    since = _cli_report.parse_since(args.since) if args.since is not None else None
    if args.top is not None and args.top < 0:
        raise CliError(f"--top must be >= 0, got {args.top}", EXIT_USAGE)

    def warn(message: str) -> None:
        print(f"{PROG} report: warning: {escape(message)}", file=sys.stderr)

    seen = None
    if args.html is not None:
        from . import _report_html

        seen = _report_html.Collector()
    result = _cli_report.scan(args.dir, since, warn, seen)
    if seen is not None:
        try:
            size = _report_html.write(args.html, result, seen, top=args.top)
        except OSError as e:
            raise CliError(f"cannot write {args.html}: {e.strerror or e}") from None
        if not args.json:  # the page is the report; say where it went
            sys.stdout.write(f"wrote {args.html}: {result.freezes} freeze(s) and {result.stalls} "
                             f"stall(s) at {len(result.groups)} place(s), {size / 1000:.0f} kB\n")
    if args.json:
        doc = result.to_json(top=args.top)
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif seen is None:
        sys.stdout.write(result.table(top=20 if args.top is None else args.top))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m freezewatch.cli
    sys.exit(main())
