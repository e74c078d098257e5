"""Domain errors stay free of HTTP; the API maps them to HTTP in one table."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from tts_service import errors
from tts_service.api import HTTP_ERRORS, error_body, error_response, http_error
from tts_service.engines.chattts_model import ModelError

SERVICE = Path(__file__).resolve().parent.parent / "service" / "tts_service"

# (error class, status, Retry-After, param the API fills in): what clients have always seen.
EXPECTED = [
    (errors.InvalidRequest, 400, None, None),
    (errors.UnknownVoice, 400, None, "voice"),
    (errors.InvalidSpeakerEmbedding, 400, None, "speaker_embedding"),
    (errors.Unauthorized, 401, None, None),
    (errors.NotFound, 404, None, None),
    (errors.MethodNotAllowed, 405, None, None),
    (errors.PayloadTooLarge, 413, None, None),
    (errors.UnsupportedMediaType, 415, None, None),
    (errors.TTSError, 500, None, None),
    (errors.EngineError, 500, None, None),
    (errors.OutOfMemory, 500, None, None),
    (ModelError, 500, None, None),
    (errors.Unavailable, 503, "1", None),
    (errors.QueueFull, 503, "1", None),
    (errors.Draining, 503, "1", None),
    (errors.NotReady, 503, "5", None),
    (errors.EngineFailed, 503, "5", None),
    (errors.StreamBufferFull, 503, "1", None),
    (errors.DeadlineExceeded, 504, None, None),
]


@pytest.mark.parametrize(
    ("cls", "status", "retry_after", "param"), EXPECTED, ids=lambda v: getattr(v, "__name__", v)
)
def test_each_domain_error_has_its_status(cls, status, retry_after, param):
    error = cls("what went wrong")
    response = error_response(error)
    assert response.status == status
    assert response.headers.get("Retry-After") == retry_after
    body = error_body(error, http_error(error))["error"]
    assert body == {
        "message": "what went wrong",
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param,
        "code": error.code,
    }


def test_every_error_class_is_covered_by_the_table_test():
    defined = {
        cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.TTSError)
    }
    assert defined - {cls for cls, *_ in EXPECTED} == {
        errors.ClientDisconnected
    }  # never answered: nobody is left
    assert all(cls in defined or cls is ModelError for cls in HTTP_ERRORS)


def test_unauthorized_names_the_scheme():
    assert (
        error_response(errors.Unauthorized("no key")).headers["WWW-Authenticate"] == 'Bearer realm="kubetts"'
    )


def test_a_param_given_by_the_parser_wins():
    error = errors.InvalidRequest("speed must be a number", param="speed")
    assert error_body(error, http_error(error))["error"]["param"] == "speed"


# The HTTP layer: the routes and error table, the server around them, and the API's description.
HTTP_LAYER = {"api.py", "app.py", "openapi.py"}
# Documents what clients see (help texts such as "503 + Retry-After"), but does no HTTP.
DOCUMENTS_HTTP = {"settings.py"}
# A client of the API over HTTP (kubetts-say): above the API, not below it.
HTTP_CLIENTS = {"say.py"}
BELOW_THE_API = sorted(
    p.relative_to(SERVICE).as_posix()
    for p in SERVICE.rglob("*.py")
    if p.relative_to(SERVICE).as_posix() not in HTTP_LAYER | DOCUMENTS_HTTP | HTTP_CLIENTS
)


def http_in_code(source: str) -> list[str]:
    """What in ``source``'s code (not its docstrings) is about HTTP."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "aiohttp" for a in node.names):
            found.append("import aiohttp")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "aiohttp":
            found.append("from aiohttp import")
        name = getattr(node, "attr", None) or getattr(node, "arg", None) or getattr(node, "id", None)
        if name in {"status", "retry_after_s", "headers"}:
            found.append(name)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [word for word in ("Retry-After", "WWW-Authenticate") if word in node.value]
    return found


@pytest.mark.parametrize("module", BELOW_THE_API)
def test_only_the_api_layer_knows_http(module):
    """Status codes, Retry-After, headers and aiohttp belong to the API layer (api.py); and which
    request field an engine's error concerns is the API's to say (HTTP_ERRORS), not the engine's."""
    source = (SERVICE / module).read_text()
    assert http_in_code(source) == []
    if module.startswith("engines/"):
        assert "param=" not in source


def test_the_http_check_sees_http_in_code():
    assert http_in_code("raise QueueFull('full', retry_after_s=1)") == ["retry_after_s"]
    assert http_in_code("from aiohttp import web") == ["from aiohttp import"]
    assert http_in_code('def f():\n    """Retry-After belongs to the API."""\n') == []
