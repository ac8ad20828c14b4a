"""What `protolab hijack-demo` found, as observations: the responses the victim and the attacker
got, what the capture exposed (packet numbers), what tshark decrypted with the key log, the
deny-list's measured cost; and its "where state lives" table, from a run or from packets.

Where state lives: nowhere new; this module only judges the run's data (`protolab.labs.hijack`).
A replay is "accepted" when the response is 200 and names the victim's user, "refused" when it is
401; the expected outcome per design is the lesson, and a cell that came out otherwise is NOT
OBSERVED.
"""

from __future__ import annotations

from collections.abc import Sequence

from protolab.analysis.exposed import Material, Scan, cookie_attributes
from protolab.analysis.facts import Row
from protolab.analysis.http_streams import HttpMessage
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
from protolab.analysis.story_hijack import (
    hijack_cookie_replayed,
    hijack_cookie_revoked,
    hijack_exposed,
    hijack_fixation,
    hijack_tls_encrypted,
    hijack_token_denied,
    hijack_token_survives,
)
from protolab.labs.hijack import ATTACKER, SETUPS, Exchange, HijackResult

NOTES = ("hijack.flag.", "hijack.backend-leg")  #: the explanations printed under the cookie flags
#: per design: is the replay after the victim's logout accepted?
AFTER_LOGOUT = {"memory": False, "store": False, "jwt": True, "jwt+denylist": False}
WHO = "alice"  #: the victim's user (`protolab.labs.cluster.LOGIN`)

HTTPONLY = ("HttpOnly: the browser keeps the cookie from page scripts (document.cookie), so an "
            "injected script cannot read it; it does not stop this theft: the cookie crossed the "
            "wire and was replayed from the capture")
SAMESITE = ("SameSite=Lax: the browser leaves the cookie off cross-site POSTs (CSRF); it does "
            "not stop a replay from the attacker's own client, which sends whatever it likes")
SECURE = ("Secure: the browser sends the cookie only over TLS, so it never crosses plain HTTP "
          "to be captured; set here by the TLS balancer. It does not protect a cookie read off "
          "the client, or a capture decrypted with the key log")
BACKEND_LEG = ("the balancer → backend leg behind TLS is plain HTTP (not captured here: the "
               "attacker sits on the victim's network); TLS protects only up to where it ends")


def messages_of(scan_messages: Sequence[HttpMessage], ex: Exchange) -> tuple[int, ...]:
    """The packets of an exchange's request and response in the capture (by its source)."""
    src = f"{ATTACKER if ex.who == 'attacker' else '127.0.0.1'}:{ex.port}"
    return tuple(m.number for m in scan_messages if src in (m.src, m.dst))


def _cell(key: str, claim: str, ex: Exchange | None, accepted: bool,
          packets: tuple[int, ...], captured: bool) -> Observation:
    if ex is None:
        return observe(key, claim, False, why_not="the step did not run")
    ok = ex.status == 200 and ex.body.get("user") == WHO if accepted else ex.status == 401
    ev = [Evidence(f"the attacker (:{ex.port}) got", after=ex.said(),
                   packets=packets if captured else ())]
    return observe(key, claim, ok, seen=f"{'accepted' if ex.status == 200 else 'refused'}: "
                   f"{ex.said()}", evidence=ev, why_not=f"the response was {ex.said()}")


def build_findings(result: HijackResult, captured: bool,
                   messages: Sequence[HttpMessage] = ()) -> Findings:
    f = Findings()
    _exposed(f, result, captured)
    for s in SETUPS:
        for step, accepted in (("replay", True),
                               ("replay after logout", AFTER_LOGOUT[s.name])):
            ex = result.get(s.name, step)
            when = "after the victim's logout" if "logout" in step else "while logged in"
            verdict = "accepted" if accepted else "refused"
            f.add(_cell(f"hijack.{s.name}.{step.replace(' ', '-')}",
                        f"{s.name}: the stolen {'cookie' if s.cookie else 'token'} replayed "
                        f"from {ATTACKER} {when} is {verdict}", ex, accepted,
                        messages_of(messages, ex) if ex else (), captured))
    for name in ("memory", "store"):
        f.add(_fixation(result, name, messages, captured))
    f.add(_denylist_cost(result))
    _tls(f, result, captured)
    for note in cookie_flag_notes(result.final):
        f.add(note)
    return _with_where(f)


def _exposed(f: Findings, result: HijackResult, captured: bool) -> None:
    if not captured:
        f.add(explain("hijack.exposed", "the capture exposes the victim's password and session",
                      f"capture off ({result.capture_off}): nothing to read"))
        return
    items = result.final.items if result.final else []
    kinds = {e.material for e in items}
    stolen = [t.found for t in result.thefts.values() if t.found is not None]
    f.add(observe(
        "hijack.exposed", "the capture exposes the victim's password and session material",
        {Material.PASSWORD, Material.SESSION_SET, Material.TOKEN_ISSUED} <= kinds
        and len(stolen) == len(SETUPS),
        seen="the password, each session cookie and token were in the clear; the attacker "
             "took each one from the capture while the run went on",
        evidence=[Evidence(e.material.value, after=e.value[:12] + "…", packets=(e.number,))
                  for e in stolen],
        why_not=f"exposed kinds {sorted(k.value for k in kinds)}, taken from the capture "
                f"{len(stolen)} of {len(SETUPS)}"))


def _fixation(result: HijackResult, name: str, messages: Sequence[HttpMessage],
              captured: bool) -> Observation:
    login, replay = result.get(name, "fixation login", "victim"), result.get(
        name, "fixation replay")
    planted, given = result.planted.get(name, ""), result.fixed.get(name, "")
    ok = (login is not None and login.status == 200 and bool(given) and given != planted
          and replay is not None and replay.status == 401)
    return observe(
        f"hijack.fixation.{name}", f"{name}: a session id the attacker chose is never adopted",
        ok, seen="the login set its own id; the planted one got 401",
        evidence=[Evidence("planted → set", before=planted[:14], after=given[:8] + "…",
                           packets=messages_of(messages, login) if login and captured else ()),
                  Evidence("the planted id replayed", after=replay.said() if replay else "-",
                           packets=messages_of(messages, replay) if replay and captured
                           else ())],
        why_not=f"login {login.said() if login else '-'}, set {given[:8]!r}, replay "
                f"{replay.said() if replay else '-'}")


def _denylist_cost(result: HijackResult) -> Observation:
    lat = result.latency
    n = min(len(lat.without), len(lat.with_list))
    diff = lat.p50(lat.with_list) - lat.p50(lat.without)
    return observe(
        "hijack.denylist-cost", "the deny-list's cost is measured: a store lookup per request",
        n > 0, seen=f"p50 {lat.p50(lat.with_list):.3f} ms with the deny-list, "
                    f"{lat.p50(lat.without):.3f} ms without ({diff:+.3f} ms)",
        evidence=[Evidence("GET /profile answered 200, per case", after=n)],
        why_not="no request was answered")


def _tls(f: Findings, result: HijackResult, captured: bool) -> None:
    t = result.tls
    if not captured or t.scan is None:
        f.add(explain("hijack.tls-nothing-exposed", "behind TLS the capture exposes nothing",
                      f"capture off ({result.capture_off})"))
        return
    f.add(observe(
        "hijack.tls-nothing-exposed", "behind TLS the capture exposes nothing without the key "
        "log", not t.scan.items and bool(t.scan.tls) and bool(t.session) and not t.id_in_bytes,
        seen=f"{len(t.scan.tls)} TLS connection(s) to :{t.port}, encrypted records only; the "
             f"session id is in none of their bytes",
        evidence=[Evidence("ClientHellos", packets=tuple(n for n, _, _ in t.scan.tls)),
                  Evidence("items exposed", after=len(t.scan.items))],
        why_not=f"exposed {len(t.scan.items)}, id in bytes {t.id_in_bytes}"))
    if t.tshark:
        f.add(explain("hijack.tls-keylog", "with the key log the capture decrypts", t.tshark))
        return
    cookies = [n for n, c, _ in t.decrypted if t.session and t.session in c]
    sets = [(n, s) for n, _, s in t.decrypted if s]
    secure = bool(sets) and "secure" in cookie_attributes(sets[0][1])
    f.add(observe(
        "hijack.tls-keylog", "with the key log the capture decrypts: the cookie is there "
        "again", bool(cookies) and secure,
        seen="tshark, given the victim's key log, read the Set-Cookie (Secure) and the Cookie",
        evidence=[Evidence("Cookie", packets=tuple(cookies)),
                  Evidence("Set-Cookie", after=sets[0][1] if sets else "-",
                           packets=tuple(n for n, _ in sets))],
        why_not=f"decrypted {t.decrypted}"))
    ex = t.replay
    f.add(observe(
        "hijack.tls-replay", "the decrypted cookie, replayed over the attacker's own TLS, works",
        ex is not None and ex.status == 200 and ex.body.get("user") == WHO,
        seen=f"accepted: {ex.said() if ex else '-'}",
        evidence=[Evidence(f"the attacker (:{ex.port if ex else 0}) got",
                           after=ex.said() if ex else "-")],
        why_not=f"the replay: {ex.said() if ex else 'not made'}"))


def cookie_flag_notes(final: Scan | None) -> list[Observation]:
    """The cookie's flags as the capture shows them, each explained: what it stops, what not."""
    sets = [e for e in final.items if e.material is Material.SESSION_SET] if final else []
    shown = f"#{sets[0].number}: {sets[0].note}" if sets else "no Set-Cookie captured"
    return [explain("hijack.flag.httponly", HTTPONLY, f"the capture's Set-Cookie {shown}"),
            explain("hijack.flag.samesite", SAMESITE, f"the capture's Set-Cookie {shown}"),
            explain("hijack.flag.secure", SECURE, "plain HTTP: no Secure in the capture; "
                    "behind TLS the decrypted Set-Cookie carries it"),
            explain("hijack.backend-leg", BACKEND_LEG)]


def _with_where(f: Findings) -> Findings:
    by = {o.key: o for o in f.observations}
    f.where = [
        StateRow("the password and cookie in transit", "the wire (plain HTTP): anyone who "
                 "captures it", "captured the login", by["hijack.exposed"]),
        StateRow("the session (memory)", "backend b1's memory; the cookie is its key",
                 "victim logged out, the cookie replayed", by["hijack.memory.replay-after-logout"]),
        StateRow("the session (store)", "the shared store (SQLite)",
                 "victim logged out, the cookie replayed", by["hijack.store.replay-after-logout"]),
        StateRow("the JWT (jwt)", "the client (token): nothing on the server",
                 "victim logged out, the token replayed", by["hijack.jwt.replay-after-logout"]),
        StateRow("the deny-list (jwt --denylist)", "the shared store, read on every request",
                 "victim logged out, the token replayed",
                 by["hijack.jwt+denylist.replay-after-logout"]),
        StateRow("the session id's choice", "the server, at login", "a planted id sent at "
                 "login, then replayed", by["hijack.fixation.memory"]),
        StateRow("the cookie behind TLS", "the TLS keys: the victim's client and the balancer",
                 "read the capture without, then with, the key log",
                 by.get("hijack.tls-keylog", by["hijack.tls-nothing-exposed"])),
    ]
    return f


# -- from a capture (replay) ----------------------------------------------------------------------


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same table from the packets: the requests, who sent them, and their responses."""
    def packets(key: str, claim: str, found: list[int], seen: str) -> Observation:
        return from_packets(key, claim, found, seen, "request, response")

    live = Status.LIVE_ONLY
    return [
        StateRow("the password and cookie in transit", "the wire (plain HTTP)", "a login in "
                 "cleartext", packets("where.hijack.exposed", "a cleartext login sets a session",
                                      hijack_exposed(rows), "login and Set-Cookie in the clear")),
        StateRow("the session (memory, store)", "server memory or the shared store",
                 "the victim's cookie replayed from another address",
                 packets("where.hijack.replayed", "a stolen cookie replayed is accepted",
                         hijack_cookie_replayed(rows), "200 for the attacker")),
        StateRow("the session after logout", "nobody: deleted at logout", "the cookie "
                 "replayed after POST /logout", packets(
                     "where.hijack.revoked", "after logout the cookie is refused",
                     hijack_cookie_revoked(rows), "401 for the attacker")),
        StateRow("the JWT after logout", "the client (token)", "the token replayed after "
                 "POST /logout", packets("where.hijack.jwt", "a JWT replayed after logout is "
                                         "accepted", hijack_token_survives(rows),
                                         "200 for the attacker")),
        StateRow("the deny-list", "the shared store", "the token replayed after POST /logout",
                 packets("where.hijack.denylist", "a deny-listed JWT is refused",
                         hijack_token_denied(rows), "401 for the attacker")),
        StateRow("the session id's choice", "the server, at login", "a login that carried a "
                 "cookie", packets("where.hijack.fixation", "the login sets its own id",
                                   hijack_fixation(rows), "a login with a cookie, answered "
                                   "with Set-Cookie (compare the ids: check 09 does)")),
        StateRow("the cookie behind TLS", "the TLS keys", "-", packets(
            "where.hijack.tls", "behind TLS the capture shows encrypted records only",
            hijack_tls_encrypted(rows), "ClientHello and encrypted records, no HTTP")),
        StateRow("the deny-list's cost", "-", "-", explain(
            "where.hijack.denylist-cost", "the latencies with and without the deny-list",
            "measured straight to the backends, not captured", live)),
    ]
