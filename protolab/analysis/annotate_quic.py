"""The annotator's QUIC part: the connection tables the endpoints must hold, keyed by connection
ID (RFC 9000 section 5.2), rebuilt from the unencrypted header fields: who creates which key, a
Retry's token that keeps the server stateless, rotation, migration, a relay's second leg, and
packets a server that forgot the connection could not answer.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import replace

from protolab.analysis.facts import MAX_PENDING, WINDOW, Action, Fact, Holder, Kind, Row, row_of
from protolab.protocols.quic import QuicHeader, decode_header
from protolab.wire.packets import Decoded

#: who looks a DCID up, by whether the packet goes to the server
_RECEIVER_APP = {True: (Holder.SERVER_APP,), False: (Holder.CLIENT_APP,)}
#: the members every looked-up packet's row names, looked up once: naming a member
#: (`Action.USES`) goes through Python 3.11's EnumType.__getattr__ hook, about 0.15 us each
_LOOKUP, _USES, _RELAYED = Kind.QUIC_LOOKUP, Action.USES, Kind.QUIC_RELAYED


def _path(src: str, dst: str) -> tuple[str, str]:
    """A 4-tuple as the same key whichever way a packet goes on it: its two endpoints, sorted."""
    return (src, dst) if src < dst else (dst, src)


class QuicAnnotator:
    """Rows for QUIC datagrams; amends rows still in the annotator's `window` when a later packet
    shows what happened to them."""

    def __init__(self, window: deque[tuple[Row, Decoded]]) -> None:
        self._window = window
        self._cids: dict[bytes, int] = {}  # connection ID -> QUIC connection number
        self._paths: dict[tuple[str, str], int] = {}  # 4-tuple (`_path`) -> connection number
        self._servers: set[str] = set()  # endpoints that received a client's Initial
        self._count = 0
        self._keyed: set[int] = set()  # QUIC connections the server has created
        self._cid_len = 8  # aioquic's and most stacks' length; learned from long headers
        self._recent: OrderedDict[bytes, tuple[tuple[str, str], int]] = OrderedDict()
        # conn -> its latest to-server packets no reply has followed: only rows still in the
        # window can be amended (`_amend_unanswered`), so only the last WINDOW numbers are kept
        self._unanswered: dict[int, deque[int]] = {}
        self._ends: dict[int, tuple[str, str]] = {}  # conn -> (client host, server)
        self._short_texts: dict[bytes, tuple[str, str]] = {}  # DCID -> `_texts` of its header

    def header(self, d: Decoded, src: str | None = None,
               dst: str | None = None) -> QuicHeader | None:
        """The QUIC header of `d`'s payload (`src`, `dst`: its endpoints, when known), or None: not
        QUIC, or a short header on a path and with a DCID no connection has."""
        h = decode_header(d.payload, self._cid_len)
        if h is None or h.long or h.dcid in self._cids:
            return h
        if src is None or dst is None:
            src, dst = d.endpoints()
        return h if _path(src, dst) in self._paths else None

    def row(self, d: Decoded, base: dict, h: QuicHeader) -> Row:
        src, dst = base["src"], base["dst"]  # d's endpoints
        path = _path(src, dst)
        base["proto"] = "QUIC"
        dcid, base["summary"] = self._texts(h)
        if h.packet_type == "Version Negotiation":
            return row_of(base, Action.NONE, (Holder.PACKET,),
                          Fact(Kind.QUIC_VERSION_NEGOTIATION))
        if h.scid:
            self._cid_len = len(h.scid) or self._cid_len
        if h.packet_type == "Initial" and dst not in self._servers and \
                src not in self._servers:
            self._servers.add(dst)
        to_server = dst in self._servers
        relay = self._relayed_copy(d.payload, path, base["number"])
        conn = self._cids.get(h.dcid)
        if conn is None:
            conn = self._paths.get(path)
        also: tuple[Kind, ...] = (Kind.QUIC_RELAYED,) if relay else ()
        if conn is None:
            self._count += 1
            conn = self._count
        elif not h.long and h.dcid not in self._cids:
            also += (Kind.QUIC_ROTATION,)
        if not h.long and path not in self._paths and self._paths \
                and h.dcid in self._cids and not relay:
            also += (Kind.QUIC_MIGRATION,)
        self._paths[path] = conn
        self._cids.setdefault(h.dcid, conn)
        base["flow"] = f"quic {conn}"
        fields = base.setdefault("fields", {})  # (the values every row has, from the Annotator)
        fields["quic_type"], fields["quic_dcid"], fields["quic_scid"] = \
            h.packet_type, dcid, h.scid.hex() if h.scid is not None else None
        values = {"conn": conn, "dcid": dcid, "address": src if to_server else dst,
                  "receiver": "server" if to_server else "client"}
        # (Fact's fields in order: kind, refs, key, moves, also, values)
        lookup = Fact(_LOOKUP, (relay,) if relay else (), dcid, (), also, values)
        row = self._row(base, h, conn, to_server, lookup) if h.long else None
        if row is None:  # the receiver finds the connection by the DCID, in its own table
            row = row_of(base, _USES, _RECEIVER_APP[to_server], lookup)
        self._track_replies(row, conn, to_server, src, dst)
        return row

    def _texts(self, h: QuicHeader) -> tuple[str, str]:
        """The DCID as hex and the row's summary; a short header's remembered by its DCID (it is
        all such a header says, and a connection's packets after its handshake say the same)."""
        texts = None if h.long else self._short_texts.get(h.dcid)
        if texts is None:
            dcid = h.dcid.hex()
            scid = f" SCID={h.scid.hex()}" if h.scid else ""
            texts = dcid, f"{h.packet_type} DCID={dcid}{scid}" + (
                f" token={len(h.token)}B" if h.token else "")
            if not h.long:
                if len(self._short_texts) >= MAX_PENDING:
                    self._short_texts.clear()
                self._short_texts[h.dcid] = texts
        return texts

    def _row(self, base: dict, h: QuicHeader, conn: int, to_server: bool,
                  lookup: Fact) -> Row | None:
        """The row of a long header that keeps no state (Retry), creates a key or echoes a
        token; None for one that is only looked up (`lookup`), as every short header is."""
        values = lookup.values
        if h.packet_type == "Retry":
            if h.scid:
                self._cids[h.scid] = conn
            return row_of(base, action=Action.NONE, holders=(Holder.TOKEN,),
                          fact=Fact(Kind.QUIC_RETRY, key=h.dcid.hex()))
        if h.packet_type == "Initial" and to_server and conn not in self._keyed:
            known = h.scid in self._cids
            if h.scid:
                self._cids[h.scid] = conn
            if h.token:
                return row_of(base, action=Action.USES, holders=(Holder.TOKEN, Holder.SERVER_APP),
                              fact=Fact(Kind.QUIC_TOKEN_ECHO, key=h.dcid.hex(), values=values))
            if not known:
                return row_of(base, action=Action.CREATES, holders=(Holder.CLIENT_APP,),
                              fact=Fact(Kind.QUIC_CLIENT_KEY, key=h.scid.hex() if h.scid else "?",
                                        values=values))
        if h.long and h.scid and not to_server and h.scid not in self._cids:
            self._cids[h.scid] = conn
            self._keyed.add(conn)
            return row_of(base, action=Action.CREATES, holders=(Holder.SERVER_APP,),
                          fact=Fact(Kind.QUIC_SERVER_KEY, key=h.scid.hex(), values=values))
        return None

    def _relayed_copy(self, payload: bytes, path: tuple[str, str], number: int) -> int:
        """The packet number of the same datagram seen just before on another path (a relay
        forwards the bytes unchanged), or 0."""
        recent = self._recent
        seen = recent.pop(payload, None)
        recent[payload] = (path, number)
        while len(recent) > WINDOW:
            recent.popitem(last=False)
        return seen[1] if seen is not None and seen[0] != path else 0

    def _track_replies(self, row: Row, conn: int, to_server: bool, client: str,
                       server: str) -> None:
        """Remember a connection's packets to the server that no reply has followed; when the
        same client host starts a new connection to the same server, those were dropped by a
        server that forgot it."""
        if not to_server:
            self._unanswered.pop(conn, None)
            return
        fact = row.fact
        if fact.kind is _LOOKUP and _RELAYED not in fact.also:
            numbers = self._unanswered.get(conn)
            if numbers is None:
                self._unanswered[conn] = deque((row.number,), maxlen=WINDOW)
            else:
                numbers.append(row.number)
            return
        if fact.kind is Kind.QUIC_CLIENT_KEY:
            ends = (client.rsplit(":", 1)[0], server)
            for old, numbers in list(self._unanswered.items()):
                if old != conn and self._ends.get(old) == ends:
                    self._amend_unanswered(numbers, row.number)
                    del self._unanswered[old]
            self._ends[conn] = ends

    def _amend_unanswered(self, numbers: deque[int], new_handshake: int) -> None:
        wanted = set(numbers)
        for i, (row, d) in enumerate(self._window):
            if row.number in wanted:
                fact = replace(row.fact, kind=Kind.QUIC_UNANSWERED, refs=(new_handshake,),
                               also=())
                self._window[i] = (replace(row, action=Action.NONE, holders=(), fact=fact), d)
