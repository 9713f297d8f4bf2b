"""Worker process set-up: the one module with import-time effects (the Dramatiq broker).

Run with ``dramatiq lexia.worker.actors`` (``make worker``). The broker runs async actors on one
event loop per process (AsyncIO middleware), beats a heartbeat for /ready, and opens the
WorkerRuntime (database, Redis, engines, job services) once per process when the worker boots.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import AsyncIO

from lexia.logs import configure_logging
from lexia.queue import DramatiqQueue, Heartbeat, make_broker
from lexia.settings import environment_with_dotenv, load_settings
from lexia.worker.runtime import RuntimeMiddleware, WorkerRuntime

settings = load_settings(environment_with_dotenv())
configure_logging(settings.server.log_level)
broker = make_broker(settings.data.redis_url.reveal())
broker.add_middleware(AsyncIO())
broker.add_middleware(Heartbeat(settings.data.redis_url.reveal()))
worker_runtime = WorkerRuntime(settings, queue=DramatiqQueue(broker))
broker.add_middleware(RuntimeMiddleware(worker_runtime))
dramatiq.set_broker(broker)
