"""The HTTP API driven from its own OpenAPI schema (schemathesis): never a 5xx, whatever it is
sent, and every answer (status, content type, body) as the schema documents it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from app.centrifugo_api import METHODS as CENTRIFUGO_METHODS
from tests.support import API_HEADERS, AppProcess, running

EXAMPLES = 25  # per operation; about 800 requests in all, a few seconds
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",  # app/api_schemas.py: no field a model does not declare
]


def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(tmp_path: Path) -> None:
    with running(AppProcess("fuzz", tmp_path, {"SWITCHBOARD_DOCS": "true"})) as (app,):
        paths = httpx.get(f"{app.http}/openapi.json").json()["paths"]
        assert {"/api", *(f"/api/{method}" for method in CENTRIFUGO_METHODS)} <= set(paths)  # fuzzed too
        [(name, value)] = API_HEADERS.items()
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{app.http}/openapi.json",
                "--header",
                f"{name}: {value}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # it keeps a cache of its own in the working directory
        )
    summary = result.stdout[-3000:]
    print(summary)
    assert result.returncode == 0, summary
    assert " passed" in summary
    assert "Tested: 30" in summary  # every operation: the server API's thirteen, Centrifugo's shape twelve
