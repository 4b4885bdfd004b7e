"""Model directory round trip (training.artifacts) and ONNX export with parity (training.export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from models.config import ModelConfig
from models.feature_spec import MODEL_INPUTS, load_spec
from models.features import collate, encode
from models.registry import MODEL_REGISTRY
from tests.models.test_models import PARTS, SPEC, VOCAB, random_history, tiny_model, to_torch
from training import export as export_mod
from training import parity
from training.artifacts import load_model_dir, save_model_dir
from training.export import export_artifact, main
from training.int8 import int8_gate, quantize_artifact
from training.manifest import read_manifest, sha256_file
from training.parity import ExportError, ort_session, parity_batches

EXPORTED = [
    "saint_plus",
    "saint_plus_lean",
    "dkt",
]  # saint shares saint_plus's code; logistic: test_cli_success


def _model_dir(root: Path, name: str) -> Path:
    model = tiny_model(name)
    metrics = {"auc": 0.71, "logloss": 0.6, "data_fingerprint": "sha256:feedbeef"}
    return save_model_dir(root / f"model_{name}", model, model.cfg, SPEC, VOCAB, metrics)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name in EXPORTED:
        model_dir = _model_dir(root, name)
        out[name] = (model_dir, export_artifact(model_dir, root / f"artifact_{name}"))
    return out


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_model_dir_round_trip_identical_logits(tmp_path: Path, name: str) -> None:
    model = tiny_model(name)
    save_model_dir(tmp_path, model, model.cfg, SPEC, VOCAB, {"auc": 0.5})
    loaded, config, spec, vocab = load_model_dir(tmp_path)
    assert not loaded.training
    assert config == model.cfg and spec == SPEC
    np.testing.assert_array_equal(vocab.question_ids, VOCAB.question_ids)
    rng = np.random.default_rng(0)
    batch = to_torch(collate([encode(random_history(rng, n), SPEC, PARTS) for n in (20, 4)]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), atol=0, rtol=0)
    assert json.loads((tmp_path / "metrics.json").read_text())["auc"] == 0.5


def test_model_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_model_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"missing config\.json, model\.safetensors"):
        load_model_dir(tmp_path)
    model = tiny_model("dkt")
    save_model_dir(tmp_path, model, model.cfg, SPEC, VOCAB)
    # weights that do not fit the config -> clear error, not a torch traceback
    bigger = ModelConfig.from_dict({**model.cfg.to_dict(), "d_model": 32})
    bigger.to_json(tmp_path / "config.json")
    with pytest.raises(ValueError, match="cannot load weights|do not match"):
        load_model_dir(tmp_path)
    # a config too small for the feature spec
    small = ModelConfig.from_dict({**model.cfg.to_dict(), "seq_len": 4})
    with pytest.raises(ValueError, match="seq_len 4 < feature window 16"):
        save_model_dir(tmp_path / "x", model, small, SPEC, VOCAB)


@pytest.mark.parametrize("name", EXPORTED)
def test_export_parity_on_dynamic_shapes(
    artifacts: dict[str, tuple[Path, Path]], name: str
) -> None:
    model_dir, art = artifacts[name]
    manifest = read_manifest(art)
    assert manifest["parity_max_abs_diff"] <= 1e-4
    shapes = {tuple(c["shape"]) for c in manifest["parity"]["cases"]}
    assert (1, 1) in shapes and (1, 5) in shapes and (3, SPEC.window) in shapes
    assert (3, SPEC.window - 1 + parity.PARITY_CANDIDATES) in shapes
    # inputs and output carry symbolic (batch, seq[, tags]) dims, not baked-in sizes; the stats
    # width is the spec's fixed n_stats
    graph = onnx.load(str(art / "model.onnx")).graph
    assert [i.name for i in graph.input] == list(MODEL_INPUTS)
    assert [o.name for o in graph.output] == ["logits"]
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name == "stats":
            assert len(dims) == 3 and dims[2].dim_value == SPEC.n_stats
            dims = dims[:2]
        symbolic = len(dims) == (3 if value.name == "tags" else 2)
        assert symbolic and all(d.dim_param and not d.dim_value for d in dims), value.name
    # an unseen shape (B=2, T=7, different padding) still matches torch
    model, *_ = load_model_dir(model_dir)
    rng = np.random.default_rng(9)
    batch = collate([encode(random_history(rng, n), SPEC, PARTS) for n in (7, 2)])
    got = ort_session(art / "model.onnx").run(["logits"], {k: batch[k] for k in MODEL_INPUTS})[0]
    with torch.no_grad():
        expected = model(to_torch(batch)).numpy()
    assert got.dtype == np.float32 and got.shape == (2, 7)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_artifact_round_trip(artifacts: dict[str, tuple[Path, Path]]) -> None:
    model_dir, art = artifacts["saint_plus"]
    manifest = read_manifest(art)
    required = {
        "version",
        "model",
        "created_at",
        "data_fingerprint",
        "metrics",
        "opset",
        "onnx_sha256",
        "parity_max_abs_diff",
        "inputs",
        "exporter",
    }
    assert required <= set(manifest)
    assert manifest["model"] == "saint_plus"
    assert (
        manifest["version"].startswith("saint_plus-")
        and manifest["onnx_sha256"][:8] in manifest["version"]
    )
    assert manifest["onnx_sha256"] == sha256_file(art / "model.onnx")
    assert manifest["data_fingerprint"] == "sha256:feedbeef"
    assert manifest["metrics"]["auc"] == 0.71
    assert manifest["exporter"] == "dynamo" and manifest["opset"] >= 17
    spec, vocab = load_spec(art / "feature_spec.json")
    assert spec == SPEC
    np.testing.assert_array_equal(vocab.parts, VOCAB.parts)
    assert ModelConfig.from_json(art / "config.json") == ModelConfig.from_json(
        model_dir / "config.json"
    )
    onnx.checker.check_model(str(art / "model.onnx"))
    assert not [p for p in art.iterdir() if p.name.startswith("tmp")]  # temp dir cleaned up


@pytest.mark.parametrize("name", EXPORTED)
def test_bundle_graph_exported_with_parity(
    artifacts: dict[str, tuple[Path, Path]], name: str
) -> None:
    """SAINT models ship bundle.onnx and items.onnx (the manifest holds their digests and parity);
    they score a bank as the dense graph scores the same candidates."""
    from models.features import CandidateRequest
    from service.predictor import Predictor

    _, art = artifacts[name]
    manifest = read_manifest(art)
    has_bundle = name.startswith("saint")
    assert (art / "bundle.onnx").is_file() == (art / "items.onnx").is_file() == has_bundle
    if not has_bundle:
        assert manifest["bundle_onnx_sha256"] is None and manifest["items_onnx_sha256"] is None
        return
    assert manifest["bundle_onnx_sha256"] == sha256_file(art / "bundle.onnx")
    assert manifest["items_onnx_sha256"] == sha256_file(art / "items.onnx")
    assert 0 <= manifest["bundle_parity_max_abs_diff"] <= 1e-4
    onnx.checker.check_model(str(art / "bundle.onnx"))
    onnx.checker.check_model(str(art / "items.onnx"))
    predictor = Predictor.load(art)
    assert predictor.has_bundle_graph
    rng = np.random.default_rng(3)
    bank = np.arange(2, VOCAB.size + 2)  # every question, and the unknown/extra index range
    bank = bank[bank < VOCAB.size]
    for n in (0, 3, 40):
        history = parity.random_history(rng, n, VOCAB)
        ts = int(history.timestamp[-1]) + 1000 if n else None
        request = CandidateRequest(history, bank, ts)
        dense = np.concatenate(
            predictor.score_dense(
                [CandidateRequest(history, bank[i : i + 5], ts) for i in range(0, len(bank), 5)]
            )
        )
        np.testing.assert_allclose(predictor.score_bundle(request, 5), dense, atol=1e-5)


@pytest.mark.parametrize("removed", [("bundle.onnx", "items.onnx"), ("items.onnx",)])
def test_artifact_without_bank_graphs_scores_by_rows(
    tmp_path: Path,
    artifacts: dict[str, tuple[Path, Path]],
    removed: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An artifact exported before the bank graphs existed, or with the earlier bundle.onnx alone
    (no items.onnx, other inputs), still loads and serves /recommend (tiled rows, a warning)."""
    import shutil

    from models.features import CandidateRequest
    from service.predictor import Predictor

    _, art = artifacts["saint_plus"]
    old = tmp_path / "old"
    shutil.copytree(art, old)
    for name in removed:
        (old / name).unlink()
    with_graph, without = Predictor.load(art), Predictor.load(old)
    assert with_graph.has_bundle_graph and not without.has_bundle_graph
    assert ("two-graph form" in caplog.text) == (len(removed) == 1)
    history = parity.random_history(np.random.default_rng(5), 20, VOCAB)
    request = CandidateRequest(history, np.arange(2, VOCAB.size), int(history.timestamp[-1]) + 1)
    np.testing.assert_allclose(
        without.score_bundle(request, 4), with_graph.score_bundle(request, 4), atol=1e-5
    )


def test_bank_graphs_follow_a_changed_item_table(artifacts: dict[str, tuple[Path, Path]]) -> None:
    """The item-side rows are kept per item table: a table extended by a registered question
    (the unknown question to the model, with its own part and tags) gets rows of its own, and
    each table's bank scores as the dense graph does (the earlier table's rows still served)."""
    from models.features import CandidateRequest
    from models.vocab import ItemTable
    from service.predictor import Predictor

    _, art = artifacts["saint_plus"]
    predictor = Predictor.load(art)
    base = VOCAB.item_table()
    tags = np.zeros((len(base.parts) + 1, base.tags.shape[1]), np.int64)
    tags[:-1] = base.tags
    tags[-1, 0] = base.tags[2, 0]  # the registered question shares a tag with question index 2
    extended = ItemTable(parts=np.append(base.parts, base.parts[2]), tags=tags)
    history = parity.random_history(np.random.default_rng(9), 30, VOCAB)
    ts = int(history.timestamp[-1]) + 1
    for table in (base, extended, base):
        bank = np.arange(1, len(table.parts))
        dense = np.concatenate(predictor.score_dense([CandidateRequest(history, bank, ts)], table))
        got = predictor.score_bundle(CandidateRequest(history, bank, ts), 8, table)
        np.testing.assert_allclose(got, dense, atol=1e-5)


def test_parity_failure_is_reported_and_leaves_no_artifact(
    tmp_path: Path, artifacts: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A valid graph of the wrong model (DKT's) stands in for a broken export of the logistic model.
    wrong_graph = artifacts["dkt"][1] / "model.onnx"

    def fake_export(model: object, path: Path, *args: object, **kwargs: object) -> str:
        Path(path).write_bytes(wrong_graph.read_bytes())
        return "dynamo"

    monkeypatch.setattr(export_mod, "export_onnx", fake_export)
    model_dir = _model_dir(tmp_path, "logistic")
    with pytest.raises(ExportError, match="parity failed.*max abs diff .* > 0.0001"):
        export_artifact(model_dir, tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == []


def test_quantize_artifact(artifacts: dict[str, tuple[Path, Path]]) -> None:
    _, art = artifacts["dkt"]
    path = quantize_artifact(art, runs=5)
    assert path == art / "model.int8.onnx" and path.is_file()
    info = read_manifest(art)["int8"]
    assert info["size_bytes"] > 0 and info["latency_ms"] > 0 and info["fp32_latency_ms"] > 0
    # the quantized graph still runs on every parity shape
    session = ort_session(path)
    for _, batch in parity_batches(SPEC, VOCAB):
        out = session.run(["logits"], {k: batch[k] for k in MODEL_INPUTS})[0]
        assert out.shape == batch["question"].shape and np.isfinite(out).all()


def test_cli_success(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = _model_dir(tmp_path, "logistic")
    assert main(["--model-dir", str(model_dir), "--output-dir", str(tmp_path / "a")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["parity_max_abs_diff"] <= 1e-4
    assert (tmp_path / "a" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-dir", "/nonexistent/dir", "--output-dir", "OUT"], "model directory not found"),
        (["--output-dir", "OUT"], "the following arguments are required: --model-dir"),
        (["--model-dir", "EMPTY", "--output-dir", "OUT"], "missing config.json"),
        (["--model-dir", "EMPTY", "--output-dir", "OUT", "--opset", "3"], "--opset must be"),
    ],
)
def test_cli_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    argv = [
        a.replace("EMPTY", str(tmp_path / "empty")).replace("OUT", str(tmp_path / "o"))
        for a in argv
    ]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.parametrize(
    ("fp32_auc", "int8_auc", "speedup", "max_auc_loss", "kept", "reason"),
    [
        (0.75, 0.7495, 1.5, 0.002, True, "<= max"),  # small loss, faster
        (0.75, 0.76, 1.1, 0.002, True, "<= max"),  # INT8 better (negative loss), faster
        (0.75, 0.748, 1.5, 0.002, True, "<= max"),  # loss == max (0.0020000000000000018 in floats)
        (0.75, 0.5, 1.5, 0.25, True, "<= max"),  # loss == max, exactly representable
        (0.75, 0.745, 1.5, 0.002, False, "AUC loss 0.005 > max"),  # too much AUC lost
        (0.75, 0.7479, 3.0, 0.002, False, "> max"),  # just over the limit, however fast
        (0.75, 0.75, 0.8, 0.002, False, "not faster"),  # no AUC lost, but slower
        (0.75, 0.75, 1.0, 0.002, False, "not faster"),  # exactly as fast: not worth it
        (0.75, 0.75, None, 0.002, False, "not faster"),  # speed not measured
        (0.75, float("nan"), 2.0, 0.002, False, "> max"),  # AUC undefined (one class)
    ],
)
def test_int8_gate_decides_from_its_measurements(
    fp32_auc: float,
    int8_auc: float,
    speedup: float | None,
    max_auc_loss: float,
    kept: bool,
    reason: str,
) -> None:
    decision, why = int8_gate(fp32_auc, int8_auc, speedup, max_auc_loss)
    assert decision is kept
    assert reason in why, why


def test_cli_int8_gate_on_held_out_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--int8 --int8-data`: the gate's rejection end to end through the CLI, forced with
    `--max-auc-loss -1` (no AUC loss is <= -1): INT8 removed, model.onnx and the manifest's
    graph fields untouched, both AUCs and the reason recorded. (The served branch, which needs
    an injected speedup, is test_distill's test_int8_is_served_only_when_it_passes_the_gate.)"""
    from models.config import ModelConfig
    from models.registry import build_model
    from training.data import load_dataset
    from training.simulate import simulate, write
    from training.trainer import prepare_data

    write(simulate(30, seed=3, n_questions=60, mean_length=30.0), tmp_path / "sim")
    sim = tmp_path / "sim"
    inter = load_dataset(sim / "train.csv", sim / "questions.csv")
    data = prepare_data(inter, seq_len=20, validation="none", valid_fraction=0.0, seed=0)
    cfg = ModelConfig(
        name="saint_plus",
        n_questions=data.spec.n_questions,
        n_parts=data.spec.n_parts,
        n_tags=data.spec.n_tags,
        seq_len=20,
        d_model=16,
        n_layers=1,
        n_heads=2,
    )
    torch.manual_seed(0)
    model_dir = save_model_dir(
        tmp_path / "m", build_model(cfg).eval(), cfg, data.spec, data.vocab, {"auc": 0.5}
    )
    argv = ["--model-dir", str(model_dir), "--output-dir", str(tmp_path / "a"), "--int8"]
    data_flags = [
        "--int8-data",
        str(sim / "train.csv"),
        "--questions-file",
        str(sim / "questions.csv"),
    ]
    assert main([*argv, *data_flags, "--max-auc-loss", "-1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = read_manifest(tmp_path / "a")
    info = manifest["int8"]
    assert {"fp32_auc", "int8_auc", "auc_loss", "kept", "speedup", "reason"} <= set(info)
    assert info["kept"] is False and summary["int8"]["kept"] is False
    assert "> max -1" in info["reason"]
    assert 0.3 < info["fp32_auc"] < 0.7 and abs(info["auc_loss"]) < 0.05  # untrained, both ~0.5
    assert not (tmp_path / "a" / "model.int8.onnx").exists()
    assert not (tmp_path / "a" / "model.fp32.onnx").exists()
    # model.onnx is still the fp32 export the manifest (and its version) describes
    assert manifest["onnx_sha256"] == sha256_file(tmp_path / "a" / "model.onnx") != info["sha256"]
    assert manifest["onnx_sha256"][:8] in manifest["version"] == summary["version"]
    assert not manifest["version"].endswith("-int8") and "quantization" not in manifest
    assert manifest["parity_max_abs_diff"] <= 1e-4
    assert manifest["held_out_metrics"]["auc"] == info["fp32_auc"]

    # held-out data of another question bank (a sequence file, ids the model never had) -> one line
    other = tmp_path / "other.txt"
    other.write_text("3\n9001,9002,9003\n1,0,1\n2\n9001,9004\n0,1\n")
    bad = ["--int8-data", str(other)]
    assert main([*argv[:3], str(tmp_path / "b"), "--int8", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --int8-data") and "does not know" in err[-1]
    with pytest.raises(SystemExit) as exited:  # --int8-data without --int8: a flag error
        main([*argv[:4], *data_flags])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --int8-data needs --int8"
