"""The README's curl examples run verbatim against a live service with a demo-sized artifact.

The artifact has the demo's question bank (the simulator's 1,000 questions, seed 0, the bank that
`make serve` builds) and the demo student's architecture (SAINT+ `tiny`, window 100); its weights are
random, which changes the probabilities, not the API's answers. Every bash block of the README that
calls `localhost:8000` runs in bash with `localhost:8000` pointed at the test service and `curl`
wrapped to log each call's status: any non-2xx fails the test unless a comment line just above the
call says `expected here: <status>`.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procs import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO_HOST = "localhost:8000"
EXPECTED = re.compile(r"expected here: (\d{3})")
CURL_CALL = re.compile(r"(?:^|[;|&(]\s*)curl\s")


def api_blocks(text: str) -> list[str]:
    """The ```bash blocks of `text` that call the demo service."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if DEMO_HOST in b and "curl" in b]


def expected_statuses(block: str) -> list[int | None]:
    """Per curl call of `block`, in order: the status a comment above it expects, else None (2xx)."""
    out: list[int | None] = []
    pending: int | None = None
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            match = EXPECTED.search(stripped)
            pending = int(match.group(1)) if match else pending
            continue
        calls = len(CURL_CALL.findall(stripped))
        for _ in range(calls):
            out.append(pending)
            pending = None
    return out


def test_the_parser_finds_every_call_and_its_expectation() -> None:
    block = (
        '# record\ncurl -s localhost:8000/a -d \'{"x": 1,\n  "y": 2}\'\n'
        "curl -s localhost:8000/; curl -s localhost:8000/b | head\n"
        "# (expected here: 422 reload_failed)\ncurl -s -X POST localhost:8000/c \\\n  -d '{}'\n"
    )
    assert expected_statuses(block) == [None, None, None, 422]
    assert api_blocks(f"```bash\n{block}```\n```bash\nmake test\n```") == [block]


@pytest.fixture(scope="module")
def demo_sized_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.config import config_for_spec
    from models.feature_spec import FeatureSpec
    from models.registry import build_model
    from training.artifacts import save_model_dir
    from training.data import load_dataset
    from training.distill import PRESETS
    from training.export import export_artifact
    from training.simulate import simulate, write

    root = tmp_path_factory.mktemp("readme")
    write(simulate(5, seed=0), root / "data")  # the bank is drawn first: the demo's bank
    vocab = load_dataset(root / "data" / "train.csv", root / "data" / "questions.csv").vocab
    spec = FeatureSpec(
        window=100, n_questions=vocab.size, n_parts=vocab.n_parts, n_tags=vocab.n_tags
    )
    demo = PRESETS["lean"]  # the preset `distill --demo` ships
    config = config_for_spec(
        "saint_plus",
        spec,
        vocab,
        d_model=demo["d_model"],
        n_layers=demo["layers"],
        n_heads=demo["heads"],
        encoder_layers=demo["encoder_layers"],
        cross_attention=demo["cross_attention"],
    )
    model_dir = save_model_dir(
        root / "model", build_model(config).eval(), config, spec, vocab, metrics={"auc": 0.5}
    )
    return Path(export_artifact(model_dir, root / "artifact"))


@pytest.fixture(scope="module")
def service(demo_sized_artifact: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess({"KT_MODEL_DIR": str(demo_sized_artifact)})
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
        svc.cleanup()


def test_readme_curl_examples_run_verbatim(service: ServiceProcess, tmp_path: Path) -> None:
    blocks = api_blocks(README.read_text())
    assert blocks, "no README block calls the service"
    status_log = tmp_path / "status.log"
    wrapper = (
        "set -o pipefail\n"
        "curl() {\n"
        "  local out code\n"
        "  out=$(command curl --max-time 30 -w '\\n%{http_code}' \"$@\") || return 1\n"
        "  code=${out##*$'\\n'}\n"
        f"  echo \"$code\" >> '{status_log}'\n"
        "  printf '%s\\n' \"${out%$'\\n'*}\"\n"
        "}\n"
    )
    for block in blocks:
        status_log.unlink(missing_ok=True)
        script = wrapper + block.replace(DEMO_HOST, f"127.0.0.1:{service.port}")
        result = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"block failed:\n{block}\n{result.stdout}\n{result.stderr}"
        statuses = [int(s) for s in status_log.read_text().split()]
        expected = expected_statuses(block)
        assert len(statuses) == len(expected), (statuses, expected)
        for i, (got, want) in enumerate(zip(statuses, expected, strict=True)):
            ok = got == want if want is not None else 200 <= got < 300
            assert ok, (
                f"call {i + 1} of the block answered {got} (expected {want or '2xx'}):\n{block}"
            )
