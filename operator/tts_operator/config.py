"""The operator's own settings, from ``KUBETTS_OPERATOR_*`` environment variables.

Which cluster and which identity are not settings here: they come from the pod's service
account or ``$KUBECONFIG`` (see :mod:`.login`), as for any Kubernetes client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from .login import SERVICE_ACCOUNT_DIR

PREFIX = "KUBETTS_OPERATOR_"


@dataclass(frozen=True)
class OperatorConfig:
    # Port of the Alertmanager webhook receiver (POST /alertmanager).
    webhook_port: int = 8081
    # Where the webhook listens: loopback unless told (the chart gives the pod's own IP).
    webhook_host: str = "127.0.0.1"
    # The bearer token Alertmanager must send to the webhook (the chart generates one).
    webhook_token: str = ""
    # Without a token the webhook refuses every alert, unless this says to accept unauthenticated ones.
    webhook_insecure: bool = False
    # Default Prometheus for poll mode when a TTSService names none.
    prometheus_url: str = ""
    # How often every TTSService is resynced: drift repaired, status refreshed, autoscaler run.
    autoscale_interval_s: float = 10.0
    # Create a ServiceMonitor and PrometheusRule per TTSService (when the cluster has the CRDs).
    monitoring: bool = True
    # Labels for every ServiceMonitor and PrometheusRule (JSON object), e.g. {"release": "kube-prometheus-stack"}:
    # what the monitoring stack selects them by. A TTSService's spec.monitoring.labels add to them.
    monitoring_labels: dict = field(default_factory=dict)
    # The rate() window of the scaling signal's PromQL: the PrometheusRule, poll mode, KEDA's trigger.
    signal_window: str = "1m"
    # A firing alert not re-confirmed by Alertmanager for this long counts as "no data".
    alert_stale_s: float = 300.0
    # Timeout of one API call, and the delay before a handler that hit a transient API error retries.
    api_timeout_s: float = 30.0
    retry_delay_s: float = 5.0
    # After a permanent refusal (422 invalid, 403 forbidden) a TTSService is retried after this
    # delay, doubling up to the maximum, until its spec changes.
    permanent_retry_s: float = 30.0
    permanent_retry_max_s: float = 600.0
    # Leader election among replicas (a coordination.k8s.io Lease), as client-go's defaults.
    lease_duration_s: float = 15.0
    lease_renew_deadline_s: float = 10.0
    lease_retry_period_s: float = 2.0
    # Where a pod's service-account token and CA are mounted.
    service_account_dir: str = SERVICE_ACCOUNT_DIR

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Every field from ``KUBETTS_OPERATOR_<FIELD>``; a malformed value is a ValueError naming it."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            if name not in env:
                continue
            raw = env[name].strip()
            if f.name == "monitoring_labels":
                values[f.name] = _labels(name, raw)
                continue
            kind = type(f.default)
            try:
                if kind is bool:
                    values[f.name] = raw.lower() in ("1", "true", "yes", "on")
                else:
                    values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"invalid setting {name}={raw!r}: expected {kind.__name__}") from None
        return cls(**values)


def _labels(name: str, raw: str) -> dict[str, str]:
    try:
        labels = json.loads(raw or "{}")
    except ValueError:
        labels = None
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError(
            f'invalid setting {name}={raw!r}: expected a JSON object of strings, e.g. {{"release": "prom"}}'
        )
    return labels
