/* Small string builders for the DNS and QUIC parts of the compiled fast path: the row strings
 * of every packet, without printf's cost (header-only, like fast_map.h). */
#ifndef PROTOLAB_FAST_TEXT_H
#define PROTOLAB_FAST_TEXT_H

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastinspect.h"

char *row_alloc(Row *row, size_t n);  /* n bytes in the row's arena (fi_row.c); NULL: no memory */

/* The strings up to a NULL (at most 15), joined, straight into the row's arena; NULL: no
 * memory. row_cat(row, "a", b, NULL): the strings are handed over as an array (no va_arg). */
#define row_cat(row, ...) row_cat_array((row), (const char *const[]){__VA_ARGS__})

static inline char *row_cat_array(Row *row, const char *const *parts) {
    size_t lens[16], n = 0;
    int k = 0;
    for (; k < 15 && parts[k] != NULL; k++) {
        lens[k] = strlen(parts[k]);
        n += lens[k];
    }
    char *out = row_alloc(row, n + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (int i = 0; i < k; i++) {
        memcpy(o, parts[i], lens[i]);
        o += lens[i];
    }
    *o = 0;
    return out;
}

/* A number in decimal, written at o (NUL-terminated); returns the end. */
static inline char *put_u64(char *o, uint64_t v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *o++ = tmp[--n];
    *o = 0;
    return o;
}

/* f"{v:#06x}" for a 16-bit id: "0x" and four lowercase hex digits. */
static inline void put_hexid(char out[7], unsigned v) {
    static const char digits[] = "0123456789abcdef";
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 4; i++)
        out[2 + i] = digits[(v >> (12 - 4 * i)) & 15];
    out[6] = 0;
}

/* Fact.values and Row.fields of a row being made: each name is set once, so no look-up (the
 * row_value_* helpers of fastinspect.h search for the name first). 0, or -1 when full. */
static inline Val *fresh_val(Val *arr, int *n, int max, const char *name, VType type) {
    if (*n >= max)
        return NULL;
    arr[*n].name = name;
    arr[*n].type = type;
    return &arr[(*n)++];
}

#define FRESH(fn, arr, count, max, T, vtype, member) \
    static inline int fn(Row *row, const char *name, T v) { \
        Val *x = fresh_val(row->arr, &row->count, max, name, vtype); \
        if (x == NULL) \
            return -1; \
        x->u.member = v; \
        return 0; \
    }

FRESH(val_int, values, nvalues, FI_MAX_VALUES, int64_t, V_INT, i)
FRESH(val_float, values, nvalues, FI_MAX_VALUES, double, V_FLOAT, f)
FRESH(val_str, values, nvalues, FI_MAX_VALUES, const char *, V_STR, s)
FRESH(fld_int, fields, nfields, FI_MAX_FIELDS, int64_t, V_INT, i)
FRESH(fld_bool, fields, nfields, FI_MAX_FIELDS, int, V_BOOL, i)
FRESH(fld_str, fields, nfields, FI_MAX_FIELDS, const char *, V_STR, s)

static inline int val_none(Row *row, const char *name) {
    return fresh_val(row->values, &row->nvalues, FI_MAX_VALUES, name, V_NONE) ? 0 : -1;
}

static inline int fld_none(Row *row, const char *name) {
    return fresh_val(row->fields, &row->nfields, FI_MAX_FIELDS, name, V_NONE) ? 0 : -1;
}

#endif
