"""The serving artifact's file names and its manifest (`training.export` writes them, `training.int8`
rewrites the manifest when INT8 is served): read/write, the served graph's version and digest."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import onnx

ONNX_FILE = "model.onnx"
# One bundle of N items after a history at O(N x S) attention (SAINT.forward_bundle): what
# /recommend, mastery and the catalogue score a whole bank with (optional; fp32 even under INT8)
BUNDLE_ONNX_FILE = "bundle.onnx"
ITEMS_ONNX_FILE = "items.onnx"  # each item's own part of bundle.onnx's input (models.bundle)
INT8_FILE = "model.int8.onnx"
FP32_FILE = "model.fp32.onnx"  # the fp32 graph, kept next to a served INT8 model.onnx
MANIFEST_FILE = "manifest.json"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def opset_of(path: Path) -> int:
    """The default-domain opset an ONNX file imports."""
    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def artifact_version(
    model_name: str, created: datetime, onnx_sha256: str, quantization: str | None = None
) -> str:
    """`<model>-<UTC time>-<first 8 hex of the served graph's sha256>[-<quantization>]`.

    The service reports it as `model_version`, so it names the graph actually served: an INT8
    graph that replaces model.onnx gets its own digest and the `-int8` suffix.
    """
    version = f"{model_name}-{created:%Y%m%dT%H%M%SZ}-{onnx_sha256[:8]}"
    return f"{version}-{quantization}" if quantization else version


def write_manifest(artifact_dir: str | Path, manifest: dict[str, Any]) -> None:
    (Path(artifact_dir) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(artifact_dir: str | Path) -> dict[str, Any]:
    path = Path(artifact_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ValueError(f"{artifact_dir}: not an artifact directory (no {MANIFEST_FILE})")
    return json.loads(path.read_text())
