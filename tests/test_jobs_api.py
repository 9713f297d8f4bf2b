"""Async job routes over HTTP without a worker: submission, validation, limits, idempotency,
pagination, tenancy, cancellation and deletion (the job pipeline itself: test_worker_stub.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lexia.ids import new_id
from lexia.queue import ListQueue
from tests.conftest import bearer
from tests.harness import AppFactory, TestApp, wait_for
from tests.jobs_support import job_settings, sql, wav_bytes
from tests.test_auth import assert_error

TRANSCRIPT_SUMMARY = {
    "id", "object", "status", "audio_url", "audio_filename", "audio_duration", "language_code", "speaker_labels",
    "error", "created_at", "completed_at", "deleted_at",
}
JOB_FIELDS = {
    "id", "object", "kind", "mode", "status", "stage", "progress", "queue_position", "attempts", "created_at",
    "started_at", "finished_at", "error", "result_url",
}


class Api:
    """A served app whose queue is a list (nothing runs the jobs), with a key and a sample clip."""

    def __init__(self, served: TestApp, key: str, queue: ListQueue, sample: bytes, storage: Path) -> None:
        self.served = served
        self.client = served.client
        self.key = key
        self.auth = bearer(key)
        self.queue = queue
        self.sample = sample
        self.storage = storage

    async def submit(self, path: str = "/v1/transcriptions", *, headers: dict[str, str] | None = None,
                     audio: bytes | None = None, name: str = "call.wav", **data: Any) -> Any:
        return await self.client.post(
            path, files={"file": (name, self.sample if audio is None else audio, "audio/wav")}, data=data,
            headers={**self.auth, **(headers or {})},
        )

    def files(self) -> list[Path]:
        return sorted(p for p in self.storage.rglob("*") if p.is_file()) if self.storage.exists() else []


async def make_api(serve_app: AppFactory, tmp_path: Path, scopes: str = "*", limits: dict[str, int] | None = None,
                   **env: str) -> Api:
    queue = ListQueue()
    settings = job_settings(tmp_path, **env)
    served = await serve_app(settings, queue=queue)
    _, key = await served.make_key(scopes, limits=limits)
    return Api(served, key, queue, wav_bytes(3.0, tmp_path / "sample.wav"), tmp_path / "storage")


@pytest.fixture
async def api(serve_app: AppFactory, tmp_path: Path) -> Api:
    return await make_api(serve_app, tmp_path)


async def test_submit_answers_202_with_the_queued_transcript_when_uploaded(api: Api) -> None:
    response = await api.submit(metadata='{"ticket": "4711"}', speaker_labels="true", keyterms_prompt=["Lexia"])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["object"] == "transcript" and body["status"] == "queued" and body["id"].startswith("tr_")
    assert response.headers["location"] == f"/v1/transcriptions/{body['id']}"
    assert "idempotency-replayed" not in response.headers
    assert body["queue_position"] == 1 and body["progress"] == 0.0
    assert body["metadata"] == {"ticket": "4711"} and body["speaker_labels"] is True
    assert body["text"] is None and body["words"] is None and body["audio_duration"] is None
    assert body["audio_filename"] == "call.wav" and body["completed_at"] is None
    assert response.headers["x-ratelimit-limit-jobs"] == "16" and response.headers["x-ratelimit-remaining-jobs"] == "15"
    # Committed first, then its id (and only its id) enqueued; the upload is stored for the worker.
    assert api.queue.sent == [("transcription.run", body["id"], None)]
    assert sql("SELECT status, mode, attempts FROM jobs WHERE id = %s", body["id"]) == [("queued", "async", 0)]
    assert [p.name for p in api.files()] == [f"{body['id']}.audio"]
    second = (await api.submit()).json()
    assert second["queue_position"] == 2
    polled = (await api.client.get(f"/v1/transcriptions/{second['id']}", headers=api.auth)).json()
    assert polled["status"] == "queued" and polled["queue_position"] == 2
    job = (await api.client.get(f"/v1/jobs/{second['id']}", headers=api.auth)).json()
    assert set(job) == JOB_FIELDS
    assert job["kind"] == "transcription" and job["mode"] == "async" and job["stage"] == "queued"
    assert job["queue_position"] == 2 and job["attempts"] == 0 and job["error"] is None
    assert job["result_url"] == f"/v1/transcriptions/{second['id']}"


async def test_submit_accepts_json_with_an_audio_url(api: Api) -> None:
    response = await api.client.post(
        "/v1/transcriptions",
        json={"audio_url": "http://127.0.0.1:9/a.wav", "language_code": "fr", "metadata": {"k": "v"}},
        headers=api.auth,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["audio_url"] == "http://127.0.0.1:9/a.wav" and body["audio_filename"] is None
    assert body["language_code"] == "fr" and body["metadata"] == {"k": "v"}
    assert api.files() == []


@pytest.mark.parametrize(
    ("data", "status", "code", "param"),
    [
        ({}, 422, "validation_error", "file"),
        ({"bogus": "1"}, 422, "unknown_parameter", "bogus"),
        ({"audio_url": "http://127.0.0.1:9/x.wav"}, 422, "validation_error", "file"),
        ({"webhook_url": "http://10.1.2.3/hook"}, 422, "url_not_allowed", "webhook_url"),
        ({"webhook_url": "ftp://example.com/hook"}, 422, "invalid_url", "webhook_url"),
        ({"webhook_url": "http://127.0.0.1:9/h", "webhook_auth_header_name": "X-Token"}, 422, "validation_error",
         "webhook_auth_header_name"),
        ({"webhook_url": "http://127.0.0.1:9/h", "webhook_auth_header_name": "Content-Type",
          "webhook_auth_header_value": "x"}, 422, "validation_error", "webhook_auth_header_name"),
        ({"webhook_url": "http://127.0.0.1:9/h", "webhook_auth_header_name": "webhook-id",
          "webhook_auth_header_value": "x"}, 422, "validation_error", "webhook_auth_header_name"),
        ({"webhook_auth_header_name": "X-Token", "webhook_auth_header_value": "x"}, 422, "validation_error",
         "webhook_url"),
        ({"speakers_expected": "0"}, 422, "validation_error", "speakers_expected"),
        ({"language_code": "xx"}, 422, "unsupported_language", "language_code"),
        ({"speech_model": "nope"}, 404, "model_not_found", "speech_model"),
        ({"audio_retention_hours": "9000"}, 422, "validation_error", "audio_retention_hours"),
    ],
)
async def test_submit_refuses_bad_fields(api: Api, data: dict[str, str], status: int, code: str, param: str) -> None:
    if data == {}:
        response = await api.client.post("/v1/transcriptions", json={}, headers=api.auth)
    elif "audio_url" in data:
        response = await api.submit(**data)  # a file and an audio_url: two sources
    else:
        response = await api.submit(**data)
    assert_error(response, status, code, param)
    assert api.queue.sent == [] and api.files() == []
    assert sql("SELECT count(*) FROM jobs") == [(0,)]


async def test_loopback_webhook_is_refused_at_submit_without_allowlist(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await make_api(serve_app, tmp_path, LEXIA_SSRF_ALLOWLIST="")
    assert_error(await api.submit(webhook_url="http://127.0.0.1:8080/hook"), 422, "url_not_allowed", "webhook_url")
    assert_error(await api.submit(webhook_url="http://169.254.169.254/latest"), 422, "url_not_allowed", "webhook_url")
    response = await api.client.post("/v1/transcriptions", json={"audio_url": "http://localhost/a.wav"},
                                     headers=api.auth)
    assert_error(response, 422, "url_not_allowed", "audio_url")


async def test_unusable_uploads_are_refused_at_submit(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await make_api(serve_app, tmp_path, LEXIA_MAX_AUDIO_SECONDS="2")
    assert_error(await api.submit(audio=b""), 415, "empty_audio", "file")
    assert_error(await api.submit(audio=b"not audio at all" * 64), 415, "audio_decode_failed", "file")
    assert_error(await api.submit(), 413, "audio_too_long", "file")
    assert api.files() == [] and api.queue.sent == []
    response = await api.client.post("/v1/transcriptions", content=b"x", headers={**api.auth, "Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_content_type")


async def test_queue_full_answers_503_with_retry_after(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await make_api(serve_app, tmp_path, LEXIA_QUEUE_MAX_DEPTH="2")
    assert (await api.submit()).status_code == 202
    assert (await api.submit()).status_code == 202
    response = await api.submit()
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "5"
    assert sql("SELECT count(*) FROM jobs") == [(2,)] and len(api.files()) == 2


async def test_concurrency_limit_counts_queued_jobs_and_frees_slots(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await make_api(serve_app, tmp_path, limits={"max_concurrent_jobs": 1})
    assert_error(await api.submit(bogus="x"), 422, "unknown_parameter")  # a refused request holds no slot
    first = (await api.submit()).json()
    response = await api.submit()
    assert_error(response, 429, "concurrency_limit_exceeded")
    assert response.headers["retry-after"] == "10" and response.headers["x-ratelimit-remaining-jobs"] == "0"
    cancelled = await api.client.delete(f"/v1/jobs/{first['id']}", headers=api.auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await api.submit()).status_code == 202  # the cancelled job gave its slot back


async def test_audio_seconds_are_charged_at_submit(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await make_api(serve_app, tmp_path, limits={"audio_seconds_per_hour": 4})
    assert (await api.submit()).status_code == 202  # 3 s of the 4 s allowance
    assert (await api.submit()).status_code == 202  # the allowance was positive: admitted, now negative
    response = await api.submit()
    assert_error(response, 429, "audio_limit_exceeded")
    assert int(response.headers["retry-after"]) >= 1


async def test_idempotency_key_replays_and_refuses_reuse(api: Api) -> None:
    key = {"Idempotency-Key": "order-4711"}
    first = await api.submit(headers=key, metadata='{"a": "1"}')
    assert first.status_code == 202
    again = await api.submit(headers=key, metadata='{"a": "1"}')
    assert again.status_code == 202 and again.headers["idempotency-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    assert_error(await api.submit(headers=key, metadata='{"a": "2"}'), 409, "idempotency_key_reused")
    assert_error(await api.submit(headers=key, audio=api.sample[:-1024], metadata='{"a": "1"}'), 409,
                 "idempotency_key_reused")
    # The replay shows the job's current state.
    await api.client.delete(f"/v1/jobs/{first.json()['id']}", headers=api.auth)
    replay = await api.submit(headers=key, metadata='{"a": "1"}')
    assert replay.status_code == 202 and replay.json()["status"] == "cancelled"
    assert sql("SELECT count(*) FROM jobs") == [(1,)] and len(api.queue.sent) == 1
    # Keys are per tenant; another tenant may use the same one.
    _, other = await api.served.make_key(tenant="globex")
    response = await api.client.post(
        "/v1/transcriptions", files={"file": ("call.wav", api.sample, "audio/wav")},
        data={"metadata": '{"a": "1"}'}, headers={**bearer(other), **key},
    )
    assert response.status_code == 202 and response.json()["id"] != first.json()["id"]


async def test_idempotency_key_is_not_consumed_by_a_failed_request(api: Api) -> None:
    key = {"Idempotency-Key": "retry-me"}
    assert_error(await api.submit(headers=key, speakers_expected="0"), 422, "validation_error")
    response = await api.submit(headers=key)
    assert response.status_code == 202 and "idempotency-replayed" not in response.headers


async def test_idempotency_key_in_use_while_the_first_request_is_received(api: Api) -> None:
    key = {"Idempotency-Key": "slow-upload"}

    async def slow_body() -> Any:
        boundary = "lexiab"
        yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n".encode()
        await asyncio.sleep(0.6)
        yield api.sample + f"\r\n--{boundary}--\r\n".encode()

    first = asyncio.create_task(api.client.post(
        "/v1/transcriptions", content=slow_body(),
        headers={**api.auth, **key, "Content-Type": "multipart/form-data; boundary=lexiab"},
    ))
    lock = f"lexia:idem:acme:{hashlib.sha256(b'slow-upload').hexdigest()}"

    async def receiving() -> bool:  # the first request holds the key's lock while its body arrives
        return bool(await api.served.services.redis.exists(lock))

    await wait_for(receiving, timeout=5, every=0.01)
    assert_error(await api.submit(headers=key), 409, "idempotency_key_in_use")
    assert (await first).status_code == 202
    replay = await api.submit(headers=key)
    assert replay.status_code == 202 and replay.headers["idempotency-replayed"] == "true"


@pytest.mark.parametrize("value", [b"", b"x" * 256, b"caf\xe9", b"tab\there"])
async def test_malformed_idempotency_key_is_400(api: Api, value: bytes) -> None:
    response = await api.client.post(
        "/v1/transcriptions", json={"audio_url": "http://127.0.0.1:9/a.wav"},
        headers={**api.auth, "Idempotency-Key": value},  # type: ignore[dict-item]
    )
    assert_error(response, 400, "malformed_request")


def _insert_transcripts(tenant: str, key_id: str, count: int) -> list[str]:
    ids = []
    base = datetime.now(UTC) - timedelta(hours=1)
    rows = []
    for i in range(count):
        job_id = new_id("tr")
        ids.append(job_id)
        status = ("completed", "error", "cancelled", "queued", "processing")[i % 5]
        rows.append((job_id, tenant, key_id, status, base + timedelta(milliseconds=i)))
    import psycopg

    from lexia.db.migrations import libpq_dsn
    from tests.conftest import TEST_DB_URL

    with psycopg.connect(libpq_dsn(TEST_DB_URL), autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO jobs (id, tenant_id, key_id, kind, mode, status, options, created_at) "
            "VALUES (%s, %s, %s, 'transcription', 'async', %s, '{\"speech_model\": \"m\"}', %s)",
            rows,
        )
    return ids


async def test_cursor_pagination_walks_250_transcripts_newest_first(api: Api) -> None:
    me = (await api.served.services.keys.page("acme"))[0][0]
    ids = _insert_transcripts("acme", me.id, 250)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": "100", **({"after": after} if after else {})}
        body = (await api.client.get("/v1/transcriptions", params=params, headers=api.auth)).json()
        pages += 1
        assert body["object"] == "list" and all(set(item) == TRANSCRIPT_SUMMARY for item in body["data"])
        seen += [item["id"] for item in body["data"]]
        assert body["first_id"] == body["data"][0]["id"] and body["last_id"] == body["data"][-1]["id"]
        if not body["has_more"]:
            break
        after = body["last_id"]
    assert pages == 3 and seen == list(reversed(ids))
    default = (await api.client.get("/v1/transcriptions", headers=api.auth)).json()
    assert len(default["data"]) == 20 and default["has_more"] is True
    errors = (await api.client.get("/v1/transcriptions", params={"status": "error", "limit": "100"},
                                   headers=api.auth)).json()
    assert len(errors["data"]) == 50 and {i["status"] for i in errors["data"]} == {"error"}
    jobs = (await api.client.get("/v1/jobs", params={"kind": "transcription", "status": "queued", "limit": "100"},
                                 headers=api.auth)).json()
    assert len(jobs["data"]) == 50 and jobs["data"][0]["queue_position"] is not None
    gone = (await api.client.get("/v1/transcriptions", params={"after": new_id("tr")}, headers=api.auth)).json()
    assert len(gone["data"]) == 20  # `after` need not exist: everything older is listed
    assert_error(await api.client.get("/v1/transcriptions", params={"limit": "101"}, headers=api.auth), 422,
                 "validation_error", "limit")
    assert_error(await api.client.get("/v1/transcriptions", params={"after": "dz_x"}, headers=api.auth), 422,
                 "validation_error", "after")
    assert_error(await api.client.get("/v1/transcriptions", params={"status": "done"}, headers=api.auth), 422,
                 "validation_error", "status")
    assert_error(await api.client.get("/v1/jobs", params={"kind": "llm"}, headers=api.auth), 422,
                 "validation_error", "kind")


async def test_jobs_list_mixes_kinds_newest_first(api: Api) -> None:
    a = (await api.submit()).json()["id"]
    b = (await api.submit("/v1/diarization")).json()["id"]
    c = (await api.submit()).json()["id"]
    body = (await api.client.get("/v1/jobs", headers=api.auth)).json()
    assert [j["id"] for j in body["data"]] == [c, b, a]
    assert [j["kind"] for j in body["data"]] == ["transcription", "diarization", "transcription"]
    assert [j["queue_position"] for j in body["data"]] == [3, 2, 1]
    page = (await api.client.get("/v1/jobs", params={"after": b}, headers=api.auth)).json()
    assert [j["id"] for j in page["data"]] == [a]
    only = (await api.client.get("/v1/jobs", params={"kind": "diarization"}, headers=api.auth)).json()
    assert [j["id"] for j in only["data"]] == [b]


async def test_every_job_and_transcript_route_is_404_for_another_tenant(api: Api) -> None:
    tr = (await api.submit(webhook_url="http://127.0.0.1:9/hook")).json()["id"]
    dz = (await api.submit("/v1/diarization")).json()["id"]
    await api.client.delete(f"/v1/jobs/{tr}", headers=api.auth)  # makes a webhook delivery
    (delivery,) = [r[0] for r in sql("SELECT id FROM webhook_deliveries")]
    _, other_key = await api.served.make_key(tenant="globex")
    other = bearer(other_key)
    routes = [
        ("GET", f"/v1/transcriptions/{tr}"), ("DELETE", f"/v1/transcriptions/{tr}"),
        ("GET", f"/v1/transcriptions/{tr}/srt"), ("GET", f"/v1/transcriptions/{tr}/vtt"),
        ("GET", f"/v1/transcriptions/{tr}/sentences"), ("GET", f"/v1/transcriptions/{tr}/paragraphs"),
        ("GET", f"/v1/transcriptions/{tr}/audio"),
        ("GET", f"/v1/jobs/{tr}"), ("DELETE", f"/v1/jobs/{tr}"), ("GET", f"/v1/jobs/{dz}"), ("DELETE", f"/v1/jobs/{dz}"),
        ("GET", f"/v1/diarization/{dz}"), ("DELETE", f"/v1/diarization/{dz}"), ("GET", f"/v1/diarization/{dz}/rttm"),
        ("GET", f"/v1/webhooks/deliveries/{delivery}"), ("POST", f"/v1/webhooks/deliveries/{delivery}/redeliver"),
    ]
    for method, path in routes:
        assert_error(await api.client.request(method, path, headers=other), 404, "not_found")
    for method, path in [("GET", "/v1/jobs/tr_nope"), ("DELETE", "/v1/jobs/job_x"), ("GET", f"/v1/diarization/{tr}"),
                         ("GET", f"/v1/transcriptions/{dz}"), ("GET", "/v1/webhooks/deliveries/whd_1")]:
        assert_error(await api.client.request(method, path, headers=api.auth), 404, "not_found")
    for path in ("/v1/jobs", "/v1/transcriptions", "/v1/diarization", "/v1/webhooks/deliveries"):
        assert (await api.client.get(path, headers=other)).json()["data"] == []
    # Nothing changed for the owner.
    assert (await api.client.get(f"/v1/diarization/{dz}", headers=api.auth)).json()["status"] == "queued"


async def test_scopes_guard_the_job_routes(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await make_api(serve_app, tmp_path, scopes="stt")
    job = (await api.submit()).json()["id"]
    assert (await api.client.get(f"/v1/transcriptions/{job}", headers=api.auth)).status_code == 200
    for method, path in [("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{job}"), ("DELETE", f"/v1/jobs/{job}"),
                         ("GET", "/v1/webhooks/deliveries"), ("GET", "/v1/webhooks/secret"),
                         ("POST", "/v1/diarization")]:
        assert_error(await api.client.request(method, path, headers=api.auth), 403, "insufficient_scope")


async def test_cancel_of_a_queued_job_is_final(api: Api) -> None:
    job = (await api.submit(webhook_url="http://127.0.0.1:9/hook", metadata='{"m": "1"}')).json()["id"]
    response = await api.client.delete(f"/v1/jobs/{job}", headers=api.auth)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and body["stage"] is None and body["finished_at"] is not None
    assert_error(await api.client.delete(f"/v1/jobs/{job}", headers=api.auth), 409, "not_cancellable")
    assert api.files() == []  # audio is deleted when the job ends (retention 0)
    (delivery,) = sql("SELECT id, event, status, payload FROM webhook_deliveries WHERE resource_id = %s", job)
    assert delivery[1] == "transcript.cancelled" and delivery[2] == "pending"
    assert delivery[3]["status"] == "cancelled" and delivery[3]["transcript_id"] == job
    assert delivery[3]["metadata"] == {"m": "1"}
    assert ("webhook.deliver", delivery[0], None) in api.queue.sent
    transcript = (await api.client.get(f"/v1/transcriptions/{job}", headers=api.auth)).json()
    assert transcript["status"] == "cancelled" and transcript["queue_position"] is None


async def test_delete_erases_content_and_audio_and_keeps_a_tombstone(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await make_api(serve_app, tmp_path)
    job = (await api.submit(audio_retention_hours="24", metadata='{"who": "alice"}', prompt="secret prompt",
                            keyterms_prompt=["Alice"], webhook_url="http://127.0.0.1:9/h",
                            webhook_auth_header_name="X-Token", webhook_auth_header_value="s3cret")).json()["id"]
    (path,) = api.files()
    assert path.name == f"{job}.audio"
    audio = await api.client.get(f"/v1/transcriptions/{job}/audio", headers=api.auth)
    assert audio.status_code == 200 and audio.content == api.sample
    response = await api.client.delete(f"/v1/transcriptions/{job}", headers=api.auth)
    assert response.status_code == 200
    tomb = response.json()
    assert tomb["status"] == "cancelled" and tomb["deleted_at"] is not None
    for name in ("text", "words", "utterances", "confidence", "prompt", "keyterms_prompt", "audio_url",
                 "audio_filename", "metadata"):
        assert tomb[name] is None, name
    assert tomb["id"] == job and tomb["created_at"] and tomb["speaker_labels"] is False
    assert not path.exists() and api.files() == []
    assert sql("SELECT audio_path, webhook_auth_header_value FROM jobs WHERE id = %s", job) == [(None, None)]
    (payload,) = sql("SELECT payload FROM webhook_deliveries WHERE resource_id = %s", job)[0]
    assert payload["metadata"] is None
    again = await api.client.delete(f"/v1/transcriptions/{job}", headers=api.auth)
    assert again.status_code == 200 and again.json() == tomb
    assert (await api.client.get(f"/v1/transcriptions/{job}", headers=api.auth)).json()["status"] == "cancelled"
    assert_error(await api.client.get(f"/v1/transcriptions/{job}/srt", headers=api.auth), 410, "deleted")
    assert_error(await api.client.get(f"/v1/transcriptions/{job}/audio", headers=api.auth), 410, "deleted")


async def test_diarization_submit_validates_aliases(api: Api) -> None:
    response = await api.submit("/v1/diarization", num_speakers="2", min_speakers="1")
    assert_error(response, 422, "validation_error", "speakers_expected")
    assert_error(await api.submit("/v1/diarization", num_speakers="2", speakers_expected="2"), 422,
                 "validation_error", "num_speakers")
    assert_error(await api.submit("/v1/diarization", max_speakers="99"), 422, "validation_error")
    ok = await api.submit("/v1/diarization", min_speakers="1", max_speakers="3", metadata=json.dumps({"x": "y"}))
    assert ok.status_code == 202
    body = ok.json()
    assert body["object"] == "diarization" and body["status"] == "queued"
    assert body["min_speakers_expected"] == 1 and body["max_speakers_expected"] == 3
    assert body["segments"] is None and body["speakers"] is None and body["model"] == "lexia-fake-diarization"
    assert ok.headers["location"] == f"/v1/diarization/{body['id']}"
    assert_error(await api.client.get(f"/v1/diarization/{body['id']}/rttm", headers=api.auth), 409, "not_ready")
    listed = (await api.client.get("/v1/diarization", headers=api.auth)).json()
    assert [d["id"] for d in listed["data"]] == [body["id"]]


async def test_metrics_count_active_jobs(api: Api) -> None:
    await api.submit()
    await api.submit("/v1/diarization")
    text = (await api.client.get("/metrics")).text
    assert 'lexia_jobs{kind="transcription",status="queued"} 1.0' in text
    assert 'lexia_jobs{kind="diarization",status="queued"} 1.0' in text
    assert 'lexia_jobs{kind="transcription",status="processing"} 0.0' in text


@pytest.mark.parametrize("path", ["/v1/transcriptions", "/v1/diarization"])
async def test_audio_under_a_tenth_of_a_second_is_400_audio_too_short(api: Api, path: str) -> None:
    truncated = api.sample[:60]  # a WAV header claiming 3 s, with no samples behind it
    assert_error(await api.submit(path, audio=truncated), 400, "audio_too_short", "file")
    assert_error(await api.submit(path, audio=wav_bytes(0.05, api.storage.parent / "short.wav")), 400,
                 "audio_too_short", "file")
    assert sql("SELECT count(*) FROM jobs") == [(0,)]
    assert api.queue.sent == []
