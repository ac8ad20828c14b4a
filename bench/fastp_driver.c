/* Test driver for fast_dns.c and fast_quic.c alone (no reader, no layout): a minimal core that
 * keeps the window and hands rows back as text, so bench/fastp_check.py can hold every DNS and
 * QUIC row to the Python annotator's, field by field. Built by fastp_check.py with ctypes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../protolab/analysis/fastinspect.h"
#include "../protolab/analysis/fi_core.h"

struct Ctx {
    Row ring[FI_WINDOW + 1];
    int head, len;
    char why[256];
};

static Ctx ctx;
static DnsState *dns;
static QuicState *quic;

int ctx_window_len(const Ctx *c) { return c->len; }
Row *ctx_window_at(Ctx *c, int i) { return &c->ring[(c->head + i) % (FI_WINDOW + 1)]; }

int ctx_decline(Ctx *c, const char *fmt, ...) {
    if (c->why[0] == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof c->why, fmt, ap);
        va_end(ap);
    }
    return -1;
}

const char *drv_why(void) { return ctx.why; }

void drv_start(const int *ports, int nports) {
    dns_free(dns);
    quic_free(quic);
    for (int i = 0; i < FI_WINDOW + 1; i++)
        arena_free(&ctx.ring[i].arena);
    memset(&ctx, 0, sizeof ctx);
    dns = dns_new(ports, nports);
    quic = quic_new();
}

static void put_val(char **o, char *end, const Val *v) {
    switch (v->type) {
    case V_NONE: *o += snprintf(*o, end - *o, "%s=N:\x1f", v->name); break;
    case V_BOOL: *o += snprintf(*o, end - *o, "%s=B:%lld\x1f", v->name, (long long)v->u.i); break;
    case V_INT: *o += snprintf(*o, end - *o, "%s=I:%lld\x1f", v->name, (long long)v->u.i); break;
    case V_FLOAT: *o += snprintf(*o, end - *o, "%s=F:%.17g\x1f", v->name, v->u.f); break;
    case V_STR: *o += snprintf(*o, end - *o, "%s=S:%s\x1f", v->name, v->u.s); break;
    }
}

/* One row as text: fields separated by \x1e, lists by \x1f. */
static void dump(const Row *r, char **o, char *end) {
    *o += snprintf(*o, end - *o, "%lld\x1e%s\x1e%s\x1e%d\x1e", (long long)r->number, r->proto,
                   r->summary, (int)r->action);
    for (int i = 0; i < r->nholders; i++)
        *o += snprintf(*o, end - *o, "%d\x1f", (int)r->holders[i]);
    *o += snprintf(*o, end - *o, "\x1e%d\x1e", (int)r->kind);
    for (int i = 0; i < r->nalso; i++)
        *o += snprintf(*o, end - *o, "%d\x1f", (int)r->also[i]);
    *o += snprintf(*o, end - *o, "\x1e");
    for (int i = 0; i < r->nrefs; i++)
        *o += snprintf(*o, end - *o, "%lld\x1f", (long long)r->refs[i]);
    *o += snprintf(*o, end - *o, "\x1e%s\x1e%s\x1e", r->key ? r->key : "", r->flow ? r->flow : "");
    for (int i = 0; i < r->nvalues; i++)
        put_val(o, end, &r->values[i]);
    *o += snprintf(*o, end - *o, "\x1e");
    for (int i = 0; i < r->nfields; i++)
        put_val(o, end, &r->fields[i]);
    *o += snprintf(*o, end - *o, "\n");
}

/* Feed one packet (what: 0 = not UDP or not ours: a placeholder row; 1 = UDP). Returns -1 on a
 * decline, else writes the rows that left the window into out. */
int drv_feed(int what, long long number, double time, double rel, int sport, int dport,
             const char *src, const char *dst, const unsigned char *payload, size_t n,
             char *out, size_t cap) {
    char *o = out, *end = out + cap;
    *o = 0;
    if (ctx.len == FI_WINDOW + 1 - 1 + 1) {}
    int slot = (ctx.head + ctx.len) % (FI_WINDOW + 1);
    Row *row = &ctx.ring[slot];
    Pkt p = {0};
    p.number = number;
    p.time = time;
    p.rel = rel;
    p.proto = what ? 17 : 6;
    p.sport = sport;
    p.dport = dport;
    p.src_len = (size_t)snprintf(p.src, sizeof p.src, "%s", src);  /* Pkt keeps the lengths */
    p.dst_len = (size_t)snprintf(p.dst, sizeof p.dst, "%s", dst);
    p.payload = payload;
    p.payload_len = n;
    row_begin(row, &p);
    row->proto = "OTHER";
    if (what) {
        int r = dns_is_dns(dns, &p, &ctx);
        if (r < 0)
            return -1;
        if (r == 1) {
            if (dns_row(dns, &p, row, &ctx) < 0)
                return -1;
        } else {
            r = quic_header(quic, &p, &ctx);
            if (r < 0)
                return -1;
            if (r == 1 && quic_row(quic, &p, row, &ctx) < 0)
                return -1;
        }
    }
    ctx.len++;
    while (ctx.len > FI_WINDOW) {
        dump(&ctx.ring[ctx.head], &o, end);
        ctx.head = (ctx.head + 1) % (FI_WINDOW + 1);
        ctx.len--;
    }
    return 0;
}

int drv_finish(char *out, size_t cap) {
    char *o = out, *end = out + cap;
    *o = 0;
    while (ctx.len > 0) {
        dump(&ctx.ring[ctx.head], &o, end);
        ctx.head = (ctx.head + 1) % (FI_WINDOW + 1);
        ctx.len--;
    }
    return 0;
}

/* Times the DNS and QUIC parts alone over a classic pcap of Ethernet/IPv4 frames: every UDP
 * datagram goes through dns_is_dns/dns_row or quic_header/quic_row, other packets take a window
 * slot as placeholders. Returns the UDP datagrams handled, -1 on a decline or a bad file;
 * *seconds is the CPU time of the loop (parts: 1 DNS, 2 QUIC, 3 both; 0 for a baseline). */
#include <time.h>

long long drv_bench(const char *path, const int *ports, int nports, double *seconds, int parts) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    static unsigned char buf[1 << 16];
    if (fread(buf, 1, 24, f) != 24) {
        fclose(f);
        return -1;
    }
    drv_start(ports, nports);
    long long n = 0, udp = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    double spent = 0, t0 = -1;
    unsigned char hdr[16];
    while (fread(hdr, 1, 16, f) == 16) {
        uint32_t sec, usec, caplen;
        memcpy(&sec, hdr, 4);
        memcpy(&usec, hdr + 4, 4);
        memcpy(&caplen, hdr + 8, 4);
        if (caplen > sizeof buf || fread(buf, 1, caplen, f) != caplen)
            break;
        n++;
        double t = sec + usec / 1e6;
        t0 = t0 < 0 ? t : t0;
        int is_udp = caplen >= 42 && buf[12] == 8 && buf[13] == 0 && buf[23] == 17;
        int slot = (ctx.head + ctx.len) % (FI_WINDOW + 1);
        Row *row = &ctx.ring[slot];
        Pkt p = {0};
        p.number = n;
        p.time = t;
        p.rel = t - t0;
        p.proto = is_udp ? 17 : 6;
        if (is_udp) {
            int ihl = (buf[14] & 15) * 4;
            const unsigned char *u = buf + 14 + ihl;
            p.sport = u[0] << 8 | u[1];
            p.dport = u[2] << 8 | u[3];
            p.src_len = (size_t)snprintf(p.src, sizeof p.src, "%u.%u.%u.%u:%d", buf[26],
                                         buf[27], buf[28], buf[29], p.sport);
            p.dst_len = (size_t)snprintf(p.dst, sizeof p.dst, "%u.%u.%u.%u:%d", buf[30],
                                         buf[31], buf[32], buf[33], p.dport);
            p.payload = u + 8;
            p.payload_len = caplen - 14 - ihl - 8;
            udp++;
        }
        row_begin(row, &p);
        if (is_udp && parts) {
            int r = dns_is_dns(dns, &p, &ctx);
            if (r == 1)
                r = parts & 1 ? dns_row(dns, &p, row, &ctx) : 0;
            else if (r == 0 && (parts & 2) && (r = quic_header(quic, &p, &ctx)) == 1)
                r = quic_row(quic, &p, row, &ctx);
            if (r < 0) {
                fclose(f);
                return -1;
            }
        }
        ctx.len++;
        if (ctx.len > FI_WINDOW) {
            ctx.head = (ctx.head + 1) % (FI_WINDOW + 1);
            ctx.len--;
        }
    }
    fclose(f);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    spent = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    *seconds = spent;
    return udp;
}
