"""Vendor the browser assets of /docs and /redoc (Swagger UI, ReDoc) from the npm registry.

    python scripts/vendor_web_assets.py           # fetch, verify, write service/static/vendor/
    python scripts/vendor_web_assets.py --check   # verify the vendored files against vendor.json

Each package is pinned by version and by the registry's sha512 `integrity` of its tarball; the
files taken from it are written under `service/static/vendor/<name>-<version>/` and listed with
their sha256 in `service/static/vendor/vendor.json` (which a test checks, so an edited or
truncated vendored file fails CI). Run only when upgrading a pin: the service never fetches
anything at run time, and `make setup` does not need the network for these files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parents[1] / "service" / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"
PACKAGES = {
    # name: (version, tarball sha512 integrity, files inside the tarball's package/ folder)
    "swagger-ui-dist": (
        "5.35.0",
        "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
        ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"],
    ),
    "redoc": (
        "2.5.4",
        "sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==",
        ["bundles/redoc.standalone.js", "LICENSE"],
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(name: str, version: str, integrity: str) -> bytes:
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data: bytes = response.read()
    got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != integrity:
        raise SystemExit(f"error: {url}: integrity {got} != pinned {integrity}")
    return data


def vendor() -> dict[str, object]:
    record: dict[str, object] = {}
    for name, (version, integrity, members) in PACKAGES.items():
        tarball = fetch(name, version, integrity)
        folder = VENDOR_DIR / f"{name}-{version}"
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for member in members:
                extracted = tar.extractfile(f"package/{member}")
                if extracted is None:
                    raise SystemExit(f"error: {name}-{version}: no file package/{member}")
                data = extracted.read()
                target = folder / Path(member).name
                target.write_bytes(data)
                files[target.name] = sha256(data)
        record[name] = {
            "version": version,
            "tarball": f"{REGISTRY}/{name}/-/{name}-{version}.tgz",
            "integrity": integrity,
            "folder": folder.name,
            "files": files,
        }
    (VENDOR_DIR / "vendor.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def check() -> list[str]:
    """Problems with the vendored files (empty = they match vendor.json)."""
    record = json.loads((VENDOR_DIR / "vendor.json").read_text())
    problems = []
    for name, entry in record.items():
        for file, digest in entry["files"].items():
            path = VENDOR_DIR / entry["folder"] / file
            if not path.is_file():
                problems.append(f"{name}: {path} is missing")
            elif sha256(path.read_bytes()) != digest:
                problems.append(f"{name}: {path} differs from the vendored {entry['version']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify instead of fetching")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 1 if problems else 0
    for name, entry in vendor().items():
        print(f"vendored {name} {entry['version']}: {', '.join(entry['files'])}")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
