"""Prometheus metrics, defined once so every module counts into the same series.

Label values are bounded sets (event types Marathon defines, a few reasons and results, agent
hosts); task and app ids never become labels, so a busy cluster cannot blow up cardinality.
Each registrar process gets its own registry (`Metrics()`), which keeps tests and the benchmark's
in-process runs independent.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._children: dict[tuple[int, str], MetricWrapperBase] = {}
        p = "mcr_"
        self.events_received = Counter(p + "events_received_total", "Marathon events received, by type",
                                       ["type"], registry=r)
        self.events_rejected = Counter(p + "events_rejected_total", "Callback bodies rejected, by reason",
                                       ["reason"], registry=r)
        self.events_ignored = Counter(p + "events_ignored_total", "Events of types the registrar ignores",
                                      registry=r)
        self.registrations = Counter(p + "registrations_total", "Consul service registrations, by result",
                                     ["result"], registry=r)
        self.deregistrations = Counter(p + "deregistrations_total", "Consul deregistrations, by result",
                                       ["result"], registry=r)
        self.skips = Counter(p + "tasks_skipped_total", "Tasks left unregistered, by reason", ["reason"],
                             registry=r)
        self.overlay_rejected = Counter(
            p + "overlay_addresses_rejected_total",
            "Containers whose addresses are not overlay addresses (outside --overlay-cidr), counted once per "
            "container, by reason", ["reason"], registry=r)
        self.weave_lookups = Counter(
            p + "weave_lookups_total",
            "Weave-proxied container IP lookups, by result (where the IP was found, or why not)", ["result"],
            registry=r)
        self.docker_latency = Histogram(p + "docker_request_seconds", "Docker Engine API call latency",
                                        ["call"], buckets=LATENCY_BUCKETS, registry=r)
        self.consul_latency = Histogram(p + "consul_request_seconds", "Consul agent API call latency",
                                        ["call"], buckets=LATENCY_BUCKETS, registry=r)
        self.marathon_latency = Histogram(p + "marathon_request_seconds", "Marathon REST call latency",
                                          ["call"], buckets=LATENCY_BUCKETS, registry=r)
        self.name_overrides_refused = Counter(
            p + "name_overrides_refused_total",
            "Service name overrides (consul.name, SERVICE_NAME) refused by --allow-name-override, once per "
            "app and name", registry=r)
        self.event_to_registration = Histogram(
            p + "event_to_registration_seconds",
            "From receiving a task event to the Consul write it caused", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge(p + "work_queue_depth", "Keys waiting for a worker", registry=r)
        self.in_flight = Gauge(p + "work_in_flight", "Keys being worked on", registry=r)
        self.retries = Counter(p + "retries_total", "Retried outside calls, by system", ["system"],
                               registry=r)
        # docs/architecture.md §8: every failed answer of an outside call, by its verdict
        self.call_errors = Counter(p + "call_errors_total",
                                   "Failed answers of outside calls, by system, call, verdict (retry, done, "
                                   "report) and reason", ["system", "call", "verdict", "reason"], registry=r)
        self.agents_failing = Gauge(p + "resync_agents_failing",
                                    "Consul agents the last resync could not read", registry=r)
        self.parked = Counter(p + "work_parked_total",
                              "App runs stopped by a refusal (REPORT answer), left to the next resync", registry=r)
        self.unlisted_reads_skipped = Counter(
            p + "unlisted_reads_skipped_total",
            "Event hints for apps the last resync did not list, over the read budget: left to the next resync",
            registry=r)
        # (system, target, call, reason) already logged as a REPORT: each distinct cause is logged once
        self.reported_causes: set[tuple[str, str, str, str]] = set()
        self.managed = Gauge(p + "managed_registrations", "Registrations the registrar holds in Consul",
                             registry=r)
        self.resync_duration = Histogram(p + "resync_duration_seconds", "Full resync duration",
                                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60), registry=r)
        self.resyncs = Counter(p + "resyncs_total", "Full resyncs, by result", ["result"], registry=r)
        self.drift = Counter(p + "drift_found_total", "Drift found, by kind (missing, orphan, drifted)",
                             ["kind"], registry=r)
        self.repairs = Counter(p + "repairs_total", "Drift repairs, by result", ["result"], registry=r)
        self.event_source_connected = Gauge(p + "event_source_connected",
                                            "1 while the Marathon event source is attached", registry=r)
        self.reconnects = Counter(p + "event_source_reconnects_total", "Event stream reconnects", registry=r)
        self.subscription = Gauge(p + "callback_subscribed",
                                  "1 while our callback URL is subscribed in Marathon", registry=r)
        self.leader = Gauge(p + "leader", "1 while this instance holds the Consul lock and writes", registry=r)
        self.lock_acquired = Counter(p + "lock_acquired_total", "Times this instance took the Consul lock",
                                     registry=r)
        self.lock_lost = Counter(p + "lock_lost_total", "Times this instance lost or gave up the Consul lock",
                                 registry=r)
        self.writes_refused = Counter(p + "writes_refused_total",
                                      "Consul writes not made because this instance is not the writer", registry=r)

    def labelled(self, metric: M, value: str) -> M:
        """`metric.labels(value)`, kept: the event path asks for the same few children thousands of
        times a second, and `labels()` validates and locks each time (~1 us; 4 calls per registration
        in a burst). Bounded, since label values are (module docstring)."""
        key = (id(metric), value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(value)
        return child  # type: ignore[return-value]

    def render(self) -> bytes:
        return generate_latest(self.registry)
