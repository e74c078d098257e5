"""Pure builders: a TTSService's name, namespace and (defaulted) spec -> child manifests.

Nothing here talks to Kubernetes; handlers call these and create or patch the results.
The service container's env is written through :class:`tts_service.settings.Settings`,
the same object the service reads its configuration with, so names, defaults and
validation rules exist once.
"""

from __future__ import annotations

import json
from typing import Any

from tts_service.settings import (
    CUDA_MODULE_LOADING_ENV,
    TORCH_CUDA_ARCH_LIST_ENV,
    TORCHINDUCTOR_CACHE_DIR_ENV,
    Settings,
)

from . import __version__
from .promql import DEFAULT_WINDOW, DEMAND_RECORD, demand_expression, rule_group
from .spec import duration_seconds

CONTAINER_NAME = "tts"
PORT_NAME = "http"
PORT = Settings().port
MODEL_MOUNT = "/models"
CACHE_MOUNT = "/cache"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS_USER = 10001
PRESTOP_SLEEP_SECONDS = 5


MANAGED_BY = {"app.kubernetes.io/managed-by": "kubetts-operator"}
# The server-side label selector of the operator's watches: it sees its own children only.
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


def pod_labels(name: str) -> dict[str, str]:
    """Labels of the pods: nothing that changes with the operator's version, so upgrading the
    operator never changes the pod template and never restarts a TTS pod."""
    return {**selector_labels(name), **MANAGED_BY, "app.kubernetes.io/component": "tts-service"}


def labels(name: str) -> dict[str, str]:
    """Labels on every child object (the Deployment, Service, monitoring objects)."""
    return {**pod_labels(name), "app.kubernetes.io/version": __version__}


def selector_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "kubetts", "app.kubernetes.io/instance": name}


def label_selector(name: str) -> str:
    """The pods' selector as a string: a TTSService's status.selector (its scale subresource's)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """The controller reference a child carries: deleting the TTSService deletes it (the
    garbage collector), and its deletion waits for the children in foreground deletion."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(manifest: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with ``owner``'s controller reference."""
    return {**manifest, "metadata": {**manifest["metadata"], "ownerReferences": [owner_reference(owner)]}}


def endpoint(name: str, namespace: str) -> str:
    """The in-cluster URL clients call."""
    return f"http://{name}.{namespace}.svc:{PORT}"


def service_settings(spec: dict[str, Any]) -> Settings:
    """What the service container is configured with, derived from the spec."""
    batching = spec["batching"]
    chattts = spec["chattts"]
    model = spec.get("model") or {}
    return Settings().replace(
        host="0.0.0.0",
        port=PORT,
        engine=spec["engine"],
        scheduler=batching["scheduler"],
        max_batch_size=batching["maxBatchSize"],
        max_wait_ms=float(batching["maxWaitMs"]),
        max_queue_size=batching["maxQueue"],
        request_timeout_s=float(batching["requestTimeoutSeconds"]),
        segment_chars=batching["segmentChars"],
        warmup=spec["warmup"],
        playground=spec["playground"],
        # A model baked into the image is read where it lies; a volume is mounted at MODEL_MOUNT.
        model_dir=model.get("imagePath") or (MODEL_MOUNT if model else ""),
        cache_dir=CACHE_MOUNT,  # verified weight hashes, torch.compile's kernels
        cuda_memory_pool_mb=spec["cuda"]["memoryPoolMB"],
        device=chattts["device"],
        compile=chattts["compile"],
        half_precision=chattts["halfPrecision"],
        refine_text=chattts["refineText"],
        torch_threads=chattts["torchThreads"],
        model_verify=chattts["verifyWeights"],
        max_new_tokens=chattts["maxNewTokens"],
        temperature=float(chattts["temperature"]),
        top_p=float(chattts["topP"]),
        top_k=chattts["topK"],
        voices=json.dumps(spec["voices"], sort_keys=True) if spec.get("voices") else "",
    )


def container_env(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Service settings, then CUDA env, then the spec's own ``env`` (which wins by name)."""
    env: dict[str, dict[str, Any]] = {}
    for key, value in service_settings(spec).to_env().items():
        env[key] = {"name": key, "value": value}
    cuda = {
        TORCH_CUDA_ARCH_LIST_ENV: spec["cuda"]["archList"],
        CUDA_MODULE_LOADING_ENV: spec["cuda"]["moduleLoading"],
        TORCHINDUCTOR_CACHE_DIR_ENV: CACHE_MOUNT,
    }
    for key, value in cuda.items():
        env[key] = {"name": key, "value": value}
    for extra in spec.get("env", []):
        env[extra["name"]] = dict(extra)
    return list(env.values())


def _volumes(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    model = spec.get("model")
    cache_claim = (model or {}).get("compileCachePVC")
    if cache_claim:
        volumes.append({"name": "compile-cache", "persistentVolumeClaim": {"claimName": cache_claim}})
    else:
        volumes.append({"name": "compile-cache", "emptyDir": {}})
    mounts.append({"name": "compile-cache", "mountPath": CACHE_MOUNT})
    if model:
        if "pvc" in model:
            volumes.append(
                {
                    "name": "model",
                    "persistentVolumeClaim": {"claimName": model["pvc"]["claimName"], "readOnly": True},
                }
            )
            mount = {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True}
            if model["pvc"].get("subPath"):
                mount["subPath"] = model["pvc"]["subPath"]
            mounts.append(mount)
        elif "hostPath" in model:
            volumes.append({"name": "model", "hostPath": {"path": model["hostPath"], "type": "Directory"}})
            mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    return volumes, mounts


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _uses_gpu(spec: dict[str, Any]) -> bool:
    resources = spec.get("resources", {})
    return any(GPU_RESOURCE in resources.get(kind, {}) for kind in ("limits", "requests"))


def build_deployment(name: str, namespace: str, spec: dict[str, Any], replicas: int | None) -> dict[str, Any]:
    """The Deployment running the service; ``replicas`` is decided by the caller, or None when an
    HPA or KEDA owns the field (it is then left out, so server-side apply leaves it to them)."""
    settings = service_settings(spec)
    volumes, mounts = _volumes(spec)
    env = container_env(spec)
    # ChatTTS loads ~700 MB and warms up: give it minutes; espeak is ready in about a second.
    startup_failures = 120 if spec["engine"] == "chattts" else 30
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec["image"],
        "imagePullPolicy": spec["imagePullPolicy"],
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "startupProbe": _probe("/readyz", 5, startup_failures),
        "readinessProbe": _probe("/readyz", 5, 2),
        "livenessProbe": _probe("/healthz", 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if spec.get("resources"):
        container["resources"] = spec["resources"]
    tolerations = list(spec.get("tolerations", []))
    if _uses_gpu(spec) and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        # preStop sleep + draining the queue + the longest request, with margin.
        "terminationGracePeriodSeconds": int(
            PRESTOP_SLEEP_SECONDS + settings.shutdown_timeout_s + settings.request_timeout_s + 10
        ),
    }
    if spec.get("nodeSelector"):
        pod_spec["nodeSelector"] = spec["nodeSelector"]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": spec["progressDeadlineSeconds"],
            "template": {
                "metadata": {
                    "labels": pod_labels(name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }
    if replicas is None:
        del deployment["spec"]["replicas"]
    return deployment


def build_service(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """ClusterIP Service named like the TTSService, port ``http``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [{"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def monitoring_labels(spec: dict[str, Any], defaults: dict[str, str]) -> dict[str, str]:
    """Labels a monitoring stack selects its ServiceMonitors and PrometheusRules by (e.g.
    kube-prometheus-stack's ``release: <release>``): the operator-wide defaults, then the spec's."""
    return {**defaults, **((spec.get("monitoring") or {}).get("labels") or {})}


def build_service_monitor(
    name: str, namespace: str, spec: dict[str, Any], extra_labels: dict[str, str]
) -> dict[str, Any]:
    """prometheus-operator ServiceMonitor scraping the Service's ``http`` port."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace, "labels": {**extra_labels, **labels(name)}},
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [{"port": PORT_NAME, "path": "/metrics", "interval": "15s"}],
        },
    }


def build_prometheus_rule(
    name: str,
    namespace: str,
    spec: dict[str, Any],
    extra_labels: dict[str, str],
    window: str = DEFAULT_WINDOW,
) -> dict[str, Any]:
    """prometheus-operator PrometheusRule holding the two scaling alerts (see :mod:`.promql`)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace, "labels": {**extra_labels, **labels(name)}},
        "spec": {"groups": [rule_group(name, namespace, spec, window)]},
    }


def _behavior(autoscaling: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling spec as an HPA ``behavior`` (also KEDA's), so all providers decide alike."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": round(duration_seconds(autoscaling["for"])),
            "policies": [{"type": "Pods", "value": autoscaling["scaleUpStep"], "periodSeconds": 15}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": autoscaling["scaleDownStabilizationSeconds"],
            "policies": [{"type": "Pods", "value": autoscaling["scaleDownStep"], "periodSeconds": 15}],
        },
    }


def build_hpa(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``autoscaling.provider: hpa``: an autoscaling/v2 HPA on the Deployment, on the external metric
    ``tts_capacity_demand`` -- the PrometheusRule's recording of replicas' worth of load, served by
    prometheus-adapter (README) -- with an average target of 1: ``ceil(pods x ratio)`` replicas."""
    autoscaling = spec["autoscaling"]
    return _scaler(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        name,
        namespace,
        {
            "minReplicas": autoscaling["minReplicas"],
            "maxReplicas": autoscaling["maxReplicas"],
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": DEMAND_RECORD,
                            "selector": {"matchLabels": {"namespace": namespace, "service": name}},
                        },
                        "target": {"type": "AverageValue", "averageValue": "1"},
                    },
                }
            ],
            "behavior": _behavior(autoscaling),
        },
    )


def _scaler(api_version: str, kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An HPA or a ScaledObject of the TTSService's Deployment (the same target for both)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, **spec},
    }


def build_scaled_object(
    name: str, namespace: str, spec: dict[str, Any], prometheus_url: str, window: str = DEFAULT_WINDOW
) -> dict[str, Any]:
    """``autoscaling.provider: keda``: a KEDA ScaledObject with a Prometheus trigger on the demand
    expression; on Prometheus failures it keeps the current replicas (blind means hold)."""
    autoscaling = spec["autoscaling"]
    return _scaler(
        "keda.sh/v1alpha1",
        "ScaledObject",
        name,
        namespace,
        {
            "minReplicaCount": autoscaling["minReplicas"],
            "maxReplicaCount": autoscaling["maxReplicas"],
            "pollingInterval": 15,
            "fallback": {
                "failureThreshold": 3,
                "replicas": autoscaling["minReplicas"],
                "behavior": "currentReplicas",
            },
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(autoscaling)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": autoscaling.get("prometheusURL") or prometheus_url,
                        "query": demand_expression(name, namespace, autoscaling, window),
                        "threshold": "1",
                    },
                }
            ],
        },
    )
