"""`tls_reason`: one name for a missing client certificate, whichever way TLS 1.3 reports it.

The server's "certificate required" alert comes after the client's handshake, so a client sees an
SSL alert, a closed connection or a connection reset depending on timing (all three seen in CI
against the Consul simulator); the operator must read the same cause in each case.
"""

from __future__ import annotations

import errno
import ssl

import aiohttp
import pytest

from service.connect import tls_reason

CAUSE = "it may require a client certificate"


def _alert() -> ssl.SSLError:
    exc = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    exc.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    return exc


@pytest.mark.parametrize("exc", [
    _alert(),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
], ids=["alert", "closed", "client-os-reset", "reset"])
def test_every_way_a_missing_client_certificate_shows_names_it(exc: BaseException) -> None:
    reason = tls_reason(exc, https=True)
    assert reason is not None and CAUSE in reason


def test_a_reset_on_plain_http_is_not_called_a_tls_problem() -> None:
    assert tls_reason(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), https=False) is None


def test_a_closed_connection_on_plain_http_suggests_https() -> None:
    reason = tls_reason(aiohttp.ServerDisconnectedError(), https=False)
    assert reason is not None and "use https://" in reason
