"""The usage ledger: events written in batches, summed per day, key and kind (§8.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lexia.services.access.usage import UsageEvent
from tests.conftest import TestApp, bearer
from tests.test_auth import assert_error


def _event(key_id: str, kind: str | None, when: datetime, **amounts: float) -> UsageEvent:
    return UsageEvent(
        created_at=when, tenant_id="acme", key_id=key_id, request_id="req_x", route="/v1/x",
        method="POST", status=200, latency_ms=1.0, kind=kind, **amounts,  # type: ignore[arg-type]
    )


async def test_every_authenticated_request_is_recorded(api: TestApp) -> None:
    key, secret = await api.make_key("*")
    await api.client.get("/v1/models", headers=bearer(secret))
    await api.client.get("/v1/models/nope", headers=bearer(secret))
    await api.services.usage.flush()
    async with api.services.db.connect() as conn:
        import sqlalchemy as sa

        rows = (
            await conn.execute(sa.text("SELECT route, status, key_id, tenant_id, requests FROM usage_events ORDER BY id"))
        ).all()
    assert [(r.route, r.status, r.requests) for r in rows] == [("/v1/models", 200, 1), ("/v1/models/{model_id}", 404, 1)]
    assert {r.key_id for r in rows} == {key.id} and {r.tenant_id for r in rows} == {"acme"}


async def test_unmetered_requests_are_rolled_up_per_second(api: TestApp) -> None:
    key, secret = await api.make_key("*")
    for _ in range(5):
        await api.client.get("/v1/models", headers=bearer(secret))
    await api.services.usage.flush()
    async with api.services.db.connect() as conn:
        import sqlalchemy as sa

        rows = (await conn.execute(sa.text("SELECT requests, latency_ms, request_id FROM usage_events"))).all()
    assert sum(r.requests for r in rows) == 5
    assert len(rows) <= 2  # one row per second boundary crossed
    assert all(r.latency_ms > 0 and r.request_id.startswith("req_") for r in rows)


async def test_usage_sums_per_day_key_and_kind(api: TestApp) -> None:
    key, secret = await api.make_key("*")
    other, _ = await api.make_key("llm", name="other")
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    if today > datetime.now(UTC):
        today -= timedelta(days=1)
    yesterday = today - timedelta(days=1)
    usage = api.services.usage
    for event in (
        _event(key.id, "llm", today, input_tokens=10, output_tokens=5),
        _event(key.id, "llm", today, input_tokens=7, output_tokens=3),
        _event(key.id, "stt", today, audio_seconds=61.5),
        _event(key.id, "diarization", today, diarization_seconds=30.25),
        _event(key.id, "stt", today, audio_seconds=10.0, diarization_seconds=10.0),
        _event(key.id, "llm", yesterday, input_tokens=100, output_tokens=1),
        _event(key.id, None, today),
        _event(other.id, "llm", today, input_tokens=1000, output_tokens=1000),
    ):
        usage.record(event)
    await usage.flush()
    start, end = yesterday.date().isoformat(), today.date().isoformat()
    body = (await api.client.get(f"/v1/usage?start={start}&end={end}", headers=bearer(secret))).json()
    assert body["object"] == "usage" and body["key_id"] == key.id
    assert body["start"] == start and body["end"] == end
    rows = {(r["date"], r["kind"]): r for r in body["data"]}
    assert set(rows) == {(start, "llm"), (end, "llm"), (end, "stt"), (end, "diarization")}
    assert rows[(end, "llm")] == {
        "date": end, "key_id": key.id, "kind": "llm", "requests": 2,
        "input_tokens": 17, "output_tokens": 8, "audio_seconds": 0.0,
    }
    assert rows[(end, "stt")]["audio_seconds"] == 71.5 and rows[(end, "stt")]["requests"] == 2
    # The diarization step of a speaker_labels transcription counts as diarization too.
    assert rows[(end, "diarization")]["audio_seconds"] == 40.25
    assert rows[(end, "diarization")]["requests"] == 2
    assert body["totals"]["llm"] == {"requests": 3, "input_tokens": 117, "output_tokens": 9, "audio_seconds": 0.0}
    everyone = (await api.client.get(f"/v1/usage?start={start}&end={end}&key_id=all&kind=llm", headers=bearer(secret))).json()
    assert everyone["totals"] == {"llm": {"requests": 4, "input_tokens": 1117, "output_tokens": 1009, "audio_seconds": 0.0}}
    assert {r["key_id"] for r in everyone["data"]} == {key.id, other.id}
    one = (await api.client.get(f"/v1/usage?key_id={other.id}", headers=bearer(secret))).json()
    assert one["totals"]["llm"]["requests"] == 1


async def test_usage_query_validation(api: TestApp) -> None:
    _, secret = await api.make_key("usage")
    foreign, _ = await api.make_key("usage", tenant="globex")
    h = bearer(secret)
    assert_error(await api.client.get("/v1/usage?start=2026-13-01", headers=h), 422, "validation_error", param="start")
    assert_error(await api.client.get("/v1/usage?start=2025-01-01&end=2026-06-01", headers=h), 422, "validation_error")
    assert_error(await api.client.get("/v1/usage?start=2026-02-02&end=2026-02-01", headers=h), 422, "validation_error")
    assert_error(await api.client.get("/v1/usage?kind=tts", headers=h), 422, "validation_error", param="kind")
    assert_error(await api.client.get(f"/v1/usage?key_id={foreign.id}", headers=h), 404, "not_found")
    default = (await api.client.get("/v1/usage", headers=h)).json()
    assert (datetime.fromisoformat(default["end"]) - datetime.fromisoformat(default["start"])).days == 29
    # Found by the fuzzer: the default start before the first representable date was a 500.
    early = await api.client.get("/v1/usage?end=0001-01-05", headers=h)
    assert early.status_code == 200 and early.json()["start"] == "0001-01-01"
    late = await api.client.get("/v1/usage?start=9999-12-01&end=9999-12-31", headers=h)
    assert late.status_code == 200, late.text
    # Empty values are not dates (and NUL never reaches the database).
    assert_error(await api.client.get("/v1/usage?start=", headers=h), 422, "validation_error", param="start")
    assert_error(await api.client.get("/v1/usage?key_id=%00", headers=h), 422, "validation_error", param="key_id")


async def test_buffered_events_survive_a_failed_flush(api: TestApp) -> None:
    key, _ = await api.make_key("llm")
    usage = api.services.usage
    usage.record(_event(key.id, "llm", datetime.now(UTC), input_tokens=1))
    async with api.services.db.begin() as conn:
        import sqlalchemy as sa

        await conn.execute(sa.text("ALTER TABLE usage_events RENAME TO usage_events_away"))
    try:
        assert await usage.flush() == 0
    finally:
        async with api.services.db.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE usage_events_away RENAME TO usage_events"))
    assert await usage.flush() >= 1
