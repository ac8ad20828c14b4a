"""The annotator's TLS part: TLS 1.3 on a TCP connection, as far as session state shows on the wire.

Where state lives: a ClientHello with `pre_shared_key` (extension 41) carries a session ticket, the
server's own session state sealed under its ticket key, which the client holds (a token, RFC 8446
section 4.6.1); the ServerHello of the same connection says whether the server could open it (ext
41 there: resumed) or not (a full handshake: its key is another's). ClientHello and ServerHello are
in the clear; everything after is encrypted, including the NewSessionTicket that delivered the
ticket. A relay that forwards the same ClientHello on its own connection is recognised by the
hello's random.
"""

from __future__ import annotations

from collections import OrderedDict

from protolab.analysis.facts import MAX_PENDING, Action, Fact, Holder, Kind
from protolab.protocols.tls import APPLICATION_DATA, Hello, is_tls_record, parse_hello, records

KERNELS = (Holder.CLIENT_KERNEL, Holder.SERVER_KERNEL)


class TlsAnnotator:
    """Facts for TCP segments that start with a TLS record; remembers each connection's
    ClientHello (did it offer a ticket?) and recent ClientHello randoms (a relay's copy)."""

    def __init__(self) -> None:
        self._offered: OrderedDict[int, tuple[int, bool]] = OrderedDict()  # flow → (#, ticket)
        self._randoms: OrderedDict[bytes, int] = OrderedDict()  # ClientHello random → first #

    def describe(self, payload: bytes, number: int, flow: int, base: dict
                 ) -> tuple[Action, tuple[Holder, ...], Fact] | None:
        """The fact of a segment that starts a TLS record, its summary and fields added to
        `base`; None when the payload is not TLS."""
        if not is_tls_record(payload):
            return None
        hello = parse_hello(payload)
        if hello is None:
            return self._encrypted(payload, base)
        fields = base["fields"]
        fields.update(tls_hello="ClientHello" if hello.client else "ServerHello",
                      tls_extensions=list(hello.extensions), tls_psk=41 in hello.extensions)
        if hello.client:
            return self._client_hello(hello, number, flow, base)
        return self._server_hello(hello, flow, base)

    def _client_hello(self, hello: Hello, number: int, flow: int, base: dict
                      ) -> tuple[Action, tuple[Holder, ...], Fact]:
        first = self._randoms.setdefault(hello.random, number)
        _bounded(self._randoms)
        self._offered[flow] = (number, hello.offers_ticket)
        _bounded(self._offered)
        also = (Kind.TLS_RELAYED,) if first != number else ()
        refs = (first,) if also else ()
        if not hello.offers_ticket:
            base["summary"] += " TLS ClientHello (no ticket)"
            return Action.CREATES, (Holder.CLIENT_APP, *KERNELS), Fact(
                Kind.TLS_CLIENT_HELLO, refs, also=also)
        ticket = hello.identities[0] if hello.identities else b""
        base["fields"].update(tls_ticket=ticket.hex(), tls_ticket_len=len(ticket))
        base["summary"] += f" TLS ClientHello pre_shared_key ticket={ticket[:4].hex()}…"
        return Action.USES, (Holder.TOKEN, *KERNELS), Fact(
            Kind.TLS_TICKET_OFFERED, refs, key=ticket[:4].hex(), also=also,
            values={"size": len(ticket)})

    def _server_hello(self, hello: Hello, flow: int, base: dict
                      ) -> tuple[Action, tuple[Holder, ...], Fact]:
        asked, offered = self._offered.get(flow, (0, False))
        refs = (asked,) if asked else ()
        if hello.resumed:
            base["fields"]["tls_resumed"] = True
            base["summary"] += f" TLS ServerHello pre_shared_key={hello.selected} (resumed)"
            return Action.USES, (Holder.TOKEN, Holder.SERVER_APP, *KERNELS), Fact(
                Kind.TLS_RESUMED, refs, values={"selected": hello.selected})
        base["fields"]["tls_resumed"] = False
        base["summary"] += " TLS ServerHello (full handshake)"
        if offered:
            return Action.MISSING, (Holder.NOBODY, *KERNELS), Fact(Kind.TLS_TICKET_REFUSED, refs)
        return Action.CREATES, (Holder.CLIENT_APP, Holder.SERVER_APP, *KERNELS), Fact(
            Kind.TLS_FULL_HANDSHAKE, refs)

    @staticmethod
    def _encrypted(payload: bytes, base: dict) -> tuple[Action, tuple[Holder, ...], Fact]:
        recs = records(payload)
        size = sum(len(f) for t, f in recs if t == APPLICATION_DATA)
        base["summary"] += f" TLS {len(recs)} encrypted record{'s' * (len(recs) != 1)}"
        base["fields"]["tls_records"] = len(recs)
        return Action.USES, KERNELS, Fact(Kind.TLS_ENCRYPTED, values={"size": size})


def _bounded(table: OrderedDict) -> None:
    while len(table) > MAX_PENDING:
        table.popitem(last=False)
