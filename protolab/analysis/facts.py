"""What a packet does to state, as data: who holds it (`Holder`), what the packet does to it
(`Action`), the fact (`Kind`, `Fact`), and the row the annotator gives each packet (`Row`). Each
row's "where state lives" sentence is rendered from its fact by one table, `TEMPLATES`: nothing
reads the sentence back, so rewording it changes no check, table or flow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from string import Formatter

from protolab.protocols.tcp import Transition

#: How many recent rows (and recent datagrams, to spot a relay's copy) the annotator keeps: an
#: ICMP error or a later packet can still amend a row while it is in this window.
WINDOW = 32
#: At most this many entries in any of the annotator's tables (pending queries, last packets).
MAX_PENDING = 100_000


class Holder(Enum):
    #: members are singletons: identity is equality, so the identity hash serves; Enum's own
    #: __hash__ is a Python call, paid on every dict lookup by a member (several a packet)
    __hash__ = object.__hash__

    CLIENT_APP = "client app memory"  #: a client process's own variables
    CLIENT_KERNEL = "client kernel"  #: the client host's socket table
    SERVER_APP = "server app memory"  #: a server process's own variables
    SERVER_KERNEL = "server kernel"  #: the server host's socket table
    SHARED_STORE = "shared store"  #: a database or cache outside the server process
    TOKEN = "token"  #: state the client carries, signed or opaque
    PACKET = "the packet"  #: state carried in this packet alone
    NOBODY = "nobody"  #: state that was needed and is gone
    ROUTER_KERNEL = "router kernel"  #: a middlebox's conntrack table: a NAT's mappings


class Action(Enum):
    #: members are singletons: identity is equality, so the identity hash serves; Enum's own
    #: __hash__ is a Python call, paid on every dict lookup by a member (several a packet)
    __hash__ = object.__hash__

    CREATES = "creates"  #: this packet makes someone hold new state
    USES = "uses"  #: this packet is handled with state someone already holds
    ENDS = "ends"  #: this packet completes and frees state
    MISSING = "finds missing"  #: this packet needs state that nobody holds
    NONE = "none"  #: no state is involved


class Kind(Enum):
    """What the annotator found a packet to do with state: the fact a row's sentence renders."""

    #: members are singletons: identity is equality, so the identity hash serves; Enum's own
    #: __hash__ is a Python call, paid on every dict lookup by a member (several a packet)
    __hash__ = object.__hash__

    NOT_DECODED = "not decoded"  #: the headers could not be read
    NOT_ANNOTATED = "not annotated"  #: a protocol the annotator does not follow
    UDP_DATAGRAM = "udp datagram"  #: a datagram that stands alone
    UDP_TO_CLOSED_PORT = "udp to closed port"  #: the datagram an ICMP port unreachable names
    DNS_MALFORMED = "dns malformed"  #: on a DNS port but not a DNS message
    DNS_QUERY = "dns query"  #: a query: the client's pending entry is created
    DNS_RETRANSMIT = "dns retransmit"  #: the same query again (same source, id, question)
    DNS_MATCHED = "dns matched"  #: an answer matched to its pending query, which ends
    DNS_QUESTION_MISMATCH = "dns question mismatch"  #: right id, other question: dropped
    DNS_ALREADY_ANSWERED = "dns already answered"  #: id answered before: nothing pending
    DNS_WRONG_SOURCE = "dns wrong source"  #: pending id, but from another address or port
    DNS_UNKNOWN_ID = "dns unknown id"  #: no pending query has this id: forged, or late
    DNS_QUERY_UNSEEN = "dns query unseen"  #: an answer whose query is not in the capture
    DNS_TO_CLOSED_SOCKET = "dns to closed socket"  #: would match, but the socket is gone (ICMP)
    DNS_RELAYED = "dns relayed"  #: the same query again on another path: a middlebox's leg
    DNS_RELAY_ANSWER = "dns relay answer"  #: an answer to a relayed query, at the middlebox
    DNS_UPSTREAM = "dns upstream"  #: a resolver asks upstream for a client's question: a miss
    DNS_CACHE_MISS = "dns cache miss"  #: (also) a resolver's answer that waited for upstream
    DNS_CACHE_HIT = "dns cache hit"  #: (also) a resolver's answer with no upstream query
    DNS_FORGED_ACCEPTED = "dns forged accepted"  #: (also) a flood's answer matched: cached
    QUIC_VERSION_NEGOTIATION = "quic version negotiation"  #: the server lists its versions
    QUIC_RETRY = "quic retry"  #: the server keeps nothing; the token carries the state
    QUIC_TOKEN_ECHO = "quic token echo"  #: an Initial that brings the Retry token back
    QUIC_CLIENT_KEY = "quic client key"  #: a client's first Initial: its own key, random DCID
    QUIC_SERVER_KEY = "quic server key"  #: the server's first packet: its key (SCID)
    QUIC_LOOKUP = "quic lookup"  #: the DCID is the key of the receiver's connection table
    QUIC_ROTATION = "quic rotation"  #: (also) a new DCID on a known path
    QUIC_MIGRATION = "quic migration"  #: (also) a known DCID on a new path
    QUIC_RELAYED = "quic relayed"  #: (also) the same datagram again on another path: a relay
    QUIC_UNANSWERED = "quic unanswered"  #: no reply, then a new handshake: dropped, or ACK-only
    TCP_OPEN = "tcp open"  #: SYN or SYN/ACK: a connection entry keyed by the 4-tuple
    TCP_SEGMENT = "tcp segment"  #: data or ACK on a connection
    TCP_CLOSE = "tcp close"  #: FIN, or a segment that ends an entry
    TCP_OUT_OF_WINDOW = "tcp out of window"  #: far outside what the receiver expects
    TCP_RST = "tcp rst"  #: a reset of a connection
    TCP_RST_NO_CONNECTION = "tcp rst no connection"  #: RST answering a segment: no socket
    TCP_SYN_QUEUED = "tcp syn queued"  #: a SYN-ACK sent again: a half-open entry's timer
    TCP_SYN_COOKIE = "tcp syn cookie"  #: a SYN-ACK whose TSval encodes the SYN: a SYN cookie
    TCP_RST_CHALLENGED = "tcp rst challenged"  #: RST in the window, not exact: no reset
    TCP_CHALLENGE_ACK = "tcp challenge ack"  #: the ACK that answers an in-window RST
    TCP_KEEPALIVE = "tcp keepalive"  #: a probe one below SND.NXT: is the peer still there?
    HTTP_TOKEN = "http token"  #: the state came with the request: a bearer token
    HTTP_SESSION_CREATED = "http session created"  #: Set-Cookie sessionId: a session is made
    HTTP_SESSION_LOOKUP = "http session lookup"  #: cookie sessionId: the state is looked up
    HTTP_SELF_CONTAINED = "http self-contained"  #: the message carries its own state
    ICMP_PORT_UNREACHABLE = "icmp port unreachable"  #: no socket bound at the target
    ICMP_OTHER = "icmp other"  #: another control message
    TLS_CLIENT_HELLO = "tls client hello"  #: a ClientHello with no ticket: a new session
    TLS_TICKET_OFFERED = "tls ticket offered"  #: ClientHello with pre_shared_key (41): a ticket
    TLS_RESUMED = "tls resumed"  #: ServerHello with pre_shared_key: the ticket was opened
    TLS_TICKET_REFUSED = "tls ticket refused"  #: ServerHello without it, a ticket was offered
    TLS_FULL_HANDSHAKE = "tls full handshake"  #: ServerHello without it, no ticket offered
    TLS_ENCRYPTED = "tls encrypted"  #: encrypted records (NewSessionTicket travels so in 1.3)
    TLS_RELAYED = "tls relayed"  #: (also) the same ClientHello again: a relay's own connection
    SAME_PACKET = "same packet"  #: a packet already seen at another capture point, again
    WS_UPGRADE = "ws upgrade"  #: GET with Upgrade: websocket, a first connection (no place)
    WS_RESUME = "ws resume"  #: an upgrade that carries the client's place (since=N)
    WS_ACCEPTED = "ws accepted"  #: 101 Switching Protocols, Sec-WebSocket-Accept checked
    WS_WELCOME = "ws welcome"  #: the chat server's first frame: who holds the connection
    WS_FRAME = "ws frame"  #: data frames on a WebSocket (client's unmasked for reading)
    WS_PING = "ws ping"  #: a ping: is the peer still there? (a pong must answer)
    WS_PONG = "ws pong"  #: the answer to a ping
    WS_CLOSE = "ws close"  #: a close frame with its code: the WebSocket ends
    WS_DROPPED = "ws dropped"  #: (also) FIN/RST with no close frame: the client's code is 1006


@dataclass(slots=True, unsafe_hash=True)
class Fact:
    """What a packet does to state, as data; `render` turns it into the row's sentence. Made
    once per packet, so not frozen (its init would cost a call per field); nothing changes a
    fact once made: `dataclasses.replace` makes another."""

    kind: Kind
    refs: tuple[int, ...] = ()  #: the packets it refers to (the query, the ICMP error)
    key: str = ""  #: the key of the state: a query id, a DCID, a 4-tuple
    moves: tuple[Transition, ...] = ()  #: TCP state transitions this packet causes (model)
    also: tuple[Kind, ...] = ()  #: further facts about the same packet (rotation, migration)
    values: dict = field(default_factory=dict, compare=False)  #: what the sentence names

    def shows(self, kind: Kind) -> bool:
        return self.kind is kind or kind in self.also


@dataclass(slots=True)
class Row:
    """One packet's annotation. Not frozen: the annotator finishes a row in place (its summary,
    flow and fields) rather than copying it, the copy cost more than the rest of the row."""

    number: int
    time: float  #: seconds since the first packet
    src: str
    dst: str
    proto: str
    summary: str
    action: Action
    holders: tuple[Holder, ...]
    fact: Fact  #: what this packet does to state; the sentence is rendered from it
    flow: str = ""  #: the conversation this packet belongs to ("tcp 3", "quic 1", "dns a↔b")
    fields: dict = field(default_factory=dict, compare=False)  #: decoded values, for --json

    @property
    def state(self) -> str:
        """The "where state lives" sentence, rendered from the fact."""
        return render(self.fact)

    def shows(self, kind: Kind) -> bool:
        return self.fact.shows(kind)

    def where(self) -> str:
        """The sentence, after what the packet does ("creates: ...") unless it does nothing."""
        return _ACTION_PREFIX[self.action] + render(self.fact)


#: what `Row.where` puts before the sentence, per action (Enum's `.value` is a Python call)
_ACTION_PREFIX = {action: "" if action is Action.NONE else f"{action.value}: "
                  for action in Action}


#: One sentence per kind; `{...}` names a fact's values (and `refs`, `key`, `moves`, `ref`).
_CONNECTION = "the connection itself is the kernels': {flight}{expects}{moves}"

TEMPLATES: dict[Kind, str] = {
    Kind.NOT_DECODED: "not decoded: {error}",
    Kind.NOT_ANNOTATED: "not annotated",
    Kind.UDP_DATAGRAM: "no connection: this datagram stands alone; only the receiver's port "
                       "binding (its kernel) is needed",
    Kind.UDP_TO_CLOSED_PORT: "arrives at {target}, where no socket is bound any more: the kernel "
                             "answers with ICMP port unreachable ({ref})",
    Kind.DNS_MALFORMED: "not a DNS message: the receiver drops it, no state changes",
    Kind.DNS_QUERY: "pending query {key} ({question}), waiting for {server} → client app memory; "
                    "the answer can only land on {client}'s socket → client kernel",
    Kind.DNS_RETRANSMIT: "retransmission {copies} of query {ref}, same id: the client's retry "
                         "timer fired; its retry count and timer live in client app memory, no "
                         "packet carries them",
    Kind.DNS_MATCHED: "client app memory matches it to query {ref} (source {server}, id {key}, "
                      "question) and deletes the entry; RTT {rtt_ms:.0f} ms{copies_note}",
    Kind.DNS_QUESTION_MISMATCH: "id {key} matches query {ref} but the question ({question}) does "
                                "not ({asked}) → client drops it",
    Kind.DNS_ALREADY_ANSWERED: "id {key} was already answered by {ref}: the entry is gone → "
                               "client drops it",
    Kind.DNS_WRONG_SOURCE: "id {key} is pending (query {ref}) but for {server}, not {source} → "
                           "client drops it (spoofed source?)",
    Kind.DNS_UNKNOWN_ID: "no pending query has id {key} (pending for {source}: {pending}) → "
                         "client drops it (forged, or late)",
    Kind.DNS_QUERY_UNSEEN: "its query is not in this capture; the client matches it by source "
                           "{source}, id {key} and question in its own memory",
    Kind.DNS_TO_CLOSED_SOCKET: "would match a pending query, but the client closed its socket: "
                               "nobody holds the entry, and {target} is unbound; the kernel "
                               "answers with ICMP port unreachable ({ref})",
    Kind.DNS_RELAYED: "the same query as {ref}, sent again by a middlebox from its own socket "
                      "({source}): a relay leg, no new pending entry; the client's entry is the "
                      "one {ref} made",
    Kind.DNS_RELAY_ANSWER: "answers the relayed query {ref}: it reaches the middlebox at {target}, "
                           "not the client; the client's entry waits until the middlebox "
                           "forwards it",
    Kind.DNS_UPSTREAM: "cache miss at resolver {resolver}: it asks {server} for client query "
                       "{ref}'s question ({question}) from its own socket; its pending-upstream "
                       "entry (upstream, port, id {key}, question) → resolver app memory",
    Kind.DNS_CACHE_MISS: "a cache miss: the resolver answered after its upstream query "
                         "{upstream_ref}; the answer is now in its cache (resolver app memory, "
                         "shared by every client) for TTL {ttl}",
    Kind.DNS_CACHE_HIT: "a cache hit: no upstream query since the client asked; the answer "
                        "came from the resolver's cache (resolver app memory, shared by every "
                        "client), TTL {ttl} left",
    Kind.DNS_FORGED_ACCEPTED: "the same answer, ids aside, as a flood of forged copies sent "
                              "to this port: a guessed id matched the pending upstream query "
                              "and the resolver took it — the forgery is in its cache "
                              "(resolver app memory), for every client",
    Kind.QUIC_VERSION_NEGOTIATION: "the server keeps nothing: it lists the versions it speaks",
    Kind.QUIC_RETRY: "the server keeps NOTHING for this client: the token holds its address and "
                     "original DCID, and comes back in the next Initial (like a JWT)",
    Kind.QUIC_TOKEN_ECHO: "the echoed token brings back the state the server did not keep; only "
                          "now does it create connection #{conn}",
    Kind.QUIC_CLIENT_KEY: "client's table gets key {key} (client app memory) for connection "
                          "#{conn}; the DCID is random: no server entry has it yet",
    Kind.QUIC_SERVER_KEY: "server's table gets key {key} (server app memory) for connection "
                          "#{conn}; DCID {dcid} is the client's key",
    Kind.QUIC_LOOKUP: "DCID {key} is the key of the {receiver}'s connection table ({receiver} "
                      "app memory) → connection #{conn}",
    Kind.QUIC_ROTATION: "a DCID new to this capture on a known path: the connection switched to "
                        "a CID issued in an encrypted NEW_CONNECTION_ID (rotation)",
    Kind.QUIC_MIGRATION: "a new path ({address}) with a known DCID: found by CID, not by 4-tuple "
                         "(migration)",
    Kind.QUIC_RELAYED: "the same datagram as {ref}, forwarded on another path: a relay in the "
                       "middle (two legs of one connection), not a migration",
    Kind.QUIC_UNANSWERED: "DCID {key} names connection #{conn}, not found in the server's table "
                          "here: no reply followed, and the client started a new handshake with "
                          "the same server ({ref}). Either the server no longer held the key and "
                          "dropped it, or the packet needed no reply (an ACK-only packet looks "
                          "the same, encrypted): the capture cannot tell which",
    Kind.TCP_OPEN: "{who} a connection entry keyed by the 4-tuple, with its initial sequence "
                   "number{moves}",
    Kind.TCP_SEGMENT: "{flight}{expects}{moves}",
    Kind.TCP_CLOSE: "{flight}{expects}{moves}",
    Kind.TCP_OUT_OF_WINDOW: "seq {seq} is far outside what the {receiver} kernel expects "
                            "({expects}): no connection state fits it, so it is not delivered "
                            "(the kernel may answer with an ACK)",
    Kind.TCP_RST: "RST: the {sender} kernel has no connection for this 4-tuple (or drops it "
                  "now){moves}",
    Kind.TCP_RST_NO_CONNECTION: "RST answering {ref}: no connection existed — no socket at "
                                "{sender} for this 4-tuple, so its kernel resets (RFC 9293 "
                                "section 3.10.7.1){moves}",
    Kind.TCP_SYN_QUEUED: "half-open entry in the server's SYN queue (server kernel): SYN-ACK "
                         "{ref} sent again by the entry's retransmission timer; it waits for an "
                         "ACK the client may never send{moves}",
    Kind.TCP_SYN_COOKIE: "no state kept: it is in the ISN (the packet) — a SYN cookie: TSval's "
                         "low 6 bits ({low:#04x}) encode the SYN's window scale, SACK and ECN "
                         "(a match by chance: 1 in 64); the ISN is a keyed hash only the server "
                         "can check when the ACK brings it back{moves}",
    Kind.TCP_RST_CHALLENGED: "RST in the {receiver}'s window but not at RCV.NXT ({expects}): "
                             "RFC 5961 section 3.2 — the {receiver} kernel keeps the connection "
                             "and answers with a challenge ACK",
    Kind.TCP_CHALLENGE_ACK: "challenge ACK (RFC 5961 section 3.2) for the in-window RST {ref}: "
                            "the {sender} kernel says which sequence number it expects "
                            "({rcv_nxt}); only a RST with exactly that one resets it",
    Kind.TCP_KEEPALIVE: "keepalive probe: seq one below what the {receiver} expects "
                        "(RFC 1122 4.2.3.6) — the {sender} kernel's keepalive timer asks "
                        "whether the {receiver} still holds the connection",
    Kind.HTTP_TOKEN: "state came WITH the request: a signed token (who you are, until when); no "
                     "lookup needed to know the user; " + _CONNECTION,
    Kind.HTTP_SESSION_CREATED: "a new session: the client gets only its key (cookie "
                               "sessionId); the session stays in the server's memory or a shared "
                               "store; " + _CONNECTION,
    Kind.HTTP_SESSION_LOOKUP: "state is LOOKED UP by the key it carries (cookie sessionId) in "
                              "whatever holds sessions: this backend's memory or a shared store; "
                              + _CONNECTION,
    Kind.HTTP_SELF_CONTAINED: "HTTP: the message carries its own state (URL, headers, body); "
                              + _CONNECTION,
    Kind.ICMP_PORT_UNREACHABLE: "no socket is bound to {target}: the kernel there answers the "
                                "datagram{about} with this error; nobody holds the state it was "
                                "for",
    Kind.ICMP_OTHER: "control message",
    Kind.TLS_CLIENT_HELLO: "TLS ClientHello with no ticket: a new session, nothing for any "
                           "server to find; the key exchange makes it (full handshake, RFC 8446 "
                           "section 2); " + _CONNECTION,
    Kind.TLS_TICKET_OFFERED: "the client presents ticket {key}… ({size} B) in pre_shared_key "
                             "(extension 41): server state, encrypted under the server's ticket "
                             "key, held by the client (token); only a server holding that key "
                             "can open it (RFC 8446 section 4.2.11); " + _CONNECTION,
    Kind.TLS_RESUMED: "pre_shared_key in the ServerHello (identity {selected}): the server "
                      "opened the ticket of {ref} with its ticket key and resumed, looking "
                      "nothing up (RFC 8446 section 2.2); " + _CONNECTION,
    Kind.TLS_TICKET_REFUSED: "no pre_shared_key in the ServerHello: the ticket of {ref} was not "
                             "taken — this server's ticket key cannot open it (a restart made a "
                             "new key, or another server sealed it) → full handshake; "
                             + _CONNECTION,
    Kind.TLS_FULL_HANDSHAKE: "TLS ServerHello: full handshake, new keys from a fresh key "
                             "exchange; " + _CONNECTION,
    Kind.TLS_ENCRYPTED: "encrypted TLS records ({size} B): only the key log opens them; in "
                        "TLS 1.3 the server's NewSessionTicket (the ticket the client will hold, "
                        "RFC 8446 section 4.6.1) travels like this; " + _CONNECTION,
    Kind.TLS_RELAYED: "the same ClientHello as {ref} (same random), forwarded by a relay on its "
                      "own connection: the backend's handshake is the client's",
    Kind.SAME_PACKET: "the same packet as {ref} ({first_point}), seen again at {point}"
                      "{rewritten}",
    Kind.WS_UPGRADE: "asks to turn this HTTP connection into a WebSocket (RFC 6455 section "
                     "4.1) for {user}, a first connection: the client carries no place yet; "
                     "its Sec-WebSocket-Key is client app memory until the 101 answers it; "
                     + _CONNECTION,
    Kind.WS_RESUME: "an upgrade that carries the client's place: since={since} (its last-seen "
                    "message id, kept in client app memory) of epoch {epoch}, in the request "
                    "target; a server replays what came after it only if its store still "
                    "holds that epoch's history; " + _CONNECTION,
    Kind.WS_ACCEPTED: "101 Switching Protocols: Sec-WebSocket-Accept {check} base64(SHA-1(key "
                      "of {ref} + GUID)) (RFC 6455 section 4.2.2): this TCP connection is a "
                      "WebSocket now, and what the server keeps for it (the subscription, the "
                      "last message id sent) is in the memory of the one process holding the "
                      "socket; " + _CONNECTION,
    Kind.WS_WELCOME: "welcome from {backend} pid {pid}: this process holds the connection's "
                     "state from now on (server app memory); the client's place {place} "
                     "({replay} messages replayed from the shared store); " + _CONNECTION,
    Kind.WS_FRAME: "WebSocket data{masked}: {what}; " + _CONNECTION,
    Kind.WS_PING: "ping from the {sender}: is the peer still there? The other end must answer "
                  "with a pong (RFC 6455 section 5.5.2); " + _CONNECTION,
    Kind.WS_PONG: "pong from the {sender}: the peer's WebSocket is alive; " + _CONNECTION,
    Kind.WS_CLOSE: "close frame from the {sender}, code {code} ({name}): the WebSocket ends "
                   "(RFC 6455 section 5.5.1), and the server process's state for it (the "
                   "subscription, the last id sent) goes with it; the client keeps its place; "
                   + _CONNECTION,
    Kind.WS_DROPPED: "the WebSocket ended with no close frame: the client reports 1006 "
                     "(abnormal closure, RFC 6455 section 7.1.5; never on the wire) — the "
                     "server process that held the connection's state is gone",
}


def render(fact: Fact) -> str:
    """The sentence for a fact, from `TEMPLATES` (and each `also` fact's sentence after it)."""
    if not fact.also:  # nearly every fact: one sentence
        template = TEMPLATES[fact.kind]
        derived = _wanted(template)
        return _percent(template) % ({**_derived(fact, derived), **fact.values} if derived
                                     else fact.values)
    templates = [TEMPLATES[fact.kind], *(TEMPLATES[kind] for kind in fact.also)]
    values = _values(fact, frozenset().union(*map(_wanted, templates)))
    return "; ".join(_percent(template) % values for template in templates)


#: the format specs a template may give a value ("{rtt_ms:.0f}", "{low:#04x}"): the ones whose
#: %-format is the same (`_percent`)
_SPEC = re.compile(r"#?0?\d*(\.\d+)?[dfx]")


@cache
def _percent(template: str) -> str:
    """`template` as a %-format of the same values ("{rtt_ms:.0f}" → "%(rtt_ms).0f"), made once
    per template: `str.format_map` parses its template on every call, `%` costs a third less
    (same text: "%s" is `str`, as `format` with no spec; the specs are checked by `_SPEC`)."""
    parts = []
    for literal, name, spec, conversion in Formatter().parse(template):
        parts.append(literal.replace("%", "%%"))
        if name is None:
            continue
        if conversion or not name.isidentifier() or (spec and not _SPEC.fullmatch(spec)):
            raise ValueError(f"template field {{{name}}} has no %-format: {template!r}")
        parts.append(f"%({name}){spec}" if spec else f"%({name})s")
    return "".join(parts)


def _values(fact: Fact, derived: frozenset[str]) -> dict:
    """The fact's values, and the `derived` ones its templates name (made only then: per row)."""
    return {**_derived(fact, derived), **fact.values} if derived else fact.values


#: the values `render` makes from a fact's other fields, when a template names them
_DERIVED = frozenset({"key", "refs", "ref", "moves"})


@cache
def _wanted(template: str) -> frozenset[str]:
    """Which of `_DERIVED` a template names (worked out once per template)."""
    return _names(template) & _DERIVED


def _derived(fact: Fact, names: frozenset[str]) -> dict:
    values = {}
    if "key" in names:
        values["key"] = fact.key
    if "refs" in names:
        values["refs"] = ", ".join(f"#{n}" for n in fact.refs)
    if "ref" in names:
        values["ref"] = f"#{fact.refs[0]}" if fact.refs else ""
    if "moves" in names:
        values["moves"] = _moves(fact)
    return values


@cache
def _names(template: str) -> frozenset[str]:
    """The values a template names ("rtt_ms" for "{rtt_ms:.0f}")."""
    return frozenset(re.match(r"\w*", name)[0] for _, name, _, _ in Formatter().parse(template)
                     if name is not None)


def _moves(fact: Fact) -> str:
    if fact.values.get("states_known") is False:
        return (" [states unknown: the handshake is not in this capture; client and server are "
                "guessed from the ports]")
    if not fact.moves:
        return ""
    return f" [{'; '.join(_move(t.role, t.old, t.new) for t in fact.moves)}]"


@cache
def _move(role: Enum, old: Enum, new: Enum) -> str:
    """"client SYN_SENT→ESTABLISHED" (the few there are, made once each)."""
    return f"{role.value} {old.value}→{new.value}"
