/* Rendering and printing rows (fi_out.c): facts.render, table.py, table.row_json */
#ifndef PROTOLAB_FI_OUT_H
#define PROTOLAB_FI_OUT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fi_core.h"

typedef struct TSeg {
    const char *lit;
    size_t litlen;
    int field, special;           /* special: a SPECIAL_* name special_value makes, or 0 */
    int hint;                     /* where render found the value last: its index, its name */
    const char *hint_name;
    char name[32], spec[16];
} TSeg;

typedef struct Tmpl {
    char *text;
    TSeg *segs;
    int nsegs, ok;
} Tmpl;

typedef struct Out {
    Tmpl tmpl[K__COUNT];
    const char *kinds[K__COUNT], *holders[H__COUNT], *actions[A__COUNT];  /* .value strings */
    int widths[5], state_width, beside;
    Buf scratch;
    /* the names' JSON text (quoted, escaped), made once by out_json_names; bytes in json_names */
    Slice json_kinds[K__COUNT], json_holders[H__COUNT], json_actions[A__COUNT];
    Buf json_names;
} Out;

int tmpl_compile(Tmpl *t, const char *text);
void tmpl_free(Tmpl *t);
int render(Buf *b, const Out *o, const Row *row);  /* b NULL: only whether it can */
int format_row(Buf *out, Out *o, const Row *row);
int format_header(Buf *out, const Out *o);
int format_json(Buf *b, Out *o, const Row *row);
int out_json_names(Out *o);  /* after kinds, holders and actions are set; 0 or -1 (memory) */

#endif
