"""Which Consul client failures are retried within a call: the names must exist in py-consul
(`consul.exceptions`; `consul.base.BadRequest` did not, so classifying a 4xx raised AttributeError)."""

from __future__ import annotations

import aiohttp
import consul
import consul.exceptions
import pytest

from service.consul_registry import _transient


@pytest.mark.parametrize("exc,retried", [
    (aiohttp.ClientConnectionError("refused"), True),
    (TimeoutError(), True),
    (ConnectionResetError(), True),
    (consul.Timeout("slow"), True),
    (consul.ConsulException("500 Internal Server Error"), True),
    (consul.exceptions.BadRequest("400"), False),
    (consul.exceptions.ACLPermissionDenied("403"), False),
    (consul.exceptions.NotFound("404"), False),
    (consul.exceptions.ClientError("4xx"), False),
    (consul.exceptions.ACLDisabled("acl off"), False),
    (ValueError("a bug of ours"), False),
])
def test_transient(exc: BaseException, retried: bool) -> None:
    assert _transient(exc) is retried
