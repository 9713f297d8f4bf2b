"""No secret, key hash or bound parameter in any log line, even when the database refuses a write.

PostgreSQL quotes row values in its own messages (a check violation prints the failing row, a
unique violation the key), so a 500 from a refused insert is the worst case: the canaries below
go through exactly that path and must appear nowhere in what the server logs or answers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import lexia.services.access.keys as keys_module
from lexia.logs import safe_traceback
from lexia.queue import ListQueue
from tests.conftest import bearer
from tests.harness import AppFactory
from tests.jobs_support import job_settings, sql, wav_bytes

CANARY = "SECRETCANARY-9f2c1e"


async def test_a_refused_job_insert_logs_no_webhook_secret(
    serve_app: AppFactory, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    _, key = await api.make_key()
    sql(f"ALTER TABLE jobs ADD CONSTRAINT canary_refused CHECK (webhook_auth_header_value <> '{CANARY}')")
    try:
        response = await api.client.post(
            "/v1/transcriptions", files={"file": ("a.wav", wav_bytes(1.0, tmp_path / "a.wav"), "audio/wav")},
            data={"webhook_url": "http://127.0.0.1:9/hook", "webhook_auth_header_name": "X-Token",
                  "webhook_auth_header_value": CANARY, "metadata": '{"note": "CANARYMETA"}'},
            headers=bearer(key),
        )
    finally:
        sql("ALTER TABLE jobs DROP CONSTRAINT canary_refused")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    out, err = capfd.readouterr()
    logged = out + err
    assert "unhandled error" in logged and "CheckViolation" in logged  # the failure itself is logged
    assert CANARY not in logged and "CANARYMETA" not in logged and CANARY not in response.text


async def test_a_refused_key_insert_logs_no_hash_prefix_or_key(
    serve_app: AppFactory, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    _, admin = await api.make_key()
    fixed = "lx_" + "K" * 43
    monkeypatch.setattr(keys_module, "generate_key", lambda: fixed)
    first = await api.client.post("/v1/admin/keys", json={"name": "a", "scopes": ["stt"]}, headers=bearer(admin))
    assert first.status_code == 201
    capfd.readouterr()
    again = await api.client.post("/v1/admin/keys", json={"name": "b", "scopes": ["stt"]}, headers=bearer(admin))
    assert again.status_code == 500  # the same secret twice: the unique index on the hash refuses it
    digest = keys_module.hash_key(api.services.settings.security.key_pepper.reveal(), fixed).hex()
    out, err = capfd.readouterr()
    logged = out + err
    assert "UniqueViolation" in logged
    for secret in (fixed, fixed[:12], digest[:16], api.services.settings.security.key_pepper.reveal()):
        assert secret not in logged, secret


def test_driver_messages_are_withheld_from_tracebacks() -> None:
    import psycopg

    try:
        try:
            raise psycopg.errors.UniqueViolation(f'duplicate key value violates unique constraint DETAIL: Key (key_hash)=({CANARY})')
        except psycopg.Error as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        text = safe_traceback((type(exc), exc, exc.__traceback__))
    assert CANARY not in text and "UniqueViolation" in text and "wrapped" in text


def test_other_loggers_handlers_redact_too(caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    from lexia.logs import RedactDatabaseErrors

    record = logging.LogRecord("dramatiq.worker", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise psycopg.errors.CheckViolation(f"Failing row contains ({CANARY})")
    except psycopg.Error:
        import sys

        record.exc_info = sys.exc_info()  # type: ignore[assignment]
    RedactDatabaseErrors().filter(record)
    assert record.exc_text is not None and CANARY not in logging.Formatter().format(record)


def test_an_outage_is_two_log_lines_however_many_failures(caplog: pytest.LogCaptureFixture) -> None:
    """A 10 s PostgreSQL outage made the worker log ~4,800 lines (issue 10, item 10): each component
    now logs one line when its dependency starts failing and one, with the count, when it recovers."""
    import logging

    from lexia.logs import Outage

    logger = logging.getLogger("lexia.test.outage")
    outage = Outage(logger, "the sweeper pass")
    with caplog.at_level(logging.WARNING, logger="lexia.test.outage"):
        for _ in range(1000):
            outage.failed(ConnectionRefusedError("postgres down"))
        assert outage.down
        outage.ok()
        outage.ok()  # healthy passes log nothing
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == "the sweeper pass failing (ConnectionRefusedError); retrying quietly until it recovers"
    assert lines[1].startswith("the sweeper pass recovered after") and lines[1].endswith("(1000 failures)")
    assert not any(r.exc_info for r in caplog.records)  # no traceback


def test_an_error_nobody_awaited_is_logged_without_its_message(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's default handler prints "Task exception was never retrieved" with the exception's
    repr (a driver's message, row values included); Lexia's loop handler logs it safely."""
    import logging

    from sqlalchemy.exc import IntegrityError

    from lexia.logs import log_loop_exception

    canary = "SECRETCANARY-never-retrieved"
    try:
        raise IntegrityError("INSERT INTO jobs ...", {"p": canary}, Exception(f"duplicate key ({canary})"))
    except IntegrityError as exc:
        error = exc
    with caplog.at_level(logging.ERROR):
        log_loop_exception(None, {"message": "Task exception was never retrieved", "exception": error})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Task exception was never retrieved: IntegrityError" in text and "Traceback" in text
    assert canary not in text


def test_requests_refused_during_an_outage_are_one_line_per_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    import lexia.logs
    from lexia.logs import Throttle

    now = [100.0]
    monkeypatch.setattr(lexia.logs.time, "monotonic", lambda: now[0])
    throttle = Throttle(10.0)
    assert throttle("OperationalError") == 1  # the first is logged at once
    assert [throttle("OperationalError") for _ in range(99)] == [0] * 99
    now[0] += 10.5
    assert throttle("OperationalError") == 100  # the next line says how many it stands for
    assert throttle("ConnectionError") == 1  # each kind on its own
