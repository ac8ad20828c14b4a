/* Conversations (fi_flows.c): flows.FlowNumbers, flows.FlowTable, flows.print_flows */
#ifndef PROTOLAB_FI_FLOWS_H
#define PROTOLAB_FI_FLOWS_H

#include "fi_core.h"

#define FI_CHUNK (1 << 20)  /* bytes handed to Python's write at a time */

typedef int (*Emit)(void *ctx, Buf *out);  /* write out's bytes and empty it; <0: failed */

typedef struct Flows {
    int table;       /* 1: FlowTable (--flows), 0: FlowNumbers */
    int limit;       /* FlowNumbers' MAX_TRACKED */
    int64_t next;
    Map map;
    Pool pool;       /* FlowTable: each conversation's lists */
    void *recent;    /* the value flows_number_of last gave (FlowTable: for flows_add) */
} Flows;

void flows_init(Flows *fl, int table, int limit);
void flows_free(Flows *fl);
int64_t flows_count(const Flows *fl);
int64_t flows_number_of(Flows *fl, const Row *row);
int flows_add(Flows *fl, const Row *row);  /* after flows_number_of(fl, row) */
int flows_print(Flows *fl, TcpState *tcp, int as_json, int flows_width, Buf *out, Emit emit,
                void *emit_ctx);

#endif
