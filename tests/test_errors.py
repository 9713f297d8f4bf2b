"""The OpenAI error envelope on every error, request ids, and no internals leaked."""

from __future__ import annotations

import socket

from litestar import get

from lexia.api.security import public
from tests.conftest import AppFactory, TestApp, bearer
from tests.test_auth import assert_error


async def test_unknown_route_is_enveloped_404(api: TestApp) -> None:
    response = await api.client.get("/v1/does-not-exist")
    error = assert_error(response, 404, "not_found")
    assert error["type"] == "invalid_request_error"


async def test_wrong_method_is_enveloped_405_with_allow(api: TestApp) -> None:
    response = await api.client.delete("/health")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_routing_errors_come_before_authentication(api: TestApp) -> None:
    assert (await api.client.post("/v1/models")).status_code == 405
    assert (await api.client.get("/v1/nothing-here")).status_code == 404


async def test_malformed_json_is_400_invalid_json(api: TestApp) -> None:
    _, secret = await api.make_key("admin")
    response = await api.client.post(
        "/v1/admin/keys", content=b'{"name": "x", ', headers={**bearer(secret), "content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


async def test_missing_field_is_422_naming_it(api: TestApp) -> None:
    _, secret = await api.make_key("admin")
    response = await api.client.post("/v1/admin/keys", json={"scopes": ["llm"]}, headers=bearer(secret))
    assert_error(response, 422, "validation_error", param="name")


async def test_nested_invalid_field_is_422_with_dotted_param(api: TestApp) -> None:
    _, secret = await api.make_key("admin")
    response = await api.client.post(
        "/v1/admin/keys",
        json={"name": "x", "scopes": ["llm"], "limits": {"requests_per_minute": -1}},
        headers=bearer(secret),
    )
    assert_error(response, 422, "validation_error", param="limits.requests_per_minute")


async def test_unknown_field_on_lexia_route_is_rejected(api: TestApp) -> None:
    _, secret = await api.make_key("admin")
    response = await api.client.post(
        "/v1/admin/keys", json={"name": "x", "scopes": ["llm"], "colour": "red"}, headers=bearer(secret)
    )
    assert_error(response, 422, "unknown_parameter", param="colour")


async def test_wrong_content_type_is_415(api: TestApp) -> None:
    _, secret = await api.make_key("admin")
    response = await api.client.post(
        "/v1/admin/keys", content=b"name=x", headers={**bearer(secret), "content-type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_content_type")


async def test_oversized_json_is_413(start_app: AppFactory) -> None:
    api = await start_app(LEXIA_MAX_JSON_BYTES="100")
    _, secret = await api.make_key("admin")
    response = await api.client.post(
        "/v1/admin/keys", json={"name": "x" * 200, "scopes": ["llm"]}, headers=bearer(secret)
    )
    error = assert_error(response, 413, "request_too_large")
    assert "100" in error["message"]


async def test_client_request_id_is_echoed_and_bad_one_replaced(api: TestApp) -> None:
    echoed = await api.client.get("/health", headers={"X-Request-ID": "abc-123:x.y"})
    assert echoed.headers["x-request-id"] == "abc-123:x.y"
    replaced = await api.client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert replaced.headers["x-request-id"].startswith("req_")
    not_found = await api.client.get("/nope", headers={"X-Request-ID": "trace-1"})
    assert not_found.headers["x-request-id"] == "trace-1"


async def test_unexpected_exception_is_500_without_internals(api: TestApp) -> None:
    @get("/boom", opt=public())
    async def boom() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret.py line 3")

    api.app.register(boom)
    response = await api.client.get("/boom", headers={"X-Request-ID": "req-boom"})
    error = assert_error(response, 500, "internal_error")
    assert "req-boom" in error["message"]
    assert "hunter2" not in response.text and "secret.py" not in response.text


async def test_database_down_is_503_dependency_unavailable(start_app: AppFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = await start_app(LEXIA_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/x")
    response = await api.client.get("/v1/models", headers=bearer("lx_" + "C" * 43))
    error = assert_error(response, 503, "dependency_unavailable")
    assert "127.0.0.1" not in error["message"]
    ready = await api.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "fail"
    assert ready.json()["error"]["code"] == "dependency_unavailable"


def test_generated_request_ids_are_time_ordered_ulids() -> None:
    import time as _time

    from ulid import ULID

    from lexia.ids import is_id, new_request_id

    first = new_request_id()
    _time.sleep(0.002)
    second = new_request_id()
    assert is_id(first, "req") and is_id(second, "req")
    assert first < second
    assert abs(ULID.from_str(first[4:]).timestamp - _time.time()) < 5
    # Many in the same millisecond still sort in order and never repeat (ULID's monotonic mode).
    burst = [new_request_id() for _ in range(5000)]
    assert burst == sorted(burst) and len(set(burst)) == len(burst)
    assert all(is_id(rid, "req") for rid in burst)
