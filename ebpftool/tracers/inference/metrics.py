"""The inference tracer's metrics: the kernel's histogram and counter maps, read once per interval, become
cumulative points; the series of containers gone since are then removed from the maps."""
from __future__ import annotations

from typing import Any

from ebpftool.core.bpf import HistSum, merge_hist
from ebpftool import semconv as sc
from ebpftool.export.model import MetricPoint, counter, seconds_histogram
from ebpftool.tracers.inference import parsers
from ebpftool.tracers.inference.figures import workload
from ebpftool.tracers.inference.records import H, METHOD_NAMES, NO_RESPONSE, OPERATIONS

UNKNOWN_PROTOCOL = "unknown_protocol"                     # first bytes neither HTTP/1.x nor HTTP/2
TLS_WITHOUT_KNOWN_LIBRARY = "tls_without_known_library"   # TLS whose plaintext no hooked library gave
GEN_AI_METRIC_MAPS = ("genai_hist", "ttft_hist", "tpot_hist", "output_tokens")  # hash maps keyed by struct req_key


class InferenceMetrics:
    """Mixed into InferenceTracer: collect() and what it needs (state: prog, hooks, cgroups,
    _cgroups_in_maps, _cgroups_gone, _model_names; _server_rates, told the streams under way)."""

    def _key_attrs(self, k, gen_ai: bool) -> dict[str, Any]:
        attrs: dict[str, Any] = {sc.SERVER_PORT: k.port, **self.cgroups.workload_attributes(k.cgroup)}
        if gen_ai:
            attrs[sc.GEN_AI_OPERATION_NAME] = OPERATIONS.get(k.op, "generate_content")
            model = self._model_name(int(k.model))
            if model:
                attrs[sc.GEN_AI_RESPONSE_MODEL] = model
        else:
            attrs[sc.HTTP_REQUEST_METHOD] = METHOD_NAMES.get(k.method & ~(H["METHOD_TLS"] | H["METHOD_H2"]),
                                                             parsers.OTHER_METHOD)
            attrs[sc.URL_SCHEME] = "https" if k.method & H["METHOD_TLS"] else "http"
            if k.method & H["METHOD_H2"]:
                # an HTTP/2 stream the kernel measured (its connection's records were lost: http2.bpf.h)
                attrs[sc.NETWORK_PROTOCOL_VERSION] = "2"
                if k.status == H["H2_STATUS_UNKNOWN"]:
                    return attrs   # answered, with a :status the kernel could not read without the header table
            if k.status:
                attrs[sc.HTTP_RESPONSE_STATUS_CODE] = k.status
        if k.status >= 500 or k.status == 0:
            attrs[sc.ERROR_TYPE] = str(k.status) if k.status else NO_RESPONSE
        return attrs

    def _model_name(self, model_id: int) -> str | None:
        """The name of a model id of the kernel's (bpf/inference/model.bpf.h), read from model_names once."""
        if not model_id:
            return None
        names = self._model_names
        if model_id not in names:
            entry = self.prog["model_names"].get(self.prog["model_names"].Key(model_id))
            if entry is None:
                return None   # its name did not fit the map: the series has no model
            raw = bytes(entry.name[:min(int(entry.len), len(entry.name))])
            names[model_id] = parsers.model_name(raw)
        return names[model_id]

    def _http_series(self) -> list[tuple[Any, Any]]:
        """(struct req_key, per-CPU histogram) of each filled slot of the kernel's series table."""
        hist = self.prog["http_hist"]
        return [(k, hist[hist.Key(slot)]) for slot, k in self.prog.batch_items("series_keys")
                if k.slot == H["SERIES_USED"]]

    def _histograms(self, series, metric: str, description: str, bounds, gen_ai: bool,
                    also: list[tuple[dict[str, Any], HistSum]] = ()) -> list[MetricPoint]:
        """One point per attribute set from (struct req_key, per-CPU histogram) pairs; kernel keys that differ
        only in what is not exported (or slots of one key) are merged, and with them the series measured in
        user space (also: (attributes, histogram), left unchanged)."""
        merged: dict[tuple, tuple[dict[str, Any], HistSum]] = {}
        for attrs, hist in also:
            copy = HistSum(buckets=[0] * (len(bounds) + 1))
            copy.add(hist)
            merged[tuple(sorted(attrs.items()))] = (attrs, copy)
        nb = len(bounds) + 1
        for k, per_cpu in series:
            self._cgroups_in_maps.add(int(k.cgroup))
            hist = merge_hist(per_cpu, nb)
            if not hist.count:
                continue
            attrs = self._key_attrs(k, gen_ai)
            key = tuple(sorted(attrs.items()))
            if key not in merged:
                merged[key] = (attrs, hist)
            else:
                merged[key][1].add(hist)
        return [seconds_histogram(metric, description, attrs, hist, bounds) for attrs, hist in merged.values()]

    def collect(self) -> list[MetricPoint]:
        if self.prog is None or self.prog.bpf is None:
            return []
        self._flush_idle_requests()
        followed = self._followed_connections()
        self._server_rates.streams = self._streams_in_flight(followed)
        self._h2_forget_gone({int(c.id) for c in followed})
        # HTTP/2 streams are measured in user space, and in the kernel on connections whose records were lost:
        # one point per attribute set from both
        points = self._histograms(self._http_series(), sc.HTTP_SERVER_REQUEST_DURATION,
                                  "Duration of HTTP server requests", sc.HTTP_DURATION_BUCKETS, gen_ai=False,
                                  also=self._h2_hist.of(sc.HTTP_SERVER_REQUEST_DURATION))
        points += self._histograms(self.prog["genai_hist"].items(), sc.GEN_AI_SERVER_REQUEST_DURATION,
                                   "Generative AI server request duration", sc.GEN_AI_REQUEST_DURATION_BUCKETS,
                                   gen_ai=True)
        points += self._histograms(self.prog["ttft_hist"].items(), sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
                                   "Time to generate the first token (first `data:` event written)",
                                   sc.GEN_AI_TTFT_BUCKETS, gen_ai=True)
        points += self._histograms(self.prog["tpot_hist"].items(), sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
                                   "Time per output token after the first (between `data:` events)",
                                   sc.GEN_AI_TPOT_BUCKETS, gen_ai=True)
        tokens: dict[tuple, list] = {}
        for k, per_cpu in self.prog["output_tokens"].items():
            attrs = {**self._key_attrs(k, gen_ai=True), sc.GEN_AI_TOKEN_TYPE: "output"}
            entry = tokens.setdefault(tuple(sorted(attrs.items())), [attrs, 0])
            entry[1] += sum(per_cpu)
        points += [counter(sc.EBPFTOOL_GEN_AI_OUTPUT_TOKENS, "{token}",
                           "Output tokens streamed (`data:` events other than [DONE])", n, attrs)
                   for attrs, n in tokens.values()]
        unparsed = "Connections whose requests were not read: not HTTP/1.x or HTTP/2 (reason unknown_protocol), " \
                   "or TLS that no hooked library decrypted (reason tls_without_known_library)"
        per_port = [
            ("unparsed", sc.EBPFTOOL_HTTP_UNPARSED_CONNECTIONS, "{connection}", unparsed,
             {sc.EBPFTOOL_UNPARSED_REASON: UNKNOWN_PROTOCOL}),
            ("tls_unknown", sc.EBPFTOOL_HTTP_UNPARSED_CONNECTIONS, "{connection}", unparsed,
             {sc.EBPFTOOL_UNPARSED_REASON: TLS_WITHOUT_KNOWN_LIBRARY}),
            ("accepted", sc.EBPFTOOL_HTTP_CONNECTIONS, "{connection}", "Connections accepted on watched sockets", {}),
        ]
        if self.hooks == "socket":
            per_port.append(("untracked", sc.EBPFTOOL_HTTP_UNTRACKED_CONNECTIONS, "{connection}",
                             "Connections on watched ports not followed: no free slot in the connection table "
                             "(--max-connections)", {}))
        for name, metric, unit, description, extra in per_port:
            for k, per_cpu in self.prog[name].items():
                points.append(counter(metric, unit, description, sum(per_cpu), {sc.SERVER_PORT: int(k.value), **extra}))
        points.append(counter(sc.EBPFTOOL_HTTP_METRICS_DROPPED, "{request}",
                              "Finished requests left out of a duration histogram: its kernel map was full",
                              self.prog.stats()[H["STAT_INF_METRICS_FULL"]], {}))
        points += self._h2_points()
        self._retire_gone_containers()
        self.last_points = points
        return points

    def _streams_in_flight(self, followed: list) -> dict[tuple[int, str], int]:
        """Per server (port, workload as figures.workload names it): its generative-AI requests and streamed
        answers under way now, from the kernel's state of every followed connection (a request is under way from
        its first byte until it is finished, when the kernel clears its start)."""
        out: dict[tuple[int, str], int] = {}
        for c in followed:
            if c.req_start and (c.op != H["OP_NONE"] or c.flags & (H["REQ_SSE"] | H["REQ_NDJSON"])):
                key = (int(c.port), workload(self.cgroups.workload_attributes(c.cgroup)))
                out[key] = out.get(key, 0) + 1
        return out

    def _retire_gone_containers(self) -> None:
        """A series per container means a key per container in the kernel's metric maps: those of containers
        gone since the previous collect (whose final counts that collect and this one exported) are deleted
        from the hash maps and their slots of the series table freed, so that Pods coming and going do not
        fill them. Their series end there."""
        gone = {i for i in self._cgroups_in_maps if self.cgroups.is_gone(i)}
        retire = gone & self._cgroups_gone
        self._cgroups_gone = gone - retire
        self._cgroups_in_maps = set()
        if not retire:
            return
        for name in GEN_AI_METRIC_MAPS:
            self.prog.delete_keys(name, lambda k: int(k.cgroup) in retire)
        keys, hist = self.prog["series_keys"], self.prog["http_hist"]
        for slot, k in self.prog.batch_items("series_keys"):
            if k.slot == H["SERIES_USED"] and int(k.cgroup) in retire:
                del hist[hist.Key(slot)]  # zeroed on every CPU, then the slot freed: a later key starts empty
                keys.clearitem(keys.Key(slot))
        for cgroup_id in retire:
            self.cgroups.forget(cgroup_id)

