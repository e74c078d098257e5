"""Numeric edge cases for every numeric field of every synthesis route, from the API's own description.

Each case is a raw JSON token, so a body can say what an HTTP client's JSON encoder will not
(a 5000-digit integer, ``NaN``), and whether the field must accept it.  New numeric fields in the
OpenAPI description are covered without touching the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tts_service.engines import RequestRules
from tts_service.openapi import build_openapi
from tts_service.settings import Settings

ESPEAK_RULES = RequestRules("espeak")

SYNTHESIS_ROUTES = {"/v1/audio/speech": "input", "/tts": "text"}  # route -> its text field


@dataclass(frozen=True)
class Edge:
    label: str
    token: str  # the JSON text of the value
    valid: bool


def numeric_fields(route: str, rules: RequestRules = ESPEAK_RULES) -> dict[str, dict]:
    """The numeric properties of ``route``'s request body for an engine taking ``rules``: name -> schema."""
    spec = build_openapi(Settings(), [], rules)
    body = spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {
        name: schema
        for name, schema in body["properties"].items()
        if schema.get("type") in ("number", "integer")
    }


def edges(schema: dict) -> list[Edge]:
    """Cases for one field: its bounds (valid), just past them, and every hostile spelling."""
    lo, hi = schema["minimum"], schema["maximum"]
    integer = schema["type"] == "integer"
    cases = [
        Edge("minimum", json.dumps(lo), True),
        Edge("maximum", json.dumps(hi), True),
        Edge("maximum as an exponent", f"{hi:e}", True),
        Edge("below the minimum", json.dumps(lo - 1 if integer else lo - 1e-9), False),
        Edge("above the maximum", json.dumps(hi + 1 if integer else hi + 1e-9), False),
        Edge("huge integer (5000 digits)", "9" * 5000, False),
        Edge("huge negative integer (5000 digits)", "-" + "9" * 5000, False),
        Edge("1 followed by 330 zeros", "1" + "0" * 330, False),
        Edge("integer just longer than a machine word", str(10**40), False),
        Edge("1e309 (overflows to infinity)", "1e309", False),
        Edge("-1e309", "-1e309", False),
        Edge("1e-400 (underflows to 0)", "1e-400", lo <= 0 <= hi),
        Edge("-0", "-0", lo <= 0 <= hi),
        Edge("-0.0", "-0.0", lo <= 0 <= hi),
        Edge("NaN token", "NaN", False),
        Edge("Infinity token", "Infinity", False),
        Edge("-Infinity token", "-Infinity", False),
        Edge("number as a string", json.dumps(str(hi)), False),
        Edge("true", "true", False),
        Edge("false", "false", False),
        Edge("array", f"[{json.dumps(hi)}]", False),
        Edge("object", '{"value": 1}', False),
    ]
    if integer:
        cases.append(Edge("a fraction", json.dumps(lo + 0.5), False))
    return cases


def raw_body(route: str, field: str, edge: Edge) -> bytes:
    """A request body with ``field`` set to the edge's token, as bytes on the wire."""
    return f'{{"{SYNTHESIS_ROUTES[route]}": "Hello.", "{field}": {edge.token}}}'.encode()


def cases(rules: RequestRules = ESPEAK_RULES) -> list[tuple[str, str, Edge]]:
    """(route, field, edge) for every numeric field of every synthesis route."""
    return [
        (route, field, edge)
        for route in SYNTHESIS_ROUTES
        for field, schema in numeric_fields(route, rules).items()
        for edge in edges(schema)
    ]
