"""Webhooks end to end with the real `webhook.deliver` actor: signatures (checked with the
`standardwebhooks` package), retries with the delivery log, SSRF refusal, redelivery, rotation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import bearer
from tests.harness import AppFactory
from tests.jobs_support import (
    job_settings,
    receiver,
    stub_worker,
    wait_for,
    wav_bytes,
)
from tests.test_auth import assert_error

DELIVERY_FIELDS = {"id", "object", "resource_id", "event", "url", "status", "payload", "attempts", "next_attempt_at",
                   "created_at"}
PAYLOAD_KEYS = ["type", "transcript_id", "job_id", "kind", "status", "error", "result_url", "metadata", "timestamp"]


async def submit(api: Any, key: str, tmp_path: Path, path: str = "/v1/transcriptions", **data: Any) -> str:
    response = await api.client.post(
        path, files={"file": ("a.wav", wav_bytes(3.0, tmp_path / "a.wav"), "audio/wav")}, data=data,
        headers=bearer(key),
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


async def settled(api: Any, key: str, job_id: str, status: str = "succeeded", timeout: float = 15) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        listed = (await api.client.get("/v1/webhooks/deliveries", params={"resource_id": job_id},
                                       headers=bearer(key))).json()["data"]
        return listed[0] if listed and listed[0]["status"] == status else None

    return await wait_for(check, timeout=timeout)  # type: ignore[no-any-return]


async def test_receiver_failing_twice_gets_three_attempts_then_delivered(
    serve_app: AppFactory, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w, receiver([500, 500, 200]) as hook:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        secret = (await api.client.get("/v1/webhooks/secret", headers=bearer(key))).json()
        assert secret["object"] == "webhook_secret" and secret["secret"].startswith("whsec_")
        assert secret["previous_expires_at"] is None
        job_id = await submit(api, key, tmp_path, webhook_url=hook.url, metadata='{"ticket": "4711"}',
                              webhook_auth_header_name="X-Hook-Token", webhook_auth_header_value="t0ken-value")
        delivery = await settled(api, key, job_id)
        assert set(delivery) == DELIVERY_FIELDS and delivery["object"] == "webhook_delivery"
        assert delivery["event"] == "transcript.completed" and delivery["url"] == hook.url
        assert [(a["number"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
            (1, 500, "non-2xx response"), (2, 500, "non-2xx response"), (3, 200, None),
        ]
        assert all(isinstance(a["latency_ms"], int) and a["at"].endswith("Z") for a in delivery["attempts"])
        assert delivery["next_attempt_at"] is None
        assert list(delivery["payload"]) == PAYLOAD_KEYS
        assert delivery["payload"] == {
            "type": "transcript.completed", "transcript_id": job_id, "job_id": job_id, "kind": "transcription",
            "status": "completed", "error": None, "result_url": f"/v1/transcriptions/{job_id}",
            "metadata": {"ticket": "4711"}, "timestamp": delivery["payload"]["timestamp"],
        }
        # Every attempt: same webhook-id, fresh timestamp and a signature any Standard Webhooks library accepts.
        verifier = Webhook(secret["secret"])
        assert len(hook.received) == 3
        assert {h["webhook-id"] for h, _ in hook.received} == {delivery["id"]}
        for headers, raw in hook.received:
            assert verifier.verify(raw, headers) == delivery["payload"]
            assert headers["content-type"] == "application/json" and headers["user-agent"] == "Lexia-Webhooks/1"
            assert headers["x-hook-token"] == "t0ken-value"
            assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
        transcript = (await api.client.get(f"/v1/transcriptions/{job_id}", headers=bearer(key))).json()
        assert transcript["webhook_status_code"] == 200 and transcript["webhook_auth"] is True
        assert transcript["webhook_auth_header_name"] == "X-Hook-Token"
        one = (await api.client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=bearer(key))).json()
        assert one == delivery
        listed = (await api.client.get("/v1/webhooks/deliveries", params={"status": "succeeded"},
                                       headers=bearer(key))).json()
        assert [d["id"] for d in listed["data"]] == [delivery["id"]]
        assert (await api.client.get("/v1/webhooks/deliveries", params={"status": "failed"},
                                     headers=bearer(key))).json()["data"] == []
        assert_error(await api.client.get("/v1/webhooks/deliveries", params={"status": "done"},
                                          headers=bearer(key)), 422, "validation_error", "status")
    out, err = capfd.readouterr()
    assert "t0ken-value" not in out + err and secret["secret"] not in out + err  # secrets are never logged


async def test_loopback_receiver_is_refused_at_delivery_and_logged(serve_app: AppFactory, tmp_path: Path) -> None:
    api_settings = job_settings(tmp_path)  # the API allows 127.0.0.1, the worker does not
    worker_settings = job_settings(tmp_path, LEXIA_SSRF_ALLOWLIST="")
    with stub_worker(worker_settings) as w, receiver() as hook:
        api = await serve_app(api_settings, queue=w.queue)
        _, key = await api.make_key()
        job_id = await submit(api, key, tmp_path, webhook_url=hook.url)
        delivery = await settled(api, key, job_id, "failed")
        assert [(a["number"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
            (1, None, "url_not_allowed"),
        ]
        assert hook.received == []  # never connected
        transcript = (await api.client.get(f"/v1/transcriptions/{job_id}", headers=bearer(key))).json()
        assert transcript["status"] == "completed" and transcript["webhook_status_code"] is None


async def test_redirects_and_timeouts_fail_and_the_schedule_ends_in_failed(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path, LEXIA_WEBHOOK_RETRY_SCHEDULE="0.1s", LEXIA_WEBHOOK_TIMEOUT_SECONDS="0.5")
    with stub_worker(settings) as w, receiver([302], default=200, delay=0.0) as redirecting, \
            receiver(default=200, delay=1.5) as slow:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        first = await submit(api, key, tmp_path, webhook_url=redirecting.url)
        second = await submit(api, key, tmp_path, webhook_url=slow.url)
        ok = await settled(api, key, first)
        assert [(a["status_code"], a["error"]) for a in ok["attempts"]] == [(302, "redirect not followed"), (200, None)]
        failed = await settled(api, key, second, "failed")
        assert [(a["status_code"], a["error"]) for a in failed["attempts"]] == [(None, "timeout"), (None, "timeout")]
        assert all(a["latency_ms"] >= 450 for a in failed["attempts"])


async def test_redeliver_makes_one_more_immediate_attempt(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path, LEXIA_WEBHOOK_RETRY_SCHEDULE="")
    with stub_worker(settings) as w, receiver([503, 503], default=200) as hook:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job_id = await submit(api, key, tmp_path, webhook_url=hook.url)
        failed = await settled(api, key, job_id, "failed")
        assert len(failed["attempts"]) == 1  # an empty schedule: one attempt only
        response = await api.client.post(f"/v1/webhooks/deliveries/{failed['id']}/redeliver", headers=bearer(key))
        assert response.status_code == 202 and response.json()["status"] == "pending"
        again = await settled(api, key, job_id, "failed")  # the receiver still answers 503: no automatic retry
        assert [a["status_code"] for a in again["attempts"]] == [503, 503]
        assert (await api.client.post(f"/v1/webhooks/deliveries/{failed['id']}/redeliver",
                                      headers=bearer(key))).status_code == 202
        done = await settled(api, key, job_id)
        assert [a["status_code"] for a in done["attempts"]] == [503, 503, 200]
        assert {h["webhook-id"] for h, _ in hook.received} == {failed["id"]}
        stamps = [int(h["webhook-timestamp"]) for h, _ in hook.received]
        assert stamps == sorted(stamps)  # each attempt is signed with its own (current) timestamp
        secret = (await api.client.get("/v1/webhooks/secret", headers=bearer(key))).json()["secret"]
        assert all(Webhook(secret).verify(raw, h) for h, raw in hook.received)


async def test_rotated_secret_signs_alongside_the_old_one(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w, receiver() as hook:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        old = (await api.client.get("/v1/webhooks/secret", headers=bearer(key))).json()["secret"]
        assert (await api.client.get("/v1/webhooks/secret", headers=bearer(key))).json()["secret"] == old
        rotated = await api.client.post("/v1/webhooks/secret/rotate", headers=bearer(key))
        assert rotated.status_code == 200
        new = rotated.json()
        assert new["secret"] != old and new["previous_expires_at"] is not None
        job_id = await submit(api, key, tmp_path, "/v1/diarization", webhook_url=hook.url)
        await settled(api, key, job_id)
        ((headers, raw),) = hook.received
        assert len(headers["webhook-signature"].split()) == 2
        for secret in (old, new["secret"]):
            payload = Webhook(secret).verify(raw, headers)
            assert payload["type"] == "diarization.completed" and payload["diarization_id"] == job_id
            assert "transcript_id" not in payload
    _, stt_only = await api.make_key("stt", tenant="acme")
    assert_error(await api.client.post("/v1/webhooks/secret/rotate", headers=bearer(stt_only)), 403,
                 "insufficient_scope")


def test_signature_matches_the_documented_algorithm() -> None:
    from lexia.services.webhooks.signing import new_secret, sign

    secret = new_secret()
    body = b'{"type":"transcript.completed"}'
    signature = sign(secret, "whd_1", 1_700_000_000, body)
    expected = Webhook(secret).sign("whd_1", __import__("datetime").datetime.fromtimestamp(1_700_000_000), body.decode())
    assert signature == expected


def test_delay_jitter_stays_within_ten_percent() -> None:
    from lexia.services.webhooks.deliveries import next_delay

    delays = (30.0, 120.0)
    values = [next_delay(delays, 1) for _ in range(200)]
    assert all(v is not None and 27.0 <= v <= 33.0 for v in values)
    assert next_delay(delays, 3) is None


def test_default_schedule_gives_ten_attempts_over_about_a_day() -> None:
    from tests.conftest import make_settings

    delays = make_settings().webhooks.retry_delays()
    assert len(delays) + 1 == 10 and 20 * 3600 < sum(delays) < 24 * 3600


