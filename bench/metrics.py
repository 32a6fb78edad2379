"""Where event latency goes, from the services' own Prometheus histograms.

The event latency the checkout scenario measures runs through several hops.
Two of them have histograms in the services:

* ``outbox_relay_lag_seconds`` (order_svc): from the start of the order's
  transaction (the outbox row's ``created_at``) to Kafka acknowledging the
  event;
* ``kafka_consumer_handle_seconds`` (notify_svc): handling one event (Redis
  writes and the publish to open streams).

The rest (Kafka to notify_svc's consumer, the stream, the edge's SSE) is the
difference.  Histograms give bucket bounds, not exact values: a quantile is
reported as the upper bound of the bucket it falls in ("at most").
"""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Buckets = dict[float, float]  # upper bound -> cumulative count

HOPS = {
    "relay": ("order_svc", "outbox_relay_lag_seconds"),
    "notify handling": ("notify_svc", "kafka_consumer_handle_seconds"),
}


def scrape(port: int, name: str) -> Buckets:
    """The histogram's cumulative buckets, summed over its label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def at_most_ms(before: Buckets, after: Buckets, q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of what was
    observed between the two scrapes; None if nothing was."""
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = delta.get(math.inf, 0.0)
    if total <= 0:
        return None
    for bound in sorted(delta):
        if delta[bound] >= q * total:
            return bound * 1000
    return math.inf


def snapshot(ports: dict[str, int]) -> dict[str, Buckets]:
    """Every hop's histogram now (hops whose service does not answer are left out)."""
    found = {}
    for hop, (service, name) in HOPS.items():
        if service in ports:
            try:
                found[hop] = scrape(ports[service], name)
            except OSError:
                continue  # that hop is left out of the breakdown
    return found


def breakdown(before: dict[str, Buckets], after: dict[str, Buckets]) -> dict[str, dict[str, float | None]]:
    return {
        hop: {"p50_at_most_ms": at_most_ms(before[hop], after[hop], 0.5),
              "p99_at_most_ms": at_most_ms(before[hop], after[hop], 0.99)}
        for hop in after if hop in before
    }  # fmt: skip
