"""Bad input never reaches the database as a 500: NUL characters, dates out of range (API.md §1.8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bearer
from tests.harness import AppFactory, TestApp
from tests.jobs_support import job_settings, sql, wav_bytes
from tests.test_auth import assert_error

NUL = "\u0000"


@pytest.fixture
async def served(serve_app: AppFactory, tmp_path: Path) -> tuple[TestApp, str, bytes]:
    from lexia.queue import ListQueue

    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    _, key = await api.make_key()
    return api, key, wav_bytes(1.0, tmp_path / "a.wav")


@pytest.mark.parametrize(
    ("path", "fields", "param"),
    [
        ("/v1/transcriptions", {"prompt": f"hello{NUL}world"}, "prompt"),
        ("/v1/transcriptions", {"metadata": json.dumps({"ticket": f"47{NUL}11"})}, "metadata.ticket"),
        ("/v1/transcriptions", {"metadata": json.dumps({f"tic{NUL}ket": "4711"})}, "metadata"),
        ("/v1/transcriptions", {"keyterms_prompt": ["Lexia", f"Le{NUL}xia"]}, "keyterms_prompt.1"),
        ("/v1/transcriptions/sync", {"prompt": NUL}, "prompt"),
        ("/v1/diarization", {"metadata": json.dumps({"ticket": f"{NUL}"})}, "metadata.ticket"),
        ("/v1/diarization", {"metadata": json.dumps({f"{NUL}": "x"})}, "metadata"),
    ],
)
async def test_nul_in_a_multipart_text_field_is_422_naming_it(
    served: tuple[TestApp, str, bytes], path: str, fields: dict[str, Any], param: str
) -> None:
    api, key, audio = served
    response = await api.client.post(path, files={"file": ("a.wav", audio, "audio/wav")}, data=fields,
                                     headers=bearer(key))
    error = assert_error(response, 422, "validation_error", param)
    assert NUL not in error["message"]
    assert sql("SELECT count(*) FROM jobs") == [(0,)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"audio_url": "https://example.com/a.wav", "prompt": f"a{NUL}"}, "prompt"),
        ({"audio_url": "https://example.com/a.wav", "metadata": {"k": f"v{NUL}"}}, "metadata.k"),
    ],
)
async def test_nul_in_a_json_job_body_is_422(served: tuple[TestApp, str, bytes], body: dict[str, Any],
                                             param: str) -> None:
    api, key, _ = served
    assert_error(await api.client.post("/v1/transcriptions", json=body, headers=bearer(key)), 422,
                 "validation_error", param)


async def test_nul_in_a_key_name_is_422_on_create_and_patch(api: TestApp) -> None:
    _, admin = await api.make_key()
    created = await api.client.post("/v1/admin/keys", json={"name": f"ci{NUL}", "scopes": ["stt"]},
                                    headers=bearer(admin))
    assert_error(created, 422, "validation_error", "name")
    other = (await api.client.post("/v1/admin/keys", json={"name": "ci", "scopes": ["stt"]},
                                   headers=bearer(admin))).json()
    patched = await api.client.patch(f"/v1/admin/keys/{other['id']}", json={"name": f"{NUL}x"}, headers=bearer(admin))
    assert_error(patched, 422, "validation_error", "name")
    assert sql("SELECT name FROM api_keys WHERE id = %s", other["id"]) == [("ci",)]


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59Z", "9999-01-01T00:00:00Z"])
async def test_expiry_beyond_the_supported_range_is_422(api: TestApp, expires_at: str) -> None:
    _, admin = await api.make_key()
    created = await api.client.post("/v1/admin/keys", json={"name": "far", "scopes": ["stt"], "expires_at": expires_at},
                                    headers=bearer(admin))
    assert_error(created, 422, "validation_error", "expires_at")
    first = (await api.client.post("/v1/admin/keys", json={"name": "near", "scopes": ["stt"]},
                                   headers=bearer(admin))).json()
    patched = await api.client.patch(f"/v1/admin/keys/{first['id']}", json={"expires_at": expires_at},
                                     headers=bearer(admin))
    assert_error(patched, 422, "validation_error", "expires_at")
