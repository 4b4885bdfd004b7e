"""Enforces the one-way doors of docs/design.md §1 by reading every module's imports (static, via ast).

models <- training, models <- service; the service never imports training or torch. (training may
use the torch-free `service.predictor`, so evaluation runs the exact serving code path.) bench/ and
tests/ sit on top: no package imports them, bench never imports tests, and `bench/procs.py` (the
process helpers the reliability tests share with the benchmarks) stays light.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

MODELS_THIRD_PARTY = {"numpy", "torch"}
TORCH_FREE_MODELS = {
    "models/__init__.py",
    "models/features.py",
    "models/learner_stats.py",
    "models/feature_spec.py",
    "models/vocab.py",
    "models/config.py",
    "models/numeric.py",
    "models/bundle.py",
}
SERVICE_THIRD_PARTY = {
    "numpy",
    "onnxruntime",
    "redis",
    "fastapi",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "starlette",
    "uvicorn",
}
SERVICE_ALLOWED_PROJECT = {
    "models",
    "models.features",
    "models.feature_spec",
    "models.vocab",
    "models.config",
    "models.numeric",
    "models.bundle",
    "service",
}
# bench/procs.py: what the tests may import from bench without a benchmark's dependencies
BENCH_PROCS_THIRD_PARTY = {"httpx", "redis"}
BENCH_PROCS_ALLOWED_PROJECT = {"service.config", "service.store"}  # the service's Redis layout


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "models":
                names.extend(f"models.{alias.name}" for alias in node.names)
    return names


BENCH_OUTPUT = ROOT / "bench" / "out"  # benchmark outputs (git-ignored; may hold installed tools)


def _files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if BENCH_OUTPUT not in p.parents)


@pytest.mark.parametrize("path", _files("models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_only_torch_numpy_and_models(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    for name in _imports(path):
        top = name.split(".")[0]
        assert top in STDLIB | MODELS_THIRD_PARTY | {"models"}, f"{rel} imports {name}"
        if rel in TORCH_FREE_MODELS:
            assert top != "torch", f"{rel} must stay torch-free (the service imports it)"


@pytest.mark.parametrize("path", _files("service"), ids=lambda p: str(p.relative_to(ROOT)))
def test_service_imports_no_torch_and_no_training(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    for name in _imports(path):
        top = name.split(".")[0]
        if top in {"models", "service"}:
            if top == "models":
                assert name in SERVICE_ALLOWED_PROJECT, f"{rel} imports {name}"
            continue
        assert top in STDLIB | SERVICE_THIRD_PARTY, f"{rel} imports {name} (not allowed in service)"


def test_models_package_import_does_not_load_torch() -> None:
    import subprocess

    code = "import sys, models, models.features; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize(
    "path",
    _files("models") + _files("training") + _files("service") + _files("bench"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_imports_tests_and_no_package_imports_bench(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    for name in _imports(path):
        top = name.split(".")[0]
        assert top != "tests", f"{rel} imports {name} (tests import code, not the other way)"
        if not rel.startswith("bench/"):
            assert top != "bench", f"{rel} imports {name} (bench sits on top of the packages)"


def test_bench_procs_imports_only_stdlib_httpx_redis_and_the_service_layout() -> None:
    path = ROOT / "bench" / "procs.py"
    for name in _imports(path):
        top = name.split(".")[0]
        if top in {"models", "training", "service", "bench", "tests"}:
            assert name in BENCH_PROCS_ALLOWED_PROJECT, f"bench/procs.py imports {name}"
        else:
            assert top in STDLIB | BENCH_PROCS_THIRD_PARTY, f"bench/procs.py imports {name}"


@pytest.mark.parametrize("path", _files("training"), ids=lambda p: str(p.relative_to(ROOT)))
def test_training_modules_are_short_and_say_what_they_own(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    lines = len(path.read_text().splitlines())
    assert lines <= 500, f"{rel}: {lines} lines"
    assert ast.get_docstring(ast.parse(path.read_text())), f"{rel} has no module docstring"


@pytest.mark.parametrize("path", _files("training"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_the_train_entry_point(path: Path) -> None:
    """training.train only parses, calls training.trainer and reports: the shared code lives in
    training.trainer and training.arguments, so nothing imports train.py but for its parser."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "training.train":
            names = {a.name for a in node.names}
            assert names <= {"build_parser", "parse"}, f"{path.relative_to(ROOT)} imports {names}"
