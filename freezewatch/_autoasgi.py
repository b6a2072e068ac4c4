"""Zero-code request names: under ``freezewatch run``, uvicorn's app gets the ASGI middleware.

``freezewatch run -- uvicorn app:app`` (and gunicorn's ``UvicornWorker``,
which runs uvicorn's ``Config`` too) cannot be asked to add
``FreezewatchMiddleware``, so the start-up hook does it: when the module
``uvicorn.config`` is first imported, ``Config.load`` is wrapped so that the
application it loads is wrapped in ``FreezewatchMiddleware`` (outermost, after
uvicorn's own middlewares). Every request is then a unit of work and a
freeze dump names it (``GET /users/{id}``), as with the middleware in code.

Nothing is imported ahead of the application: a one-shot finder on
``sys.meta_path`` waits for ``uvicorn.config`` and patches it as it loads.
An app that adds the middleware itself is fine: the outer one marks the
request's scope and the inner one lets it through.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

TARGET = "uvicorn.config"


class _Finder(MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:  # the real spec, from the finders after us
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            patch(module)

        loader.exec_module = exec_and_patch  # type: ignore[union-attr,method-assign]  # this module's
        with_me_gone = [f for f in sys.meta_path if f is not self]
        sys.meta_path[:] = with_me_gone  # one shot
        return spec


def patch(module: Any) -> None:
    """Wrap ``module.Config.load`` (uvicorn's) so the loaded app gets the middleware."""
    config_cls = getattr(module, "Config", None)
    load = getattr(config_cls, "load", None)
    if load is None or getattr(load, "_freezewatch", False):
        return

    def wrapped_load(self: Any) -> None:
        load(self)
        try:
            from .asgi import FreezewatchMiddleware

            app = getattr(self, "loaded_app", None)
            if app is not None and not isinstance(app, FreezewatchMiddleware):
                self.loaded_app = FreezewatchMiddleware(app)
        except Exception as e:  # boundary: the server must start even so
            print(f"freezewatch: requests not named in this process: {e}", file=sys.stderr)

    wrapped_load._freezewatch = True  # type: ignore[attr-defined]
    config_cls.load = wrapped_load  # type: ignore[union-attr]


def enable() -> None:
    """Arrange for uvicorn's app to be wrapped (now if uvicorn.config is loaded already)."""
    if TARGET in sys.modules:
        patch(sys.modules[TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
