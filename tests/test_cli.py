"""bin/lexia-key: create (prints once), list, revoke, rotate — against the test database."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import BASE_ENV, TestApp, bearer

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **BASE_ENV}
    return subprocess.run(
        [str(ROOT / "bin" / "lexia-key"), *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


async def test_create_list_revoke_rotate(api: TestApp) -> None:
    created = _cli("create", "--name", "ops", "--scopes", "llm,usage", "--tenant", "acme", "--expires-in", "30d", "--json")
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert {"id", "key", "prefix", "scopes"} <= set(body)
    assert body["scopes"] == ["llm", "usage"] and body["expires_at"] is not None
    assert (await api.client.get("/v1/usage", headers=bearer(body["key"]))).status_code == 200

    listed = _cli("list", "--json")
    assert body["id"] in [k["id"] for k in json.loads(listed.stdout)]
    assert body["key"] not in listed.stdout

    rotated = _cli("rotate", body["id"], "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["key"] != body["key"] and new["scopes"] == body["scopes"]
    api.services.keys.forget()
    assert (await api.client.get("/v1/usage", headers=bearer(new["key"]))).status_code == 200
    assert (await api.client.get("/v1/usage", headers=bearer(body["key"]))).status_code == 401

    revoked = _cli("revoke", new["id"])
    assert revoked.returncode == 0 and new["id"] in revoked.stdout
    api.services.keys.forget()
    assert (await api.client.get("/v1/usage", headers=bearer(new["key"]))).json()["error"]["code"] == "revoked_api_key"


def test_cli_refuses_bad_input_clearly() -> None:
    bad_scope = _cli("create", "--name", "x", "--scopes", "root")
    assert bad_scope.returncode == 1 and "unknown scope" in bad_scope.stderr
    bad_tenant = _cli("create", "--name", "x", "--scopes", "llm", "--tenant", "Bad Tenant")
    assert bad_tenant.returncode == 1 and "tenant" in bad_tenant.stderr
    bad_duration = _cli("create", "--name", "x", "--scopes", "llm", "--expires-in", "soon")
    assert bad_duration.returncode == 2 and "duration" in bad_duration.stderr
    unknown = _cli("revoke", "key_01JDX7Z9Y8X7W6V5T4S3R2Q1P0")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
