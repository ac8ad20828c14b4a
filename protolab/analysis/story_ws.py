"""The WebSocket chat's story (`protolab ws-demo`), found in the annotated rows of a capture.

Where state lives: in the capture. The upgrade and its 101, the masked frames, ping and pong, the
close frames and the connections that end with none, and the reconnect that carries the client's
last-seen id (since=N) in its request target, with the welcome that says how much was replayed.
Everything here is read from the rows' decoded fields, per TCP connection (`Row.flow`).
"""

from __future__ import annotations

from collections.abc import Sequence

from protolab.analysis.facts import Kind, Row


def _first(rows: Sequence[Row], kind: Kind, after: int = 0, flow: str = "") -> Row | None:
    return next((r for r in rows if r.number > after and r.shows(kind)
                 and (not flow or r.flow == flow)), None)


def _welcome(rows: Sequence[Row], req: Row) -> Row | None:
    """The welcome on the request's connection: its own frame, or in the 101's segment (a
    balancer may pass the 101 and the first frame on together)."""
    return next((r for r in rows if r.number > req.number and r.flow == req.flow
                 and "ws_welcome" in r.fields), None)


def ws_upgrade(rows: Sequence[Row]) -> list[int]:
    """An upgrade request and the 101 whose Sec-WebSocket-Accept answers its key."""
    for r in rows:
        if r.shows(Kind.WS_ACCEPTED) and r.fields.get("ws_accept_ok") and r.fact.refs:
            return [r.fact.refs[0], r.number]
    return []


def ws_masked(rows: Sequence[Row]) -> list[int]:
    """A client frame, masked (unmasked by the annotation), and a server frame, not masked."""
    frames = [r for r in rows if r.fields.get("ws_frames")]
    client = next((r for r in frames if r.fields.get("ws_from_client")
                   and all(f["masked"] for f in r.fields["ws_frames"])), None)
    server = next((r for r in frames if not r.fields.get("ws_from_client")
                   and not any(f["masked"] for f in r.fields["ws_frames"])), None)
    return [client.number, server.number] if client and server else []


def ws_ping(rows: Sequence[Row]) -> list[int]:
    """A ping and the pong on the same connection."""
    for ping in (r for r in rows if r.shows(Kind.WS_PING)):
        pong = _first(rows, Kind.WS_PONG, ping.number, ping.flow)
        if pong is not None:
            return [ping.number, pong.number]
    return []


def ws_graceful(rows: Sequence[Row]) -> list[int]:
    """A close frame 1001 (going away) from a server, and the client's reply."""
    for r in rows:
        if r.shows(Kind.WS_CLOSE) and r.fields.get("ws_close_code") == 1001 \
                and not r.fields.get("ws_from_client"):
            reply = next((x for x in rows if x.number > r.number and x.flow == r.flow
                          and x.shows(Kind.WS_CLOSE) and x.fields.get("ws_from_client")), None)
            return [r.number, *([reply.number] if reply else [])]
    return []


def ws_dropped(rows: Sequence[Row]) -> list[int]:
    """A WebSocket that ended (FIN or RST) with no close frame: the client's 1006."""
    r = next((r for r in rows if r.shows(Kind.WS_DROPPED)), None)
    return [r.number] if r else []


def _client_legs(rows: Sequence[Row]) -> list[Row]:
    """Resume requests on the client's own connection: a balancer forwards the same request
    (the same Sec-WebSocket-Key) on its own connection to a backend, later."""
    seen: set[str] = set()
    legs = []
    for r in rows:
        if r.shows(Kind.WS_RESUME) and r.fields.get("ws_key") not in seen:
            legs.append(r)
        if r.fields.get("ws_upgrade") == "request":
            seen.add(r.fields.get("ws_key"))
    return legs


def ws_resumed(rows: Sequence[Row]) -> list[int]:
    """A reconnect carrying since=N whose welcome replays messages, and the first replayed id
    above N, on the client's own connection."""
    for req in _client_legs(rows):
        since = req.fields.get("ws_since", 0)
        welcome = _welcome(rows, req)
        if welcome is None or not welcome.fields["ws_welcome"].get("replay"):
            continue
        replayed = next((r for r in rows if r.number >= welcome.number and r.flow == req.flow
                         and any(i > since for i in r.fields.get("ws_msg_ids", ()))), None)
        if replayed is not None:
            return [req.number, welcome.number, replayed.number]
    return []


def ws_place_gone(rows: Sequence[Row]) -> list[int]:
    """A reconnect carrying since=N answered by a welcome whose server does not know the place
    (on the client's own connection)."""
    for req in _client_legs(rows):
        welcome = _welcome(rows, req)
        if welcome is not None and not welcome.fields["ws_welcome"].get("known"):
            return [req.number, welcome.number]
    return []


def welcomes(rows: Sequence[Row]) -> list[Row]:
    """The welcome frames on the client's side of the balancer (each once: the backend's leg
    carries the same welcome)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        w = r.fields.get("ws_welcome")
        if w is None:
            continue
        key = f"{w.get('backend')}|{w.get('pid')}|{w.get('user')}|{r.fields.get('ws_frames')}"
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
