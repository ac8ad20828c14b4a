/* DNS over UDP for the compiled fast path: annotate_dns.DnsAnnotator (see fastinspect.h).
 * STUB (helper fastc): says which packets are DNS as far as that needs no parsing, and declines
 * every DNS row. Helper fastp replaces this file. */
#include <stdlib.h>

#include "fastinspect.h"

struct DnsState {
    int ports[64];
    int nports;
};

DnsState *dns_new(const int *ports, int nports) {
    DnsState *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    for (int i = 0; i < nports && i < 64; i++)
        st->ports[st->nports++] = ports[i];
    return st;
}

void dns_free(DnsState *st) { free(st); }

/* DnsAnnotator.is_dns: on a DNS port, or a payload parse_dns reads (declined here when it
 * might be one: 12 bytes or more with QDCOUNT 1). */
int dns_is_dns(DnsState *st, const Pkt *p, Ctx *ctx) {
    for (int i = 0; i < st->nports; i++)
        if (p->sport == st->ports[i] || p->dport == st->ports[i])
            return 1;
    if (p->payload_len < 12 || p->payload[4] != 0 || p->payload[5] != 1)
        return 0;
    return ctx_decline(ctx, "packet %lld: a payload that may be DNS (stub)",
                       (long long)p->number);
}

int dns_row(DnsState *st, const Pkt *p, Row *row, Ctx *ctx) {
    (void)st; (void)row;
    return ctx_decline(ctx, "packet %lld: DNS (stub)", (long long)p->number);
}
