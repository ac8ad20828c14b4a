/* The compiled fast path of `protolab inspect` (see protolab/analysis/fast_inspect.py).
 * Work in progress: the contract with the protocol parts is fastinspect.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>

#include "fastinspect.h"
#include "fi_core.h"

struct Ctx {
    Row *ring;          /* FI_WINDOW + 1 rows */
    int head, len;      /* oldest row's slot, rows in the window */
    char why[256];      /* the first decline's reason ("" while none) */
};

int ctx_window_len(const Ctx *ctx) { return ctx->len; }

Row *ctx_window_at(Ctx *ctx, int i) {
    return &ctx->ring[(ctx->head + i) % (FI_WINDOW + 1)];
}

int ctx_decline(Ctx *ctx, const char *fmt, ...) {
    if (ctx->why[0] == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->why, sizeof ctx->why, fmt, ap);
        va_end(ap);
        if (ctx->why[0] == 0)
            snprintf(ctx->why, sizeof ctx->why, "declined");
    }
    return -1;
}

static PyObject *fast_run(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self; (void)args; (void)kwargs;
    return PyUnicode_FromString("the compiled path is not written yet");
}

#define FI_NAME(name) #name,
static const char *const KIND_NAMES[] = {FI_KINDS(FI_NAME)};
static const char *const HOLDER_NAMES[] = {FI_HOLDERS(FI_NAME)};
static const char *const ACTION_NAMES[] = {FI_ACTIONS(FI_NAME)};

static PyObject *names_tuple(const char *const *names, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t != NULL && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (s == NULL) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

/* names() -> (kinds, holders, actions): the C enums' member names, in their order, for a test
 * to compare with facts.Kind, Holder and Action. */
static PyObject *fast_names(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return Py_BuildValue("(NNN)", names_tuple(KIND_NAMES, K__COUNT),
                         names_tuple(HOLDER_NAMES, H__COUNT), names_tuple(ACTION_NAMES, A__COUNT));
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))fast_run, METH_VARARGS | METH_KEYWORDS,
     "run(path, mode, ...) -> (read, matched, shown, flows), or a str saying why it declines"},
    {"names", fast_names, METH_NOARGS, "names() -> (kinds, holders, actions) in the C enums' order"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastinspect", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastinspect(void) { return PyModule_Create(&module); }
