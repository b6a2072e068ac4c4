"""The sdist `python -m build` makes carries what its own tests need (conftest, the
support modules, the contract checker), the docs and the LICENSE; twine accepts it,
and its test suite collects when unpacked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.timeout(90)  # one isolated build (~5 s) and one collection

NEEDED_TOP = ("LICENSE", "README.md", "CHANGELOG.md", "Makefile", "setup.cfg", "pyproject.toml",
              "MANIFEST.in", "ruff.toml")


def _source_files(top: str) -> set[str]:
    """Files under ``top`` of the source tree, as paths relative to the root."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(ROOT / top):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for name in filenames:
            if not name.endswith((".pyc", ".pyo")):
                out.add(str((Path(dirpath) / name).relative_to(ROOT)))
    return out


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the lint extra installs build")
    out = tmp_path_factory.mktemp("dist")
    # Built from a copy of the tree: setuptools writes freezewatch.egg-info/SOURCES.txt
    # into the tree it builds, and CI runs two suites side by side in one checkout; two
    # builds in the same tree raced on that file and one sdist came out near empty.
    tree = tmp_path_factory.mktemp("tree") / "freezewatch"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "*.egg-info", "build", "dist", "__pycache__", ".mypy_cache",
        ".ruff_cache", ".pytest_cache", "freezewatch-dumps", ".ci-*"))
    proc = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out),
                           str(tree)], capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("freezewatch-*.tar.gz")
    return path


def _members(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    prefix = names[0].split("/")[0] + "/"
    return {n[len(prefix):] for n in names if n.startswith(prefix)}


def test_sdist_carries_tests_docs_and_license(sdist: Path) -> None:
    """Every file of tests/ (conftest, support modules, contract/), docs/ and scripts/,
    the LICENSE and the developer files are in the sdist."""
    members = _members(sdist)
    wanted = set(NEEDED_TOP)
    for top in ("tests", "docs", "scripts", "freezewatch"):
        wanted |= _source_files(top)
    assert {"tests/conftest.py", "tests/contract/check_dump.py", "docs/contract.md"} <= wanted
    assert wanted - members == set()


def test_twine_accepts_the_sdist(sdist: Path) -> None:
    """`twine check --strict` passes: the README renders on PyPI."""
    pytest.importorskip("twine", reason="the lint extra installs twine")
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(sdist)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout


def test_sdist_metadata_has_license_and_urls(sdist: Path) -> None:
    """PKG-INFO names the MIT license, its file and the project URLs."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/PKG-INFO")
                      and m.name.count("/") == 1)
        f = tar.extractfile(member)
        assert f is not None
        info = f.read().decode()
    assert "License-File: LICENSE" in info
    assert "License: MIT" in info or "License-Expression: MIT" in info
    urls = [line for line in info.splitlines() if line.startswith("Project-URL:")]
    assert any("Source" in u for u in urls) and any("contract.md" in u for u in urls), urls


def test_unpacked_sdist_collects_its_tests(sdist: Path, tmp_path: Path) -> None:
    """The unpacked sdist's test suite collects: conftest and the support modules
    import from it (no file outside the sdist is needed)."""
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.12, and 3.10/3.11 security releases
            tar.extractall(tmp_path, filter="data")
        else:  # our own archive, just built
            tar.extractall(tmp_path)
    (root,) = tmp_path.iterdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FREEZEWATCH_", "PYTEST_"))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"],
                          cwd=root, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tests/test_smoke.py::" in proc.stdout
