"""The operator's own settings, from ``KUBETTS_OPERATOR_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    # Port of the Alertmanager webhook receiver (POST /alertmanager).
    webhook_port: int = 8081
    webhook_host: str = "0.0.0.0"
    # Optional shared bearer token Alertmanager must send to the webhook.
    webhook_token: str = ""
    # Default Prometheus for poll mode when a TTSService names none.
    prometheus_url: str = ""
    # How often each TTSService's autoscaler evaluates (and drift is repaired).
    autoscale_interval_s: float = 10.0
    # Create a ServiceMonitor and PrometheusRule per TTSService (when the cluster has the CRDs).
    monitoring: bool = True
    # The rate() window of the p99 expression, for the PrometheusRule and for poll mode.
    p99_window: str = "1m"
    # A firing alert not re-confirmed by Alertmanager for this long counts as "no data".
    alert_stale_s: float = 300.0
    # Timeout of one API call, and the delay before a handler that hit an API error retries.
    api_timeout_s: float = 30.0
    retry_delay_s: float = 5.0
    # Explicit API server for development and tests; in a pod the service account is used.
    api_server: str = ""
    api_token: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        prefix = "KUBETTS_OPERATOR_"
        return cls(
            webhook_port=int(env.get(prefix + "WEBHOOK_PORT", cls.webhook_port)),
            webhook_host=env.get(prefix + "WEBHOOK_HOST", cls.webhook_host),
            webhook_token=env.get(prefix + "WEBHOOK_TOKEN", cls.webhook_token),
            prometheus_url=env.get(prefix + "PROMETHEUS_URL", cls.prometheus_url),
            autoscale_interval_s=float(env.get(prefix + "AUTOSCALE_INTERVAL_S", cls.autoscale_interval_s)),
            p99_window=env.get(prefix + "P99_WINDOW", cls.p99_window),
            monitoring=env.get(prefix + "MONITORING", "true").strip().lower() in ("1", "true", "yes", "on"),
            alert_stale_s=float(env.get(prefix + "ALERT_STALE_S", cls.alert_stale_s)),
            api_timeout_s=float(env.get(prefix + "API_TIMEOUT_S", cls.api_timeout_s)),
            retry_delay_s=float(env.get(prefix + "RETRY_DELAY_S", cls.retry_delay_s)),
            api_server=env.get(prefix + "API_SERVER", cls.api_server),
            api_token=env.get(prefix + "API_TOKEN", cls.api_token),
        )
