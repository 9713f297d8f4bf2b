"""Key management API: create/list/get/patch/revoke within the caller's tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import TestApp, bearer
from tests.test_auth import assert_error


async def test_create_returns_plaintext_once_and_it_works(api: TestApp) -> None:
    _, admin = await api.make_key("*")
    created = await api.client.post(
        "/v1/admin/keys",
        json={"name": "batch", "scopes": ["stt", "jobs"], "limits": {"requests_per_minute": 5}},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["object"] == "api_key" and body["tenant"] == "acme"
    assert body["key"].startswith("lx_") and body["prefix"] == body["key"][:12]
    assert body["scopes"] == ["stt", "jobs"]
    assert body["limits"] == {
        "requests_per_minute": 5, "tokens_per_minute": None, "audio_seconds_per_hour": None, "max_concurrent_jobs": None
    }
    assert body["created_at"].endswith("Z") and body["created_by"] is not None
    fetched = await api.client.get(f"/v1/admin/keys/{body['id']}", headers=bearer(admin))
    assert "key" not in fetched.json()
    used = await api.client.get("/v1/models", headers=bearer(body["key"]))
    assert used.status_code == 200 and used.headers["x-ratelimit-limit"] == "5"


async def test_cannot_grant_scopes_the_caller_lacks(api: TestApp) -> None:
    _, admin = await api.make_key("admin,stt")
    wider = await api.client.post("/v1/admin/keys", json={"name": "x", "scopes": ["llm"]}, headers=bearer(admin))
    assert_error(wider, 403, "insufficient_scope", param="scopes")
    star = await api.client.post("/v1/admin/keys", json={"name": "x", "scopes": ["*"]}, headers=bearer(admin))
    assert_error(star, 403, "insufficient_scope", param="scopes")
    ok = await api.client.post("/v1/admin/keys", json={"name": "x", "scopes": ["stt"]}, headers=bearer(admin))
    assert ok.status_code == 201


async def test_unknown_scope_and_past_expiry_are_422(api: TestApp) -> None:
    _, admin = await api.make_key("*")
    bad = await api.client.post("/v1/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=bearer(admin))
    assert_error(bad, 422, "validation_error", param="scopes.0")  # the item at fault
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    expired = await api.client.post(
        "/v1/admin/keys", json={"name": "x", "scopes": ["llm"], "expires_at": past}, headers=bearer(admin)
    )
    assert_error(expired, 422, "validation_error", param="expires_at")


async def test_list_paginates_newest_first_and_hides_revoked(api: TestApp) -> None:
    admin_key, admin = await api.make_key("*")
    ids = []
    for i in range(5):
        response = await api.client.post(
            "/v1/admin/keys", json={"name": f"k{i}", "scopes": ["llm"]}, headers=bearer(admin)
        )
        ids.append(response.json()["id"])
    await api.client.delete(f"/v1/admin/keys/{ids[0]}", headers=bearer(admin))
    page = (await api.client.get("/v1/admin/keys?limit=2", headers=bearer(admin))).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [k["id"] for k in page["data"]] == [ids[4], ids[3]]
    rest = (await api.client.get(f"/v1/admin/keys?limit=100&after={page['last_id']}", headers=bearer(admin))).json()
    assert [k["id"] for k in rest["data"]] == [ids[2], ids[1], admin_key.id]
    assert rest["has_more"] is False
    everything = (await api.client.get("/v1/admin/keys?include_revoked=true&limit=100", headers=bearer(admin))).json()
    assert ids[0] in [k["id"] for k in everything["data"]]
    bad = await api.client.get("/v1/admin/keys?limit=0", headers=bearer(admin))
    assert_error(bad, 422, "validation_error", param="limit")


async def test_patch_changes_fields_and_null_limits_restore_defaults(api: TestApp) -> None:
    _, admin = await api.make_key("*")
    key = (
        await api.client.post(
            "/v1/admin/keys",
            json={"name": "a", "scopes": ["llm"], "limits": {"tokens_per_minute": 10}},
            headers=bearer(admin),
        )
    ).json()
    patched = await api.client.patch(
        f"/v1/admin/keys/{key['id']}", json={"name": "b", "scopes": ["llm", "stt"]}, headers=bearer(admin)
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "b" and patched.json()["scopes"] == ["llm", "stt"]
    assert patched.json()["limits"]["tokens_per_minute"] == 10
    reset = await api.client.patch(f"/v1/admin/keys/{key['id']}", json={"limits": None}, headers=bearer(admin))
    assert reset.json()["limits"]["tokens_per_minute"] is None


async def test_patch_of_revoked_key_is_409(api: TestApp) -> None:
    _, admin = await api.make_key("*")
    key = (await api.client.post("/v1/admin/keys", json={"name": "a", "scopes": ["llm"]}, headers=bearer(admin))).json()
    revoked = await api.client.delete(f"/v1/admin/keys/{key['id']}", headers=bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = await api.client.delete(f"/v1/admin/keys/{key['id']}", headers=bearer(admin))
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    response = await api.client.patch(f"/v1/admin/keys/{key['id']}", json={"name": "z"}, headers=bearer(admin))
    assert_error(response, 409, "key_revoked")
    refused = await api.client.get("/v1/models", headers=bearer(key["key"]))
    assert_error(refused, 401, "revoked_api_key")


async def test_last_admin_key_cannot_be_revoked(api: TestApp) -> None:
    admin_key, admin = await api.make_key("admin,llm")
    response = await api.client.delete(f"/v1/admin/keys/{admin_key.id}", headers=bearer(admin))
    assert_error(response, 409, "last_admin_key")
    demote = await api.client.patch(f"/v1/admin/keys/{admin_key.id}", json={"scopes": ["llm"]}, headers=bearer(admin))
    assert_error(demote, 409, "last_admin_key")
    second = (await api.client.post("/v1/admin/keys", json={"name": "b", "scopes": ["admin"]}, headers=bearer(admin))).json()
    assert (await api.client.delete(f"/v1/admin/keys/{admin_key.id}", headers=bearer(admin))).status_code == 200
    assert (await api.client.get("/v1/admin/keys", headers=bearer(second["key"]))).status_code == 200


async def test_another_tenants_key_is_404_everywhere(api: TestApp) -> None:
    _, admin = await api.make_key("*", tenant="acme")
    other, _ = await api.make_key("*", tenant="globex")
    path = f"/v1/admin/keys/{other.id}"
    assert_error(await api.client.get(path, headers=bearer(admin)), 404, "not_found")
    assert_error(await api.client.patch(path, json={"name": "x"}, headers=bearer(admin)), 404, "not_found")
    assert_error(await api.client.delete(path, headers=bearer(admin)), 404, "not_found")
    listed = (await api.client.get("/v1/admin/keys?limit=100", headers=bearer(admin))).json()
    assert other.id not in [k["id"] for k in listed["data"]]
    assert_error(await api.client.get("/v1/admin/keys/not-an-id", headers=bearer(admin)), 404, "not_found")
    assert (await api.services.keys.get("globex", other.id)).revoked_at is None


async def test_tenant_settings_get_and_patch(api: TestApp) -> None:
    _, admin = await api.make_key("admin")
    tenant = (await api.client.get("/v1/admin/tenant", headers=bearer(admin))).json()
    assert tenant == {
        "object": "tenant", "id": "acme", "audio_retention_hours": 0, "result_retention_days": 30,
        "created_at": tenant["created_at"],
    }
    patched = await api.client.patch(
        "/v1/admin/tenant", json={"result_retention_days": 7}, headers=bearer(admin)
    )
    assert patched.json()["result_retention_days"] == 7
    back = await api.client.patch("/v1/admin/tenant", json={"result_retention_days": None}, headers=bearer(admin))
    assert back.json()["result_retention_days"] == 30
    bad = await api.client.patch("/v1/admin/tenant", json={"audio_retention_hours": 9000}, headers=bearer(admin))
    assert_error(bad, 422, "validation_error", param="audio_retention_hours")
