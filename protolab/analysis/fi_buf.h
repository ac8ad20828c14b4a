/* A growing text buffer (its slow path, buf_grow, in fi_text.c): the core's and the DNS part's
 * one kind of output and scratch text. */
#ifndef PROTOLAB_FI_BUF_H
#define PROTOLAB_FI_BUF_H

#include <string.h>

typedef struct Buf {
    char *p;
    size_t len, cap;
} Buf;
int buf_grow(Buf *b, size_t n);

static inline int buf_put(Buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap && buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

/* room for n more bytes and the NUL (then written at b->p + b->len directly); 0 or -1 */
static inline int buf_reserve(Buf *b, size_t n) {
    return b->len + n + 1 > b->cap ? buf_grow(b, n) : 0;
}

/* inline: a literal's length is known when compiling */
static inline int buf_puts(Buf *b, const char *s) { return buf_put(b, s, strlen(s)); }

#endif
