"""Job audio storage (lexia.storage): one contract for the disk and S3 stores, the S3 one against moto's
S3-compatible server; and a job whose audio lives only in S3 end to end through the API and worker."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lexia.settings import AudioSettings
from lexia.storage import BlobStore, DiskStore, S3Store, open_store
from tests.conftest import bearer
from tests.harness import AppFactory
from tests.jobs_support import job_settings, stub_worker, wait_status, wav_bytes
from tests.test_stop import _free_port

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free port (its endpoint URL)."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def bucket(endpoint: str, name: str) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client


@pytest.fixture(params=["disk", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "disk":
        return DiskStore(tmp_path / "stored")
    endpoint = request.getfixturevalue("s3_server")
    name = f"contract-{time.monotonic_ns()}"
    bucket(endpoint, name)
    return open_store(AudioSettings(storage_backend="s3", s3_bucket=name, s3_prefix="audio/", s3_endpoint_url=endpoint,
                                    s3_region="us-east-1", storage_dir=str(tmp_path)))


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_a_store_keeps_reads_lists_and_deletes_job_audio(store: BlobStore, tmp_path: Path) -> None:
    content = os.urandom(3 << 20)  # more than one read chunk
    source = tmp_path / "upload.part"
    source.write_bytes(content)
    location = store.location("acme", "tr_1")
    assert location.endswith("acme/tr_1.audio")
    await store.put(source, location)
    assert not source.exists()  # consumed: moved or uploaded
    assert await store.exists(location)
    assert await collect(store.read(location)) == content
    local = await store.local(location, tmp_path / "scratch.audio")
    assert local.read_bytes() == content
    assert await store.stale(time.time() - 3600) == []  # too new to be an orphan
    assert await store.stale(time.time() + 60) == [location]
    await store.delete(location)
    await store.delete(location)  # gone already is fine
    assert not await store.exists(location)
    assert await store.stale(time.time() + 60) == []


def test_s3_needs_a_bucket() -> None:
    from lexia.settings import SettingsError, load_settings
    from tests.conftest import BASE_ENV

    with pytest.raises(SettingsError, match="LEXIA_S3_BUCKET"):
        load_settings({**BASE_ENV, "LEXIA_STORAGE_BACKEND": "s3"})
    s3 = S3Store(client=None, bucket="b")
    with pytest.raises(ValueError, match="not in bucket"):
        s3._key("s3://other/x.audio")


async def test_a_job_whose_audio_lives_in_s3_runs_end_to_end(
    serve_app: AppFactory, tmp_path: Path, s3_server: str
) -> None:
    client = bucket(s3_server, "lexia-jobs")
    settings = job_settings(tmp_path, LEXIA_STORAGE_BACKEND="s3", LEXIA_S3_BUCKET="lexia-jobs",
                            LEXIA_S3_ENDPOINT_URL=s3_server, LEXIA_S3_REGION="us-east-1")
    audio = wav_bytes(2.0, tmp_path / "a.wav")
    with stub_worker(settings) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        kept = (await api.client.post("/v1/transcriptions", files={"file": ("a.wav", audio, "audio/wav")},
                                      data={"audio_retention_hours": "2"}, headers=bearer(key))).json()
        dropped = (await api.client.post("/v1/transcriptions", files={"file": ("b.wav", audio, "audio/wav")},
                                         headers=bearer(key))).json()
        for job in (kept, dropped):
            done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed",))
            assert done["text"]
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="lexia-jobs").get("Contents", [])]
        assert keys == [f"acme/{kept['id']}.audio"]  # the unretained one was removed after processing
        download = await api.client.get(f"/v1/transcriptions/{kept['id']}/audio", headers=bearer(key))
        assert download.status_code == 200 and download.content == audio
        assert "a.wav" in download.headers["content-disposition"]
        assert (await api.client.delete(f"/v1/transcriptions/{kept['id']}", headers=bearer(key))).status_code == 200
        assert client.list_objects_v2(Bucket="lexia-jobs").get("Contents", []) == []
        gone = await api.client.get(f"/v1/transcriptions/{kept['id']}/audio", headers=bearer(key))
        assert gone.status_code == 410
    assert not any(p.suffix == ".audio" for p in tmp_path.rglob("*"))  # nothing of the jobs on local disk
