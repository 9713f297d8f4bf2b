"""Settings: flat LEXIA_* environment variables grouped into frozen section structs."""

from __future__ import annotations

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


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Which engines run and with which models."""

    mode: Literal["auto", "fake", "real"] = "auto"
    llm_enabled: bool = True
    stt_enabled: bool = True
    diarization_enabled: bool = True
    llm_model: str = ""
    llm_served_name: str = ""
    llm_aliases: tuple[str, ...] = ()
    llm_max_model_len: int = 0
    llm_gpu_memory_utilization: float = 0.60
    llm_tool_parser: str = ""
    llm_max_n: int = 8
    llm_max_queued: int = 256
    llm_dtype: str = "auto"
    llm_quantization: str = ""
    llm_tensor_parallel_size: int = 1
    llm_chat_template: str = ""
    llm_enforce_eager: bool = False
    llm_max_num_seqs: int = 0
    stt_model: str = "large-v3"
    stt_model_aliases: tuple[str, ...] = ("whisper-1",)
    stt_compute_type: str = "float16"
    stt_beam_size: int = 5
    stt_vad: bool = True
    stt_default_language: str = "auto"
    stt_device: str = "auto"
    stt_device_index: int = 0
    stt_cpu_threads: int = 0
    stt_num_workers: int = 1
    stt_batch_size: int = 1
    stt_temperature_fallback: bool = True
    diarization_model: str = "pyannote/speaker-diarization-community-1"
    diarization_device: str = "auto"
    max_speakers: int = 20
    # Fakes only: wall-clock seconds spent per second of audio (0 = as fast as possible), so
    # development and tests can watch progress, cancel and kill workers mid-job.
    fake_delay: float = 0.0


class AudioSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Audio intake, storage and duration limits."""

    storage_dir: str = "./data/audio"
    max_upload_bytes: int = 2 * 1024**3
    max_audio_seconds: float = 14_400
    sync_max_audio_seconds: float = 1_800
    sync_timeout_seconds: float = 600
    fetch_timeout_seconds: float = 300
    ssrf_allowlist: tuple[str, ...] = ()


class JobSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Async jobs and idempotency."""

    queue_max_depth: int = 1000
    max_attempts: int = 3
    timeout_seconds: float = 3600
    idempotency_ttl_seconds: int = 86_400
    # A running job renews its lease this often; a job whose lease has lapsed (its worker died)
    # is re-enqueued by the sweeper.
    lease_seconds: float = 30
    sweep_interval_seconds: float = 10
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


# Section name -> {field name -> environment variable}.
_ENV_NAMES: dict[str, dict[str, str]] = {
    "server": {
        "env": "LEXIA_ENV",
        "host": "LEXIA_HOST",
        "port": "LEXIA_PORT",
        "docs_enabled": "LEXIA_DOCS_ENABLED",
        "cors_origins": "LEXIA_CORS_ORIGINS",
        "log_level": "LEXIA_LOG_LEVEL",
        "metrics_token": "LEXIA_METRICS_TOKEN",
        "metrics_per_key": "LEXIA_METRICS_PER_KEY",
        "max_json_bytes": "LEXIA_MAX_JSON_BYTES",
    },
    "data": {
        "database_url": "LEXIA_DATABASE_URL",
        "redis_url": "LEXIA_REDIS_URL",
        "db_pool_size": "LEXIA_DB_POOL_SIZE",
    },
    "security": {
        "key_pepper": "LEXIA_KEY_PEPPER",
        "key_pepper_previous": "LEXIA_KEY_PEPPER_PREVIOUS",
        "key_cache_seconds": "LEXIA_KEY_CACHE_SECONDS",
    },
    "limits": {
        "enabled": "LEXIA_RATE_LIMIT_ENABLED",
        "fail_open": "LEXIA_RATE_LIMIT_FAIL_OPEN",
        "requests_per_minute": "LEXIA_DEFAULT_REQUESTS_PER_MINUTE",
        "tokens_per_minute": "LEXIA_DEFAULT_TOKENS_PER_MINUTE",
        "audio_seconds_per_hour": "LEXIA_DEFAULT_AUDIO_SECONDS_PER_HOUR",
        "max_concurrent_jobs": "LEXIA_DEFAULT_MAX_CONCURRENT_JOBS",
        "concurrency_retry_after_seconds": "LEXIA_CONCURRENCY_RETRY_AFTER_SECONDS",
        "lease_fraction": "LEXIA_RATE_LIMIT_LEASE_FRACTION",
        "lease_seconds": "LEXIA_RATE_LIMIT_LEASE_SECONDS",
    },
    "engines": {
        "mode": "LEXIA_ENGINES",
        "llm_enabled": "LEXIA_LLM_ENABLED",
        "stt_enabled": "LEXIA_STT_ENABLED",
        "diarization_enabled": "LEXIA_DIARIZATION_ENABLED",
        "llm_model": "LEXIA_LLM_MODEL",
        "llm_served_name": "LEXIA_LLM_SERVED_NAME",
        "llm_aliases": "LEXIA_LLM_ALIASES",
        "llm_max_model_len": "LEXIA_LLM_MAX_MODEL_LEN",
        "llm_gpu_memory_utilization": "LEXIA_LLM_GPU_MEMORY_UTILIZATION",
        "llm_tool_parser": "LEXIA_LLM_TOOL_PARSER",
        "llm_max_n": "LEXIA_LLM_MAX_N",
        "llm_max_queued": "LEXIA_LLM_MAX_QUEUED",
        "llm_dtype": "LEXIA_LLM_DTYPE",
        "llm_quantization": "LEXIA_LLM_QUANTIZATION",
        "llm_tensor_parallel_size": "LEXIA_LLM_TENSOR_PARALLEL_SIZE",
        "llm_chat_template": "LEXIA_LLM_CHAT_TEMPLATE",
        "llm_enforce_eager": "LEXIA_LLM_ENFORCE_EAGER",
        "llm_max_num_seqs": "LEXIA_LLM_MAX_NUM_SEQS",
        "stt_model": "LEXIA_STT_MODEL",
        "stt_model_aliases": "LEXIA_STT_MODEL_ALIASES",
        "stt_compute_type": "LEXIA_STT_COMPUTE_TYPE",
        "stt_beam_size": "LEXIA_STT_BEAM_SIZE",
        "stt_vad": "LEXIA_STT_VAD",
        "stt_default_language": "LEXIA_STT_DEFAULT_LANGUAGE",
        "stt_device": "LEXIA_STT_DEVICE",
        "stt_device_index": "LEXIA_STT_DEVICE_INDEX",
        "stt_cpu_threads": "LEXIA_STT_CPU_THREADS",
        "stt_num_workers": "LEXIA_STT_NUM_WORKERS",
        "stt_batch_size": "LEXIA_STT_BATCH_SIZE",
        "stt_temperature_fallback": "LEXIA_STT_TEMPERATURE_FALLBACK",
        "diarization_model": "LEXIA_DIARIZATION_MODEL",
        "diarization_device": "LEXIA_DIARIZATION_DEVICE",
        "max_speakers": "LEXIA_MAX_SPEAKERS",
        "fake_delay": "LEXIA_FAKE_ENGINE_DELAY",
    },
    "audio": {
        "storage_dir": "LEXIA_STORAGE_DIR",
        "max_upload_bytes": "LEXIA_MAX_UPLOAD_BYTES",
        "max_audio_seconds": "LEXIA_MAX_AUDIO_SECONDS",
        "sync_max_audio_seconds": "LEXIA_SYNC_MAX_AUDIO_SECONDS",
        "sync_timeout_seconds": "LEXIA_SYNC_TIMEOUT_SECONDS",
        "fetch_timeout_seconds": "LEXIA_AUDIO_FETCH_TIMEOUT_SECONDS",
        "ssrf_allowlist": "LEXIA_SSRF_ALLOWLIST",
    },
    "jobs": {
        "queue_max_depth": "LEXIA_QUEUE_MAX_DEPTH",
        "max_attempts": "LEXIA_JOB_MAX_ATTEMPTS",
        "timeout_seconds": "LEXIA_JOB_TIMEOUT_SECONDS",
        "idempotency_ttl_seconds": "LEXIA_IDEMPOTENCY_TTL_SECONDS",
        "lease_seconds": "LEXIA_JOB_LEASE_SECONDS",
        "sweep_interval_seconds": "LEXIA_JOB_SWEEP_SECONDS",
        "requeue_after_seconds": "LEXIA_JOB_REQUEUE_SECONDS",
        "progress_interval_seconds": "LEXIA_JOB_PROGRESS_SECONDS",
        "poll_seconds": "LEXIA_WORKER_POLL_SECONDS",
    },
    "webhooks": {
        "timeout_seconds": "LEXIA_WEBHOOK_TIMEOUT_SECONDS",
        "retry_schedule": "LEXIA_WEBHOOK_RETRY_SCHEDULE",
        "secret_grace_hours": "LEXIA_WEBHOOK_SECRET_GRACE_HOURS",
    },
    "usage": {
        "flush_interval_seconds": "LEXIA_USAGE_FLUSH_SECONDS",
        "batch_size": "LEXIA_USAGE_BATCH_SIZE",
    },
    "retention": {
        "audio_hours": "LEXIA_RETENTION_AUDIO_HOURS",
        "result_days": "LEXIA_RETENTION_RESULT_DAYS",
        "purge_interval_seconds": "LEXIA_RETENTION_PURGE_SECONDS",
    },
}

_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "server": ServerSettings,
    "data": DataSettings,
    "security": SecuritySettings,
    "limits": LimitSettings,
    "engines": EngineSettings,
    "audio": AudioSettings,
    "jobs": JobSettings,
    "webhooks": WebhookSettings,
    "usage": UsageSettings,
    "retention": RetentionSettings,
}

_TUPLE_FIELDS = {"cors_origins", "llm_aliases", "stt_model_aliases", "ssrf_allowlist"}


def _dec_hook(kind: type, obj: Any) -> Any:
    if kind is Secret:
        return Secret(obj)
    raise TypeError(f"cannot decode {kind}")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from an environment mapping; raise SettingsError with the reason."""
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, dict[str, Any]] = {}
    for section, names in _ENV_NAMES.items():
        values: dict[str, Any] = {}
        for field, var in names.items():
            if var not in env:
                continue
            value: Any = env[var]
            if field in _TUPLE_FIELDS:
                value = [part.strip() for part in value.split(",") if part.strip()]
            values[field] = value
        raw[section] = values
    sections: dict[str, Any] = {}
    for section, values in raw.items():
        try:
            sections[section] = msgspec.convert(
                values, _SECTIONS[section], strict=False, dec_hook=_dec_hook
            )
        except msgspec.ValidationError as exc:
            raise SettingsError(_explain(section, str(exc))) from None
    settings = Settings(**sections)
    _check(settings, env)
    return settings


def _explain(section: str, message: str) -> str:
    if "$." in message:
        field = message.rsplit("$.", 1)[1].rstrip("`")
        var = _ENV_NAMES[section].get(field, field)
        return f"{var}: {message.split(' - at ', maxsplit=1)[0]}"
    return message


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
    if not 0 < settings.engines.llm_gpu_memory_utilization <= 1:
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
