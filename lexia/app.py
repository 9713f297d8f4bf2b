"""The Litestar application: create_app() wires settings, data stores, engines and routes."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from lexia.api.audio import create_transcription, create_translation
from lexia.api.chat import chat_completions, completions
from lexia.api.deps import Services, bind_services
from lexia.api.diarization import (
    create_diarization_job,
    create_diarization_sync,
    delete_diarization,
    export_rttm,
    get_diarization,
    list_diarizations,
)
from lexia.api.errors import handle_exception
from lexia.api.jobs import cancel_job, get_job, list_jobs, sync_jobs_lifespan
from lexia.api.keys import KeyController, TenantController
from lexia.api.observe import T0_STATE, observed_send
from lexia.api.openapi import document_request_bodies
from lexia.api.security import authorize
from lexia.api.system import get_model, health, list_models, metrics, openapi_document, ready, root
from lexia.api.transcript_jobs import (
    create_transcript_job,
    delete_transcript,
    get_transcript_audio,
    list_transcripts,
)
from lexia.api.transcriptions import TranscriptController
from lexia.api.usage import usage
from lexia.api.webhooks import get_delivery, get_secret, list_deliveries, redeliver, rotate_secret
from lexia.db import open_db
from lexia.engines.base import Engines
from lexia.engines.registry import open_engines
from lexia.logs import configure_logging
from lexia.metrics import Metrics
from lexia.queue import DramatiqQueue, make_broker
from lexia.services.jobs import JobQueue
from lexia.services.keys import KeyService
from lexia.services.limits import RedisLimiter
from lexia.services.usage import UsageRecorder
from lexia.settings import VERSION, Settings, environment_with_dotenv, load_settings

log = logging.getLogger("lexia.app")


class LexiaApp(Litestar):
    """Litestar whose HTTP requests are timed from before routing and observed at `send`.

    Wrapping `send` here (rather than a `before_send` hook) also covers the framework's own
    404/405 answers and costs one call per message instead of a hook loop.
    """

    services: Services | None = None  # set by the lifespan

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.services is not None:
            scope.setdefault("state", {})[T0_STATE] = time.perf_counter()
            bind_services(self.services)
            send = observed_send(scope, send, self.services)
        await super().__call__(scope, receive, send)


def _settings_from_env() -> Settings:
    return load_settings(environment_with_dotenv())


def create_app(
    settings: Settings | None = None, engines: Engines | None = None, queue: JobQueue | None = None
) -> Litestar:
    """Build the app; engines and the job queue are opened in the lifespan unless given (tests, benchmarks)."""
    settings = settings or _settings_from_env()
    configure_logging(settings.server.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            db = open_db(settings.data.database_url.reveal(), pool_size=settings.data.db_pool_size)
            stack.push_async_callback(db.dispose)
            redis = aioredis.from_url(
                settings.data.redis_url.reveal(),
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                max_connections=256,
            )
            stack.push_async_callback(redis.aclose)
            loaded = engines
            if loaded is None:
                loaded = await stack.enter_async_context(open_engines(settings.engines))
            keys = KeyService(
                db,
                pepper=settings.security.key_pepper.reveal(),
                previous_pepper=settings.security.key_pepper_previous.reveal(),
                cache_seconds=settings.security.key_cache_seconds,
            )
            recorder = UsageRecorder(
                db,
                flush_interval=settings.usage.flush_interval_seconds,
                batch_size=settings.usage.batch_size,
                after_flush=keys.flush_last_used,
            )
            recorder.start()
            stack.push_async_callback(recorder.stop)
            limiter = RedisLimiter(
                redis,
                enabled=settings.limits.enabled,
                fail_open=settings.limits.fail_open,
                concurrency_retry_after=settings.limits.concurrency_retry_after_seconds,
                lease_fraction=settings.limits.lease_fraction,
                lease_seconds=settings.limits.lease_seconds,
            )
            stack.push_async_callback(limiter.close)
            job_queue = queue
            if job_queue is None:
                broker = make_broker(settings.data.redis_url.reveal())
                stack.callback(broker.client.close)
                job_queue = DramatiqQueue(broker)
            svc = app.state.services = Services(
                settings=settings,
                db=db,
                redis=redis,
                keys=keys,
                limiter=limiter,
                usage=recorder,
                engines=loaded,
                metrics=metrics_registry,
                queue=job_queue,
            )
            if isinstance(app, LexiaApp):
                app.services = svc
                stack.callback(setattr, app, "services", None)
            # Objects made at start-up live for the whole process: keep them out of GC scans,
            # which otherwise stall the loop for tens of milliseconds under load.
            gc.collect()
            gc.freeze()
            log.info("lexia %s ready (engines: %s)", VERSION, loaded.mode)
            yield

    metrics_registry = Metrics(per_key=settings.server.metrics_per_key)
    origins = list(settings.server.cors_origins)
    docs = [openapi_document] if settings.server.docs_enabled else []
    app = LexiaApp(
        route_handlers=[
            *docs,
            root,
            health,
            ready,
            metrics,
            list_models,
            get_model,
            chat_completions,
            completions,
            usage,
            KeyController,
            TenantController,
            TranscriptController,
            create_transcription,
            create_translation,
            create_transcript_job,
            list_transcripts,
            delete_transcript,
            get_transcript_audio,
            create_diarization_job,
            create_diarization_sync,
            list_diarizations,
            get_diarization,
            delete_diarization,
            export_rttm,
            list_jobs,
            get_job,
            cancel_job,
            get_secret,
            rotate_secret,
            list_deliveries,
            get_delivery,
            redeliver,
        ],
        lifespan=[lifespan, sync_jobs_lifespan],
        before_request=authorize,
        exception_handlers={Exception: handle_exception},
        openapi_config=(
            OpenAPIConfig(
                title="Lexia",
                version=VERSION,
                path="/docs",
                render_plugins=[SwaggerRenderPlugin(path="/")],
            )
            if settings.server.docs_enabled
            else None
        ),
        cors_config=(
            CORSConfig(allow_origins=origins, allow_credentials="*" not in origins)
            if origins
            else None
        ),
        request_max_body_size=None,
        debug=False,
    )
    if settings.server.docs_enabled:
        document_request_bodies(app.openapi_schema)
    return app
