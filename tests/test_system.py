"""System routes: /, /health, /ready, /metrics, docs, models, and import hygiene."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import redis as sync_redis

from lexia.services.health import HEARTBEAT_KEY
from lexia.worker.runtime import Heartbeat
from tests.conftest import TEST_REDIS_URL, AppFactory, TestApp, bearer
from tests.test_auth import assert_error


async def test_root_and_health_need_no_key(api: TestApp) -> None:
    root = await api.client.get("/")
    assert root.json() == {
        "name": "Lexia", "version": "1.0.0", "docs": "/docs", "openapi": "/openapi.json",
        "health": "/health", "ready": "/ready",
    }
    assert (await api.client.get("/health")).json() == {"status": "ok", "version": "1.0.0"}


def _beat() -> None:
    client = sync_redis.Redis.from_url(TEST_REDIS_URL)
    Heartbeat(TEST_REDIS_URL).beat_once(client)
    client.close()


async def test_ready_names_the_missing_worker(api: TestApp) -> None:
    response = await api.client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready" and body["checks"]["worker"] == "fail"
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    assert body["error"]["code"] == "dependency_unavailable" and "worker" in body["error"]["message"]
    assert response.headers["retry-after"] == "5"


async def test_ready_when_everything_answers(api: TestApp) -> None:
    _beat()
    response = await api.client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "worker": "ok", "llm": "ok", "stt": "ok", "diarization": "ok"},
    }


async def test_stale_heartbeat_fails_readiness(api: TestApp) -> None:
    client = sync_redis.Redis.from_url(TEST_REDIS_URL)
    client.set(HEARTBEAT_KEY, repr(time.time() - 31))
    client.close()
    assert (await api.client.get("/ready")).json()["checks"]["worker"] == "fail"


async def test_disabled_engine_never_fails_readiness(start_app: AppFactory) -> None:
    api = await start_app(LEXIA_DIARIZATION_ENABLED="false")
    _beat()
    response = await api.client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["diarization"] == "disabled"
    _, secret = await api.make_key("llm")
    kinds = [m["kind"] for m in (await api.client.get("/v1/models", headers=bearer(secret))).json()["data"]]
    assert kinds == ["llm", "stt"]


async def test_metrics_count_requests_by_route_and_status(api: TestApp) -> None:
    _, secret = await api.make_key("llm", limits={"requests_per_minute": 1})
    await api.client.get("/v1/models", headers=bearer(secret))
    await api.client.get("/v1/models", headers=bearer(secret))
    text = (await api.client.get("/metrics")).text
    assert 'lexia_http_requests_total{method="GET",route="/v1/models",status="200"} 1.0' in text
    assert 'lexia_http_requests_total{method="GET",route="/v1/models",status="429"} 1.0' in text
    assert 'lexia_rate_limited_total{limit="rate_limit_exceeded"} 1.0' in text
    assert "lexia_http_request_duration_seconds_bucket" in text
    assert secret not in text


async def test_metrics_token_required_when_set(start_app: AppFactory) -> None:
    api = await start_app(LEXIA_METRICS_TOKEN="scrape-me")
    assert_error(await api.client.get("/metrics"), 401, "invalid_api_key")
    ok = await api.client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")


async def test_models_list_and_lookup_by_alias(api: TestApp) -> None:
    _, secret = await api.make_key("stt")
    models = (await api.client.get("/v1/models", headers=bearer(secret))).json()
    assert models["object"] == "list"
    llm = models["data"][0]
    assert llm["kind"] == "llm" and llm["context_length"] > 0 and llm["owned_by"] == "lexia"
    stt = (await api.client.get("/v1/models/whisper-1", headers=bearer(secret))).json()
    assert stt["kind"] == "stt" and "whisper-1" in stt["aliases"]
    assert_error(await api.client.get("/v1/models/gpt-9", headers=bearer(secret)), 404, "model_not_found")


async def test_docs_served_and_can_be_disabled(start_app: AppFactory) -> None:
    api = await start_app()
    spec = await api.client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")
    assert "/v1/admin/keys" in spec.json()["paths"]
    assert (await api.client.get("/docs")).status_code == 200
    off = await start_app(LEXIA_DOCS_ENABLED="false")
    assert_error(await off.client.get("/openapi.json"), 404, "not_found")
    assert (await off.client.get("/docs")).status_code == 404


async def test_cors_is_off_by_default_and_never_credentials_with_star(start_app: AppFactory) -> None:
    api = await start_app()
    plain = await api.client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers
    star = await start_app(LEXIA_CORS_ORIGINS="*")
    response = await star.client.get("/health", headers={"Origin": "https://app.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


def test_importing_the_app_loads_no_heavy_engine_library() -> None:
    code = (
        "import sys, lexia.app, lexia.engines.fakes\n"
        "heavy = [m for m in ('torch', 'vllm', 'faster_whisper', 'ctranslate2', 'pyannote') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


async def test_worker_process_heartbeat_makes_the_api_ready(api: TestApp) -> None:
    import asyncio
    import os
    from pathlib import Path

    from tests.conftest import BASE_ENV

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, **BASE_ENV}
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "dramatiq"), "lexia.worker.actors", "--processes", "1", "--threads", "1"],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        for _ in range(60):
            if (await api.client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.25)
        response = await api.client.get("/ready")
        assert response.status_code == 200, response.text
    finally:
        worker.terminate()
        worker.wait(timeout=20)


async def test_openapi_documents_every_request_body_and_response(start_app: AppFactory) -> None:
    api = await start_app()
    doc = (await api.client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node["$ref"]
        assert ref.startswith("#/components/schemas/")
        return schemas[ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]

    json_bodies = {
        ("/v1/chat/completions", "post"): "ChatCompletionRequest",
        ("/v1/completions", "post"): "CompletionRequest",
        ("/v1/admin/keys", "post"): "KeyCreate",
        ("/v1/admin/keys/{key_id}", "patch"): "KeyPatch",
        ("/v1/admin/tenant", "patch"): "TenantPatch",
    }
    for (path, method), name in json_bodies.items():
        body = doc["paths"][path][method]["requestBody"]
        assert body["required"] is True and list(body["content"]) == ["application/json"], path
        assert resolve(body["content"]["application/json"]["schema"])["title"] == name
    uploads = {
        ("/v1/audio/transcriptions", "post"): ["multipart/form-data"],
        ("/v1/audio/translations", "post"): ["multipart/form-data"],
        ("/v1/transcriptions", "post"): ["multipart/form-data", "application/json"],
        ("/v1/transcriptions/sync", "post"): ["multipart/form-data", "application/json"],
        ("/v1/diarization", "post"): ["multipart/form-data", "application/json"],
        ("/v1/diarization/sync", "post"): ["multipart/form-data", "application/json"],
    }
    for (path, method), media_types in uploads.items():
        body = doc["paths"][path][method]["requestBody"]
        assert body["required"] is True and list(body["content"]) == media_types, path
        form = body["content"]["multipart/form-data"]["schema"]
        assert form["properties"]["file"] == {"type": "string", "format": "binary"}
        assert "file" in form["required"]
        assert "$ref" not in json.dumps(form)  # self-contained: nested structs inlined
        if "application/json" in media_types:
            assert form["additionalProperties"] is False  # Lexia's own routes refuse unknown fields
            assert "audio_url" in body["content"]["application/json"]["schema"]["required"]
    assert "speaker_options" in doc["paths"]["/v1/transcriptions"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    # Request bodies are documented as the decoder enforces them (msgspec's schema of the struct).
    assert schemas["KeyCreate"]["additionalProperties"] is False
    assert {"*", "admin", "llm"} <= set(schemas["KeyCreate"]["properties"]["scopes"]["items"]["enum"])
    limit = schemas["KeyLimits"]["properties"]["requests_per_minute"]["anyOf"][0]
    assert limit["minimum"] == 0 and limit["type"] == "integer"
    jobs = {p["name"]: p["schema"] for p in doc["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert jobs["status"]["enum"][0] == "queued" and jobs["status"]["type"] == "string"
    assert jobs["after"]["pattern"].startswith("^(tr|dz)_")
    chat = schemas["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    # Every operation documents its success body and its errors in the error envelope.
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            success = [code for code in responses if code.startswith("2")]
            assert success, (method, path)
            errors = [code for code in responses if code[0] in "45"]
            assert errors, (method, path)
            for code in errors:
                assert resolve(responses[code]["content"]["application/json"]["schema"])["title"] == "ErrorResponse"
            if path.startswith("/v1/"):
                assert {"401", "403", "429"} <= set(responses), (method, path)
    transcript = doc["paths"]["/v1/transcriptions/{transcript_id}"]["get"]["responses"]["200"]
    assert resolve(transcript["content"]["application/json"]["schema"])["title"] == "Transcript"
    models = doc["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert resolve(models)["title"] == "ModelList"
    # Every reference anywhere in the document points at a component that exists.
    refs = re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs and all(name in schemas for name in refs)
    # The Swagger page embeds the same document.
    assert b"ChatCompletionRequest" in (await api.client.get("/docs")).content


async def test_options_allow_lists_every_method_of_the_path(api: TestApp) -> None:
    """Litestar 2's automatic OPTIONS answer listed only the first handler's methods (GET, not PATCH)."""
    expected = {
        "/v1/admin/tenant": "GET, OPTIONS, PATCH",
        "/v1/admin/keys": "GET, OPTIONS, POST",
        "/v1/admin/keys/key_x": "DELETE, GET, OPTIONS, PATCH",
        "/health": "GET, OPTIONS",
    }
    for path, allow in expected.items():
        response = await api.client.options(path)
        assert response.status_code == 204 and response.headers["allow"] == allow, path


async def test_metrics_content_type_names_its_charset_once(api: TestApp) -> None:
    content_type = (await api.client.get("/metrics")).headers["content-type"]
    assert content_type.count("charset") == 1 and content_type.startswith("text/plain; version=0.0.4")


async def test_a_request_the_http_parser_refuses_is_400_in_the_envelope(serve_app: AppFactory) -> None:
    """A control character in a header is refused by the parser before the app: still the envelope."""
    import asyncio

    api = await serve_app()
    host, port = api.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x01b\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"x-request-id: req_" in head
    error = json.loads(body)["error"]
    assert error["code"] == "malformed_request" and error["type"] == "invalid_request_error"
