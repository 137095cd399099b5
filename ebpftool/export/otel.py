"""Turning ebpftool's metric points into OpenTelemetry SDK data, and the resource.

Metrics are aggregated in the kernel, so the SDK's instruments (which
aggregate themselves) are bypassed: points become `MetricsData` handed straight
to the exporters, with cumulative temporality.
"""
from __future__ import annotations

import os
import socket
from collections import defaultdict
from typing import Iterable, Mapping

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ebpftool import __version__
from ebpftool.enrich import k8s
from ebpftool import semconv as sc
from ebpftool.export.model import Kind, MetricPoint

SCOPE = InstrumentationScope("ebpftool", __version__)

K8S_ENV = {
    sc.K8S_NODE_NAME: k8s.NODE_NAME_ENV,
    sc.K8S_POD_NAME: k8s.POD_NAME_ENV,
    sc.K8S_NAMESPACE_NAME: k8s.NAMESPACE_NAME_ENV,
}


def build_resource(
    service_name: str | None = None,
    zone: str | None = None,
    region: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resource:
    """The resource every signal carries.

    Precedence (lowest first): detected values, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME, then flags. Zone and region come from flags or
    EBPFTOOL_ZONE / EBPFTOOL_REGION.
    """
    env = os.environ if environ is None else environ
    attrs: dict[str, str] = {sc.SERVICE_NAME: "ebpftool", sc.HOST_NAME: socket.gethostname()}
    for key, names in K8S_ENV.items():
        value = k8s.env_value(names, env)
        if value:
            attrs[key] = value
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            if k.strip():
                attrs[k.strip()] = _unquote(v.strip())
    if env.get("OTEL_SERVICE_NAME"):
        attrs[sc.SERVICE_NAME] = env["OTEL_SERVICE_NAME"]
    zone = zone or env.get("EBPFTOOL_ZONE")
    region = region or env.get("EBPFTOOL_REGION")
    if service_name:
        attrs[sc.SERVICE_NAME] = service_name
    if zone:
        attrs[sc.CLOUD_AVAILABILITY_ZONE] = zone
    if region:
        attrs[sc.CLOUD_REGION] = region
    # Resource() rather than Resource.create(): the latter would re-read the
    # environment and undo the precedence above.
    return Resource(attrs)


def _unquote(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value)


def to_metrics_data(
    points: Iterable[MetricPoint], resource: Resource, start_ns: int, now_ns: int
) -> MetricsData:
    """Group points by metric name into SDK Metric objects (cumulative since start_ns)."""
    by_name: dict[str, list[MetricPoint]] = defaultdict(list)
    for p in points:
        by_name[p.name].append(p)
    metrics = []
    for name, group in by_name.items():
        first = group[0]
        if first.kind is Kind.HISTOGRAM:
            data = Histogram(
                data_points=[
                    HistogramDataPoint(
                        attributes=dict(p.attributes), start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                        count=p.count, sum=p.sum, bucket_counts=list(p.bucket_counts),
                        explicit_bounds=list(p.bounds), min=p.min, max=p.max,
                    )
                    for p in group
                ],
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            )
        else:
            number_points = [
                NumberDataPoint(
                    attributes=dict(p.attributes), start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns, value=p.value,
                )
                for p in group
            ]
            if first.kind is Kind.GAUGE:
                data = Gauge(data_points=number_points)
            else:
                data = Sum(
                    data_points=number_points,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=first.kind is Kind.COUNTER,
                )
        metrics.append(Metric(name=name, description=first.description, unit=first.unit, data=data))
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(
                resource=resource,
                scope_metrics=[ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url="")],
                schema_url="",
            )
        ]
    )
