"""The stolen-session story (`protolab hijack-demo`), found in the annotated rows of a capture.

Where state lives: in the capture. Each HTTP request row says what it carried (a session cookie
looked up, a bearer token, nothing) and from which address; its response row, on the same TCP
connection, what the server made of it (200: the session was there; 401: it was gone). The victim
is whoever sent the first request; any other address replaying the victim's material is the
attacker. A TLS connection shows only a ClientHello and encrypted records.
"""

from __future__ import annotations

from collections.abc import Sequence

from protolab.analysis.facts import Kind, Row


def _host(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def _requests(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.fields.get("http") and not r.fields["http"].startswith("HTTP/")]


def response_to(rows: Sequence[Row], request: Row) -> Row | None:
    """The response on the request's own TCP connection."""
    return next((r for r in rows if r.number > request.number and r.flow == request.flow
                 and r.src == request.dst and r.fields.get("http", "").startswith("HTTP/")),
                None)


def status(row: Row | None) -> int:
    parts = row.fields.get("http", "").split() if row is not None else []
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def victim(rows: Sequence[Row]) -> str:
    """The victim's address: the sender of the first request."""
    first = _requests(rows)
    return _host(first[0].src) if first else ""


def replays(rows: Sequence[Row], kind: Kind) -> list[tuple[Row, Row | None, bool]]:
    """Requests from another address than the victim's carrying a session cookie
    (HTTP_SESSION_LOOKUP) or a bearer token (HTTP_TOKEN): (request, response, after a POST
    /logout to the same balancer)."""
    who = victim(rows)
    logouts: dict[str, int] = {}
    out = []
    for r in _requests(rows):
        if r.fields["http"].startswith("POST /logout"):
            logouts.setdefault(r.dst, r.number)
        elif _host(r.src) != who and r.shows(kind) and r.fields["http"].startswith("GET "):
            out.append((r, response_to(rows, r), r.dst in logouts))
    return out


def _first(rows: Sequence[Row], kind: Kind, after_logout: bool, code: int) -> list[int]:
    for req, resp, after in replays(rows, kind):
        if after is after_logout and status(resp) == code:
            return [req.number, resp.number]
    return []


def hijack_exposed(rows: Sequence[Row]) -> list[int]:
    """A login in cleartext and the response that sets the session cookie."""
    login = next((r for r in _requests(rows) if r.fields["http"].startswith("POST /login")),
                 None)
    made = next((r for r in rows if r.shows(Kind.HTTP_SESSION_CREATED)), None)
    return [login.number, made.number] if login and made else []


def hijack_cookie_replayed(rows: Sequence[Row]) -> list[int]:
    return _first(rows, Kind.HTTP_SESSION_LOOKUP, False, 200)


def hijack_cookie_revoked(rows: Sequence[Row]) -> list[int]:
    return _first(rows, Kind.HTTP_SESSION_LOOKUP, True, 401)


def hijack_token_replayed(rows: Sequence[Row]) -> list[int]:
    return _first(rows, Kind.HTTP_TOKEN, False, 200)


def hijack_token_survives(rows: Sequence[Row]) -> list[int]:
    return _first(rows, Kind.HTTP_TOKEN, True, 200)


def hijack_token_denied(rows: Sequence[Row]) -> list[int]:
    return _first(rows, Kind.HTTP_TOKEN, True, 401)


def hijack_fixation(rows: Sequence[Row]) -> list[int]:
    """A login that arrives with a session cookie and whose response sets a session: the id is
    the server's, not the one sent (the annotated rows cannot compare the values: `protolab
    check 09` and the live run do)."""
    for r in _requests(rows):
        if r.fields["http"].startswith("POST /login") and r.shows(Kind.HTTP_SESSION_LOOKUP):
            resp = response_to(rows, r)
            if resp is not None and resp.shows(Kind.HTTP_SESSION_CREATED):
                return [r.number, resp.number]
    return []


def hijack_tls_encrypted(rows: Sequence[Row]) -> list[int]:
    """A ClientHello and encrypted records on a port where no HTTP is readable."""
    http_ports = {r.dst for r in _requests(rows)}
    for hello in rows:
        if hello.fields.get("tls_hello") == "ClientHello" and hello.dst not in http_ports:
            data = next((r for r in rows if r.flow == hello.flow and r.shows(Kind.TLS_ENCRYPTED)),
                        None)
            if data is not None:
                return [hello.number, data.number]
    return []
