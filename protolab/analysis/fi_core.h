/* The core's own declarations, shared by its files (not part of the contract with the protocol
 * parts: that is fastinspect.h). */
#ifndef PROTOLAB_FI_CORE_H
#define PROTOLAB_FI_CORE_H

#include <stdio.h>
#include <string.h>

#include "fastinspect.h"
#include "fi_buf.h"
#include "fi_map.h"

/* fi_row.c */
void arena_reset(Arena *a);
void arena_free(Arena *a);
void row_begin(Row *row, const Pkt *p);

/* fi_read.c: wire/pcap.py read_pcap */
typedef struct Rec {
    double time;
    int linktype;
    const uint8_t *data;
    uint32_t caplen, orig_len;
} Rec;

typedef struct Reader {
    FILE *f;
    uint8_t *buf;
    size_t cap, clen, cpos;       /* classic pcap: buf[cpos:clen] is read, not yet taken */
    int be, pcapng, linktype, nifaces, sections;
    uint32_t snaplen;
    double units;
    uint8_t pending[24];
    size_t npending;
    char why[128];
} Reader;

int reader_open(Reader *r, const char *path);
int reader_next(Reader *r, Rec *rec);  /* 1 record, 0 end, -1 declined (r->why) */
void reader_close(Reader *r);

/* fi_decode.c: wire/packets.py decode; 0 = decoded, -1 = declined (why). memo: the caller's
 * table of DECODE_MEMO IPv4 endpoint texts, zeroed before the first packet */
#define DECODE_MEMO 256  /* ep4_text picks a slot by the top 8 bits of a hash */
typedef struct EpMemo {
    uint64_t key;  /* 0: empty */
    uint8_t len;
    char text[23];
} EpMemo;
int decode(const Rec *rec, int64_t number, Pkt *p, EpMemo *memo, char *why, size_t nwhy);

/* fi_tcp.c: protocols/tcp.py TcpObserver and annotate_tcp.TcpAnnotator */
typedef struct TcpState TcpState;
TcpState *tcp_new(int max_flows);
void tcp_free(TcpState *st);
int tcp_row(TcpState *st, const Pkt *p, Row *row, Ctx *ctx);
/* flows.py _describe_tcp for TCP connection `number` ("" when it is no longer tracked) */
const char *tcp_role_name(int role);
const char *tcp_state_name(int state);
size_t tcp_state_len(int state);  /* strlen(tcp_state_name(state)) */
void tcp_describe(TcpState *st, int64_t number, char *out, size_t n);

/* text helpers (fi_text.c; Buf and its writes in fi_buf.h) */
int buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_pad(Buf *b, size_t n);  /* n spaces */
size_t cp_len(const char *s, size_t n);  /* code points of UTF-8 text */
size_t cp_offset(const char *s, size_t n, size_t k);  /* byte offset of code point k */

/* table.wrap, one line at a time, for the table (fi_out.c) and --flows (fi_flows.c): greedy at
 * spaces, widths in code points, width < 0: the text on one line (None); no line for "" */
typedef struct Slice {
    const char *p;
    size_t n;
} Slice;
typedef struct Wrapper {
    const char *p;
    size_t n, cps;  /* what is left of the text: bytes, code points */
    int width;
} Wrapper;
void wrap_start(Wrapper *w, const char *text, size_t n, int width);
int wrap_next(Wrapper *w, Slice *line);  /* 1 and the next line, or 0 at the end */
int buf_json_str(Buf *b, const char *s);
int buf_json_strn(Buf *b, const char *s, size_t n);  /* buf_json_str of s[:n] */
int buf_i64(Buf *b, int64_t v);
int buf_fixed(Buf *b, double x, int digits);  /* "%.*f" */
int buf_fixed3(Buf *b, double x);  /* "%.3f" */
int buf_repr_float(Buf *b, double x);  /* Python's repr(float) */

/* A string built on the stack without printf (the per-packet paths) */
typedef struct Sb {
    char p[512];
    size_t n;
} Sb;

/* strcmp(a, b) == 0 inline, for the short names of values and fields (no call per name) */
static inline int str_eq(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* An empty Sb (an initializer would clear all of p, at every packet) */
static inline void sb_init(Sb *b) {
    b->n = 0;
    b->p[0] = 0;
}

static inline void sb_put(Sb *b, const char *s, size_t k) {
    if (b->n + k >= sizeof b->p)
        k = sizeof b->p - 1 - b->n;
    memcpy(b->p + b->n, s, k);
    b->n += k;
    b->p[b->n] = 0;
}

static inline void sb_s(Sb *b, const char *s) { sb_put(b, s, strlen(s)); }

/* decimal digits of v into out (at least 21 bytes, NUL-terminated); returns the length. The
 * length first (from the bit length: log10(2) ~ 1233/4096, then one compare; v | 1 as 0 has a
 * digit), then two digits per division, written from the end. */
static inline size_t fmt_u64(char *out, uint64_t v) {
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
                                "31323334353637383940414243444546474849505152535455565758596061"
                                "62636465666768697071727374757677787980818283848586878889909192"
                                "93949596979899";
    static const uint64_t tens[20] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
        100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
        10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
        100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL};
    size_t t = (size_t)(((64 - __builtin_clzll(v | 1)) * 1233) >> 12);
    size_t k = t + 1 - ((v | 1) < tens[t]);
    char *o = out + k;
    *o = 0;
    for (; v >= 100; v /= 100) {
        o -= 2;
        memcpy(o, pairs + 2 * (v % 100), 2);
    }
    if (v >= 10)
        memcpy(o - 2, pairs + 2 * v, 2);
    else
        o[-1] = (char)('0' + v);
    return k;
}

static inline size_t fmt_i64(char *out, int64_t v) {
    if (v < 0) {
        out[0] = '-';
        return 1 + fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
    }
    return fmt_u64(out, (uint64_t)v);
}

static inline void sb_u(Sb *b, uint64_t v) {
    char d[24];
    sb_put(b, d, fmt_u64(d, v));
}

static inline void sb_i(Sb *b, int64_t v) {
    char d[24];
    sb_put(b, d, fmt_i64(d, v));
}

#endif
