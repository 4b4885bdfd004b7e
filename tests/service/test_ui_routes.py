"""The learner page's and API references' routes, headers and files (the browser tests are in
tests/ui); GET /users (recent learners) and the model-card fields of GET /model."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.ui import STATIC_DIR, UI_CSP
from tests.service.conftest import QUESTION_IDS

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/ui", "/docs", "/redoc"]


def directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


@pytest.mark.parametrize("path", PAGES)
def test_pages_have_no_inline_script_and_a_strict_policy(
    make_client: Callable[..., TestClient], path: str
) -> None:
    page = make_client().get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = directives(page.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"] and policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert page.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, flags=re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", page.text), "inline event handler"
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN


def test_the_learner_page_allows_no_inline_style_either(
    make_client: Callable[..., TestClient],
) -> None:
    assert directives(UI_CSP)["style-src"] == ["'self'"]
    page = make_client().get("/ui").text
    assert "style=" not in page and "<style" not in page
    script = (STATIC_DIR / "ui" / "app.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert ".style" not in script  # styles come from app.css classes


@pytest.mark.parametrize("path", PAGES)
def test_every_file_a_page_references_is_served(
    make_client: Callable[..., TestClient], path: str
) -> None:
    client = make_client()
    for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', client.get(path).text):
        response = client.get(ref)
        assert response.status_code == 200, ref
        kind = "text/javascript" if ref.endswith(".js") else "text/css"
        assert response.headers["content-type"].startswith(kind), ref
        assert response.headers["x-content-type-options"] == "nosniff"
        if "/vendor/" in ref:
            assert "immutable" in response.headers["cache-control"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../config.py",
        "/static/ui/../../config.py",
        "/static/%2e%2e/config.py",
        "/static/vendor/vendor.json",  # only the listed files, not the record
        "/static/ui",
        "/static/nothing.js",
    ],
)
def test_only_the_listed_static_files_are_served(
    make_client: Callable[..., TestClient], path: str
) -> None:
    response = make_client().get(path)
    assert response.status_code == 404
    assert "import" not in response.text


def test_kt_ui_false_removes_the_page_and_keeps_the_references(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(ui=False)
    assert client.get("/ui").status_code == 404
    assert client.get("/static/ui/app.js").status_code == 404
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 200 and root.json()["docs"] == "/docs"
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200
    assert client.get("/static/docs/swagger-init.js").status_code == 200


def test_the_vendored_files_match_their_record() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "vendor_web_assets", ROOT / "scripts" / "vendor_web_assets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.check() == []


def test_recent_users_lists_who_answered_last(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    assert client.get("/users").json() == {"supported": True, "users": []}
    for user in ["u-1", "u-2"]:
        body = {
            "user_id": user,
            "interactions": [{"question_id": QUESTION_IDS[0], "correct": True}],
        }
        assert client.post("/interactions", json=body).status_code == 200
    users = client.get("/users?limit=5").json()["users"]
    assert {u["user_id"] for u in users} == {"u-1", "u-2"}
    assert client.delete("/users/u-1").status_code == 200
    assert [u["user_id"] for u in client.get("/users").json()["users"]] == ["u-2"]
    for bad, field in [("limit=0", "limit"), ("limit=1001", "limit"), ("user=u-2", "user")]:
        response = client.get(f"/users?{bad}")
        assert response.status_code == 422 and response.json()["detail"][0]["field"] == field


def test_the_model_card_fields_and_the_recommend_moment(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    model = client.get("/model").json()
    assert model["int8"] is False and model["content_cold_start"] is True
    assert model["registered_questions"] == 0
    assert client.put("/questions/99999", json={"part": 1, "tags": [1]}).status_code == 201
    assert client.get("/model").json()["registered_questions"] == 1
    body = {"user_id": "u-9", "target_p": 0.5, "k": 3, "timestamp": 123_456}
    assert client.post("/recommend", json=body).json()["at"] == 123_456
    del body["timestamp"]
    assert client.post("/recommend", json=body).json()["at"] > 1_600_000_000_000  # server time
