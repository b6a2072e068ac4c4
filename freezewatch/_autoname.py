"""Zero-code request names: under ``freezewatch run``, the server's app gets our integration.

An application run by ``freezewatch run`` cannot be asked to add the one
line of an integration, so the start-up hook does it, for the two servers
where one place sees every application:

- uvicorn (and gunicorn's ``UvicornWorker``, which runs uvicorn's ``Config``):
  ``Config.load`` is wrapped so that the application it loads is wrapped in
  ``FreezewatchMiddleware`` (outermost, after uvicorn's own middlewares). An
  app that adds the middleware itself is fine: the outer one marks the
  request's scope and the inner one lets it through;
- aiohttp (``web.run_app``, ``AppRunner``): ``AppRunner.__init__`` calls
  ``freezewatch.aiohttp.setup(app)`` for an app that is not set up yet.

Every request is then a unit of work and a freeze dump names it
(``GET /users/{id}``), as with the integration in code. Nothing is imported
ahead of the application: a finder on ``sys.meta_path`` waits for
``uvicorn.config`` / ``aiohttp.web_runner`` and patches each as it loads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

UVICORN = "uvicorn.config"
AIOHTTP = "aiohttp.web_runner"


class _Finder(MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in PATCHES:
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
            _patch(fullname, module)

        loader.exec_module = exec_and_patch  # type: ignore[union-attr,method-assign]  # this module's
        return spec


def _patch(name: str, module: Any) -> None:
    try:
        PATCHES[name](module)
    except Exception as e:  # boundary: the server must start even so
        print(f"freezewatch: requests not named in this process: {e}", file=sys.stderr)


def patch_uvicorn(module: Any) -> None:
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
                mw = FreezewatchMiddleware(app)
                mw.yields = True  # the app's own middleware, if any, has the say
                self.loaded_app = mw
        except Exception as e:  # boundary: the server must start even so
            print(f"freezewatch: requests not named in this process: {e}", file=sys.stderr)

    wrapped_load._freezewatch = True  # type: ignore[attr-defined]
    config_cls.load = wrapped_load  # type: ignore[union-attr]


def patch_aiohttp(module: Any) -> None:
    """Wrap ``module.AppRunner.__init__`` (aiohttp's) to set the app up, once."""
    runner_cls = getattr(module, "AppRunner", None)
    init = getattr(runner_cls, "__init__", None)
    if init is None or getattr(init, "_freezewatch", False):
        return

    def wrapped_init(self: Any, app: Any, *args: Any, **kwargs: Any) -> None:
        try:
            _setup_aiohttp(app)
        except Exception as e:  # boundary: the server must start even so
            print(f"freezewatch: requests not named in this process: {e}", file=sys.stderr)
        init(self, app, *args, **kwargs)

    wrapped_init._freezewatch = True  # type: ignore[attr-defined]
    runner_cls.__init__ = wrapped_init  # type: ignore[union-attr,misc]


def _setup_aiohttp(app: Any) -> None:
    from . import aiohttp as fw_aiohttp

    if getattr(app, "frozen", True):
        return  # started already (or not an Application): nothing can be added
    if any(getattr(m, "__module__", "") == fw_aiohttp.__name__ for m in app.middlewares):
        return  # the application set it up itself
    fw_aiohttp.setup(app)


PATCHES = {UVICORN: patch_uvicorn, AIOHTTP: patch_aiohttp}


def enable() -> None:
    """Arrange for the servers' apps to be set up (now for a module loaded already)."""
    for name in PATCHES:
        if name in sys.modules:
            _patch(name, sys.modules[name])
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
