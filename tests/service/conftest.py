"""Shared fixtures for the service tests: Redis connection details, unique key prefixes, stores,
tiny artifacts and in-process apps on them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.store import HistoryStore, MemoryHistoryStore, RedisHistoryStore
from tests.redis_required import skip_without_redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_up():
        skip_without_redis("no Redis at 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    prefix = f"kt-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def store_factory(request: pytest.FixtureRequest) -> Callable[..., HistoryStore]:
    """Builds stores of the parametrized kind (shared suite: identical semantics for both)."""
    if request.param == "memory":
        return lambda ttl_s=3600.0: MemoryHistoryStore(ttl_s=ttl_s)
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    return lambda ttl_s=3600.0: RedisHistoryStore(
        url, ttl_s=ttl_s, timeout_s=2.0, key_prefix=prefix
    )


# -- model artifacts ------------------------------------------------------------------------------
QUESTION_IDS = list(range(1000, 1060))  # raw ids known to the test vocabulary
LECTURE_IDS = [1000, 1001, 7000, 7001]  # its lecture table (ids may equal question ids)
WINDOW = 12


def _export(model_dir: Path, out_dir: Path, seed: int, fast: bool) -> Path:
    """`training.export.export_artifact` (dynamo export + parity; ~10 s), or with `fast` a plain
    legacy torch.onnx export of the same model under the same artifact contract (~1 s)."""
    if not fast:
        from training.export import export_artifact

        return Path(export_artifact(model_dir, out_dir))

    import torch

    from models.feature_spec import MODEL_INPUTS, load_spec
    from models.features import CandidateRequest, History, encode_candidate_batch
    from training.artifacts import load_model_dir

    model, config, spec, vocab = load_model_dir(model_dir)
    table = vocab.item_table()
    batch, _ = encode_candidate_batch(
        [CandidateRequest(History.empty(), np.array([2, 3]), None)] * 2, spec, table
    )

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(MODEL_INPUTS, args, strict=True)))

    out_dir.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(batch[n]) for n in MODEL_INPUTS)
    axes = {n: {0: "batch", 1: "time"} for n in MODEL_INPUTS} | {"logits": {0: "batch", 1: "time"}}
    torch.onnx.export(
        Wrapper().eval(),
        args,
        str(out_dir / "model.onnx"),
        input_names=list(MODEL_INPUTS),
        output_names=["logits"],
        dynamic_axes=axes,
        dynamo=False,
    )
    shutil.copy(model_dir / "config.json", out_dir / "config.json")
    shutil.copy(model_dir / "feature_spec.json", out_dir / "feature_spec.json")
    load_spec(out_dir / "feature_spec.json")
    manifest = {
        "version": f"test-{seed}",
        "model": config.name,
        "metrics": {"auc": 0.5},
        "opset": 17,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    return out_dir


def build_artifact(root: Path, seed: int, fast: bool = False) -> Path:
    """A tiny random saint_plus (seeded) -> model dir -> ONNX serving artifact."""
    import torch

    from models.config import config_for_spec
    from models.feature_spec import FeatureSpec
    from models.registry import build_model
    from models.vocab import QuestionVocab
    from training.artifacts import save_model_dir

    torch.manual_seed(seed)
    vocab = QuestionVocab.build(
        np.array(QUESTION_IDS),
        np.array([1 + i % 7 for i in range(len(QUESTION_IDS))]),
        [[i % 5, 10 + i % 3] for i in range(len(QUESTION_IDS))],  # tags 0..4 and 10..12
    )
    vocab = dataclasses.replace(
        vocab,
        lecture_ids=np.array(LECTURE_IDS),
        lecture_parts=np.array([1, 2, 3, -1]),
        lecture_tags=np.array([0, 4, 11, -1]),
    )
    spec = FeatureSpec(
        window=WINDOW, n_questions=vocab.size, n_parts=vocab.n_parts, n_tags=vocab.n_tags
    )
    config = config_for_spec(
        "saint_plus", spec, vocab, d_model=16, n_layers=1, n_heads=2, dropout=0.0
    )
    model = build_model(config).eval()
    model_dir = save_model_dir(
        root / f"model-{seed}", model, config, spec, vocab, metrics={"auc": 0.5}
    )
    return _export(Path(model_dir), root / f"artifact-{seed}", seed, fast)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two artifacts of the same tiny architecture with different weights (for reload tests).

    The first goes through the real `training.export`; the second (only needs other weights) through
    the fast legacy exporter. The torch model dir of each is <root>/model-<seed>."""
    root = tmp_path_factory.mktemp("artifacts")
    return build_artifact(root, seed=0), build_artifact(root, seed=1, fast=True)


@pytest.fixture(scope="session")
def artifact(artifacts: tuple[Path, Path]) -> Path:
    return artifacts[0]


# -- in-process apps ------------------------------------------------------------------------------
@pytest.fixture
def make_client(artifact: Path) -> Iterator[Callable[..., TestClient]]:
    """Apps on the tiny artifact with Settings overrides (started; closed after the test)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(**({"model_dir": artifact} | overrides))
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
