"""An ASGI app served by uvicorn on a free port of 127.0.0.1, in a thread of this process: the
demo's chat service (``convotel demo --serve``) and the web tests' live servers. Needs uvicorn
only."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

__all__ = ["SHUTDOWN_TIMEOUT_S", "START_TIMEOUT_S", "ServedApp"]

#: Seconds uvicorn waits for open requests when it is stopped.
SHUTDOWN_TIMEOUT_S = 10
#: Seconds uvicorn may take to start listening.
START_TIMEOUT_S = 30


class ServedApp:
    """uvicorn serving an ASGI app on a free port of 127.0.0.1, in a thread of this process;
    ``url`` is set once the ``with`` block is entered."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="convotel-served-app", daemon=True
        )
        self.url = ""

    def __enter__(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError("uvicorn did not start serving the app (see the log above)")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving; returns once every request has finished (and so its spans ended)."""
        self._server.should_exit = True
        self._thread.join(timeout=SHUTDOWN_TIMEOUT_S + 5)
