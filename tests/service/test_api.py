"""API tests on the real tiny ONNX artifact with the embedded store (Redis-backed ones: test_api_redis)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from models.features import CandidateRequest, History
from service.config import Settings
from service.recommend import RECOMMEND_CHUNK, rank
from tests.service.conftest import LECTURE_IDS, QUESTION_IDS, WINDOW

Q = QUESTION_IDS


def ia(ts: int, q: int, correct: bool = True, **extra: Any) -> dict[str, Any]:
    return {"question_id": q, "timestamp": ts, "correct": correct, **extra}


def some_history(n: int = 8, start: int = 1_000) -> list[dict[str, Any]]:
    return [
        ia(
            start + 20_000 * i,
            Q[i % len(Q)],
            i % 3 != 0,
            elapsed_time_ms=4_000 + 100 * i,
            had_explanation=i % 2 == 0,
        )
        for i in range(n)
    ]


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def predict(
    client: TestClient, user: str, qs: list[int], ts: int | None = None, **body: Any
) -> dict[str, Any]:
    questions = [{"question_id": q} | ({"timestamp": ts} if ts is not None else {}) for q in qs]
    r = client.post("/predict", json={"user_id": user, "questions": questions, **body})
    assert r.status_code == 200, r.text
    return r.json()


def probs(resp: dict[str, Any]) -> np.ndarray:
    return np.array([p["p_correct"] for p in resp["predictions"]])


# -- flows ------------------------------------------------------------------------------------
def test_probes_model_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["store"] == "memory"
    model = client.get("/model").json()
    assert (
        model["version"] and model["window"] == WINDOW and model["config"]["name"] == "saint_plus"
    )
    assert isinstance(model["metrics"], dict)
    # the bank's questions, not the pad/unknown tokens of the vocabulary
    assert model["n_questions"] == len(QUESTION_IDS)
    assert model["reads_lectures"] is True and model["known_lectures"] == len(LECTURE_IDS)
    index = client.get("/api")
    assert index.status_code == 200 and index.json()["docs"] == "/docs"
    assert "POST /predict" in index.json()["endpoints"]
    root = client.get("/", follow_redirects=False)  # the learner page is on by default
    assert root.status_code == 307 and root.headers["location"] == "/ui"
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/predict",
        "/predict/batch",
        "/interactions",
        "/users/{user_id}/history",
        "/admin/reload",
    ):
        assert path in paths
    assert "200" in paths["/predict"]["post"]["responses"]


def test_ingest_then_predict(client: TestClient) -> None:
    cold = predict(client, "u1", [Q[0], Q[1]], ts=10**6)
    assert cold["history_length"] == 0 and cold["user_id"] == "u1"
    assert all(0.0 < p < 1.0 for p in probs(cold))

    r = client.post("/interactions", json={"user_id": "u1", "interactions": some_history(5)})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "recorded": 5,
        "duplicates": 0,
        "stale": 0,
        "stale_reason": None,
        "history_length": 5,
    }
    warm = predict(client, "u1", [Q[0], Q[1]], ts=10**6)
    assert warm["history_length"] == 5
    assert not np.allclose(probs(warm), probs(cold))
    assert [p["question_id"] for p in warm["predictions"]] == [Q[0], Q[1]]

    hist = client.get("/users/u1/history").json()
    assert hist["history_length"] == 5
    assert hist["interactions"][0] == {
        "question_id": Q[0],
        "timestamp": 1_000,
        "correct": False,
        "elapsed_time_ms": 4_000,
        "had_explanation": True,
        "container_id": None,
    }


def test_predict_without_interactions_never_mutates(client: TestClient) -> None:
    client.post("/interactions", json={"user_id": "ro", "interactions": some_history(3)})
    before = client.get("/users/ro/history").json()
    for _ in range(3):
        predict(client, "ro", [Q[5]], ts=10**7)
    predict(client, "nobody-yet", [Q[5]])
    assert client.get("/users/ro/history").json() == before
    assert client.get("/users/nobody-yet/history").json()["history_length"] == 0


def test_predict_records_interactions_first(client: TestClient) -> None:
    hist = some_history(4)
    first = predict(client, "p", [Q[9]], ts=10**7, interactions=hist)
    assert first["history_length"] == 4
    plain = predict(client, "p", [Q[9]], ts=10**7)
    np.testing.assert_allclose(probs(first), probs(plain), atol=1e-7)
    again = predict(client, "p", [Q[9]], ts=10**7, interactions=hist)  # retried delivery
    assert again["history_length"] == 4


def server_timing(response: Any) -> dict[str, float]:
    """`Server-Timing: store;dur=<ms>, model;dur=<ms>` of a scoring response, as {name: ms}."""
    metrics = [m.strip().split(";dur=") for m in response.headers["server-timing"].split(",")]
    return {name: float(ms) for name, ms in metrics}


def test_scoring_routes_report_the_store_and_model_time(client: TestClient) -> None:
    """/predict, /predict/batch and /recommend say how long their store and scoring calls took:
    together less than the whole request as the client saw it."""
    client.post("/interactions", json={"user_id": "st", "interactions": some_history(5)})
    question = {"question_id": Q[7]}
    calls = [
        ("/predict", {"user_id": "st", "questions": [question]}),
        ("/predict", {"user_id": "st", "questions": [question], "interactions": some_history(6)}),
        ("/predict/batch", {"requests": [{"user_id": "st", "questions": [question]}]}),
        ("/recommend", {"user_id": "st", "k": 3}),
    ]
    for path, body in calls:
        start = time.perf_counter()
        response = client.post(path, json=body)
        elapsed_ms = (time.perf_counter() - start) * 1000
        assert response.status_code == 200, response.text
        timing = server_timing(response)
        assert set(timing) == {"store", "model"}, path
        # the embedded store may answer within the header's 1 us resolution; ORT never does
        assert timing["store"] >= 0 and timing["model"] > 0, path
        assert timing["store"] + timing["model"] < elapsed_ms, path
    refused = client.post("/predict", json={"user_id": "st", "questions": []})
    assert refused.status_code == 422 and "server-timing" not in refused.headers


def test_idempotent_retries_and_out_of_order(client: TestClient) -> None:
    items = some_history(6)
    a = client.post("/interactions", json={"user_id": "r", "interactions": items[3:]}).json()
    b = client.post("/interactions", json={"user_id": "r", "interactions": items[:4]}).json()
    c = client.post("/interactions", json={"user_id": "r", "interactions": items}).json()
    assert (a["recorded"], b["recorded"], b["duplicates"]) == (3, 3, 1)
    assert (c["recorded"], c["duplicates"], c["history_length"]) == (0, 6, 6)
    stored = client.get("/users/r/history").json()["interactions"]
    assert [s["timestamp"] for s in stored] == [i["timestamp"] for i in items]
    # explicit ids: two attempts at the same (timestamp, question) are both kept
    twice = [ia(5, Q[1], interaction_id="x1"), ia(5, Q[1], False, interaction_id="x2")]
    assert (
        client.post("/interactions", json={"user_id": "r2", "interactions": twice}).json()[
            "recorded"
        ]
        == 2
    )


def test_k_candidates_equal_k_single_predictions(client: TestClient) -> None:
    client.post("/interactions", json={"user_id": "k", "interactions": some_history(9)})
    ts = 10**7
    many = probs(predict(client, "k", Q[:20], ts=ts))
    single = np.array([probs(predict(client, "k", [q], ts=ts))[0] for q in Q[:20]])
    np.testing.assert_allclose(many, single, atol=1e-5)
    cold_many = probs(predict(client, "cold", Q[:7]))
    cold_single = np.array([probs(predict(client, "cold", [q]))[0] for q in Q[:7]])
    np.testing.assert_allclose(cold_many, cold_single, atol=1e-5)


def test_only_strictly_earlier_events_are_used(client: TestClient) -> None:
    hist = some_history(6)
    client.post("/interactions", json={"user_id": "t", "interactions": hist})
    ts = hist[3]["timestamp"]  # predicting at the moment of the 4th event
    at = probs(predict(client, "t", [Q[2]], ts=ts))
    client.post("/interactions", json={"user_id": "t3", "interactions": hist[:3]})
    np.testing.assert_allclose(at, probs(predict(client, "t3", [Q[2]], ts=ts)), atol=1e-7)


def test_service_equals_offline_scorers(client: TestClient, artifact: Path) -> None:
    """torch -> ONNX -> service is one chain: the API equals training.evaluate's scorers."""
    from training.evaluate import TorchScorer, load_scorer

    items = some_history(15) + [
        ia(400_000, Q[20], container_id=7),
        ia(400_000, Q[21], False, container_id=7),
    ]
    client.post("/interactions", json={"user_id": "chain", "interactions": items})
    ts = 500_000
    served = probs(predict(client, "chain", [Q[3], Q[30], Q[59]], ts=ts))

    onnx = load_scorer(artifact)
    vocab = onnx.vocab
    n = len(items)
    history = History(
        question=vocab.to_index(np.array([i["question_id"] for i in items])),
        correct=np.array([i["correct"] for i in items], np.int8),
        timestamp=np.array([i["timestamp"] for i in items], np.int64),
        bundle=np.array(list(range(n - 2)) + [n - 2, n - 2], np.int64),
        elapsed_ms=np.array([i.get("elapsed_time_ms", np.nan) for i in items], np.float32),
        explanation=np.array(
            [int(i["had_explanation"]) if "had_explanation" in i else -1 for i in items], np.int8
        ),
    )
    request = CandidateRequest(history, vocab.to_index(np.array([Q[3], Q[30], Q[59]])), ts)
    np.testing.assert_allclose(served, onnx.score([request])[0], atol=1e-6)
    torch_model_dir = artifact.parent / artifact.name.replace("artifact", "model")
    np.testing.assert_allclose(served, TorchScorer(torch_model_dir).score([request])[0], atol=1e-4)


def test_batch_equals_single_and_runs_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post("/interactions", json={"user_id": "b1", "interactions": some_history(4)})
    client.post("/interactions", json={"user_id": "b2", "interactions": some_history(9, start=50)})
    reqs = [
        {"user_id": "b1", "questions": [{"question_id": Q[1], "timestamp": 10**7}]},
        {"user_id": "b2", "questions": [{"question_id": q, "timestamp": 10**7} for q in Q[:5]]},
        {"user_id": "b3", "questions": [{"question_id": Q[2]}], "interactions": some_history(2)},
    ]
    predictor = client.app.state.kt.predictor
    calls: list[int] = []
    original = predictor.score
    monkeypatch.setattr(
        predictor, "score", lambda rs, items=None: calls.append(len(rs)) or original(rs, items)
    )
    r = client.post("/predict/batch", json={"requests": reqs})
    assert r.status_code == 200, r.text
    assert calls == [3]
    results = r.json()["results"]
    assert [x["history_length"] for x in results] == [4, 9, 2]
    for req, res in zip(reqs, results, strict=True):
        single = client.post(
            "/predict", json={k: v for k, v in req.items() if k != "interactions"}
        ).json()
        np.testing.assert_allclose(probs(res), probs(single), atol=1e-5)


@pytest.mark.parametrize("inline_max", [0, 256, 10**5])
def test_small_scoring_calls_run_inline_and_large_ones_on_the_thread(
    make_client: Any, inline_max: int
) -> None:
    """KT_INLINE_SCORE_MAX_POSITIONS decides where a call runs (positions = each learner's
    window of history + its candidates); the probabilities do not depend on it."""
    import threading

    client = make_client(inline_score_max_positions=inline_max)
    client.post("/interactions", json={"user_id": "in1", "interactions": some_history(12)})
    predictor = client.app.state.kt.predictor
    threads: list[str] = []
    score, score_bundle = predictor.score, predictor.score_bundle

    def spy(call: Callable[..., Any]) -> Callable[..., Any]:
        def where(*args: Any) -> Any:
            threads.append(threading.current_thread().name)
            return call(*args)

        return where

    predictor.score, predictor.score_bundle = spy(score), spy(score_bundle)
    one = {"user_id": "in1", "questions": [{"question_id": Q[1], "timestamp": 10**7}]}
    r = client.post("/predict", json=one)
    assert r.status_code == 200, r.text
    recommended = client.post("/recommend", json={"user_id": "in1", "k": 3, "timestamp": 10**7})
    assert recommended.status_code == 200, recommended.text
    history = min(12, WINDOW - 1)  # what the model reads of the history
    predict_positions = history + 1
    scored = recommended.json()["scored"]
    bank_positions = history * -(-scored // RECOMMEND_CHUNK) + scored  # rows x history + bank
    expected = [
        predict_positions <= inline_max,
        bank_positions <= inline_max,
    ]
    assert [not name.startswith("kt-infer") for name in threads] == expected
    reference = make_client(inline_score_max_positions=0)
    reference.post("/interactions", json={"user_id": "in1", "interactions": some_history(12)})
    np.testing.assert_allclose(
        probs(r.json()), probs(reference.post("/predict", json=one).json()), atol=0
    )


def test_score_runs_the_bundle_graph_and_equals_the_dense_graph(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Predictor.score` (what /predict and /predict/batch call) runs bundle.onnx for a SAINT
    artifact, never model.onnx, and gives what model.onnx gives: a batch of learners with
    histories of 0, 7, 7 and 80 answers and 3, 1, 2 and 5 candidates."""
    from service.catalogue import Catalogue
    from service.predictor import Predictor

    predictor = Predictor.load(artifact)
    assert predictor.scores_by_bundle
    bank = Catalogue().bank(predictor.vocab).indices(None, None, None)

    requests = [
        CandidateRequest(stored_history(n, predictor.vocab), bank[start : start + k], moment)
        for n, start, k, moment in (
            (0, 0, 3, None),
            (7, 5, 1, 10**9),
            (7, 0, 2, 10**9),
            (80, 2, 5, 10**9),
        )
    ]
    runs: list[str] = []

    def recorded(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(feeds: dict[str, np.ndarray]) -> Any:
            runs.append(name)
            return call(feeds)

        return run

    monkeypatch.setattr(predictor, "run", recorded("model.onnx", predictor.run))
    monkeypatch.setattr(predictor, "run_bundle", recorded("bundle.onnx", predictor.run_bundle))
    got = predictor.score(requests)
    assert runs == ["bundle.onnx"]
    dense = predictor.score_dense(requests)
    assert [len(p) for p in got] == [len(r.candidates) for r in requests] == [3, 1, 2, 5]
    for g, d in zip(got, dense, strict=True):
        np.testing.assert_allclose(g, d, atol=1e-5)


def stored_history(n: int, vocab: Any) -> History:
    """`some_history(n)` as the service reads it back from the store (`events_to_history`)."""
    from service.events import events_to_history, make_events

    items = some_history(n) if n else []
    events = make_events(
        timestamp=[i["timestamp"] for i in items],
        question_id=[i["question_id"] for i in items],
        correct=[i["correct"] for i in items],
        elapsed_ms=[i.get("elapsed_time_ms") for i in items],
        had_explanation=[i.get("had_explanation") for i in items],
        container_id=[i.get("container_id") for i in items],
        interaction_id=[None] * len(items),
    )
    return events_to_history(events, vocab)


def test_bank_item_rows_are_computed_at_load_not_in_the_first_request(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank's items.onnx rows and its content groups are computed when a model loads (start
    and reload), so the first /predict and /recommend run no items.onnx; a registered question
    changes the bank, and the next scoring call computes the new bank's rows once."""
    from service import predictor as predictor_module

    runs: list[int] = []
    feeds = predictor_module.item_graph_feeds

    def counted(*args: Any) -> Any:
        runs.append(1)
        return feeds(*args)

    monkeypatch.setattr(predictor_module, "item_graph_feeds", counted)
    client = make_client()
    assert runs  # at start
    state = client.app.state.kt
    assert "content_groups" in vars(state.catalogue.bank(state.predictor.vocab).items)  # kept
    body = {"user_id": "w", "questions": [{"question_id": Q[1], "timestamp": 10**7}]}
    for reload in (False, True):
        if reload:
            assert client.post("/admin/reload", json={}).status_code == 200, "reload"
        runs.clear()
        assert client.post("/predict", json=body).status_code == 200
        assert client.post("/recommend", json={"user_id": "w", "k": 2}).status_code == 200
        assert runs == []
    r = client.put(f"/questions/{max(Q) + 1000}", json={"part": 1, "tags": []})
    assert r.status_code in (200, 201), r.text
    assert client.post("/predict", json=body).status_code == 200
    assert client.post("/predict", json=body).status_code == 200
    assert len(runs) == 1  # the new bank's rows, once (a bank under BUNDLE_GRAPH_CHUNK items)


def test_catalogue_keeps_a_bank_per_vocabulary_until_a_registration() -> None:
    """The bank of a vocabulary is the same object on every call (the model's item rows are kept
    per bank) for the two latest vocabularies, so during a hot reload the old model in flight
    and the new one do not rebuild each other's; a registration rebuilds both."""
    from models.vocab import QuestionVocab
    from service.catalogue import Catalogue

    def vocab() -> QuestionVocab:
        return QuestionVocab.build(np.array(Q), np.ones(len(Q), np.int64), [[1]] * len(Q))

    old, new, third = vocab(), vocab(), vocab()
    catalogue = Catalogue()
    old_bank, new_bank = catalogue.bank(old), catalogue.bank(new)
    assert catalogue.bank(old) is old_bank and catalogue.bank(new) is new_bank
    assert len(old_bank.records) == 0
    third_bank = catalogue.bank(third)  # a third vocabulary evicts the oldest one
    assert catalogue.bank(new) is new_bank and catalogue.bank(third) is third_bank
    assert catalogue.bank(old) is not old_bank  # evicted, built again
    catalogue.add({max(Q) + 7: '{"part": 1, "tags": []}'})  # a registration: every bank anew
    rebuilt = catalogue.bank(new)
    assert rebuilt is not new_bank and len(rebuilt.records) == 1
    assert catalogue.bank(new) is rebuilt


def test_scoring_ab_compares_the_two_paths(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m bench.scoring_ab` (the numbers in docs/service.md) runs on an artifact: both
    /predict paths, and the whole-bank runs of two artifacts (here the same one twice)."""
    from bench import scoring_ab

    argv = ["--artifact", str(artifact), "--other", str(artifact), "--rounds", "3"]
    assert scoring_ab.main([*argv, "--bank-rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "bundle graph used: True" in out
    assert out.count(" candidates: score ") == 2 and "  1 candidates: score" in out
    assert "whole bank (" in out and "max |logit diff| 0" in out


@pytest.mark.parametrize("graph_chunk", [None, 5])
@pytest.mark.parametrize("n_history", [0, 7, 80])
def test_score_bundle_equals_scoring_the_chunks(
    artifact: Path, n_history: int, graph_chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank scored as one bundle, encoded once (bundle.onnx runs of BUNDLE_GRAPH_CHUNK items,
    also cut small here), equals scoring each chunk of candidates as its own request (what
    /recommend, mastery and the catalogue did before)."""
    from service import predictor as predictor_module
    from service.catalogue import Catalogue
    from service.predictor import Predictor

    if graph_chunk is not None:
        monkeypatch.setattr(predictor_module, "BUNDLE_GRAPH_CHUNK", graph_chunk)
    predictor = Predictor.load(artifact)
    assert predictor.has_bundle_graph
    history = stored_history(n_history, predictor.vocab)
    bank = Catalogue().bank(predictor.vocab).indices(None, None, None)
    for moment in (None, 10**9):
        whole = predictor.score_bundle(CandidateRequest(history, bank, moment), chunk=7)
        chunks = [
            CandidateRequest(history, bank[i : i + 7], moment) for i in range(0, len(bank), 7)
        ]
        np.testing.assert_allclose(whole, np.concatenate(predictor.score_dense(chunks)), atol=1e-6)
        assert whole.shape == (len(bank),)
        # the whole bank reads its item rows as a view; any other order (here reversed) copies
        backwards = predictor.score_bundle(CandidateRequest(history, bank[::-1], moment), chunk=7)
        np.testing.assert_allclose(backwards, whole[::-1], atol=1e-6)


def test_erasure(client: TestClient) -> None:
    client.post("/interactions", json={"user_id": "e", "interactions": some_history(3)})
    r = client.delete("/users/e")
    assert r.json() == {"user_id": "e", "deleted": True}
    assert client.get("/users/e/history").json()["history_length"] == 0
    assert client.delete("/users/e").json()["deleted"] is False


def test_history_is_capped_to_the_window(client: TestClient) -> None:
    r = client.post(
        "/interactions", json={"user_id": "cap", "interactions": some_history(60)}
    ).json()
    cap = WINDOW + Settings().history_extra
    assert r["history_length"] == cap
    stored = client.get("/users/cap/history").json()["interactions"]
    assert stored[0]["timestamp"] == some_history(60)[60 - cap]["timestamp"]


def test_metrics(client: TestClient) -> None:
    client.get("/users/someone/history")
    predict(client, "m", [Q[0]])
    text = client.get("/metrics").text
    assert 'route="/users/{user_id}/history"' in text and "someone" not in text
    for name in (
        "kt_http_requests_total",
        "kt_inference_duration_seconds",
        "kt_store_duration_seconds",
    ):
        assert name in text
    assert "kt_history_length_bucket" in text


# -- bad input ------------------------------------------------------------------------------------
BAD_INPUTS = [
    ("/predict", {"questions": [{"question_id": Q[0]}]}, "user_id"),
    ("/predict", {"user_id": "u", "questions": []}, "questions"),
    ("/predict", {"user_id": "u"}, "questions"),
    ("/predict", {"user_id": "a b", "questions": [{"question_id": Q[0]}]}, "user_id"),
    ("/predict", {"user_id": "ü", "questions": [{"question_id": Q[0]}]}, "user_id"),
    ("/predict", {"user_id": "{x}", "questions": [{"question_id": Q[0]}]}, "user_id"),
    (
        "/predict",
        {"user_id": "u", "questions": [{"question_id": "1000"}]},
        "questions[0].question_id",
    ),
    ("/predict", {"user_id": "u", "questions": [{"question_id": -1}]}, "questions[0].question_id"),
    (
        "/predict",
        {"user_id": "u", "questions": [{"question_id": 2**63}]},
        "questions[0].question_id",
    ),
    (
        "/predict",
        {"user_id": "u", "questions": [{"question_id": 1000.5}]},
        "questions[0].question_id",
    ),
    (
        "/predict",
        {"user_id": "u", "questions": [{"question_id": Q[0], "timestamp": -5}]},
        "questions[0].timestamp",
    ),
    (
        "/predict",
        {"user_id": "u", "questions": [{"question_id": Q[0], "extra": 1}]},
        "questions[0].extra",
    ),
    (
        "/predict",
        {
            "user_id": "u",
            "questions": [
                {"question_id": Q[0], "timestamp": 1},
                {"question_id": Q[1], "timestamp": 2},
            ],
        },
        "questions",
    ),  # fmt: skip
    ("/predict", {"user_id": "u", "questions": [{"question_id": 7}]}, "questions"),
    (
        "/predict",
        {
            "user_id": "u",
            "questions": [{"question_id": Q[0]}],
            "interactions": [{"question_id": Q[0]}],
        },
        "interactions[0].correct",
    ),  # fmt: skip
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(10**15, Q[0])]},  # year 33658: beyond the skew
        "interactions[0].timestamp",
    ),
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(1, Q[0], correct="yes")]},
        "interactions[0].correct",
    ),
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(1.5, Q[0])]},
        "interactions[0].timestamp",
    ),
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(1, Q[0], elapsed_time_ms=-3)]},
        "interactions[0].elapsed_time_ms",
    ),  # fmt: skip
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(1, Q[0], elapsed_time_ms=2**40)]},
        "interactions[0].elapsed_time_ms",
    ),  # fmt: skip
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(1, Q[0], had_explanation=2)]},
        "interactions[0].had_explanation",
    ),  # fmt: skip
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(1, Q[0], container_id=-1)]},
        "interactions[0].container_id",
    ),  # fmt: skip
    (
        "/interactions",
        {"user_id": "u", "interactions": [ia(1, Q[0], interaction_id="")]},
        "interactions[0].interaction_id",
    ),  # fmt: skip
    ("/interactions", {"user_id": "u", "interactions": [ia(1, 5)]}, "interactions"),
    ("/interactions", {"user_id": "u", "interactions": []}, "interactions"),
    ("/interactions", {"user_id": "u", "interactions": "nope"}, "interactions"),
    ("/interactions", [1, 2], "body"),
    ("/predict/batch", {"requests": []}, "requests"),
    (
        "/predict/batch",
        {"requests": [{"user_id": "u", "questions": [{"question_id": 3}]}]},
        "requests[0].questions",
    ),
    ("/admin/reload", {"model_dir": 5}, "model_dir"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_INPUTS)
def test_bad_input_is_422_naming_the_field(
    client: TestClient, path: str, body: Any, field: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    assert any(d["field"] == field or d["field"].startswith(field) for d in detail), detail
    assert all(d["msg"] for d in detail)
    assert "Traceback" not in r.text


def test_unknown_questions_are_listed(client: TestClient) -> None:
    r = client.post(
        "/predict",
        json={"user_id": "u", "questions": [{"question_id": q} for q in (7, Q[0], 3, 7)]},
    )
    assert r.status_code == 422
    (item,) = r.json()["detail"]
    assert (
        item["unknown_question_ids"] == [3, 7]
        and "3" in item["msg"]
        and item["field"] == "questions"
    )
    # nothing was recorded by a rejected request
    body = {"user_id": "u", "questions": [{"question_id": 3}], "interactions": some_history(2)}
    assert client.post("/predict", json=body).status_code == 422
    assert client.get("/users/u/history").json()["history_length"] == 0


def test_unknown_questions_map_mode(make_client: Callable[..., TestClient]) -> None:
    client = make_client(unknown_questions="map")
    r = client.post("/interactions", json={"user_id": "m", "interactions": [ia(1, 5), ia(2, Q[0])]})
    assert r.status_code == 200 and r.json()["recorded"] == 2
    p = probs(predict(client, "m", [3, 99_999, Q[0]]))
    assert p[0] == pytest.approx(p[1], abs=1e-6)  # both unknown -> the unknown token
    assert (
        client.get("/users/m/history").json()["interactions"][0]["question_id"] == 5
    )  # raw id kept


def test_malformed_json_and_wrong_content(client: TestClient) -> None:
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert client.get("/nope").status_code == 404 and client.get("/nope").json() == {
        "detail": "Not Found"
    }
    assert client.put("/predict").status_code == 405
    r = client.get("/users/" + "x" * 2000 + "/history")
    assert r.status_code == 422 and "user_id" in r.json()["detail"][0]["field"]


# -- limits ---------------------------------------------------------------------------------------
def test_limits_are_named(make_client: Callable[..., TestClient]) -> None:
    client = make_client(
        max_candidates=3,
        max_interactions_per_request=2,
        max_batch_learners=2,
        user_id_max_length=8,
        max_body_bytes=2048,
    )

    def limit_of(r: Any) -> str:
        assert r.status_code in (413, 422), r.text
        detail = r.json()["detail"]
        return detail if isinstance(detail, str) else detail[0]["msg"]

    q4 = [{"question_id": q} for q in Q[:4]]
    assert "KT_MAX_CANDIDATES=3" in limit_of(
        client.post("/predict", json={"user_id": "u", "questions": q4})
    )
    r = client.post("/interactions", json={"user_id": "u", "interactions": some_history(3)})
    assert "KT_MAX_INTERACTIONS_PER_REQUEST=2" in limit_of(r)
    one = {"user_id": "u", "questions": q4[:1]}
    assert "KT_MAX_BATCH_LEARNERS=2" in limit_of(
        client.post("/predict/batch", json={"requests": [one] * 3})
    )
    r = client.post("/predict", json={"user_id": "u" * 9, "questions": q4[:1]})
    assert "KT_USER_ID_MAX_LENGTH=8" in limit_of(r)
    assert client.get("/users/" + "u" * 9 + "/history").status_code == 422
    big = {"user_id": "u", "questions": q4[:1], "pad": "x" * 4000}
    r = client.post("/predict", json=big)
    assert r.status_code == 413 and "KT_MAX_BODY_BYTES=2048" in limit_of(r)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"user_id": "u", "questions": [{"question_id": 1000}], "pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "KT_MAX_BODY_BYTES" in limit_of(r)
    assert client.post("/predict", json=one).status_code == 200  # still serving


# -- auth, CORS, errors, logs ---------------------------------------------------------------------
def test_auth_when_configured(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_key="s3cret-key")
    body = {"user_id": "a", "questions": [{"question_id": Q[0]}]}
    missing = client.post("/predict", json=body)
    wrong = client.post("/predict", json=body, headers={"Authorization": "Bearer nope"})
    scheme = client.post("/predict", json=body, headers={"Authorization": "Basic s3cret-key"})
    for r in (missing, wrong, scheme):
        assert r.status_code == 401 and r.json() == {"detail": "missing or invalid credentials"}
        assert r.headers["www-authenticate"] == "Bearer"
    ok = client.post("/predict", json=body, headers={"Authorization": "Bearer s3cret-key"})
    assert ok.status_code == 200
    for path in ("/users/a/history", "/model", "/metrics"):
        assert client.get(path).status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_auth_off_by_default(client: TestClient) -> None:
    assert (
        client.post(
            "/predict", json={"user_id": "a", "questions": [{"question_id": Q[0]}]}
        ).status_code
        == 200
    )


def test_cors_off_by_default_and_on_when_configured(make_client: Callable[..., TestClient]) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    off = make_client().options("/predict", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    on = make_client(cors_origins="https://app.example").options("/predict", headers=preflight)
    assert on.headers["access-control-allow-origin"] == "https://app.example"


def test_internal_errors_are_generic(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 names neither the exception's message nor the user id (response and logs), and the
    exception does not escape the app (the server would print it with its message)."""

    def boom(requests: list[CandidateRequest]) -> list[np.ndarray]:
        raise RuntimeError("secret internals of learner-x")

    async def history_boom(user_id: str) -> np.ndarray:
        raise RuntimeError(f"secret internals of {user_id}")

    caplog.set_level(logging.DEBUG)
    strict = TestClient(client.app, raise_server_exceptions=True)  # raises if anything escapes
    monkeypatch.setattr(client.app.state.kt.predictor, "score", boom)
    r = strict.post("/predict", json={"user_id": "learner-x", "questions": [{"question_id": Q[0]}]})
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    monkeypatch.setattr(client.app.state.kt.store, "get", history_boom)
    r = strict.get("/users/learner-y/history")
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    # (httpx is the test client's own logger: it prints the URL it requested)
    text = "\n".join(rec.getMessage() for rec in caplog.records if not rec.name.startswith("httpx"))
    assert "learner-x" not in text and "learner-y" not in text and "secret" not in text
    assert "unhandled RuntimeError on GET /users/{user_id}/history" in text
    assert 'route="/users/{user_id}/history",status="500"' in client.get("/metrics").text


def test_logs_carry_no_user_ids_or_histories(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(api_key="k3y-value-123")
    headers = {"Authorization": "Bearer k3y-value-123"}
    client.post(
        "/interactions",
        json={"user_id": "private-learner", "interactions": some_history(3)},
        headers=headers,
    )
    predict_body = {"user_id": "private-learner", "questions": [{"question_id": 424242}]}
    client.post("/predict", json=predict_body, headers=headers)
    client.post("/predict", json=predict_body, headers={"Authorization": "Bearer wrong"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "private-learner" not in text and "k3y-value-123" not in text and "424242" not in text


# -- model lifecycle ------------------------------------------------------------------------------
def test_hot_reload_success_and_failure(
    make_client: Callable[..., TestClient], artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = artifacts
    client = make_client(model_dir=first)
    client.post("/interactions", json={"user_id": "h", "interactions": some_history(5)})
    before = probs(predict(client, "h", Q[:3], ts=10**7))

    r = client.post("/admin/reload", json={"model_dir": str(second)})
    assert r.status_code == 200, r.text
    assert r.json()["reloaded"] is True and r.json()["artifact_dir"] == str(second)
    after = probs(predict(client, "h", Q[:3], ts=10**7))
    assert not np.allclose(before, after)
    assert client.get("/model").json()["artifact_dir"] == str(second)
    assert (
        client.get("/users/h/history").json()["history_length"] == 5
    )  # histories survive a reload

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "feature_spec.json", "manifest.json"):
        (broken / name).write_text((second / name).read_text())
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    for bad, reason in ((tmp_path / "missing", "not found"), (broken, "model.onnx")):
        r = client.post("/admin/reload", json={"model_dir": str(bad)})
        assert r.status_code == 422
        msg = r.json()["detail"][0]["msg"]
        assert "still serving" in msg and reason in msg and "Traceback" not in msg
        np.testing.assert_allclose(probs(predict(client, "h", Q[:3], ts=10**7)), after)
    assert client.post("/admin/reload").status_code == 200  # no body: reload the current dir
    metrics = client.get("/metrics").text
    assert 'kt_model_reloads_total{outcome="failed"} 2.0' in metrics


def test_reload_request_is_refused_with_several_workers(
    make_client: Callable[..., TestClient], artifacts: tuple[Path, Path]
) -> None:
    first, second = artifacts
    client = make_client(model_dir=first, workers=2)
    r = client.post("/admin/reload", json={"model_dir": str(second)})
    assert r.status_code == 409
    assert "SIGHUP" in r.json()["detail"][0]["msg"]
    assert client.get("/model").json()["artifact_dir"] == str(first)  # nothing swapped


def test_no_model_configured(make_client: Callable[..., TestClient], artifact: Path) -> None:
    client = make_client(model_dir=None)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["model_loaded"] is False
    assert "KT_MODEL_DIR" in ready.json()["reasons"][0]
    r = client.post("/predict", json={"user_id": "u", "questions": [{"question_id": Q[0]}]})
    assert (
        r.status_code == 503
        and "no model loaded" in r.json()["detail"]
        and r.headers["retry-after"]
    )
    assert client.post("/admin/reload", json={"model_dir": str(artifact)}).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_cuda_requested_but_cpu_active_is_not_ready(make_client: Callable[..., TestClient]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is really available here")
    ready = make_client(providers="cuda").get("/readyz")
    assert ready.status_code == 503
    assert "CUDAExecutionProvider" in ready.json()["reasons"][0]


# -- found by schema fuzzing (tests/reliability/test_fuzz_schema.py) -------------------------------
def test_integral_json_numbers_are_integers(client: TestClient) -> None:
    """JSON Schema's integer includes 1000.0; fractions, NaN/Infinity and strings stay 422."""
    body = {"user_id": "f", "interactions": [ia(5.0, float(Q[0]), elapsed_time_ms=7.0)]}
    r = client.post("/interactions", json=body)
    assert r.status_code == 200, r.text
    item = client.get("/users/f/history").json()["interactions"][0]
    assert item["timestamp"] == 5 and item["question_id"] == Q[0] and item["elapsed_time_ms"] == 7
    for bad in ("NaN", "Infinity", "-Infinity", "5.5", '"5"', "true", "1e400"):
        raw = '{"user_id": "f", "interactions": [{"question_id": %d, "timestamp": 1, "correct": true, "elapsed_time_ms": %s}]}'
        r = client.post(
            "/interactions",
            content=(raw % (Q[0], bad)).encode(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"][0]["field"] == "interactions[0].elapsed_time_ms", bad


def test_undecodable_body_is_422_not_400(client: TestClient) -> None:
    r = client.post(
        "/predict", content=b"\xb9i\xe6\xea", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert (
        r.json()["detail"][0]["type"] == "json_invalid" and r.json()["detail"][0]["field"] == "body"
    )


def test_openapi_documents_the_configured_limits_and_auth(
    make_client: Callable[..., TestClient],
) -> None:
    doc = make_client(max_candidates=7, user_id_max_length=9).get("/openapi.json").json()
    predict_schema = doc["components"]["schemas"]["PredictRequest"]["properties"]
    assert predict_schema["questions"]["maxItems"] == 7
    assert "KT_MAX_CANDIDATES" in predict_schema["questions"]["description"]
    assert predict_schema["user_id"]["maxLength"] == 9
    batch = doc["components"]["schemas"]["BatchPredictRequest"]["properties"]["requests"]
    assert batch["maxItems"] == Settings().max_batch_learners
    path_param = doc["paths"]["/users/{user_id}/history"]["get"]["parameters"][0]
    assert path_param["schema"]["maxLength"] == 9
    assert "securitySchemes" not in doc.get("components", {})  # no key: no credentials needed
    keyed = make_client(api_key="k").get("/openapi.json").json()
    assert "securitySchemes" in keyed["components"]
    assert keyed["paths"]["/predict"]["post"]["security"]


# -- /recommend -----------------------------------------------------------------------------------
def _recommend(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/recommend", json={"user_id": "rec", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_recommend_ranks_the_bank_like_predict_would(client: TestClient) -> None:
    answered = [{"question_id": Q[i], "timestamp": 1_000 * (i + 1), "correct": i % 2 == 0}
                for i in range(6)]  # fmt: skip
    assert (
        client.post("/interactions", json={"user_id": "rec", "interactions": answered}).status_code
        == 200
    )
    now = 60_000
    out = _recommend(client, timestamp=now, target_p=0.5, k=8)
    assert out["scored"] == len(Q) - 6 and out["history_length"] == 6
    recs = out["recommendations"]
    assert len(recs) == 8
    ids = [r["question_id"] for r in recs]
    assert not set(ids) & set(Q[:6])  # answered questions are left out by default
    gaps = [abs(r["p_correct"] - 0.5) for r in recs]
    assert gaps == sorted(gaps)
    # every p is what /predict gives that question alone at the same moment (same candidate rule)
    single = probs(predict(client, "rec", ids, ts=now))
    np.testing.assert_allclose([r["p_correct"] for r in recs], single, atol=1e-6)
    # nothing outside the top 8 is closer to the target than the 8th
    everything = probs(predict(client, "rec", [q for q in Q if q not in Q[:6]], ts=now))
    assert np.sort(np.abs(everything - 0.5))[7] == pytest.approx(gaps[-1], abs=1e-6)


def test_rank_equals_a_full_stable_sort() -> None:
    """`rank` sorts only the k nearest: the same positions as sorting every question inside the
    band by distance to the target, ties (many here: coarse probabilities) to the lower position."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        probs = rng.integers(0, 12, int(rng.integers(0, 60))) / 11.0
        target, k = float(rng.choice(probs)) if len(probs) else 0.5, int(rng.integers(1, 70))
        p_min, p_max = sorted(rng.random(2).tolist()) if rng.random() < 0.3 else (0.0, 1.0)
        inside = np.flatnonzero((probs >= p_min) & (probs <= p_max))
        want = inside[np.argsort(np.abs(probs[inside] - target), kind="stable")[:k]]
        np.testing.assert_array_equal(rank(probs, target, p_min, p_max, k), want)


def test_recommend_filters(client: TestClient) -> None:
    part_1 = _recommend(client, parts=[1], k=100, exclude_answered=False)["recommendations"]
    assert part_1 and all(r["part"] == 1 for r in part_1)
    tagged = _recommend(client, tags=[3], k=100)["recommendations"]
    assert tagged and all(3 in r["tags"] for r in tagged)
    chosen = _recommend(client, question_ids=Q[10:14], k=100)["recommendations"]
    assert sorted(r["question_id"] for r in chosen) == Q[10:14]
    ps = probs(predict(client, "rec", Q[10:14]))
    lo, hi = float(np.sort(ps)[1]), float(np.sort(ps)[2])
    inside = _recommend(client, question_ids=Q[10:14], p_min=lo, p_max=hi, k=100)
    assert len(inside["recommendations"]) == 2 and inside["scored"] == 4


def test_recommend_exclusion_window_and_errors(client: TestClient) -> None:
    answered = [{"question_id": Q[20], "timestamp": 1_000, "correct": True},
                {"question_id": Q[21], "timestamp": 50_000, "correct": False}]  # fmt: skip
    client.post("/interactions", json={"user_id": "rec2", "interactions": answered})

    def ids(**body: Any) -> set[int]:
        r = client.post("/recommend", json={"user_id": "rec2", "k": 1000, **body})
        assert r.status_code == 200, r.text
        return {x["question_id"] for x in r.json()["recommendations"]}

    assert not {Q[20], Q[21]} & ids(timestamp=60_000)  # answered ever: both out
    recent = ids(timestamp=60_000, exclude_within_ms=20_000)  # only the last 20 s count
    assert Q[20] in recent and Q[21] not in recent
    assert {Q[20], Q[21]} <= ids(exclude_answered=False)
    bad = client.post("/recommend", json={"user_id": "rec2", "p_min": 0.9, "p_max": 0.1})
    assert bad.status_code == 422 and "p_min" in bad.text
    unknown = client.post("/recommend", json={"user_id": "rec2", "question_ids": [99_999]})
    assert unknown.status_code == 422 and "99999" in unknown.text
    assert client.post("/recommend", json={"user_id": "rec2", "k": 0}).status_code == 422


# -- mastery --------------------------------------------------------------------------------------
def test_mastery_is_the_mean_prediction_per_part_and_tag(client: TestClient) -> None:
    answered = [{"question_id": Q[i], "timestamp": 10_000 * (i + 1), "correct": i % 3 != 0}
                for i in range(5)]  # fmt: skip
    client.post("/interactions", json={"user_id": "m1", "interactions": answered})
    r = client.get("/users/m1/mastery", params={"at": 45_000})  # the first 4 answers are known
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["at"] == 45_000 and out["history_length"] == 4
    everything = probs(predict(client, "m1", Q, ts=45_000))  # what /predict says at that moment
    parts = [1 + i % 7 for i in range(len(Q))]  # the test bank (tests/service/conftest.py)
    tags = [[i % 5, 10 + i % 3] for i in range(len(Q))]
    by_part = {g["key"]: g for g in out["parts"]}
    assert sorted(by_part) == sorted(set(parts))
    for part, g in by_part.items():
        members = [j for j in range(len(Q)) if parts[j] == part]
        assert g["mastery"] == pytest.approx(float(everything[members].mean()), abs=1e-6)
        assert g["questions"] == len(members)
        mine = [i for i in range(4) if parts[i] == part]
        assert g["answers"] == len(mine)
        assert g["last_answer_at"] == (10_000 * (max(mine) + 1) if mine else None)
    by_tag = {g["key"]: g for g in out["tags"]}
    assert sorted(by_tag) == [0, 1, 2, 3, 4, 10, 11, 12]
    members = [j for j in range(len(Q)) if 11 in tags[j]]
    assert by_tag[11]["mastery"] == pytest.approx(float(everything[members].mean()), abs=1e-6)
    assert by_tag[11]["answers"] == sum(1 for i in range(4) if 11 in tags[i])
    # later answers move it; an unknown learner gets the cold-start view
    now = client.get("/users/m1/mastery")
    assert now.status_code == 200, now.text
    assert now.json()["history_length"] == 5
    cold = client.get("/users/nobody/mastery").json()
    assert cold["history_length"] == 0 and all(g["answers"] == 0 for g in cold["parts"])
    assert client.get("/users/m1/mastery", params={"at": -1}).status_code == 422


def test_mastery_timeline_points_equal_mastery_at_those_moments(client: TestClient) -> None:
    answered = [{"question_id": Q[i], "timestamp": 10_000 * (i + 1), "correct": i % 2 == 0}
                for i in range(7)]  # fmt: skip
    client.post("/interactions", json={"user_id": "t1", "interactions": answered})
    r = client.get("/users/t1/mastery/timeline", params={"every": 3})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    assert [p["answers"] for p in points] == [3, 6, 7]  # every 3 answers, then the last one
    for p in points:
        same = client.get("/users/t1/mastery", params={"at": p["at"]}).json()
        assert same["history_length"] == p["answers"]
        assert same["parts"] == p["parts"] and same["tags"] == p["tags"]
    assert client.get("/users/nobody/mastery/timeline").json()["points"] == []
    assert client.get("/users/t1/mastery/timeline", params={"every": 0}).status_code == 422


def test_mastery_rejects_unknown_query_parameters(client: TestClient) -> None:
    r = client.get("/users/t1/mastery", params={"at": 5, "when": 3})
    assert r.status_code == 422 and "when" in r.text
    assert client.get("/users/t1/mastery/timeline", params={"at": 5}).status_code == 422


# -- question catalogue ---------------------------------------------------------------------------
def test_question_catalogue_pages_filters_and_scores_a_new_learner(client: TestClient) -> None:
    everything = client.get("/questions", params={"limit": 1000})
    assert everything.status_code == 200, everything.text
    body = everything.json()
    items = body["questions"]
    assert body["total"] == len(items) == len(Q)
    assert [q["question_id"] for q in items] == Q  # ascending by id
    # difficulty as the model sees it: what /predict gives a learner with no history
    fresh = probs(predict(client, "nobody-yet", Q))
    np.testing.assert_allclose([q["p_correct_new_learner"] for q in items], fresh, atol=1e-6)
    # the test artifact records no catalogue facts (as an artifact of an older training run)
    assert all(q["bundle_id"] is None and q["trained"] is None for q in items)
    assert items[3]["part"] == 1 + 3 % 7 and items[3]["tags"] == [3, 10]
    # paging: consecutive pages tile the bank
    pages = [
        client.get("/questions", params={"offset": o, "limit": 25}).json() for o in (0, 25, 50)
    ]
    assert [q for p in pages for q in p["questions"]] == items
    assert [len(p["questions"]) for p in pages] == [25, 25, 10]
    # filters
    part_2 = client.get("/questions", params={"part": 2}).json()
    assert part_2["total"] == sum(1 for i in range(len(Q)) if 1 + i % 7 == 2)
    assert all(q["part"] == 2 for q in part_2["questions"])
    tag_11 = client.get("/questions", params={"tag": 11, "part": 2}).json()["questions"]
    assert tag_11 and all(11 in q["tags"] and q["part"] == 2 for q in tag_11)
    # one question, and the errors
    one = client.get(f"/questions/{Q[3]}")
    assert one.status_code == 200 and one.json() == items[3]
    missing = client.get("/questions/5")
    assert missing.status_code == 404 and "unknown question id 5" in missing.text
    assert missing.json()["detail"][0]["loc"] == ["path", "question_id"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"part": "x"}, {"page": 2}):
        r = client.get("/questions", params=bad)
        assert r.status_code == 422 and next(iter(bad)) in r.text, (bad, r.text)


def test_question_catalogue_reports_what_training_recorded(
    make_client: Callable[..., TestClient], artifact: Path, tmp_path: Path
) -> None:
    """An artifact whose vocabulary carries bundles and training counts (what training.train writes)."""
    import json
    import shutil

    from models.feature_spec import load_spec, save_spec

    copy = tmp_path / "artifact"
    shutil.copytree(artifact, copy)
    spec, vocab = load_spec(copy / "feature_spec.json")
    vocab.bundles = np.array([q - q % 2 for q in Q], np.int64)
    vocab.train_answers = np.array([0 if i < 5 else i for i in range(len(Q))], np.int64)
    save_spec(copy / "feature_spec.json", spec, vocab)
    assert "train_answers" in json.loads((copy / "feature_spec.json").read_text())["vocab"]
    client = make_client(model_dir=copy)
    items = client.get("/questions", params={"limit": 1000}).json()["questions"]
    assert [q["bundle_id"] for q in items] == [q - q % 2 for q in Q]
    assert [q["trained"] for q in items] == [i >= 5 for i in range(len(Q))]
    assert [q["train_answers"] for q in items] == [0 if i < 5 else i for i in range(len(Q))]


NEW_ID = 5_000  # not in the test vocabulary (QUESTION_IDS are 1000..1059)


def test_registered_question_is_predicted_from_its_content(
    make_client: Callable[..., TestClient], artifacts: tuple[Path, Path]
) -> None:
    client = make_client()
    body = {"part": 3, "tags": [2, 11, 999], "bundle_id": 77}
    created = client.put(f"/questions/{NEW_ID}", json=body)
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["cold_start"] is True and entry["trained"] is False
    assert entry["train_answers"] == 0 and entry["bundle_id"] == 77
    assert entry["part"] == 3 and entry["tags"] == [2, 11, 999]
    assert client.put(f"/questions/{NEW_ID}", json=body).status_code == 200  # replaced
    assert client.get(f"/questions/{NEW_ID}").json() == entry
    # listed with the model's questions, ascending by id
    listed = client.get("/questions", params={"limit": 1000}).json()
    assert listed["total"] == len(Q) + 1 and listed["questions"][-1] == entry
    assert client.get("/questions", params={"tag": 999}).json()["questions"] == [entry]

    # answers to it are accepted (the default policy rejects unknown ids) and predicted, cold start
    answers = [ia(1_000, NEW_ID, False), ia(2_000, Q[0], True)]
    r = client.post("/interactions", json={"user_id": "cs", "interactions": answers})
    assert r.status_code == 200, r.text
    pred = predict(client, "cs", [NEW_ID, Q[1]], ts=10_000)
    assert [p["cold_start"] for p in pred["predictions"]] == [True, False]
    # its content matters: the same question with other content, or as an unknown id, differs
    p_registered = probs(predict(client, "fresh", [NEW_ID]))[0]
    assert p_registered == pytest.approx(entry["p_correct_new_learner"], abs=1e-6)
    mapped = make_client(unknown_questions="map")  # own embedded store: never registered there
    p_unknown = probs(predict(mapped, "fresh", [NEW_ID]))[0]
    client.put(f"/questions/{NEW_ID}", json={"part": 6, "tags": [4]})
    p_other = probs(predict(client, "fresh", [NEW_ID]))[0]
    assert len({round(p, 6) for p in (p_registered, p_unknown, p_other)}) == 3
    # /recommend ranks it with the bank and /predict/batch scores it too
    recs = client.post(
        "/recommend",
        json={"user_id": "cs", "question_ids": [NEW_ID, Q[5]], "k": 5, "exclude_answered": False},
    ).json()["recommendations"]
    assert {r["question_id"]: r["cold_start"] for r in recs} == {NEW_ID: True, Q[5]: False}
    batch = client.post(
        "/predict/batch",
        json={"requests": [{"user_id": "cs", "questions": [{"question_id": NEW_ID}]}]},
    )
    assert batch.status_code == 200 and batch.json()["results"][0]["predictions"][0]["cold_start"]
    # it survives a reload (registrations live in the store, not in the model)
    assert client.post("/admin/reload", json={"model_dir": str(artifacts[1])}).status_code == 200
    assert client.get(f"/questions/{NEW_ID}").json()["cold_start"] is True
    assert predict(client, "cs", [NEW_ID])["predictions"][0]["cold_start"] is True


def test_registration_errors_name_the_field(client: TestClient) -> None:
    trained = client.put(f"/questions/{Q[0]}", json={"part": 1})
    assert trained.status_code == 409 and "trained on" in trained.text
    assert trained.json()["detail"][0]["loc"] == ["path", "question_id"]
    part = client.put(f"/questions/{NEW_ID}", json={"part": 99})
    assert part.status_code == 422 and "part 99 is unknown" in part.text
    assert part.json()["detail"][0]["loc"] == ["body", "part"]
    for bad in ({}, {"part": -1}, {"part": 1, "tags": ["x"]}, {"part": 1, "extra": 1}):
        r = client.put(f"/questions/{NEW_ID}", json=bad)
        assert r.status_code == 422, (bad, r.text)
    assert client.get(f"/questions/{NEW_ID}").status_code == 404  # nothing was registered


# -- time -------------------------------------------------------------------------------------------
def test_the_server_clock_stamps_requests_without_time(client: TestClient) -> None:
    import time

    before = time.time_ns() // 1_000_000
    untimed = [{"question_id": Q[2], "correct": False, "interaction_id": "a1"}]
    r = client.post("/interactions", json={"user_id": "clock", "interactions": untimed})
    after = time.time_ns() // 1_000_000
    assert r.status_code == 200, r.text
    stamped = client.get("/users/clock/history").json()["interactions"][0]["timestamp"]
    assert before <= stamped <= after  # the receive time, visible in the history
    # a predict without a timestamp is "now": its own untimed interactions are history
    both = {"user_id": "clock2", "questions": [{"question_id": Q[3]}],
            "interactions": [{"question_id": Q[4], "correct": True}]}  # fmt: skip
    out = client.post("/predict", json=both).json()
    assert out["history_length"] == 1
    now_p = probs(out)[0]
    # the same request with the moment spelled out just after the stored answer gives the same p
    stored = client.get("/users/clock2/history").json()["interactions"][0]["timestamp"]
    explicit = probs(predict(client, "clock2", [Q[3]], ts=stored + 1))[0]
    assert now_p == pytest.approx(explicit, abs=1e-6)
    # /recommend and /mastery read the same clock: a moment a few ms later than the answer (the
    # lag moves p by ~1e-6 per ms here), nothing like the unknown lag of a prediction without time
    rec = client.post(
        "/recommend", json={"user_id": "clock2", "question_ids": [Q[3]], "exclude_answered": False}
    ).json()["recommendations"][0]["p_correct"]
    assert rec == pytest.approx(explicit, abs=1e-3)
    at = client.get("/users/clock2/mastery").json()["at"]
    assert stored + 1 <= at <= time.time_ns() // 1_000_000 + 1


def test_without_server_time_a_timestamp_is_required_and_the_lag_is_unknown(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(server_time=False)
    r = client.post(
        "/interactions",
        json={"user_id": "c", "interactions": [{"question_id": Q[0], "correct": True}]},
    )
    assert r.status_code == 422 and "KT_SERVER_TIME" in r.text
    assert r.json()["detail"][0]["loc"] == ["body", "interactions", 0, "timestamp"]
    client.post("/interactions", json={"user_id": "c", "interactions": some_history(4)})
    untimed = probs(predict(client, "c", [Q[1]]))[0]
    timed_far = probs(predict(client, "c", [Q[1]], ts=10**12))[0]
    assert untimed != pytest.approx(timed_far, abs=1e-6)  # unknown lag, not "now"


def test_future_events_are_refused_beyond_the_configured_skew(
    make_client: Callable[..., TestClient],
) -> None:
    import time

    soon = time.time_ns() // 1_000_000 + 600_000  # 10 minutes ahead
    client = make_client()  # default skew: 5 minutes
    r = client.post("/interactions", json={"user_id": "f", "interactions": [ia(soon, Q[0])]})
    assert r.status_code == 422 and "KT_MAX_FUTURE_SKEW_MS=300000" in r.text
    assert client.get("/users/f/history").json()["history_length"] == 0  # nothing written
    lenient = make_client(max_future_skew_ms=3_600_000)
    r = lenient.post("/interactions", json={"user_id": "f", "interactions": [ia(soon, Q[0])]})
    assert r.status_code == 200, r.text


def test_late_events_are_counted_and_explained(client: TestClient) -> None:
    cap = WINDOW + Settings().history_extra
    recent = [ia(1_000_000 + i, Q[i % len(Q)]) for i in range(cap)]
    client.post("/interactions", json={"user_id": "late", "interactions": recent})
    r = client.post("/interactions", json={"user_id": "late", "interactions": [ia(5, Q[0])]})
    body = r.json()
    assert body["stale"] == 1 and body["recorded"] == 0
    assert (
        "older than every one of the" in body["stale_reason"] and str(cap) in body["stale_reason"]
    )
    metrics = client.get("/metrics").text
    assert "kt_stale_events_total 1.0" in metrics


# -- lectures -------------------------------------------------------------------------------------
def lec(ts: int, lecture_id: int, **extra: Any) -> dict[str, Any]:
    return {"lecture_id": lecture_id, "timestamp": ts, **extra}


def test_lectures_are_stored_idempotently_and_returned_apart_from_answers(
    client: TestClient,
) -> None:
    items = some_history(4)
    lectures = [lec(30_000, LECTURE_IDS[1]), lec(50_000, 99_999)]  # 99,999: not in the table
    r = client.post(
        "/interactions", json={"user_id": "lec", "interactions": items, "lectures": lectures}
    )
    assert r.status_code == 200 and r.json()["recorded"] == 6, r.text
    again = client.post("/interactions", json={"user_id": "lec", "lectures": lectures[:1]})
    assert again.json()["duplicates"] == 1 and again.json()["recorded"] == 0
    # a lecture and an answer with the same id and time are two events
    same = client.post(
        "/interactions", json={"user_id": "lec", "lectures": [lec(1_000, Q[0])]}
    ).json()
    assert same["recorded"] == 1
    stored = client.get("/users/lec/history").json()
    assert stored["history_length"] == 7
    assert [i["question_id"] for i in stored["interactions"]] == [i["question_id"] for i in items]
    assert stored["lectures"] == [lec(1_000, Q[0]), *lectures]
    # lectures are no answers: not in the mastery timeline's counts nor excluded as answered
    points = client.get("/users/lec/mastery/timeline?every=2").json()["points"]
    assert [p["answers"] for p in points] == [2, 4]
    assert client.get("/users/lec/mastery").json()["history_length"] == 4  # answers known
    rec = client.post(
        "/recommend", json={"user_id": "lec", "question_ids": [Q[0], Q[5]], "k": 5}
    ).json()
    assert [x["question_id"] for x in rec["recommendations"]] == [Q[5]]  # Q[0] was answered


def test_a_lecture_moves_later_predictions_only(client: TestClient) -> None:
    items = some_history(6)
    for user in ("watched", "not"):
        client.post("/interactions", json={"user_id": user, "interactions": items})
    client.post("/interactions", json={"user_id": "watched", "lectures": [lec(150_000, 7000)]})
    after, before = 200_000, 140_000
    assert not np.allclose(
        probs(predict(client, "watched", [Q[9], Q[11]], ts=after)),
        probs(predict(client, "not", [Q[9], Q[11]], ts=after)),
    )
    np.testing.assert_array_equal(  # a prediction before the lecture cannot see it
        probs(predict(client, "watched", [Q[9], Q[11]], ts=before)),
        probs(predict(client, "not", [Q[9], Q[11]], ts=before)),
    )


def test_lectures_reach_the_model_as_training_encodes_them(
    client: TestClient, artifact: Path
) -> None:
    """The served prediction equals the offline scorer on a History holding the same lectures,
    with the part and tag of the artifact's lecture table."""
    from training.evaluate import load_scorer

    items = some_history(6)
    lectures = [lec(45_000, 7000), lec(85_000, LECTURE_IDS[1]), lec(90_000, 123)]
    client.post(
        "/interactions", json={"user_id": "lchain", "interactions": items, "lectures": lectures}
    )
    served = probs(predict(client, "lchain", [Q[3], Q[30]], ts=200_000))
    onnx = load_scorer(artifact)
    vocab = onnx.vocab
    part, tag = vocab.lecture_content(np.array([7000, LECTURE_IDS[1], 123]))
    assert part.tolist()[:2] == [4, 3] and tag[2] == 0
    history = History(
        question=vocab.to_index(np.array([i["question_id"] for i in items])),
        correct=np.array([i["correct"] for i in items], np.int8),
        timestamp=np.array([i["timestamp"] for i in items], np.int64),
        bundle=np.arange(len(items), dtype=np.int64),
        elapsed_ms=np.array([i["elapsed_time_ms"] for i in items], np.float32),
        explanation=np.array([int(i["had_explanation"]) for i in items], np.int8),
        lecture_after=np.array([3, 5, 5]),  # answers at 1,000 + 20,000 i before each
        lecture_timestamp=np.array([x["timestamp"] for x in lectures], np.int64),
        lecture_part=part,
        lecture_tag=tag,
    )
    request = CandidateRequest(history, vocab.to_index(np.array([Q[3], Q[30]])), 200_000)
    np.testing.assert_allclose(served, onnx.score([request])[0], atol=1e-6)


def test_lecture_input_errors_name_the_field(client: TestClient) -> None:
    import time

    r = client.post("/interactions", json={"user_id": "e"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "interactions"]
    soon = time.time_ns() // 1_000_000 + 3_600_000
    r = client.post("/interactions", json={"user_id": "e", "lectures": [lec(soon, 7000)]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == [
        "body",
        "lectures",
        0,
        "timestamp",
    ]
    for bad in ({"lecture_id": -1}, {"lecture_id": "7000"}, {"lecture_id": 7000, "correct": True}):
        r = client.post("/interactions", json={"user_id": "e", "lectures": [bad]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "lectures", 0]
    assert client.get("/users/e/history").json()["history_length"] == 0


def test_idle_gap_times_predict_after_each_gap(artifact: Path, tmp_path: Path) -> None:
    """`python -m bench.idle_gap` (the pause-cost table of docs/benchmarks.md) drives the app in
    process: a row per gap mode and length, each request's time split into model and rest."""
    from bench import idle_gap

    docs = tmp_path / "benchmarks.md"
    assert idle_gap.main(["--artifact", str(artifact), "--rounds", "2", "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "<!-- idle-gap:start -->" in text and "<!-- idle-gap:end -->" in text
    rows = [
        line.split("|")[1:-1]
        for line in text.splitlines()
        if line.startswith((f"| {idle_gap.REPEAT} |", f"| {idle_gap.STEADY} |"))
    ]
    patterns = [(cells[0].strip(), cells[1].strip(), float(cells[2])) for cells in rows]
    assert sorted(patterns) == sorted(
        [(idle_gap.REPEAT, mode, gap) for gap in idle_gap.GAPS_MS for mode in ("slept", "spun")]
        + [
            (idle_gap.STEADY, mode, gap)
            for gap in idle_gap.STEADY_GAPS_MS
            for mode in ("slept", "spun")
        ]
    )
    for cells in rows:
        total, model, rest = (float(cell) for cell in cells[3:6])
        assert total > 0 and model > 0 and abs(total - model - rest) < 0.2 * total
    assert "In a steady stream of one request per 20 ms (50 req/s)" in text
    with pytest.raises(SystemExit):
        idle_gap.main(["--artifact", str(tmp_path), "--no-docs"])  # no model.onnx there
