"""Child manifests built from a TTSService spec, validated against Kubernetes' own schemas."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from tts_operator.builders import (
    build_deployment,
    build_hpa,
    build_prometheus_rule,
    build_scaled_object,
    build_service,
    build_service_monitor,
    container_env,
    endpoint,
    monitoring_labels,
    service_settings,
)
from tts_operator.promql import DEMAND_RECORD, HIGH_ALERT, LOW_ALERT, demand_expression, rule_group
from tts_operator.spec import parse_spec
from tts_service.settings import Settings

GPU_SPEC = {
    "engine": "chattts",
    "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "6Gi"}, "requests": {"cpu": "2"}},
    "model": {"pvc": {"claimName": "weights", "subPath": "asset"}, "compileCachePVC": "cache"},
    "batching": {"maxBatchSize": 16, "maxWaitMs": 25.5, "scheduler": "request"},
    "cuda": {"moduleLoading": "LAZY", "memoryPoolMB": 512},
    "chattts": {"device": "cuda", "compile": True, "halfPrecision": True, "topK": 10, "verifyWeights": False},
    "nodeSelector": {"gpu": "t4"},
    "voices": {"narrator": {"seed": 1234}, "host": {"embedding": "speaker-embedding"}},
    "env": [{"name": "TTS_LOG_LEVEL", "value": "DEBUG"}, {"name": "EXTRA", "value": "1"}],
    "autoscaling": {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 8,
        "p99TargetSeconds": 0.9,
        "for": "90s",
    },
}
SPECS = {
    "defaults": {},
    "gpu": GPU_SPEC,
    "hostpath": {"engine": "chattts", "model": {"hostPath": "/data/chattts"}},
    "imagepath": {"engine": "chattts", "model": {"imagePath": "/opt/chattts"}},
    "tolerations": {
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tts", "effect": "NoSchedule"}]
    },
}


def env_of(deployment) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("k8s_version", ["1.29", "1.33"])
@pytest.mark.parametrize("case", SPECS)
def test_core_objects_validate_strictly(case, k8s_version):
    spec = parse_spec(SPECS[case])
    for obj in (build_deployment("demo", "ns", spec, 3), build_service("demo", "ns", spec)):
        kubernetes_validate.validate(obj, k8s_version, strict=True)


def test_env_is_written_through_the_service_settings():
    spec = parse_spec(GPU_SPEC)
    env = env_of(build_deployment("demo", "ns", spec, 1))
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("TTS_")})
    assert settings == service_settings(spec).replace(log_level="DEBUG")  # spec.env wins
    assert (settings.engine, settings.max_batch_size, settings.max_wait_ms) == ("chattts", 16, 25.5)
    assert settings.scheduler == "request"
    assert (
        settings.host == "0.0.0.0" and settings.model_dir == "/models" and settings.cuda_memory_pool_mb == 512
    )
    assert env["TORCH_CUDA_ARCH_LIST"] == "7.5;8.0;8.6" and env["CUDA_MODULE_LOADING"] == "LAZY"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/cache" and env["EXTRA"] == "1"
    assert json.loads(settings.voices) == GPU_SPEC["voices"]
    assert (settings.device, settings.compile, settings.half_precision, settings.top_k) == (
        "cuda",
        True,
        True,
        10,
    )
    assert settings.model_verify is False and settings.temperature == 0.3  # given vs defaulted
    # Every TTS_* variable the service knows is set, so a pod never relies on image defaults.
    assert set(Settings().to_env()) <= set(env)


def test_spec_env_overrides_by_name_without_duplicates():
    env = container_env(parse_spec({"env": [{"name": "TTS_MAX_WAIT_MS", "value": "5"}]}))
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert {e["name"]: e["value"] for e in env}["TTS_MAX_WAIT_MS"] == "5"


def test_image_path_model_is_read_in_place():
    env = env_of(build_deployment("demo", "ns", parse_spec(SPECS["imagepath"]), 1))
    assert env["TTS_MODEL_DIR"] == "/opt/chattts"


def test_deployment_probes_draining_and_security():
    dep = build_deployment("demo", "ns", parse_spec(GPU_SPEC), 3)
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 300
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > 30 + 30
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"gpu": "t4"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] and mounts["/models"]["subPath"] == "asset"
    assert "/tmp" in mounts and "/cache" in mounts  # writable dirs on a read-only root
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"]["claimName"] == "weights"
    assert volumes["compile-cache"]["persistentVolumeClaim"]["claimName"] == "cache"
    # The service's start-up caches (weight hashes, numba, torch.compile) live on that volume.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TTS_CACHE_DIR"] == mounts["/cache"]["mountPath"] == env["TORCHINDUCTOR_CACHE_DIR"]


def test_cpu_deployment_has_no_gpu_toleration_and_short_startup():
    dep = build_deployment("demo", "ns", parse_spec({}), 1)
    pod = dep["spec"]["template"]["spec"]
    assert "tolerations" not in pod
    probe = pod["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 150


def test_service_and_selectors_match():
    spec = parse_spec({})
    dep, svc = build_deployment("demo", "ns", spec, 1), build_service("demo", "ns", spec)
    selector = dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert endpoint("demo", "ns") == "http://demo.ns.svc:8080"


def test_monitoring_objects_carry_the_stacks_selector_labels():
    spec = parse_spec({**GPU_SPEC, "monitoring": {"labels": {"release": "prom", "team": "voice"}}})
    extra = monitoring_labels(spec, {"release": "kube-prometheus-stack", "tier": "gpu"})
    # The operator-wide default, overridden per TTSService.
    assert extra == {"release": "prom", "tier": "gpu", "team": "voice"}
    monitor = build_service_monitor("demo", "ns", spec, extra)
    rule = build_prometheus_rule("demo", "ns", spec, extra)
    for obj in (monitor, rule):
        assert extra.items() <= obj["metadata"]["labels"].items()
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubetts-operator"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert rule["spec"]["groups"] == [rule_group("demo", "ns", spec)]
    rules = rule["spec"]["groups"][0]["rules"]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert set(alerts) == {HIGH_ALERT, LOW_ALERT}
    assert all(a["for"] == "90s" for a in alerts.values())
    assert all(
        a["labels"]["tts_namespace"] == "ns" and a["labels"]["tts_name"] == "demo" for a in alerts.values()
    )
    # Capacity, not input length: queue wait (the default signal), never whole-request latency.
    assert all("tts_queue_wait_seconds_bucket" in a["expr"] for a in alerts.values())
    assert not any("tts_request_duration_seconds" in r["expr"] for r in rules)
    assert all("sum by (le, namespace)" in a["expr"] for a in alerts.values())  # keeps namespace
    latency = rule_group(
        "demo", "ns", parse_spec({"autoscaling": {"signal": "latency", "p99TargetSeconds": 0.9}})
    )
    assert all(
        "tts_synthesis_duration_seconds_bucket" in r["expr"] and "> 0.9" in r["expr"]
        for r in latency["rules"]
    )


def test_without_monitoring_labels_only_the_operators_own():
    spec = parse_spec({})
    assert monitoring_labels(spec, {}) == {}
    assert "release" not in build_service_monitor("demo", "ns", spec, {})["metadata"]["labels"]


@pytest.mark.parametrize("k8s_version", ["1.29", "1.33"])
def test_hpa_validates_and_reads_the_recorded_demand(k8s_version):
    spec = parse_spec(GPU_SPEC)
    hpa = build_hpa("demo", "ns", spec)
    kubernetes_validate.validate(hpa, k8s_version, strict=True)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"] == {
        "name": DEMAND_RECORD,
        "selector": {"matchLabels": {"namespace": "ns", "service": "demo"}},
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 90
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 4, "periodSeconds": 15}]


def test_scaled_object_queries_the_same_demand():
    spec = parse_spec(GPU_SPEC)
    scaled = build_scaled_object("demo", "ns", spec, "http://prometheus.monitoring:9090")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == demand_expression("demo", "ns", spec["autoscaling"])
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.monitoring:9090"
    assert scaled["spec"]["fallback"]["behavior"] == "currentReplicas"  # blind means hold
    assert (
        scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        == build_hpa("demo", "ns", spec)["spec"]["behavior"]
    )
    own = parse_spec(
        {**GPU_SPEC, "autoscaling": {**GPU_SPEC["autoscaling"], "prometheusURL": "http://p:9090"}}
    )
    assert (
        build_scaled_object("demo", "ns", own, "http://x")["spec"]["triggers"][0]["metadata"]["serverAddress"]
        == "http://p:9090"
    )


@pytest.mark.parametrize("k8s_version", ["1.29", "1.33"])
def test_a_deployment_whose_replicas_belong_to_an_autoscaler_leaves_them_out(k8s_version):
    dep = build_deployment("demo", "ns", parse_spec(GPU_SPEC), None)
    assert "replicas" not in dep["spec"]
    kubernetes_validate.validate(dep, k8s_version, strict=True)


def test_the_playground_page_is_opt_in_for_a_ttsservice():
    def playground(spec: dict) -> str:
        env = {e["name"]: e.get("value") for e in container_env(parse_spec(spec))}
        return env["TTS_PLAYGROUND"]

    assert playground({}) == "false"  # a cluster's service is an API unless asked
    assert playground({"playground": True}) == "true"
