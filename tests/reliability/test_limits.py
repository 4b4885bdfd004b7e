"""Every request limit: set through its KT_* variable, exact at the boundary (the limit passes, one
more is refused), refused with 413/422 naming the variable, per learner inside a batch, documented
in docs/service.md and in the OpenAPI document, and a refused request writes nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.service.conftest import QUESTION_IDS

ROOT = Path(__file__).resolve().parents[2]
Q = QUESTION_IDS
LIMIT = 4  # every count limit is set to this through the environment


def cand(n: int) -> list[dict[str, Any]]:
    return [{"question_id": Q[i % len(Q)]} for i in range(n)]


def inter(n: int) -> list[dict[str, Any]]:
    return [
        {"question_id": Q[i % len(Q)], "timestamp": 1000 + i, "correct": True} for i in range(n)
    ]


@pytest.fixture
def client(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An app whose limits come from the environment (as in production)."""
    for name in (
        "KT_MAX_CANDIDATES",
        "KT_MAX_INTERACTIONS_PER_REQUEST",
        "KT_MAX_BATCH_LEARNERS",
    ):
        monkeypatch.setenv(name, str(LIMIT))
    monkeypatch.setenv("KT_USER_ID_MAX_LENGTH", "10")
    monkeypatch.setenv("KT_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("KT_MODEL_DIR", str(artifact))
    settings = Settings()
    assert (settings.max_candidates, settings.user_id_max_length, settings.max_body_bytes) == (
        LIMIT,
        10,
        4096,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


# (name, env var, request at the limit, request over it, expected loc of the error)
Case = tuple[str, str, Callable[[int], tuple[str, dict[str, Any]]], list[str | int]]
CASES: list[Case] = [
    (
        "candidates",
        "KT_MAX_CANDIDATES",
        lambda n: ("/predict", {"user_id": "u", "questions": cand(n)}),
        ["body", "questions"],
    ),
    (
        "candidates per learner in a batch",
        "KT_MAX_CANDIDATES",
        lambda n: (
            "/predict/batch",
            {
                "requests": [
                    {"user_id": "a", "questions": cand(1)},
                    {"user_id": "b", "questions": cand(n)},
                ]
            },
        ),
        ["body", "requests", 1, "questions"],
    ),
    (
        "interactions",
        "KT_MAX_INTERACTIONS_PER_REQUEST",
        lambda n: ("/interactions", {"user_id": "u", "interactions": inter(n)}),
        ["body", "interactions"],
    ),
    (
        "interactions in predict",
        "KT_MAX_INTERACTIONS_PER_REQUEST",
        lambda n: ("/predict", {"user_id": "u", "questions": cand(1), "interactions": inter(n)}),
        ["body", "interactions"],
    ),
    (
        "interactions per learner in a batch",
        "KT_MAX_INTERACTIONS_PER_REQUEST",
        lambda n: (
            "/predict/batch",
            {"requests": [{"user_id": "a", "questions": cand(1), "interactions": inter(n)}]},
        ),
        ["body", "requests", 0, "interactions"],
    ),
    (
        "learners per batch",
        "KT_MAX_BATCH_LEARNERS",
        lambda n: (
            "/predict/batch",
            {"requests": [{"user_id": f"l{i}", "questions": cand(1)} for i in range(n)]},
        ),
        ["body", "requests"],
    ),
]


@pytest.mark.parametrize(("name", "env", "build", "loc"), CASES, ids=[c[0] for c in CASES])
def test_count_limits_are_exact_and_named(
    client: TestClient, name: str, env: str, build: Any, loc: list[str | int]
) -> None:
    path, body = build(LIMIT)
    assert client.post(path, json=body).status_code == 200, name
    path, body = build(LIMIT + 1)
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    (item,) = r.json()["detail"]
    assert f"{env}={LIMIT}" in item["msg"] and f"{LIMIT + 1} > " in item["msg"]
    assert item["loc"] == loc and item["type"] == "limit_exceeded"


def test_user_id_length_in_body_and_path(client: TestClient) -> None:
    ok, long = "u" * 10, "u" * 11
    assert client.post("/predict", json={"user_id": ok, "questions": cand(1)}).status_code == 200
    for r in (
        client.post("/predict", json={"user_id": long, "questions": cand(1)}),
        client.post("/interactions", json={"user_id": long, "interactions": inter(1)}),
        client.get(f"/users/{long}/history"),
        client.delete(f"/users/{long}"),
        client.post("/predict/batch", json={"requests": [{"user_id": long, "questions": cand(1)}]}),
    ):
        assert r.status_code == 422, r.text
        item = r.json()["detail"][0]
        assert "KT_USER_ID_MAX_LENGTH=10" in item["msg"] and item["loc"][-1] == "user_id"
    assert client.get(f"/users/{ok}/history").status_code == 200


@pytest.mark.parametrize("bad", ["a b", "a/b", "{a}", "ü", "a\nb", "a%b", "", "a#b", "a+b"])
def test_user_id_charset(client: TestClient, bad: str) -> None:
    r = client.post("/interactions", json={"user_id": bad, "interactions": inter(1)})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "user_id", r.text


def test_body_size_limit_is_exact(client: TestClient) -> None:
    base = {"user_id": "u", "questions": cand(1), "interactions": inter(1)}
    raw = json.dumps(base).encode()
    pad = 4096 - len(raw)
    exact = raw[:-1] + b" " * pad + b"}"  # whitespace padding: the same JSON, exactly 4096 bytes
    assert len(exact) == 4096
    headers = {"content-type": "application/json"}
    assert client.post("/predict", content=exact, headers=headers).status_code == 200
    r = client.post("/predict", content=exact + b" ", headers=headers)
    assert r.status_code == 413 and "KT_MAX_BODY_BYTES=4096" in r.json()["detail"]


def test_a_refused_batch_writes_nothing(client: TestClient) -> None:
    batch = {
        "requests": [
            {"user_id": "first", "questions": cand(1), "interactions": inter(2)},
            {"user_id": "second", "questions": cand(LIMIT + 1)},
        ]
    }
    assert client.post("/predict/batch", json=batch).status_code == 422
    assert client.get("/users/first/history").json()["history_length"] == 0


def test_every_setting_is_documented() -> None:
    """Each KT_* variable has a row in the configuration table of docs/service.md."""
    doc = (ROOT / "docs" / "service.md").read_text()
    rows = set(re.findall(r"^\| `(KT_[A-Z_]+)` \|", doc, flags=re.M))
    expected = {f"KT_{name.upper()}" for name in Settings.model_fields}
    assert expected <= rows, f"undocumented: {sorted(expected - rows)}"


def test_limits_are_in_the_openapi_document(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()["components"]["schemas"]
    assert doc["PredictRequest"]["properties"]["questions"]["maxItems"] == LIMIT
    assert doc["InteractionsRequest"]["properties"]["interactions"]["maxItems"] == LIMIT
    assert doc["BatchPredictRequest"]["properties"]["requests"]["maxItems"] == LIMIT
    assert doc["InteractionsRequest"]["properties"]["user_id"]["maxLength"] == 10
