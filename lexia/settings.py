"""Settings: flat LEXIA_* environment variables grouped into frozen section structs."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

VERSION = "1.0.0"
MIN_PEPPER_BYTES = 32


class SettingsError(ValueError):
    """Raised when the environment does not describe a startable configuration."""


class Secret(str):
    """A string whose repr and str-formatting in logs never reveal the value."""

    def __repr__(self) -> str:
        return "Secret('********')" if self else "Secret('')"

    def reveal(self) -> str:
        """Return the plain value (for HMAC keys and tokens only)."""
        return str.__str__(self)


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how the HTTP server runs."""

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    docs_enabled: bool = True
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    metrics_token: Secret = Secret("")
    metrics_per_key: bool = False
    max_json_bytes: int = 16 * 1024 * 1024
    # On a stop signal: in-flight requests and running jobs get this long to finish; then sync jobs
    # are stopped (their requests answered 503) and running async jobs handed back to the queue.
    shutdown_grace_seconds: float = 20.0
    # State kept by the deployment itself: supervisord's logs (logs/) and control socket (run/).
    data_dir: str = "./data"


class DataSettings(msgspec.Struct, frozen=True, kw_only=True):
    """PostgreSQL and Redis connections."""

    database_url: Secret = Secret("postgresql+psycopg://postgres@127.0.0.1:5432/lexia")
    redis_url: Secret = Secret("redis://127.0.0.1:6379/0")
    db_pool_size: int = 10


class SecuritySettings(msgspec.Struct, frozen=True, kw_only=True):
    """API-key hashing."""

    key_pepper: Secret = Secret("")
    key_pepper_previous: Secret = Secret("")
    key_cache_seconds: float = 1.0


class LimitSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Per-key rate-limit defaults (0 = unlimited)."""

    enabled: bool = True
    fail_open: bool = True
    requests_per_minute: int = 300
    tokens_per_minute: int = 200_000
    audio_seconds_per_hour: int = 36_000
    max_concurrent_jobs: int = 16
    concurrency_retry_after_seconds: int = 10
    # Keys allowed many requests per minute admit from a small local lease of their allowance
    # (this fraction of the per-minute limit, taken from Redis, unused parts given back after
    # lease_seconds) instead of one Redis call per request. A lease below 2 requests is not used.
    lease_fraction: float = 0.001
    lease_seconds: float = 1.0


class LLMSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The LLM engine (LEXIA_LLM_*)."""

    enabled: bool = True
    backend: str = "vllm"
    model: str = ""
    served_name: str = ""
    aliases: tuple[str, ...] = ()
    max_model_len: int = 0
    gpu_memory_utilization: float = 0.60
    tool_parser: str = ""
    max_n: int = 8
    max_queued: int = 256
    dtype: str = "auto"
    quantization: str = ""
    tensor_parallel_size: int = 1
    chat_template: str = ""
    enforce_eager: bool = False
    max_num_seqs: int = 0


class STTSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The speech-to-text engine (LEXIA_STT_*)."""

    enabled: bool = True
    backend: str = "whisper"
    model: str = "auto"  # large-v3 on a GPU, base on CPU (lexia.engines.models.STT_AUTO)
    model_aliases: tuple[str, ...] = ("whisper-1",)
    compute_type: str = "float16"
    beam_size: int = 5
    vad: bool = True
    default_language: str = "auto"
    device: str = "auto"
    device_index: int = 0
    cpu_threads: int = 0
    num_workers: int = 1
    batch_size: int = 1
    temperature_fallback: bool = True


class DiarizationSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The speaker-diarization engine (LEXIA_DIARIZATION_*)."""

    enabled: bool = True
    backend: str = "pyannote"
    model: str = "pyannote/speaker-diarization-community-1"
    device: str = "auto"
    max_speakers: int = 20


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Which engines run (real or fake), with one nested section per engine kind."""

    mode: Literal["auto", "fake", "real"] = "auto"
    llm: LLMSettings = LLMSettings()
    stt: STTSettings = STTSettings()
    diarization: DiarizationSettings = DiarizationSettings()
    # The commits `bin/lexia-models pull` fetched (lexia.engines.models reads it as it starts).
    models_lock: str = "data/models.lock.json"
    # Fakes only: wall-clock seconds spent per second of audio (0 = as fast as possible), so
    # development and tests can watch progress, cancel and kill workers mid-job.
    fake_delay: float = 0.0

    def enabled(self) -> dict[str, bool]:
        """Engine kind -> whether it is enabled."""
        return {"llm": self.llm.enabled, "stt": self.stt.enabled, "diarization": self.diarization.enabled}


class AudioSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Audio intake, storage and duration limits."""

    storage_dir: str = "./data/audio"
    max_upload_bytes: int = 2 * 1024**3
    max_audio_seconds: float = 14_400
    sync_max_audio_seconds: float = 1_800
    sync_timeout_seconds: float = 600
    fetch_timeout_seconds: float = 300
    ssrf_allowlist: tuple[str, ...] = ()
    # Where jobs' retained audio lives: `disk` (under storage_dir) or `s3` (one bucket shared by
    # every pod; uploads are still spooled under storage_dir first). AWS_* variables or an
    # instance role give the credentials.
    storage_backend: Literal["disk", "s3"] = "disk"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""


class JobSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Async jobs and idempotency."""

    queue_max_depth: int = 1000
    max_attempts: int = 3
    timeout_seconds: float = 3600
    idempotency_ttl_seconds: int = 86_400
    # A running job renews its lease this often; a job whose lease has lapsed (its worker died)
    # is re-enqueued by the sweeper.
    lease_seconds: float = 10
    sweep_interval_seconds: float = 2
    # A queued job not started this long after its last enqueue is enqueued again (the
    # interval doubles with each re-enqueue), so a lost message never strands a job.
    requeue_after_seconds: float = 120
    progress_interval_seconds: float = 1.0
    # Longest pause of an idle worker between two looks at its queues (Dramatiq's worker timeout).
    poll_seconds: float = 0.05


class WebhookSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Webhook delivery."""

    timeout_seconds: float = 10
    retry_schedule: str = "30s,2m,5m,15m,30m,1h,2h,6h,12h"
    secret_grace_hours: float = 24

    def retry_delays(self) -> tuple[float, ...]:
        """The schedule in seconds: `30s,2m,1h,1d` (a bare number is seconds); ValueError if malformed."""
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        delays: list[float] = []
        for part in self.retry_schedule.split(","):
            text = part.strip().lower()
            if not text:
                continue
            unit = next((u for u in ("ms", "s", "m", "h", "d") if text.endswith(u)), "")
            number = text[: len(text) - len(unit)] if unit else text
            try:
                value = float(number) * units.get(unit, 1.0)
            except ValueError:
                raise ValueError(f"bad delay {part.strip()!r}") from None
            if not value >= 0:
                raise ValueError(f"bad delay {part.strip()!r}")
            delays.append(value)
        return tuple(delays)


class UsageSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Usage-ledger batching."""

    flush_interval_seconds: float = 1.0
    batch_size: int = 2000


class RetentionSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tenant defaults for retention."""

    audio_hours: int = 0
    result_days: int = 30
    purge_interval_seconds: float = 300


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """All settings of one Lexia process."""

    server: ServerSettings = ServerSettings()
    data: DataSettings = DataSettings()
    security: SecuritySettings = SecuritySettings()
    limits: LimitSettings = LimitSettings()
    engines: EngineSettings = EngineSettings()
    audio: AudioSettings = AudioSettings()
    jobs: JobSettings = JobSettings()
    webhooks: WebhookSettings = WebhookSettings()
    usage: UsageSettings = UsageSettings()
    retention: RetentionSettings = RetentionSettings()

    @property
    def version(self) -> str:
        """The API version string."""
        return VERSION


# Environment variable -> dotted path of the field it sets (API.md §9).
ENV_FIELDS: dict[str, str] = {
    "LEXIA_ENV": "server.env",
    "LEXIA_HOST": "server.host",
    "LEXIA_PORT": "server.port",
    "LEXIA_DOCS_ENABLED": "server.docs_enabled",
    "LEXIA_CORS_ORIGINS": "server.cors_origins",
    "LEXIA_LOG_LEVEL": "server.log_level",
    "LEXIA_METRICS_TOKEN": "server.metrics_token",
    "LEXIA_METRICS_PER_KEY": "server.metrics_per_key",
    "LEXIA_MAX_JSON_BYTES": "server.max_json_bytes",
    "LEXIA_SHUTDOWN_GRACE_SECONDS": "server.shutdown_grace_seconds",
    "LEXIA_DATA_DIR": "server.data_dir",
    "LEXIA_MODELS_LOCK": "engines.models_lock",
    "LEXIA_DATABASE_URL": "data.database_url",
    "LEXIA_REDIS_URL": "data.redis_url",
    "LEXIA_DB_POOL_SIZE": "data.db_pool_size",
    "LEXIA_KEY_PEPPER": "security.key_pepper",
    "LEXIA_KEY_PEPPER_PREVIOUS": "security.key_pepper_previous",
    "LEXIA_KEY_CACHE_SECONDS": "security.key_cache_seconds",
    "LEXIA_RATE_LIMIT_ENABLED": "limits.enabled",
    "LEXIA_RATE_LIMIT_FAIL_OPEN": "limits.fail_open",
    "LEXIA_DEFAULT_REQUESTS_PER_MINUTE": "limits.requests_per_minute",
    "LEXIA_DEFAULT_TOKENS_PER_MINUTE": "limits.tokens_per_minute",
    "LEXIA_DEFAULT_AUDIO_SECONDS_PER_HOUR": "limits.audio_seconds_per_hour",
    "LEXIA_DEFAULT_MAX_CONCURRENT_JOBS": "limits.max_concurrent_jobs",
    "LEXIA_CONCURRENCY_RETRY_AFTER_SECONDS": "limits.concurrency_retry_after_seconds",
    "LEXIA_RATE_LIMIT_LEASE_FRACTION": "limits.lease_fraction",
    "LEXIA_RATE_LIMIT_LEASE_SECONDS": "limits.lease_seconds",
    "LEXIA_ENGINES": "engines.mode",
    "LEXIA_FAKE_ENGINE_DELAY": "engines.fake_delay",
    "LEXIA_LLM_ENABLED": "engines.llm.enabled",
    "LEXIA_LLM_BACKEND": "engines.llm.backend",
    "LEXIA_LLM_MODEL": "engines.llm.model",
    "LEXIA_LLM_SERVED_NAME": "engines.llm.served_name",
    "LEXIA_LLM_ALIASES": "engines.llm.aliases",
    "LEXIA_LLM_MAX_MODEL_LEN": "engines.llm.max_model_len",
    "LEXIA_LLM_GPU_MEMORY_UTILIZATION": "engines.llm.gpu_memory_utilization",
    "LEXIA_LLM_TOOL_PARSER": "engines.llm.tool_parser",
    "LEXIA_LLM_MAX_N": "engines.llm.max_n",
    "LEXIA_LLM_MAX_QUEUED": "engines.llm.max_queued",
    "LEXIA_LLM_DTYPE": "engines.llm.dtype",
    "LEXIA_LLM_QUANTIZATION": "engines.llm.quantization",
    "LEXIA_LLM_TENSOR_PARALLEL_SIZE": "engines.llm.tensor_parallel_size",
    "LEXIA_LLM_CHAT_TEMPLATE": "engines.llm.chat_template",
    "LEXIA_LLM_ENFORCE_EAGER": "engines.llm.enforce_eager",
    "LEXIA_LLM_MAX_NUM_SEQS": "engines.llm.max_num_seqs",
    "LEXIA_STT_ENABLED": "engines.stt.enabled",
    "LEXIA_STT_BACKEND": "engines.stt.backend",
    "LEXIA_STT_MODEL": "engines.stt.model",
    "LEXIA_STT_MODEL_ALIASES": "engines.stt.model_aliases",
    "LEXIA_STT_COMPUTE_TYPE": "engines.stt.compute_type",
    "LEXIA_STT_BEAM_SIZE": "engines.stt.beam_size",
    "LEXIA_STT_VAD": "engines.stt.vad",
    "LEXIA_STT_DEFAULT_LANGUAGE": "engines.stt.default_language",
    "LEXIA_STT_DEVICE": "engines.stt.device",
    "LEXIA_STT_DEVICE_INDEX": "engines.stt.device_index",
    "LEXIA_STT_CPU_THREADS": "engines.stt.cpu_threads",
    "LEXIA_STT_NUM_WORKERS": "engines.stt.num_workers",
    "LEXIA_STT_BATCH_SIZE": "engines.stt.batch_size",
    "LEXIA_STT_TEMPERATURE_FALLBACK": "engines.stt.temperature_fallback",
    "LEXIA_DIARIZATION_ENABLED": "engines.diarization.enabled",
    "LEXIA_DIARIZATION_BACKEND": "engines.diarization.backend",
    "LEXIA_DIARIZATION_MODEL": "engines.diarization.model",
    "LEXIA_DIARIZATION_DEVICE": "engines.diarization.device",
    "LEXIA_MAX_SPEAKERS": "engines.diarization.max_speakers",
    "LEXIA_STORAGE_DIR": "audio.storage_dir",
    "LEXIA_STORAGE_BACKEND": "audio.storage_backend",
    "LEXIA_S3_BUCKET": "audio.s3_bucket",
    "LEXIA_S3_PREFIX": "audio.s3_prefix",
    "LEXIA_S3_ENDPOINT_URL": "audio.s3_endpoint_url",
    "LEXIA_S3_REGION": "audio.s3_region",
    "LEXIA_MAX_UPLOAD_BYTES": "audio.max_upload_bytes",
    "LEXIA_MAX_AUDIO_SECONDS": "audio.max_audio_seconds",
    "LEXIA_SYNC_MAX_AUDIO_SECONDS": "audio.sync_max_audio_seconds",
    "LEXIA_SYNC_TIMEOUT_SECONDS": "audio.sync_timeout_seconds",
    "LEXIA_AUDIO_FETCH_TIMEOUT_SECONDS": "audio.fetch_timeout_seconds",
    "LEXIA_SSRF_ALLOWLIST": "audio.ssrf_allowlist",
    "LEXIA_QUEUE_MAX_DEPTH": "jobs.queue_max_depth",
    "LEXIA_JOB_MAX_ATTEMPTS": "jobs.max_attempts",
    "LEXIA_JOB_TIMEOUT_SECONDS": "jobs.timeout_seconds",
    "LEXIA_IDEMPOTENCY_TTL_SECONDS": "jobs.idempotency_ttl_seconds",
    "LEXIA_JOB_LEASE_SECONDS": "jobs.lease_seconds",
    "LEXIA_JOB_SWEEP_SECONDS": "jobs.sweep_interval_seconds",
    "LEXIA_JOB_REQUEUE_SECONDS": "jobs.requeue_after_seconds",
    "LEXIA_JOB_PROGRESS_SECONDS": "jobs.progress_interval_seconds",
    "LEXIA_WORKER_POLL_SECONDS": "jobs.poll_seconds",
    "LEXIA_WEBHOOK_TIMEOUT_SECONDS": "webhooks.timeout_seconds",
    "LEXIA_WEBHOOK_RETRY_SCHEDULE": "webhooks.retry_schedule",
    "LEXIA_WEBHOOK_SECRET_GRACE_HOURS": "webhooks.secret_grace_hours",
    "LEXIA_USAGE_FLUSH_SECONDS": "usage.flush_interval_seconds",
    "LEXIA_USAGE_BATCH_SIZE": "usage.batch_size",
    "LEXIA_RETENTION_AUDIO_HOURS": "retention.audio_hours",
    "LEXIA_RETENTION_RESULT_DAYS": "retention.result_days",
    "LEXIA_RETENTION_PURGE_SECONDS": "retention.purge_interval_seconds",
}
_FIELD_ENV = {path: var for var, path in ENV_FIELDS.items()}
_LIST_FIELDS = {"server.cors_origins", "engines.llm.aliases", "engines.stt.model_aliases", "audio.ssrf_allowlist"}
# LEXIA_* names read by the project's own tools rather than the server (tests, benchmarks, scripts).
TOOL_PREFIXES = ("LEXIA_TEST_", "LEXIA_BENCH_")


def _dec_hook(kind: type, obj: Any) -> Any:
    if kind is Secret:
        return Secret(obj)
    raise TypeError(f"cannot decode {kind}")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from an environment mapping; raise SettingsError naming the variable at fault."""
    env = dict(os.environ if environ is None else environ)
    tree: dict[str, Any] = {}
    for var, path in ENV_FIELDS.items():
        if var not in env:
            continue
        value: Any = env[var]
        if path in _LIST_FIELDS:
            value = [part.strip() for part in value.split(",") if part.strip()]
        *parents, name = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value
    try:
        settings = msgspec.convert(tree, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc))) from None
    _check(settings, env)
    return settings


def _explain(message: str) -> str:
    """msgspec's `... - at `$.engines.stt.model`` as `LEXIA_STT_MODEL: ...`."""
    if " - at `$." in message:
        text, _, where = message.partition(" - at `$.")
        path = where.rstrip("`")
        return f"{_FIELD_ENV.get(path, path)}: {text}"
    return message


def warn_unknown_variables(environ: Mapping[str, str]) -> None:
    """Log one warning per LEXIA_* variable no setting reads (a typo is otherwise silently ignored)."""
    for name, close in unknown_variables(environ):
        hint = f"; did you mean {close}?" if close else ""
        logging.getLogger("lexia.settings").warning("%s is not a Lexia setting and is ignored%s", name, hint)


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """LEXIA_* variables no setting reads, each with the closest known name (a likely typo) or None."""
    known = [name.removeprefix("LEXIA_") for name in ENV_FIELDS]  # the shared prefix says nothing
    found: list[tuple[str, str | None]] = []
    for var in sorted(environ):
        if not var.startswith("LEXIA_") or var in ENV_FIELDS or var.startswith(TOOL_PREFIXES):
            continue
        close = difflib.get_close_matches(var.removeprefix("LEXIA_"), known, n=1, cutoff=0.75)
        found.append((var, f"LEXIA_{close[0]}" if close else None))
    return found


def _check(settings: Settings, env: Mapping[str, str]) -> None:
    if settings.server.env == "production":
        pepper = settings.security.key_pepper.reveal().encode()
        if not pepper:
            raise SettingsError(
                "LEXIA_KEY_PEPPER is required in production (at least 32 random bytes; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if len(pepper) < MIN_PEPPER_BYTES:
            raise SettingsError(
                f"LEXIA_KEY_PEPPER is too weak: {len(pepper)} bytes, production needs at least "
                f"{MIN_PEPPER_BYTES}"
            )
        if "LEXIA_DOCS_ENABLED" not in env:
            raise SettingsError(
                "LEXIA_DOCS_ENABLED must be set explicitly in production (true or false)"
            )
    elif not settings.security.key_pepper:
        raise SettingsError(
            "LEXIA_KEY_PEPPER is not set: run `make start` once (it writes one into .env) "
            "or export a random value of at least 32 bytes"
        )
    if settings.audio.storage_backend == "s3" and not settings.audio.s3_bucket:
        raise SettingsError("LEXIA_STORAGE_BACKEND=s3 needs LEXIA_S3_BUCKET")
    if not 0 < settings.engines.llm.gpu_memory_utilization <= 1:
        raise SettingsError("LEXIA_LLM_GPU_MEMORY_UTILIZATION must be in (0, 1]")
    if not 0 <= settings.limits.lease_fraction <= 0.1 or settings.limits.lease_seconds <= 0:
        raise SettingsError(
            "LEXIA_RATE_LIMIT_LEASE_FRACTION must be in [0, 0.1] (0 = off) and "
            "LEXIA_RATE_LIMIT_LEASE_SECONDS > 0"
        )
    if settings.server.port <= 0 or settings.server.port > 65535:
        raise SettingsError("LEXIA_PORT must be between 1 and 65535")
    try:
        settings.webhooks.retry_delays()
    except ValueError as exc:
        raise SettingsError(f"LEXIA_WEBHOOK_RETRY_SCHEDULE: {exc} (use e.g. 30s,2m,1h)") from None
    if settings.jobs.lease_seconds <= 0 or settings.jobs.max_attempts < 1:
        raise SettingsError("LEXIA_JOB_LEASE_SECONDS must be > 0 and LEXIA_JOB_MAX_ATTEMPTS >= 1")


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a simple KEY=VALUE .env file (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def environment_with_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """The process environment over the .env file (real environment variables win)."""
    merged = read_dotenv(path)
    merged.update(os.environ)
    return merged
