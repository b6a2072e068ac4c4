"""Exempting a module or a class from the pytest plugin: the marker at module or
class level, and the ``freezewatch_exempt`` ini option (node id prefixes)."""

from __future__ import annotations

import re
import textwrap

import pytest
from test_pytest_plugin import INI

from freezewatch.pytest_plugin import _exempt

pytest_plugins = ["pytester"]

BLOCK = "    await asyncio.sleep(0.01)\n    time.sleep(0.6)\n"

MODULE_OFF = '''
import asyncio, time
import pytest

pytestmark = pytest.mark.freezewatch(enabled=False)


@pytest.mark.asyncio
async def test_module_exempt():
''' + BLOCK

CLASS_OFF = '''
import asyncio, time
import pytest


@pytest.mark.freezewatch(enabled=False)
class TestLegacy:
    @pytest.mark.asyncio
    async def test_class_exempt(self):
''' + textwrap.indent(BLOCK, "    ") + '''

@pytest.mark.asyncio
async def test_outside_class_checked():
''' + BLOCK

BY_INI = '''
import asyncio, time
import pytest


class TestOld:
    @pytest.mark.asyncio
    async def test_ini_class_exempt(self):
''' + textwrap.indent(BLOCK, "    ") + '''
    @pytest.mark.freezewatch(enabled=True)
    @pytest.mark.asyncio
    async def test_marker_beats_ini(self):
''' + textwrap.indent(BLOCK, "    ") + '''

@pytest.mark.asyncio
async def test_ini_neighbour_checked():
''' + BLOCK

LEGACY = '''
import asyncio, time
import pytest


@pytest.mark.asyncio
async def test_ini_dir_exempt():
''' + BLOCK


def test_module_class_and_ini_exemptions(pytester: pytest.Pytester) -> None:
    """A module marker, a class marker and freezewatch_exempt (a directory, a class) keep
    their blocking tests passing; their neighbours, and a test whose marker says
    enabled=True, still fail."""
    pytester.makeini(INI + "freezewatch_exempt =\n    legacy/\n    test_ini.py::TestOld\n")
    pytester.makepyfile(test_module_off=MODULE_OFF, test_class_off=CLASS_OFF, test_ini=BY_INI)
    (pytester.path / "legacy").mkdir()
    (pytester.path / "legacy" / "test_legacy.py").write_text(LEGACY)
    result = pytester.runpytest_subprocess("--freezewatch=0.2", "-p", "no:cacheprovider")
    out = result.stdout.str()
    failed = set(re.findall(r"^FAILED \S+::(\w+)", out, re.M))
    assert failed == {"test_outside_class_checked", "test_ini_neighbour_checked",
                      "test_marker_beats_ini"}, out
    result.assert_outcomes(failed=3, passed=4)


@pytest.mark.parametrize(("nodeid", "prefixes", "exempt"), [
    ("tests/legacy/test_a.py::test_x", ("tests/legacy/",), True),
    ("tests/legacy/test_a.py::test_x", ("tests/legacy",), True),
    ("tests/legacy2/test_a.py::test_x", ("tests/legacy",), False),
    ("tests/test_a.py::test_x", ("tests/test_a.py",), True),
    ("tests/test_ab.py::test_x", ("tests/test_a.py",), False),
    ("tests/test_a.py::TestOld::test_x", ("tests/test_a.py::TestOld",), True),
    ("tests/test_a.py::TestOlder::test_x", ("tests/test_a.py::TestOld",), False),
    ("tests/test_a.py::test_x[1]", ("tests/test_a.py::test_x",), True),
    ("tests/test_a.py::test_x", (), False),
])
def test_exempt_prefix_matches_whole_parts(nodeid: str, prefixes: tuple[str, ...],
                                           exempt: bool) -> None:
    """A prefix covers whole directories, files, classes and tests, never part of a name."""
    assert _exempt(nodeid, prefixes) is exempt
