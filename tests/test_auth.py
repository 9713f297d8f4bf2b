"""Every key state, key transports, scopes and revocation across processes."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from lexia.db.migrations import libpq_dsn
from lexia.services.access.keys import hash_key
from tests.conftest import TEST_DB_URL, AppFactory, TestApp, bearer
from tests.harness import FakeClock


def assert_error(response, status: int, code: str, param: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in error["message"]
    return error


async def test_models_needs_a_key_when_missing(api: TestApp) -> None:
    response = await api.client.get("/v1/models")
    error = assert_error(response, 401, "missing_api_key")
    assert error["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == 'Bearer realm="lexia"'
    assert response.headers["x-request-id"].startswith("req_")


async def test_key_refused_when_malformed(api: TestApp) -> None:
    response = await api.client.get("/v1/models", headers=bearer("lx_short"))
    assert_error(response, 401, "invalid_api_key")


async def test_key_refused_when_unknown(api: TestApp) -> None:
    response = await api.client.get("/v1/models", headers=bearer("lx_" + "A" * 43))
    assert_error(response, 401, "invalid_api_key")


async def test_key_refused_when_revoked(api: TestApp) -> None:
    key, secret = await api.make_key("llm")
    await api.services.keys.revoke(key.tenant_id, key.id, guard_last_admin=False)
    response = await api.client.get("/v1/models", headers=bearer(secret))
    assert_error(response, 401, "revoked_api_key")


async def test_key_refused_when_expired(start_app: AppFactory) -> None:
    clock = FakeClock()
    api = await start_app(clock=clock)
    _, secret = await api.make_key("llm", expires_at=clock.now() + timedelta(seconds=30))
    assert (await api.client.get("/v1/models", headers=bearer(secret))).status_code == 200
    clock.advance(29)
    assert (await api.client.get("/v1/models", headers=bearer(secret))).status_code == 200
    clock.advance(1)
    assert_error(await api.client.get("/v1/models", headers=bearer(secret)), 401, "expired_api_key")


async def test_route_refused_when_scope_missing(api: TestApp) -> None:
    _, secret = await api.make_key("llm,stt")
    response = await api.client.get("/v1/usage", headers=bearer(secret))
    error = assert_error(response, 403, "insufficient_scope")
    assert "usage" in error["message"]
    assert error["type"] == "permission_error"


async def test_admin_scope_does_not_imply_others(api: TestApp) -> None:
    _, secret = await api.make_key("admin")
    assert_error(await api.client.get("/v1/usage", headers=bearer(secret)), 403, "insufficient_scope")


async def test_valid_key_accepted_in_every_form(api: TestApp) -> None:
    _, secret = await api.make_key("usage")
    for headers in (
        {"Authorization": f"Bearer {secret}"},
        {"Authorization": secret},
        {"x-api-key": secret},
    ):
        response = await api.client.get("/v1/usage", headers=headers)
        assert response.status_code == 200, (headers, response.text)


async def test_authorization_wins_over_x_api_key(api: TestApp) -> None:
    _, secret = await api.make_key("usage")
    response = await api.client.get(
        "/v1/usage", headers={"Authorization": "Bearer lx_" + "B" * 43, "x-api-key": secret}
    )
    assert_error(response, 401, "invalid_api_key")


async def test_only_hmac_is_stored(api: TestApp) -> None:
    key, secret = await api.make_key("llm")
    assert secret.startswith("lx_") and len(secret) == 46
    assert key.prefix == secret[:12]
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        row = conn.execute("SELECT key_hash, prefix FROM api_keys WHERE id = %s", (key.id,)).fetchone()
        dump = str(conn.execute("SELECT * FROM api_keys").fetchall())
    assert row is not None
    assert bytes(row[0]) == hash_key(api.services.settings.security.key_pepper.reveal(), secret)
    assert secret not in dump


async def test_revocation_reaches_another_process_within_one_second(start_app: AppFactory) -> None:
    clock = FakeClock()  # LEXIA_KEY_CACHE_SECONDS=1 of the other process's cache, without waiting for it
    first = await start_app(clock=clock)
    second = await start_app(clock=clock)
    key, secret = await first.make_key("llm")
    assert (await second.client.get("/v1/models", headers=bearer(secret))).status_code == 200
    await first.services.keys.revoke(key.tenant_id, key.id, guard_last_admin=False)
    assert_error(await first.client.get("/v1/models", headers=bearer(secret)), 401, "revoked_api_key")
    clock.advance(0.4)
    assert (await second.client.get("/v1/models", headers=bearer(secret))).status_code == 200  # its cache
    clock.advance(0.6)
    assert_error(await second.client.get("/v1/models", headers=bearer(secret)), 401, "revoked_api_key")


async def test_previous_pepper_accepted_and_rehashed(start_app: AppFactory) -> None:
    old = await start_app(LEXIA_KEY_PEPPER="old-pepper-" + "y" * 40)
    key, secret = await old.make_key("llm")
    new = await start_app(
        LEXIA_KEY_PEPPER="new-pepper-" + "z" * 40, LEXIA_KEY_PEPPER_PREVIOUS="old-pepper-" + "y" * 40
    )
    assert (await new.client.get("/v1/models", headers=bearer(secret))).status_code == 200
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        row = conn.execute("SELECT key_hash FROM api_keys WHERE id = %s", (key.id,)).fetchone()
    assert row is not None and bytes(row[0]) == hash_key("new-pepper-" + "z" * 40, secret)


async def test_last_used_at_written_off_the_request_path(api: TestApp) -> None:
    key, secret = await api.make_key("llm")
    for _ in range(3):
        assert (await api.client.get("/v1/models", headers=bearer(secret))).status_code == 200
    await api.services.usage.flush()
    fetched = await api.services.keys.get(key.tenant_id, key.id)
    assert fetched.last_used_at is not None
