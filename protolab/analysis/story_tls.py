"""The TLS session-ticket story (`protolab tls-demo`), found in the annotated rows of a capture.

Where state lives: in the capture. Each TCP connection's ClientHello says whether the client
presented a ticket (`pre_shared_key`, extension 41, with the ticket's bytes), its ServerHello
whether the server opened it; a relay's own connection to a backend carries the same ClientHello
(same random) to the backend's port. Everything here is read from those two cleartext messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protolab.analysis.facts import Kind, Row


@dataclass(frozen=True)
class Handshake:
    """One TCP connection's ClientHello and ServerHello (None when not in the capture)."""

    hello: Row
    server_hello: Row | None

    @property
    def ticket(self) -> str:
        """The ticket presented (hex), "" for none."""
        return self.hello.fields.get("tls_ticket", "")

    @property
    def relayed(self) -> bool:
        """A relay's connection to a backend (the client's hello forwarded)."""
        return self.hello.shows(Kind.TLS_RELAYED)

    @property
    def resumed(self) -> bool | None:
        return None if self.server_hello is None else bool(
            self.server_hello.fields.get("tls_resumed"))

    @property
    def port(self) -> int:
        """The port the hello went to: the server, the relay, or a backend."""
        return self.hello.fields["dport"]

    @property
    def packets(self) -> tuple[int, ...]:
        return (self.hello.number, *((self.server_hello.number,) if self.server_hello else ()))


def handshakes(rows: Sequence[Row]) -> list[Handshake]:
    """Each connection's first ClientHello and the ServerHello after it, in capture order."""
    hellos: dict[str, Row] = {}
    servers: dict[str, Row] = {}
    for r in rows:
        kind = r.fields.get("tls_hello")
        if kind == "ClientHello":
            hellos.setdefault(r.flow, r)
        elif kind == "ServerHello" and r.flow in hellos:
            servers.setdefault(r.flow, r)
    return [Handshake(h, servers.get(flow)) for flow, h in hellos.items()]


def _first(rows: Sequence[Row], offered: bool, resumed: bool,
           relayed: bool = False) -> list[int]:
    hs = next((h for h in handshakes(rows) if bool(h.ticket) is offered
               and h.resumed is resumed and h.relayed is relayed), None)
    return list(hs.packets) if hs else []


def tls_full(rows: Sequence[Row]) -> list[int]:
    """A ClientHello with no ticket, answered by a full handshake."""
    return _first(rows, False, False)


def tls_resumed(rows: Sequence[Row]) -> list[int]:
    """A ClientHello with a ticket, answered with pre_shared_key: resumed."""
    return _first(rows, True, True)


def tls_refused(rows: Sequence[Row]) -> list[int]:
    """A ClientHello with a ticket, answered without pre_shared_key: the key could not open it."""
    return _first(rows, True, False)


def tickets_at_backends(rows: Sequence[Row]) -> dict[str, list[Handshake]]:
    """Ticket (hex) → the relay's connections that carried it to a backend, in order."""
    out: dict[str, list[Handshake]] = {}
    for h in handshakes(rows):
        if h.relayed and h.ticket and h.resumed is not None:
            out.setdefault(h.ticket, []).append(h)
    return out


def tls_shared_key(rows: Sequence[Row]) -> list[int]:
    """One ticket resumed at two backend ports: the backends hold one ticket key."""
    for seen in tickets_at_backends(rows).values():
        ports = {h.port for h in seen if h.resumed}
        if len(ports) >= 2:
            return [n for h in seen for n in h.packets]
    return []


def tls_sticky(rows: Sequence[Row]) -> list[int]:
    """One ticket refused at one backend port and resumed at another: each its own key."""
    for seen in tickets_at_backends(rows).values():
        took = {h.port for h in seen if h.resumed}
        refused = {h.port for h in seen if not h.resumed}
        if took and refused and not took & refused:
            return [n for h in seen for n in h.packets]
    return []
