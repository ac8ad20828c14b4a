/* Text helpers of the compiled fast path: a growing byte buffer, UTF-8 code point counts (Python
 * measures str in code points), json.dumps(ensure_ascii=False) strings, repr(float). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdarg.h>

#include "fi_core.h"

#ifdef __SSE2__
#include <emmintrin.h>

/* Whether any of the 16 bytes at s is < 0x20 (max(x, 0x1f) == 0x1f), '"' or '\\' */
static inline int json_special16(const char *s) {
    __m128i x = _mm_loadu_si128((const __m128i *)s), low = _mm_set1_epi8(0x1F);
    __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                               _mm_cmpeq_epi8(x, _mm_set1_epi8('\\')));
    hit = _mm_or_si128(hit, _mm_cmpeq_epi8(_mm_max_epu8(x, low), low));
    return _mm_movemask_epi8(hit) != 0;
}
#endif

/* buf_put's slow path: room for n more bytes and the NUL */
int buf_grow(Buf *b, size_t n) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int buf_printf(Buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return buf_put(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (big == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int r = buf_put(b, big, (size_t)n);
    free(big);
    return r;
}

int buf_pad(Buf *b, size_t n) {
    if (b->len + n + 1 > b->cap && buf_grow(b, n) < 0)
        return -1;
    memset(b->p + b->len, ' ', n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

#define HIGHS 0x8080808080808080ULL

/* The continuation bytes (10xxxxxx) among the 8 bytes of w */
static inline size_t cont8(uint64_t w) {
    uint64_t cont = (w & HIGHS) & ~((w & 0x4040404040404040ULL) << 1);
    return (size_t)(((cont >> 7) * 0x0101010101010101ULL) >> 56);
}

/* words of plain ASCII (no high bit) have no continuation byte: only the others are counted */
size_t cp_len(const char *s, size_t n) {
    size_t k = n, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & HIGHS)
            k -= cont8(w);
    }
    for (; i < n; i++)
        k -= ((unsigned char)s[i] & 0xC0) == 0x80;
    return k;
}

size_t cp_offset(const char *s, size_t n, size_t k) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {  /* whole words whose code point starts are all before k's */
        uint64_t w;
        memcpy(&w, s + i, 8);
        size_t starts = w & HIGHS ? 8 - cont8(w) : 8;
        if (starts > k)
            break;
        k -= starts;
    }
    while (i < n) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (k == 0)
                return i;
            k--;
        }
        i++;
    }
    return n;
}

/* Whether any of the 8 bytes of w is < 0x20, '"' or '\\' (exact: no false answers) */
static int json_special8(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
    uint64_t low = (w - ones * 0x20) & ~w;
    return (((quote - ones) & ~quote) | ((slash - ones) & ~slash) | low) & highs ? 1 : 0;
}

static int json_escape(Buf *b, unsigned char c) {
    char esc[8];
    switch (c) {
    case '"': return buf_put(b, "\\\"", 2);
    case '\\': return buf_put(b, "\\\\", 2);
    case '\n': return buf_put(b, "\\n", 2);
    case '\r': return buf_put(b, "\\r", 2);
    case '\t': return buf_put(b, "\\t", 2);
    case '\b': return buf_put(b, "\\b", 2);
    case '\f': return buf_put(b, "\\f", 2);
    }
    snprintf(esc, sizeof esc, "\\u%04x", c);
    return buf_put(b, esc, 6);
}

/* Whether s[:n] has a byte json escapes: words at a time, the last one overlapping (one word
 * of two overlapping halves for 4 to 7 bytes) */
static int json_special(const char *s, size_t n) {
    uint64_t w;
    if (n < 8) {
        if (n >= 4) {  /* two overlapping halves */
            uint32_t lo, hi;
            memcpy(&lo, s, 4);
            memcpy(&hi, s + n - 4, 4);
            return json_special8((uint64_t)hi << 32 | lo);
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c < 0x20 || c == '"' || c == '\\')
                return 1;
        }
        return 0;
    }
#ifdef __SSE2__
    if (n >= 16) {
        for (size_t i = 0; i + 16 < n; i += 16)
            if (json_special16(s + i))
                return 1;
        return json_special16(s + n - 16);
    }
#endif
    for (size_t i = 0; i + 8 < n; i += 8)
        if (memcpy(&w, s + i, 8), json_special8(w))
            return 1;
    return memcpy(&w, s + n - 8, 8), json_special8(w);
}

/* json's ESCAPE: r'[\x00-\x1f\\"\b\f\n\r\t]', the rest as is (ensure_ascii=False); a string
 * with none (nearly all) is copied whole */
int buf_json_strn(Buf *b, const char *s, size_t n) {
    if (!json_special(s, n)) {
        if (buf_reserve(b, n + 2) < 0)
            return -1;
        char *o = b->p + b->len;
        o[0] = '"';
        memcpy(o + 1, s, n);
        o[n + 1] = '"';
        b->len += n + 2;
        b->p[b->len] = 0;
        return 0;
    }
    size_t run = 0;
    if (buf_put(b, "\"", 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (buf_put(b, s + run, i - run) < 0 || json_escape(b, c) < 0)
            return -1;
        run = i + 1;
    }
    if (buf_put(b, s + run, n - run) < 0)
        return -1;
    return buf_put(b, "\"", 1);
}

int buf_json_str(Buf *b, const char *s) { return buf_json_strn(b, s, strlen(s)); }

int buf_repr_float(Buf *b, double x) {
    char *s = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (s == NULL) {
        PyErr_Clear();
        return -1;
    }
    int r = buf_puts(b, s);
    PyMem_Free(s);
    return r;
}

/* the digits straight into reserved room (fmt_i64 ends them with the NUL) */
int buf_i64(Buf *b, int64_t v) {
    if (buf_reserve(b, 21) < 0)
        return -1;
    b->len += fmt_i64(b->p + b->len, v);
    return 0;
}

/* "%.*f" % (digits, x) (correctly rounded, ties to even, as printf and Python) without printf,
 * for 0 <= x * 10**digits < 1e15; the residual of that product (fma) decides the cases its
 * rounding hides */
int buf_fixed(Buf *b, double x, int digits) {
    static const double scales[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
    if (digits < 1 || digits > 6 || !(x >= 0 && x * scales[digits] < 1e15))
        return buf_printf(b, "%.*f", digits, x);
    double scale = scales[digits], p = x * scale, n = (double)(uint64_t)p;  /* floor: p >= 0 */
    double frac = p - n;
    int up;
    if (fabs(frac - 0.5) > p * 0x1p-50 && frac > p * 0x1p-50) {
        up = frac > 0.5;  /* p's rounding error (< p * 2^-53) cannot cross a tie or an integer */
    } else {  /* near one: x * scale exactly is p + e */
        double e = fma(x, scale, -p);
        up = frac > 0.5 || (frac == 0.5 && (e > 0 || (e == 0 && fmod(n, 2) != 0)));
        if (frac == 0 && e < 0)
            up = 0;  /* just below an integer: that integer */
    }
    uint64_t v = (uint64_t)n + (uint64_t)up, unit = (uint64_t)scale;
    char d[40];
    size_t k = fmt_u64(d, v / unit);
    d[k++] = '.';
    for (uint64_t r = v % unit, i = (uint64_t)digits; i-- > 0; r /= 10)
        d[k + i] = (char)('0' + r % 10);
    return buf_put(b, d, k + (size_t)digits);
}

int buf_fixed3(Buf *b, double x) { return buf_fixed(b, x, 3); }

/* Text of no more bytes than the width has no more code points either: it fits, and its byte
 * count stands for the code points (wrap_next only compares them with the width then) */
void wrap_start(Wrapper *w, const char *text, size_t n, int width) {
    size_t cps = width < 0 ? 0 : n <= (size_t)width ? n : cp_len(text, n);
    *w = (Wrapper){text, n, cps, width};
}

/* One step of table.wrap's loop: the line up to the last space that lets it fit (else cut at
 * the width), then the spaces after it dropped (lstrip) */
int wrap_next(Wrapper *w, Slice *line) {
    if (w->n == 0)
        return 0;
    if (w->width < 0 || w->cps <= (size_t)w->width) {
        *line = (Slice){w->p, w->n};
        w->n = 0;
        return 1;
    }
    size_t end = cp_offset(w->p, w->n, (size_t)w->width + 1), cut = 0;
    for (size_t i = end; i-- > 0;)
        if (w->p[i] == ' ') {
            cut = i;
            break;
        }
    if (cut == 0)
        cut = cp_offset(w->p, w->n, (size_t)w->width);
    *line = (Slice){w->p, cut};
    w->cps -= cp_len(w->p, cut);
    w->p += cut;
    w->n -= cut;
    while (w->n && *w->p == ' ') {
        w->p++;
        w->n--;
        w->cps--;
    }
    return 1;
}
