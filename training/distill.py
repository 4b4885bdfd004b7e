"""`python -m training.distill`: distil a large SAINT+ teacher into a small student (TextBrewer-style).

Distillation is a `transformers.Trainer` subclass that swaps `compute_loss` (no second loop;
`training.distill_trainer`). The trained module is `DistillationModule` = student + the learned
projections of the intermediate matches, so Trainer checkpoints hold both and resume restores
projections and optimizer exactly. The teacher(s) are not submodules: they are moved to the device
and put in eval mode by hand. This module: the teacher and student runs, the demo recipe, the
report (`training.distill_report`) and the CLI.

Output dir: teacher/ (unless --teacher), student/, scratch_student/ (unless --no-baseline),
artifact/ (the exported serving artifact of the student), onnx/<name>/ (exports used for latency),
report.json, report.md, report.png.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer

from models.config import ModelConfig
from models.registry import build_model, count_parameters
from training.arguments import (
    PRESETS,
    ArchitectureArguments,
    DataArguments,
    DistillArchitectureArguments,
    DistillationArguments,
    ModelArguments,
    OptimizationArguments,
    TrainRun,
)
from training.artifacts import load_model_dir, save_model_dir
from training.calibration import (
    calibrate_model,
    window_metrics,
)
from training.cli import DataclassArgumentParser
from training.data import DataError, LogArguments
from training.distill_losses import DistillationConfig
from training.distill_report import artifact_latency_ms, ensemble_metrics, write_report_md
from training.distill_trainer import DistillationModule, DistillationTrainer, check_matches
from training.trainer import (
    build_config,
    catalogue_vocab,
    compute_metrics,
    load_and_prepare,
    plot_training_curves,
    run_training,
    training_arguments,
)
from training.windows import collate_windows

logger = logging.getLogger(__name__)


# ---- CLI ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentSpec:
    """The student's size and architecture; `file_config` is the whole `--student` JSON config when
    one was given (its every field kept: ffn_mult, time_encoding, ...)."""

    model: ModelArguments
    arch: ArchitectureArguments
    file_config: ModelConfig | None = None


def student_spec(
    preset_or_file: str, teacher_model: str, arch: ArchitectureArguments
) -> StudentSpec:
    """--student: a preset (the teacher's registry model at that size) or a ModelConfig JSON."""
    if preset_or_file in PRESETS:
        return StudentSpec(ModelArguments(teacher_model, **PRESETS[preset_or_file]), arch)
    path = Path(preset_or_file)
    if not path.exists():
        raise ValueError(
            f"--student: {preset_or_file!r} is neither a preset ({', '.join(PRESETS)}) nor a file"
        )
    cfg = ModelConfig.from_json(path)
    return StudentSpec(
        ModelArguments(
            cfg.name,
            cfg.d_model,
            cfg.n_layers,
            cfg.n_heads,
            encoder_layers=cfg.encoder_layers,
            cross_attention=cfg.cross_attention,
        ),
        dataclasses.replace(arch, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout),
        cfg,
    )


def teacher_run(
    run: TrainRun, distill: DistillationArguments, model: str | None = None
) -> TrainRun:
    """The run of the teacher (or, with `model`, of an extra ensemble teacher of that registry
    model with the same preset and flags): out/teacher[_<model>], never resumed."""
    out = Path(run.optim.output_dir)
    name = model or distill.teacher_model
    sized = ModelArguments(name, **PRESETS[distill.teacher_preset])
    return dataclasses.replace(run, model=sized).with_output(
        out / ("teacher" if model is None else f"teacher_{model}"), resume_from_checkpoint=None
    )


def _train_teacher(run: TrainRun, distill: DistillationArguments, model: str | None = None) -> Path:
    trun = teacher_run(run, distill, model)
    logger.info(
        "training the teacher (%s, preset %s) into %s",
        trun.model.model,
        distill.teacher_preset,
        trun.optim.output_dir,
    )
    run_training(trun)
    return Path(trun.optim.output_dir)


def _extra_teacher_dirs(run: TrainRun, distill: DistillationArguments) -> list[Path]:
    """--extra-teacher dirs, then the --ensemble-teacher models trained here (reused on resume)."""
    dirs = [Path(p) for p in distill.extra_teacher or []]
    for name in distill.ensemble_teacher or []:
        done = Path(run.optim.output_dir) / f"teacher_{name}"
        if run.optim.resume_from_checkpoint and (done / "model.safetensors").exists():
            dirs.append(done)
        else:
            dirs.append(_train_teacher(run, distill, model=name))
    return dirs


def _build_distill_config(distill: DistillationArguments) -> DistillationConfig:
    if distill.distill_config:
        cfg = DistillationConfig.from_json(Path(distill.distill_config))
    else:
        cfg = DistillationConfig()
    overrides: dict[str, Any] = {
        "temperature": distill.temperature,
        "kd_loss_type": distill.kd_loss_type,
        "kd_loss_weight": distill.kd_loss_weight,
        "hard_label_weight": distill.hard_label_weight,
        "temperature_scheduler": distill.temperature_scheduler,
        "temperature_end": distill.temperature_end,
        "scheduler_beta": distill.scheduler_beta,
        "scheduler_gamma": distill.scheduler_gamma,
        "kd_loss_weight_scheduler": distill.kd_loss_weight_scheduler,
        "hard_label_weight_scheduler": distill.hard_label_weight_scheduler,
        "intermediate_matches": distill.intermediate_match_list(),
    }
    data = cfg.to_dict()
    data.update({k: v for k, v in overrides.items() if v is not None})
    return DistillationConfig.from_dict(data)


def student_config(student: StudentSpec, spec: Any) -> ModelConfig:
    """The student's ModelConfig: from the size flags, or the whole `--student` JSON (its every
    field kept), with the data-dependent sizes (vocabulary, buckets, window) from the data."""
    config = build_config(student.model, student.arch, spec)
    if student.file_config is None:
        return config
    return dataclasses.replace(
        student.file_config,
        n_questions=config.n_questions,
        n_parts=config.n_parts,
        n_tags=config.n_tags,
        n_lag_buckets=config.n_lag_buckets,
        n_elapsed_buckets=config.n_elapsed_buckets,
        n_stats=config.n_stats,
        seq_len=config.seq_len,
    )


def train_student(
    run: TrainRun,
    student: StudentSpec,
    data: Any,
    teachers: list[nn.Module],
    distill_config: DistillationConfig | None,
    output_dir: Path,
) -> tuple[nn.Module, ModelConfig, float, dict[str, Any] | None]:
    """Train a student with distillation (or from scratch when distill_config is None); returns
    (student, its config, training seconds, the calibration report or None when uncalibrated)."""
    config = student_config(student, data.spec)
    torch.manual_seed(run.optim.seed)
    model = build_model(config)
    matches = distill_config.intermediate_matches if distill_config else []
    module = DistillationModule(model, matches)
    if distill_config is not None and matches:
        sample = collate_windows([data.train[i] for i in range(min(4, len(data.train)))])
        sample.pop("labels")
        check_matches(matches, teachers, model, sample)
    has_eval = data.valid is not None and len(data.valid) > 0 and run.optim.eval_strategy != "no"
    learning_rate = run.optim.learning_rate_for(config.name)
    targs = training_arguments(run.optim, learning_rate, output_dir, has_eval, len(data.train))
    common = {
        "model": module,
        "args": targs,
        "train_dataset": data.train,
        "eval_dataset": data.valid if has_eval else None,
        "data_collator": collate_windows,
        "compute_metrics": compute_metrics if has_eval else None,
    }
    trainer: Trainer
    if distill_config is not None:
        trainer = DistillationTrainer(teachers=teachers, distill_config=distill_config, **common)
    else:
        trainer = Trainer(**common)
    started = time.perf_counter()
    resume = run.optim.resume if distill_config is not None else None
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    output_dir.mkdir(parents=True, exist_ok=True)
    plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
    calibration = None
    if has_eval and run.optim.calibration == "platt":
        config, calibration = calibrate_model(module.student, config, data.valid)
        logger.info(
            "student calibration (Platt, validation learners): scale %.3f bias %.3f",
            calibration["scale"],
            calibration["bias"],
        )
    return module.student, config, seconds, calibration


def run_distillation(run: TrainRun, distill: DistillationArguments) -> dict[str, Any]:
    """Teacher(s) -> distilled student (+ scratch student) -> the student's serving artifact and
    the report; `run` holds the data, the shared architecture flags and the Trainer settings (its
    model is the teacher's)."""
    from training.export import export_artifact

    out = Path(run.optim.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if distill.teacher:
        teacher_dir = Path(distill.teacher)
    elif run.optim.resume_from_checkpoint and (out / "teacher" / "model.safetensors").exists():
        teacher_dir = out / "teacher"
        logger.info("resuming: reusing the teacher already trained in %s", teacher_dir)
    else:
        teacher_dir = _train_teacher(run, distill)
    teacher, teacher_cfg, spec, vocab = load_model_dir(teacher_dir)
    extra = []
    extra_dirs = _extra_teacher_dirs(run, distill)
    for path in extra_dirs:
        model, _, extra_spec, extra_vocab = load_model_dir(path)
        if extra_spec != spec or not np.array_equal(extra_vocab.question_ids, vocab.question_ids):
            raise ValueError(
                f"--extra-teacher {path}: its feature spec or question vocabulary differs from the "
                f"teacher's ({teacher_dir}); all teachers must encode the data the same way"
            )
        extra.append(model)
    # the student encodes the data as the teacher does (window, lecture statistics)
    data = load_and_prepare(
        run.data,
        run.log,
        seq_len=spec.window,
        seed=run.optim.seed,
        lecture_stats=spec.lecture_stats,
    )
    if data.spec.n_questions != spec.n_questions:
        raise ValueError(
            f"the teacher's vocabulary ({spec.n_questions}) does not match "
            f"{run.log.questions_file} ({data.spec.n_questions})"
        )
    distill_config = _build_distill_config(distill)
    student = student_spec(distill.student or "tiny", teacher_cfg.name, run.arch)
    (out / "distill_config.json").write_text(json.dumps(distill_config.to_dict(), indent=2))

    results: dict[str, Any] = {}
    student_model, s_cfg, s_seconds, s_calibration = train_student(
        run, student, data, [teacher, *extra], distill_config, out / "student_run"
    )
    # name -> (model, config, training seconds, calibration report to record with its metrics)
    Trained = tuple[nn.Module, ModelConfig, float | None, dict[str, Any] | None]
    trained: dict[str, Trained] = {
        "teacher": (teacher, teacher_cfg, None, None),
        "student": (student_model, s_cfg, s_seconds, s_calibration),
    }
    if not distill.no_baseline:
        trained["scratch_student"] = train_student(
            run, student, data, [], None, out / "scratch_run"
        )

    eval_set = data.valid if data.valid is not None and len(data.valid) else data.train
    # The student's export is the serving artifact; the others are exported only to time them.
    export_dirs = {
        "teacher": out / "onnx" / "teacher",
        "student": out / "artifact",
        "scratch_student": out / "onnx" / "scratch_student",
    }
    if extra:
        results["ensemble"] = ensemble_metrics([teacher, *extra], eval_set, distill_config)
        results["ensemble"]["teachers"] = [str(teacher_dir), *map(str, extra_dirs)]
        logger.info("ensemble of %d teachers: %s", 1 + len(extra), results["ensemble"])
    for name, (model, cfg, seconds, calibration) in trained.items():
        metrics = window_metrics(model, eval_set)
        model_dir = teacher_dir if name == "teacher" else out / name
        if name != "teacher":
            recorded: dict[str, Any] = {
                **metrics,
                "model": name,
                "data_fingerprint": data.fingerprint,
            }
            if calibration is not None:  # as training.train records it (the model card's plot)
                recorded["calibration"] = calibration
            save_model_dir(model_dir, model, cfg, data.spec, catalogue_vocab(data), recorded)
        export_artifact(model_dir, export_dirs[name], int8=distill.int8 and name == "student")
        results[name] = {
            "auc": metrics["auc"],
            "logloss": metrics["logloss"],
            "acc": metrics["acc"],
            "params": count_parameters(model, trainable_only=False),
            "onnx_bytes": (export_dirs[name] / "model.onnx").stat().st_size,
            "latency_ms": artifact_latency_ms(export_dirs[name]),
            "train_seconds": seconds,
            # Platt calibration (fitted on the validation learners these metrics are measured on)
            "calibration": {"scale": cfg.calibration_scale, "bias": cfg.calibration_bias},
        }
        logger.info("%s: %s", name, results[name])
    if distill.int8:
        from training.int8 import decide_int8

        results["student_int8"] = decide_int8(out / "artifact", eval_set)
    report = {
        **results,
        "distill_config": distill_config.to_dict(),
        "eval_n": int(eval_set.n_scored()),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_report_md(report, out)
    return report


def build_parser() -> DataclassArgumentParser:
    parser = DataclassArgumentParser(
        [
            DataArguments,
            LogArguments,
            DistillArchitectureArguments,
            OptimizationArguments,
            DistillationArguments,
        ],
        prog="python -m training.distill",
        description="Distil a SAINT+ teacher into a small student; export the student as the "
        "serving artifact.",
    )
    for action in parser._actions:  # --demo brings its own data
        if action.dest == "train_file":
            action.required = False
    return parser


def apply_demo(
    data: DataArguments,
    log: LogArguments,
    optim: OptimizationArguments,
    distill: DistillationArguments,
) -> tuple[DataArguments, LogArguments, OptimizationArguments, DistillationArguments]:
    """Simulator data and a budget that fits a few minutes on 2 CPU cores: a SAINT+ and a DKT
    teacher distilled into the lean student (unless --student says otherwise), with the scratch
    student as the baseline."""
    from training.simulate import simulate, write

    data_dir = Path(optim.output_dir) / "data"
    if not (data_dir / "train.csv").exists():
        logger.info("demo: simulating 500 learners into %s", data_dir)
        write(simulate(500, seed=optim.seed), data_dir)
    data = dataclasses.replace(data, train_file=str(data_dir / "train.csv"))
    log = dataclasses.replace(log, questions_file=str(data_dir / "questions.csv"))
    optim = dataclasses.replace(
        optim,
        epochs="4",  # 4 trainings (two teachers, student, scratch) within the 5-minute budget
        batch_size=64,
        learning_rate=2e-3,
        early_stopping_patience=0,
        report_to="none",
        save_total_limit=1,
    )
    distill = dataclasses.replace(
        distill,
        teacher_preset="base",
        ensemble_teacher=["dkt"],
        no_baseline=False,
        student=distill.student or "lean",  # what `make serve` ships: one attention block
    )
    return data, log, optim, distill


def parse(argv: list[str] | None) -> tuple[TrainRun, DistillationArguments]:
    """The distillation run of a command line (flags and files checked)."""
    parser = build_parser()
    data, log, arch, optim, distill = parser.parse(argv)
    if distill.demo:
        data, log, optim, distill = apply_demo(data, log, optim, distill)
    if not data.train_file:
        parser.error("--train-file is required (or use --demo)")
    if optim.learning_rate is None:
        optim = dataclasses.replace(optim, learning_rate=1e-3)
    try:  # the data files and every training flag are checked as in training.train
        data.check_files()
        log.check_files()
        distill.check_files()
    except ValueError as exc:
        parser.error(str(exc))
    teacher = ModelArguments(distill.teacher_model, **PRESETS[distill.teacher_preset])
    return TrainRun(data, log, teacher, arch, optim), distill


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from training.export import quiet_exporter_logs

    quiet_exporter_logs()
    run, distill = parse(argv)
    try:
        report = run_distillation(run, distill)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps({k: report[k] for k in ("teacher", "student", "scratch_student") if k in report})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
