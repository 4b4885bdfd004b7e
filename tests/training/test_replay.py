"""`training.replay` against the real app: online replay through HTTP == offline `training.evaluate`.

A tiny random SAINT+ over a simulator's question bank is exported with the real `training.export`,
served by the real app (uvicorn in a thread, Redis-backed under a test key prefix when Redis is up,
else the in-process store), and a small simulator split is replayed through the API. Every
prediction must equal the offline protocol's (same artifact, same files) — the window is small so
histories get capped by the service and truncated by the encoding along the way.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from training.data import load_dataset
from training.evaluate import evaluate
from training.replay import build_plans, main, replay

REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW = 16


def build_sim_artifact(questions_csv: Path, out: Path, window: int = WINDOW) -> Path:
    """A tiny random saint_plus over the questions of `questions_csv`, exported for serving."""
    import torch

    from models.config import config_for_spec
    from models.feature_spec import FeatureSpec
    from models.registry import build_model
    from training.artifacts import save_model_dir
    from training.data import load_questions
    from training.export import export_artifact

    torch.manual_seed(0)
    vocab = load_questions(questions_csv)
    spec = FeatureSpec(window=window, n_questions=vocab.size, n_parts=vocab.n_parts)
    config = config_for_spec(
        "saint_plus", spec, vocab, d_model=16, n_layers=1, n_heads=2, dropout=0.0
    )
    model = build_model(config).eval()
    model_dir = save_model_dir(out / "model", model, config, spec, vocab, metrics={"auc": 0.5})
    return Path(export_artifact(model_dir, out / "artifact"))


def simulate_split(out: Path, learners: int = 24, seed: int = 7) -> dict[str, Path]:
    """Simulator data -> history.csv / eval.csv (the time split of `training.split_csv`)."""
    from training.simulate import simulate, write
    from training.split_csv import split_file

    write(simulate(learners, seed, n_questions=60, mean_length=40.0), out)
    history, evaluation = split_file(out / "train.csv", out / "split", eval_fraction=0.3)
    return {"history": history, "eval": evaluation, "questions": out / "questions.csv"}


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay")
    files = simulate_split(root / "sim")
    files["artifact"] = build_sim_artifact(files["questions"], root)
    return files


@pytest.fixture(scope="module")
def server(data: dict[str, Path]) -> Iterator[tuple[str, str | None]]:
    """The real app on a free loopback port; yields (base url, Redis key prefix or None)."""
    import uvicorn

    from service.app import create_app
    from service.config import Settings

    prefix = f"kt-replay-test-{uuid.uuid4().hex[:10]}:" if _redis_up() else None
    settings = Settings(
        model_dir=data["artifact"],
        redis_url=REDIS_URL if prefix else None,
        key_prefix=prefix or "kt:",
        redis_timeout_s=5.0,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", prefix
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if prefix:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            leftover = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if leftover:
                client.delete(*leftover)
            client.close()


def test_replay_equals_offline_evaluate(
    data: dict[str, Path], server: tuple[str, str | None]
) -> None:
    url, prefix = server
    result = replay(
        url, data["eval"], data["questions"], data["history"], concurrency=4, user_prefix="rt-"
    )
    metrics, labels, probs, _ = evaluate(
        data["artifact"], data["eval"], data["questions"], data["history"]
    )
    assert result.metrics["n"] == metrics["n"] == len(labels) > 100
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.probs, probs, atol=1e-5, rtol=0)
    assert abs(result.metrics["auc"] - metrics["auc"]) < 1e-3
    assert abs(result.metrics["logloss"] - metrics["logloss"]) < 1e-4
    n_bundles = len(result.predict_ms)  # one /predict and one reveal per bundle, + history chunks
    assert n_bundles > 0 and result.requests >= 2 * n_bundles
    if prefix:  # every replay learner was erased
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        assert list(client.scan_iter(match=f"{prefix}*")) == []
        client.close()


def test_cli_prints_json_last_and_keep(
    data: dict[str, Path], server: tuple[str, str | None], capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    url, _ = server
    argv = ["--url", url, "--eval-file", str(data["eval"]), "--questions-file"]
    argv += [str(data["questions"]), "--max-learners", "3", "--concurrency", "2"]
    argv += ["--user-prefix", "rt-keep-", "--keep"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"auc", "acc", "logloss", "n", "p50_ms", "p99_ms"} <= summary.keys()
    assert summary["learners"] == 3 and summary["p99_ms"] >= summary["p50_ms"] > 0
    # --keep: the learners stay (cold start, no history file: only the eval answers are stored)
    evaluation = load_dataset(data["eval"], data["questions"])
    first = build_plans(None, evaluation, 3)[0]
    got = httpx.get(f"{url}/users/rt-keep-{first.raw_user}/history").json()
    sent = sum(len(b.items) + len(b.lectures_before) for b in first.bundles)  # answers + lectures
    assert got["history_length"] == min(sent, WINDOW + 16)
    for plan in build_plans(None, evaluation, 3):
        httpx.delete(f"{url}/users/rt-keep-{plan.raw_user}")


def test_plans_use_shifted_prior_columns(tmp_path: Path) -> None:
    """prior_* of a Riiid row describe the previous bundle: the replay sends them on that bundle."""
    (tmp_path / "questions.csv").write_text(
        "question_id,bundle_id,correct_answer,part,tags\n1,1,0,1,1\n2,2,0,2,1\n3,2,0,2,1\n"
    )
    (tmp_path / "train.csv").write_text(
        "row_id,timestamp,user_id,content_id,content_type_id,task_container_id,user_answer,"
        "answered_correctly,prior_question_elapsed_time,prior_question_had_explanation\n"
        "0,0,5,1,0,0,0,1,,\n"
        "1,1000,5,2,0,1,0,1,7000,True\n"
        "2,1000,5,3,0,1,1,0,7000,True\n"
        "3,9000,5,1,0,2,0,1,4000,False\n"
    )
    (plan,) = build_plans(None, load_dataset(tmp_path / "train.csv", tmp_path / "questions.csv"))
    first, second, third = plan.bundles
    assert first.items == [
        {
            "question_id": 1,
            "timestamp": 0,
            "correct": True,
            "container_id": 0,
            "elapsed_time_ms": 7000,
            "had_explanation": True,
        }
    ]
    assert [it["question_id"] for it in second.items] == [2, 3]
    assert [it["elapsed_time_ms"] for it in second.items] == [4000, 4000]
    assert second.candidates == [
        {"question_id": 2, "timestamp": 1000},
        {"question_id": 3, "timestamp": 1000},
    ]
    assert second.labels.tolist() == [1, 0]
    assert "elapsed_time_ms" not in third.items[0]  # the last bundle's own values are unknown
