"""`python -m service`: run the API under uvicorn (uvloop + httptools). Settings come from KT_* env."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from typing import Any, NoReturn

import uvicorn
from pydantic import ValidationError

from service.config import Settings, get_settings
from service.metrics import MULTIPROC_ENV


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (no usage block)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def _settings_error(exc: ValidationError) -> str:
    """One line naming each bad variable: `error: KT_PORT: Input should be a valid integer ('x')`."""
    problems = [
        f"KT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']} ({e.get('input')!r})"
        for e in exc.errors()
    ]
    return "error: " + "; ".join(problems)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m service",
        description="Knowledge-tracing prediction service. Configuration via KT_* environment variables "
        "(see docs/service.md); the flags below override the matching variables.",
    )
    parser.add_argument("--model-dir", help="artifact directory (KT_MODEL_DIR)")
    parser.add_argument("--host", help="bind address (KT_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (KT_PORT, default 8000)")
    parser.add_argument(
        "--workers", type=int, help="uvicorn worker processes (KT_WORKERS, default 1)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    overrides = {
        k: v
        for k, v in {
            "model_dir": args.model_dir,
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
        }.items()
        if v is not None
    }
    try:
        settings = get_settings()
        if overrides:
            settings = Settings(**{**settings.model_dump(), **overrides})
    except ValidationError as exc:
        sys.stderr.write(_settings_error(exc) + "\n")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("service")
    if settings.workers > 1 and settings.uses_embedded_store:
        log.error(
            "KT_WORKERS=%d needs KT_REDIS_URL: the embedded store is per process", settings.workers
        )
        return 2
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": settings.log_level,
        "access_log": False,  # access logs would carry user ids in paths
        "proxy_headers": False,
    }
    if settings.workers > 1:
        # Workers import the factory and read the same KT_* environment (CLI overrides via env).
        for key, value in overrides.items():
            os.environ[f"KT_{key.upper()}"] = str(value)
        # One metrics directory shared by the workers (prometheus_client multiprocess mode), fresh
        # for this run unless the operator chose one.
        own_dir = None
        if not os.environ.get(MULTIPROC_ENV):
            own_dir = tempfile.mkdtemp(prefix="kt-metrics-")
            os.environ[MULTIPROC_ENV] = own_dir
        log.info(
            "%d workers; metrics aggregated in %s", settings.workers, os.environ[MULTIPROC_ENV]
        )
        try:
            uvicorn.run("service.app:create_app", factory=True, workers=settings.workers, **common)
        finally:
            if own_dir is not None:
                shutil.rmtree(own_dir, ignore_errors=True)
    else:
        from service.app import create_app

        uvicorn.run(create_app(settings), **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
