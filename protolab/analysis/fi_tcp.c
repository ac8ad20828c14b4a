/* TCP for the compiled fast path: protocols/tcp.py TcpObserver (both kernels' connection
 * entries, RFC 9293 section 3.3.2's state machine) and annotate_tcp.TcpAnnotator's rows. A
 * segment whose payload may be HTTP, TLS, a WebSocket or DNS over TCP is declined. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fi_core.h"

/* protocols/tcp.py TcpState: the members, their names and the names' lengths */
#define TCP_STATES(X) X(CLOSED) X(LISTEN) X(SYN_SENT) X(SYN_RECV) X(ESTABLISHED) X(FIN_WAIT_1) \
    X(FIN_WAIT_2) X(CLOSING) X(TIME_WAIT) X(CLOSE_WAIT) X(LAST_ACK)
#define STATE_MEMBER(s) s,
#define STATE_NAME(s) #s,
#define STATE_LEN(s) sizeof #s - 1,
enum { TCP_STATES(STATE_MEMBER) };
static const char *const STATE[] = {TCP_STATES(STATE_NAME)};
static const size_t STATE_LEN[] = {TCP_STATES(STATE_LEN)};
enum { SEND_SYN, RECV_SYN, RECV_SYN_ACK, RECV_ACK, SEND_FIN, RECV_FIN, SEND_RST, RECV_RST };
enum { CLIENT, SERVER };
static const char *const ROLE[] = {"client", "server"};
enum { FIT_NONE, FIT_EXACT, FIT_IN_WINDOW, FIT_OUTSIDE };
static const char *const FIT[] = {"", "exact", "in window", "outside"};

#define FIN 0x01
#define SYN 0x02
#define RST 0x04
#define ACK 0x10
#define SEQ_WINDOW (1u << 20) /* TcpObserver.WINDOW */

typedef struct Ep {
    char addr[FI_ENDPOINT];
    size_t len;          /* strlen(addr) */
    int role, state;
    int has_isn, has_snd_nxt, has_snd_una, has_rcv_nxt, has_wscale, has_window;
    uint32_t isn, snd_nxt, snd_una, rcv_nxt;
    int64_t sent, window;
    int wscale;
} Ep;

typedef struct TFlow {
    Ep client, server;
    int64_t number;
    int handshake_seen;
    int has_syn_options, syn_options;
    uint32_t *synack_seqs;
    int nsynack, capsynack;
    int challenged_side;  /* -1: none; else CLIENT/SERVER: the receiver of an in-window RST */
    int64_t challenged_pkt;
    int saw_syn_sent, first_fin_role, saw_rst;  /* for flows._describe_tcp */
} TFlow;

/* A dict flow number -> packet number whose keys only leave by popitem(last=False) once it holds
 * more than FI_MAX_PENDING (TcpAnnotator._last, _synack): flow numbers are dense, so the values
 * are an array by flow number (0: absent) and the keys' insertion order a ring. */
typedef struct NumTable {
    int64_t *val;
    size_t nval;
    int64_t *ring;       /* FI_MAX_PENDING + 1 keys, oldest at head */
    size_t head, len;
} NumTable;

struct TcpState {
    Map flows;           /* TcpObserver.flows: the endpoint pair -> TFlow */
    int max_flows;
    int64_t count;
    TFlow *recent;       /* the flow of the last segment (most segments follow one of theirs) */
    NumTable last, synack;  /* TcpAnnotator._last, _synack */
    TFlow **by_number;   /* --flows (max_flows 0): connection number -> its flow, or NULL */
    size_t nby;
};

/* protocols/tcp.py TCP_TRANSITIONS, via state.advance: the next state, or -1 (illegal) */
static int advance(int role, int state, int seg) {
    switch (state) {
    case CLOSED: return role == CLIENT && seg == SEND_SYN ? SYN_SENT : -1;
    case SYN_SENT:
        if (role != CLIENT) return -1;
        return seg == RECV_SYN_ACK ? ESTABLISHED : seg == RECV_RST ? CLOSED : -1;
    case LISTEN: return role == SERVER && seg == RECV_SYN ? SYN_RECV : -1;
    case SYN_RECV:
        if (role != SERVER) return -1;
        return seg == RECV_ACK ? ESTABLISHED : seg == RECV_RST || seg == SEND_RST ? CLOSED
             : seg == RECV_FIN ? CLOSE_WAIT : -1;
    case ESTABLISHED:
        return seg == SEND_FIN ? FIN_WAIT_1 : seg == RECV_FIN ? CLOSE_WAIT
             : seg == RECV_RST || seg == SEND_RST ? CLOSED : -1;
    case FIN_WAIT_1:
        return seg == RECV_ACK ? FIN_WAIT_2 : seg == RECV_FIN ? CLOSING
             : seg == RECV_RST || seg == SEND_RST ? CLOSED : -1;
    case FIN_WAIT_2:
        return seg == RECV_FIN ? TIME_WAIT : seg == RECV_RST || seg == SEND_RST ? CLOSED : -1;
    case CLOSING: return seg == RECV_ACK ? TIME_WAIT : seg == RECV_RST ? CLOSED : -1;
    case CLOSE_WAIT:
        return seg == SEND_FIN ? LAST_ACK : seg == RECV_RST || seg == SEND_RST ? CLOSED : -1;
    case LAST_ACK: return seg == RECV_ACK || seg == RECV_RST ? CLOSED : -1;
    default: return -1;  /* TIME_WAIT: only the 2MSL timer, never a segment */
    }
}

static int seq_ge(uint32_t a, uint32_t b) { return (uint32_t)(a - b) < 0x80000000u; }
static uint32_t distance(uint32_t a, uint32_t b) {
    uint32_t f = a - b;
    uint64_t back = 0x100000000ULL - f;
    return f < back ? f : (uint32_t)back;
}

static void flow_drop(void *p) { free(((TFlow *)p)->synack_seqs); }

TcpState *tcp_new(int max_flows) {
    TcpState *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    st->max_flows = max_flows;
    map_init(&st->flows, sizeof(TFlow), flow_drop);
    return st;
}

void tcp_free(TcpState *st) {
    if (st == NULL)
        return;
    map_clear(&st->flows);
    free(st->last.val);
    free(st->last.ring);
    free(st->synack.val);
    free(st->synack.ring);
    free(st->by_number);
    free(st);
}

/* The options a SYN negotiates (packets.tcp_options) */
typedef struct Opts {
    int has_mss, has_wscale, sack_ok, has_ts;
    int mss, wscale;
    uint32_t tsval;
} Opts;

static void tcp_options(const uint8_t *raw, size_t n, Opts *o) {
    memset(o, 0, sizeof *o);
    size_t i = 0;
    while (i < n) {
        int kind = raw[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= n || raw[i + 1] < 2 || i + raw[i + 1] > n)
            break;
        const uint8_t *body = raw + i + 2;
        size_t blen = raw[i + 1] - 2;
        if (kind == 2 && blen == 2) {
            o->has_mss = 1;
            o->mss = body[0] << 8 | body[1];
        } else if (kind == 3 && blen == 1) {
            o->has_wscale = 1;
            o->wscale = body[0];
        } else if (kind == 4) {
            o->sack_ok = 1;
        } else if (kind == 8 && blen == 8) {
            o->has_ts = 1;
            o->tsval = (uint32_t)body[0] << 24 | (uint32_t)body[1] << 16 |
                       (uint32_t)body[2] << 8 | body[3];
        }
        i += raw[i + 1];
    }
}

static void ep_init(Ep *e, const char *addr, size_t len, int role, int state) {
    memset(e, 0, sizeof *e);
    memcpy(e->addr, addr, FI_ENDPOINT);
    e->len = len;
    e->role = role;
    e->state = state;
}

static int is_ep(const Ep *e, const char *addr, size_t len) {
    return e->len == len && memcmp(e->addr, addr, len) == 0;
}

/* The segment is between this flow's two endpoints */
static int same_pair(const TFlow *f, const Pkt *p) {
    return (is_ep(&f->client, p->src, p->src_len) && is_ep(&f->server, p->dst, p->dst_len)) ||
           (is_ep(&f->server, p->src, p->src_len) && is_ep(&f->client, p->dst, p->dst_len));
}

/* TcpObserver._flow: the connection of this 4-tuple, a new one for a first packet or a new SYN
 * on a closed one; LRU-bounded by max_flows */
static TFlow *find_flow(TcpState *st, const Pkt *p) {
    Sb k;
    uint64_t h = 0;
    TFlow *f = st->recent;  /* when it is, it is the last in the LRU order already */
    if (f == NULL || !same_pair(f, p)) {
        sb_init(&k);
        int lt = strcmp(p->src, p->dst) < 0;
        sb_put(&k, lt ? p->src : p->dst, lt ? p->src_len : p->dst_len);
        sb_put(&k, "|", 1);
        sb_put(&k, lt ? p->dst : p->src, lt ? p->dst_len : p->src_len);
        h = map_hash(k.p, k.n);
        f = map_get_h(&st->flows, k.p, k.n, h);
        if (f != NULL && st->max_flows)
            map_move_end(&st->flows, f);
        st->recent = f;
    }
    int flags = p->tcp_flags;
    int syn_only = (flags & SYN) && !(flags & ACK);
    if (f != NULL && !(syn_only && (f->client.state == CLOSED || f->client.state == TIME_WAIT)))
        return f;
    if (f == NULL) {
        f = st->recent = map_put_h(&st->flows, k.p, k.n, h, NULL);
        if (f == NULL)
            return NULL;
    } else {  /* a new connection in the closed one's place */
        if (st->by_number && f->number < (int64_t)st->nby)
            st->by_number[f->number] = NULL;
        flow_drop(f);
        memset(f, 0, sizeof *f);
    }
    f->number = ++st->count;
    f->challenged_side = -1;
    f->first_fin_role = -1;
    int open = (flags & SYN) != 0;
    const char *client = p->src, *server = p->dst;
    int status = p->payload_len >= 7 && memcmp(p->payload, "HTTP/1.", 7) == 0;
    if (open ? (flags & ACK) != 0 : status || p->sport < p->dport) {
        client = p->dst;
        server = p->src;
    }
    ep_init(&f->client, client, client == p->src ? p->src_len : p->dst_len, CLIENT,
            open ? CLOSED : ESTABLISHED);
    ep_init(&f->server, server, server == p->src ? p->src_len : p->dst_len, SERVER,
            open ? LISTEN : ESTABLISHED);
    f->handshake_seen = open;
    if (st->max_flows && st->flows.len > (size_t)st->max_flows)
        map_del(&st->flows, map_first(&st->flows));  /* not f: that one is last */
    if (!st->max_flows) {  /* --flows: remember by number, for its description */
        if ((size_t)f->number >= st->nby) {
            size_t nby = st->nby ? st->nby * 2 : 1024;
            TFlow **b = realloc(st->by_number, nby * sizeof *b);
            if (b == NULL)
                return NULL;
            memset(b + st->nby, 0, (nby - st->nby) * sizeof *b);
            st->by_number = b;
            st->nby = nby;
        }
        st->by_number[f->number] = f;
    }
    return f;
}

typedef struct View {  /* protocols/tcp.py SegmentView */
    TFlow *flow;
    int sender_role;
    uint32_t rel_seq, rel_ack, expects;
    int has_rel_ack;
    int64_t in_flight;
    int in_window, first_from_sender, fit, synack_again, cookie_ts, keepalive;
    int has_window;
    int64_t window;
    int64_t challenges;  /* 0: none */
    Opts opts;
    int nmoves;
    struct { int role, old, new_, side; } moves[6];
} View;

/* TcpObserver._marks */
static int marks(TFlow *f, Ep *snd, Ep *rcv, const Pkt *p, int first, View *v) {
    int flags = p->tcp_flags;
    if (flags & SYN) {
        tcp_options(p->tcp_options, p->tcp_options_len, &v->opts);
        snd->has_wscale = v->opts.has_wscale;
        snd->wscale = v->opts.wscale;
        if (!(flags & ACK)) {
            int ecn = (flags & 0xC0) == 0xC0;
            f->has_syn_options = 1;
            f->syn_options = (v->opts.has_wscale ? v->opts.wscale : 0xF) |
                             (v->opts.sack_ok ? 0x10 : 0) | (ecn ? 0x20 : 0);
        } else {
            for (int i = 0; i < f->nsynack; i++)
                v->synack_again |= f->synack_seqs[i] == p->tcp_seq;
            if (!v->synack_again) {
                if (f->nsynack == f->capsynack) {
                    int cap = f->capsynack ? f->capsynack * 2 : 2;
                    uint32_t *s = realloc(f->synack_seqs, (size_t)cap * sizeof *s);
                    if (s == NULL)
                        return -1;
                    f->synack_seqs = s;
                    f->capsynack = cap;
                }
                f->synack_seqs[f->nsynack++] = p->tcp_seq;
            }
            v->cookie_ts = v->opts.has_ts && f->has_syn_options &&
                           (int)(v->opts.tsval % 64) == f->syn_options;
        }
    }
    int scaled = snd->has_wscale && rcv->has_wscale;
    int shift = scaled && !(flags & SYN) ? snd->wscale : 0;
    if (shift > 40)
        return -1;
    snd->has_window = 1;
    snd->window = (int64_t)p->tcp_window << shift;
    int empty = p->payload_len == 0 && (flags & (SYN | FIN | RST | ACK)) == ACK;
    if ((flags & RST) && rcv->has_rcv_nxt && f->handshake_seen && !first) {
        uint32_t gap = p->tcp_seq - rcv->rcv_nxt;
        int64_t window = rcv->has_window ? rcv->window : SEQ_WINDOW;
        v->fit = gap == 0 ? FIT_EXACT : (int64_t)gap < window ? FIT_IN_WINDOW : FIT_OUTSIDE;
        if (v->fit == FIT_IN_WINDOW) {
            f->challenged_side = rcv->role;
            f->challenged_pkt = p->number;
        }
    } else if (empty && f->challenged_side >= 0 &&
               strcmp(f->challenged_side == CLIENT ? f->client.addr : f->server.addr,
                      snd->addr) == 0) {
        v->challenges = f->challenged_pkt;
        f->challenged_side = -1;
    } else if (empty && snd->has_snd_nxt && f->handshake_seen &&
               p->tcp_seq == snd->snd_nxt - 1) {
        v->keepalive = 1;
    }
    return 0;
}

static void move(TFlow *f, View *v, Ep *ep, int seg) {
    int next = advance(ep->role, ep->state, seg);
    if (next < 0)
        return;
    if (v->nmoves < 6) {
        v->moves[v->nmoves].role = ep->role;
        v->moves[v->nmoves].old = ep->state;
        v->moves[v->nmoves].new_ = next;
        v->moves[v->nmoves].side = ep->role;
    }
    v->nmoves++;
    f->saw_syn_sent |= next == SYN_SENT;
    if (seg == SEND_FIN && f->first_fin_role < 0)
        f->first_fin_role = ep->role;
    f->saw_rst |= seg == SEND_RST || seg == RECV_RST;
    ep->state = next;
}

/* TcpObserver._events, applied in order */
static void events(TFlow *f, View *v, Ep *snd, Ep *rcv, int flags, uint32_t ack) {
    if (flags & RST) {
        move(f, v, snd, SEND_RST);
        move(f, v, rcv, RECV_RST);
        return;
    }
    int segs[5], who[5], n = 0;  /* who: 0 sender, 1 receiver */
    if ((flags & SYN) && !(flags & ACK)) {
        segs[n] = SEND_SYN; who[n++] = 0;
        segs[n] = RECV_SYN; who[n++] = 1;
    } else if (flags & SYN) {
        segs[n] = RECV_SYN_ACK; who[n++] = 1;
    }
    int acks_ours = (flags & ACK) && rcv->has_snd_nxt && seq_ge(ack, rcv->snd_nxt) &&
        (rcv->state == SYN_RECV || rcv->state == FIN_WAIT_1 || rcv->state == CLOSING ||
         rcv->state == LAST_ACK);
    if (flags & FIN) {
        segs[n] = SEND_FIN; who[n++] = 0;
    }
    if (acks_ours) {
        segs[n] = RECV_ACK; who[n++] = 1;
    }
    if (flags & FIN) {
        segs[n] = RECV_FIN; who[n++] = 1;
    }
    for (int i = 0; i < n; i++)
        move(f, v, who[i] ? rcv : snd, segs[i]);
}

/* TcpObserver.feed */
static int feed(TcpState *st, const Pkt *p, View *v) {
    /* what only some segments set (the rest is set below; opts only for a SYN, by marks) */
    v->fit = FIT_NONE;
    v->synack_again = v->cookie_ts = v->keepalive = v->nmoves = 0;
    v->challenges = 0;
    TFlow *f = find_flow(st, p);
    if (f == NULL)
        return -1;
    int flags = p->tcp_flags;
    int is_client = is_ep(&f->client, p->src, p->src_len);
    Ep *snd = is_client ? &f->client : &f->server, *rcv = is_client ? &f->server : &f->client;
    int first = snd->sent == 0;
    snd->sent++;
    if (!snd->has_isn) {
        snd->has_isn = 1;
        snd->isn = flags & SYN ? p->tcp_seq : p->tcp_seq - 1;
        if (!(flags & SYN)) {
            snd->has_snd_una = 1;
            snd->snd_una = p->tcp_seq;
        }
    }
    if (!rcv->has_isn && (flags & ACK)) {
        rcv->has_isn = 1;
        rcv->isn = p->tcp_ack - 1;
    }
    uint32_t length = (uint32_t)p->payload_len + !!(flags & SYN) + !!(flags & FIN);
    uint32_t end = p->tcp_seq + length;
    if (marks(f, snd, rcv, p, first, v) < 0)
        return -1;
    v->in_window = !rcv->has_rcv_nxt || ((flags & RST) && v->fit != FIT_OUTSIDE) ||
                   distance(p->tcp_seq, rcv->rcv_nxt) < SEQ_WINDOW;
    if (v->fit == FIT_IN_WINDOW)
        flags &= ~RST;
    if (v->in_window) {
        events(f, v, snd, rcv, flags, p->tcp_ack);
        if (v->fit == FIT_NONE && (!rcv->has_rcv_nxt || seq_ge(end, rcv->rcv_nxt))) {
            rcv->has_rcv_nxt = 1;
            rcv->rcv_nxt = end;
        }
        if (v->fit == FIT_NONE && (!snd->has_snd_nxt || seq_ge(end, snd->snd_nxt))) {
            snd->has_snd_nxt = 1;
            snd->snd_nxt = end;
        }
        if ((flags & ACK) && (!rcv->has_snd_una || seq_ge(p->tcp_ack, rcv->snd_una))) {
            rcv->has_snd_una = 1;
            rcv->snd_una = p->tcp_ack;
        }
    }
    if (v->nmoves > 6)
        return -1;
    uint32_t una = snd->has_snd_una ? snd->snd_una : snd->isn;
    uint32_t in_flight = snd->has_snd_nxt ? snd->snd_nxt - una : 0;
    v->flow = f;
    v->sender_role = snd->role;
    v->rel_seq = p->tcp_seq - snd->isn;
    v->has_rel_ack = (flags & ACK) && rcv->has_isn;
    v->rel_ack = p->tcp_ack - rcv->isn;
    v->in_flight = in_flight < SEQ_WINDOW ? in_flight : 0;
    v->expects = (rcv->has_rcv_nxt ? rcv->rcv_nxt : end) - snd->isn;
    v->first_from_sender = first;
    v->has_window = rcv->has_window;
    v->window = rcv->window;
    return 0;
}

/* annotate_tcp._HTTP_STARTS: the payload starts an HTTP/1.x message */
static int is_http(const Pkt *p) {
#define START(s) {s, sizeof s - 1}
    static const struct { const char *s; size_t n; } starts[] = {
        START("GET "), START("POST "), START("PUT "), START("DELETE "), START("HEAD "),
        START("PATCH "), START("OPTIONS "), START("HTTP/1.")};
#undef START
    if (p->payload_len < 4 || memchr("GPDHO", p->payload[0], 5) == NULL)  /* their first bytes */
        return 0;
    for (size_t i = 0; i < sizeof starts / sizeof *starts; i++)
        if (p->payload_len >= starts[i].n && memcmp(p->payload, starts[i].s, starts[i].n) == 0)
            return 1;
    return 0;
}

static const uint8_t *find(const uint8_t *d, size_t n, const char *what) {
    size_t k = strlen(what);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(d + i, what, k) == 0)
            return d + i;
    return NULL;
}

static int ifind(const uint8_t *d, size_t n, const char *what) {  /* ASCII case-insensitive */
    size_t k = strlen(what);
    for (size_t i = 0; i + k <= n; i++) {
        size_t j = 0;
        while (j < k && (d[i + j] | (d[i + j] >= 'A' && d[i + j] <= 'Z' ? 0x20 : 0)) == what[j])
            j++;
        if (j == k)
            return 1;
    }
    return 0;
}

/* A payload the Python path reads as more than this file does: a WebSocket upgrade request
 * (annotate_ws, declined a little wider: any GET head naming websocket), TLS, DNS over TCP */
static int needs_python(const Pkt *p) {
    const uint8_t *d = p->payload;
    size_t n = p->payload_len;
    if (n >= 4 && memcmp(d, "GET ", 4) == 0) {
        const uint8_t *end = find(d, n, "\r\n\r\n");
        if (end != NULL && ifind(d, (size_t)(end - d), "websocket"))
            return 1;
    }
    if (!is_http(p) && n >= 5 && d[0] >= 20 && d[0] <= 23 && d[1] == 3)
        return 1;
    return (p->sport == 53 || p->dport == 53) && n > 14;
}

static int is_space(uint8_t c) {  /* str.strip()'s whitespace, for latin-1 text */
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0;
}

/* The last header named `name` (lower case) in an HTTP head, its value stripped; NULL if none
 * (annotate_tcp._http_state's dict of headers, lines after the first) */
static const uint8_t *header(const uint8_t *head, size_t n, const char *name, size_t *vlen) {
    const uint8_t *found = NULL, *line = find(head, n, "\r\n");
    while (line != NULL) {
        line += 2;
        const uint8_t *next = find(line, (size_t)(head + n - line), "\r\n");
        const uint8_t *end = next ? next : head + n, *colon = memchr(line, ':', (size_t)(end - line));
        const uint8_t *k = line, *ke = colon ? colon : end;
        while (k < ke && is_space(*k))
            k++;
        while (ke > k && is_space(ke[-1]))
            ke--;
        if ((size_t)(ke - k) == strlen(name) && ifind(k, (size_t)(ke - k), name)) {
            const uint8_t *v = colon ? colon + 1 : end, *ve = end;
            while (v < ve && is_space(*v))
                v++;
            while (ve > v && is_space(ve[-1]))
                ve--;
            found = v;
            *vlen = (size_t)(ve - v);
        }
        line = next;
    }
    return found;
}

/* annotate_tcp._http_state: where an HTTP message's application state is */
static int http_state(Row *row, const Pkt *p) {
    const uint8_t *end = find(p->payload, p->payload_len, "\r\n\r\n");
    size_t n = end ? (size_t)(end - p->payload) : p->payload_len, vlen = 0;
    const uint8_t *auth = header(p->payload, n, "authorization", &vlen);
    if (auth && vlen >= 7 && ifind(auth, 7, "bearer ")) {
        row->kind = K_HTTP_TOKEN;
        row->action = A_USES;
        return row_holder(row, H_TOKEN);
    }
    const uint8_t *cookie;
    if (ifind(p->payload, n, "set-cookie") && ifind(p->payload, n, "sessionid=")) {
        row->kind = K_HTTP_SESSION_CREATED;
        row->action = A_CREATES;
    } else if ((cookie = header(p->payload, n, "cookie", &vlen)) && ifind(cookie, vlen,
                                                                          "sessionid=")) {
        row->kind = K_HTTP_SESSION_LOOKUP;
        row->action = A_USES;
    } else {
        row->kind = K_HTTP_SELF_CONTAINED;
        row->action = A_USES;
        return row_holder(row, H_PACKET);
    }
    return row_holder(row, H_SERVER_APP) | row_holder(row, H_SHARED_STORE);
}

/* annotate_tcp._http_line, latin-1 decoded (as UTF-8 here) */
static const char *http_line(Row *row, const Pkt *p) {
    const uint8_t *end = find(p->payload, p->payload_len, "\r\n");
    size_t n = end ? (size_t)(end - p->payload) : p->payload_len;
    n = n < 120 ? n : 120;
    char out[241];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p->payload[i];
        if (c == 0)
            return NULL;  /* a NUL in the line: not for C strings */
        if (c < 0x80) {
            out[k++] = (char)c;
        } else {
            out[k++] = (char)(0xC0 | c >> 6);
            out[k++] = (char)(0x80 | (c & 0x3F));
        }
    }
    return row_strndup(row, out, k);
}

/* annotate_tcp._FLAG_TEXT: "SYN/ACK" for each value of the flags byte, "none" for 0 */
static const char *flag_text(int flags, char out[64]) {
    static const char *const common[256] = {[0x02] = "SYN", [0x12] = "SYN/ACK", [0x10] = "ACK",
                                            [0x18] = "PSH/ACK", [0x11] = "FIN/ACK",
                                            [0x04] = "RST", [0x14] = "RST/ACK"};
    static const char *const names[] = {"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"};
    if (common[flags & 0xFF])
        return common[flags & 0xFF];
    out[0] = 0;
    for (int i = 0; i < 8; i++)
        if (flags & (1 << i)) {
            if (out[0])
                strcat(out, "/");
            strcat(out, names[i]);
        }
    return out[0] ? out : "none";
}

/* TcpAnnotator._describe: summary, flow and fields */
static int describe(Row *row, const Pkt *p, const View *v) {
    Sb b;
    sb_init(&b);
    sb_s(&b, "tcp ");
    sb_i(&b, v->flow->number);
    row->flow = row_strndup(row, b.p, b.n);
    b.n = 0;
    sb_put(&b, "[", 1);
    char flags[64];
    sb_s(&b, flag_text(p->tcp_flags, flags));
    sb_s(&b, "] seq=");
    sb_u(&b, v->rel_seq);
    if (v->has_rel_ack) {
        sb_s(&b, " ack=");
        sb_u(&b, v->rel_ack);
    }
    sb_s(&b, " len=");
    sb_u(&b, p->payload_len);
    int r = 0;
    if (is_http(p)) {
        const char *line = http_line(row, p);
        if (line == NULL)
            return -1;
        sb_put(&b, " ", 1);
        sb_s(&b, line);
        if (b.n >= sizeof b.p - 1)
            return -1;
        r |= row_field_str(row, "http", line);
    }
    row->summary = row_strndup(row, b.p, b.n);
    r |= row_field_int(row, "tcp_len", (int64_t)p->payload_len);
    if (p->tcp_flags & SYN) {
        if (v->opts.has_mss)
            r |= row_field_int(row, "tcp_mss", v->opts.mss);
        if (v->opts.has_wscale)
            r |= row_field_int(row, "tcp_wscale", v->opts.wscale);
        if (v->opts.has_ts)
            r |= row_field_int(row, "tcp_tsval", v->opts.tsval);
        r |= row_field_bool(row, "tcp_sack_ok", v->opts.sack_ok);
    }
    if (v->has_window)
        r |= row_field_int(row, "tcp_receiver_window", v->window);
    if (v->fit != FIT_NONE)
        r |= row_field_str(row, "tcp_rst_fit", FIT[v->fit]);
    return r;
}

static int64_t num_get(const NumTable *t, int64_t key) {
    return (size_t)key < t->nval ? t->val[key] : 0;
}

/* t[key] = val (t.setdefault(key, val) when keep_first), then the bound */
static int num_put(NumTable *t, int64_t key, int64_t val, int keep_first) {
    if ((size_t)key >= t->nval) {
        size_t n = t->nval ? t->nval : 1024;
        while (n <= (size_t)key)
            n *= 2;
        int64_t *v = realloc(t->val, n * sizeof *v);
        if (v == NULL)
            return -1;
        memset(v + t->nval, 0, (n - t->nval) * sizeof *v);
        t->val = v;
        t->nval = n;
    }
    if (t->val[key]) {
        if (!keep_first)
            t->val[key] = val;
        return 0;
    }
    if (t->ring == NULL && (t->ring = malloc((FI_MAX_PENDING + 1) * sizeof *t->ring)) == NULL)
        return -1;
    t->val[key] = val;
    t->ring[(t->head + t->len++) % (FI_MAX_PENDING + 1)] = key;
    if (t->len > FI_MAX_PENDING) {
        t->val[t->ring[t->head]] = 0;
        t->head = (t->head + 1) % (FI_MAX_PENDING + 1);
        t->len--;
    }
    return 0;
}

static void set_moves(Row *row, const View *v, int states_known, const char *drop_src) {
    row->nmoves = 0;
    if (!states_known)
        return;
    for (int i = 0; i < v->nmoves; i++) {
        const char *addr = v->moves[i].side == CLIENT ? v->flow->client.addr
                                                      : v->flow->server.addr;
        if (drop_src && strcmp(addr, drop_src) == 0)
            continue;
        int k = row->nmoves++;
        row->moves[k].role = (uint8_t)v->moves[i].role;
        row->moves[k].old = (uint8_t)v->moves[i].old;
        row->moves[k].new_ = (uint8_t)v->moves[i].new_;
        row->moves[k].of_src = strcmp(addr, row->src) == 0;
    }
}

/* TcpAnnotator._forget_moves_of */
static void forget_moves_of(Ctx *ctx, const char *endpoint, int64_t number) {
    for (int i = 0; i < ctx_window_len(ctx); i++) {
        Row *r = ctx_window_at(ctx, i);
        if (r->number != number || r->nmoves == 0)
            continue;
        int k = 0;
        for (int j = 0; j < r->nmoves; j++) {
            const char *addr = r->moves[j].of_src ? r->src : r->dst;
            if (strcmp(addr, endpoint) != 0)
                r->moves[k++] = r->moves[j];
        }
        r->nmoves = k;
    }
}

static int holders2(Row *row, Holder a, Holder b) {
    return row_holder(row, a) | row_holder(row, b);
}

/* TcpAnnotator._rst */
static int rst_row(TcpState *st, Row *row, const View *v, int states_known, Ctx *ctx) {
    row->action = A_MISSING;
    int r = row_holder(row, H_NOBODY);
    if (v->first_from_sender) {
        int64_t answered = num_get(&st->last, v->flow->number);
        set_moves(row, v, states_known, row->src);
        forget_moves_of(ctx, row->src, answered);
        row->kind = K_TCP_RST_NO_CONNECTION;
        if (answered)
            r |= row_ref(row, answered);
        return r | row_value_str(row, "sender", row->src);
    }
    set_moves(row, v, states_known, NULL);
    row->kind = K_TCP_RST;
    return r;
}

/* TcpAnnotator._special */
static int special(TcpState *st, Row *row, const View *v, int states_known) {
    Holder kernel = v->sender_role == SERVER ? H_SERVER_KERNEL : H_CLIENT_KERNEL;
    if (v->synack_again) {
        int64_t synack = num_get(&st->synack, v->flow->number);
        row->action = A_USES;
        row->kind = K_TCP_SYN_QUEUED;
        set_moves(row, v, states_known, NULL);
        return row_holder(row, H_SERVER_KERNEL) | (synack ? row_ref(row, synack) : 0);
    }
    if (v->cookie_ts) {
        row->action = A_NONE;
        row->kind = K_TCP_SYN_COOKIE;
        set_moves(row, v, states_known, NULL);
        return row_holder(row, H_PACKET) | row_value_int(row, "low", v->opts.tsval % 64);
    }
    if (v->challenges) {
        row->action = A_USES;
        row->kind = K_TCP_CHALLENGE_ACK;
        int r = row_holder(row, kernel) | row_ref(row, v->challenges);
        return r | (v->has_rel_ack ? row_value_int(row, "rcv_nxt", v->rel_ack)
                                   : row_value_none(row, "rcv_nxt"));
    }
    if (v->keepalive) {
        row->action = A_USES;
        row->kind = K_TCP_KEEPALIVE;
        return row_holder(row, kernel);
    }
    return 1;  /* none */
}

/* TcpAnnotator.row */
int tcp_row(TcpState *st, const Pkt *p, Row *row, Ctx *ctx) {
    if (needs_python(p))
        return ctx_decline(ctx, "packet %lld: a TCP payload that may be TLS, a WebSocket upgrade "
                           "or DNS", (long long)p->number);
    View v;
    row->proto = "TCP";
    if (feed(st, p, &v) < 0 || describe(row, p, &v) < 0)
        return ctx_decline(ctx, "packet %lld: TCP beyond the compiled path", (long long)p->number);
    int known = v.flow->handshake_seen;
    const char *sender = ROLE[v.sender_role], *receiver = ROLE[!v.sender_role];
    int r = row_value_str(row, "sender", sender) | row_value_str(row, "receiver", receiver) |
            row_value_bool(row, "states_known", known) | row_value_int(row, "seq", v.rel_seq) |
            row_value_int(row, "expects", v.expects);
    if (!v.in_window) {
        row->action = A_MISSING;
        row->kind = K_TCP_OUT_OF_WINDOW;
        r |= row_holder(row, H_NOBODY);
    } else if (v.fit == FIT_IN_WINDOW) {
        row->action = A_USES;
        row->kind = K_TCP_RST_CHALLENGED;
        r |= row_holder(row, v.sender_role == CLIENT ? H_SERVER_KERNEL : H_CLIENT_KERNEL);
    } else if (p->tcp_flags & RST) {
        r |= rst_row(st, row, &v, known, ctx);
    } else {
        r |= num_put(&st->last, v.flow->number, p->number, 0);
        if ((p->tcp_flags & 0x12) == 0x12)
            r |= num_put(&st->synack, v.flow->number, p->number, 1);
        int s = special(st, row, &v, known);
        if (s <= 0) {
            r |= s;
        } else if (p->tcp_flags & SYN) {
            row->action = A_CREATES;
            row->kind = K_TCP_OPEN;
            set_moves(row, &v, known, NULL);
            r |= holders2(row, H_CLIENT_KERNEL, H_SERVER_KERNEL) | row_value_str(
                row, "who", p->tcp_flags & ACK ? "server kernel holds" : "client kernel creates");
        } else {
            set_moves(row, &v, known, NULL);
            Sb b;
            sb_init(&b);
            if (v.in_flight) {
                sb_i(&b, v.in_flight);
                sb_s(&b, " B in flight ");
                sb_s(&b, sender);
                sb_s(&b, "→");
                sb_s(&b, receiver);
                sb_s(&b, "; ");
            }
            r |= row_value_str(row, "flight", v.in_flight ? row_strndup(row, b.p, b.n) : "");
            b.n = 0;
            sb_s(&b, receiver);
            sb_s(&b, " kernel expects seq ");
            sb_u(&b, v.expects);
            sb_s(&b, " next");
            r |= row_value_str(row, "expects", known ? row_strndup(row, b.p, b.n)
                                                     : "no kernel state known for it");
            if (is_http(p)) {
                r |= http_state(row, p) | holders2(row, H_CLIENT_KERNEL, H_SERVER_KERNEL);
            } else {
                int ends = (p->tcp_flags & FIN) != 0;
                for (int i = 0; i < row->nmoves; i++)
                    ends |= row->moves[i].new_ == CLOSED || row->moves[i].new_ == TIME_WAIT;
                row->action = ends ? A_ENDS : A_USES;
                row->kind = ends ? K_TCP_CLOSE : K_TCP_SEGMENT;
                r |= holders2(row, H_CLIENT_KERNEL, H_SERVER_KERNEL);
            }
        }
    }
    if (r < 0)
        return ctx_decline(ctx, "packet %lld: TCP row beyond the compiled path",
                           (long long)p->number);
    return 0;
}

const char *tcp_role_name(int role) { return ROLE[role]; }
const char *tcp_state_name(int state) { return STATE[state]; }
size_t tcp_state_len(int state) { return STATE_LEN[state]; }

/* flows._describe_tcp */
void tcp_describe(TcpState *st, int64_t number, char *out, size_t n) {
    out[0] = 0;
    TFlow *f = st->by_number && number < (int64_t)st->nby ? st->by_number[number] : NULL;
    if (f == NULL || n == 0)
        return;
    Sb b;  /* built without printf: one per connection of --flows */
    sb_init(&b);
    if (!f->handshake_seen) {
        sb_s(&b, "joined mid-stream (no handshake in this capture): states unknown, "
             "client and server guessed from the ports");
    } else {
        sb_s(&b, f->saw_syn_sent ? "handshake seen" : "the SYN/ACK without its SYN");
        if (f->first_fin_role >= 0) {
            sb_s(&b, "; ");
            sb_s(&b, ROLE[f->first_fin_role]);
            sb_s(&b, " closed first");
        }
        if (f->saw_rst)
            sb_s(&b, "; reset");
        const Ep *tw = f->client.state == TIME_WAIT ? &f->client
                     : f->server.state == TIME_WAIT ? &f->server : NULL;
        if (tw) {
            sb_s(&b, "; ");
            sb_s(&b, ROLE[tw->role]);
            sb_s(&b, " ends in TIME_WAIT");
        }
        sb_s(&b, "; final: client ");
        sb_put(&b, STATE[f->client.state], STATE_LEN[f->client.state]);
        sb_s(&b, ", server ");
        sb_put(&b, STATE[f->server.state], STATE_LEN[f->server.state]);
    }
    size_t k = b.n < n - 1 ? b.n : n - 1;
    memcpy(out, b.p, k);
    out[k] = 0;
}
