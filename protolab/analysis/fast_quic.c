/* QUIC for the compiled fast path: annotate_quic.QuicAnnotator (see fastinspect.h). The
 * connection tables the endpoints must hold, keyed by connection ID (RFC 9000 section 5.2),
 * rebuilt from the unencrypted header fields (protocols/quic.decode_header: RFC 8999's invariants,
 * RFC 9000 section 17): who creates which key, a Retry's token that keeps the server stateless,
 * rotation, migration, a relay's second leg, and packets a server that forgot the connection
 * could not answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fi_map.h"
#include "fast_text.h"
#include "fastinspect.h"

#define PATH_MAX_KEY (2 * FI_ENDPOINT)

typedef struct Header {         /* protocols/quic.QuicHeader */
    int is_long;
    const char *type;           /* Initial, 0-RTT, Handshake, Retry, Version Negotiation, 1-RTT */
    const uint8_t *dcid, *scid; /* scid NULL: a short header's None */
    size_t dcid_len, scid_len, token_len;
} Header;

typedef struct Conn {           /* what the annotator keeps per QUIC connection number */
    int keyed;                  /* _keyed: the server created it */
    int waiting;                /* a key of _unanswered */
    int at;                     /* its place in QuicState.waiting */
    int64_t *last;              /* the _unanswered list's newest FI_WINDOW numbers (malloc'd
                                   while waiting): older ones are out of the window, which is all
                                   the amendment touches */
    int64_t nlast;
    char *ends;                 /* _ends: client host "\0" server, malloc'd; NULL: none */
    size_t ends_len;
} Conn;

typedef struct Seen {           /* _recent: a datagram, the path it came on, its packet */
    uint8_t *payload;
    size_t len;
    uint64_t hash;
    char path[PATH_MAX_KEY];
    size_t path_len;
    int64_t number;
} Seen;

struct QuicState {
    int cid_len;                /* aioquic's and most stacks' length; learned from long headers */
    Header h;                   /* the header quic_header kept */
    Map cids;                   /* connection ID -> int64 connection number */
    Map paths;                  /* {src, dst} -> int64 connection number */
    Map servers;                /* endpoints that received a client's Initial */
    int64_t count;
    Conn *conns;                /* index: connection number */
    int64_t nconns;
    int64_t *waiting;           /* the connections with an _unanswered entry, in no order */
    int64_t nwaiting;
    Seen recent[FI_WINDOW + 1];  /* slots, payloads malloc'd (reused when a slot is) */
    int order[FI_WINDOW + 1];   /* the slots in use, oldest first */
    uint64_t slot_hash[FI_WINDOW + 1];  /* each slot's payload hash */
    char path[PATH_MAX_KEY];    /* this packet's {src, dst} key and its hash (quic_header) */
    size_t path_len;
    uint64_t path_hash;
    char server[FI_ENDPOINT];   /* the last destination found among the servers (a set that */
    size_t server_len;          /* only grows: it stays one) */
    int nrecent;
    int oom;
};

static const char *const LONG_TYPES[] = {"Initial", "0-RTT", "Handshake", "Retry"};

QuicState *quic_new(void) {
    QuicState *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    st->cid_len = 8;
    map_init(&st->cids, sizeof(int64_t), NULL);
    map_init(&st->paths, sizeof(int64_t), NULL);
    map_init(&st->servers, 0, NULL);
    return st;
}

void quic_free(QuicState *st) {
    if (st == NULL)
        return;
    map_clear(&st->cids);
    map_clear(&st->paths);
    map_clear(&st->servers);
    for (int64_t i = 0; i < st->nconns; i++) {
        free(st->conns[i].ends);
        free(st->conns[i].last);
    }
    free(st->conns);
    free(st->waiting);
    for (int i = 0; i < FI_WINDOW + 1; i++)
        free(st->recent[i].payload);
    free(st);
}

/* ---- protocols/quic.decode_header -------------------------------------------------------------- */

/* RFC 9000 section 16 variable-length integer: its value and size, or size 0 when cut short. */
static uint64_t varint(const uint8_t *b, size_t n, size_t *used) {
    *used = 0;
    if (n == 0)
        return 0;
    size_t size = (size_t)1 << (b[0] >> 6);
    if (n < size)
        return 0;
    uint64_t v = b[0] & 0x3F;
    for (size_t i = 1; i < size; i++)
        v = v << 8 | b[i];
    *used = size;
    return v;
}

/* The token of an Initial (RFC 9000 section 17.2.2) or a Retry (17.2.5: all but the 16-byte
 * integrity tag), as Python slices it. */
static size_t token_len(const char *type, const uint8_t *rest, size_t n) {
    if (type == LONG_TYPES[3])
        return n > 16 ? n - 16 : 0;
    if (type != LONG_TYPES[0])
        return 0;
    size_t used;
    uint64_t length = varint(rest, n, &used);
    if (used == 0)
        return 0;
    return length < n - used ? (size_t)length : n - used;
}

/* decode_header's long header (RFC 8999 section 5.1): 1 = read, 0 = not QUIC. */
static int long_header(const uint8_t *p, size_t n, Header *h) {
    if (n < 7)
        return 0;
    uint32_t version = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    size_t dlen = p[5];
    if (dlen > 20 || n < 6 + dlen + 1)
        return 0;
    size_t slen = p[6 + dlen];
    if (slen > 20 || n < 7 + dlen + slen)
        return 0;
    *h = (Header){1, NULL, p + 6, p + 7 + dlen, dlen, slen, 0};
    if (version == 0) {
        h->type = "Version Negotiation";
        return 1;
    }
    if (version != 1 || !(p[0] & 0x40))
        return 0;
    h->type = LONG_TYPES[(p[0] >> 4) & 0x03];
    size_t head = 7 + dlen + slen;
    h->token_len = token_len(h->type, p + head, n - head);
    return 1;
}

/* decode_header: 1 = a QUIC header (h filled), 0 = not QUIC. A short header's DCID length is the
 * observer's guess, cid_len (RFC 9000 section 17.3: only the receiver knows it). */
static int decode_header(const uint8_t *p, size_t n, int cid_len, Header *h) {
    if (n < (size_t)(1 + cid_len) || (!(p[0] & 0x40) && !(p[0] & 0x80)))
        return 0;
    if (p[0] & 0x80)
        return long_header(p, n, h);
    *h = (Header){0, "1-RTT", p + 1, NULL, (size_t)cid_len, 0, 0};
    return 1;
}

/* ---- helpers ----------------------------------------------------------------------------------- */

/* frozenset((src, dst)) as a key: the two endpoints in order. */
static size_t path_key(const Pkt *p, char *out) {
    const char *a = p->src, *b = p->dst;
    if (strcmp(a, b) > 0) {
        a = p->dst;
        b = p->src;
    }
    size_t na = strlen(a), nb = strlen(b);
    memcpy(out, a, na + 1);
    memcpy(out + na + 1, b, nb);
    return na + 1 + nb;
}

static const char *hex(QuicState *st, Row *row, const uint8_t *b, size_t n) {
    char tmp[2 * 256 + 1];
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        tmp[2 * i] = digits[b[i] >> 4];
        tmp[2 * i + 1] = digits[b[i] & 15];
    }
    tmp[2 * n] = 0;
    char *out = row_strndup(row, tmp, 2 * n);
    if (out == NULL)
        st->oom = 1;
    return out ? out : "";
}

static int64_t *cid_get(QuicState *st, const uint8_t *cid, size_t n) {
    return map_get(&st->cids, cid, n);
}

/* self._cids[cid] = conn (or setdefault, when `keep`). */
static void cid_set(QuicState *st, const uint8_t *cid, size_t n, int64_t conn, int keep) {
    int created;
    int64_t *v = map_put(&st->cids, cid, n, &created);
    if (v == NULL)
        st->oom = 1;
    else if (created || !keep)
        *v = conn;
}

static Conn *conn_at(QuicState *st, int64_t conn) {
    if (conn >= st->nconns) {
        int64_t n = st->nconns ? st->nconns : 16;
        while (n <= conn)
            n *= 2;
        Conn *c = realloc(st->conns, (size_t)n * sizeof *c);
        int64_t *w = realloc(st->waiting, (size_t)n * sizeof *w);
        if (c != NULL)
            st->conns = c;
        if (w != NULL)
            st->waiting = w;
        if (c == NULL || w == NULL) {
            st->oom = 1;
            return NULL;
        }
        memset(c + st->nconns, 0, (size_t)(n - st->nconns) * sizeof *c);
        st->nconns = n;
    }
    return &st->conns[conn];
}

/* QuicAnnotator._relayed_copy: the packet number of the same datagram seen just before on
 * another path (a relay forwards the bytes unchanged), or 0. The last FI_WINDOW datagrams are
 * kept in slots; `order` lists the slots oldest first (the OrderedDict's order). */
static int64_t relayed_copy(QuicState *st, const Pkt *p, const char *path, size_t plen) {
    uint64_t h = payload_hash(p->payload, p->payload_len);
    int slot = -1;
    for (int i = 0; i < st->nrecent; i++) {
        if (st->slot_hash[st->order[i]] != h)  /* side by side: no slot read for a miss */
            continue;
        Seen *s = &st->recent[st->order[i]];
        if (s->len == p->payload_len
                && memcmp(s->payload, p->payload, s->len) == 0) {
            slot = st->order[i];
            memmove(&st->order[i], &st->order[i + 1], (size_t)(st->nrecent - i - 1) * sizeof(int));
            st->nrecent--;
            break;
        }
    }
    Seen *s;
    int64_t out = 0;
    if (slot >= 0) {
        s = &st->recent[slot];
        if (s->path_len != plen || memcmp(s->path, path, plen) != 0)
            out = s->number;
    } else {
        int used[FI_WINDOW + 1] = {0};
        for (int i = 0; i < st->nrecent; i++)
            used[st->order[i]] = 1;
        for (slot = 0; used[slot]; slot++)
            continue;
        s = &st->recent[slot];
        uint8_t *copy = realloc(s->payload, p->payload_len + 1);
        if (copy == NULL) {
            st->oom = 1;
            return 0;
        }
        memcpy(copy, p->payload, p->payload_len);
        s->payload = copy;
        s->len = p->payload_len;
        s->hash = h;
        st->slot_hash[slot] = h;
    }
    memcpy(s->path, path, plen);
    s->path_len = plen;
    s->number = p->number;
    st->order[st->nrecent++] = slot;
    if (st->nrecent > FI_WINDOW) {  /* the oldest is forgotten; its slot is reused */
        memmove(&st->order[0], &st->order[1], (size_t)(st->nrecent - 1) * sizeof(int));
        st->nrecent--;
    }
    return out;
}

/* ---- QuicAnnotator.header ------------------------------------------------------------------------ */

int quic_header(QuicState *st, const Pkt *p, Ctx *ctx) {
    (void)ctx;
    if (!decode_header(p->payload, p->payload_len, st->cid_len, &st->h))
        return 0;
    st->path_len = path_key(p, st->path);
    st->path_hash = map_hash(st->path, st->path_len);
    if (st->h.is_long)
        return 1;
    return map_get_h(&st->paths, st->path, st->path_len, st->path_hash) != NULL
           || cid_get(st, st->h.dcid, st->h.dcid_len) != NULL;
}

/* ---- QuicAnnotator.row ----------------------------------------------------------------------------- */

typedef struct Lookup {         /* the QUIC_LOOKUP fact row() makes before _row picks the kind */
    int64_t conn, relay;
    int to_server;
    const char *dcid;           /* hex, in the row's arena */
    Kind also[3];
    int nalso;
} Lookup;

static void put_values(QuicState *st, Row *row, const Lookup *l, const Pkt *p) {
    const char *address = row_strdup(row, l->to_server ? p->src : p->dst);
    if (address == NULL
            || val_int(row, "conn", l->conn) < 0 || val_str(row, "dcid", l->dcid) < 0
            || val_str(row, "address", address) < 0
            || val_str(row, "receiver", l->to_server ? "server" : "client") < 0)
        st->oom = 1;
}

static void set_fact(Row *row, Action a, Kind k, const char *key, Holder h1, int nh) {
    row->action = a;
    row->kind = k;
    row->key = key;
    row->holders[0] = h1;
    row->nholders = nh;
}

/* QuicAnnotator._row: which table gets which key, from the header and what is known. */
static void pick(QuicState *st, Row *row, const Pkt *p, const Lookup *l) {
    const Header *h = &st->h;
    if (h->type == LONG_TYPES[3]) {  /* Retry */
        if (h->scid_len)
            cid_set(st, h->scid, h->scid_len, l->conn, 0);
        set_fact(row, A_NONE, K_QUIC_RETRY, l->dcid, H_TOKEN, 1);
        return;
    }
    Conn *c = conn_at(st, l->conn);
    if (c == NULL)
        return;
    if (h->type == LONG_TYPES[0] && l->to_server && !c->keyed) {
        int known = cid_get(st, h->scid, h->scid_len) != NULL;
        if (h->scid_len)
            cid_set(st, h->scid, h->scid_len, l->conn, 0);
        if (h->token_len) {
            set_fact(row, A_USES, K_QUIC_TOKEN_ECHO, l->dcid, H_TOKEN, 2);
            row->holders[1] = H_SERVER_APP;
            put_values(st, row, l, p);
            return;
        }
        if (!known) {
            set_fact(row, A_CREATES, K_QUIC_CLIENT_KEY,
                     h->scid_len ? hex(st, row, h->scid, h->scid_len) : "?", H_CLIENT_APP, 1);
            put_values(st, row, l, p);
            return;
        }
    }
    if (h->is_long && h->scid_len && !l->to_server && !cid_get(st, h->scid, h->scid_len)) {
        cid_set(st, h->scid, h->scid_len, l->conn, 0);
        c->keyed = 1;
        set_fact(row, A_CREATES, K_QUIC_SERVER_KEY, hex(st, row, h->scid, h->scid_len),
                 H_SERVER_APP, 1);
        put_values(st, row, l, p);
        return;
    }
    set_fact(row, A_USES, K_QUIC_LOOKUP, l->dcid, l->to_server ? H_SERVER_APP : H_CLIENT_APP, 1);
    if (l->relay && row_ref(row, l->relay) < 0)
        st->oom = 1;
    for (int i = 0; i < l->nalso; i++)
        if (row_also(row, l->also[i]) < 0)
            st->oom = 1;
    put_values(st, row, l, p);
}

static void unwait(QuicState *st, int64_t conn) {
    Conn *c = &st->conns[conn];
    if (!c->waiting)
        return;
    int64_t moved = st->waiting[--st->nwaiting];
    st->waiting[c->at] = moved;
    st->conns[moved].at = c->at;
    c->waiting = 0;
    c->nlast = 0;
    free(c->last);
    c->last = NULL;
}

/* QuicAnnotator._amend_unanswered: those of a connection's unanswered packets still in the
 * window become QUIC_UNANSWERED, referring to the new handshake. */
static void amend_unanswered(QuicState *st, const Conn *c, Ctx *ctx, int64_t new_handshake) {
    int64_t n = c->nlast < FI_WINDOW ? c->nlast : FI_WINDOW;
    for (int i = 0; i < ctx_window_len(ctx); i++) {
        Row *row = ctx_window_at(ctx, i);
        for (int64_t j = 0; j < n; j++) {
            if (c->last[j] != row->number)
                continue;
            row->kind = K_QUIC_UNANSWERED;
            row->nrefs = 0;
            row_ref(row, new_handshake);
            row->nalso = 0;
            row->action = A_NONE;
            row->nholders = 0;
            break;
        }
    }
}

/* QuicAnnotator._track_replies: remember a connection's packets to the server that no reply has
 * followed; when the same client host starts a new connection to the same server, those were
 * dropped by a server that forgot it. */
static void track_replies(QuicState *st, const Row *row, int64_t conn, int to_server,
                          const Pkt *p, Ctx *ctx) {
    Conn *c = conn_at(st, conn);
    if (c == NULL)
        return;
    if (!to_server) {
        unwait(st, conn);
        return;
    }
    if (row->kind == K_QUIC_LOOKUP && !row_shows(row, K_QUIC_RELAYED)) {
        if (!c->waiting) {
            if ((c->last = malloc(FI_WINDOW * sizeof *c->last)) == NULL) {
                st->oom = 1;
                return;
            }
            c->waiting = 1;
            c->at = (int)st->nwaiting;
            st->waiting[st->nwaiting++] = conn;
        }
        c->last[c->nlast++ % FI_WINDOW] = row->number;
        return;
    }
    if (row->kind != K_QUIC_CLIENT_KEY)
        return;
    size_t hl = strrchr(p->src, ':') ? (size_t)(strrchr(p->src, ':') - p->src) : strlen(p->src);
    size_t dl = strlen(p->dst), len = hl + 1 + dl;
    char *ends = malloc(len + 1);
    if (ends == NULL) {
        st->oom = 1;
        return;
    }
    memcpy(ends, p->src, hl);
    ends[hl] = 0;
    memcpy(ends + hl + 1, p->dst, dl + 1);
    for (int64_t i = 0; i < st->nwaiting;) {
        int64_t old = st->waiting[i];
        Conn *o = &st->conns[old];
        if (old != conn && o->ends && o->ends_len == len && memcmp(o->ends, ends, len) == 0) {
            amend_unanswered(st, o, ctx, row->number);
            unwait(st, old);  /* moves the last one here: look at i again */
        } else {
            i++;
        }
    }
    free(c->ends);
    c->ends = ends;
    c->ends_len = len;
}

/* The summary: f"{type} DCID={dcid}{ SCID=scid}{ token=NB}". */
static const char *summary(QuicState *st, Row *row, const char *dcid, const char *scid_hex) {
    const Header *h = &st->h;
    const char *scid = h->scid_len ? scid_hex : NULL;
    char token[32] = "";
    if (h->token_len)
        snprintf(token, sizeof token, " token=%zuB", h->token_len);
    return row_cat(row, h->type, " DCID=", dcid, scid ? " SCID=" : "", scid ? scid : "", token,
                   NULL);
}

/* Which connection the packet belongs to, and what else it shows (relay, rotation, migration). */
static void lookup(QuicState *st, const Pkt *p, const char *path, size_t plen, Lookup *l) {
    const Header *h = &st->h;
    l->relay = relayed_copy(st, p, path, plen);
    uint64_t cid_hash = map_hash(h->dcid, h->dcid_len), path_hash = st->path_hash;
    int64_t *by_cid = map_get_h(&st->cids, h->dcid, h->dcid_len, cid_hash);
    int64_t *by_path = map_get_h(&st->paths, path, plen, path_hash);
    l->conn = by_cid ? *by_cid : by_path ? *by_path : 0;
    if (l->relay)
        l->also[l->nalso++] = K_QUIC_RELAYED;
    if (l->conn == 0)
        l->conn = ++st->count;
    else if (by_cid == NULL && !h->is_long)
        l->also[l->nalso++] = K_QUIC_ROTATION;
    if (by_path == NULL && st->paths.len && !h->is_long && by_cid != NULL && !l->relay)
        l->also[l->nalso++] = K_QUIC_MIGRATION;
    int64_t *v = by_path ? by_path : map_put_h(&st->paths, path, plen, path_hash, NULL);
    if (v == NULL)
        st->oom = 1;
    else
        *v = l->conn;
    if (by_cid == NULL)  /* setdefault */
        cid_set(st, h->dcid, h->dcid_len, l->conn, 1);
}

int quic_row(QuicState *st, const Pkt *p, Row *row, Ctx *ctx) {
    const Header *h = &st->h;
    row->proto = "QUIC";
    const char *dcid = hex(st, row, h->dcid, h->dcid_len);
    const char *scid = h->scid ? hex(st, row, h->scid, h->scid_len) : NULL;  /* None: NULL */
    row->summary = summary(st, row, dcid, scid);
    if (h->type[0] == 'V') {  /* Version Negotiation: the server keeps nothing */
        set_fact(row, A_NONE, K_QUIC_VERSION_NEGOTIATION, "", H_PACKET, 1);
        return st->oom || row->summary == NULL
               ? ctx_decline(ctx, "packet %lld: no memory (QUIC)", (long long)p->number) : 0;
    }
    if (h->scid_len)
        st->cid_len = (int)h->scid_len;
    Lookup l = {0};
    if (fld_str(row, "quic_type", h->type) < 0 || fld_str(row, "quic_dcid", dcid) < 0
            || (scid ? fld_str(row, "quic_scid", scid)
                        : fld_none(row, "quic_scid")) < 0)
        st->oom = 1;
    size_t dlen = p->dst_len;
    l.to_server = dlen == st->server_len && memcmp(p->dst, st->server, dlen) == 0;
    if (!l.to_server) {
        uint64_t dhash = map_hash(p->dst, dlen);
        l.to_server = map_get_h(&st->servers, p->dst, dlen, dhash) != NULL;
        if (h->type == LONG_TYPES[0] && !l.to_server
                && !map_get(&st->servers, p->src, p->src_len)) {
            l.to_server = 1;
            if (map_put_h(&st->servers, p->dst, dlen, dhash, NULL) == NULL)
                st->oom = 1;
        }
        if (l.to_server) {
            memcpy(st->server, p->dst, dlen + 1);
            st->server_len = dlen;
        }
    }
    const char *path = st->path;
    size_t plen = st->path_len;
    l.dcid = dcid;
    lookup(st, p, path, plen, &l);
    char flow[32] = "quic ";
    put_u64(flow + 5, (uint64_t)l.conn);
    row->flow = row_strdup(row, flow);
    pick(st, row, p, &l);
    track_replies(st, row, l.conn, l.to_server, p, ctx);
    if (st->oom || row->summary == NULL || row->flow == NULL)
        return ctx_decline(ctx, "packet %lld: no memory (QUIC)", (long long)p->number);
    return 0;
}
