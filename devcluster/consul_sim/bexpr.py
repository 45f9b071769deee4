"""A subset of go-bexpr, Consul's `?filter=` language, evaluated over the answer's JSON objects.

Supported: selectors `Field`, `Field.Sub`, `Field["key"]`; `==`, `!=`, `is empty`,
`is not empty`, `<value> in <selector>`, `<value> not in <selector>`, `<selector> contains
<value>`, `<selector> not contains <value>`; `and`, `or`, `not`, parentheses; values are quoted
strings ("..." or `...`), numbers, `true`/`false`. Anything else — a syntax error or a selector
the endpoint's type does not have — is refused with a plain-text 500 (reference §3 says the bad
expression error comes back as a plain error); the exact go-bexpr wording is approximated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from devcluster.consul_sim.validation import ApiError

_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<op>==|!=|\(|\)|\[|\]|\.)|"""
                    r"""(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_\-]*))""")

Predicate = Callable[[dict[str, Any]], bool]


def _fail(detail: str) -> ApiError:
    return ApiError(500, f"Failed to create boolean expression evaluator: {detail}")


class _Parser:
    def __init__(self, text: str, fields: set[str], open_maps: set[str]) -> None:
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise _fail(f"1:{pos + 1} ({pos}): no match found")
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.fields = fields
        self.open_maps = open_maps

    def peek(self, k: int = 0) -> tuple[str, str, int] | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take_word(self, word: str) -> bool:
        t = self.peek()
        if t and t[0] == "word" and t[1] == word:
            self.i += 1
            return True
        return False

    def expect(self, kind: str, val: str | None = None) -> tuple[str, str, int]:
        t = self.peek()
        if t is None or t[0] != kind or (val is not None and t[1] != val):
            where = t[2] if t else -1
            raise _fail(f"1:{where + 1} ({where}): no match found, expected {val or kind}")
        self.i += 1
        return t

    def parse(self) -> Predicate:
        if not self.toks:
            raise _fail("1:1 (0): no match found, expected an expression")
        p = self.or_()
        if self.peek() is not None:
            t = self.peek()
            assert t is not None
            raise _fail(f"1:{t[2] + 1} ({t[2]}): no match found, unexpected {t[1]!r}")
        return p

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.take_word("or"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else (lambda o: any(p(o) for p in parts))

    def and_(self) -> Predicate:
        parts = [self.not_()]
        while self.take_word("and"):
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else (lambda o: all(p(o) for p in parts))

    def not_(self) -> Predicate:
        if self.take_word("not"):
            inner = self.not_()
            return lambda o: not inner(o)
        t = self.peek()
        if t and t[0] == "op" and t[1] == "(":
            self.i += 1
            inner = self.or_()
            self.expect("op", ")")
            return inner
        return self.match()

    def value(self) -> str:
        t = self.peek()
        if t is None:
            raise _fail("unexpected end of expression, expected a value")
        if t[0] == "str":
            self.i += 1
            raw = t[1]
            return raw[1:-1] if raw[0] == "`" else re.sub(r"\\(.)", r"\1", raw[1:-1])
        if t[0] == "num" or (t[0] == "word" and t[1] in ("true", "false")):
            self.i += 1
            return t[1]
        raise _fail(f"1:{t[2] + 1} ({t[2]}): no match found, expected a value")

    def selector(self) -> list[str]:
        t = self.expect("word")
        path = [t[1]]
        if path[0] not in self.fields:
            raise _fail(f'Selector "{path[0]}" is not valid')
        while (n := self.peek()) and n[0] == "op" and n[1] in (".", "["):
            self.i += 1
            if n[1] == ".":
                path.append(self.expect("word")[1])
            else:
                path.append(self.value())
                self.expect("op", "]")
        if len(path) > 1 and path[0] not in self.open_maps:
            raise _fail(f'Selector "{".".join(path)}" is not valid')
        return path

    def match(self) -> Predicate:
        t = self.peek()
        if t and t[0] in ("str", "num"):
            val = self.value()
            negate = self.take_word("not")
            if not self.take_word("in"):
                raise _fail("expected 'in'")
            sel = self.selector()
            return lambda o: _contains(_get(o, sel), val) != negate
        sel = self.selector()
        if self.take_word("is"):
            negate = self.take_word("not")
            if not self.take_word("empty"):
                raise _fail("expected 'empty'")
            return lambda o: (not _get(o, sel)) != negate
        negate = self.take_word("not")
        if self.take_word("contains"):
            val = self.value()
            return lambda o: _contains(_get(o, sel), val) != negate
        if negate:
            raise _fail("expected 'contains'")
        op = self.expect("op")[1]
        if op not in ("==", "!="):
            raise _fail(f"unexpected {op!r}")
        val = self.value()
        if op == "==":
            return lambda o: _eq(_get(o, sel), val)
        return lambda o: not _eq(_get(o, sel), val)


def _get(obj: Any, path: list[str]) -> Any:
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return None
        obj = obj[p]
    return obj


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def _eq(v: Any, val: str) -> bool:
    if v is None or isinstance(v, (dict, list)):
        return False
    return _text(v) == val


def _contains(v: Any, val: str) -> bool:
    if isinstance(v, (dict, list)):
        return val in v
    if isinstance(v, str):
        return val in v
    return False


def compile_filter(expr: str, fields: set[str], open_maps: set[str]) -> Predicate:
    """Compile `expr`; `fields` are the valid top-level selectors, `open_maps` the map-valued ones."""
    return _Parser(expr, fields, open_maps).parse()
