/* QUIC for the compiled fast path: annotate_quic.QuicAnnotator (see fastinspect.h).
 * STUB (helper fastc): says which datagrams cannot be QUIC (protocols/quic.decode_header's first
 * test) and declines the others. Helper fastp replaces this file. */
#include <stdlib.h>

#include "fastinspect.h"

struct QuicState {
    int cid_len;
};

QuicState *quic_new(void) {
    QuicState *st = calloc(1, sizeof *st);
    if (st != NULL)
        st->cid_len = 8;
    return st;
}

void quic_free(QuicState *st) { free(st); }

int quic_header(QuicState *st, const Pkt *p, Ctx *ctx) {
    if (p->payload_len < (size_t)(1 + st->cid_len) || (p->payload[0] & 0xC0) == 0)
        return 0;
    return ctx_decline(ctx, "packet %lld: may be QUIC (stub)", (long long)p->number);
}

int quic_row(QuicState *st, const Pkt *p, Row *row, Ctx *ctx) {
    (void)st; (void)row;
    return ctx_decline(ctx, "packet %lld: QUIC (stub)", (long long)p->number);
}
