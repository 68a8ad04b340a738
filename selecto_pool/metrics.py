"""The pools' metrics in a prometheus_client registry (optional dependency).

Register once, e.g. in an ``AppConfig.ready()``; every scrape of that
registry (django-prometheus's ``/metrics``, ``prometheus_client``'s own
server) then includes the pools of the process that serves it::

    from prometheus_client import REGISTRY
    from selecto_pool.metrics import PoolCollector

    REGISTRY.register(PoolCollector())

The samples are the same as ``/health/db?format=openmetrics``'s, without
``selecto_pool_up`` (a scrape reads counters, it doesn't probe the
database). Each carries ``host``, ``pid`` and ``alias`` (or, for a pool of
the direct API, ``pool`` and ``kind="direct"``): a custom collector
can't be merged across worker processes by prometheus_client's multiprocess
mode, so each process reports its own series (see docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterable

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # an optional dependency
    raise ImportError(
        "selecto_pool.metrics needs prometheus_client: pip install prometheus-client"
    ) from exc

from ._ops import metrics

__all__ = ["PoolCollector"]


class PoolCollector(Collector):
    """Collects the stats of this process's pools at each scrape."""

    def collect(self) -> Iterable[Metric]:
        return [_metric(family) for family in metrics.current()]

    def describe(self) -> Iterable[Metric]:
        # The names without samples: registering reads no pool.
        return [_metric(family) for family in metrics.families({}, {})]


def _metric(family: metrics.Family) -> Metric:
    metric: GaugeMetricFamily | CounterMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.help, unit=family.unit)
        sample_name = f"{family.name}_total"
    else:
        metric = GaugeMetricFamily(family.name, family.help, unit=family.unit)
        sample_name = family.name
    # Sample by sample: an alias's and a direct pool's carry different labels.
    for labels, value in family.samples:
        metric.add_sample(sample_name, dict(labels), value)
    return metric
