"""ONNX Runtime predictor for a model artifact directory (no FastAPI, no torch).

`Predictor.score` is the one scoring path: the service calls it and so does `training.evaluate`
(to evaluate ONNX artifacts exactly as served). Requests -> `encode_candidate_batch` -> ONE ORT run
-> sigmoid of each request's candidate span.

Artifact directory: model.onnx, config.json, feature_spec.json, manifest.json, and optionally
bundle.onnx (one bundle of many items after a history at O(items x history) attention:
`score_bundle`, i.e. /recommend, mastery and the catalogue). Nothing else is read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.bundle import (
    ITEM_GRAPH_INPUTS,
    ITEM_GRAPH_OUTPUTS,
    bundle_feeds,
    bundle_input_names,
    item_graph_feeds,
)
from models.feature_spec import MODEL_INPUTS, FeatureSpec, load_spec
from models.features import CandidateRequest, History, collate, encode, encode_candidate_batch
from models.numeric import sigmoid
from models.vocab import ItemTable, QuestionVocab

logger = logging.getLogger(__name__)

ARTIFACT_FILES = ("model.onnx", "config.json", "feature_spec.json", "manifest.json")
BUNDLE_FILE = "bundle.onnx"  # optional (SAINT models), with ITEMS_FILE
ITEMS_FILE = "items.onnx"
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}
# ORT graph rewrites left out on CPU: its fused SkipLayerNormalization ran 2-6x slower than the Add
# + LayerNormalization it replaces (hidden 32-256, 101 and 13,523 rows, 1 thread: docs/service.md)
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
# Items per bundle.onnx run (score_bundle): each run redoes only the history's few positions, and
# a run's activations stay in the CPU cache. Riiid bank (13,523), lean student, 1 thread, a call
# every 50 ms as under load: one run 22.9 ms, runs of 2,048 17.6 ms (back to back: 16.3 / 16.1).
BUNDLE_GRAPH_CHUNK = 2048


def ort_session(
    path: Path, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    """An ORT session of `path`; on CPU alone, without CPU_DISABLED_OPTIMIZERS."""
    cpu_only = providers == ["CPUExecutionProvider"]
    disabled = list(CPU_DISABLED_OPTIMIZERS) if cpu_only else []
    return ort.InferenceSession(
        str(path), sess_options=options, providers=providers, disabled_optimizers=disabled
    )


def _rows(table: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`table[indices]`; a view, not a copy, when the indices are one ascending run (a whole
    bank: the Riiid bank's item embeddings are 1.7 MB, a 0.35 ms copy)."""
    n = len(indices)
    if n > 1 and indices[-1] - indices[0] == n - 1 and np.all(np.diff(indices) == 1):
        return table[indices[0] : indices[-1] + 1]
    return table[indices]


class ArtifactError(ValueError):
    """The directory is not a loadable model artifact (the message says why)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path.name}: expected a JSON object")
    return data


class Predictor:
    """A loaded artifact: ORT session + feature spec + vocabulary + config + manifest."""

    def __init__(
        self,
        session: ort.InferenceSession,
        spec: FeatureSpec,
        vocab: QuestionVocab,
        config: dict[str, Any],
        manifest: dict[str, Any],
        artifact_dir: Path,
        requested_providers: list[str],
        bank_sessions: tuple[ort.InferenceSession, ort.InferenceSession] | None = None,
    ) -> None:
        self._session = session
        # bundle.onnx and items.onnx; the items' side rows per item table (at most 2 tables)
        self._bundle_session: ort.InferenceSession | None = None
        self._items_session: ort.InferenceSession | None = None
        if bank_sessions is not None:
            self._bundle_session, self._items_session = bank_sessions
        self._item_sides: list[tuple[ItemTable, np.ndarray, np.ndarray]] = []
        self._spec = spec
        self._vocab = vocab
        self._items = vocab.item_table()
        self._config = config
        self._manifest = manifest
        self.artifact_dir = artifact_dir
        self.requested_providers = requested_providers
        self._inputs = [(i.name, _ORT_DTYPES.get(i.type, np.float32)) for i in session.get_inputs()]

    @classmethod
    def load(cls, artifact_dir: str | Path, providers: str = "cpu", threads: int = 1) -> Predictor:
        """Load and validate an artifact directory; raises `ArtifactError` with the reason."""
        root = Path(artifact_dir)
        if not root.is_dir():
            raise ArtifactError(f"artifact directory not found: {root}")
        missing = [f for f in ARTIFACT_FILES if not (root / f).is_file()]
        if missing:
            raise ArtifactError(f"artifact {root} is missing {', '.join(missing)}")
        if providers not in PROVIDERS:
            raise ArtifactError(f"unknown providers {providers!r} (cpu or cuda)")
        try:
            spec, vocab = load_spec(root / "feature_spec.json")
        except (OSError, ValueError, TypeError) as exc:
            raise ArtifactError(f"feature_spec.json: {exc}") from exc
        if vocab.size > spec.n_questions:
            raise ArtifactError(
                f"feature_spec.json: vocabulary of {vocab.size} exceeds n_questions={spec.n_questions}"
            )
        config = _read_json(root / "config.json")
        manifest = _read_json(root / "manifest.json")

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(
            threads
        )  # explicit: the default ignores container limits
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        requested = PROVIDERS[providers]
        available = ort.get_available_providers()
        use = [p for p in requested if p in available] or ["CPUExecutionProvider"]
        try:
            session = ort_session(root / "model.onnx", options, use)
        except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            raise ArtifactError(f"model.onnx: {exc}") from exc
        bank_sessions = _bank_sessions(root, options, use)

        names = [i.name for i in session.get_inputs()]
        unknown = [n for n in names if n not in MODEL_INPUTS]
        if unknown:
            raise ArtifactError(
                f"model.onnx has unexpected inputs {unknown}; expected {list(MODEL_INPUTS)}"
            )
        outputs = [o.name for o in session.get_outputs()]
        if "logits" not in outputs:
            raise ArtifactError(f"model.onnx has no 'logits' output (outputs: {outputs})")
        predictor = cls(session, spec, vocab, config, manifest, root, requested, bank_sessions)
        predictor._smoke_test()
        logger.info(
            "loaded model %s (version %s) from %s; providers %s; ort threads %d",
            predictor.model_name,
            predictor.version,
            root,
            predictor.active_providers,
            threads,
        )
        return predictor

    def _smoke_test(self) -> None:
        """One cold-start prediction, so a broken graph fails at load time, not on traffic."""
        candidates = np.array([1], dtype=np.int64)
        try:
            (p,) = self.score_dense([CandidateRequest(History.empty(), candidates, None)])
        except Exception as exc:  # any failure here means "not loadable"
            raise ArtifactError(f"model.onnx failed a test prediction: {exc}") from exc
        if p.shape != (1,) or not np.all(np.isfinite(p)):
            raise ArtifactError(f"model.onnx produced an invalid test prediction: {p!r}")
        if self._bundle_session is not None:
            try:
                q = self.score_bundle(CandidateRequest(History.empty(), candidates, None), 1)
            except Exception as exc:  # any failure here means "not loadable"
                raise ArtifactError(f"{BUNDLE_FILE} failed a test prediction: {exc}") from exc
            if not np.allclose(q, p, atol=1e-4):
                raise ArtifactError(f"{BUNDLE_FILE} disagrees with model.onnx: {q!r} vs {p!r}")

    # -- properties ---------------------------------------------------------------------------
    @property
    def spec(self) -> FeatureSpec:
        return self._spec

    @property
    def vocab(self) -> QuestionVocab:
        return self._vocab

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._manifest)

    @property
    def version(self) -> str:
        return str(self._manifest.get("version", "unknown"))

    @property
    def model_name(self) -> str:
        return str(self._manifest.get("model") or self._config.get("name") or "unknown")

    @property
    def active_providers(self) -> list[str]:
        return list(self._session.get_providers())

    @property
    def has_bundle_graph(self) -> bool:
        """bundle.onnx is loaded: `score_bundle` scores a bank at O(bank x history) attention."""
        return self._bundle_session is not None

    @property
    def provider_ok(self) -> bool:
        """The first requested execution provider is really active (ORT falls back silently)."""
        return self.requested_providers[0] in self.active_providers

    @property
    def scores_by_bundle(self) -> bool:
        """`score` runs bundle.onnx: loaded, and model.onnx is the fp32 graph it was exported
        with (an INT8 model.onnx is served as such: the bank graphs stay fp32)."""
        return self._bundle_session is not None and not self._manifest.get("quantization")

    # -- scoring ------------------------------------------------------------------------------
    def score(
        self, requests: list[CandidateRequest], items: ItemTable | None = None
    ) -> list[np.ndarray]:
        """P(correct) per candidate of each request (float64 arrays), from ONE ORT run. `items`:
        the vocabulary's table extended with registered questions (service.catalogue).

        Each request's candidates are one bundle after its history, so where `scores_by_bundle`
        they are run through bundle.onnx: the history's positions are not decoded, only the
        candidates are (the demo student, history 100: the ORT run 0.29 -> 0.13 ms with 1
        candidate, docs/service.md). The same probabilities as `score_dense` (the export and
        the load check both compare them)."""
        if not self.scores_by_bundle:
            return self.score_dense(requests, items)
        if not requests:
            return []
        items = self._checked_table(requests, items)
        return self._through_bundle([self._encode(r, items) for r in requests], requests, items)

    def score_dense(
        self, requests: list[CandidateRequest], items: ItemTable | None = None
    ) -> list[np.ndarray]:
        """`score` through model.onnx: every request one row [history, candidates], decoded
        whole, in ONE ORT run."""
        if not requests:
            return []
        items = self._checked_table(requests, items)
        batch, spans = encode_candidate_batch(requests, self._spec, items)
        logits = self.run(self.feeds(batch))
        return [sigmoid(logits[b, s:e]) for b, (s, e) in enumerate(spans)]

    def score_bundle(
        self, request: CandidateRequest, chunk: int, items: ItemTable | None = None
    ) -> np.ndarray:
        """P(correct) of many candidates of one learner at one moment (e.g. a whole bank), equal
        to `score` of the requests with the candidates cut into chunks of `chunk`, concatenated.

        The candidates are one virtual bundle: each one's inputs depend on the history and on
        itself only, so the history and every candidate are encoded ONCE. With bundle.onnx each
        ORT run takes the history and BUNDLE_GRAPH_CHUNK candidates, each attending to the history
        only (`chunk` is unused); without it, the encoding is tiled into rows of [history, `chunk`
        candidates] (model.onnx takes one sequence per row) for one ORT run."""
        items = self._checked_table([request], items)
        cands = request.candidates
        whole = self._encode(request, items)
        if self._bundle_session is not None:
            return self._through_bundle([whole], [request], items)[0]
        h = len(whole["question"]) - len(cands)
        rows = []
        for start in range(0, len(cands), chunk):
            stop = min(start + chunk, len(cands))
            take = np.concatenate([np.arange(h), np.arange(h + start, h + stop)])  # (h + c,)
            rows.append({name: values[take] for name, values in whole.items()})
        logits = self.run(self.feeds(collate(rows)))  # (rows, h + chunk)
        return np.concatenate(
            [sigmoid(logits[r, h : len(row["question"])]) for r, row in enumerate(rows)]
        )

    def _checked_table(
        self, requests: list[CandidateRequest], items: ItemTable | None
    ) -> ItemTable:
        """The item table to score against (`items`, else the vocabulary's), once every request's
        candidates are checked to be indices of it (`_check_candidates`)."""
        table = self._items if items is None else items
        for r in requests:
            _check_candidates(r.candidates, table)
        return table

    def _encode(self, request: CandidateRequest, items: ItemTable) -> dict[str, np.ndarray]:
        """One request as one encoded row [history, candidates] (1-D arrays of length h + K)."""
        return encode(
            request.history,
            self._spec,
            items,
            candidates=request.candidates,
            candidate_timestamp=request.timestamp,
        )

    def _through_bundle(
        self, rows: list[dict[str, np.ndarray]], requests: list[CandidateRequest], items: ItemTable
    ) -> list[np.ndarray]:
        """P(correct) of each request's candidates from bundle.onnx, given its encoded row."""
        n_items = [len(r.candidates) for r in requests]  # >= 1 each
        embedding, difficulty = self.item_side_rows(items)
        sides = [
            (_rows(embedding, r.candidates), _rows(difficulty, r.candidates)) for r in requests
        ]
        logits = self.run_bundle(bundle_feeds(rows, n_items, sides))  # (B, max K)
        return [sigmoid(logits[b, :n]) for b, n in enumerate(n_items)]

    def feeds(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """An encoded (B, T) batch as the graph's inputs (its names and dtypes)."""
        return {name: batch[name].astype(dtype, copy=False) for name, dtype in self._inputs}

    def item_side_rows(self, items: ItemTable) -> tuple[np.ndarray, np.ndarray]:
        """items.onnx's outputs for every index of `items` (embedding (V, D), difficulty (V,)),
        computed on first use of a table and kept (the catalogue's bank changes only when a
        question is registered)."""
        for table, embedding, difficulty in self._item_sides:
            if table is items:
                return embedding, difficulty
        assert self._items_session is not None  # loaded with bundle.onnx
        runs = [
            self._items_session.run(
                list(ITEM_GRAPH_OUTPUTS),
                item_graph_feeds(
                    np.arange(s, min(s + BUNDLE_GRAPH_CHUNK, len(items.parts))), items, self._spec
                ),
            )
            for s in range(0, len(items.parts), BUNDLE_GRAPH_CHUNK)
        ]  # each [(1, n, D), (1, n)]
        embedding = np.concatenate([e[0] for e, _ in runs])  # (V, D)
        difficulty = np.concatenate([d[0] for _, d in runs])  # (V,)
        self._item_sides = [*self._item_sides[-1:], (items, embedding, difficulty)]
        return embedding, difficulty

    def run_bundle(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """(B, N) logits of bundle.onnx over `models.bundle.bundle_feeds`: one run per
        BUNDLE_GRAPH_CHUNK items, each with the whole history."""
        if self._bundle_session is None:
            raise ValueError("this artifact has no bundle.onnx")
        session = self._bundle_session
        item_inputs = [name for name in feeds if name.startswith("item_")]
        n_items = feeds[item_inputs[0]].shape[1]
        runs = [
            session.run(
                ["logits"],
                {**feeds, **{k: feeds[k][:, s : s + BUNDLE_GRAPH_CHUNK] for k in item_inputs}},
            )[0]
            for s in range(0, max(n_items, 1), BUNDLE_GRAPH_CHUNK)
        ]  # each (B, <= BUNDLE_GRAPH_CHUNK)
        return runs[0] if len(runs) == 1 else np.concatenate(runs, axis=1)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """(B, T) logits of one ORT run."""
        (logits,) = self._session.run(["logits"], feeds)
        return logits


def _bank_sessions(
    root: Path, options: ort.SessionOptions, providers: list[str]
) -> tuple[ort.InferenceSession, ort.InferenceSession] | None:
    """bundle.onnx and items.onnx when the artifact has both (SAINT models); None without them.
    A bundle.onnx alone is the earlier one-graph form: banks are then scored with model.onnx."""
    if not (root / BUNDLE_FILE).is_file():
        return None
    if not (root / ITEMS_FILE).is_file():
        logger.warning(
            "%s has %s without %s (exported before the two-graph form): banks are scored with "
            "model.onnx; re-export the model to score them faster",
            root,
            BUNDLE_FILE,
            ITEMS_FILE,
        )
        return None
    sessions = []
    for name, inputs in (
        (BUNDLE_FILE, bundle_input_names()),
        (ITEMS_FILE, list(ITEM_GRAPH_INPUTS)),
    ):
        try:
            session = ort_session(root / name, options, providers)
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            raise ArtifactError(f"{name}: {exc}") from exc
        names = [i.name for i in session.get_inputs()]
        if names != inputs:
            raise ArtifactError(f"{name} has inputs {names}; expected {inputs}")
        sessions.append(session)
    return sessions[0], sessions[1]


def _check_candidates(candidates: np.ndarray, items: ItemTable) -> None:
    """At least one candidate, each a question index of `items` (not padding or out of range)."""
    if len(candidates) == 0:
        raise ValueError("every request needs at least one candidate")
    if candidates.min() < 1 or candidates.max() >= len(items.parts):
        raise ValueError("candidate question indices out of the vocabulary range")
