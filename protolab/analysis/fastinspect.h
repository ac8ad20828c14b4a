/* The contract between the compiled fast path's core (_fastinspect.c and friends: reader, decode,
 * annotator frame, TCP, UDP, table, JSON, flows) and its protocol parts (fast_dns.c, fast_quic.c).
 *
 * Mirrors protolab/analysis/facts.py (Kind, Holder, Action, Fact, Row), wire/packets.py
 * (Decoded) and annotate.py (the window of recent rows the parts may amend).
 *
 * Rules for a protocol part:
 *  - It fills the Row it is handed (number, time, src, dst, ip_proto and the common fields are
 *    set by the core; proto is "UDP" on entry) and returns 0, or calls ctx_decline() and returns
 *    its (negative) result when the packet needs something it does not reproduce exactly.
 *  - Strings it puts in a Row (summary, key, flow, string values and fields) are either static
 *    or allocated in THAT row's arena (row_strdup / row_printf): a row lives in the window for 32
 *    more packets, then is printed and its arena is reset.
 *  - It may amend rows still in the window (ctx_window_at), like the Python parts do.
 *  - Its state lives in its own struct (dns_new/quic_new), no globals. The core runs the whole
 *    capture twice (pre-scan, then the printing pass) with fresh states each time.
 *  - Sentences are never built in C: the row carries kind, also, refs, key and named values;
 *    the core renders them from the templates Python hands in (facts.render).
 */
#ifndef PROTOLAB_FASTINSPECT_H
#define PROTOLAB_FASTINSPECT_H

#include <stddef.h>
#include <stdint.h>

/* ---- names, in facts.py's order (a test compares them with facts.py: _fastinspect.names()) -- */

#define FI_KINDS(X) \
    X(NOT_DECODED) X(NOT_ANNOTATED) X(UDP_DATAGRAM) X(UDP_TO_CLOSED_PORT) X(DNS_MALFORMED) \
    X(DNS_QUERY) X(DNS_RETRANSMIT) X(DNS_MATCHED) X(DNS_QUESTION_MISMATCH) \
    X(DNS_ALREADY_ANSWERED) X(DNS_WRONG_SOURCE) X(DNS_UNKNOWN_ID) X(DNS_QUERY_UNSEEN) \
    X(DNS_TO_CLOSED_SOCKET) X(DNS_RELAYED) X(DNS_RELAY_ANSWER) X(DNS_UPSTREAM) \
    X(DNS_CACHE_MISS) X(DNS_CACHE_HIT) X(DNS_FORGED_ACCEPTED) X(QUIC_VERSION_NEGOTIATION) \
    X(QUIC_RETRY) X(QUIC_TOKEN_ECHO) X(QUIC_CLIENT_KEY) X(QUIC_SERVER_KEY) X(QUIC_LOOKUP) \
    X(QUIC_ROTATION) X(QUIC_MIGRATION) X(QUIC_RELAYED) X(QUIC_UNANSWERED) X(TCP_OPEN) \
    X(TCP_SEGMENT) X(TCP_CLOSE) X(TCP_OUT_OF_WINDOW) X(TCP_RST) X(TCP_RST_NO_CONNECTION) \
    X(TCP_SYN_QUEUED) X(TCP_SYN_COOKIE) X(TCP_RST_CHALLENGED) X(TCP_CHALLENGE_ACK) \
    X(TCP_KEEPALIVE) X(HTTP_TOKEN) X(HTTP_SESSION_CREATED) X(HTTP_SESSION_LOOKUP) \
    X(HTTP_SELF_CONTAINED) X(ICMP_PORT_UNREACHABLE) X(ICMP_OTHER) X(TLS_CLIENT_HELLO) \
    X(TLS_TICKET_OFFERED) X(TLS_RESUMED) X(TLS_TICKET_REFUSED) X(TLS_FULL_HANDSHAKE) \
    X(TLS_ENCRYPTED) X(TLS_RELAYED) X(SAME_PACKET) X(WS_UPGRADE) X(WS_RESUME) X(WS_ACCEPTED) \
    X(WS_WELCOME) X(WS_FRAME) X(WS_PING) X(WS_PONG) X(WS_CLOSE) X(WS_DROPPED)

#define FI_HOLDERS(X) \
    X(CLIENT_APP) X(CLIENT_KERNEL) X(SERVER_APP) X(SERVER_KERNEL) X(SHARED_STORE) X(TOKEN) \
    X(PACKET) X(NOBODY) X(ROUTER_KERNEL)

#define FI_ACTIONS(X) X(CREATES) X(USES) X(ENDS) X(MISSING) X(NONE)

#define FI_ENUM_K(name) K_##name,
#define FI_ENUM_H(name) H_##name,
#define FI_ENUM_A(name) A_##name,
typedef enum { FI_KINDS(FI_ENUM_K) K__COUNT } Kind;      /* facts.Kind */
typedef enum { FI_HOLDERS(FI_ENUM_H) H__COUNT } Holder;  /* facts.Holder */
typedef enum { FI_ACTIONS(FI_ENUM_A) A__COUNT } Action;  /* facts.Action */

/* ---- one decoded packet: wire/packets.py Decoded ---------------------------------------- */

#define FI_ENDPOINT 64  /* "[ffff:...:ffff]:65535" and NUL fit */

#define FI_PROTO_ICMP 1
#define FI_PROTO_TCP 6
#define FI_PROTO_UDP 17
#define FI_PROTO_ICMPV6 58

typedef struct Pkt {
    int64_t number;               /* 1-based, as the annotator counts */
    double time;                  /* Decoded.time: seconds since the epoch, as the reader makes it */
    double rel;                   /* time since the first packet (Row.time) */
    int length;                   /* Decoded.length (bytes captured) */
    int orig_len;                 /* Decoded.orig_len (0: unknown) */
    int ip_version;               /* 4, 6 (0: none) */
    int proto;                    /* IP protocol number (-1: none) */
    int sport, dport;             /* -1: None */
    char src[FI_ENDPOINT];        /* Decoded.endpoint("src"): "10.0.0.1:53", "[::1]:53", "?" */
    char dst[FI_ENDPOINT];        /* Decoded.endpoint("dst") */
    const uint8_t *payload;       /* Decoded.payload (UDP/TCP payload), valid during the call */
    size_t payload_len;
    /* TCP only (core) */
    int has_tcp;
    uint32_t tcp_seq, tcp_ack;
    int tcp_flags, tcp_window;
    const uint8_t *tcp_options;
    size_t tcp_options_len;
    /* ICMP only (core): type, code (-1: none) and the quoted datagram's ends */
    int icmp_type, icmp_code, has_quoted;
    char quoted_origin[FI_ENDPOINT], quoted_target[FI_ENDPOINT];  /* "host:port" */
    size_t src_len, dst_len;      /* strlen(src), strlen(dst) */
} Pkt;

/* ---- a row's strings: a chunked arena, so pointers stay valid until the row is printed ---- */

typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
    ArenaBlock *head;             /* blocks never move; reset keeps the first */
    char *cur;
    size_t left;
} Arena;

/* ---- named values (Fact.values) and JSON fields (Row.fields) -------------------------------- */

typedef enum { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR } VType;

typedef struct Val {
    const char *name;             /* a static string ("rtt_ms", "dns_id") */
    VType type;
    union {
        int64_t i;                /* V_INT, V_BOOL (0/1) */
        double f;                 /* V_FLOAT */
        const char *s;            /* V_STR: static or in the row's arena */
    } u;
} Val;

#define FI_MAX_HOLDERS 4
#define FI_MAX_ALSO 4
#define FI_MAX_REFS 4
#define FI_MAX_VALUES 16
#define FI_MAX_FIELDS 12

/* ---- one packet's annotation: facts.Row with its Fact inlined ------------------------------ */

typedef struct Row {
    /* set by the core before a part is called */
    int64_t number;
    double time;                  /* seconds since the first packet */
    char src[FI_ENDPOINT], dst[FI_ENDPOINT];
    int ip_proto;                 /* the Decoded's proto (the ICMP amendment checks UDP) */
    /* filled by the part */
    const char *proto;            /* "DNS", "QUIC", "UDP", "TCP": static */
    const char *summary;
    Action action;
    Holder holders[FI_MAX_HOLDERS];
    int nholders;
    Kind kind;                    /* Fact.kind */
    Kind also[FI_MAX_ALSO];       /* Fact.also */
    int nalso;
    int64_t refs[FI_MAX_REFS];    /* Fact.refs */
    int nrefs;
    const char *key;              /* Fact.key ("" when none) */
    Val values[FI_MAX_VALUES];    /* Fact.values, what the templates name */
    int nvalues;
    Val fields[FI_MAX_FIELDS];    /* the part's own Row.fields, in order (after the common ones).
                                     --flows reads "dns_id" (V_INT), "dns_response" (V_BOOL),
                                     "quic_dcid" (V_STR) from here, like flows.FlowTable.add. */
    int nfields;
    const char *flow;             /* Row.flow: "dns a↔b", "quic 3"; NULL or "": the core makes it */
    /* core only */
    int nmoves;                   /* TCP: Fact.moves (Transition: role, old, new state) */
    struct { uint8_t role, old, new_, of_src; } moves[6];
    int64_t flow_number;
    int length, orig_len, sport, dport;
    int has_tcp;
    uint32_t tcp_seq, tcp_ack;
    int tcp_flags;
    int icmp_type, icmp_code;     /* -1: not ICMP */
    size_t src_len, dst_len;      /* strlen(src), strlen(dst) */
    Arena arena;
} Row;

/* Row helpers (implemented by the core). Adders return 0, or -1 when a fixed array is full (the
 * caller then declines). Strings given to them are NOT copied: use row_strdup/row_printf. */
char *row_strdup(Row *row, const char *s);
char *row_strndup(Row *row, const char *s, size_t n);
char *row_printf(Row *row, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int row_holder(Row *row, Holder h);
int row_also(Row *row, Kind k);
int row_ref(Row *row, int64_t number);
int row_value_int(Row *row, const char *name, int64_t v);
int row_value_bool(Row *row, const char *name, int v);
int row_value_float(Row *row, const char *name, double v);
int row_value_str(Row *row, const char *name, const char *s);
int row_value_none(Row *row, const char *name);
int row_field_int(Row *row, const char *name, int64_t v);
int row_field_bool(Row *row, const char *name, int v);
int row_field_str(Row *row, const char *name, const char *s);
int row_field_none(Row *row, const char *name);
Val *row_value(Row *row, const char *name);  /* the named value (to change it), or NULL */
int row_shows(const Row *row, Kind k);        /* Fact.shows: kind is k or k in also */

/* ---- the run's context: the window and the decline ---------------------------------------- */

#define FI_WINDOW 32              /* facts.WINDOW */
#define FI_MAX_PENDING 100000     /* facts.MAX_PENDING */

typedef struct Ctx Ctx;
int ctx_window_len(const Ctx *ctx);       /* rows before this packet's, at most FI_WINDOW */
Row *ctx_window_at(Ctx *ctx, int i);      /* 0 = oldest; amend in place (strings: that row's) */
/* Record why the compiled path cannot print this capture (the first reason wins; say the packet
 * number, e.g. "packet 17: DNS message with 2 questions") and return -1. */
int ctx_decline(Ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- DNS (fast_dns.c): annotate_dns.DnsAnnotator ------------------------------------------- */

typedef struct DnsState DnsState;
DnsState *dns_new(const int *ports, int nports);  /* DnsAnnotator(dns_ports); NULL: no memory */
void dns_free(DnsState *st);
/* DnsAnnotator.is_dns for a UDP packet: 1 yes, 0 no, <0 declined (ctx_decline called). */
int dns_is_dns(DnsState *st, const Pkt *p, Ctx *ctx);
/* DnsAnnotator.row: fills row (proto "DNS", flow, fields dns_id, dns_response, dns_question);
 * 0 = filled, <0 = declined. */
int dns_row(DnsState *st, const Pkt *p, Row *row, Ctx *ctx);

/* ---- QUIC (fast_quic.c): annotate_quic.QuicAnnotator --------------------------------------- */

typedef struct QuicState QuicState;
QuicState *quic_new(void);
void quic_free(QuicState *st);
/* QuicAnnotator.header for a UDP packet (not DNS): 1 = QUIC (the header is kept in st for the
 * quic_row that follows), 0 = not QUIC, <0 = declined. */
int quic_header(QuicState *st, const Pkt *p, Ctx *ctx);
/* QuicAnnotator.row with the header quic_header kept: 0 = filled (proto "QUIC", flow "quic N",
 * fields quic_type, quic_dcid, quic_scid), <0 = declined. */
int quic_row(QuicState *st, const Pkt *p, Row *row, Ctx *ctx);

/* --flows for DNS and QUIC conversations (flows.FlowTable.add/describe) is the core's: it reads
 * only the rows (kind/also, action, time, fields above). */

#endif
