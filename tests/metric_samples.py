"""Reading Prometheus samples in tests: one parser for a scraped page, by name and labels."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple], float]


def samples_of(text: str) -> Samples:
    """Every sample of a /metrics page as {(name, sorted labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def metric_at(url: str, name: str, **labels: str) -> float:
    """One sample of the service at ``url`` (a subprocess service; blocking)."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return metric(samples_of(text), name, **labels)
