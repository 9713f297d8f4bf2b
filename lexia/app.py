"""The Litestar application: create_app() wires settings, engines, services and the routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any

import msgspec
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import ControllerRouterHandler

from lexia.api.audio import AudioController
from lexia.api.body import StrictBody
from lexia.api.chat import ChatController, CompletionsController
from lexia.api.deps import DEPENDENCIES, bind_services
from lexia.api.diarization import DiarizationController
from lexia.api.errors import handle_exception
from lexia.api.jobs import JobController
from lexia.api.keys import KeyController
from lexia.api.models import ModelController
from lexia.api.observe import T0_STATE, observed_send
from lexia.api.openapi import finalize as finalize_openapi
from lexia.api.security import authorize, declared, public
from lexia.api.system import health, metrics, openapi_document, ready, root
from lexia.api.tenant import TenantController
from lexia.api.transcriptions import TranscriptionController
from lexia.api.usage import UsageController
from lexia.api.webhooks import WebhookController
from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.engines.base import Engines
from lexia.engines.registry import open_engines
from lexia.errors import HeadersTooLarge, LexiaError
from lexia.ids import new_request_id
from lexia.logs import configure_logging, log_loop_exception
from lexia.queue import DramatiqQueue, make_broker
from lexia.services.jobs.kinds import JobQueue
from lexia.services.wiring import Services, build_services
from lexia.settings import VERSION, Settings, environment_with_dotenv, load_settings, warn_unknown_variables

log = logging.getLogger("lexia.app")

ROUTES: list[ControllerRouterHandler] = [
    root, health, ready, metrics,
    ModelController, ChatController, CompletionsController, AudioController, TranscriptionController,
    DiarizationController, JobController, WebhookController, KeyController, TenantController, UsageController,
]


class LexiaApp(Litestar):
    """Litestar whose HTTP requests are timed from before routing and observed at `send`.

    Wrapping `send` here (rather than a `before_send` hook) also covers the framework's own
    404/405 answers and costs one call per message instead of a hook loop.
    """

    services: Services | None = None  # set by the lifespan
    allowed: Mapping[str, bytes] = MappingProxyType({})  # path template -> Allow value (allow_header_fix)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            await refuse(send, HeadersTooLarge(f"The request headers exceed {MAX_HEADER_BYTES // 1024} KiB in all"))
            return
        if scope["type"] == "http" and self.services is not None:
            scope.setdefault("state", {})[T0_STATE] = time.perf_counter()
            bind_services(self.services)
            send = observed_send(scope, send, self.services)
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            send = allow_header_fix(scope, send, self.allowed)
        await super().__call__(scope, receive, send)


# The HTTP parser sets no limit on header size; 64 KiB in all is far beyond any real client's.
MAX_HEADER_BYTES = 64 * 1024


async def refuse(send: Any, error: LexiaError) -> None:
    """Answer an error before routing (no handler, no key check): the envelope and a request id."""
    body = msgspec.json.encode(error.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", new_request_id().encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def allowed_methods(app: Litestar) -> dict[str, bytes]:
    """Allow header per path template, from the final route table.

    Litestar 2's automatic OPTIONS handler lists only the methods of the first handler registered
    for a path (litestar-org/litestar#4169, fixed in 3.x); this table lists them all.
    """
    return {
        route.path_format: ", ".join(sorted(route.methods)).encode()
        for route in app.routes
        if "OPTIONS" in route.methods
    }


def allow_header_fix(scope: Any, send: Any, allowed: Mapping[str, bytes]) -> Any:
    """Wrap `send` so an OPTIONS answer's Allow header names every method of its route."""

    async def fixed(message: Any) -> None:
        template = scope.get("path_template")
        if message["type"] == "http.response.start" and template in allowed:
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"allow"]
            if len(headers) != len(message.get("headers", ())):
                message = {**message, "headers": [*headers, (b"allow", allowed[template])]}
        await send(message)

    return fixed


def undeclared_routes(app: Litestar) -> list[str]:
    """`METHOD path` of every route that is neither public nor scoped (OPTIONS are public by rule)."""
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            methods = set(handler.http_methods) - {"OPTIONS"}
            if methods and not declared(handler.opt):
                found += [f"{method} {route.path}" for method in sorted(methods)]
    return found


def create_app(
    settings: Settings | None = None,
    engines: Engines | None = None,
    queue: JobQueue | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> LexiaApp:
    """Build the app; engines and the job queue are opened in the lifespan unless given (tests, benchmarks)."""
    if settings is None:
        environ = environment_with_dotenv()
        settings = load_settings(environ)
        configure_logging(settings.server.log_level)
        warn_unknown_variables(environ)
    else:
        configure_logging(settings.server.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            loop = asyncio.get_running_loop()
            stack.callback(loop.set_exception_handler, loop.get_exception_handler())
            loop.set_exception_handler(log_loop_exception)
            loaded = engines if engines is not None else await stack.enter_async_context(open_engines(settings.engines))
            job_queue = queue
            if job_queue is None:
                broker = make_broker(settings.data.redis_url.reveal())
                stack.callback(broker.client.close)
                job_queue = DramatiqQueue(broker)
            services = await stack.enter_async_context(build_services(settings, loaded, job_queue, clock=clock))
            app.state.services = services
            if isinstance(app, LexiaApp):
                app.services = services
                stack.callback(setattr, app, "services", None)
            # Objects made at start-up live for the whole process: keep them out of GC scans,
            # which otherwise stall the loop for tens of milliseconds under load.
            gc.collect()
            gc.freeze()
            log.info("lexia %s ready (engines: %s)", VERSION, loaded.mode)
            yield

    docs = settings.server.docs_enabled
    origins = list(settings.server.cors_origins)
    app = LexiaApp(
        route_handlers=[*ROUTES, *([openapi_document] if docs else [])],
        lifespan=[lifespan],
        before_request=authorize,
        dependencies=DEPENDENCIES,
        dto=StrictBody,
        return_dto=None,
        request_max_body_size=settings.server.max_json_bytes,
        exception_handlers={Exception: handle_exception},
        openapi_config=(
            OpenAPIConfig(
                title="Lexia",
                version=VERSION,
                render_plugins=[SwaggerRenderPlugin(path="/")],
                openapi_router=Router(path="/docs", route_handlers=[], opt=public(), include_in_schema=False),
            )
            if docs
            else None
        ),
        cors_config=CORSConfig(allow_origins=origins, allow_credentials="*" not in origins) if origins else None,
        logging_config=None,  # Lexia logs JSON lines itself (lexia.logs); Litestar's config would add its own
        debug=False,
    )
    missing = undeclared_routes(app)
    if missing:
        raise RuntimeError(f"routes without public() or secured(scope): {', '.join(missing)}")
    app.allowed = allowed_methods(app)
    if docs:
        finalize_openapi(app.openapi_schema, StrictBody.body_types())
    return app
