"""Service settings (pydantic-settings, env prefix `KT_`).

Built lazily through the cached `get_settings()`; never at import time. Every variable is documented
in docs/service.md (configuration table).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# User ids end up inside Redis keys between hash-tag braces: no braces, no spaces, no control chars.
USER_ID_PATTERN = r"^[A-Za-z0-9._:@\-]+$"
USER_ID_RE = re.compile(USER_ID_PATTERN)


class Settings(BaseSettings):
    """All runtime configuration of the prediction service."""

    model_config = SettingsConfigDict(env_prefix="KT_", extra="ignore", frozen=True)

    # Model and inference
    model_dir: Path | None = (
        None  # artifact directory (model.onnx, config.json, feature_spec.json, manifest.json)
    )
    providers: Literal["cpu", "cuda"] = (
        "cpu"  # cuda needs onnxruntime-gpu; readiness fails on CPU fallback
    )
    ort_threads: int = Field(
        1, ge=1, le=64
    )  # ORT intra-op threads per worker (set explicitly, GUIDE §5)
    inference_workers: int = Field(1, ge=1, le=64)  # threads running ORT off the event loop
    unknown_questions: Literal["reject", "map"] = (
        "reject"  # unknown question ids: 422 or unknown token
    )

    # History store
    redis_url: str | None = None  # unset -> in-process store (embedded default, single worker only)
    redis_cluster: bool = False  # use a Redis Cluster client (keys carry hash tags)
    redis_timeout_s: float = Field(0.5, gt=0, le=60)  # socket/connect timeout and per-call deadline
    key_prefix: str = Field("kt:", max_length=64)  # prefix of every Redis key
    history_ttl_s: int = Field(30 * 24 * 3600, ge=1)  # idle learners' histories expire after this
    history_extra: int = Field(16, ge=0, le=10_000)  # events kept beyond the model window
    retry_after_s: int = Field(1, ge=1, le=3600)  # Retry-After on 503

    # HTTP server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_key: SecretStr | None = None  # when set: `Authorization: Bearer <key>` required
    cors_origins: str = ""  # comma-separated allowed origins; empty = CORS off

    # Limits (each over-limit request -> 413/422 naming the limit)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_candidates: int = Field(512, ge=1)
    max_interactions_per_request: int = Field(1000, ge=1)
    max_batch_learners: int = Field(256, ge=1)
    user_id_max_length: int = Field(128, ge=1, le=1024)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.key_prefix and not re.fullmatch(r"[A-Za-z0-9._:\-]*", self.key_prefix):
            raise ValueError("KT_KEY_PREFIX may only contain letters, digits and . _ : -")
        if self.api_key is not None and not self.api_key.get_secret_value():
            object.__setattr__(self, "api_key", None)
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def uses_embedded_store(self) -> bool:
        return not self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
