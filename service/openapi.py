"""The OpenAPI document of one app, made to describe *its* configuration.

FastAPI documents the static schemas; two things depend on the settings and are patched in here:

* the configurable limits (KT_USER_ID_MAX_LENGTH, KT_MAX_CANDIDATES,
  KT_MAX_INTERACTIONS_PER_REQUEST, KT_MAX_BATCH_LEARNERS) become `maxLength` / `maxItems`, so a
  client (or a schema fuzzer) sees the limits that are really enforced;
* without KT_API_KEY no endpoint needs credentials, so the bearer scheme is removed (it is declared
  on the router and FastAPI would document it either way).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from service.config import Settings

logger = logging.getLogger(__name__)


def _limit(prop: dict[str, Any], key: str, value: int, env: str) -> None:
    """Set `key` (maxLength/maxItems) on a property, also inside an `anyOf` (optional fields)."""
    targets = (
        [prop] if "anyOf" not in prop else [s for s in prop["anyOf"] if s.get("type") != "null"]
    )
    for target in targets:
        target[key] = value
    note = f"At most {value} ({env})."
    prop["description"] = f"{prop['description']} {note}" if prop.get("description") else note


def apply_settings(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Patch a generated OpenAPI dict in place (and return it) with the settings' limits and auth."""
    components = schema.get("components", {}).get("schemas", {})
    user_len = settings.user_id_max_length
    per_model: dict[str, list[tuple[str, str, int, str]]] = {
        "PredictRequest": [
            ("user_id", "maxLength", user_len, "KT_USER_ID_MAX_LENGTH"),
            ("questions", "maxItems", settings.max_candidates, "KT_MAX_CANDIDATES"),
            (
                "interactions",
                "maxItems",
                settings.max_interactions_per_request,
                "KT_MAX_INTERACTIONS_PER_REQUEST",
            ),
        ],
        "InteractionsRequest": [
            ("user_id", "maxLength", user_len, "KT_USER_ID_MAX_LENGTH"),
            (
                "interactions",
                "maxItems",
                settings.max_interactions_per_request,
                "KT_MAX_INTERACTIONS_PER_REQUEST",
            ),
        ],
        "BatchPredictRequest": [
            ("requests", "maxItems", settings.max_batch_learners, "KT_MAX_BATCH_LEARNERS")
        ],
    }
    for model, limits in per_model.items():
        props = components.get(model, {}).get("properties")
        if props is None:
            logger.debug("openapi: no schema %s to annotate with limits", model)
            continue
        for name, key, value, env in limits:
            if name in props:
                _limit(props[name], key, value, env)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", []):
                if param.get("name") == "user_id" and param.get("in") == "path":
                    param["schema"]["maxLength"] = user_len
            if settings.api_key is None:
                operation.pop("security", None)
    if settings.api_key is None:
        schema.get("components", {}).pop("securitySchemes", None)
    return schema


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the patched document at /openapi.json and /docs (built once, on first use)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = apply_settings(build(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
