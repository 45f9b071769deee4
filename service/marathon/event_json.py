"""An event body decoded with bounds: the callback body and the SSE `data:` are hostile until
proven otherwise (the callback endpoint is unauthenticated by nature), and both transports need the
same guarantees. CPython's C JSON decoder recurses once per nesting level, so `[[[…]]]` a thousand
levels deep raises `RecursionError` (a 500 and a Marathon back-off): nesting is measured *before*
decoding, without recursion, and bounded by `MAX_JSON_DEPTH`, and so is the number of values
(`MAX_JSON_VALUES`); everything else that can go wrong (invalid UTF-8, `NaN`/`Infinity`, integers
beyond Python's 4300-digit limit, syntax) becomes an `EventError` with its own reason, so no body
can end as an internal exception.
"""

from __future__ import annotations

import itertools
import json
import operator
import re

from service.marathon.event_error import EventError

# Deep enough for any event Marathon writes (a heavy deployment plan nests two levels per app-id
# segment plus about ten for the app itself, so 256 fits app ids over 100 segments deep), shallow
# enough that the decoder and everything after it (repr in error messages, logging) stays far from
# the interpreter's recursion limit of 1000, whatever the caller's stack depth.
MAX_JSON_DEPTH = 256

# What decoding costs is the number of values, not bytes: 4 MB of `[],[],…` (1.4 million lists) or
# of one object's 400,000 members takes the decoder 0.6 s on the CI machine, 4 MB of Marathon's own
# app JSON 0.12 s. Counted as the `[`, `:` and `,` outside strings (each value but the first follows
# one of them), Marathon's app JSON has one per 9.5 bytes (the 1.4 simulator's rendering of the
# demo app: 110 in 1,040 bytes), so a real event of the callback's 4 MB limit counts 440,000; the cap
# is one per 8 bytes of that limit, and a capped hostile body decodes in at most ~0.35 s.
MAX_JSON_VALUES = 4 * 1024 * 1024 // 8

# One JSON string token; possessive, and ending at a closing quote *or the end of the text*, so it
# matches from every quote and the scan stays linear even for unterminated strings.
_JSON_STRING = re.compile(r'"(?:[^"\\]+|\\.?)*+(?:"|\Z)', re.DOTALL)
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")  # only the depth matters, not which bracket
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_PAREN_STEP = bytes.maketrans(b"()", b"\x02\x00")  # opener 2, closer 0: depth = running sum - count
_SHRINK_ABOVE = 64 * 1024  # brackets; below this the exact scan is cheap enough
_SHRINK_PASSES = 8


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `text`, read as JSON, nests arrays/objects deeper than `limit`, found without recursion.

    Brackets inside strings do not count. The common case (at most `limit` brackets at all) costs
    two `str.count`s; otherwise strings are cut out and the running depth is computed by C-level
    iterators (no Python bytecode per bracket), stopping at the first level past the limit. For
    invalid JSON the answer is only meaningful up to the first syntax error, which is as far as the
    decoder goes too.

    Megabytes of brackets would still cost about a second that way, so a long bracket string is
    first shrunk by up to `_SHRINK_PASSES` rounds of deleting adjacent `()` pairs (bytes.replace, C
    speed). Deleting a balanced pair leaves every other position's depth as it was, and a round
    lowers the maximum by at most one, so the shrunk string under-counts by at most the rounds
    run: such a body is accepted up to `limit` and rejected beyond `limit + _SHRINK_PASSES` (264,
    still far from the interpreter's recursion limit).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    outside_strings = _JSON_STRING.sub("", text).encode("utf-8", errors="surrogatepass")
    parens = outside_strings.translate(_AS_PARENS, _NOT_BRACKETS)
    if len(parens) > _SHRINK_ABOVE:
        for _ in range(_SHRINK_PASSES):
            shorter = parens.replace(b"()", b"")
            if len(shorter) == len(parens):
                break
            parens = shorter
        if parens.count(b"(") <= limit:
            return False
    depths = map(operator.sub, itertools.accumulate(parens.translate(_PAREN_STEP)), itertools.count(1))
    return any(map(limit.__lt__, depths))


def json_values_exceed(text: str, limit: int = MAX_JSON_VALUES) -> bool:
    """Whether `text` holds more than `limit` JSON values, counted before decoding as the `[`, `:`
    and `,` outside strings plus one (an upper bound: an object's member counts its key's comma and
    its value's colon). Three `str.count`s (about 20 ms for 4 MB) unless that count is over the
    limit; only then are strings cut out, so punctuation inside strings never rejects a body."""
    if text.count("[") + text.count(":") + text.count(",") < limit:
        return False
    outside_strings = _JSON_STRING.sub("", text)
    return outside_strings.count("[") + outside_strings.count(":") + outside_strings.count(",") >= limit


def _reject_constant(name: str) -> object:
    raise EventError("bad-number", f"body is not JSON: {name} is not a JSON number (RFC 8259 §6)")


def decode_event_body(raw: bytes | bytearray) -> object:
    """A callback body -> its decoded JSON value; `EventError` with a bounded reason otherwise.

    The body is read as UTF-8 whatever Content-Type and charset the poster declared: Marathon always
    sends UTF-8 (marathon.md §1.3), JSON exchanged between systems must be UTF-8 (RFC 8259 §8.1), and a
    declared charset is one more thing a forged request could lie about.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError("not-utf8", f"body is not UTF-8: invalid byte at offset {exc.start}") from None
    return decode_event_text(text)


def decode_event_text(text: str) -> object:
    """Decoded text of one event -> its JSON value, with nesting bounded by `MAX_JSON_DEPTH` and the
    number of values by `MAX_JSON_VALUES`.

    Duplicate keys keep their last value, as Marathon's own parser does: events are hints, so a
    duplicate can at most aim a re-read at another app, which the poster could do directly anyway.
    """
    text = text.removeprefix("\ufeff")  # RFC 8259 §8.1: a parser may ignore a byte order mark
    if not text.strip():
        raise EventError("not-json", "body is empty, expected a JSON object")
    if json_depth_exceeds(text):
        raise EventError("too-deep", f"body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")
    if json_values_exceed(text):
        raise EventError("too-many-values", f"body holds more than {MAX_JSON_VALUES} JSON values "
                                            f"(the cap on one event)")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise EventError("not-json", f"body is not JSON: {exc}") from None
    except EventError:
        raise
    except ValueError as exc:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise EventError("bad-number", f"body is not usable JSON: {exc}") from None
