"""Startup/shutdown, readiness and hot reload (endpoint and SIGHUP) of one service instance."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from pathlib import Path

from service.config import Settings
from service.deps import ApiError, ServiceState
from service.predictor import ArtifactError, Predictor
from service.schemas import ReadyResponse, ReloadResponse
from service.store import HistoryStore, MemoryHistoryStore, RedisHistoryStore, StoreUnavailable

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (<malloc.h>)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def hold_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the kernel: blocks up to
    32 MiB come from the heap (not a fresh mmap each) and the heap is trimmed only past 256 MiB
    free. Scoring a whole bank allocates numpy arrays of ~1 MB; by default each is a new mmap, so
    every call paid ~1,900 page faults (Riiid bank encoding: 5.4 -> 3.6 ms, docs/service.md).
    False where the C library is not glibc (nothing changes there)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    )


def build_store(settings: Settings) -> HistoryStore:
    if settings.uses_embedded_store:
        logger.warning(
            "KT_REDIS_URL is unset: using the EMBEDDED in-process history store (the default). "
            "Histories live in this process only and are lost on restart; not for multi-worker use."
        )
        return MemoryHistoryStore(ttl_s=settings.history_ttl_s)
    assert settings.redis_url is not None
    store = RedisHistoryStore(
        settings.redis_url,
        ttl_s=settings.history_ttl_s,
        timeout_s=settings.redis_timeout_s,
        key_prefix=settings.key_prefix,
        cluster=settings.redis_cluster,
    )
    logger.info(
        "history store: Redis%s (key prefix %r, timeout %.3fs)",
        " Cluster" if store.cluster else "",
        settings.key_prefix,
        settings.redis_timeout_s,
    )
    return store


def _load(state: ServiceState, model_dir: Path) -> Predictor:
    """Load an artifact (off the loop) and prepare its bank now, not in the first request that
    scores: the item-side rows (items.onnx: every scoring call reads them, and a /predict runs on
    the loop; the Riiid bank: ~11 ms once) and the questions' content groups (a whole bank's
    encoding reads them, `ItemTable.content_groups`; the Riiid bank: ~12 ms once)."""
    settings = state.settings
    predictor = Predictor.load(
        model_dir, providers=settings.providers, threads=settings.ort_threads
    )
    items = state.catalogue.bank(predictor.vocab).items
    if predictor.has_bundle_graph:
        predictor.item_side_rows(items)
    _ = items.content_groups  # computed once and kept by the table
    return predictor


async def load_initial_model(state: ServiceState) -> None:
    """Load KT_MODEL_DIR at startup; a configured but broken artifact stops the start (fail fast)."""
    model_dir = state.settings.model_dir
    if model_dir is None:
        state.load_error = "KT_MODEL_DIR is unset"
        logger.warning("KT_MODEL_DIR is unset: no model loaded; /readyz reports not ready")
        return
    loop = asyncio.get_running_loop()
    state.predictor = await loop.run_in_executor(state.executor, _load, state, model_dir)
    state.metrics.set_model(state.predictor.version, state.predictor.model_name)


async def reload_model(state: ServiceState, model_dir: str | None = None) -> ReloadResponse:
    """Load a new artifact off the loop and swap it in; on failure keep the old one (422 + reason)."""
    async with state.reload_lock:
        old = state.predictor
        target = (
            Path(model_dir)
            if model_dir
            else (state.settings.model_dir if old is None else old.artifact_dir)
        )
        if target is None:
            raise ApiError(
                422, "no model_dir given and KT_MODEL_DIR is unset", ["body", "model_dir"]
            )
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(state.executor, _load, state, target)
        except ArtifactError as exc:
            state.metrics.reloads.labels("failed").inc()
            kept = old.version if old else "none"
            logger.error("model reload from %s failed (still serving %s): %s", target, kept, exc)
            raise ApiError(
                422,
                f"reload failed, still serving version {kept}: {exc}",
                ["body", "model_dir"],
                "reload_failed",
            ) from exc
        state.predictor = new  # one reference assignment: requests in flight keep the old predictor
        state.load_error = None
        state.metrics.reloads.labels("ok").inc()
        state.metrics.set_model(new.version, new.model_name)
        logger.info("model reloaded: %s -> %s", old.version if old else None, new.version)
        return ReloadResponse(
            reloaded=True,
            version=new.version,
            previous_version=old.version if old else None,
            artifact_dir=str(target),
        )


async def readiness(state: ServiceState) -> ReadyResponse:
    reasons: list[str] = []
    predictor = state.predictor
    if predictor is None:
        reasons.append(f"no model loaded ({state.load_error or 'unknown reason'})")
    elif not predictor.provider_ok:
        reasons.append(
            f"requested {predictor.requested_providers[0]} but active providers are {predictor.active_providers}"
        )
    store_ok = True
    try:
        await state.store.ping()
    except StoreUnavailable as exc:
        store_ok = False
        reasons.append(str(exc))
    return ReadyResponse(
        ready=not reasons,
        model_loaded=predictor is not None,
        model_version=predictor.version if predictor else None,
        store=state.store.kind,
        store_ok=store_ok,
        providers=predictor.active_providers if predictor else [],
        reasons=reasons,
    )
