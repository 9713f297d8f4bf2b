"""load_settings: pure, typed, masked secrets, production refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lexia.settings import SettingsError, load_settings, read_dotenv

STRONG = "s" * 32


def test_defaults_follow_the_contract() -> None:
    settings = load_settings({"LEXIA_KEY_PEPPER": STRONG})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert settings.data.database_url.reveal() == "postgresql+psycopg://postgres@127.0.0.1:5432/lexia"
    assert settings.data.redis_url.reveal() == "redis://127.0.0.1:6379/0"
    assert settings.engines.mode == "auto"
    assert settings.limits.requests_per_minute == 300 and settings.limits.tokens_per_minute == 200_000
    assert settings.audio.max_upload_bytes == 2 * 1024**3
    assert settings.engines.stt.model_aliases == ("whisper-1",)


def test_values_are_converted_and_lists_split() -> None:
    settings = load_settings(
        {"LEXIA_KEY_PEPPER": STRONG, "LEXIA_PORT": "9001", "LEXIA_RATE_LIMIT_ENABLED": "false",
         "LEXIA_CORS_ORIGINS": "https://a.example, https://b.example", "LEXIA_ENGINES": "fake"}
    )
    assert settings.server.port == 9001
    assert settings.limits.enabled is False
    assert settings.server.cors_origins == ("https://a.example", "https://b.example")


def test_invalid_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="LEXIA_PORT"):
        load_settings({"LEXIA_KEY_PEPPER": STRONG, "LEXIA_PORT": "eighty"})
    with pytest.raises(SettingsError, match="LEXIA_ENGINES"):
        load_settings({"LEXIA_KEY_PEPPER": STRONG, "LEXIA_ENGINES": "gpu"})
    with pytest.raises(SettingsError, match="LEXIA_RATE_LIMIT_LEASE_FRACTION"):
        load_settings({"LEXIA_KEY_PEPPER": STRONG, "LEXIA_RATE_LIMIT_LEASE_FRACTION": "0.5"})


def test_production_refuses_a_missing_pepper() -> None:
    with pytest.raises(SettingsError, match="LEXIA_KEY_PEPPER is required"):
        load_settings({"LEXIA_ENV": "production", "LEXIA_DOCS_ENABLED": "false"})


def test_production_refuses_a_weak_pepper() -> None:
    with pytest.raises(SettingsError, match="too weak: 31 bytes"):
        load_settings({"LEXIA_ENV": "production", "LEXIA_KEY_PEPPER": "w" * 31, "LEXIA_DOCS_ENABLED": "false"})


def test_production_requires_an_explicit_docs_choice() -> None:
    with pytest.raises(SettingsError, match="LEXIA_DOCS_ENABLED"):
        load_settings({"LEXIA_ENV": "production", "LEXIA_KEY_PEPPER": STRONG})
    assert load_settings({"LEXIA_ENV": "production", "LEXIA_KEY_PEPPER": STRONG, "LEXIA_DOCS_ENABLED": "true"})


def test_secrets_are_masked_in_repr_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        {"LEXIA_KEY_PEPPER": "pepper-" + STRONG, "LEXIA_DATABASE_URL": "postgresql+psycopg://u:dbpass@h/x",
         "LEXIA_METRICS_TOKEN": "metrics-tok"}
    )
    text = repr(settings)
    for secret in ("pepper-", "dbpass", "metrics-tok"):
        assert secret not in text
    with caplog.at_level(logging.INFO):
        logging.getLogger("lexia.test").info("settings: %r", settings)
    assert "dbpass" not in caplog.text


def test_load_settings_is_pure() -> None:
    env = {"LEXIA_KEY_PEPPER": STRONG}
    assert load_settings(env) == load_settings(dict(env))
    assert env == {"LEXIA_KEY_PEPPER": STRONG}


def test_dotenv_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# comment\nexport LEXIA_PORT=8100\nLEXIA_KEY_PEPPER='quoted value'\n\nbad line\n")
    assert read_dotenv(path) == {"LEXIA_PORT": "8100", "LEXIA_KEY_PEPPER": "quoted value"}


def test_unknown_variables_are_named_with_the_closest_setting(caplog: pytest.LogCaptureFixture) -> None:
    from lexia.settings import unknown_variables, warn_unknown_variables

    env = {"LEXIA_KEY_PEPPER": STRONG, "LEXIA_DIARIZATON_BACKEND": "lite", "LEXIA_SOMETHING_ELSE": "1",
           "LEXIA_TEST_PG": "x", "PATH": "/bin"}
    assert unknown_variables(env) == [
        ("LEXIA_DIARIZATON_BACKEND", "LEXIA_DIARIZATION_BACKEND"), ("LEXIA_SOMETHING_ELSE", None)
    ]
    with caplog.at_level(logging.WARNING):
        warn_unknown_variables(env)
    assert "LEXIA_DIARIZATON_BACKEND is not a Lexia setting and is ignored; did you mean LEXIA_DIARIZATION_BACKEND?" in caplog.text
    assert load_settings(env).engines.diarization.backend == "pyannote"  # the typo changed nothing


def test_malformed_nested_values_name_their_variable() -> None:
    with pytest.raises(SettingsError, match="LEXIA_STT_BEAM_SIZE"):
        load_settings({"LEXIA_KEY_PEPPER": STRONG, "LEXIA_STT_BEAM_SIZE": "five"})
    with pytest.raises(SettingsError, match="LEXIA_DIARIZATION_ENABLED"):
        load_settings({"LEXIA_KEY_PEPPER": STRONG, "LEXIA_DIARIZATION_ENABLED": "maybe"})


def test_each_engine_kind_has_its_section_and_backend() -> None:
    settings = load_settings({"LEXIA_KEY_PEPPER": STRONG, "LEXIA_STT_MODEL": "base", "LEXIA_LLM_BACKEND": "vllm",
                              "LEXIA_MAX_SPEAKERS": "8", "LEXIA_STT_MODEL_ALIASES": "whisper-1, w"})
    assert settings.engines.stt.model == "base" and settings.engines.stt.model_aliases == ("whisper-1", "w")
    assert settings.engines.llm.backend == "vllm" and settings.engines.diarization.max_speakers == 8
    assert settings.engines.enabled() == {"llm": True, "stt": True, "diarization": True}


async def test_an_unknown_backend_stops_the_start_naming_the_setting() -> None:
    from lexia.engines.base import EngineLoadError
    from lexia.engines.registry import open_engines

    settings = load_settings({"LEXIA_KEY_PEPPER": STRONG, "LEXIA_ENGINES": "real", "LEXIA_LLM_ENABLED": "false",
                              "LEXIA_STT_ENABLED": "false", "LEXIA_DIARIZATION_BACKEND": "nemo"})
    with pytest.raises(EngineLoadError, match="LEXIA_DIARIZATION_BACKEND='nemo' is not a diarization backend; known: lite, pyannote"):
        async with open_engines(settings.engines):
            pass
