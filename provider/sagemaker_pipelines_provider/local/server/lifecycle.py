"""Starting and stopping the endpoint: :class:`LocalEndpoint` serves the app in a daemon thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .app import LocalEndpointApp, ServedEngine
from .environ import DEFAULT_ACCOUNT_ID, DEFAULT_REGION, endpoint_environ
from .moto_effects import MotoSideEffects

if TYPE_CHECKING:
    from ..controls import LocalControls

__all__ = ["DEFAULT_STEP_DURATION", "DEFAULT_TIME_SCALE", "LocalEndpoint"]

log = logging.getLogger(__name__)

DEFAULT_TIME_SCALE = 1.0  # the engine's own defaults, restored by a reset
DEFAULT_STEP_DURATION = 1.0


def _server_classes() -> tuple[type, type]:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import ThreadedWSGIServer

    class QuietHandler(MotoRequestHandler):  # type: ignore[misc]
        """moto's request handler (keeps underscored S3 metadata headers), HTTP/1.1 keep-alive, and
        request logging at DEBUG instead of werkzeug's INFO line per request."""

        protocol_version = "HTTP/1.1"

        def log(self, type: str, message: str, *args: Any) -> None:
            log.debug("%s " + message, self.address_string(), *args)

    class Server(ThreadedWSGIServer):  # type: ignore[misc]
        request_queue_size = 1024  # many concurrent clients connect at once in the load tests
        daemon_threads = True

    return Server, QuietHandler


class LocalEndpoint:
    """The local AWS endpoint: one port, pipeline actions served by the engine, the rest by moto.

    ``LocalEndpoint().start()`` binds ``host:port`` (``port=0``: a free port), serves in a daemon
    thread and returns once the socket is listening. :meth:`stop` shuts the server and the engine down.
    moto's backends are process-wide: two endpoints in one process have separate engines (pipelines)
    but share every other AWS resource, and a reset of either resets moto for both.
    Usable as a context manager. ``time_scale`` and ``default_step_duration`` (default 1.0 each) are
    applied at start and after every reset, so a reset returns to the endpoint's start-up settings.
    ``engine_factory(side_effects, account_id)`` replaces the engine (tests of the protocol layer).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        region: str = DEFAULT_REGION,
        time_scale: float | None = None,
        default_step_duration: float | None = None,
        strict: bool = True,
        engine_factory: Callable[[MotoSideEffects, str], ServedEngine] | None = None,
    ) -> None:
        if engine_factory is None:
            from ..engine import PipelineEngine

            engine_factory = lambda side_effects, account: PipelineEngine(side_effects, account_id=account)  # noqa: E731
        self.host = host
        self.requested_port = port
        self.account_id = account_id
        self.region = region
        self.time_scale = time_scale
        self.default_step_duration = default_step_duration
        self.side_effects = MotoSideEffects(account_id)
        self.engine = engine_factory(self.side_effects, account_id)
        self.app = LocalEndpointApp(
            self.engine,
            strict=strict,
            on_reset=self._apply_settings,
            event_faults=self.side_effects.event_faults,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._controls: LocalControls | None = None

    def _apply_settings(self) -> None:
        """Put the time scale and default step duration back to the endpoint's start-up settings."""
        time_scale = DEFAULT_TIME_SCALE if self.time_scale is None else self.time_scale
        duration = DEFAULT_STEP_DURATION if self.default_step_duration is None else self.default_step_duration
        self.engine.set_time_scale(time_scale)
        self.engine.set_default_step_duration(duration)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> LocalEndpoint:
        """Bind, start serving in a daemon thread, return self (idempotent)."""
        if self._server is not None:
            return self
        self._apply_settings()
        server_cls, handler_cls = _server_classes()
        _ = self.app.moto_app  # import moto's app before the first request, not during it
        self._server = server_cls(self.host, self.requested_port, self.app, handler=handler_cls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"local-aws-endpoint:{self.port}", daemon=True
        )
        self._thread.start()
        log.info("local AWS endpoint serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and shut the engine down (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.engine.shutdown()

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the endpoint is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://<host>:<port>``; a wildcard bind address is reported as 127.0.0.1."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def controls(self) -> LocalControls:
        from ..controls import LocalControls

        if self._controls is None or self._controls.endpoint_url != self.url:
            self._controls = LocalControls(self.url)
        return self._controls

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3, aiobotocore and Airflow's ``aws_default`` here."""
        return endpoint_environ(self.url, self.region)

    def stats(self) -> dict[str, Any]:
        return self.app.stats()
