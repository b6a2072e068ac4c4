"""Static reading for the wait-for graph: a function's source, and values from a frame.

Two jobs, both without running application code:

* **What a function does, lexically** (``code_info``): the source of a code
  object is parsed once with ``ast`` and cached per code object. It yields the
  ``with``/``async with`` blocks (their body's line range and the context
  expressions, as attribute paths such as ``("self", "_lock")``) and the calls
  that complete a wait (``ev.set()``, ``q.put(x)``, ``fut.set_result(v)``), so
  a frame whose current line lies inside ``with self._lock:`` can be shown to
  hold that lock, and a frame whose function calls ``ev.set()`` may be the one
  that sets it.
* **What an expression names in a frame** (``resolve``): a dotted path is
  looked up in the frame's locals and globals, then attribute by attribute
  with a *static* lookup (``static_attr``): the instance ``__dict__``, slots
  and plain class attributes only. A property, ``__getattr__`` or any other
  descriptor is application code and is never called: the path just does not
  resolve.

Only application files are parsed (``frames.is_app_file``): a holder inferred
from a library's ``with`` block (e.g. ``threading.Condition`` internals, which
release their lock inside ``wait()``) would be a false holder.
"""

from __future__ import annotations

import ast
import dataclasses
import linecache
import types
from typing import Any

from .frames import is_app_file

Path = tuple[str, ...]
"""A dotted name as a tuple: ``self._state_lock`` -> ``("self", "_state_lock")``."""

MISSING: Any = object()
"""``resolve``/``static_attr`` result for "cannot be read statically"."""

COMPLETERS = frozenset({
    "set", "notify", "notify_all", "put", "put_nowait", "get", "get_nowait", "task_done",
    "set_result", "set_exception", "release",
})
"""Method names whose call on a primitive may end someone's wait on it."""

MAX_CACHE = 4096
"""Code objects and files analysed and kept; the caches are cleared when full."""


@dataclasses.dataclass(frozen=True, slots=True)
class WithBlock:
    line: int  # the ``with`` statement's line
    first: int  # first line of the body
    last: int  # last line of the body
    paths: tuple[Path, ...]  # the context expressions that are plain dotted names
    text: str  # ``with self._lock:`` (the header, without comments)
    why: str  # "inside `with self._lock:` (line 31)": what a holder found here is told


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: Path
    line: int


@dataclasses.dataclass(frozen=True, slots=True)
class CodeInfo:
    withs: tuple[WithBlock, ...]
    calls: tuple[Call, ...]
    node: ast.AST | None  # the function's node, for line-level look-ups


EMPTY = CodeInfo((), (), None)

# id(code) -> (code, info). Keyed by identity: two code objects can compare
# equal (same bytecode, same first line) yet live in different files. The code
# object is kept in the entry so its id cannot be reused while cached. Written
# and read by the watchdog thread only (single-item dict operations).
_codes: dict[int, tuple[types.CodeType, CodeInfo]] = {}
_files: dict[str, dict[tuple[int, str], ast.AST] | None] = {}


def path_of(node: ast.AST) -> Path | None:
    """``a.b.c`` -> ("a", "b", "c"); None for anything else (calls, subscripts)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return tuple(reversed(parts))


def _functions(path: str) -> dict[tuple[int, str], ast.AST] | None:
    """(first line, name) -> node for every function of a file; None if unreadable."""
    if path in _files:
        return _files[path]
    if len(_files) >= MAX_CACHE:
        _files.clear()
    out: dict[tuple[int, str], ast.AST] | None
    try:
        tree = ast.parse("".join(linecache.getlines(path)))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        out = None
    else:
        out = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # co_firstlineno of a decorated function is its first decorator's line
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                out[(first, node.name)] = node
        out[(1, "<module>")] = tree
    _files[path] = out
    return out


def _own_nodes(fn: ast.AST) -> list[ast.AST]:
    """The nodes of a function's own body, not those of nested functions or classes."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _analyse(fn: ast.AST) -> CodeInfo:
    withs: list[WithBlock] = []
    calls: list[Call] = []
    for node in _own_nodes(fn):
        if isinstance(node, (ast.With, ast.AsyncWith)) and node.body:
            paths = tuple(p for p in (path_of(i.context_expr) for i in node.items) if p)
            if paths:
                last = max(getattr(s, "end_lineno", None) or s.lineno for s in node.body)
                head = "async with " if isinstance(node, ast.AsyncWith) else "with "
                text = head + ", ".join(ast.unparse(i) for i in node.items) + ":"
                # A body on the header's line (``with lock: f()``) is ambiguous: a frame
                # there may still wait in the header. Such a one-liner never names a holder.
                first = node.body[0].lineno
                first = first if first > node.lineno else node.lineno + 1
                withs.append(WithBlock(node.lineno, first, last, paths, text,
                                       f"inside `{text}` (line {node.lineno})"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in COMPLETERS):
            p = path_of(node.func.value)
            if p:
                calls.append(Call(node.func.attr, p, node.lineno))
    return CodeInfo(tuple(withs), tuple(calls), fn)


def code_info(code: types.CodeType) -> CodeInfo:
    """The ``with`` blocks and completing calls of one code object (cached)."""
    hit = _codes.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    info = EMPTY
    path = code.co_filename
    if is_app_file(path) and not path.startswith("<"):
        funcs = _functions(path)
        fn = funcs.get((code.co_firstlineno, code.co_name)) if funcs else None
        if fn is not None:
            info = _analyse(fn)
    if len(_codes) >= MAX_CACHE:
        _codes.clear()
    _codes[id(code)] = (code, info)
    return info


def _statement_at(fn: ast.AST, line: int) -> ast.stmt | None:
    """The innermost statement running at ``line``; a ``with`` whose header is on that
    line wins over a body on the same line (``with lock: pass`` waits in the header)."""
    best: ast.stmt | None = None
    for node in _own_nodes(fn):
        if not isinstance(node, ast.stmt) or not node.lineno <= line <= (node.end_lineno or line):
            continue
        if isinstance(node, (ast.With, ast.AsyncWith)) and node.lineno == line:
            return node
        if best is None or node.lineno >= best.lineno:
            best = node
    return best


def line_paths(code: types.CodeType, line: int) -> list[tuple[Path, str]]:
    """Every dotted name on the statement at ``line`` with its text, longest first.

    For a compound statement only its header counts (``with a, b:``, not the
    body). Used for the waiter's own line, to find and name what it waits on.
    """
    info = code_info(code)
    if info.node is None:
        return []
    best = _statement_at(info.node, line)
    if best is None:
        return []
    if isinstance(best, (ast.With, ast.AsyncWith)):
        roots: list[ast.AST] = [i.context_expr for i in best.items]
    elif isinstance(best, (ast.If, ast.While)):
        roots = [best.test]
    elif isinstance(best, (ast.For, ast.AsyncFor)):
        roots = [best.iter]
    elif isinstance(best, (ast.Try, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        roots = []
    else:
        roots = [best]
    out: list[tuple[Path, str]] = []
    for root in roots:
        for node in ast.walk(root):
            if isinstance(node, (ast.Attribute, ast.Name)):
                p = path_of(node)
                if p:
                    out.append((p, ".".join(p)))
    out.sort(key=lambda pt: -len(pt[0]))
    return out


def acquired_on_line(code: types.CodeType, line: int) -> list[Path]:
    """What the statement at ``line`` may be acquiring at C level: the context
    expressions of a ``with`` header, and ``X`` of every ``X.acquire(...)`` call.

    A line that merely mentions a lock (``if lock.locked():``) yields nothing, so a
    thread spinning there is never said to wait for it."""
    info = code_info(code)
    if info.node is None:
        return []
    best = _statement_at(info.node, line)
    if best is None:
        return []
    if isinstance(best, (ast.With, ast.AsyncWith)):
        return [p for p in (path_of(i.context_expr) for i in best.items) if p]
    out = []
    if isinstance(best, (ast.If, ast.While)):
        roots: list[ast.AST] = [best.test]
    elif isinstance(best, (ast.For, ast.AsyncFor, ast.Try, ast.FunctionDef,
                           ast.AsyncFunctionDef, ast.ClassDef)):
        roots = []
    else:
        roots = [best]
    for root in roots:
        for node in ast.walk(root):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "acquire"):
                p = path_of(node.func.value)
                if p:
                    out.append(p)
    return out


def call_args(code: types.CodeType, func: str) -> list[tuple[Path | None, ...]]:
    """The arguments (as dotted names, None for anything else) of every call of a
    function named ``func`` in this code's own body: ``run_coroutine_threadsafe(c, loop)``."""
    info = code_info(code)
    if info.node is None:
        return []
    out = []
    for node in _own_nodes(info.node):
        if isinstance(node, ast.Call):
            p = path_of(node.func)
            if p and p[-1] == func:
                out.append(tuple(path_of(a) for a in node.args))
    return out


# -- static values -------------------------------------------------------------
_type_dict = type.__dict__["__dict__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_SAFE_DICT_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType)


def _instance_dict(obj: Any, mro: tuple[type, ...]) -> dict[str, Any] | None:
    for klass in mro:
        d = _type_dict(klass)
        if "__dict__" in d:
            desc = d["__dict__"]
            if type(desc) in _SAFE_DICT_DESCRIPTORS:  # the C slot, not a property
                try:
                    value = desc.__get__(obj, type(obj))
                except (AttributeError, TypeError):
                    return None
                return value if type(value) is dict else None
            return None
    return None


def static_attr(obj: Any, name: str) -> Any:
    """``obj.name`` read like ``inspect.getattr_static``, or MISSING; never runs app code.

    Module and instance ``__dict__`` entries, ``__slots__`` members and plain
    class attributes are read; properties, methods and ``__getattr__`` are not.
    """
    mro = _type_mro(type(obj))
    klass_attr: Any = MISSING
    for klass in mro:
        d = _type_dict(klass)
        if name in d:
            klass_attr = d[name]
            break
    if klass_attr is not MISSING:
        kind = type(klass_attr)
        if kind is types.MemberDescriptorType:  # a __slots__ member: C code only
            try:
                return klass_attr.__get__(obj, type(obj))
            except AttributeError:
                return MISSING
        if any("__set__" in _type_dict(k) or "__delete__" in _type_dict(k)
               for k in _type_mro(kind)):
            return MISSING  # a data descriptor (property...): application code
    inst = _instance_dict(obj, mro)
    if inst is not None and name in inst:
        return inst[name]
    if klass_attr is MISSING:
        return MISSING
    if any("__get__" in _type_dict(k) for k in _type_mro(type(klass_attr))):
        return MISSING  # a method or other descriptor: not a value
    return klass_attr


def frame_locals(frame: types.FrameType) -> Any:
    """The frame's locals mapping (a dict before 3.13, a read-through proxy after).

    Reading ``f_locals`` of another thread's frame from the watchdog thread is
    safe under the GIL: before 3.13 it copies the fast locals into the frame's
    dict (no application code runs: the keys are str), from 3.13 it is a view.
    """
    return frame.f_locals


def resolve(path: Path, frame: types.FrameType, local: Any = None) -> Any:
    """The object ``path`` names in ``frame`` (locals, then globals), or MISSING."""
    head = path[0]
    loc = frame_locals(frame) if local is None else local
    if head in loc:
        obj = loc[head]
    else:
        glb = frame.f_globals
        if type(glb) is not dict or head not in glb:
            return MISSING
        obj = glb[head]
    for attr in path[1:]:
        obj = static_attr(obj, attr)
        if obj is MISSING:
            return MISSING
    return obj


def spelled(path: Path, frame: types.FrameType) -> str:
    """``self._lock`` spelled with the class, the way a reader finds it: ``Breaker._lock``."""
    if path[0] in ("self", "cls") and len(path) > 1:
        obj = resolve(path[:1], frame)
        if obj is not MISSING:
            klass = obj if path[0] == "cls" and isinstance(obj, type) else type(obj)
            return ".".join((_type_qualname(klass), *path[1:]))
    return ".".join(path)
