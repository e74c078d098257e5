"""The OpenAPI description matches the handlers, and every operation survives fuzzing."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from numeric_edges import edges, numeric_fields, raw_body
from openapi_spec_validator import validate
from schemathesis.checks import negative_data_rejection
from schemathesis.generation import GenerationMode
from service_process import running_service
from tts_service.api import ROUTES
from tts_service.engines.espeak import EspeakEngine
from tts_service.openapi import VISIBLE, build_openapi
from tts_service.settings import Settings

# Examples per operation and mode; raise it for a deeper local run (KUBETTS_FUZZ_EXAMPLES=2000).
FUZZ_EXAMPLES = int(os.environ.get("KUBETTS_FUZZ_EXAMPLES", "100"))
ENGINE = EspeakEngine()  # not loaded: only its voice names are used
VOICES = [v.id for v in ENGINE.voices()] + list(ENGINE.aliases())


def describe(**settings) -> dict:
    return build_openapi(Settings(**settings), VOICES, ENGINE.request_rules())


def test_description_is_valid_openapi():
    validate(describe())


def test_paths_equal_the_registered_routes():
    spec = describe()
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert described == {(method, path) for method, path, _ in ROUTES}


def test_limits_follow_the_settings():
    spec = describe(max_input_chars=77)
    schema = spec["paths"]["/tts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["text"]["maxLength"] == 77


async def test_served_at_openapi_json(client):
    response = await client.get("/openapi.json")
    assert response.status == 200
    body = await response.json()
    assert body == describe()


@pytest.fixture(scope="module")
def fuzz_target():
    # A short input limit keeps each synthesized example fast; everything else is the default.
    with running_service(TTS_MAX_INPUT_CHARS="200", TTS_REQUEST_TIMEOUT_S="20") as service:
        yield service


def operations():
    schema = schemathesis.openapi.from_dict(describe(max_input_chars=200))
    return [result.ok() for result in schema.get_all_operations()]


SYNTHESIS = {"POST /v1/audio/speech", "POST /tts"}
# Hypothesis against a live server. No shrink phase: a failure is reported with schemathesis'
# curl reproduction, and shrinking against a live server can take many minutes.
AGAINST_A_SERVER = dict(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def fuzz_plan() -> list:
    """Every operation with valid input; the ones that take a body also with invalid input."""
    return [
        pytest.param(op, mode, id=f"{op.label}-{mode.value}")
        for op in operations()
        for mode in GenerationMode
        if mode is GenerationMode.POSITIVE or op.label in SYNTHESIS
    ]


@pytest.mark.parametrize(("operation", "mode"), fuzz_plan())
def test_fuzz_every_operation(fuzz_target, operation, mode):
    """Positive cases (what the description allows) must succeed; negative cases (what it
    forbids) must get a 4xx with the error JSON; neither may get a 5xx, hang or crash."""
    seen = {"cases": 0}

    @settings(max_examples=FUZZ_EXAMPLES, **AGAINST_A_SERVER)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=fuzz_target.url, timeout=30)
        seen["cases"] += 1
        assert response.status_code < 500, (response.status_code, response.text[:500])
        if mode is GenerationMode.POSITIVE:
            assert response.status_code == 200, (case.body, response.text[:500])
        elif operation.label in SYNTHESIS and _body_breaks_the_schema(case):
            assert 400 <= response.status_code < 500, (case.body, response.status_code)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["message"] and error["code"]
        if operation.label in SYNTHESIS and response.status_code == 200:
            assert response.content_size > 0
            streamed = "chunked" in response.headers.get("transfer-encoding", [""])[0]
            assert streamed or float(response.headers["x-tts-audio-seconds"][0]) >= 0
        # schemathesis judges a negative case by the one branch it broke; with the body's anyOf
        # (streamable formats) a case can break one branch and satisfy the other. Our own check
        # above validates the whole body, so schemathesis' rejection check is left to it.
        case.validate_response(response, excluded_checks=[negative_data_rejection])

    run()
    FUZZ_CASES[f"{operation.label} {mode.value}"] = seen["cases"]
    assert seen["cases"] >= 1
    assert fuzz_target.get("/healthz") == 200  # still alive


FUZZ_CASES: dict[str, int] = {}


@pytest.mark.parametrize("operation", [op for op in operations() if op.label in SYNTHESIS], ids=str)
def test_numeric_edge_cases_through_schemathesis(fuzz_target, operation):
    """The numeric edge cases (tests/numeric_edges.py) as schemathesis cases against the real server:
    each valid one gets audio, each invalid one a 400 naming the field, and every response passes
    schemathesis' checks against the description (status documented, error body of the Error schema)."""
    route = operation.path
    checked = 0
    for field, schema in numeric_fields(route).items():
        for edge in edges(schema):
            # Raw bytes: an HTTP client's JSON encoder refuses NaN and 5000-digit integers.
            case = operation.Case(body=raw_body(route, field, edge), media_type="application/json")
            response = case.call(base_url=fuzz_target.url, timeout=30)
            expected = 200 if edge.valid else 400
            assert response.status_code == expected, (field, edge.label, response.text[:300])
            if not edge.valid:
                assert response.json()["error"]["param"] == field
            case.validate_response(response, excluded_checks=[negative_data_rejection])
            checked += 1
    assert checked >= len(edges({"type": "number", "minimum": 0, "maximum": 1}))
    assert fuzz_target.get("/healthz") == 200


def _body_breaks_the_schema(case) -> bool:
    """Negative generation may break only a header or the media type; the body is what we judge."""
    schema = case.operation.schema.raw_schema["paths"][case.operation.path]["post"]
    body_schema = schema["requestBody"]["content"]["application/json"]["schema"]
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("voice"), str):
        body = {**body, "voice": body["voice"].lower()}  # voice names are case-insensitive
    try:
        jsonschema.validate(body, _as_json_schema(body_schema))
    except jsonschema.ValidationError:
        return True
    return False


def _as_json_schema(schema):
    """OpenAPI 3.0's ``nullable: true`` spelled as JSON Schema (``null`` added), recursively."""
    if isinstance(schema, list):
        return [_as_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    # The text's pattern is a conservative subset of what the server accepts (any character
    # that is not white space, control or format); the server's rule cannot be spelled in a
    # portable regex, so a text outside the pattern is not held to be invalid.
    converted = {
        k: _as_json_schema(v)
        for k, v in schema.items()
        if k != "nullable" and not (k == "pattern" and v == VISIBLE)
    }
    if schema.get("nullable"):
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


# -- the chattts engine's description: its own fields, fuzzed against a real ChatTTS service -------


def chattts_engine(**settings):
    from tts_service.engines.chattts import ChatTTSEngine

    return ChatTTSEngine(Settings(engine="chattts", **settings))  # not loaded: names and rules only


def describe_chattts(**settings) -> dict:
    engine = chattts_engine(**settings)
    voices = [v.id for v in engine.voices()] + list(engine.aliases())
    return build_openapi(Settings(engine="chattts", **settings), voices, engine.request_rules())


def test_each_engine_describes_the_fields_it_takes():
    validate(describe_chattts())
    validate(describe_chattts(refine_text=True))

    def body(spec, route):
        return spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]

    chattts = body(describe_chattts(), "/v1/audio/speech")["properties"]
    assert {"seed", "temperature", "top_p", "top_k", "speaker_embedding"} <= set(chattts)
    assert chattts["top_k"]["type"] == "integer" and chattts["top_k"]["maximum"] == 626
    assert chattts["instructions"]["maxLength"] == 0  # refinement off: nothing to honour
    refined = body(describe_chattts(refine_text=True), "/tts")["properties"]
    assert "[oral_N][laugh_N][break_N]" in refined["instructions"]["description"]
    espeak = body(describe(), "/v1/audio/speech")["properties"]
    assert not {"seed", "temperature", "top_p", "top_k", "speaker_embedding"} & set(espeak)
    assert espeak["stream_format"]["enum"] == ["audio", "sse"]


def test_the_unknown_token_pattern_agrees_with_the_parser():
    import re

    from tts_service.control_tokens import UNKNOWN_TOKEN_PATTERN, unknown_tokens

    samples = ["[uv_break]", "[laugh_2]", "[laugh_3]", "[speed_5]", "[Note]", "[1]", "a[oral_9]b[lbreak]",
               "[[laugh]]", "[break_7x]", "[uv_break][x]", "plain"]  # fmt: skip
    for text in samples:
        assert bool(re.search(UNKNOWN_TOKEN_PATTERN, text)) == bool(unknown_tokens(text)), text


@pytest.fixture(scope="module")
def chattts_fuzz_target(tmp_path_factory):
    from chattts_checkpoint import build_checkpoint
    from test_chattts_service import env_for

    checkpoint = build_checkpoint(tmp_path_factory.mktemp("chattts-fuzz"))
    env = env_for(checkpoint, TTS_MAX_NEW_TOKENS="16", TTS_MAX_INPUT_CHARS="120", TTS_MAX_WAIT_MS="0")
    with running_service(**env, TTS_REQUEST_TIMEOUT_S="60", TTS_WARMUP="false") as service:
        yield service


CHATTTS_FUZZ_EXAMPLES = max(10, FUZZ_EXAMPLES // 4)


@pytest.mark.parametrize("route", ["/v1/audio/speech", "/tts"])
def test_fuzz_chattts_fields_positive(chattts_fuzz_target, route):
    """What the chattts description allows gets audio: seeds, sampling, seed-N voices, control
    tokens.  One thing JSON Schema cannot say: whether a speaker_embedding string decodes to
    this model's speaker; a random one is a 400 naming that field, nothing else is."""
    schema = schemathesis.openapi.from_dict(describe_chattts(max_input_chars=120))
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().path == route)
    seen = {"cases": 0, "audio": 0}

    @settings(max_examples=CHATTTS_FUZZ_EXAMPLES, **AGAINST_A_SERVER)
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def run(case):
        response = case.call(base_url=chattts_fuzz_target.url, timeout=60)
        seen["cases"] += 1
        if isinstance(case.body, dict) and case.body.get("speaker_embedding") and response.status_code == 400:
            assert response.json()["error"]["param"] == "speaker_embedding"
            return
        assert response.status_code == 200, (json.dumps(case.body), response.text[:500])
        seen["audio"] += 1
        case.validate_response(response, excluded_checks=[negative_data_rejection])

    run()
    assert seen["audio"] >= 1
    assert chattts_fuzz_target.get("/healthz") == 200
