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
    stt_model: str = "large-v3"
    stt_model_aliases: tuple[str, ...] = ("whisper-1",)
    stt_compute_type: str = "float16"
    stt_beam_size: int = 5
    stt_vad: bool = True
    stt_default_language: str = "auto"
    diarization_model: str = "pyannote/speaker-diarization-community-1"
    max_speakers: int = 20


class UsageSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Usage-ledger batching."""

    flush_interval_seconds: float = 1.0
    batch_size: int = 500


class RetentionSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tenant defaults for retention."""

    audio_hours: int = 0
    result_days: int = 30


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """All settings of one Lexia process."""

    server: ServerSettings = ServerSettings()
    data: DataSettings = DataSettings()
    security: SecuritySettings = SecuritySettings()
    limits: LimitSettings = LimitSettings()
    engines: EngineSettings = EngineSettings()
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
        "stt_model": "LEXIA_STT_MODEL",
        "stt_model_aliases": "LEXIA_STT_MODEL_ALIASES",
        "stt_compute_type": "LEXIA_STT_COMPUTE_TYPE",
        "stt_beam_size": "LEXIA_STT_BEAM_SIZE",
        "stt_vad": "LEXIA_STT_VAD",
        "stt_default_language": "LEXIA_STT_DEFAULT_LANGUAGE",
        "diarization_model": "LEXIA_DIARIZATION_MODEL",
        "max_speakers": "LEXIA_MAX_SPEAKERS",
    },
    "usage": {
        "flush_interval_seconds": "LEXIA_USAGE_FLUSH_SECONDS",
        "batch_size": "LEXIA_USAGE_BATCH_SIZE",
    },
    "retention": {
        "audio_hours": "LEXIA_RETENTION_AUDIO_HOURS",
        "result_days": "LEXIA_RETENTION_RESULT_DAYS",
    },
}

_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "server": ServerSettings,
    "data": DataSettings,
    "security": SecuritySettings,
    "limits": LimitSettings,
    "engines": EngineSettings,
    "usage": UsageSettings,
    "retention": RetentionSettings,
}

_TUPLE_FIELDS = {"cors_origins", "llm_aliases", "stt_model_aliases"}


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
        return f"{var}: {message.split(' - at ')[0]}"
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
    if settings.server.port <= 0 or settings.server.port > 65535:
        raise SettingsError("LEXIA_PORT must be between 1 and 65535")


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a simple KEY=VALUE .env file (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
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
