"""Every snippet in README.md and docs/*.md works as pasted.

Fenced blocks are found on every page (indented ones in lists too) and
exercised by their language:

- ``python``: saved as a script and run in a fresh directory (a block with
  ``def test_`` is run by pytest instead);
- ``ini`` with a ``[pytest]`` section: saved as ``pytest.ini`` beside one
  trivial test, and pytest must accept it;
- ``sh``/``bash``/``shell`` (not run: they install, start servers, read
  dumps): ``bash -n`` accepts it, every ``freezewatch``
  command line parses with the real command's parser, every ``make`` target
  exists, every ``python path.py`` names a file of the repository;
- ``json``: parses; ``yaml`` starting ``# prometheus.yml``: ``promtool check
  config`` accepts it.

Blocks without a language (program output) are not snippets. A block that
cannot run as pasted (a fragment, one that needs a server) carries
``<!-- snippet: skip REASON -->`` on the line before its fence; any other
language must be skipped the same way, so a new page cannot slip through.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_TIMEOUT = 60.0
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)[^\n]*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*snippet:\s*(?P<what>\w+)\s*(?P<why>.*?)\s*-->\s*$")
SHELLS = ("sh", "bash", "shell", "console")
NOT_SNIPPETS = ("", "text", "txt", "output")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    directive: str | None  # "skip", or an unknown word (an error)
    reason: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def extract(page: Path) -> list[Snippet]:
    """The fenced blocks of ``page``, dedented, with the directive above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("lang").lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            text = lines[j]
            body.append(text[len(indent):] if text.startswith(indent) else text.lstrip())
            j += 1
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        d = _DIRECTIVE.match(prev)
        out.append(Snippet(page, i + 1, lang, "\n".join(body) + "\n",
                           d.group("what") if d else None, d.group("why") if d else ""))
        i = j + 1
    return out


SNIPPETS = [s for page in PAGES for s in extract(page) if s.lang not in NOT_SNIPPETS]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FREEZEWATCH_", "PYTEST_", "PROMETHEUS_MULTIPROC"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    for attempt in range(3):
        proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
        # A snippet that serves on a fixed port (9464) may find it taken for a moment
        # by another run on this machine: try again rather than fail on it.
        if "cannot be bound" not in proc.stderr or attempt == 2:
            return proc
        time.sleep(1.0)
    raise AssertionError("unreachable")


def _python(s: Snippet, tmp: Path) -> None:
    if re.search(r"^\s*(async\s+)?def test_", s.code, re.M):
        (tmp / "test_snippet.py").write_text(s.code)
        proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     "test_snippet.py"], tmp)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        return
    (tmp / "snippet.py").write_text(s.code)
    proc = _run([sys.executable, "-W", "error", "snippet.py"], tmp)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]


def _ini(s: Snippet, tmp: Path) -> None:
    assert re.search(r"^\[(pytest|tool:pytest)\]", s.code, re.M), (
        f"{s.id}: only [pytest] ini snippets can be checked; mark others "
        "<!-- snippet: skip REASON -->")
    (tmp / "pytest.ini").write_text(s.code)
    (tmp / "test_ok.py").write_text("def test_ok():\n    pass\n")
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "-W", "error::pytest.PytestConfigWarning"], tmp)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "1 passed" in proc.stdout


def _commands(code: str) -> list[list[str]]:
    """Each command line of a shell snippet as words (comments, prompts, VAR= dropped)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        for part in re.split(r"\s*(?:\|\|?|&&|;)\s*", line):
            words = shlex.split(part, comments=True)
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words.pop(0)
            if words and words[0] == "time":
                words.pop(0)
            if words:
                out.append(words)
    return out


def _shell(s: Snippet, tmp: Path) -> None:
    from freezewatch.cli import CliError, _parser

    proc = subprocess.run(["bash", "-n"], input=s.code, capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 0, proc.stderr
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for words in _commands(s.code):
        cmd, args = words[0], words[1:]
        if cmd == "freezewatch":
            try:
                _parser().parse_args(args)
            except CliError as e:
                raise AssertionError(f"{s.id}: {shlex.join(words)}: {e}") from None
        elif cmd == "make":
            unknown = [a for a in args if "=" not in a and a not in targets]
            assert not unknown, f"{s.id}: no make target {unknown}"
        elif cmd in ("python", "python3") and args and args[0].endswith(".py") \
                and "/" in args[0]:
            assert (ROOT / args[0]).is_file(), f"{s.id}: no file {args[0]}"


def _json(s: Snippet, tmp: Path) -> None:
    json.loads(s.code)


def _yaml(s: Snippet, tmp: Path) -> None:
    assert s.code.startswith("# prometheus.yml"), (
        f"{s.id}: only prometheus.yml snippets can be checked; mark others "
        "<!-- snippet: skip REASON -->")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    (tmp / "prometheus.yml").write_text(s.code)
    proc = _run([promtool, "check", "config", "prometheus.yml"], tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr


RUNNERS = {"python": _python, "py": _python, "ini": _ini, "json": _json, "yaml": _yaml,
           "yml": _yaml, **{name: _shell for name in SHELLS}}


@pytest.mark.timeout(3 * RUN_TIMEOUT + 30)
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_works_as_pasted(snippet: Snippet, tmp_path: Path) -> None:
    """The snippet runs (or parses) as it stands in the page."""
    if snippet.directive == "skip":
        pytest.skip(f"{snippet.id}: {snippet.reason}")
    assert snippet.directive is None, f"{snippet.id}: unknown directive {snippet.directive!r}"
    runner = RUNNERS.get(snippet.lang)
    assert runner is not None, (
        f"{snippet.id}: no way to run a {snippet.lang!r} snippet; mark it "
        "<!-- snippet: skip REASON -->")
    runner(snippet, tmp_path)


def test_every_skip_says_why() -> None:
    """A skipped snippet gives its reason, and skips stay few."""
    skipped = [s for s in SNIPPETS if s.directive == "skip"]
    assert all(len(s.reason) >= 10 for s in skipped), [s.id for s in skipped if len(s.reason) < 10]
    assert len(skipped) <= len(SNIPPETS) // 3, [s.id for s in skipped]


def test_extractor_finds_indented_and_marked_blocks(tmp_path: Path) -> None:
    """Blocks inside list items are found and dedented; the directive above applies."""
    page = tmp_path / "page.md"
    page.write_text("- item:\n\n  <!-- snippet: skip needs a server -->\n  ```python\n"
                    "  if True:\n      x = 1\n  ```\n\n```\noutput\n```\n")
    first, second = extract(page)
    assert (first.lang, first.code, first.directive, first.reason) == (
        "python", "if True:\n    x = 1\n", "skip", "needs a server")
    assert (second.lang, second.directive) == ("", None)
