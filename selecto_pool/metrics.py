"""The pools' metrics in a prometheus_client registry (optional dependency).

Register once, e.g. in an ``AppConfig.ready()``; every scrape of that
registry (django-prometheus's ``/metrics``, ``prometheus_client``'s own
server) then includes the ORM pools of the process that serves it::

    from prometheus_client import REGISTRY
    from selecto_pool.metrics import PoolCollector

    REGISTRY.register(PoolCollector())

The samples are the same as ``/health/db?format=openmetrics``'s, without
``selecto_pool_up`` (a scrape reads counters, it doesn't probe the
database). Each carries ``alias``, ``host`` and ``pid``: a custom collector
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
    """Collects the stats of this process's ORM pools at each scrape."""

    def collect(self) -> Iterable[Metric]:
        return [_metric(family) for family in metrics.current()]

    def describe(self) -> Iterable[Metric]:
        # The names without samples: registering reads no pool.
        return [_metric(family) for family in metrics.families({}, {})]


def _metric(family: metrics.Family) -> Metric:
    labels = list(family.samples[0][0]) if family.samples else []
    metric: GaugeMetricFamily | CounterMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(
            family.name, family.help, labels=labels, unit=family.unit
        )
    else:
        metric = GaugeMetricFamily(
            family.name, family.help, labels=labels, unit=family.unit
        )
    for sample_labels, value in family.samples:
        metric.add_metric(list(sample_labels.values()), value)
    return metric
