"""Pure parts of the export layer: resource attributes, OTLP settings, Prometheus text, names."""
from __future__ import annotations

import re

import pytest

from ebpftool.errors import EbpftoolError
from ebpftool import semconv as sc
from ebpftool.export.model import counter, histogram
from ebpftool.export.otel import build_resource, to_metrics_data
from ebpftool.export.sinks import prometheus_name, prometheus_text, resolve_otlp


def test_resource_from_downward_api_env_and_flags():
    env = {
        "K8S_NODE_NAME": "node-7", "POD_NAME": "agent-x", "POD_NAMESPACE": "obs",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=ml%20infra,service.name=from-env",
        "EBPFTOOL_ZONE": "us-east-1a",
    }
    attrs = dict(build_resource(environ=env).attributes)
    assert attrs[sc.K8S_NODE_NAME] == "node-7"
    assert attrs[sc.K8S_POD_NAME] == "agent-x"
    assert attrs[sc.K8S_NAMESPACE_NAME] == "obs"
    assert attrs["deployment.environment"] == "prod" and attrs["team"] == "ml infra"
    assert attrs[sc.SERVICE_NAME] == "from-env"
    assert attrs[sc.CLOUD_AVAILABILITY_ZONE] == "us-east-1a"
    assert attrs[sc.HOST_NAME]
    flagged = dict(build_resource("svc", zone="z2", region="r9", environ=env).attributes)
    assert (flagged[sc.SERVICE_NAME], flagged[sc.CLOUD_AVAILABILITY_ZONE], flagged[sc.CLOUD_REGION]) == ("svc", "z2", "r9")
    assert dict(build_resource(environ={}).attributes)[sc.SERVICE_NAME] == "ebpftool"


def test_otlp_settings_follow_the_environment_variables():
    assert resolve_otlp(None, None, {}) is None
    assert resolve_otlp(None, None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == ("http://c:4317", "grpc")
    assert resolve_otlp("c:4318", None, {}) == ("http://c:4318", "http/protobuf")
    assert resolve_otlp("http://c:9999/", None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == ("http://c:9999", "grpc")
    with pytest.raises(EbpftoolError, match="protocol"):
        resolve_otlp("http://c:1", "http/json", {})
    with pytest.raises(EbpftoolError, match="not a URL"):
        resolve_otlp("ftp://c:1", None, {})


def test_prometheus_exposition():
    points = [
        counter(sc.EBPFTOOL_NETWORK_FLOW_IO, "By", "bytes", 1234, {"source.cloud.availability_zone": "a", "x": True}),
        histogram(sc.HTTP_SERVER_REQUEST_DURATION, "s", "d", {"http.request.method": "GET"}, count=3, total=0.5,
                  minimum=0.1, maximum=0.3, bucket_counts=[1, 2, 0], bounds=[0.1, 0.5]),
    ]
    text = prometheus_text(to_metrics_data(points, build_resource(environ={}), 1, 2))
    assert "# TYPE ebpftool_network_flow_io_bytes_total counter" in text
    assert 'ebpftool_network_flow_io_bytes_total{source_cloud_availability_zone="a",x="true"} 1234' in text
    assert 'http_server_request_duration_seconds_bucket{http_request_method="GET",le="0.1"} 1' in text
    assert 'http_server_request_duration_seconds_bucket{http_request_method="GET",le="0.5"} 3' in text
    assert 'http_server_request_duration_seconds_bucket{http_request_method="GET",le="+Inf"} 3' in text
    assert 'http_server_request_duration_seconds_count{http_request_method="GET"} 3' in text
    assert prometheus_name("a.b", "{call}", True) == "a_b_total"


NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


def test_semantic_convention_names():
    names = {k: v for k, v in vars(sc).items() if k.isupper() and isinstance(v, str)}
    for const, name in names.items():
        assert NAME.match(name), f"{const}={name!r} is not a dotted lower-case name"
        # Names of our own live in our namespace; conventions' names are used as they are.
        if const.startswith("EBPFTOOL_"):
            assert name.startswith("ebpftool."), const
    # The conventions' names we rely on, spelled as the conventions spell them.
    assert sc.HTTP_SERVER_REQUEST_DURATION == "http.server.request.duration"
    assert sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN == "gen_ai.server.time_to_first_token"
    assert sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN == "gen_ai.server.time_per_output_token"
    assert sc.HTTP_DURATION_BUCKETS == (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
    for bounds in (v for k, v in vars(sc).items() if k.endswith("_BUCKETS")):
        assert list(bounds) == sorted(set(bounds)), "bucket bounds must increase"
        assert len(bounds) + 1 <= 24, "bounds + overflow must fit struct hist_value"
