"""The CRD: valid itself, defaults equal the service's settings, rules enforced from YAML."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from tts_operator.spec import (
    CRD_PATH,
    InvalidSpec,
    duration_seconds,
    load_crd,
    parse_spec,
    spec_schema,
    validate_spec,
)
from tts_service.segmentation import MIN_SEGMENT_CHARS
from tts_service.settings import DEVICES, ENGINES, SCHEDULERS, Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("k8s_version", ["1.29", "1.33"])
def test_crd_is_a_valid_customresourcedefinition(k8s_version):
    kubernetes_validate.validate(load_crd(), k8s_version, strict=True)


def test_crd_names_and_subresources():
    crd = load_crd()
    assert crd["metadata"]["name"] == "ttsservices.kubetts.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("TTSService", "ttsservices", ["tts"])
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Replicas", "Ready", "Demand", "Age"} <= columns
    # kopf writes its own bookkeeping into status: a real API server would prune it otherwise.
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_crd_defaults_match_the_service_settings():
    schema = spec_schema()["properties"]
    defaults = Settings()
    assert schema["engine"]["enum"] == list(ENGINES)
    assert schema["engine"]["default"] == defaults.engine
    batching = schema["batching"]["properties"]
    assert batching["maxBatchSize"]["default"] == defaults.max_batch_size
    assert batching["maxWaitMs"]["default"] == defaults.max_wait_ms
    assert batching["scheduler"]["default"] == defaults.scheduler
    assert batching["scheduler"]["enum"] == list(SCHEDULERS)
    assert batching["maxQueue"]["default"] == defaults.max_queue_size
    assert batching["requestTimeoutSeconds"]["default"] == defaults.request_timeout_s
    assert batching["segmentChars"]["default"] == defaults.segment_chars
    assert batching["segmentChars"]["minimum"] == MIN_SEGMENT_CHARS
    assert schema["warmup"]["default"] == defaults.warmup
    # The one deliberate difference: a TTSService is an API in a cluster, the page is opt-in there.
    assert schema["playground"]["default"] is False and defaults.playground is True
    chattts = schema["chattts"]["properties"]
    pairs = {
        "device": "device", "compile": "compile", "halfPrecision": "half_precision", "refineText": "refine_text",
        "torchThreads": "torch_threads", "verifyWeights": "model_verify", "maxNewTokens": "max_new_tokens",
        "temperature": "temperature", "topP": "top_p", "topK": "top_k",
    }  # fmt: skip
    assert set(pairs) == set(chattts)
    for crd_name, field_name in pairs.items():
        assert chattts[crd_name]["default"] == getattr(defaults, field_name), crd_name
    assert chattts["device"]["enum"] == list(DEVICES)


def test_empty_spec_gets_all_defaults():
    spec = parse_spec({})
    assert spec["engine"] == "espeak" and spec["replicas"] == 1
    assert spec["batching"] == {
        "scheduler": "continuous",
        "maxBatchSize": 8,
        "maxWaitMs": 80,
        "maxQueue": 256,
        "requestTimeoutSeconds": 30,
        "segmentChars": 100,
    }
    assert spec["cuda"] == {"archList": "7.5;8.0;8.6", "moduleLoading": "EAGER", "memoryPoolMB": 0}
    assert spec["autoscaling"]["p99TargetSeconds"] == 1.2 and spec["autoscaling"]["for"] == "2m"
    assert spec["autoscaling"]["scaleDownStabilizationSeconds"] == 300


def test_given_values_are_kept_and_nested_defaults_filled():
    spec = parse_spec({"batching": {"maxBatchSize": 4}, "autoscaling": {"enabled": True}})
    assert spec["batching"]["maxBatchSize"] == 4 and spec["batching"]["maxWaitMs"] == 80
    assert spec["autoscaling"]["enabled"] is True and spec["autoscaling"]["mode"] == "alerts"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"engine": "piper"}, "spec.engine: 'piper' is not one of ['espeak', 'chattts']"),
        ({"batching": {"maxBatchSize": 0}}, "spec.batching.maxBatchSize: 0 is less than the minimum of 1"),
        ({"replicas": "two"}, "spec.replicas: 'two' is not of type 'integer'"),
        ({"autoscaling": {"for": "2 minutes"}}, "spec.autoscaling.for"),
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "maxReplicas must be >= autoscaling.minReplicas",
        ),
        ({"engine": "chattts"}, "engine chattts needs spec.model"),
        ({"engine": "chattts", "model": {"hostPath": "/a", "imagePath": "/b"}}, "exactly one of model.pvc"),
        ({"engine": "chattts", "model": {}}, "exactly one of model.pvc"),
    ],
)
def test_invalid_specs_are_explained(spec, problem):
    with pytest.raises(InvalidSpec) as excinfo:
        parse_spec(spec)
    assert any(problem in p for p in excinfo.value.problems), excinfo.value.problems


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_ttsservices_validate_against_the_crd(path):
    obj = yaml.safe_load(path.read_text())
    assert obj["apiVersion"] == "kubetts.io/v1alpha1" and obj["kind"] == "TTSService"
    assert validate_spec(parse_spec(obj["spec"])) == []


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"chattts-gpu.yaml", "espeak-cpu.yaml"}
    gpu = yaml.safe_load((ROOT / "manifests" / "examples" / "chattts-gpu.yaml").read_text())["spec"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["autoscaling"]["p99TargetSeconds"] == 1.2 and gpu["autoscaling"]["for"] == "2m"


@pytest.mark.parametrize(
    ("text", "seconds"), [("2m", 120), ("90s", 90), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)]
)
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "m", "2x", "1m 30s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        duration_seconds(text)


def test_crd_file_is_the_packaged_one():
    assert CRD_PATH.name == "ttsservices.kubetts.io.yaml" and CRD_PATH.is_file()
