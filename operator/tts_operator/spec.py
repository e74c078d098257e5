"""The TTSService spec: defaults and validation taken from the CRD itself.

The CRD YAML (``crds/ttsservices.kubetts.io.yaml``) is the single source of the schema.
A real API server applies its defaults and checks its rules before the operator sees an
object; the operator applies and checks them again here, from the same file, because an
object may have been stored before a CRD upgrade, and because the test API double is
not a real API server.  CEL rules (``x-kubernetes-validations``) are evaluated with
``cel-python``, so they are written once, in the CRD.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

CRD_PATH = Path(__file__).resolve().parent / "crds" / "ttsservices.kubetts.io.yaml"
GROUP = "kubetts.io"
VERSION = "v1alpha1"
PLURAL = "ttsservices"
KIND = "TTSService"
API_VERSION = f"{GROUP}/{VERSION}"


def tts_path(namespace: str | None, name: str | None = None) -> str:
    """The API path of a namespace's TTSServices (all namespaces' when None), or of one of them."""
    path = f"/apis/{GROUP}/{VERSION}" + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURAL}"
    return f"{path}/{name}" if name else path


_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class InvalidSpec(ValueError):
    """The spec breaks the CRD's schema or rules; ``problems`` lists each, readable alone."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@functools.cache
def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def version_schema() -> dict[str, Any]:
    (version,) = [v for v in load_crd()["spec"]["versions"] if v["name"] == VERSION]
    return version["schema"]["openAPIV3Schema"]


def spec_schema() -> dict[str, Any]:
    return version_schema()["properties"]["spec"]


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: fill absent fields that have a default."""
    if isinstance(value, dict) and "properties" in schema:
        result = dict(value)
        for name, child in schema["properties"].items():
            if name not in result and "default" in child:
                result[name] = copy.deepcopy(child["default"])
            if name in result:
                result[name] = apply_defaults(result[name], child)
        return result
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


@functools.cache
def _cel_program(rule: str) -> Any:
    import logging

    import celpy

    # cel-python logs every evaluation step at DEBUG; an operator run with --verbose drowns in it.
    logging.getLogger("celpy").setLevel(logging.WARNING)
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_problems(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    import celpy

    problems: list[str] = []
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        for rule in rules:
            program = _cel_program(rule["rule"])
            try:
                ok = bool(program.evaluate({"self": celpy.json_to_cel(value)}))
            except Exception as exc:  # a rule that cannot evaluate counts as failed
                ok = False
                rule = {**rule, "message": f"{rule.get('message', rule['rule'])} ({exc})"}
            if not ok:
                problems.append(f"{path}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                problems += _cel_problems(value[name], child, f"{path}.{name}")
    return problems


def validate_spec(spec: dict[str, Any]) -> list[str]:
    """Every way ``spec`` (defaults applied) breaks the CRD's schema or CEL rules."""
    import jsonschema

    validator = jsonschema.Draft7Validator(spec_schema())
    problems = [
        f"spec{''.join(f'.{p}' if isinstance(p, str) else f'[{p}]' for p in error.absolute_path)}: "
        f"{error.message}"
        for error in sorted(validator.iter_errors(spec), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        return problems  # CEL rules assume a well-typed object
    return _cel_problems(spec, spec_schema(), "spec")


def parse_spec(raw: dict[str, Any] | None) -> dict[str, Any]:
    """The spec with the CRD's defaults applied; raises :class:`InvalidSpec`."""
    spec = apply_defaults(dict(raw or {}), spec_schema())
    problems = validate_spec(spec)
    if problems:
        raise InvalidSpec(problems)
    return spec


def duration_seconds(text: str) -> float:
    """Prometheus-style durations as used in ``autoscaling.for``: ``2m``, ``90s``, ``1m30s``."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
