"""Worker process set-up: the one module with import-time effects (the Dramatiq broker).

Run with ``dramatiq lexia.worker.actors`` (``make worker``).
"""

from __future__ import annotations

import dramatiq

from lexia.logs import configure_logging
from lexia.queue import Heartbeat, make_broker
from lexia.settings import environment_with_dotenv, load_settings

settings = load_settings(environment_with_dotenv())
configure_logging(settings.server.log_level)
broker = make_broker(settings.data.redis_url.reveal())
broker.add_middleware(Heartbeat(settings.data.redis_url.reveal()))
dramatiq.set_broker(broker)
