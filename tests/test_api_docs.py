"""docs/api.md documents exactly the API the app serves, and nothing in the repository points
outside it (a clone must stand alone)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from crew_platform.app import create_app
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")
ENDPOINT_HEADING = re.compile(rf"^### ({'|'.join(METHODS)}) (/\S*)$", re.MULTILINE)
# Spelled in pieces so that this file does not contain what it looks for.
OUTSIDE_REFERENCES = (".." + "/shared", "shared" + "/spec")


def served_endpoints(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}"))
    paths = app.openapi()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method.upper() in METHODS
    }


def documented_endpoints(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in ENDPOINT_HEADING.finditer(text)]


def test_endpoint_headings_are_parsed() -> None:
    text = "## Agents\n### GET /api/v1/agents/\nbody\n#### GET /not/this\n### WebSocket /ws/\n"
    assert documented_endpoints(text) == [("GET", "/api/v1/agents/")]


def test_api_doc_documents_every_endpoint_and_no_other(tmp_path: Path) -> None:
    documented = documented_endpoints(API_DOC.read_text(encoding="utf-8"))
    duplicated = sorted({e for e in documented if documented.count(e) > 1})
    served = served_endpoints(tmp_path)
    missing = sorted(served - set(documented))
    extra = sorted(set(documented) - served)
    assert not missing and not extra and not duplicated, (
        f"docs/api.md is out of step with /openapi.json.\n"
        f"Served but not documented (add a '### METHOD /path' section): {missing}\n"
        f"Documented but not served: {extra}\n"
        f"Documented twice: {duplicated}"
    )


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, names):
        path = ROOT / name.decode()
        if path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = tracked_text_files()
    assert ROOT / "Makefile" in files
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if any(reference in line for reference in OUTSIDE_REFERENCES)
    ]
    assert not offenders, "these lines point outside the repository:\n" + "\n".join(offenders)
