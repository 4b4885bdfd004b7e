"""The browser side of the service: the learner page (`/ui`) and offline API references (`/docs`,
`/redoc`), all served from files in `service/static/` under a strict Content-Security-Policy.

* `/ui` is one HTML page with our own script and stylesheet (`static/ui/`); it only calls the JSON
  API, with the API key (if any) from `sessionStorage` as a Bearer header. `KT_UI=false` removes
  `/ui` and its files; `/` then answers the JSON index instead of redirecting to `/ui`.
* `/docs` (Swagger UI) and `/redoc` (ReDoc) load their libraries from `static/vendor/`, vendored at
  pinned versions by `scripts/vendor_web_assets.py` (files and sha256 in `static/vendor/vendor.json`):
  nothing is fetched from a CDN, so they render on an air-gapped machine.
* No page has an inline script: every script is a file of this package, which the CSP enforces.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from service.config import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"

_COMMON = "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# The learner page: our own script, stylesheet and fetches only.
UI_CSP = f"{_COMMON}; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'"
# Swagger UI and ReDoc set styles at run time (React style attributes, styled-components' <style>
# tags) and ReDoc runs its search index in a worker built from a blob: URL. Scripts stay 'self'.
DOCS_CSP = (
    f"{_COMMON}; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:"
)
PAGES = ("docs/swagger.html", "docs/redoc.html", "ui/index.html")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class StaticFile:
    path: Path
    media_type: str
    cache_control: str


def _vendored() -> dict[str, Path]:
    """URL path under /static/vendor/ -> file, for every file listed in vendor.json."""
    record = json.loads((VENDOR_DIR / "vendor.json").read_text())
    return {
        f"vendor/{entry['folder']}/{name}": VENDOR_DIR / entry["folder"] / name
        for entry in record.values()
        for name in entry["files"]
    }


def static_files(ui: bool) -> dict[str, StaticFile]:
    """Every file the app serves under /static/ (a fixed table: no path is ever resolved from the
    request). Vendored files have versioned paths and never change: cached for a year."""
    table: dict[str, StaticFile] = {}
    folders = ["docs", "ui"] if ui else ["docs"]
    for folder in folders:
        for path in sorted((STATIC_DIR / folder).iterdir()):
            if path.is_file():
                table[f"{folder}/{path.name}"] = StaticFile(
                    path, _media_type(path), "no-cache"
                )  # revalidated (ETag): a new release shows at once
    for url, path in _vendored().items():
        table[url] = StaticFile(path, _media_type(path), "public, max-age=31536000, immutable")
    return table


def _media_type(path: Path) -> str:
    if path.suffix == ".js":
        return "text/javascript; charset=utf-8"
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def _page(html: str, csp: str) -> HTMLResponse:
    headers = {"Content-Security-Policy": csp, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    return HTMLResponse(html, headers=headers)


def install(app: FastAPI, settings: Settings, api_index: object) -> None:
    """Add /docs, /redoc, /static/… and (with KT_UI) /ui to `app`; `/` redirects to /ui when the
    UI is on, else answers `api_index` (the JSON index, also always at /api)."""
    files = static_files(settings.ui)
    pages = {name: (STATIC_DIR / name).read_text() for name in PAGES}  # read once, at startup
    router = APIRouter(include_in_schema=False)

    @router.get("/static/{file_path:path}")
    async def static(file_path: str) -> Response:
        entry = files.get(file_path)
        if entry is None:
            return Response(
                json.dumps({"detail": f"no static file {file_path!r}"}),
                status_code=404,
                media_type="application/json",
            )
        return FileResponse(
            entry.path,
            media_type=entry.media_type,
            headers={"Cache-Control": entry.cache_control, **SECURITY_HEADERS},
        )

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return _page(pages["docs/swagger.html"], DOCS_CSP)

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return _page(pages["docs/redoc.html"], DOCS_CSP)

    if settings.ui:

        @router.get("/ui")
        async def learner_page() -> HTMLResponse:
            return _page(pages["ui/index.html"], UI_CSP)

        @router.get("/")
        async def root() -> RedirectResponse:
            return RedirectResponse("/ui", status_code=307)

    else:
        router.add_api_route("/", api_index, methods=["GET"])  # type: ignore[arg-type]
    app.include_router(router)
