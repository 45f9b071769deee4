"""Go `encoding/json` and `time.ParseDuration` behaviour, as Consul's decoder shows it to clients.

Consul decodes request bodies with Go's `encoding/json` (strict: unknown fields rejected) and puts
the Go error text verbatim into its 400 answers. A client that is tested against a simulator with
Python's own error texts would learn the wrong strings, so this module reproduces Go's: the syntax
errors of Go's scanner, `EOF` / `unexpected EOF`, the "cannot unmarshal" type errors, and Go
duration parsing and printing. It is pure (no I/O) so validation can be tested table-driven.

Parsed values: objects become `GoObject` (ordered key/value pairs, duplicates kept, because Go
walks them in document order and the first error wins), numbers stay `GoNumber` (their literal
text, so an `int` field can reject `1.5` the way Go does).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


class GoJSONError(Exception):
    """A decode error; `str()` is exactly Go's `err.Error()`."""


@dataclass(frozen=True)
class GoObject:
    pairs: list[tuple[str, object]]


class GoNumber(str):
    """A JSON number kept as its literal text."""


def go_quote_char(c: str) -> str:
    """Go scanner's `quoteChar`."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    q = json.dumps(c)[1:-1]
    return f"'{q}'"


def go_quote(s: str) -> str:
    """Go `%q` for ordinary strings (close enough: JSON escaping without \\u for printable text)."""
    return json.dumps(s, ensure_ascii=False)


_WS = " \t\r\n"


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def err(self, c: str, ctx: str) -> GoJSONError:
        return GoJSONError(f"invalid character {go_quote_char(c)} {ctx}")

    def peek(self) -> str:
        if self.i >= len(self.s):
            raise GoJSONError("unexpected EOF")
        return self.s[self.i]

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in _WS:
            self.i += 1

    def value(self) -> object:
        self.skip_ws()
        c = self.peek()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c == '"':
            return self.string()
        if c == "-" or c.isdigit():
            return self.number()
        for lit, val in (("true", True), ("false", False), ("null", None)):
            if c == lit[0]:
                self.i += 1
                for expect in lit[1:]:
                    got = self.peek()
                    if got != expect:
                        raise self.err(got, f"in literal {lit} (expecting {go_quote_char(expect)})")
                    self.i += 1
                return val
        raise self.err(c, "looking for beginning of value")

    def obj(self) -> GoObject:
        self.i += 1
        pairs: list[tuple[str, object]] = []
        self.skip_ws()
        if self.peek() == "}":
            self.i += 1
            return GoObject(pairs)
        while True:
            self.skip_ws()
            c = self.peek()
            if c != '"':
                raise self.err(c, "looking for beginning of object key string")
            key = self.string()
            self.skip_ws()
            c = self.peek()
            if c != ":":
                raise self.err(c, "after object key")
            self.i += 1
            val = self.value()
            pairs.append((key, val))
            self.skip_ws()
            c = self.peek()
            self.i += 1
            if c == "}":
                return GoObject(pairs)
            if c != ",":
                raise self.err(c, "after object key:value pair")

    def arr(self) -> list[object]:
        self.i += 1
        out: list[object] = []
        self.skip_ws()
        if self.peek() == "]":
            self.i += 1
            return out
        while True:
            out.append(self.value())
            self.skip_ws()
            c = self.peek()
            self.i += 1
            if c == "]":
                return out
            if c != ",":
                raise self.err(c, "after array element")

    def string(self) -> str:
        start = self.i
        self.i += 1
        while True:
            c = self.peek()
            if c == '"':
                self.i += 1
                break
            if c == "\\":
                self.i += 1
                e = self.peek()
                if e == "u":
                    for _ in range(4):
                        self.i += 1
                        h = self.peek()
                        if h not in "0123456789abcdefABCDEF":
                            raise self.err(h, "in \\u hexadecimal character escape")
                elif e not in '"\\/bfnrt':
                    raise self.err(e, "in string escape code")
            elif ord(c) < 0x20:
                raise self.err(c, "in string literal")
            self.i += 1
        text: str = json.loads(self.s[start:self.i])
        return text

    def number(self) -> GoNumber:
        start = self.i
        if self.s[self.i] == "-":
            self.i += 1
            c = self.peek()
            if not c.isdigit():
                raise self.err(c, "in numeric literal")
        if self.peek() == "0":
            self.i += 1
        else:
            while self.i < len(self.s) and self.s[self.i].isdigit():
                self.i += 1
        if self.i < len(self.s) and self.s[self.i] == ".":
            self.i += 1
            c = self.peek()
            if not c.isdigit():
                raise self.err(c, "after decimal point in numeric literal")
            while self.i < len(self.s) and self.s[self.i].isdigit():
                self.i += 1
        if self.i < len(self.s) and self.s[self.i] in "eE":
            self.i += 1
            c = self.peek()
            if c in "+-":
                self.i += 1
                c = self.peek()
            if not c.isdigit():
                raise self.err(c, "in exponent of numeric literal")
            while self.i < len(self.s) and self.s[self.i].isdigit():
                self.i += 1
        if self.i >= len(self.s):
            # Go's stream decoder cannot know a top-level or unfinished number has ended
            raise GoJSONError("unexpected EOF")
        return GoNumber(self.s[start:self.i])


class _NotGo(Exception):
    """Raised for JSON extensions Python accepts and Go does not (NaN, Infinity)."""


def _reject_constant(name: str) -> object:
    raise _NotGo(name)


_FAST = json.JSONDecoder(object_pairs_hook=GoObject, parse_int=GoNumber, parse_float=GoNumber,
                         parse_constant=_reject_constant)


def parse(body: bytes) -> object:
    """Parse the first JSON value of `body` like `json.Decoder.Decode` (trailing data is not read)."""
    text = body.decode("utf-8", errors="replace")
    try:  # fast path: the C decoder accepts exactly the well-formed documents that Go does
        return _FAST.decode(text)
    except (ValueError, _NotGo):
        pass  # malformed, trailing data, or NaN/Infinity: let the Go-faithful parser explain
    p = _Parser(text)
    p.skip_ws()
    if p.i >= len(text):
        raise GoJSONError("EOF")
    return p.value()


def go_kind(v: object) -> str:
    """The JSON value description Go puts in an UnmarshalTypeError."""
    if isinstance(v, GoObject):
        return "object"
    if isinstance(v, list):
        return "array"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, GoNumber):
        return "number"
    return "string"


def go_int(v: GoNumber) -> int | None:
    """Go `strconv.ParseInt(lit, 10, 64)`: integers only, no exponent, no fraction."""
    if re.fullmatch(r"-?\d+", v):
        n = int(v)
        if -(2**63) <= n < 2**63:
            return n
    return None


# ---- time.ParseDuration / Duration.String ------------------------------------------------------

_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_duration(s: str) -> int:
    """Go `time.ParseDuration`, in nanoseconds; errors carry Go's exact text."""
    orig = s
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise GoJSONError(f"time: invalid duration {go_quote(orig)}")
    total = 0
    while s:
        m = _PART.match(s)
        assert m is not None
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise GoJSONError(f"time: invalid duration {go_quote(orig)}")
        if frac is not None and not whole and not frac:
            raise GoJSONError(f"time: invalid duration {go_quote(orig)}")
        if not unit:
            raise GoJSONError(f"time: missing unit in duration {go_quote(orig)}")
        if unit not in _UNITS:
            raise GoJSONError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}")
        scale = _UNITS[unit]
        val = int(whole or "0") * scale
        if frac:
            val += int(int(frac) * scale / (10 ** len(frac)))
        total += val
        s = s[m.end():]
        if total > 2**63 - 1:
            raise GoJSONError(f"time: invalid duration {go_quote(orig)}")
    return -total if neg else total


def duration_string(ns: int) -> str:
    """Go `time.Duration.String()`: `0s`, `500ms`, `1.5s`, `1m0s`, `1h30m0s`."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = abs(ns)
    sign = "-" if neg else ""
    if u < 1_000_000_000:
        for scale, unit in ((1_000_000, "ms"), (1_000, "µs"), (1, "ns")):
            if u >= scale:
                return sign + _frac(u, scale) + unit
    h, rem = divmod(u, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    secs = _frac(rem, 1_000_000_000) + "s"
    if h:
        return f"{sign}{h}h{m}m{secs}"
    if m:
        return f"{sign}{m}m{secs}"
    return sign + secs


def _frac(v: int, scale: int) -> str:
    whole, rem = divmod(v, scale)
    if not rem:
        return str(whole)
    digits = str(rem).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"
