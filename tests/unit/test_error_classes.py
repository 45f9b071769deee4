"""The classification of failures (service/errors.py), one row per failure a client library can
raise: the names must be py-consul's public ones (`consul.base.BadRequest` did not exist, so
classifying a 4xx raised AttributeError), and the verdicts are docs/architecture.md §8's."""

from __future__ import annotations

import logging
import ssl

import aiohttp
import consul
import consul.exceptions
import pytest

from service.errors import DONE, REASONS, REPORT, RETRY, Classified, Verdict, classify_consul, classify_status, record
from service.metrics import Metrics


@pytest.mark.parametrize(("exc", "verdict", "reason"), [
    (aiohttp.ClientConnectionError("refused"), RETRY, "connection"),
    (aiohttp.ServerDisconnectedError(), RETRY, "connection"),
    (ConnectionResetError(), RETRY, "connection"),
    (TimeoutError(), RETRY, "timeout"),
    (aiohttp.ServerTimeoutError("slow"), RETRY, "timeout"),
    (consul.Timeout("slow"), RETRY, "timeout"),
    (consul.ConsulException("500 rpc error making call: No cluster leader"), RETRY, "no-leader"),
    (consul.ConsulException("500 Internal Server Error"), RETRY, "server-error"),
    (consul.ConsulException("502 Bad Gateway"), RETRY, "unavailable"),
    (consul.ConsulException("503 "), RETRY, "unavailable"),
    (consul.exceptions.ClientError("429 Your IP is issuing too many concurrent connections"), RETRY, "rate-limited"),
    (consul.exceptions.BadRequest("400 Invalid check"), REPORT, "bad-request"),
    (consul.exceptions.ACLDisabled("ACL support disabled"), REPORT, "unauthorized"),
    (consul.exceptions.ACLPermissionDenied("Permission denied"), REPORT, "acl-denied"),
    (consul.exceptions.NotFound("Unknown service ID"), REPORT, "not-found"),
    (consul.exceptions.ClientError("405 method GET not allowed"), REPORT, "method-not-allowed"),
    (consul.exceptions.ClientError("418 teapot"), REPORT, "client-error"),
    (consul.ConsulException("Failed to decode JSON: <html> Expecting value"), REPORT, "garbage"),
    (consul.ConsulException("Missing index header: <CIMultiDictProxy()>"), REPORT, "no-index-header"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), REPORT, "tls"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     REPORT, "garbage"),
])
def test_consul_failures(exc: BaseException, verdict: Verdict, reason: str) -> None:
    assert classify_consul(exc) == Classified(verdict, reason)
    assert reason in REASONS


def test_not_a_failure_of_the_call_is_not_classified() -> None:
    """A bug of ours (AttributeError, KeyError) is not an answer: it must stay loud."""
    assert classify_consul(AttributeError("consul.base has no BadRequest")) is None
    assert classify_consul(KeyError("Address")) is None


@pytest.mark.parametrize(("status", "body", "verdict", "reason"), [
    (400, "", REPORT, "bad-request"), (401, "", REPORT, "unauthorized"), (403, "", REPORT, "acl-denied"),
    (404, "", REPORT, "not-found"), (422, "", REPORT, "invalid"), (409, "", REPORT, "conflict"),
    (451, "", REPORT, "client-error"), (302, "", REPORT, "redirect"),
    (429, "", RETRY, "rate-limited"), (500, "", RETRY, "server-error"), (502, "", RETRY, "unavailable"),
    (503, "", RETRY, "unavailable"), (504, "", RETRY, "unavailable"), (599, "", RETRY, "server-error"),
    (503, "<pre>    Could not determine the current leader</pre>", RETRY, "no-leader"),
    (502, "Could not determine the current leader", RETRY, "no-leader"),
])
def test_statuses(status: int, body: str, verdict: Verdict, reason: str) -> None:
    assert classify_status(status, body) == Classified(verdict, reason)


def test_record_counts_every_answer_and_logs_a_report_once_per_cause(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    denied = Classified(REPORT, "acl-denied")
    with caplog.at_level(logging.INFO, logger="service.errors"):
        for target in ("http://a:8500", "http://a:8500", "http://b:8500"):
            record(metrics, system="consul", call="register", target=target, classified=denied, message="403 no")
        record(metrics, system="consul", call="register", target="http://a:8500",
               classified=Classified(RETRY, "timeout"), message="slow")
        record(metrics, system="consul", call="deregister", target="http://a:8500",
               classified=Classified(DONE, "gone"), message="gone")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [("http://a:8500" in r.getMessage(), "http://b:8500" in r.getMessage()) for r in errors] == [
        (True, False), (False, True)]
    value = metrics.registry.get_sample_value
    assert value("mcr_call_errors_total", {"system": "consul", "call": "register", "verdict": "report",
                                           "reason": "acl-denied"}) == 3
    assert value("mcr_call_errors_total", {"system": "consul", "call": "register", "verdict": "retry",
                                           "reason": "timeout"}) == 1
    assert value("mcr_call_errors_total", {"system": "consul", "call": "deregister", "verdict": "done",
                                           "reason": "gone"}) == 1


def test_a_report_says_what_happens_next_in_the_callers_words(caplog: pytest.LogCaptureFixture) -> None:
    """A reconcile call waits for the next resync; the lock, the event stream and /v2/info do not,
    and their report must not say they do."""
    denied = Classified(REPORT, "acl-denied")
    with caplog.at_level(logging.ERROR, logger="service.errors"):
        record(Metrics(), system="consul", call="register", target="http://a:8500", classified=denied, message="403")
        record(Metrics(), system="consul", call="session_create", target="http://a:8500", classified=denied,
               message="403", then="tried again at the lock's next round (acquire or renew)")
    register, lock = (r.getMessage() for r in caplog.records)
    assert "not retried until the next resync" in register
    assert "lock's next round" in lock and "resync" not in lock
