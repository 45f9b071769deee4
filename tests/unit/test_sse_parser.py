"""SSEParser: framing as Marathon's Jetty writes it, chunked every way a TCP stream can chunk it."""

from __future__ import annotations

import pytest

from service.marathon.sse import SSEError, SSEParser

EVENT = (b'event: status_update_event\r\n'
         b'data: {"eventType":"status_update_event","taskId":"web.1","host":"h\xc3\xa9"}\r\n'
         b'\r\n')
EXPECTED = ("status_update_event", '{"eventType":"status_update_event","taskId":"web.1","host":"hé"}')


def feed_all(parser: SSEParser, chunks: list[bytes]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for c in chunks:
        out.extend(parser.feed(c))
    return out


def test_marathon_crlf_framing_in_one_read() -> None:
    assert SSEParser().feed(EVENT) == [EXPECTED]


def test_every_split_point_gives_the_same_event() -> None:
    # Covers CR and LF in separate reads and the two bytes of "é" in separate reads.
    for i in range(1, len(EVENT)):
        assert feed_all(SSEParser(), [EVENT[:i], EVENT[i:]]) == [EXPECTED], f"split at {i}"


def test_one_byte_at_a_time() -> None:
    stream = EVENT * 3
    assert feed_all(SSEParser(), [stream[i:i + 1] for i in range(len(stream))]) == [EXPECTED] * 3


def test_cr_then_lf_in_separate_reads_is_one_line_end() -> None:
    # If the LF were a second (empty) line, it would dispatch nothing but reset the event name,
    # and the data would come out as a "message".
    p = SSEParser()
    assert p.feed(b"event: deployment_info\r") == []
    assert p.feed(b"\ndata: {}\r") == []
    assert p.feed(b"\n") == []
    assert p.feed(b"\r") == [("deployment_info", "{}")]
    assert p.feed(b"\n") == []


def test_bare_crlf_heartbeats_produce_nothing() -> None:
    p = SSEParser()
    # Jetty: CR, flush, LF, flush, every heartbeat period.
    assert feed_all(p, [b"\r", b"\n"] * 50) == []
    assert p.feed(b"\r\n" * 10) == []
    # ...and do not disturb an event that follows
    assert p.feed(EVENT) == [EXPECTED]


def test_heartbeat_between_event_and_data_would_dispatch_a_message_like_the_spec_says() -> None:
    # An empty line always ends the event under construction: data without event name.
    p = SSEParser()
    assert p.feed(b"event: x\r\n\r\ndata: 1\r\n\r\n") == [("message", "1")]


def test_lone_cr_and_lone_lf_line_ends() -> None:
    assert SSEParser().feed(b"event: a\rdata: 1\r\r") == [("a", "1")]
    assert SSEParser().feed(b"event: a\ndata: 1\n\n") == [("a", "1")]
    assert SSEParser().feed(b"event: a\r\ndata: 1\n\r") == [("a", "1")]


def test_comment_lines_are_ignored() -> None:
    p = SSEParser()
    assert p.feed(b": hello\r\n:\r\n") == []
    assert p.feed(b"event: e\r\n: in the middle\r\ndata: 1\r\n\r\n") == [("e", "1")]


def test_multi_line_data_joined_with_newline() -> None:
    assert SSEParser().feed(b"data: a\ndata:b\ndata:  c\n\n") == [("message", "a\nb\n c")]


def test_event_name_defaults_to_message_and_resets_after_dispatch() -> None:
    p = SSEParser()
    assert p.feed(b"event: named\ndata: 1\n\ndata: 2\n\n") == [("named", "1"), ("message", "2")]


def test_event_without_data_is_not_dispatched() -> None:
    assert SSEParser().feed(b"event: nothing\r\n\r\n") == []


def test_field_without_colon_and_unknown_fields() -> None:
    # "data" alone is a data line with an empty value; id/retry/unknown are ignored.
    assert SSEParser().feed(b"id: 7\nretry: 10\nfoo: bar\ndata\ndata: x\n\n") == [("message", "\nx")]


def test_incomplete_event_is_kept_until_its_blank_line() -> None:
    p = SSEParser()
    assert p.feed(b"event: e\r\ndata: {\"a\":") == []
    assert p.feed(b"1}\r\n") == []
    assert p.feed(b"\r\n") == [("e", '{"a":1}')]


def test_reset_discards_a_partial_event() -> None:
    p = SSEParser()
    p.feed(b"event: e\r\ndata: 1\r\n")
    p.reset()
    assert p.feed(b"data: 2\r\n\r\n") == [("message", "2")]


def test_leading_bom_is_stripped() -> None:
    assert SSEParser().feed(b"\xef\xbb\xbfevent: e\ndata: 1\n\n") == [("e", "1")]


def test_utf8_split_across_three_reads() -> None:
    p = SSEParser()
    snowman = "☃".encode()
    assert p.feed(b"data: " + snowman[:1]) == []
    assert p.feed(snowman[1:2]) == []
    assert p.feed(snowman[2:] + b"\n\n") == [("message", "☃")]


def test_overlong_line_is_an_error() -> None:
    p = SSEParser(max_line_bytes=16)
    with pytest.raises(SSEError):
        p.feed(b"data: " + b"x" * 32)
