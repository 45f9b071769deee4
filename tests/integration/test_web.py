"""The registrar's HTTP face in-process: callback statuses, readiness reasons, metrics names."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient, TestServer

from service.intake import EventIntake
from service.metrics import Metrics
from service.web import Readiness, make_app


class RecordingReconciler:
    def __init__(self) -> None:
        self.hints: list[object] = []

    def hint(self, event: object, received_at: float | None = None) -> None:
        self.hints.append(event)

    def snapshot(self) -> dict[str, object]:
        return {"registrations": [], "queued_apps": []}


RUNNING = {"eventType": "status_update_event", "timestamp": "2026-11-29T04:00:00.000Z", "slaveId": "S1",
           "taskId": "web_customer1_site1.instance-1b4c6a2e-5f3d-11eb-8a3e-0242ac110002._app.1",
           "taskStatus": "TASK_RUNNING", "message": "", "appId": "/web/customer1/site1", "host": "127.0.0.2",
           "ipAddresses": [{"ipAddress": "10.32.1.0", "protocol": "IPv4"}], "ports": [31000],
           "version": "2026-11-29T03:59:00.000Z"}


async def client_for(readiness: Readiness | None = None, max_bytes: int = 1024 * 1024):
    metrics = Metrics()
    reconciler = RecordingReconciler()
    app = make_app(intake=EventIntake(reconciler, metrics), reconciler=reconciler,  # type: ignore[arg-type]
                   metrics=metrics, readiness=readiness or Readiness(), max_event_bytes=max_bytes)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, reconciler, metrics


async def test_callback_is_parsed_whatever_the_content_type() -> None:
    client, reconciler, _ = await client_for()
    try:
        for ctype in ("application/json; charset=UTF-8", "text/plain; charset=UTF-8", "application/x-whatever"):
            resp = await client.post("/v1/events", data=json.dumps(RUNNING), headers={"Content-Type": ctype})
            assert resp.status == 202, await resp.text()
            assert await resp.json() == {"status": "queued"}
        assert len(reconciler.hints) == 3
    finally:
        await client.close()


async def test_ignored_type_is_200_and_not_queued() -> None:
    client, reconciler, _ = await client_for()
    try:
        resp = await client.post("/v1/events", data=json.dumps(
            {"eventType": "framework_message_event", "timestamp": "2026-11-29T04:00:00.000Z"}))
        assert resp.status == 200
        assert await resp.json() == {"status": "ignored"}
        assert reconciler.hints == []
    finally:
        await client.close()


async def test_bad_bodies_are_400_or_413_with_a_message_and_nothing_queued() -> None:
    client, reconciler, metrics = await client_for(max_bytes=1000)
    try:
        cases = [(b"{", 400, "not-json"), (b"[1]", 400, None), (b'{"eventType": "status_update_event"}', 400, None),
                 (b"a" * 1001, 413, "too-large")]
        for body, status, reason in cases:
            resp = await client.post("/v1/events", data=body)
            payload = await resp.json()
            assert resp.status == status, (body, payload)
            assert payload["message"], payload
            if reason:
                assert payload["error"] == reason
        assert reconciler.hints == []
        text = metrics.render().decode()
        assert 'mcr_events_rejected_total{reason="not-json"} 1.0' in text
        assert 'mcr_events_rejected_total{reason="too-large"} 1.0' in text
    finally:
        await client.close()


async def test_ready_says_why_until_attached_and_resynced() -> None:
    readiness = Readiness()
    client, _, _ = await client_for(readiness)
    try:
        resp = await client.get("/ready")
        assert resp.status == 503
        assert (await resp.json())["reasons"] == ["event source not attached yet", "first resync not finished yet"]
        readiness.source_attached = True
        resp = await client.get("/ready")
        assert (await resp.json())["reasons"] == ["first resync not finished yet"]
        readiness.first_resync_done = True
        resp = await client.get("/ready")
        assert resp.status == 200
        assert (await client.get("/health")).status == 200
    finally:
        await client.close()


async def test_metrics_follow_prometheus_conventions() -> None:
    client, _, _ = await client_for()
    try:
        await client.post("/v1/events", data=json.dumps(RUNNING))
        resp = await client.get("/metrics")
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
        assert 'mcr_events_received_total{type="status_update_event"} 1.0' in text
        for name in ("mcr_registrations_total", "mcr_deregistrations_total", "mcr_docker_request_seconds",
                     "mcr_consul_request_seconds", "mcr_event_to_registration_seconds", "mcr_work_queue_depth",
                     "mcr_retries_total", "mcr_resync_duration_seconds", "mcr_event_source_connected"):
            assert f"# TYPE {name}" in text.replace("_total counter", " counter") or f"# HELP {name}" in text, name
        assert "taskId" not in text and "instance-" not in text, "no task ids as label values"
    finally:
        await client.close()
