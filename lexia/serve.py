"""Serve the API with uvicorn on LEXIA_HOST:LEXIA_PORT (one process per GPU)."""

from __future__ import annotations

import sys

import uvicorn

from lexia.settings import SettingsError, environment_with_dotenv, load_settings


def main() -> int:
    """Validate settings first so a bad configuration fails with one clear line."""
    try:
        settings = load_settings(environment_with_dotenv())
    except SettingsError as exc:
        print(f"lexia: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "lexia.app:create_app",
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        access_log=False,
        log_level=settings.server.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
