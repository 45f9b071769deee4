"""What "ours" means (service/ownership.py): the marker, the id formats and their parsing back, filters."""

from __future__ import annotations

import pytest

from service import ownership
from service.ownership import (
    SERVICE_ID_PREFIX,
    check_id,
    checks_filter,
    health_check_index,
    is_ours,
    mirror_check_id,
    owned_filter,
    ownership_meta,
    service_id,
)


def test_meta_carries_the_marker_and_sorted_keys() -> None:
    meta = ownership_meta(app_id="/web/x", task_id="web_x.1", host="h", port_index=2, address_source="host")
    assert meta == (("address-source", "host"), ("managed-by", "marathon-consul-registrar"),
                    ("marathon-app-id", "/web/x"), ("marathon-host", "h"), ("marathon-task-id", "web_x.1"),
                    ("port-index", "2"))
    assert is_ours(dict(meta))


@pytest.mark.parametrize("meta,ours", [
    ({"managed-by": "marathon-consul-registrar"}, True),
    ({"managed-by": "registrator"}, False),
    ({}, False),
    ({"marathon-app-id": "/web/x"}, False),
])
def test_is_ours(meta: dict[str, str], ours: bool) -> None:
    assert is_ours(meta) is ours


def test_a_marker_key_added_in_one_place_is_written_and_required_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ownership, "OWNER_MARKER", {**ownership.OWNER_MARKER, "marathon-cluster-id": "c1"})
    meta = dict(ownership_meta(app_id="/a", task_id="a.1", host="h", port_index=0, address_source="overlay"))
    assert meta["marathon-cluster-id"] == "c1" and is_ours(meta)
    assert not is_ours({**meta, "marathon-cluster-id": "c2"})
    assert 'Meta["marathon-cluster-id"] == "c1"' in owned_filter()


def parse_service_id(sid: str) -> tuple[str, int] | None:
    """`mcr-<task id>-<port index>` -> (task id, port index); None for an id not of this form.
    Task ids contain dashes, the port index does not, so the last dash separates them: the ids we
    make must parse back so (an operator reads the task out of an id)."""
    if not sid.startswith(SERVICE_ID_PREFIX):
        return None
    task_id, sep, index = sid[len(SERVICE_ID_PREFIX):].rpartition("-")
    if not sep or not task_id or not index.isdigit():
        return None
    return task_id, int(index)


@pytest.mark.parametrize("task_id,index", [
    ("web_customer1_site1.1b4c6a2e-5f3d-11eb-8a3e-0242ac110002", 0),  # legacy task id, dashes inside
    ("web_x.instance-0b6c4ed2-5f3d-11eb-8a3e-0242ac110002._app.1", 3),  # instance id form
])
def test_service_ids_parse_back(task_id: str, index: int) -> None:
    assert parse_service_id(service_id(task_id, index)) == (task_id, index)


@pytest.mark.parametrize("sid", ["web-1", "mcr-", "mcr-task", "mcr-task-x", "mcr--0"])
def test_foreign_service_ids_do_not_parse(sid: str) -> None:
    assert parse_service_id(sid) is None


def test_check_ids_parse_back_to_the_marathon_health_check_index() -> None:
    sid = service_id("a.1", 0)
    assert check_id(sid, 0) == "service:mcr-a.1-0:1"
    assert mirror_check_id(sid, 2) == "service:mcr-a.1-0:marathon:3"
    assert health_check_index(check_id(sid, 4)) == 4
    assert health_check_index(mirror_check_id(sid, 4)) == 4


def test_filters() -> None:
    assert owned_filter() == 'Meta["managed-by"] == "marathon-consul-registrar"'
    assert owned_filter("/web/x") == ('Meta["managed-by"] == "marathon-consul-registrar" and '
                                      'Meta["marathon-app-id"] == "/web/x"')
    assert owned_filter('/we"b').endswith('Meta["marathon-app-id"] == "/we\\"b"'), "quotes are escaped"
    assert checks_filter(["mcr-a-0", "mcr-b-0"]) == 'ServiceID == "mcr-a-0" or ServiceID == "mcr-b-0"'
    assert checks_filter([f"mcr-{i}-0" for i in range(ownership.MAX_FILTERED_SERVICES + 1)]) is None
