"""Settings: KT_ environment, validation, lazy construction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings, get_settings


def test_env_prefix_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KT_PORT", "9001")
    monkeypatch.setenv("KT_API_KEY", "abc")
    monkeypatch.setenv("KT_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("KT_UNKNOWN_QUESTIONS", "map")
    monkeypatch.setenv("KT_REDIS_URL", "redis://127.0.0.1:6379/3")
    s = Settings()
    assert s.port == 9001 and s.api_key is not None and s.api_key.get_secret_value() == "abc"
    assert "abc" not in repr(s)  # secrets never print
    assert s.cors_origin_list == ["https://a.example", "https://b.example"]
    assert s.unknown_questions == "map" and not s.uses_embedded_store
    defaults = Settings.model_construct()
    assert defaults.ort_threads == 1 and defaults.providers == "cpu" and defaults.cors_origins == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [("KT_PROVIDERS", "tpu"), ("KT_ORT_THREADS", "0"), ("KT_PORT", "x"), ("KT_KEY_PREFIX", "a{b}")],
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_empty_api_key_means_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KT_API_KEY", "")
    assert Settings().api_key is None


def test_settings_are_cached_and_not_built_at_import() -> None:
    get_settings.cache_clear()
    assert get_settings() is get_settings()
    get_settings.cache_clear()
    code = "import service.app, service.routes, service.predictor, service.store"
    env = {"KT_PORT": "not-a-port", "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)
