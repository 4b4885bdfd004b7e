"""The service's scoring calls, A/B in alternating blocks (in process, 1 ORT thread, history 100).

- `/predict`'s call on one artifact: `Predictor.score` (bundle.onnx where the artifact has it) against
  `Predictor.score_dense` (model.onnx on [history, candidates]), with 1 and 100 candidates.
- With `--other B`: the whole-bank `bundle.onnx` runs (`Predictor.run_bundle`, what `/recommend`
  runs after encoding) of artifact A against artifact B, e.g. the same trained model exported by two
  versions of `training.export`.

Alternating the two sides call by call keeps the host's drift out of the ratio; medians are printed,
with the largest difference between the two sides' outputs.

    python -m bench.scoring_ab --artifact artifacts/demo/artifact
    python -m bench.scoring_ab --artifact bench/out/riiid_lean/artifact --other OLD_EXPORT
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.serve_bench import HISTORY, _history, synthetic_history
from models.bundle import bundle_feeds
from models.features import CandidateRequest, History, encode
from service.catalogue import Catalogue, ExtendedBank
from service.lifecycle import hold_freed_memory
from service.predictor import Predictor

MOMENT = 1_800_000_000_000  # after every synthetic history


def alternate(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Median ms of `a` and of `b`, called in turn `rounds` times each (after 5 warm-up rounds)."""
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds + 5):
        for side, call in enumerate((a, b)):
            start = time.perf_counter()
            call()
            if r >= 5:
                times[side].append((time.perf_counter() - start) * 1e3)
    return float(np.median(times[0])), float(np.median(times[1]))


def bank_and_learner(predictor: Predictor) -> tuple[ExtendedBank, History]:
    """The model's bank and one synthetic learner's history (HISTORY answers, seed 0), as the
    service reads it back from the store."""
    bank = Catalogue().bank(predictor.vocab)
    rng = np.random.default_rng(0)
    history = _history(
        predictor, synthetic_history(rng, predictor.vocab.question_ids, HISTORY), bank.to_index
    )
    return bank, history


def predict_paths(predictor: Predictor, rounds: int) -> None:
    bank, history = bank_and_learner(predictor)
    print(f"/predict scoring call, bundle graph used: {predictor.scores_by_bundle}")
    for k in (1, 100):
        request = [CandidateRequest(history, bank.indices(None, None, None)[:k], MOMENT)]
        diff = np.abs(predictor.score(request)[0] - predictor.score_dense(request)[0]).max()
        new, dense = alternate(
            lambda r=request: predictor.score(r), lambda r=request: predictor.score_dense(r), rounds
        )
        print(
            f"  {len(request[0].candidates):3d} candidates: score {new:.3f} ms, score_dense {dense:.3f} ms "
            f"({dense / new:.2f}x), max |p diff| {diff:.2g}"
        )


def bank_feeds(predictor: Predictor) -> dict[str, np.ndarray]:
    """bundle.onnx's inputs for one learner (history 100) and the whole bank, as /recommend."""
    bank, history = bank_and_learner(predictor)
    cands = bank.indices(None, None, None)
    row = encode(history, predictor.spec, bank.items, candidates=cands, candidate_timestamp=MOMENT)
    embedding, difficulty = predictor.item_side_rows(bank.items)
    return bundle_feeds([row], [len(cands)], [(embedding[cands], difficulty[cands])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_ab", description=__doc__)
    parser.add_argument("--artifact", required=True, type=Path)
    parser.add_argument("--other", type=Path, help="a second artifact: whole-bank bundle.onnx A/B")
    parser.add_argument("--rounds", type=int, default=1000, help="calls per side (/predict)")
    parser.add_argument("--bank-rounds", type=int, default=100, help="calls per side (bank)")
    args = parser.parse_args(argv)
    hold_freed_memory()  # as the service's workers
    predictor = Predictor.load(args.artifact, providers="cpu", threads=1)
    predict_paths(predictor, args.rounds)
    if args.other is not None:
        other = Predictor.load(args.other, providers="cpu", threads=1)
        if not (predictor.has_bundle_graph and other.has_bundle_graph):
            raise SystemExit("--other: both artifacts need bundle.onnx and items.onnx")
        feeds_a, feeds_b = bank_feeds(predictor), bank_feeds(other)
        diff = np.abs(predictor.run_bundle(feeds_a) - other.run_bundle(feeds_b)).max()
        a, b = alternate(
            lambda: predictor.run_bundle(feeds_a),
            lambda: other.run_bundle(feeds_b),
            args.bank_rounds,
        )
        n = feeds_a["item_position"].shape[1]
        print(
            f"whole bank ({n} questions), bundle.onnx runs: {args.artifact} {a:.3f} ms, "
            f"{args.other} {b:.3f} ms ({b / a:.2f}x), max |logit diff| {diff:.2g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
