/* The output of a pass kept until the pass has shown the capture is covered (fi_spool.c): the
 * first bytes in memory, the rest in an unnamed temporary file, so a run decides before it
 * prints anything with one pass over the capture and memory that stays flat. */
#ifndef PROTOLAB_FI_SPOOL_H
#define PROTOLAB_FI_SPOOL_H

#include <stdint.h>
#include <sys/types.h>

#include "fi_core.h"

typedef struct Spool {
    Buf mem;            /* the first bytes */
    size_t mem_cap;     /* how many bytes stay in memory before the file takes the rest */
    const char *dir;    /* where the temporary file is made */
    int fd;             /* the temporary file (unlinked from birth), or -1 */
    int64_t file_len;   /* bytes in it */
    int lost;           /* a write failed: the spool no longer holds the whole output */
} Spool;

void spool_init(Spool *s, size_t mem_cap, const char *dir);
void spool_free(Spool *s);
/* keep n bytes: 0, or -1 when they could not be kept (no file, disk full...): s->lost is set,
 * the caller stops spooling and prints in a second pass instead */
int spool_put(Spool *s, const char *p, size_t n);
/* up to n bytes of the file part from offset at: the count, 0 at its end, -1 on error */
ssize_t spool_read(const Spool *s, int64_t at, char *out, size_t n);

#endif
