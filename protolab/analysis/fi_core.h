/* The core's own declarations, shared by its files (not part of the contract with the protocol
 * parts: that is fastinspect.h). */
#ifndef PROTOLAB_FI_CORE_H
#define PROTOLAB_FI_CORE_H

#include "fastinspect.h"

void arena_reset(Arena *a);
void arena_free(Arena *a);
void row_begin(Row *row, const Pkt *p);

#endif
