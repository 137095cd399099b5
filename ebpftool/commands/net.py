"""`ebpftool net`: network flows by availability-zone pair and process, and what they cost."""
from typing import Annotated, Optional

import typer

from ebpftool.commands.common import CommonOptions, common_options, execute
from ebpftool.commands.options import finite

ZonesFile = Annotated[Optional[str], typer.Option(
    "--zones", help="YAML zone map: zone name -> list of CIDRs, or {region, cidrs, price_per_gb} "
                    "(most specific CIDR wins; see docs/net.md).")]
PricePerGb = Annotated[Optional[float], typer.Option(
    "--price-per-gb", min=0, max=1e6, callback=finite, help="USD per GB (10^9 bytes) and direction for cross-zone bytes "
                                  "(default: the zone file's price_per_gb, else 0.01).")]
TopFlows = Annotated[int, typer.Option(
    "--flows", min=0, max=100_000, help="Also export the N open TCP connections with the most bytes, with addresses "
                           "and ports (ebpftool.network.connection.io); 0: off.")]
Spans = Annotated[bool, typer.Option(
    "--spans/--no-spans", help="A span per TCP connection (open to close, bytes, RTT), within --span-rate.")]


@common_options()
def net(
    zones: ZonesFile = None,
    price_per_gb: PricePerGb = None,
    flows: TopFlows = 0,
    spans: Spans = False,
    *,
    common: CommonOptions,
) -> None:
    """Bytes per availability-zone pair and process, cross-zone cost, TCP retransmits and RTT."""
    execute(lambda telemetry: [net_tracer(common, zones, price_per_gb, flows, spans)(telemetry)], common)


def net_tracer(common: CommonOptions, zones, price_per_gb, flows: int = 0, spans: bool = False):
    """A factory of the tracer these flags describe (shared with `ebpftool trace`)."""
    from ebpftool.tracers.net import NetOptions, NetTracer
    from ebpftool.tracers.net.zones import build_zone_map

    zone_map = build_zone_map(zones, price_per_gb=price_per_gb, node_zone=common.zone, node_region=common.region)
    base = common.tracer_options()
    opts = NetOptions(span_rate=base.span_rate, ringbuf_pages=base.ringbuf_pages,
                      zones=zone_map, top_flows=flows, spans=spans)
    return lambda telemetry: NetTracer(telemetry, opts)


def register(app: typer.Typer) -> None:
    app.command(name="net")(net)
