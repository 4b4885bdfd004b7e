"""Deployment files vs the code, without a Docker engine.

Parses `Dockerfile` and `docker-compose.yml` and checks that they agree with the code: every `KT_*`
variable they set is a `service.config.Settings` field with a valid value; every `python -m X` they
run exists and answers `--help`; healthcheck URLs are routes of the app; ports line up (KT_PORT,
EXPOSE, published ports, healthcheck URLs); the runtime images install only the serving extra (no
torch) and run as a non-root user. A smoke test then runs the compose `api` service's command with
its environment (Dockerfile ENV overlaid by compose `environment`), pointed at a local Redis and a
tiny exported artifact, and checks `/readyz`, `/predict` and the image's own HEALTHCHECK command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from tests.redis_required import skip_without_redis

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
REDIS_URL = "redis://127.0.0.1:6379/0"
RUNTIME_TARGETS = ("runtime", "runtime-gpu")
API_SERVICES = ("api", "api-gpu")
MODULE_RE = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
URL_RE = re.compile(r"https?://([^/'\"\s]+)(/[^'\"\s?#]*)")
VAR_RE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# -- Dockerfile parsing ---------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    parent: str  # image or earlier stage name
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, rest)


def _logical_lines(text: str) -> Iterator[str]:
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continuation
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        yield (buf + line).strip()
        buf = ""
    if buf:
        yield buf.strip()


@cache
def dockerfile() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(DOCKERFILE.read_text()):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            current = stages[name] = Stage(name, parts[0])
        elif current is not None:
            current.instructions.append((word, rest.strip()))
    return stages


def chain(target: str) -> list[Stage]:
    """The stage and the stages it is built FROM (base first)."""
    stages = dockerfile()
    out = [stages[target]]
    while out[0].parent in stages:
        out.insert(0, stages[out[0].parent])
    return out


def instructions(target: str, word: str) -> list[str]:
    return [rest for stage in chain(target) for w, rest in stage.instructions if w == word]


def env_of(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions(target, "ENV"):
        tokens = shlex.split(rest)
        if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def cmd_of(target: str) -> list[str]:
    (last,) = instructions(target, "CMD")[-1:]
    return json.loads(last) if last.startswith("[") else ["sh", "-c", last]


def healthcheck_of(target: str) -> str:
    (last,) = instructions(target, "HEALTHCHECK")[-1:]
    return last.split(" CMD ", 1)[1] if " CMD " in last else last


# -- compose parsing ------------------------------------------------------------------------------
@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(value: str) -> str:
    """Compose `${VAR:-default}` with the defaults (the environment of this test is not the user's)."""
    return VAR_RE.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


def service_env(name: str) -> dict[str, str]:
    env = compose()["services"][name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _as_text(command: Any) -> str:
    return " ".join(command) if isinstance(command, list) else str(command or "")


def service_command(name: str) -> list[str]:
    """The compose service's command, else its build target's CMD."""
    svc = compose()["services"][name]
    command = svc.get("command")
    if command is None:
        return cmd_of(svc["build"]["target"])
    return command if isinstance(command, list) else shlex.split(command)


def container_env(name: str) -> dict[str, str]:
    """What the container sees: the image's ENV overlaid by the compose `environment`."""
    return {**env_of(compose()["services"][name]["build"]["target"]), **service_env(name)}


# -- static checks --------------------------------------------------------------------------------
def test_dockerfile_has_the_documented_targets() -> None:
    assert {"runtime", "trainer", "runtime-gpu"} <= dockerfile().keys()
    for name, svc in compose()["services"].items():
        if "build" in svc:
            assert svc["build"]["target"] in dockerfile(), f"{name}: unknown build target"


def _kt_settings() -> list[tuple[str, str, str]]:
    found = [
        (f"Dockerfile:{target}", key, value)
        for target in dockerfile()
        for key, value in env_of(target).items()
        if key.startswith("KT_")
    ]
    found += [
        (f"compose:{name}", key, value)
        for name in compose()["services"]
        for key, value in service_env(name).items()
        if key.startswith("KT_")
    ]
    return found


def test_every_kt_variable_is_a_valid_setting() -> None:
    found = _kt_settings()
    assert found, "no KT_* variables found: parser broken?"
    fields = {name.upper() for name in Settings.model_fields}
    for where, key, value in found:
        assert key[3:] in fields, f"{where}: {key} is not a Settings field (service/config.py)"
        Settings(**{key[3:].lower(): value})  # the value validates (raises otherwise)


def _commands() -> list[tuple[str, str]]:
    texts = [
        (f"Dockerfile:{t}", " ".join(json.loads(rest)) if rest.startswith("[") else rest)
        for t in dockerfile()
        for w, rest in dockerfile()[t].instructions
        if w in ("CMD", "RUN", "HEALTHCHECK", "ENTRYPOINT")
    ]
    for name, svc in compose()["services"].items():
        texts.append((f"compose:{name}", _as_text(svc.get("command"))))
        texts.append((f"compose:{name}", _as_text((svc.get("healthcheck") or {}).get("test"))))
    return [(where, m) for where, text in texts for m in MODULE_RE.findall(text)]


def test_python_modules_exist_and_answer_help() -> None:
    modules = sorted({m for _, m in _commands()})
    assert "service" in modules
    for where, module in _commands():
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
    for module in modules:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"python -m {module} --help: {proc.stderr[-800:]}"


def _healthchecks() -> list[tuple[str, str, dict[str, str]]]:
    """(where, healthcheck text, environment it runs in)."""
    out = [(f"Dockerfile:{t}", healthcheck_of(t), env_of(t)) for t in RUNTIME_TARGETS]
    for name in API_SERVICES:
        test = (compose()["services"][name].get("healthcheck") or {}).get("test")
        out.append((f"compose:{name}", _as_text(test), container_env(name)))
    return out


def _url_port(host: str, env: dict[str, str]) -> int:
    port = host.rsplit(":", 1)[1] if ":" in host else "80"
    if port == "%s":  # 'http://127.0.0.1:%s/readyz' % os.environ.get('KT_PORT', ...)
        port = env["KT_PORT"]
    return int(port)


def test_healthchecks_hit_app_routes_on_the_service_port() -> None:
    from service.app import create_app

    # the OpenAPI schema lists every route with its methods (included routers are not flattened
    # into app.routes in recent FastAPI versions)
    paths = create_app(Settings()).openapi()["paths"]
    routes = {p for p, methods in paths.items() if "get" in methods}
    for where, text, env in _healthchecks():
        urls = URL_RE.findall(text)
        assert urls, f"{where}: no HTTP healthcheck"
        for host, path in urls:
            assert path in routes, f"{where}: healthcheck path {path} is not a route"
            assert path == "/readyz", f"{where}: healthcheck should be readiness (/readyz)"
            assert _url_port(host, env) == int(env.get("KT_PORT", "8000")), where


def test_ports_match() -> None:
    for target in RUNTIME_TARGETS:
        env = env_of(target)
        assert env.get("KT_HOST") == "0.0.0.0", f"{target}: must listen on all interfaces"
        exposed = {
            int(p.split("/")[0]) for rest in instructions(target, "EXPOSE") for p in rest.split()
        }
        assert exposed == {int(env.get("KT_PORT", "8000"))}, f"{target}: EXPOSE vs KT_PORT"
    for name in API_SERVICES:
        env = container_env(name)
        assert env.get("KT_HOST") == "0.0.0.0", f"{name}: must listen on all interfaces"
        port = int(env.get("KT_PORT", "8000"))
        published = [str(p) for p in compose()["services"][name].get("ports", [])]
        assert published, f"{name}: no published port"
        for mapping in published:
            assert int(mapping.rsplit(":", 1)[-1].split("/")[0]) == port, f"{name}: {mapping}"
        target = compose()["services"][name]["build"]["target"]
        exposed = {int(p) for rest in instructions(target, "EXPOSE") for p in rest.split()}
        assert port in exposed, f"{name}: KT_PORT {port} not EXPOSEd by {target}"


def _pip_installs(target: str) -> list[str]:
    runs = instructions(target, "RUN")
    return [part for run in runs for part in re.split(r"&&|;", run) if "pip install" in part]


def test_runtime_images_serve_only_without_torch_and_not_as_root() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for target, extra in (("runtime", "serve"), ("runtime-gpu", "gpu")):
        installs = _pip_installs(target)
        assert installs, f"{target}: installs nothing?"
        for cmd in installs:
            assert "torch" not in cmd, f"{target}: {cmd}"
            assert re.findall(r"\.\[([\w,-]+)\]", cmd) == [extra], f"{target}: {cmd}"
        assert not any(re.match(r"torch\b", d) for d in extras[extra]), f"extra {extra} has torch"
        copied = " ".join(instructions(target, "COPY"))
        assert "training" not in copied, f"{target} copies the training package"
    assert not any("onnxruntime-gpu" in d for d in extras["serve"])
    assert not any(re.match(r"onnxruntime\b(?!-)", d) for d in extras["gpu"]), "ORT twice"
    for target in ("runtime", "runtime-gpu", "trainer"):
        users = instructions(target, "USER")
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{target} runs as root"


def _requirement_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions these requirements pull in (followed through installed
    metadata, extras and markers included)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    extras: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in extras and set(req.extras) <= extras[name]:
            continue
        extras.setdefault(name, set()).update(req.extras)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        for raw in dist.requires or []:
            sub = Requirement(raw)
            wanted = extras[name] or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(sub)
    return set(extras)


def _third_party_imports(paths: list[Path]) -> set[str]:
    from tests.test_architecture import STDLIB, _imports

    tops = {name.split(".")[0] for path in paths for name in _imports(path)}
    return tops - STDLIB - {"models", "training", "service", "tests", "bench"}


@pytest.mark.parametrize(
    ("target", "extra", "packages"),
    [
        (
            "runtime",
            "serve",
            [
                "service",
                "models/features.py",
                "models/feature_spec.py",
                "models/vocab.py",
                "models/config.py",
            ],
        ),
        ("trainer", "train", ["training", "models", "service/predictor.py"]),
    ],
)
def test_image_extras_provide_every_import_of_the_code_they_run(
    target: str, extra: str, packages: list[str]
) -> None:
    """An image installs base + one extra; every third-party module its code imports (also lazily,
    inside functions) must come from that set, else e.g. the trainer cannot even answer --help."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installs = " ".join(_pip_installs(target))
    assert f".[{extra}]" in installs, f"{target} installs {installs}"
    available = _requirement_closure(
        project["dependencies"] + project["optional-dependencies"][extra]
    )
    if target == "trainer":
        available |= _requirement_closure(["torch==2.13.0"])  # installed first, from the CPU index
    paths = [
        p
        for rel in packages
        for p in ([ROOT / rel] if rel.endswith(".py") else sorted((ROOT / rel).rglob("*.py")))
    ]
    providers = packages_distributions()
    for module in sorted(_third_party_imports(paths)):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {target} code) is not installed here"
        assert dists & available, f"{target}: {module} comes from {dists}, not in base + [{extra}]"


def test_images_own_the_model_volume_mount() -> None:
    """The non-root trainer writes the compose `models` volume: the image must create the mount
    point owned by its user (an empty named volume copies that ownership on first mount)."""
    services = compose()["services"]
    for name in ("model", "api", "api-gpu"):
        target = services[name]["build"]["target"]
        user = instructions(target, "USER")[-1].split(":")[0]
        runs = " ".join(instructions(target, "RUN"))
        for volume in services[name]["volumes"]:
            mount = volume.split(":")[1]
            assert f"mkdir -p {mount}" in runs, f"{target}: {mount} not created"
            assert re.search(rf"chown {user}(:{user})? {re.escape(mount)}\b", runs), (
                f"{target}: {mount} not owned by {user}"
            )


def test_gpu_image_matches_the_pinned_onnxruntime_gpu() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert "onnxruntime-gpu" in pins, "the gpu extra must be pinned too"
    text = DOCKERFILE.read_text()
    said = re.search(
        r"onnxruntime-gpu (\S+) \(pinned in constraints.txt\) is built for CUDA (\d+)", text
    )
    assert said and said.group(1) == pins["onnxruntime-gpu"], "Dockerfile comment vs constraints"
    image = re.search(r"ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.", text)
    assert image and image.group(1) == said.group(2), "CUDA base image major vs onnxruntime-gpu"


def test_compose_publishes_on_loopback_and_passes_the_api_key() -> None:
    for name in API_SERVICES:
        svc = compose()["services"][name]
        for mapping in svc["ports"]:
            assert str(mapping).startswith("127.0.0.1:"), f"{name}: {mapping} open beyond loopback"
        raw = (svc.get("environment") or {}).get("KT_API_KEY")
        assert raw is not None and "${KT_API_KEY" in str(raw), f"{name}: KT_API_KEY not passed"


def test_compose_wiring() -> None:
    services = compose()["services"]
    redis_cmd = _as_text(services["redis"]["command"])
    assert "--appendfsync everysec" in redis_cmd and "--requirepass" in redis_cmd
    assert services["redis"].get("healthcheck"), "redis needs a healthcheck (api waits on it)"
    model_cmd = _as_text(services["model"]["command"])
    assert "training.distill" in model_cmd and "--demo" in model_cmd
    for name in API_SERVICES:
        svc = services[name]
        deps = svc["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["model"]["condition"] == "service_completed_successfully"
        env = container_env(name)
        assert env["KT_REDIS_URL"].endswith("@redis:6379/0")
        assert env.get("KT_ORT_THREADS"), (
            f"{name}: set KT_ORT_THREADS explicitly (docs/service.md: ORT sizes its pool to the host)"
        )
        model_dir = env["KT_MODEL_DIR"]
        # the one-shot builder writes exactly where the api reads, on a volume both mount
        assert f"{model_dir}/model.onnx" in model_cmd, f"{name}: reads {model_dir}"
        out = re.search(r"--output-dir\s+([^\s;&|]+)", model_cmd)
        assert out and f"{out.group(1)}/artifact" == model_dir
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        builder = {v.split(":")[1]: v.split(":")[0] for v in services["model"]["volumes"]}
        shared = [m for m in mounts if model_dir.startswith(m + "/")]
        assert shared and mounts[shared[0]] == builder.get(shared[0]), f"{name}: model volume"
    assert services["api-gpu"].get("profiles") == ["gpu"]
    assert container_env("api-gpu")["KT_PROVIDERS"] == "cuda"


# -- smoke test: the api service's command + environment -----------------------------------------
def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.training.test_replay import build_sim_artifact
    from training.simulate import simulate, write

    root = tmp_path_factory.mktemp("deploy")
    write(simulate(4, 1, n_questions=40, mean_length=20.0), root / "sim")
    return build_sim_artifact(root / "sim" / "questions.csv", root)


def test_api_command_with_compose_environment_serves(tiny_artifact: Path) -> None:
    if not _redis_up():
        skip_without_redis("no Redis at 127.0.0.1:6379")
    import httpx
    import redis

    command = service_command("api")
    assert command[:3] == ["python", "-m", "service"], command
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = f"kt-deploy-test-{uuid.uuid4().hex[:10]}:"
    env = container_env("api")
    # Replace only what points at the container world: Redis host, the model volume, the port
    # (a free one here) and the bind address (loopback on a shared machine).
    env |= {
        "KT_REDIS_URL": REDIS_URL,
        "KT_MODEL_DIR": str(tiny_artifact),
        "KT_PORT": str(port),
        "KT_HOST": "127.0.0.1",
        "KT_KEY_PREFIX": prefix,
    }
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KT_")} | env
    proc = subprocess.Popen(
        [sys.executable, *command[1:]],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, f"api exited: {proc.stdout.read() if proc.stdout else ''}"
        assert ready is not None and ready.status_code == 200, ready.text if ready else "no answer"
        assert ready.json()["store"] != "memory" and ready.json()["store_ok"] is True
        # the image's own HEALTHCHECK command, with the container's environment
        check = healthcheck_of("runtime").replace("|| exit 1", "").strip()
        hc = subprocess.run(
            ["sh", "-c", check.replace("python ", f"{sys.executable} ", 1)],
            env=full_env,
            timeout=10,
            capture_output=True,
        )
        assert hc.returncode == 0, hc.stderr
        qid = int(
            json.loads((tiny_artifact / "feature_spec.json").read_text())["vocab"]["question_ids"][
                0
            ]
        )
        user = "deploy-smoke"
        recorded = httpx.post(
            f"{base}/interactions",
            json={
                "user_id": user,
                "interactions": [{"question_id": qid, "timestamp": 1000, "correct": True}],
            },
        )
        assert recorded.status_code == 200 and recorded.json()["history_length"] == 1
        pred = httpx.post(
            f"{base}/predict",
            json={"user_id": user, "questions": [{"question_id": qid, "timestamp": 5000}]},
        )
        assert pred.status_code == 200, pred.text
        (p,) = pred.json()["predictions"]
        assert 0.0 < p["p_correct"] < 1.0 and pred.json()["history_length"] == 1
        client = redis.Redis.from_url(REDIS_URL)
        assert client.exists(f"{prefix}{{{user}}}:events")  # really on Redis, under our prefix
        httpx.delete(f"{base}/users/{user}")
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
