"""`python -m training.distill`: distil a large SAINT+ teacher into a small student (TextBrewer-style).

Distillation is a `transformers.Trainer` subclass that swaps `compute_loss` (no second loop). The
trained module is `DistillationModule` = student + the learned projections of the intermediate
matches, so Trainer checkpoints hold both and resume restores projections and optimizer exactly.
The teacher(s) are not submodules: they are moved to the device and put in eval mode by hand.

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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer

from models.config import ModelConfig
from models.numeric import sigmoid
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
from training.binary_metrics import binary_metrics
from training.calibration import (
    calibrate_model,
    raw_logits_and_labels,
    window_metrics,
)
from training.cli import DataclassArgumentParser
from training.data import DataError, LogArguments
from training.distill_losses import (
    INTERMEDIATE_LOSS_FUNCTIONS,
    DistillationConfig,
    IntermediateMatch,
    binary_kd_loss,
    temperature_at,
    weight_at,
)
from training.trainer import (
    build_config,
    catalogue_vocab,
    compute_metrics,
    load_and_prepare,
    masked_bce,
    plot_training_curves,
    run_training,
    training_arguments,
)
from training.windows import WindowDataset, collate_windows

logger = logging.getLogger(__name__)


class DistillationModule(nn.Module):
    """Student + learned projections (student dim -> teacher dim), trained together."""

    def __init__(self, student: nn.Module, matches: list[IntermediateMatch]) -> None:
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict(
            {
                str(i): nn.Linear(m.proj[1], m.proj[2])
                for i, m in enumerate(matches)
                if m.proj is not None
            }
        )

    def forward(
        self,
        labels: torch.Tensor | None = None,
        return_features: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
        **inputs: torch.Tensor,
    ) -> Any:
        # One forward (DDP-safe): the student's logits, hidden states and attention maps.
        # num_items_in_batch: a plain Trainer (the scratch student) passes the step's labelled
        # count, as for training.trainer.KTForTraining (see there why the loss must use it).
        out = self.student(
            inputs, output_hidden_states=return_features, output_attentions=return_features
        )
        logits = out["logits"] if return_features else out
        result: dict[str, Any] = {"logits": logits}
        if labels is not None:
            result["loss"] = masked_bce(logits, labels, num_items_in_batch)
        if return_features:
            hidden = list(out["hidden_states"])
            result["hidden_states"] = hidden
            result["attentions"] = list(out["attentions"])
            result["projected"] = {int(k): proj for k, proj in self.projections.items()}
        return result


def check_matches(
    matches: list[IntermediateMatch], teachers: list[nn.Module], student: nn.Module, batch: dict
) -> None:
    """Validate layer indices and dims against real forward passes; clear ValueError if wrong."""
    with torch.no_grad():
        s_out = student(batch, output_hidden_states=True, output_attentions=True)
        t_outs = [t(batch, output_hidden_states=True, output_attentions=True) for t in teachers]
    for i, m in enumerate(matches):
        if not 0 <= m.teacher < len(teachers):
            raise ValueError(
                f"intermediate_matches[{i}]: teacher {m.teacher} out of range (have {len(teachers)})"
            )
        key = "hidden_states" if m.feature == "hidden" else "attentions"
        s_feats, t_feats = s_out[key], t_outs[m.teacher][key]
        if not -len(t_feats) <= m.layer_T < len(t_feats):
            raise ValueError(
                f"intermediate_matches[{i}]: layer_T {m.layer_T} out of range (teacher has {len(t_feats)} layers)"
            )
        if not -len(s_feats) <= m.layer_S < len(s_feats):
            raise ValueError(
                f"intermediate_matches[{i}]: layer_S {m.layer_S} out of range (student has {len(s_feats)} layers)"
            )
        if m.feature == "hidden":
            d_s, d_t = s_feats[m.layer_S].shape[-1], t_feats[m.layer_T].shape[-1]
            if m.proj is None and d_s != d_t:
                raise ValueError(
                    f'intermediate_matches[{i}]: student dim {d_s} != teacher dim {d_t}; add "proj": ["linear", {d_s}, {d_t}]'
                )
            if m.proj is not None and (m.proj[1], m.proj[2]) != (d_s, d_t):
                raise ValueError(
                    f"intermediate_matches[{i}]: proj dims {m.proj[1:]} do not match student {d_s} -> teacher {d_t}"
                )


class DistillationTrainer(Trainer):
    """`Trainer` whose loss is hard-label BCE + soft KD (+ intermediate matches), each logged."""

    def __init__(
        self,
        *args: Any,
        teachers: list[nn.Module],
        distill_config: DistillationConfig,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # compute_loss below returns per-batch means and ignores num_items_in_batch: tell Trainer,
        # so it divides by the accumulation steps itself and does not count labels for us.
        self.model_accepts_loss_kwargs = False
        self.distill_config = distill_config
        self.teachers = [t.to(self.args.device).eval() for t in teachers]
        for t in self.teachers:
            t.requires_grad_(False)
        self._components: dict[str, list[float]] = defaultdict(list)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if (
            not model.training
        ):  # evaluation: plain BCE of the student, comparable with training.train
            out = model(**inputs)
            return (out["loss"], out) if return_outputs else out["loss"]
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        cfg = self.distill_config
        step, total = self.state.global_step, max(self.state.max_steps, 1)
        out = model(return_features=bool(cfg.intermediate_matches), **inputs)
        logits_S = out["logits"]  # (B, T)
        with torch.no_grad():
            t_outs = [
                t(
                    inputs,
                    output_hidden_states=bool(cfg.intermediate_matches),
                    output_attentions=bool(cfg.intermediate_matches),
                )
                for t in self.teachers
            ]
        t_logits = [o["logits"] if cfg.intermediate_matches else o for o in t_outs]
        real = inputs["question"] != 0  # (B, T) non-padding positions

        components: dict[str, torch.Tensor] = {}
        hard_w = weight_at(cfg.hard_label_weight, cfg.hard_label_weight_scheduler, step, total)
        kd_w = weight_at(cfg.kd_loss_weight, cfg.kd_loss_weight_scheduler, step, total)
        loss = logits_S.sum() * 0.0
        if hard_w > 0:
            components["hard"] = masked_bce(logits_S, labels)
            loss = loss + hard_w * components["hard"]
        if kd_w > 0:
            # Soft targets on every real position (context items too: the teacher labels them all).
            z_S = logits_S[real]
            z_T = torch.stack([z[real] for z in t_logits]).float()
            if cfg.kd_loss_type == "mse" or len(t_logits) == 1:
                z_T_mean = z_T.mean(0)
            else:  # average the teachers' soft targets, expressed back as a logit at tau
                tau0 = cfg.temperature
                p = torch.sigmoid(z_T / tau0).mean(0).clamp(1e-6, 1 - 1e-6)
                z_T_mean = torch.log(p / (1 - p)) * tau0
            tau = temperature_at(cfg, step, total, z_S, z_T_mean)
            components["kd"] = binary_kd_loss(z_S, z_T_mean, tau, cfg.kd_loss_type)
            components["temperature"] = tau.detach().float().mean()
            loss = loss + kd_w * components["kd"]
        for i, m in enumerate(cfg.intermediate_matches):
            key = "hidden_states" if m.feature == "hidden" else "attentions"
            f_S = out[key][m.layer_S]
            f_T = t_outs[m.teacher][key][m.layer_T]
            if m.proj is not None:
                f_S = out["projected"][i](f_S)
            value = INTERMEDIATE_LOSS_FUNCTIONS[m.loss](f_S, f_T, real)
            components[f"{m.feature}_{i}_{m.loss}"] = value
            loss = loss + m.weight * value
        for name, value in components.items():
            self._components[name].append(float(value.detach()))
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        # Each loss component, averaged since the last log (tensorboard + progress bar).
        if "loss" in logs and self._components:
            for name, values in self._components.items():
                logs[f"loss_{name}"] = round(float(np.mean(values)), 5)
            self._components.clear()
        super().log(logs, *args, **kwargs)


# ---- evaluation helpers for the report ---------------------------------------------------------


def ensemble_metrics(
    teachers: list[nn.Module], dataset: WindowDataset, cfg: DistillationConfig
) -> dict[str, float]:
    """Metrics of the teachers' averaged soft target, exactly as the student sees it: raw logits,
    probabilities averaged at the distillation temperature, back to a logit at temperature 1."""
    probs: list[np.ndarray] = []
    labels = np.zeros(0)
    for t in teachers:
        logits, labels = raw_logits_and_labels(t, dataset)
        probs.append(sigmoid(logits / cfg.temperature))
    p = np.clip(np.mean(probs, axis=0), 1e-6, 1 - 1e-6)
    p = sigmoid(np.log(p / (1 - p)) * cfg.temperature)
    return {k: float(v) for k, v in binary_metrics(labels, p).items()}


def artifact_latency_ms(artifact_dir: Path, runs: int = 200) -> float:
    """Median ORT latency (ms): batch 1, a full window (T = 100 by default), 1 thread."""
    from models.feature_spec import load_spec
    from training.int8 import latency_batch, ort_latency_ms

    spec, vocab = load_spec(artifact_dir / "feature_spec.json")
    batch = latency_batch(spec, vocab, batch_size=1, length=spec.window)
    return ort_latency_ms(artifact_dir / "model.onnx", batch, threads=1, runs=runs, warmup=20)


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


def write_report_md(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("teacher", "scratch_student", "student") if n in report]
    lines = [
        "| model | AUC | log loss | params | ONNX bytes | ORT latency ms (B=1, T=100, 1 thread, median) |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        r = report[n]
        lines.append(
            f"| {n} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['params']:,} | {r['onnx_bytes']:,} | {r['latency_ms']:.3f} |"
        )
    if "teacher" in report and "student" in report:
        t, s = report["teacher"], report["student"]
        lines.append("")
        lines.append(
            f"Student AUC - teacher AUC: {s['auc'] - t['auc']:+.4f}; latency ratio teacher/student: {t['latency_ms'] / s['latency_ms']:.1f}x"
        )
    if "scratch_student" in report:
        lines.append(
            f"Distilled - scratch student AUC: {report['student']['auc'] - report['scratch_student']['auc']:+.4f}"
        )
    if "student_int8" in report:
        q = report["student_int8"]
        lines.append(
            f"Dynamic INT8 student: AUC {q['int8_auc']:.4f} vs {q['fp32_auc']:.4f} (loss {q['auc_loss']:+.4f}), "
            f"speedup {q.get('speedup')}x -> {'served' if q['kept'] else 'not kept'} ({q['rule']})"
        )
    (out / "report.md").write_text("# Distillation report\n\n" + "\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(names, [report[n]["auc"] for n in names], color=["C0", "C1", "C2"][: len(names)])
    axes[0].set_ylim(
        min(report[n]["auc"] for n in names) - 0.02, max(report[n]["auc"] for n in names) + 0.01
    )
    axes[0].set_ylabel("AUC")
    axes[1].bar(
        names, [report[n]["latency_ms"] for n in names], color=["C0", "C1", "C2"][: len(names)]
    )
    axes[1].set_ylabel("ORT latency ms")
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=100)
    plt.close(fig)


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
