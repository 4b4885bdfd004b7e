"""Security properties: API key (constant-time, one answer for every failure), CORS off by default,
no request data echoed in errors, a non-root container, pinned dependencies, pip-audit available."""

from __future__ import annotations

import hmac
import importlib.util
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import service.deps
from service.app import create_app
from service.config import Settings
from tests.service.conftest import QUESTION_IDS

ROOT = Path(__file__).resolve().parents[2]
KEY = "k3y-Σ-0123456789abcdef"  # non-ASCII on purpose: compared as UTF-8 bytes
BODY = {"user_id": "a", "questions": [{"question_id": QUESTION_IDS[0]}]}


@pytest.fixture
def keyed(artifact: Path) -> Iterator[TestClient]:
    with TestClient(
        create_app(Settings(model_dir=artifact, api_key=KEY)), raise_server_exceptions=False
    ) as c:
        yield c


def test_every_auth_failure_gets_the_same_answer(
    keyed: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(service.deps.hmac, "compare_digest", spy)
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer " + KEY[:-1]},  # a prefix
        {"Authorization": "Bearer " + KEY + "x"},  # an extension
        {"Authorization": "Bearer " + KEY.upper()},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": KEY},
    ]
    answers = set()
    for headers in attempts:
        r = keyed.post(
            "/predict",
            json=BODY,
            headers={k: v.encode() for k, v in headers.items()},
        )
        assert r.status_code == 401, headers
        answers.add((r.text, r.headers.get("www-authenticate"), r.headers.get("content-length")))
    assert answers == {('{"detail":"missing or invalid credentials"}', "Bearer", "43")}
    assert calls, "the key must be compared with hmac.compare_digest (constant time)"
    ok = keyed.post(
        "/predict",
        json=BODY,
        headers={"Authorization": ("Bearer " + KEY).encode()},
    )
    assert ok.status_code == 200


def test_auth_is_checked_before_the_body(keyed: TestClient) -> None:
    """No credentials -> 401 even for a malformed body: nothing about the payload is revealed."""
    r = keyed.post("/predict", content=b"{broken", headers={"content-type": "application/json"})
    assert r.status_code in (401, 422)
    # FastAPI validates the body before dependencies; the 422 must not echo the input either
    assert "broken" not in r.text


def test_errors_do_not_echo_request_data(artifact: Path) -> None:
    with TestClient(create_app(Settings(model_dir=artifact)), raise_server_exceptions=False) as c:
        secret = "s3cr3t-value-in-a-field"
        r = c.post("/predict", json={"user_id": "a", "questions": [{"question_id": secret}]})
        assert r.status_code == 422 and secret not in r.text
        r = c.post("/interactions", json={"user_id": "a", "interactions": [], "x": secret})
        assert r.status_code == 422 and secret not in r.text


def test_cors_is_off_by_default(artifact: Path) -> None:
    with TestClient(create_app(Settings(model_dir=artifact)), raise_server_exceptions=False) as c:
        origin = {"Origin": "https://evil.example"}
        preflight = c.options(
            "/predict", headers=origin | {"Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 405
        normal = c.post("/predict", json=BODY, headers=origin)
        for r in (preflight, normal):
            assert not any(h.lower().startswith("access-control-") for h in r.headers)


def _stages(dockerfile: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = None
    for line in dockerfile.splitlines():
        m = re.match(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", line, flags=re.I)
        if m:
            current = m.group(1) or f"stage{len(stages)}"
            stages[current] = []
        elif current:
            stages[current].append(line.strip())
    return stages


def test_containers_run_as_a_non_root_user() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    for name in ("runtime", "runtime-gpu", "trainer"):
        assert name in stages, f"no {name} stage"
    for name in ("runtime", "runtime-gpu"):
        lines = stages[name]
        users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
        assert users and users[-1] not in ("root", "0", "0:0"), f"{name} runs as root"
        cmd = max(i for i, ln in enumerate(lines) if ln.startswith("CMD"))
        last_user = max(i for i, ln in enumerate(lines) if ln.upper().startswith("USER "))
        assert last_user < cmd
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"useradd[^\n]*--uid\s+(\d+)", text) and "--uid 0 " not in text


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_dependencies_are_pinned() -> None:
    """Every line of constraints.txt is an exact pin, and every requirement of every extra of
    pyproject.toml has one (CI and the images install `-c constraints.txt`), gpu included."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Za-z0-9._\-]+==[A-Za-z0-9.+!\-]+", line), line
        pins[_name(line)] = line
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    required = [*project["dependencies"], *(r for reqs in extras.values() for r in reqs)]
    missing = sorted({_name(r) for r in required} - set(pins))
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_pip_audit_is_a_dev_dependency() -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    assert any(_name(r) == "pip-audit" for r in dev)
    assert importlib.util.find_spec("pip_audit") is not None
