/* The compiled fast path of `protolab inspect` (see protolab/analysis/fast_inspect.py).
 * Skeleton: declines every capture, so the Python path runs. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *fast_run(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self; (void)args; (void)kwargs;
    Py_RETURN_NONE;  /* declined */
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))fast_run, METH_VARARGS | METH_KEYWORDS,
     "run(path, mode, ...) -> (read, matched, shown, flows), or None when declined"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastinspect", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastinspect(void) { return PyModule_Create(&module); }
