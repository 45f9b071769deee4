"""Task and instance ids of every Marathon version (reference marathon.md §6.3)."""

from __future__ import annotations

import pytest

from service.marathon.task_ids import app_id_from_instance_id, parse_task_id

UUID = "1b4c6a2e-5f3d-11eb-8a3e-0242ac110002"


@pytest.mark.parametrize(
    ("task_id", "app_id", "uuid", "incarnation", "fmt", "container", "instance_id"),
    [
        # 1.4-1.7 app task
        (f"site1_customer1_web.{UUID}", "/site1/customer1/web", UUID, None, "legacy", None,
         f"site1_customer1_web.marathon-{UUID}"),
        # very old ids used `_` as the separator
        (f"site1_customer1_web_{UUID}", "/site1/customer1/web", UUID, None, "legacy", None,
         f"site1_customer1_web.marathon-{UUID}"),
        # example from Marathon's docs
        ("tools_docker_registry.002b4d28-1e47-11e6-8c4b-0242ac110002", "/tools/docker/registry",
         "002b4d28-1e47-11e6-8c4b-0242ac110002", None, "legacy", None,
         "tools_docker_registry.marathon-002b4d28-1e47-11e6-8c4b-0242ac110002"),
        # resident task <= 1.7: attempt counter
        (f"db.{UUID}.3", "/db", UUID, 3, "legacy", None, f"db.marathon-{UUID}"),
        # 1.8+ app task
        (f"site1_customer1_web.instance-{UUID}._app.1", "/site1/customer1/web", UUID, 1, "instance", "_app",
         f"site1_customer1_web.instance-{UUID}"),
        (f"minecraft_survival-world.instance-{UUID}._app.12", "/minecraft/survival-world", UUID, 12,
         "instance", "_app", f"minecraft_survival-world.instance-{UUID}"),
        # pod container task
        (f"shop_cart.instance-{UUID}.nginx", "/shop/cart", UUID, None, "instance", "nginx",
         f"shop_cart.instance-{UUID}"),
        # single-segment app, dots inside a segment
        (f"web.{UUID}", "/web", UUID, None, "legacy", None, f"web.marathon-{UUID}"),
        (f"web_v1.2_a.{UUID}", "/web/v1.2/a", UUID, None, "legacy", None, f"web_v1.2_a.marathon-{UUID}"),
        (f"web_v1.2_a.instance-{UUID}._app.2", "/web/v1.2/a", UUID, 2, "instance", "_app",
         f"web_v1.2_a.instance-{UUID}"),
    ],
)
def test_parse_task_id(task_id, app_id, uuid, incarnation, fmt, container, instance_id):
    parsed = parse_task_id(task_id)
    assert parsed.task_id == task_id
    assert parsed.app_id == app_id
    assert parsed.uuid == uuid
    assert parsed.incarnation == incarnation
    assert parsed.format == fmt
    assert parsed.container == container
    assert parsed.instance_id == instance_id


@pytest.mark.parametrize(
    "task_id",
    ["", "web", "web.", f".{UUID}", f"_{UUID}", "hello world.abc", f"a__b.{UUID}", f"/web.{UUID}", None, 42],
)
def test_malformed_task_ids_raise(task_id):
    with pytest.raises(ValueError, match="malformed Marathon task id"):
        parse_task_id(task_id)


@pytest.mark.parametrize(
    ("instance_id", "app_id"),
    [
        (f"site1_customer1_web.instance-{UUID}", "/site1/customer1/web"),
        (f"site1_customer1_web.marathon-{UUID}", "/site1/customer1/web"),
        (f"web.instance-{UUID}", "/web"),
    ],
)
def test_app_id_from_instance_id(instance_id, app_id):
    assert app_id_from_instance_id(instance_id) == app_id


@pytest.mark.parametrize("instance_id", ["", f"web.{UUID}", f"web.instance-{UUID}._app.1", "instance-x"])
def test_malformed_instance_ids_raise(instance_id):
    with pytest.raises(ValueError, match="malformed Marathon instance id"):
        app_id_from_instance_id(instance_id)
