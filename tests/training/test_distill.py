"""DistillationTrainer (a swapped compute_loss), exact resume with projections, bad configs, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from models.registry import build_model
from training.arguments import (
    ArchitectureArguments,
    DataArguments,
    ModelArguments,
    OptimizationArguments,
    TrainRun,
)
from training.data import LogArguments, load_dataset
from training.distill_losses import DistillationConfig, IntermediateMatch
from training.distill_trainer import DistillationModule, DistillationTrainer, check_matches
from training.simulate import simulate, write
from training.trainer import build_config, prepare_data
from training.windows import collate_windows

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim")
    write(simulate(40, seed=5, mean_length=40), out)
    inter = load_dataset(out / "train.csv", out / "questions.csv")
    prepared = prepare_data(inter, seq_len=20, validation="none", valid_fraction=0.0, seed=0)
    prepared.sim_dir = out  # type: ignore[attr-defined]
    return prepared


def _run(**kw: Any) -> TrainRun:
    """A training run of the argument dataclasses with these fields set (any group)."""
    values = {"train_file": "x", "questions_file": "y", "output_dir": "z", "report_to": "none"}
    values |= {"no_progress": True, "seq_len": 20, **kw}

    def group(cls: Any) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    return TrainRun(
        group(DataArguments),
        group(LogArguments),
        group(ModelArguments),
        group(ArchitectureArguments),
        group(OptimizationArguments),
    )


def _config(data, **kw: Any):
    run = _run(**kw)
    return build_config(run.model, run.arch, data.spec)


def _models(data, seed: int = 0):
    torch.manual_seed(seed)
    teacher = build_model(_config(data, model="saint_plus", d_model=32, layers=2, heads=4))
    student = build_model(_config(data, model="saint_plus", d_model=16, layers=1, heads=2))
    return teacher.eval(), student


MATCHES = [
    {
        "layer_T": 2,
        "layer_S": 1,
        "feature": "hidden",
        "loss": "hidden_mse",
        "weight": 1.0,
        "proj": ["linear", 16, 32],
    },
    {"layer_T": 1, "layer_S": 0, "feature": "attention", "loss": "attention_kl", "weight": 0.5},
]


def _trainer(
    data,
    out: Path,
    max_steps: int,
    teacher,
    student,
    config: DistillationConfig,
    save_steps: int = 2,
):
    from training.trainer import training_arguments

    run = _run(
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=save_steps,
        validation="none",
        learning_rate=5e-3,
        warmup_steps=0,
        save_total_limit=10,
        batch_size=16,
        dropout=0.0,
    )
    targs = training_arguments(
        run.optim, 5e-3, out, has_eval=False, n_train_windows=len(data.train)
    )
    module = DistillationModule(student, config.intermediate_matches)
    return DistillationTrainer(
        model=module,
        args=targs,
        train_dataset=data.train,
        data_collator=collate_windows,
        teachers=[teacher],
        distill_config=config,
    ), module


def test_distillation_steps_lower_the_loss(data, tmp_path: Path) -> None:
    teacher, student = _models(data)
    config = DistillationConfig.from_dict({"temperature": 2.0, "intermediate_matches": MATCHES})
    trainer, module = _trainer(data, tmp_path, 30, teacher, student, config, save_steps=1000)
    batch = collate_windows([data.train[i] for i in range(32)])
    module.train()
    torch.manual_seed(0)
    before = trainer.compute_loss(module, dict(batch)).item()
    trainer.train()
    module.train()
    after = trainer.compute_loss(module, dict(batch)).item()
    assert after < before
    logged = [h for h in trainer.state.log_history if "loss_kd" in h]
    assert logged and {
        "loss_hard",
        "loss_kd",
        "loss_hidden_0_hidden_mse",
        "loss_attention_1_attention_kl",
    } <= set(logged[0])


def test_resume_restores_projections_and_optimizer(data, tmp_path: Path) -> None:
    config = DistillationConfig.from_dict({"intermediate_matches": MATCHES})
    teacher, student = _models(data)
    trainer, module = _trainer(data, tmp_path / "full", 6, teacher, student, config, save_steps=3)
    trainer.train()
    ckpt = tmp_path / "full" / "checkpoints" / "checkpoint-3"
    saved = load_file(str(ckpt / "model.safetensors"))
    assert any(k.startswith("projections.0.") for k in saved), (
        "projection weights are in the checkpoint"
    )
    assert (ckpt / "optimizer.pt").exists() and (ckpt / "scheduler.pt").exists()

    teacher2, student2 = _models(
        data, seed=123
    )  # different init: everything must come from the checkpoint
    teacher2.load_state_dict(teacher.state_dict())
    resumed_trainer, resumed = _trainer(
        data, tmp_path / "resumed", 6, teacher2, student2, config, save_steps=3
    )
    resumed_trainer.train(resume_from_checkpoint=str(ckpt))
    full_state, resumed_state = module.state_dict(), resumed.state_dict()
    assert any(k.startswith("projections.") for k in full_state)
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-6, rtol=0, msg=key)


def test_projections_map_student_dim_to_teacher_dim(data) -> None:
    teacher, student = _models(data)
    matches = DistillationConfig.from_dict({"intermediate_matches": MATCHES}).intermediate_matches
    module = DistillationModule(student, matches)
    assert set(module.projections) == {"0"}  # only the match with a proj gets one
    proj = module.projections["0"]
    assert tuple(proj.weight.shape) == (32, 16)  # Linear(dim_S=16 -> dim_T=32)
    batch = collate_windows([data.train[i] for i in range(3)])
    labels = batch.pop("labels")
    out = module(labels=labels, return_features=True, **batch)
    h_S = out["hidden_states"][1]  # (B, T, 16)
    h_T = teacher(batch, output_hidden_states=True)["hidden_states"][2]  # (B, T, 32)
    assert h_S.shape[-1] == 16 and out["projected"][0](h_S).shape == h_T.shape


def test_several_teachers_average_their_soft_targets(data, tmp_path: Path) -> None:
    """KD target with two teachers = mean of their sigmoid(z_T / tau), by hand."""
    teacher, student = _models(data)
    other, _ = _models(data, seed=7)
    config = DistillationConfig.from_dict(
        {"temperature": 2.0, "kd_loss_type": "bce", "hard_label_weight": 0.0}
    )
    trainer, module = _trainer(data, tmp_path, 1, teacher, student, config)
    trainer.teachers = [teacher, other.eval()]
    batch = collate_windows([data.train[i] for i in range(8)])
    module.train()
    torch.manual_seed(0)
    with torch.no_grad():
        loss = trainer.compute_loss(module, dict(batch)).item()
        features = {k: v for k, v in batch.items() if k != "labels"}
        real = batch["question"] != 0
        torch.manual_seed(0)
        z_S = module.student(features)[real]
        p = (
            torch.sigmoid(teacher(features)[real] / 2) + torch.sigmoid(other(features)[real] / 2)
        ) / 2
        q = torch.sigmoid(z_S / 2)
        expected = (-(p * q.log() + (1 - p) * (1 - q).log())).mean().item() * 4.0
    assert abs(loss - expected) < 1e-4 * max(1.0, abs(expected))
    # and it is not what either teacher alone would give
    trainer.teachers = [teacher]
    torch.manual_seed(0)
    with torch.no_grad():
        alone = trainer.compute_loss(module, dict(batch)).item()
    assert abs(alone - loss) > 1e-6


def test_student_json_config_keeps_every_field(data, tmp_path: Path) -> None:
    from training.distill import student_config, student_spec

    path = tmp_path / "student.json"
    path.write_text(
        json.dumps(
            {
                "name": "saint_plus",
                "d_model": 24,
                "n_layers": 1,
                "n_heads": 3,
                "ffn_mult": 2,
                "dropout": 0.05,
                "time_encoding": "bucket",
                "use_explanation": False,
            }
        )
    )
    student = student_spec(str(path), "saint_plus", _run(time_encoding="both").arch)
    cfg = student_config(student, data.spec)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_mult) == (24, 1, 3, 2)
    assert cfg.time_encoding == "bucket" and cfg.use_explanation is False and cfg.dropout == 0.05
    assert cfg.n_questions == data.spec.n_questions and cfg.seq_len == data.spec.window


def test_bad_matches_are_clear_errors(data) -> None:
    teacher, student = _models(data)
    batch = collate_windows([data.train[i] for i in range(2)])
    batch.pop("labels")
    bad_layer = IntermediateMatch(
        layer_T=9, layer_S=0, feature="hidden", loss="hidden_mse", proj=["linear", 16, 32]
    )
    with pytest.raises(ValueError, match="layer_T 9 out of range"):
        check_matches([bad_layer], [teacher], student, batch)
    no_proj = IntermediateMatch(layer_T=1, layer_S=1, feature="hidden", loss="cos")
    with pytest.raises(ValueError, match="student dim 16 != teacher dim 32"):
        check_matches([no_proj], [teacher], student, batch)
    wrong_proj = IntermediateMatch(
        layer_T=1, layer_S=1, feature="hidden", loss="cos", proj=["linear", 8, 32]
    )
    with pytest.raises(ValueError, match="proj dims"):
        check_matches([wrong_proj], [teacher], student, batch)
    with pytest.raises(ValueError, match="unknown key"):
        DistillationConfig.from_dict(
            {
                "intermediate_matches": [
                    {
                        "layer_T": 0,
                        "layer_S": 0,
                        "feature": "hidden",
                        "loss": "cos",
                        "projection": 1,
                    }
                ]
            }
        )


@pytest.mark.slow
def test_distill_cli_end_to_end(data, tmp_path: Path) -> None:
    sim = data.sim_dir
    dconf = tmp_path / "distill.json"
    dconf.write_text(json.dumps({"temperature": 2.0, "kd_loss_type": "bce"}))
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.distill",
            "--train-file",
            str(sim / "train.csv"),
            "--questions-file",
            str(sim / "questions.csv"),
            "--output-dir",
            str(out),
            "--teacher-preset",
            "tiny",
            "--student",
            "tiny",
            "--distill-config",
            str(dconf),
            "--max-steps",
            "4",
            "--seq-len",
            "20",
            "--report-to",
            "none",
            "--no-progress",
            "--eval-strategy",
            "no",
            "--no-load-best-model-at-end",
            "--save-strategy",
            "steps",
            "--save-steps",
            "2",
            "--ensemble-teacher",
            "dkt",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    first_report = json.loads((out / "report.json").read_text())
    # As if interrupted after step 2: `--resume-from-checkpoint true` reuses the finished teacher,
    # resumes the student from its last checkpoint and ends on the same student.
    import shutil

    shutil.rmtree(out / "student_run" / "checkpoints" / "checkpoint-4")
    resumed = subprocess.run(
        [*run.args, "--resume-from-checkpoint", "true", "--no-baseline"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reusing the teacher already trained" in resumed.stderr
    assert "training the teacher (dkt" not in resumed.stderr  # the ensemble member is reused too
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["auc"] == pytest.approx(first_report["student"]["auc"], abs=1e-9)
    report = first_report
    for name in ("teacher", "student", "scratch_student"):
        assert {"auc", "params", "latency_ms"} <= set(report[name]), name
    # the ensemble: a DKT teacher trained in the same run, its averaged soft target reported
    assert report["ensemble"]["teachers"] == [str(out / "teacher"), str(out / "teacher_dkt")]
    assert 0.0 <= report["ensemble"]["auc"] <= 1.0 and report["ensemble"]["n"] > 0
    assert json.loads((out / "teacher_dkt" / "config.json").read_text())["name"] == "dkt"
    # no validation pass (--eval-strategy no): no calibration, and the metrics do not claim one
    assert "calibration" not in json.loads((out / "student" / "metrics.json").read_text())
    for path in (
        "teacher/config.json",
        "student/model.safetensors",
        "scratch_student/config.json",
        "artifact/model.onnx",
        "artifact/manifest.json",
        "report.md",
        "report.png",
    ):
        assert (out / path).exists(), path


def test_distill_cli_bad_input(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.distill",
            "--output-dir",
            str(tmp_path / "o"),
            "--train-file",
            str(tmp_path / "nope.csv"),
            "--questions-file",
            str(tmp_path / "nope.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 2
    assert "nope.csv does not exist" in run.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def int8_artifact(data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The (untrained) student exported with --int8: model.onnx + model.int8.onnx, measured."""
    from training.artifacts import save_model_dir
    from training.export import export_artifact

    root = tmp_path_factory.mktemp("int8")
    _, student = _models(data)
    config = _config(data, model="saint_plus", d_model=16, layers=1, heads=2)
    save_model_dir(root / "m", student.eval(), config, data.spec, data.vocab)
    art = export_artifact(root / "m", root / "a", int8=True)
    assert (art / "model.int8.onnx").exists()
    return art


@pytest.mark.parametrize(
    ("speedup", "max_auc_loss", "kept", "reason"),
    [
        (2.0, 1.0, True, "<= max"),  # any loss allowed, faster: served
        (0.5, 1.0, False, "not faster"),  # slower here: rejected whatever the AUC
        (2.0, -1.0, False, "> max"),  # no AUC loss can be <= -1: rejected whatever the speed
    ],
)
def test_int8_is_served_only_when_it_passes_the_gate(
    data, int8_artifact: Path, tmp_path: Path, speedup: float, max_auc_loss: float, kept: bool,
    reason: str,
) -> None:  # fmt: skip
    """decide_int8 as distill calls it, each branch forced: the speedup is injected as the
    measurement quantize_artifact records (a tiny model is rarely faster in INT8, so the real
    one cannot be relied on), the AUC side by max_auc_loss. Checks the files and the manifest."""
    import shutil

    from service.predictor import Predictor
    from training.int8 import decide_int8, onnx_logit_diff
    from training.manifest import read_manifest, sha256_file, write_manifest

    art = tmp_path / "a"
    shutil.copytree(int8_artifact, art)
    before = read_manifest(art)
    before["int8"]["speedup"] = speedup
    write_manifest(art, before)
    fp32_sha, int8_sha = sha256_file(art / "model.onnx"), sha256_file(art / "model.int8.onnx")
    assert before["onnx_sha256"] == fp32_sha != int8_sha

    info = decide_int8(art, data.train, max_auc_loss=max_auc_loss)
    manifest = read_manifest(art)
    assert info["kept"] is kept and manifest["int8"] == info and reason in info["reason"]
    assert {"fp32_auc", "int8_auc", "auc_loss", "speedup"} <= set(info)
    assert info["auc_loss"] == pytest.approx(info["fp32_auc"] - info["int8_auc"])
    assert not (art / "model.int8.onnx").exists()  # promoted to model.onnx, or removed
    served = sha256_file(art / "model.onnx")
    # the manifest describes the graph in model.onnx, and the service reports its version
    assert manifest["onnx_sha256"] == served
    assert manifest["onnx_size_bytes"] == (art / "model.onnx").stat().st_size
    assert manifest["onnx_sha256"][:8] in manifest["version"]
    assert Predictor.load(art).version == manifest["version"]
    if kept:
        assert served == int8_sha and sha256_file(art / "model.fp32.onnx") == fp32_sha
        assert manifest["version"].endswith("-int8") and manifest["version"] != before["version"]
        assert manifest["fp32_version"] == before["version"]
        assert manifest["fp32_onnx_sha256"] == fp32_sha
        assert manifest["quantization"] == "dynamic-int8"
        # one served model: the fp32 bundle graph goes (banks are scored from model.onnx rows)
        assert not (art / "bundle.onnx").exists() and manifest["bundle_onnx_sha256"] is None
        assert not (art / "items.onnx").exists() and manifest["items_onnx_sha256"] is None
        assert not Predictor.load(art).has_bundle_graph
        assert not Predictor.load(art).scores_by_bundle  # /predict runs the INT8 model.onnx
        # parity and held-out AUC are the served INT8 graph's, re-measured on it
        expected = onnx_logit_diff(
            art / "model.fp32.onnx", art / "model.onnx", data.spec, data.vocab
        )
        assert manifest["parity"]["max_abs_diff"] == manifest["parity_max_abs_diff"]
        assert manifest["parity_max_abs_diff"] == expected["max_abs_diff"] > 0
        assert manifest["fp32_parity"] == before["parity"]
        assert manifest["held_out_metrics"]["auc"] == info["int8_auc"]
    else:
        assert served == fp32_sha and not (art / "model.fp32.onnx").exists()
        assert manifest["bundle_onnx_sha256"] == sha256_file(art / "bundle.onnx")
        assert manifest["items_onnx_sha256"] == sha256_file(art / "items.onnx")
        for key in ("version", "onnx_sha256", "onnx_size_bytes", "parity", "opset"):
            assert manifest[key] == before[key], key
        assert "quantization" not in manifest
        assert manifest["held_out_metrics"]["auc"] == info["fp32_auc"]


def test_every_distillation_setting_has_a_cli_flag() -> None:
    """Flags override the JSON file field by field; intermediate matches as a JSON string."""
    from training.distill import _build_distill_config, build_parser

    argv = [
        "--output-dir", "o", "--train-file", "t", "--questions-file", "q",
        "--temperature", "3", "--temperature-scheduler", "linear", "--temperature-end", "1.5",
        "--scheduler-beta", "0.5", "--scheduler-gamma", "3", "--kd-loss-type", "kl",
        "--kd-loss-weight", "0.7", "--kd-loss-weight-scheduler", "linear_decay",
        "--hard-label-weight", "0.2", "--hard-label-weight-scheduler", "linear_growth",
        "--intermediate-matches", json.dumps(MATCHES),
    ]  # fmt: skip
    cfg = _build_distill_config(build_parser().parse(argv)[-1])
    assert (cfg.temperature, cfg.temperature_scheduler, cfg.temperature_end) == (3.0, "linear", 1.5)
    assert (cfg.scheduler_beta, cfg.scheduler_gamma, cfg.kd_loss_type) == (0.5, 3.0, "kl")
    assert (cfg.kd_loss_weight, cfg.kd_loss_weight_scheduler) == (0.7, "linear_decay")
    assert (cfg.hard_label_weight, cfg.hard_label_weight_scheduler) == (0.2, "linear_growth")
    assert [m.proj for m in cfg.intermediate_matches] == [["linear", 16, 32], None]
    bad = build_parser().parse([*argv[:6], "--intermediate-matches", "[{"])[-1]
    with pytest.raises(ValueError, match="--intermediate-matches is not JSON"):
        _build_distill_config(bad)


def test_extra_teachers_must_encode_like_the_teacher(data, tmp_path: Path, capsys) -> None:
    import dataclasses

    from training.artifacts import save_model_dir
    from training.distill import main

    teacher, _ = _models(data)
    cfg = _config(data, model="saint_plus", d_model=32, layers=2, heads=4)
    save_model_dir(tmp_path / "t1", teacher, cfg, data.spec, data.vocab)
    other_spec = dataclasses.replace(data.spec, window=data.spec.window + 5)
    other_cfg = dataclasses.replace(cfg, seq_len=other_spec.window)
    save_model_dir(tmp_path / "t2", build_model(other_cfg), other_cfg, other_spec, data.vocab)
    code = main(
        [
            "--output-dir", str(tmp_path / "o"),
            "--train-file", str(data.sim_dir / "train.csv"),
            "--questions-file", str(data.sim_dir / "questions.csv"),
            "--teacher", str(tmp_path / "t1"), "--extra-teacher", str(tmp_path / "t2"),
        ]
    )  # fmt: skip
    assert code == 2
    assert "--extra-teacher" in capsys.readouterr().err.strip().splitlines()[-1]
