"""The filter language of `protolab inspect --filter`: an expression compiled to a predicate on
annotated rows.

Words: `tcp`, `udp`, `dns`, `quic`, `icmp`, `http`, `host ADDR`, `port N`, `flow N`, combined with
`and`, `or`, `not` and parentheses, e.g. `dns and not port 53`. A filter that does not parse is a
FilterError whose message is one line for the user.
"""

from __future__ import annotations

from collections.abc import Callable

from protolab.analysis.facts import Row

Pred = Callable[[Row], bool]
PROTOCOLS = {"tcp", "udp", "dns", "quic", "icmp", "http"}
#: Parentheses nest at most this deep; deeper is refused in one line (not a RecursionError).
MAX_NESTING = 64


class FilterError(ValueError):
    """A filter expression that does not parse: the message is one line for the user."""


def compile_filter(expr: str) -> Pred:
    """Compile a filter expression to a predicate on rows. Chains of `and`/`or` become one flat
    test and runs of `not` cancel in pairs, so neither a long expression nor 2,000 `not`s can
    recurse; only parentheses nest, at most MAX_NESTING deep."""
    tokens = expr.replace("(", " ( ").replace(")", " ) ").split()
    if not tokens:
        raise FilterError("empty filter")
    parser = _Parser(expr, tokens)
    pred = parser.or_expr()
    if parser.pos != len(tokens):
        raise FilterError(f"unexpected {tokens[parser.pos]!r} in filter {shorten(expr)!r}")
    return pred


class _Parser:
    """Recursive descent over the tokens: or_expr → and_expr → not_expr → atom."""

    def __init__(self, expr: str, tokens: list[str]) -> None:
        self.expr = expr
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        if self.pos >= len(self.tokens):
            raise FilterError(f"filter ends too soon: {shorten(self.expr)!r}")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def or_expr(self) -> Pred:
        preds = [self.and_expr()]
        while self.peek() == "or":
            self.take()
            preds.append(self.and_expr())
        return _any(preds)

    def and_expr(self) -> Pred:
        preds = [self.not_expr()]
        while self.peek() == "and":
            self.take()
            preds.append(self.not_expr())
        return _all(preds)

    def not_expr(self) -> Pred:
        negate = False
        while self.peek() == "not":
            self.take()
            negate = not negate
        inner = self.atom()
        return (lambda r: not inner(r)) if negate else inner

    def atom(self) -> Pred:
        tok = self.take().lower()
        if tok != "(":
            return _word(tok, self.take)
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise FilterError(f"filter nests parentheses deeper than {MAX_NESTING}")
        inner = self.or_expr()
        if self.take() != ")":
            raise FilterError(f"missing ')' in {shorten(self.expr)!r}")
        self.depth -= 1
        return inner


def _word(tok: str, take: Callable[[], str]) -> Pred:
    """One test: a protocol, or `host`/`port`/`flow` and the value `take()` gives."""
    if tok in PROTOCOLS:
        return _proto_pred(tok)
    if tok == "host":
        host = take()
        return lambda r: _host(r.src) == host or _host(r.dst) == host
    if tok in ("port", "flow"):
        value = take()
        if not value.isdigit():
            raise FilterError(f"'{tok}' needs a number, not {shorten(value)!r}")
        n = int(value)
        if tok == "port":
            return lambda r: n in (r.fields.get("sport"), r.fields.get("dport"))
        return lambda r: r.fields.get("flow_number") == n
    raise FilterError(f"unknown filter word {shorten(tok)!r} (use tcp, udp, dns, quic, icmp, "
                      f"http, host ADDR, port N, flow N, and, or, not)")


def _any(preds: list[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) or b(r)
    return lambda r: any(p(r) for p in preds)


def _all(preds: list[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) and b(r)
    return lambda r: all(p(r) for p in preds)


def shorten(text: str, limit: int = 60) -> str:
    """Text quoted in an error stays one readable line however long the filter was."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _proto_pred(name: str) -> Pred:
    if name == "http":
        return lambda r: "http" in r.fields
    if name == "udp":
        return lambda r: r.proto in ("UDP", "DNS", "QUIC") and r.fields.get("tcp_seq") is None
    if name == "tcp":
        return lambda r: r.proto == "TCP"
    if name == "icmp":
        return lambda r: r.proto.startswith("ICMP")
    upper = name.upper()
    return lambda r: r.proto == upper or (upper == "DNS" and "dns_id" in r.fields)


def _host(endpoint: str) -> str:
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 or endpoint.startswith("[") \
        else endpoint
    return host.strip("[]")
