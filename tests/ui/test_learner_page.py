"""The learner page (/ui) and the offline API references (/docs, /redoc) in a real Chromium.

Every page runs with the network cut off except the service under test: a request to any other
origin is aborted and fails the test, so nothing may come from a CDN. Every page also fails its test
on a browser console error or an uncaught script error (except the 401/503 tests, whose failed
requests Chromium logs on purpose). Screenshots at desktop and phone width go to docs/ui/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.procs import ServiceProcess, free_port
from tests.ui.conftest import record

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "ui"
LEARNER = "learner-7"
DEADLINE_MS = 30_000  # waits for the page end on what it shows; this only bounds a broken page


class PageProbe:
    """A page whose console errors, script errors and off-origin requests are recorded."""

    def __init__(self, browser: Any, base_url: str, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.base_url = base_url
        self.errors: list[str] = []
        self.external: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(DEADLINE_MS)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.base_url) or url.startswith("data:"):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def goto(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def learner(
    service: ServiceProcess,
    learner_interactions: list[dict[str, Any]],
    learner_lectures: list[dict[str, Any]],
) -> str:
    record(service.url, LEARNER, learner_interactions, lectures=learner_lectures)
    return LEARNER


@pytest.fixture
def probe(browser: Any, service: ServiceProcess) -> Iterator[PageProbe]:
    """A desktop page that must end its test without console errors or off-origin requests."""
    p = PageProbe(browser, service.url)
    yield p
    p.close()
    assert p.external == [], f"requests outside the service: {p.external}"
    assert p.errors == [], f"browser console errors: {p.errors}"


def api(service: ServiceProcess, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, service.url + path, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def open_learner(probe: PageProbe, user_id: str) -> None:
    probe.goto("/")  # redirects to /ui
    assert probe.page.url == probe.base_url + "/ui"
    probe.page.get_by_label("Learner id").fill(user_id)
    probe.page.get_by_role("button", name="Show").click()
    probe.page.wait_for_selector("#timeline[data-answers]", state="attached")
    probe.page.wait_for_selector("#recommendations[data-target]")


def recommended_ids(probe: PageProbe) -> list[int]:
    items = probe.page.locator("#recommendations li[data-question]")
    return [int(q) for q in items.evaluate_all("els => els.map(e => e.dataset.question)")]


def test_the_page_shows_the_learner_history_mastery_and_model(
    probe: PageProbe, service: ServiceProcess, learner: str
) -> None:
    open_learner(probe, learner)
    page = probe.page
    history = api(service, "GET", f"/users/{learner}/history")
    n_answers, n_lectures = len(history["interactions"]), len(history["lectures"])
    assert n_answers > 20 and n_lectures >= 1
    assert page.locator("#timeline .answer").count() == n_answers
    right = sum(i["correct"] for i in history["interactions"])
    assert page.locator("#timeline .answer.correct").count() == right
    summary = page.inner_text("#history-summary")
    assert f"{n_answers} answers ({right} right" in summary and f"{n_lectures} lecture" in summary
    # lectures sit on the timeline between the answers, in time order
    lectures = page.locator("#timeline .lecture")
    assert lectures.count() == n_lectures
    shown = lectures.evaluate_all("els => els.map(e => Number(e.dataset.lecture))")
    assert shown == [x["lecture_id"] for x in history["lectures"]]
    order = page.locator("#timeline .answer, #timeline .lecture").evaluate_all(
        "els => els.map(e => Number(e.dataset.time))"
    )
    assert order == sorted(order)
    # one chart series per part the timeline reports
    page.wait_for_selector("#mastery-chart svg")
    every = -(-n_answers // 30)
    timeline = api(service, "GET", f"/users/{learner}/mastery/timeline?every={every}")
    parts = timeline["points"][-1]["parts"]
    series = page.locator("#mastery-chart svg g.series")
    assert series.count() == len(parts) > 1
    keys = series.evaluate_all("els => els.map(e => Number(e.dataset.key))")
    assert keys == [p["key"] for p in parts]
    page.get_by_label("tags (6 most answered)").check()
    page.wait_for_selector("#mastery-chart svg[data-group=tags]")
    assert 1 <= page.locator("#mastery-chart svg g.series").count() <= 6
    # the model card: the served version, metrics and the calibration plot
    model = api(service, "GET", "/model")
    page.wait_for_selector("#model-card [data-fact=version]")
    assert page.inner_text("#model-card [data-fact=version]") == model["version"]
    assert page.inner_text("#model-card [data-fact=auc]") == f"{model['metrics']['auc']:.4f}"
    assert page.inner_text("#model-card [data-fact=int8]").startswith("no")
    lectures = page.inner_text("#model-card [data-fact=lectures]")
    assert (
        lectures == f"read ({model['known_lectures']} with part and tag)"
        and model["reads_lectures"]
    )
    assert page.locator("#calibration-chart circle").count() >= 3
    # the recent-learners list knows the learner
    page.reload()
    page.wait_for_selector(f"#recent button[data-user='{learner}']")


def test_the_slider_moves_the_recommendations_to_what_recommend_answers(
    probe: PageProbe, service: ServiceProcess, learner: str
) -> None:
    open_learner(probe, learner)
    page = probe.page
    assert page.get_attribute("#recommendations", "data-target") == "0.70"
    before = recommended_ids(probe)
    slider = page.get_by_label("Target P(correct)")
    slider.focus()
    for _ in range(10):  # 0.70 -> 0.20 with the keyboard
        page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#recommendations[data-target='0.20']")
    assert page.inner_text("#target-value") == "0.20"
    after = recommended_ids(probe)
    at = int(page.get_attribute("#recommendations", "data-at") or "0")
    expected = api(
        service,
        "POST",
        "/recommend",
        json={"user_id": learner, "target_p": 0.2, "k": 10, "timestamp": at},
    )
    assert after == [r["question_id"] for r in expected["recommendations"]]
    assert after != before
    shown = page.locator("#recommendations li[data-question]").evaluate_all(
        "els => els.map(e => Number(e.dataset.p))"
    )
    assert shown == pytest.approx([r["p_correct"] for r in expected["recommendations"]])


def test_an_answer_recorded_on_the_page_reaches_the_history(
    probe: PageProbe, service: ServiceProcess, learner: str
) -> None:
    open_learner(probe, learner)
    page = probe.page
    before = api(service, "GET", f"/users/{learner}/history")
    question = recommended_ids(probe)[0]
    page.locator("#recommendations li[data-question] button").first.click()  # fills the box
    assert page.get_by_label("Question id").input_value() == str(question)
    page.get_by_role("radio", name="wrong").check()
    page.get_by_role("button", name="Record answer").click()
    page.wait_for_function(
        "() => document.querySelector('#answer-status').textContent.includes('Recorded')"
    )
    after = api(service, "GET", f"/users/{learner}/history")
    last = after["interactions"][-1]
    assert last["question_id"] == question and last["correct"] is False
    assert last["timestamp"] > before["interactions"][-1]["timestamp"]  # the server's clock
    # (the store keeps the model's window + KT_HISTORY_EXTRA events: the length may stay put)
    assert f"{after['history_length']} events stored" in page.inner_text("#answer-status")
    page.wait_for_function(
        "q => { const a = document.querySelectorAll('#timeline .answer');"
        " return a.length && a[a.length - 1].dataset.question === q"
        " && a[a.length - 1].classList.contains('wrong'); }",
        arg=str(question),
    )
    assert page.locator("#timeline .answer").count() == len(after["interactions"])


def test_a_lecture_recorded_on_the_page_reaches_the_history_and_the_timeline(
    probe: PageProbe, service: ServiceProcess, learner: str
) -> None:
    open_learner(probe, learner)
    page = probe.page
    before = len(api(service, "GET", f"/users/{learner}/history")["lectures"])
    page.get_by_label("Lecture id").fill("424242")
    page.get_by_role("button", name="Record lecture").click()
    page.wait_for_function(
        "() => document.querySelector('#lecture-status').textContent.includes('Recorded')"
    )
    after = api(service, "GET", f"/users/{learner}/history")["lectures"]
    assert len(after) == before + 1 and after[-1]["lecture_id"] == 424242
    page.wait_for_selector("#timeline .lecture[data-lecture='424242']")


def test_the_page_is_usable_with_the_keyboard_alone(
    probe: PageProbe, service: ServiceProcess, learner: str
) -> None:
    probe.goto("/ui")
    page = probe.page
    for _ in range(10):  # the learner id is among the first focus stops
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "user-id":
            break
    assert page.evaluate("document.activeElement.id") == "user-id"
    page.keyboard.type(learner)
    page.keyboard.press("Enter")
    page.wait_for_selector("#timeline[data-answers]")
    for field in ["user-id", "target-p", "answer-question", "api-key"]:  # every input has a label
        assert page.locator(f"label[for={field}]").count() == 1, field


def test_an_injected_user_id_is_shown_as_text(
    probe: PageProbe, service: ServiceProcess, learner: str
) -> None:
    payload = "<script>window.__injected = 1</script><img src=x onerror='window.__injected=2'>"
    probe.goto("/ui#user=" + httpx.QueryParams({"u": payload})["u"].replace(" ", "%20"))
    page = probe.page
    page.wait_for_selector("#banner:not([hidden])")
    assert payload in page.inner_text("#banner")  # the id, verbatim, as text
    assert page.evaluate("window.__injected") is None
    assert page.locator("#banner script, #banner img").count() == 0
    # the same through the form
    page.get_by_label("Learner id").fill(payload)
    page.get_by_role("button", name="Show").click()
    assert payload in page.inner_text("#banner")
    assert page.evaluate("window.__injected") is None


def test_screenshots_at_desktop_and_phone_width(
    browser: Any, service: ServiceProcess, learner: str
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, width, height in [("desktop", 1280, 1000), ("phone", 375, 812)]:
        probe = PageProbe(browser, service.url, width, height)
        try:
            open_learner(probe, learner)
            probe.page.wait_for_selector("#mastery-chart svg")
            probe.page.wait_for_selector("#model-card [data-fact=version]")
            # nothing wider than the viewport: no sideways scrolling on a phone
            assert probe.page.evaluate("document.documentElement.scrollWidth") <= width
            probe.page.screenshot(path=str(SCREENSHOTS / f"learner-{name}.png"), full_page=True)
            assert probe.errors == [] and probe.external == []
        finally:
            probe.close()


def test_a_service_with_a_key_asks_for_it_and_keeps_it_in_session_storage(
    browser: Any, trained_artifact: Path, learner_interactions: list[dict[str, Any]]
) -> None:
    key = "ui-test-key-0123456789"
    svc = ServiceProcess({"KT_MODEL_DIR": str(trained_artifact), "KT_API_KEY": key}).start()
    probe = PageProbe(browser, svc.url)
    try:
        record(svc.url, LEARNER, learner_interactions[:10], key=key)
        probe.goto("/ui")
        page = probe.page
        page.wait_for_selector("#key-panel:not([hidden])")
        assert "401" in page.inner_text("#banner")
        page.get_by_label("Key", exact=True).fill("wrong-key")
        page.get_by_role("button", name="Use key").click()
        page.wait_for_selector("#key-panel:not([hidden])")
        page.wait_for_function(
            "() => document.querySelector('#banner').textContent.includes('refused')"
        )
        page.get_by_label("Key", exact=True).fill(key)
        page.get_by_role("button", name="Use key").click()
        page.wait_for_selector("#model-card [data-fact=version]")
        page.get_by_label("Learner id").fill(LEARNER)
        page.get_by_role("button", name="Show").click()
        page.wait_for_selector("#timeline[data-answers='10']")
        assert page.evaluate("sessionStorage.getItem('kt-api-key')") == key
        assert key not in page.url
        assert probe.context.cookies() == []
        assert page.evaluate("document.cookie") == ""
        assert [e for e in probe.errors if "401" not in e] == []  # only the refused calls
    finally:
        probe.close()
        svc.stop()
        svc.cleanup()


def test_a_store_outage_shows_503_and_the_model_card_still_loads(
    browser: Any, trained_artifact: Path
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    svc = ServiceProcess({"KT_MODEL_DIR": str(trained_artifact), "KT_REDIS_URL": dead}).start(
        require_ready=False
    )
    probe = PageProbe(browser, svc.url)
    try:
        probe.goto("/ui")
        page = probe.page
        page.wait_for_selector("#model-card [data-fact=version]")
        assert "store unavailable" in page.inner_text("#model-card [data-fact=cold-start]")
        page.get_by_label("Learner id").fill(LEARNER)
        page.get_by_role("button", name="Show").click()
        page.wait_for_selector("#banner:not([hidden])")
        page.wait_for_function(
            "() => document.querySelector('#banner').textContent.includes('503')"
        )
        assert "history store unavailable" in page.inner_text("#banner")
        assert [e for e in probe.errors if "503" not in e] == []
    finally:
        probe.close()
        svc.stop()
        svc.cleanup()


def test_swagger_ui_renders_the_operations_without_network(probe: PageProbe) -> None:
    probe.goto("/docs")
    summary = probe.page.locator(".opblock-post .opblock-summary-path[data-path='/predict']")
    summary.first.wait_for()
    assert summary.first.is_visible()
    assert probe.page.locator(".opblock").count() >= 15


# ReDoc 2.5.4 always renders its "API docs by Redocly" logo from cdn.redoc.ly; the page's CSP
# blocks that image (and nothing else), so that one console message is expected.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_redoc_renders_the_operations_without_network(
    browser: Any, service: ServiceProcess
) -> None:
    probe = PageProbe(browser, service.url)
    try:
        probe.goto("/redoc")
        probe.page.get_by_text("/predict", exact=True).first.wait_for()
        assert probe.page.get_by_role(
            "heading", name="Knowledge-tracing prediction service"
        ).count()
        assert [e for e in probe.errors if REDOC_LOGO not in e] == []
        assert probe.external == []
    finally:
        probe.close()


def test_an_unknown_learner_shows_the_empty_state(
    probe: PageProbe, service: ServiceProcess
) -> None:
    open_learner(probe, "nobody-yet")
    page = probe.page
    assert page.get_attribute("#timeline", "data-answers") == "0"
    assert "No answers stored for this learner yet" in page.inner_text("#history-summary")
    page.wait_for_selector("#mastery-chart p")
    assert "No answers yet" in page.inner_text("#mastery-chart")
    assert page.locator("#recommendations li[data-question]").count() == 10  # a new learner's
