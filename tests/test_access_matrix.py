"""The tenant × scope matrix over every route, derived from the route table (app.routes).

A new route is covered automatically: the scope matrix calls it with a key of every scope Lexia
knows, and the tenant matrix calls it with another tenant's real ids, or fails naming the route
when one of its path parameters has no sample resource yet (add it to PARAM_SAMPLES).
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from lexia.api.security import ANY_KEY, PUBLIC_OPT, SCOPE_OPT
from lexia.ids import new_id
from lexia.queue import ListQueue
from lexia.services.access.keys import SCOPES
from tests.conftest import bearer
from tests.harness import AppFactory, FakeClock, TestApp, wait_for
from tests.jobs_support import sql, wav_bytes
from tests.test_auth import assert_error

PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

# Keys with more than one scope (single scopes and '*' come from SCOPES itself).
MULTI_SCOPES = [
    ("stt", "jobs"), ("llm", "usage"), ("diarization", "admin"),
    ("llm", "stt", "diarization", "jobs", "usage"),  # everything but admin: admin is not implied
    ("llm", "stt", "diarization", "jobs", "usage", "admin"),
]

# Path parameter name -> the id prefixes of the tenant resources it names. A route whose
# parameter is in neither map fails the tenant matrix until a sample is added here.
PARAM_SAMPLES: dict[str, tuple[str, ...]] = {
    "transcript_id": ("tr",),
    "diarization_id": ("dz",),
    "job_id": ("tr", "dz"),
    "delivery_id": ("whd",),
    "key_id": ("key",),
}
NOT_TENANT_OWNED = {"model_id": "served models are global (the same list for every tenant)"}

TENANT_A = "alpha-corp"
TENANT_B = "beta-corp"


Route = tuple[str, str, dict[str, Any]]  # method, path template, handler opt


def route_table(api: TestApp) -> list[Route]:
    """(method, path template, opt) of every handler but Litestar's automatic OPTIONS ones."""
    found = []
    for route in api.app.routes:
        for handler in getattr(route, "route_handlers", ()):
            for method in sorted(set(handler.http_methods) - {"OPTIONS"}):
                found.append((method, route.path, handler.opt))
    return found


def secured_routes(api: TestApp) -> list[Route]:
    return [r for r in route_table(api) if not r[2].get(PUBLIC_OPT)]


def fill(path: str, values: dict[str, str]) -> str:
    """The path with each `{name:type}` replaced by values[name]."""
    return PARAM.sub(lambda m: values[m.group(1)], path)


def params_of(path: str) -> list[str]:
    return PARAM.findall(path)


# -- scopes ---------------------------------------------------------------------------------


async def test_every_route_against_every_scope_and_dead_keys(start_app: AppFactory) -> None:
    clock = FakeClock()
    api = await start_app(queue=ListQueue(), clock=clock)
    routes = secured_routes(api)
    scopes_in_use = {opt[SCOPE_OPT] for _, _, opt in routes}
    assert scopes_in_use - {ANY_KEY} <= set(SCOPES) - {"*"}, "a route requires a scope no key can hold"
    key_sets = [(s,) for s in SCOPES] + MULTI_SCOPES
    keys = [(held, (await api.make_key(",".join(held), name="-".join(held).replace("*", "star")))[1])
            for held in key_sets]
    refused = allowed = 0
    for method, template, opt in routes:
        path = fill(template, {name: "x" for name in params_of(template)})
        required = opt[SCOPE_OPT]
        for held, secret in keys:
            response = await api.client.request(method, path, headers=bearer(secret))
            if required == ANY_KEY or "*" in held or required in held:
                assert response.status_code not in (401, 403), (method, template, held, response.text)
                assert response.status_code != 500, (method, template, held, response.text)
                allowed += 1
            else:
                error = assert_error(response, 403, "insufficient_scope")
                assert error["type"] == "permission_error" and f"'{required}'" in error["message"]
                refused += 1
    assert len(routes) >= 38, "routes disappeared from the table"
    assert refused + allowed == len(routes) * len(key_sets) >= 38 * 12
    assert refused >= 200 and allowed >= 150

    # Dead keys: revoked (after being used and cached), expired, unknown → 401 on every route.
    revoked_key, revoked = await api.make_key("*", name="revoked")
    expiring_key, expiring = await api.make_key("*", name="expiring", expires_at=clock.now() + timedelta(seconds=60))
    for secret in (revoked, expiring):
        assert (await api.client.get("/v1/models", headers=bearer(secret))).status_code == 200
    _, admin = await api.make_key("admin", name="admin")
    assert (await api.client.delete(f"/v1/admin/keys/{revoked_key.id}", headers=bearer(admin))).status_code == 200
    clock.advance(61)
    dead = 0
    for method, template, _ in routes:
        path = fill(template, {name: "x" for name in params_of(template)})
        for secret, code in ((revoked, "revoked_api_key"), (expiring, "expired_api_key"),
                             ("lx_" + "Z" * 43, "invalid_api_key")):
            response = await api.client.request(method, path, headers=bearer(secret))
            error = assert_error(response, 401, code)
            assert error["type"] == "authentication_error", (method, template)
            assert response.headers["www-authenticate"] == 'Bearer realm="lexia"', (method, template)
            dead += 1
    assert dead == 3 * len(routes)
    assert (await api.services.keys.get(expiring_key.tenant_id, expiring_key.id)).revoked_at is None


# -- tenants --------------------------------------------------------------------------------


class Tenant:
    def __init__(self, api: TestApp, secret: str, clip: bytes) -> None:
        self.api = api
        self.auth = bearer(secret)
        self.clip = clip

    async def submit(self, path: str, headers: dict[str, str] | None = None, **data: Any) -> dict[str, Any]:
        response = await self.api.client.post(
            path, files={"file": ("call.wav", self.clip, "audio/wav")}, data=data, headers={**self.auth, **(headers or {})}
        )
        assert response.status_code in (200, 202), response.text
        return response.json()  # type: ignore[no-any-return]

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.api.client.get(path, headers=self.auth, params=params)
        assert response.status_code == 200, (path, response.text)
        return response


def masked(error: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The error object with each of `ids` replaced by <id> in its strings."""
    pattern = re.compile("|".join(map(re.escape, ids)))
    return {name: pattern.sub("<id>", value) if isinstance(value, str) else value for name, value in error.items()}


def same_error_modulo_id(real: Any, ghost: Any, real_ids: list[str], ghost_ids: list[str], where: str) -> None:
    """Both answers are the not_found envelope, identical once the ids are masked."""
    a = assert_error(real, 404, "not_found")
    b = assert_error(ghost, 404, "not_found")
    assert real.headers["content-type"] == ghost.headers["content-type"], where
    assert masked(a, real_ids) == masked(b, ghost_ids), where


async def test_another_tenants_ids_are_404_on_every_route_and_never_listed(
    start_app: AppFactory, tmp_path: Path
) -> None:
    queue = ListQueue()
    api = await start_app(queue=queue, LEXIA_SSRF_ALLOWLIST="127.0.0.1")
    clip = wav_bytes(2.0, tmp_path / "clip.wav")
    a_admin_key, a_secret = await api.make_key("*", tenant=TENANT_A, name="a-admin")
    a_stt_key, _ = await api.make_key("stt", tenant=TENANT_A, name="a-stt")
    _, b_secret = await api.make_key("*", tenant=TENANT_B, name="b-star")
    a, b = Tenant(api, a_secret, clip), Tenant(api, b_secret, clip)

    # Tenant A's resources: done and queued transcripts and diarizations, a delivery, keys.
    tr_done = (await a.submit("/v1/transcriptions/sync", audio_retention_hours="24", speaker_labels="true",
                              metadata='{"owner": "a"}'))
    assert tr_done["status"] == "completed", tr_done
    dz_done = await a.submit("/v1/diarization/sync", audio_retention_hours="24")
    assert dz_done["status"] == "completed", dz_done
    tr_queued = await a.submit("/v1/transcriptions", {"Idempotency-Key": "shared-key"}, audio_retention_hours="24")
    dz_queued = await a.submit("/v1/diarization", audio_retention_hours="24")
    tr_hooked = await a.submit("/v1/transcriptions", webhook_url="http://127.0.0.1:9/hook")
    assert (await api.client.delete(f"/v1/jobs/{tr_hooked['id']}", headers=a.auth)).status_code == 200
    (delivery,) = (await a.get("/v1/webhooks/deliveries")).json()["data"]
    owned: dict[str, list[str]] = {
        "tr": [tr_done["id"], tr_queued["id"], tr_hooked["id"]],
        "dz": [dz_done["id"], dz_queued["id"]],
        "whd": [delivery["id"]],
        "key": [a_admin_key.id, a_stt_key.id],
    }
    a_ids = [i for ids in owned.values() for i in ids]
    # Usage of A reaches the ledger (so the usage report has something to leak).
    async def metered() -> list[tuple[Any, ...]]:
        return sql("SELECT 1 FROM usage_events WHERE tenant_id = %s AND kind IS NOT NULL", TENANT_A)

    await wait_for(metered)

    # Tenant B has resources of its own; the same Idempotency-Key is no replay of A's job.
    b_tr = await b.submit("/v1/transcriptions", {"Idempotency-Key": "shared-key"}, audio_retention_hours="24")
    assert b_tr["id"] not in a_ids
    b_dz = await b.submit("/v1/diarization/sync")

    async def snapshot() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for tid in owned["tr"]:
            seen[tid] = (await a.get(f"/v1/transcriptions/{tid}")).json()
            seen[f"job {tid}"] = (await a.get(f"/v1/jobs/{tid}")).json()
        for did in owned["dz"]:
            seen[did] = (await a.get(f"/v1/diarization/{did}")).json()
            seen[f"job {did}"] = (await a.get(f"/v1/jobs/{did}")).json()
        for kid in owned["key"]:
            seen[kid] = {k: v for k, v in (await a.get(f"/v1/admin/keys/{kid}")).json().items() if k != "last_used_at"}
        for wid in owned["whd"]:
            seen[wid] = (await a.get(f"/v1/webhooks/deliveries/{wid}")).json()
        done = tr_done["id"]
        for export in ("srt", "vtt", "sentences", "paragraphs", "audio"):
            seen[f"{export} {done}"] = (await a.get(f"/v1/transcriptions/{done}/{export}")).content
        seen[f"audio {tr_queued['id']}"] = (await a.get(f"/v1/transcriptions/{tr_queued['id']}/audio")).content
        seen[f"rttm {dz_done['id']}"] = (await a.get(f"/v1/diarization/{dz_done['id']}/rttm")).content
        seen["keys"] = [k["id"] for k in (await a.get("/v1/admin/keys", include_revoked="true")).json()["data"]]
        seen["tenant"] = (await a.get("/v1/admin/tenant")).json()
        seen["secret"] = (await a.get("/v1/webhooks/secret")).json()
        seen["files"] = sorted(p.name for p in api.leftovers())
        seen["sent"] = list(queue.sent)
        return seen

    before = await snapshot()
    assert before[f"job {tr_queued['id']}"]["status"] == before[f"job {dz_queued['id']}"]["status"] == "queued"

    # Every route with a path parameter, called by B with each of A's real ids, answers exactly
    # what it answers for an id that does not exist.
    missing = []
    cross = 0
    body = {"name": "stolen", "scopes": ["*"]}
    for method, template, opt in secured_routes(api):
        names = params_of(template)
        if not names:
            continue
        if all(n in NOT_TENANT_OWNED for n in names):
            continue
        unknown = [n for n in names if n not in PARAM_SAMPLES]
        if unknown:
            missing.append(f"{method} {template}: no sample for {', '.join(unknown)}")
            continue
        choices = [[(n, prefix, i) for prefix in PARAM_SAMPLES[n] for i in owned[prefix]] for n in names]
        for combo in itertools.product(*choices):
            real = {n: i for n, _, i in combo}
            ghost = {n: new_id(prefix) for n, prefix, _ in combo}
            kwargs: dict[str, Any] = {"json": body} if method in ("PATCH", "PUT", "POST") else {}
            got = await api.client.request(method, fill(template, real), headers=b.auth, **kwargs)
            nothing = await api.client.request(method, fill(template, ghost), headers=b.auth, **kwargs)
            real_ids, ghost_ids = list(real.values()), list(ghost.values())
            same_error_modulo_id(got, nothing, real_ids, ghost_ids, f"{method} {template} with {real_ids}")
            # The owner sees the same nonexistent id the same way (B learns nothing from the answer).
            mine = await api.client.request(method, fill(template, ghost), headers=a.auth, **kwargs)
            same_error_modulo_id(mine, nothing, ghost_ids, ghost_ids, f"{method} {template} for the owner")
            cross += 1
    assert not missing, "routes need a sample id in PARAM_SAMPLES:\n" + "\n".join(missing)
    assert cross >= 45, cross

    # List and report routes (every GET without a path parameter) never show A's ids or tenant.
    listed = 0
    for method, template, _ in secured_routes(api):
        if method != "GET" or params_of(template):
            continue
        variants: list[dict[str, Any]] = [{}, {"limit": 100}]
        if template == "/v1/usage":
            variants = [{}, {"key_id": "all"}]
        elif template == "/v1/admin/keys":
            variants.append({"include_revoked": "true", "limit": 100})
        for params in variants:
            response = await api.client.get(template, headers=b.auth, params=params)
            assert response.status_code == 200, (template, params, response.text)
            leaked = [i for i in [*a_ids, TENANT_A] if i in response.text]
            assert not leaked, (template, params, leaked)
            listed += 1
    assert listed >= 19
    b_lists = {"/v1/transcriptions": [b_tr["id"]], "/v1/diarization": [b_dz["id"]], "/v1/jobs": [b_dz["id"], b_tr["id"]]}
    for path, expected in b_lists.items():
        assert [item["id"] for item in (await b.get(path)).json()["data"]] == expected, path
    # Id-valued query parameters: A's ids filter to nothing, A's key id is a 404 like any unknown key.
    for resource in owned["tr"] + owned["dz"]:
        assert (await b.get("/v1/webhooks/deliveries", resource_id=resource)).json()["data"] == []
    for key_id in owned["key"]:
        unknown_key = new_id("key")
        got = await api.client.get("/v1/usage", headers=b.auth, params={"key_id": key_id})
        nothing = await api.client.get("/v1/usage", headers=b.auth, params={"key_id": unknown_key})
        same_error_modulo_id(got, nothing, [key_id], [unknown_key], f"/v1/usage?key_id={key_id}")
        cross += 1

    # B's writes to its own tenant-wide things stay in B: no field names another tenant.
    for path, payload in (("/v1/admin/keys", {"name": "x", "scopes": ["stt"], "tenant": TENANT_A}),
                          ("/v1/admin/tenant", {"id": TENANT_A, "result_retention_days": 1})):
        response = await api.client.request("POST" if path.endswith("keys") else "PATCH", path, json=payload,
                                             headers=b.auth)
        assert_error(response, 422, "unknown_parameter")
    made = await api.client.post("/v1/admin/keys", json={"name": "b2", "scopes": ["stt"]}, headers=b.auth)
    assert made.status_code == 201 and made.json()["tenant"] == TENANT_B
    assert (await api.client.patch("/v1/admin/tenant", json={"result_retention_days": 1},
                                   headers=b.auth)).json()["id"] == TENANT_B
    assert (await api.client.post("/v1/webhooks/secret/rotate", headers=b.auth)).status_code == 200

    # Nothing of A's changed: objects, exports, audio files, deliveries, queue, keys, secret, tenant.
    after = await snapshot()
    assert after == before
    assert (await a.get("/v1/usage", key_id="all")).json()["data"], "A's usage is reported to A"
    print(f"cross-tenant id checks: {cross}, list checks: {listed}")

