"""Serve the API with uvicorn on LEXIA_HOST:LEXIA_PORT (one process per GPU).

On the first stop signal the server stops accepting connections and the app starts draining:
in-flight requests get LEXIA_SHUTDOWN_GRACE_SECONDS to finish, after which the app stops what they
wait on and answers them itself (503 in the error envelope); uvicorn's own graceful timeout, a
little longer, only closes what is left. A request uvicorn cannot parse (a control character in a
header) is answered 400 in the error envelope too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lexia.app import LexiaApp, create_app
from lexia.errors import InvalidRequest
from lexia.ids import new_request_id
from lexia.logs import redact_handlers
from lexia.settings import Settings, SettingsError, environment_with_dotenv, load_settings

# The app answers in-flight requests by the grace period; uvicorn cuts connections this much later.
CLOSE_MARGIN_SECONDS = 3.0


class EnvelopeProtocol(HttpToolsProtocol):
    """httptools' parser refuses malformed requests before the app sees them; answer them like the app."""

    def send_400_response(self, msg: str) -> None:
        """400 malformed_request in the OpenAI error envelope, with a request id."""
        import msgspec

        body = msgspec.json.encode(InvalidRequest("Malformed HTTP request: " + msg.rstrip(".")).body())
        head = (
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"x-request-id: {new_request_id()}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


class LexiaServer(uvicorn.Server):
    """uvicorn whose first stop signal also starts the app's drain."""

    def __init__(self, config: uvicorn.Config, app: LexiaApp, grace: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace = grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop accepting; the app answers what is in flight within the grace period."""
        first = not self.should_exit
        super().handle_exit(sig, frame)
        services = self._app.services
        if first and services is not None:
            asyncio.get_event_loop().call_soon_threadsafe(services.drain.begin, self._grace)


def server_for(settings: Settings, app: LexiaApp) -> LexiaServer:
    """The configured server for an app (tests serve apps the same way)."""
    grace = settings.server.shutdown_grace_seconds
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        access_log=False,
        log_level=settings.server.log_level.lower(),
        timeout_graceful_shutdown=int(grace + CLOSE_MARGIN_SECONDS),
        http=EnvelopeProtocol,
        lifespan="on",
    )
    return LexiaServer(config, app, grace)


def main() -> int:
    """Validate settings first so a bad configuration fails with one clear line."""
    try:
        settings = load_settings(environment_with_dotenv())
    except SettingsError as exc:
        print(f"lexia: {exc}", file=sys.stderr)
        return 2
    server = server_for(settings, create_app())
    for name in ("uvicorn", "uvicorn.error", ""):
        redact_handlers(logging.getLogger(name))
    server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
