"""A Starlette app for the multi-worker tests (tests/test_workers*.py), run by
uvicorn ``--workers 2`` and gunicorn ``-w 2 --preload`` as real servers.

``GET /freeze?seconds=S`` blocks the loop with time.sleep and answers the pid;
``GET /pid`` answers the pid. Its lifespan writes ``lifespan-<pid>`` into
``$WORKERS_MARK_DIR`` (proof that the app's own startup ran in that worker).

``$WORKERS_INSTALL`` chooses how freezewatch is set up (settings come from
the FREEZEWATCH_* environment in every mode):

- ``middleware``: ``FreezewatchMiddleware`` (installs at lifespan startup);
- ``import``: ``freezewatch.install()`` at import time (gunicorn ``--preload``
  runs it in the master) and the middleware to name requests;
- ``none``: nothing (zero-code: ``freezewatch run -- ...``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

MODE = os.environ.get("WORKERS_INSTALL", "middleware")


async def freeze(request: Request) -> PlainTextResponse:
    seconds = float(request.query_params.get("seconds", "1"))
    time.sleep(seconds)  # pin: freeze
    return PlainTextResponse(str(os.getpid()))


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    marks = os.environ.get("WORKERS_MARK_DIR")
    if marks:
        with open(os.path.join(marks, f"lifespan-{os.getpid()}"), "w") as f:
            f.write("started\n")
    yield


starlette_app = Starlette(routes=[Route("/freeze", freeze), Route("/pid", pid)],
                          lifespan=lifespan)

if MODE == "import":
    import freezewatch

    freezewatch.install()
if MODE in ("middleware", "import"):
    from freezewatch.asgi import FreezewatchMiddleware

    app = FreezewatchMiddleware(starlette_app)
else:
    app = starlette_app
