"""Service settings (pydantic-settings, env prefix `KT_`).

Built lazily through the cached `get_settings()`; never at import time. Every variable is documented
in docs/service.md (configuration table).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# User ids end up inside Redis keys between hash-tag braces: no braces, no spaces, no control chars.
USER_ID_PATTERN = r"^[A-Za-z0-9._:@\-]+$"
USER_ID_RE = re.compile(USER_ID_PATTERN)


class Settings(BaseSettings):
    """All runtime configuration of the prediction service."""

    model_config = SettingsConfigDict(env_prefix="KT_", extra="ignore", frozen=True)

    # -- model and inference
    # artifact directory (model.onnx, config.json, feature_spec.json, manifest.json)
    model_dir: Path | None = None
    # cuda needs onnxruntime-gpu; readiness fails when ORT fell back to CPU
    providers: Literal["cpu", "cuda"] = "cpu"
    # ORT intra-op threads per worker, set explicitly (the default ignores container limits)
    ort_threads: Annotated[int, Field(ge=1, le=64)] = 1
    # threads that run ORT off the event loop
    inference_workers: Annotated[int, Field(ge=1, le=64)] = 1
    # a scoring call of at most this many model positions (history window + candidates, summed
    # over its learners) runs on the event loop: a hand-off to the inference thread costs more CPU
    # than such a call (measured in docs/benchmarks.md); larger ones go to the thread. 0: always
    inline_score_max_positions: Annotated[int, Field(ge=0, le=100_000)] = 256
    # question ids unknown to the model: 422 listing them, or map them to the unknown token
    unknown_questions: Literal["reject", "map"] = "reject"

    # -- time
    # a request without a timestamp gets the server's receive time (ms since the Unix epoch); false:
    # an interaction must carry one, and a prediction without one has an unknown lag
    server_time: bool = True
    # interactions more than this far ahead of the server's clock are refused with 422
    max_future_skew_ms: Annotated[int, Field(ge=0, le=10**15)] = 300_000

    # -- history store
    # unset -> in-process store (the embedded default; one worker only, lost on restart)
    redis_url: str | None = None
    redis_cluster: bool = False  # Redis Cluster client (keys carry hash tags)
    # socket/connect timeout and deadline of every store call
    redis_timeout_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    key_prefix: Annotated[str, Field(max_length=64)] = "kt:"  # prefix of every Redis key
    # a learner's history expires this long after its last write
    history_ttl_s: Annotated[int, Field(ge=1)] = 30 * 24 * 3600
    history_extra: Annotated[int, Field(ge=0, le=10_000)] = 16  # events kept beyond the window
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 1  # Retry-After header on 503

    # -- HTTP server
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_key: SecretStr | None = None  # when set, `Authorization: Bearer <key>` is required
    cors_origins: str = ""  # comma-separated allowed origins; empty = CORS off
    ui: bool = True  # the learner page at /ui (and / redirects there); false removes both

    # -- limits (over a limit -> 413/422 naming it)
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1 << 20
    max_candidates: Annotated[int, Field(ge=1)] = 512
    max_interactions_per_request: Annotated[int, Field(ge=1)] = 1000
    max_batch_learners: Annotated[int, Field(ge=1)] = 256
    user_id_max_length: Annotated[int, Field(ge=1, le=1024)] = 128

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
