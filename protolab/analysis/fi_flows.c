#define _POSIX_C_SOURCE 200809L
/* Conversations for the compiled fast path: flows.FlowNumbers (LRU-bounded numbering, the
 * packet views), flows.FlowTable (one summary each, --flows), describe and print_flows (with
 * tabulate's "simple" layout). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fi_flows.h"

#define DIR_MAX (2 * FI_ENDPOINT + 8)  /* "src → dst" and NUL */

typedef struct Dir {
    char dir[DIR_MAX];
    size_t len;
    int64_t bytes;
} Dir;

typedef struct FFlow {
    int64_t number, packets, tcp_number;
    const char *key;  /* the map's own copy */
    char first[DIR_MAX];
    char kind[16];
    int has_tcp;
    Dir *dirs;
    int ndirs, capdirs;
    char **paths, **cids;         /* these lists and their strings: in Flows.pool */
    int npaths, ncids, cappaths, capcids;
    struct { int64_t id; double time; } *queries;
    int nq, capq;
    double *lat;
    int nlat, caplat;
    int64_t unmatched[5], late[5], first_migration, first_relayed;
    int nunmatched, nlate, nmig, nrel;
} FFlow;

void flows_init(Flows *fl, int table, int limit) {
    memset(fl, 0, sizeof *fl);
    fl->table = table;
    fl->limit = limit;
    if (table)
        map_init(&fl->map, sizeof(FFlow), NULL);  /* what a flow holds is in fl->pool */
    else
        map_init(&fl->map, sizeof(int64_t), NULL);
}

void flows_free(Flows *fl) {
    map_clear(&fl->map);
    pool_free(&fl->pool);
    fl->recent = NULL;
}

int64_t flows_count(const Flows *fl) { return fl->table ? (int64_t)fl->map.len : fl->next; }

/* f"{a}{sep}{b}" into out (room for two endpoints and a separator) */
static void join(char *out, const char *a, size_t na, const char *sep, const char *b, size_t nb) {
    size_t ns = strlen(sep);
    memcpy(out, a, na);
    memcpy(out + na, sep, ns);
    memcpy(out + na + ns, b, nb);
    out[na + ns + nb] = 0;
}

/* FlowNumbers.number_of / FlowTable.number_of; -1: no memory */
int64_t flows_number_of(Flows *fl, const Row *row) {
    size_t n = strlen(row->flow), klen;
    if (fl->recent != NULL) {  /* the same conversation as the last row's: last in the LRU already */
        const unsigned char *key = map_key(fl->recent, &klen);
        if (klen == n && memcmp(key, row->flow, n) == 0)
            return fl->table ? ((FFlow *)fl->recent)->number : *(int64_t *)fl->recent;
    }
    uint64_t h = map_hash(row->flow, n);
    if (!fl->table) {
        int64_t *number = map_get_h(&fl->map, row->flow, n, h);
        if (number != NULL) {
            map_move_end(&fl->map, number);
            fl->recent = number;
            return *number;
        }
        if (fl->map.len >= (size_t)fl->limit && map_first(&fl->map) != NULL) {
            if (map_first(&fl->map) == fl->recent)
                fl->recent = NULL;
            map_del(&fl->map, map_first(&fl->map));
        }
        number = fl->recent = map_put_h(&fl->map, row->flow, n, h, NULL);
        if (number == NULL)
            return -1;
        *number = ++fl->next;
        return *number;
    }
    int created;
    FFlow *f = map_put_h(&fl->map, row->flow, n, h, &created);
    if (f == NULL)
        return -1;
    fl->recent = f;
    if (!created)
        return f->number;
    f->number = (int64_t)fl->map.len;
    f->key = (const char *)map_key(f, &klen);
    join(f->first, row->src, row->src_len, " → ", row->dst, row->dst_len);
    const char *sp = strchr(row->flow, ' ');
    size_t kl = sp ? (size_t)(sp - row->flow) : n;
    snprintf(f->kind, sizeof f->kind, "%.*s", (int)kl, row->flow);
    if (kl >= sizeof f->kind)
        return -1;
    if (strcmp(f->kind, "tcp") == 0 && sp && sp[1]) {
        int digits = 1;
        for (const char *c = sp + 1; *c; c++)
            digits &= *c >= '0' && *c <= '9';
        if (digits) {
            f->has_tcp = 1;
            f->tcp_number = atoll(sp + 1);
        }
    }
    return f->number;
}

/* s added to a list of distinct strings (an ordered set), in the pool */
static int add_str(Pool *pool, char ***list, int *n, int *cap, const char *s) {
    for (int i = 0; i < *n; i++)
        if (strcmp((*list)[i], s) == 0)
            return 0;
    char **l = pool_grow(pool, *list, cap, *n, sizeof *l);
    size_t len = strlen(s);
    char *copy = pool_alloc(pool, len + 1);
    if (l == NULL || copy == NULL)
        return -1;
    memcpy(copy, s, len + 1);
    *list = l;
    l[(*n)++] = copy;
    return 0;
}

static const Val *field(const Row *row, const char *name) {
    for (int i = 0; i < row->nfields; i++)
        if (row->fields[i].name == name || str_eq(row->fields[i].name, name))
            return &row->fields[i];
    return NULL;
}

static int query_at(const FFlow *f, int64_t id) {
    for (int i = 0; i < f->nq; i++)
        if (f->queries[i].id == id)
            return i;
    return -1;
}

static void query_del(FFlow *f, int i) {
    memmove(&f->queries[i], &f->queries[i + 1], (size_t)(f->nq - i - 1) * sizeof *f->queries);
    f->nq--;
}

/* FlowTable.add's DNS part */
static int add_dns(Pool *pool, FFlow *f, const Row *row, int64_t id) {
    const Val *resp = field(row, "dns_response");
    int q = query_at(f, id);
    if (resp == NULL || resp->type != V_BOOL || !resp->u.i) {
        if (q >= 0) {
            f->queries[q].time = row->time;
            return 0;
        }
        void *more = pool_grow(pool, f->queries, &f->capq, f->nq, sizeof *f->queries);
        if (more == NULL)
            return -1;
        f->queries = more;
        f->queries[f->nq].id = id;
        f->queries[f->nq++].time = row->time;
    } else if (q >= 0 && row->action == A_ENDS) {
        double *more = pool_grow(pool, f->lat, &f->caplat, f->nlat, sizeof *more);
        if (more == NULL)
            return -1;
        f->lat = more;
        f->lat[f->nlat++] = (row->time - f->queries[q].time) * 1000;
        query_del(f, q);
    } else if (q >= 0 && row_shows(row, K_DNS_TO_CLOSED_SOCKET)) {
        query_del(f, q);
        if (f->nlate < 5)
            f->late[f->nlate] = id;
        f->nlate++;
    } else if (row->action == A_MISSING) {
        if (f->nunmatched < 5)
            f->unmatched[f->nunmatched] = id;
        f->nunmatched++;
    }
    return 0;
}

/* FlowTable.add */
int flows_add(Flows *fl, const Row *row) {
    if (!fl->table)
        return 0;
    FFlow *f = fl->recent;
    f->packets++;
    char dir[DIR_MAX];
    join(dir, row->src, row->src_len, " → ", row->dst, row->dst_len);
    size_t dlen = row->src_len + strlen(" → ") + row->dst_len;
    int d = 0;
    while (d < f->ndirs && (f->dirs[d].len != dlen || memcmp(f->dirs[d].dir, dir, dlen) != 0))
        d++;
    if (d == f->ndirs) {  /* a new direction; its path is new or was seen the other way */
        Dir *more = pool_grow(&fl->pool, f->dirs, &f->capdirs, f->ndirs, sizeof *more);
        if (more == NULL)
            return -1;
        f->dirs = more;
        memcpy(f->dirs[d].dir, dir, dlen + 1);
        f->dirs[d].len = dlen;
        f->dirs[d].bytes = 0;
        f->ndirs++;
        int lt = strcmp(row->src, row->dst) < 0;
        if (lt)
            join(dir, row->src, row->src_len, " ↔ ", row->dst, row->dst_len);
        else
            join(dir, row->dst, row->dst_len, " ↔ ", row->src, row->src_len);
        if (add_str(&fl->pool, &f->paths, &f->npaths, &f->cappaths, dir) < 0)
            return -1;
    }
    f->dirs[d].bytes += row->length;
    const Val *dcid = field(row, "quic_dcid");
    if (dcid && dcid->type == V_STR && dcid->u.s[0] && add_str(&fl->pool, &f->cids, &f->ncids,
                                                     &f->capcids, dcid->u.s) < 0)
        return -1;
    if (row_shows(row, K_QUIC_MIGRATION) && f->nmig++ == 0)
        f->first_migration = row->number;
    if (row_shows(row, K_QUIC_RELAYED) && f->nrel++ == 0)
        f->first_relayed = row->number;
    const Val *id = field(row, "dns_id");
    if (row_shows(row, K_DNS_RELAYED) || row_shows(row, K_DNS_RELAY_ANSWER)) {
        if (f->nrel++ == 0)
            f->first_relayed = row->number;
    } else if (id != NULL) {
        if (id->type != V_INT || add_dns(&fl->pool, f, row, id->u.i) < 0)
            return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* f"{qid:#06x}" after a ", " but for the first: Python's # writes 0x even for 0 (C's does not) */
static void put_id(Buf *b, int i, unsigned id) {
    buf_printf(b, "%s0x%04x", i ? ", " : "", id);
}

static void describe_dns(Buf *b, FFlow *f) {
    buf_printf(b, "%d answered", f->nlat);
    if (f->nlat) {
        qsort(f->lat, (size_t)f->nlat, sizeof *f->lat, cmp_double);
        int m = f->nlat / 2;
        double med = f->nlat % 2 ? f->lat[m] : (f->lat[m - 1] + f->lat[m]) / 2;
        buf_printf(b, " (median %.0f ms)", med);
    }
    if (f->nq) {
        buf_printf(b, "; %d unanswered: ", f->nq);
        for (int i = 0; i < f->nq && i < 5; i++)
            put_id(b, i, (unsigned)f->queries[i].id);
    }
    if (f->nlate) {
        buf_puts(b, "; answered after the client closed its socket: ");
        for (int i = 0; i < f->nlate && i < 5; i++)
            put_id(b, i, (unsigned)f->late[i]);
    }
    if (f->nunmatched) {
        buf_puts(b, "; answers matched to no query (forged?): ");
        for (int i = 0; i < f->nunmatched && i < 5; i++)
            put_id(b, i, (unsigned)f->unmatched[i]);
    }
}

static void describe_quic(Buf *b, const FFlow *f) {
    buf_printf(b, "%d path(s): ", f->npaths);
    for (int i = 0; i < f->npaths; i++)
        buf_printf(b, "%s%s", i ? "; " : "", f->paths[i]);
    if (f->nmig || f->nrel) {
        buf_puts(b, " (");
        if (f->nmig)
            buf_printf(b, "migrated: one connection found by CID on a new path (#%lld)",
                       (long long)f->first_migration);
        if (f->nrel)
            buf_printf(b, "%srelayed: the same datagrams forwarded on a second path by a "
                       "middlebox (#%lld), not a migration", f->nmig ? "; " : "",
                       (long long)f->first_relayed);
        buf_puts(b, ")");
    }
    buf_printf(b, "; DCIDs seen: %d", f->ncids);
}

/* FlowTable.describe, appended to b (a flow across a NAT, with several tuples, was declined in
 * flows_add) */
static int describe(Buf *b, FFlow *f, TcpState *tcp) {
    buf_puts(b, "");
    if (f->npaths > 1 && (strcmp(f->kind, "tcp") == 0 || strcmp(f->kind, "udp") == 0))
        return -1;
    if (strcmp(f->kind, "tcp") == 0 && f->has_tcp) {
        char text[512];
        tcp_describe(tcp, f->tcp_number, text, sizeof text);
        return buf_puts(b, text);
    }
    if (strcmp(f->kind, "dns") == 0 && f->nrel && !f->nq && !f->nlat)
        return buf_printf(b, "a middlebox's leg: %d relayed queries and answers (#%lld…); the "
                          "clients' entries are in their own flows", f->nrel,
                          (long long)f->first_relayed);
    if (strcmp(f->kind, "dns") == 0) {
        describe_dns(b, f);
        return 0;
    }
    if (strcmp(f->kind, "quic") == 0) {
        describe_quic(b, f);
        return 0;
    }
    for (int i = 0; i < f->ndirs; i++)
        buf_printf(b, "%s%s: %lld B", i ? ", " : "", f->dirs[i].dir, (long long)f->dirs[i].bytes);
    return 0;
}

static int json_flow(Buf *out, FFlow *f, const char *state) {
    buf_printf(out, "{\"flow\": %lld, \"kind\": ", (long long)f->number);
    buf_json_str(out, f->kind);
    buf_puts(out, ", \"key\": ");
    buf_json_str(out, f->key);
    buf_printf(out, ", \"packets\": %lld, \"paths\": [", (long long)f->packets);
    for (int i = 0; i < f->npaths; i++) {
        if (i)
            buf_put(out, ", ", 2);
        buf_json_str(out, f->paths[i]);
    }
    buf_puts(out, "], \"cids\": [");
    for (int i = 0; i < f->ncids; i++) {
        if (i)
            buf_put(out, ", ", 2);
        buf_json_str(out, f->cids[i]);
    }
    buf_puts(out, "], \"state\": ");
    buf_json_str(out, state);
    return buf_puts(out, "}\n");
}

static size_t digits(int64_t v) {
    char s[24];
    return fmt_i64(s, v);
}

static void cell(Buf *out, const char *s, size_t n, size_t width, int right) {
    size_t len = cp_len(s, n);
    if (right && len < width)
        buf_pad(out, width - len);
    buf_put(out, s, n);
    if (!right && len < width)
        buf_pad(out, width - len);
}

static void end_line(Buf *out, size_t start) {
    while (out->len > start && out->p[out->len - 1] == ' ')
        out->len--;
    buf_put(out, "\n", 1);
}

/* tabulate(rows, headers=FLOW_HEADERS), "simple": columns at least header + 2 wide, numbers
 * right-aligned, text left, lines right-stripped, a multi-line state on lines of their own */
static int table(Buf *out, FFlow **fs, char **states, size_t n, int flows_width, Emit emit,
                 void *emit_ctx) {
    static const char *const heads[] = {"flow", "kind", "first packet", "packets",
                                        "state (reconstructed from the packets)"};
    size_t w[5], used = 0;
    for (int c = 0; c < 4; c++)
        w[c] = strlen(heads[c]);
    for (size_t i = 0; i < n; i++) {
        size_t v[4] = {digits(fs[i]->number), strlen(fs[i]->kind),
                       cp_len(fs[i]->first, strlen(fs[i]->first)), digits(fs[i]->packets)};
        for (int c = 0; c < 4; c++)
            w[c] = v[c] > w[c] ? v[c] : w[c];
    }
    for (int c = 0; c < 4; c++)
        used += w[c] + 2;  /* flows._flows_state_width */
    int sw = flows_width < 0 ? -1 : (int)(flows_width - (int)used > 30 ? flows_width - (int)used
                                                                       : 30);
    for (int c = 0; c < 4; c++)
        w[c] = w[c] > strlen(heads[c]) + 2 ? w[c] : strlen(heads[c]) + 2;
    w[4] = strlen(heads[4]) + 2;
    for (size_t i = 0; i < n; i++) {  /* the state column's width: its longest wrapped line */
        Wrapper wr;
        Slice line;
        wrap_start(&wr, states[i], strlen(states[i]), sw);
        while (wrap_next(&wr, &line))
            w[4] = cp_len(line.p, line.n) > w[4] ? cp_len(line.p, line.n) : w[4];
    }
    const int right[5] = {1, 0, 0, 1, 0};
    size_t start = out->len;
    for (int c = 0; c < 5; c++) {
        if (c)
            buf_put(out, "  ", 2);
        cell(out, heads[c], strlen(heads[c]), w[c], right[c]);
    }
    end_line(out, start);
    for (int c = 0; c < 5; c++) {
        if (c)
            buf_put(out, "  ", 2);
        for (size_t k = 0; k < w[c]; k++)
            buf_put(out, "-", 1);
    }
    buf_put(out, "\n", 1);
    for (size_t i = 0; i < n; i++) {
        char num[24], pk[24];
        fmt_i64(num, fs[i]->number);
        fmt_i64(pk, fs[i]->packets);
        Wrapper wr;
        Slice state = {"", 0};  /* an empty state is still one line */
        wrap_start(&wr, states[i], strlen(states[i]), sw);
        wrap_next(&wr, &state);
        int line = 0;
        do {
            start = out->len;
            cell(out, line ? "" : num, line ? 0 : strlen(num), w[0], 1);
            buf_put(out, "  ", 2);
            cell(out, line ? "" : fs[i]->kind, line ? 0 : strlen(fs[i]->kind), w[1], 0);
            buf_put(out, "  ", 2);
            cell(out, line ? "" : fs[i]->first, line ? 0 : strlen(fs[i]->first), w[2], 0);
            buf_put(out, "  ", 2);
            cell(out, line ? "" : pk, line ? 0 : strlen(pk), w[3], 1);
            buf_put(out, "  ", 2);
            buf_put(out, state.p, state.n);
            end_line(out, start);
            line++;
        } while (wrap_next(&wr, &state));
        if (out->len >= FI_CHUNK && emit(emit_ctx, out) < 0)
            return -1;
    }
    return 0;
}

/* flows.print_flows */
int flows_print(Flows *fl, TcpState *tcp, int as_json, int flows_width, Buf *out, Emit emit,
                void *emit_ctx) {
    size_t n = fl->map.len, i = 0;
    FFlow **fs = calloc(n + 1, sizeof *fs);
    char **states = calloc(n + 1, sizeof *states);
    size_t *at = calloc(n + 1, sizeof *at);
    Buf text = {0};  /* the states one after another, each NUL-terminated */
    int r = fs && states && at ? 0 : -1;
    for (FFlow *f = map_first(&fl->map); f != NULL && r == 0; f = map_next(f), i++) {
        fs[i] = f;
        at[i] = text.len;
        r = describe(&text, fs[i], tcp);
        r |= r == 0 ? buf_put(&text, "", 1) : 0;
    }
    for (i = 0; r == 0 && i < n; i++)
        states[i] = text.p + at[i];
    if (r == 0 && as_json) {
        for (i = 0; i < n && r == 0; i++) {
            json_flow(out, fs[i], states[i]);
            if (out->len >= FI_CHUNK)
                r = emit(emit_ctx, out);
        }
    } else if (r == 0) {
        r = table(out, fs, states, n, flows_width, emit, emit_ctx);
        buf_printf(out, "%zu conversations; `protolab inspect FILE --flow N` for one as a "
                   "timeline\n", n);
    }
    free(states);
    free(at);
    free(fs);
    free(text.p);
    return r;
}
