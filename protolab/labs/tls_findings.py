"""What `protolab tls-demo` found, as observations: from the client's `ssl`, the backends' own
answers and this run's capture; and its "where state lives" table, from a run or from packets.

Where state lives: nowhere new; this module only judges the run's data (`protolab.labs.tls`).
A connection's claim about the wire holds only when its ClientHello and ServerHello are in the
capture with extension 41 exactly where the client's `session_reused` says; without a capture the
claim rests on both ends' words and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protolab.analysis.facts import Row
from protolab.analysis.observe import (
    Evidence,
    Findings,
    Observation,
    StateRow,
    Status,
    explain,
    from_packets,
    observe,
)
from protolab.analysis.story_tls import (
    handshakes,
    tls_refused,
    tls_resumed,
    tls_shared_key,
    tls_sticky,
)

if TYPE_CHECKING:
    from protolab.labs.tls import Attempt, TlsDemoResult

ZERO_RTT = ("0-RTT (early data sent with the ticket, before the handshake ends): Python's ssl has "
            "no API to send or accept early data (OpenSSL's SSL_write_early_data is not "
            "exposed), so this lab cannot show it truthfully. What it would show: early data is "
            "encrypted under the ticket's resumption secret alone, so an attacker who captured "
            "it can replay it to any server holding the ticket key (RFC 8446 section 8): "
            "servers accept it only for requests safe to repeat")
RESUMPTION_SECRET = ("the resumption secret that pairs with the ticket lives in the client's "
                     "SSLSession object; Python's ssl does not expose it (the key log holds the "
                     "traffic secrets, not it)")


def _wire(a: Attempt, captured: bool, resumed: bool) -> tuple[bool, list[Evidence]]:
    """The capture agrees: ext 41 in the ClientHello iff a ticket was offered, in the
    ServerHello iff `resumed`. Without a capture: nothing to check, no packet evidence."""
    if not captured:
        return True, []
    ch, sh = a.hello, a.server_hello
    ok = (ch is not None and sh is not None and bool(ch.fields.get("tls_psk")) is a.offered
          and bool(sh.fields.get("tls_psk")) is resumed)
    packets = tuple(r.number for r in (ch, sh) if r is not None)
    return ok, [Evidence("ClientHello, ServerHello (ext 41: "
                         f"{_ext(ch)}, {_ext(sh)})", packets=packets)]


def _ext(row: Row | None) -> str:
    return "missing" if row is None else "yes" if row.fields.get("tls_psk") else "no"


def _ends(a: Attempt) -> list[Evidence]:
    return [Evidence("client's session_reused", after=a.reused),
            Evidence("backend said", after=f"{a.backend} pid {a.answer.get('pid')} resumed="
                                           f"{a.answer.get('resumed')}")]


def _connection(key: str, claim: str, a: Attempt | None, captured: bool, resumed: bool,
                seen: str, extra_ok: bool = True) -> Observation:
    if a is None or a.error:
        return observe(key, claim, False, why_not=a.error if a else "the step did not run")
    wire_ok, wire = _wire(a, captured, resumed)
    said = a.answer.get("resumed") == ("yes" if resumed else "no")
    ok = a.reused is resumed and said and wire_ok and extra_ok
    return observe(key, claim, ok, seen=seen, evidence=[*_ends(a), *wire],
                   why_not=f"session_reused={a.reused}, backend said resumed="
                           f"{a.answer.get('resumed')}, capture ext 41: "
                           f"{_ext(a.hello)}/{_ext(a.server_hello)}")


def _at(attempts: Sequence[Attempt], i: int) -> Attempt | None:
    return attempts[i] if len(attempts) > i else None


def build_findings(result: TlsDemoResult, captured: bool) -> Findings:
    f = Findings()
    direct, shared, separate = result.get("direct"), result.get("shared"), result.get("separate")
    first = _at(direct, 0)
    f.add(observe(
        "tls.ticket-issued", "a full handshake leaves the client holding a ticket",
        first is not None and not first.error and first.has_ticket and first.lifetime > 0
        and not first.reused, seen="full handshake; the client's SSLSession now holds a ticket",
        evidence=[Evidence("SSLSession.has_ticket", after=first.has_ticket if first else None),
                  Evidence("ticket_lifetime_hint", after=f"{first.lifetime} s" if first else 0)]
        + (_wire(first, captured, False)[1] if first else [])))
    held = [a.answer.get("sessions_held") for a in result.attempts if a.answer]
    f.add(observe(
        "tls.server-holds-nothing", "the servers keep no session per client (stateless tickets)",
        bool(held) and all(h == "0" for h in held),
        seen="every backend's session cache held 0 sessions after each handshake",
        evidence=[Evidence("sessions held, per answer", after=" ".join(map(str, held)))],
        why_not=f"sessions held: {held}"))
    f.add(_connection("tls.resumed", "presenting the ticket resumes the session",
                      _at(direct, 1), captured, True, "resumed: the server opened its ticket"))
    old, new = result.restart
    again = _at(result.get("restarted"), 0)
    f.add(_connection("tls.restart-full-handshake", "a restarted server (a new ticket key) "
                      "cannot open the old ticket", again, captured, False,
                      f"the new process (pid {old} → {new}) refused the ticket: full handshake",
                      extra_ok=again is not None and str(new) == again.answer.get("pid")
                      and old != new))
    _relay_findings(f, shared, separate, captured)
    return _with_where(f, result)


def _relay_findings(f: Findings, shared: list[Attempt], separate: list[Attempt],
                    captured: bool) -> None:
    issuer = _at(shared, 0)
    other, back = _at(shared, 1), _at(shared, 2)
    moved = bool(issuer and other and other.backend != issuer.backend)
    home = bool(issuer and back and back.backend == issuer.backend)
    f.add(_connection("tls.shared-key-resumes", "backends forked from one context resume each "
                      "other's tickets", other, captured, True,
                      f"{issuer.backend if issuer else '?'}'s ticket resumed at "
                      f"{other.backend if other else '?'}", extra_ok=moved))
    f.add(_connection("tls.shared-key-back", "the same ticket still resumes at its issuer",
                      back, captured, True, f"and back at the issuer "
                      f"({back.backend if back else '?'}), resumed again", extra_ok=home))
    issuer = _at(separate, 0)
    other, back = _at(separate, 1), _at(separate, 2)
    moved = bool(issuer and other and other.backend != issuer.backend)
    home = bool(issuer and back and back.backend == issuer.backend)
    f.add(_connection("tls.separate-keys-refused", "a backend with its own key cannot open "
                      "another's ticket", other, captured, False,
                      f"{issuer.backend if issuer else '?'}'s ticket refused at "
                      f"{other.backend if other else '?'}: full handshake", extra_ok=moved))
    f.add(_connection("tls.separate-keys-sticky", "the ticket works only where it was issued: "
                      "sticky again", back, captured, True,
                      "back at its issuer the same ticket resumed", extra_ok=home))


def _with_where(f: Findings, result: TlsDemoResult) -> Findings:
    by = {o.key: o for o in f.observations}
    old, new = result.restart
    f.where = [
        StateRow("the session ticket (the sealed session)", "the client (token), sealed under "
                 "the server's ticket key", "presented it again to the same server process",
                 by["tls.resumed"]),
        StateRow("the ticket key", "server app memory (its SSLContext)",
                 f"restarted the server process (pid {old} → {new})",
                 by["tls.restart-full-handshake"]),
        StateRow("a session per client", "nobody: stateless tickets",
                 "read each backend's session cache after every handshake",
                 by["tls.server-holds-nothing"]),
        StateRow("one ticket key in two backends", "each backend's memory, copied by fork",
                 "sent b1's ticket to b2 through the relay", by["tls.shared-key-resumes"]),
        StateRow("a ticket key per backend", "each backend's own memory",
                 "sent b1's ticket to b2", by["tls.separate-keys-refused"]),
        StateRow("a ticket key per backend", "each backend's own memory",
                 "then the same ticket back to b1", by["tls.separate-keys-sticky"]),
        StateRow("the resumption secret", "client app memory (SSLSession)", "-",
                 explain("tls.resumption-secret", RESUMPTION_SECRET)),
        StateRow("0-RTT early data", "the client; any server with the ticket key", "-",
                 explain("tls.zero-rtt", ZERO_RTT)),
    ]
    return f


# -- from a capture (replay) ----------------------------------------------------------------------


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same table from the packets: what ClientHellos and ServerHellos show."""
    live = Status.LIVE_ONLY
    n_full = sum(1 for h in handshakes(rows) if not h.ticket and h.resumed is False)

    def packets(key: str, claim: str, found: list[int], seen: str) -> Observation:
        return from_packets(key, claim, found, seen, "ClientHello, ServerHello")

    return [
        StateRow("the session ticket (the sealed session)", "the client (token)",
                 "a ClientHello presented it (ext 41)",
                 packets("where.tls.resumed", "a presented ticket resumes", tls_resumed(rows),
                         "ServerHello with ext 41: resumed")),
        StateRow("the ticket key", "server app memory", "a ticket met a server whose key "
                 "cannot open it", packets("where.tls.refused", "a ticket refused",
                                           tls_refused(rows), "ServerHello without ext 41")),
        StateRow("a session per client", "nobody: stateless tickets", "-",
                 explain("where.tls.server-holds-nothing", "the backends' session caches "
                         "(their counts are in the encrypted answers)",
                         f"{n_full} full handshakes here; decrypt with the key log", live)),
        StateRow("one ticket key in two backends", "each backend's memory", "one ticket "
                 "relayed to two backend ports", packets(
                     "where.tls.shared-key", "one ticket resumed at two backend ports",
                     tls_shared_key(rows), "resumed at both ports")),
        StateRow("a ticket key per backend", "each backend's own memory", "one ticket relayed "
                 "to two backend ports", packets(
                     "where.tls.sticky", "one ticket refused at one backend port, resumed at "
                     "another", tls_sticky(rows), "refused at one port, resumed at the other")),
        StateRow("0-RTT early data", "the client", "-", explain("where.tls.zero-rtt", ZERO_RTT)),
    ]
