/* Rows of the compiled fast path: the per-row string arena and the Row helpers of fastinspect.h
 * (facts.Row and facts.Fact, filled field by field). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastinspect.h"
#include "fi_core.h"
#include "fast_text.h"

struct ArenaBlock {
    ArenaBlock *next;
    size_t size;
    char data[];
};

#define ARENA_BLOCK 2048

static char *arena_alloc(Arena *a, size_t n) {
    if (n > a->left) {
        size_t size = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        ArenaBlock *b = malloc(sizeof *b + size);
        if (b == NULL)
            return NULL;
        b->size = size;
        if (a->head == NULL) {
            b->next = NULL;
            a->head = b;
        } else {  /* after the first, so a reset keeps the first block */
            b->next = a->head->next;
            a->head->next = b;
        }
        a->cur = b->data;
        a->left = size;
    }
    char *out = a->cur;
    a->cur += n;
    a->left -= n;
    return out;
}

void arena_reset(Arena *a) {
    if (a->head == NULL)
        return;
    ArenaBlock *b = a->head->next;
    while (b != NULL) {
        ArenaBlock *next = b->next;
        free(b);
        b = next;
    }
    a->head->next = NULL;
    a->cur = a->head->data;
    a->left = a->head->size;
}

void arena_free(Arena *a) {
    arena_reset(a);
    free(a->head);
    memset(a, 0, sizeof *a);
}

char *row_alloc(Row *row, size_t n) { return arena_alloc(&row->arena, n); }

char *row_strndup(Row *row, const char *s, size_t n) {
    char *out = arena_alloc(&row->arena, n + 1);
    if (out != NULL) {
        memcpy(out, s, n);
        out[n] = 0;
    }
    return out;
}

char *row_strdup(Row *row, const char *s) { return row_strndup(row, s, strlen(s)); }

char *row_printf(Row *row, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    if ((size_t)n < sizeof small)
        return row_strndup(row, small, (size_t)n);
    char *out = arena_alloc(&row->arena, (size_t)n + 1);
    if (out == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

int row_holder(Row *row, Holder h) {
    if (row->nholders >= FI_MAX_HOLDERS)
        return -1;
    row->holders[row->nholders++] = h;
    return 0;
}

int row_also(Row *row, Kind k) {
    if (row->nalso >= FI_MAX_ALSO)
        return -1;
    row->also[row->nalso++] = k;
    return 0;
}

int row_ref(Row *row, int64_t number) {
    if (row->nrefs >= FI_MAX_REFS)
        return -1;
    row->refs[row->nrefs++] = number;
    return 0;
}

/* A value set again keeps its place and takes the new content (a Python dict's update). The
 * first byte is compared before the rest (most names differ there). */
static Val *put(Val *vals, int *n, int max, const char *name) {
    char first = name[0];
    for (int i = 0; i < *n; i++)
        if (vals[i].name == name || (vals[i].name[0] == first && str_eq(vals[i].name, name)))
            return &vals[i];
    if (*n >= max)
        return NULL;
    vals[*n].name = name;
    return &vals[(*n)++];
}

#define SETTER(fn, arr, count, max, T, vtype, member) \
    int fn(Row *row, const char *name, T v) { \
        Val *x = put(row->arr, &row->count, max, name); \
        if (x == NULL) \
            return -1; \
        x->type = vtype; \
        x->u.member = v; \
        return 0; \
    }

SETTER(row_value_int, values, nvalues, FI_MAX_VALUES, int64_t, V_INT, i)
SETTER(row_value_bool, values, nvalues, FI_MAX_VALUES, int, V_BOOL, i)
SETTER(row_value_float, values, nvalues, FI_MAX_VALUES, double, V_FLOAT, f)
SETTER(row_value_str, values, nvalues, FI_MAX_VALUES, const char *, V_STR, s)
SETTER(row_field_int, fields, nfields, FI_MAX_FIELDS, int64_t, V_INT, i)
SETTER(row_field_bool, fields, nfields, FI_MAX_FIELDS, int, V_BOOL, i)
SETTER(row_field_str, fields, nfields, FI_MAX_FIELDS, const char *, V_STR, s)

int row_value_none(Row *row, const char *name) {
    Val *x = put(row->values, &row->nvalues, FI_MAX_VALUES, name);
    if (x == NULL)
        return -1;
    x->type = V_NONE;
    return 0;
}

int row_field_none(Row *row, const char *name) {
    Val *x = put(row->fields, &row->nfields, FI_MAX_FIELDS, name);
    if (x == NULL)
        return -1;
    x->type = V_NONE;
    return 0;
}

Val *row_value(Row *row, const char *name) {
    for (int i = 0; i < row->nvalues; i++)
        if (strcmp(row->values[i].name, name) == 0)
            return &row->values[i];
    return NULL;
}

int row_shows(const Row *row, Kind k) {
    if (row->kind == k)
        return 1;
    for (int i = 0; i < row->nalso; i++)
        if (row->also[i] == k)
            return 1;
    return 0;
}

/* A fresh row for packet p: what annotate.Annotator._annotate_protocol's `base` holds. */
void row_begin(Row *row, const Pkt *p) {
    arena_reset(&row->arena);
    /* every field a part or the core reads, without clearing the fixed arrays behind counts */
    row->nholders = row->nalso = row->nrefs = row->nvalues = row->nfields = row->nmoves = 0;
    row->kind = K_NOT_ANNOTATED;
    row->flow = NULL;
    row->flow_number = 0;
    row->number = p->number;
    row->time = p->rel;
    memcpy(row->src, p->src, p->src_len + 1);
    memcpy(row->dst, p->dst, p->dst_len + 1);
    row->src_len = p->src_len;
    row->dst_len = p->dst_len;
    row->ip_proto = p->proto;
    row->proto = "UDP";
    row->summary = "";
    row->key = "";
    row->action = A_NONE;
}
