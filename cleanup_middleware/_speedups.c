/* The optional C base of cleanup_middleware.cleanup.ResponseCleanup.
 *
 * It does in C the two things of each request that a Python base does through a call into
 * Python code: the server's iter(body), and the check of the garbage-collection net when the
 * object is reclaimed. Everything else stays in Python (cleanup.py), which falls back to a pure
 * Python base with the same slots, __iter__ and __del__ when this module cannot be imported.
 *
 * The slots are member descriptors that raise AttributeError while unset, as __slots__ are.
 * Not imported on a free-threaded build (cleanup.py checks): the module does not declare that
 * it runs without the GIL, so importing it would enable the GIL again.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *body;
    PyObject *close_body;
    PyObject *environ;
    PyObject *failure;
    PyObject *hooks;
} CleanupBase;

static PyObject *close_abandoned_name;  /* "_close_abandoned", interned */

static int
CleanupBase_traverse(CleanupBase *self, visitproc visit, void *arg)
{
    Py_VISIT(self->body);
    Py_VISIT(self->close_body);
    Py_VISIT(self->environ);
    Py_VISIT(self->failure);
    Py_VISIT(self->hooks);
    return 0;
}

static int
CleanupBase_clear(CleanupBase *self)
{
    Py_CLEAR(self->body);
    Py_CLEAR(self->close_body);
    Py_CLEAR(self->environ);
    Py_CLEAR(self->failure);
    Py_CLEAR(self->hooks);
    return 0;
}

/* The garbage-collection net, as the Python base's __del__: an object reclaimed before its
 * close() ran (_environ still set) closes itself through ResponseCleanup._close_abandoned. As
 * for a Python __del__, the exception being handled is kept, and one raised here is reported
 * to sys.unraisablehook. */
static void
CleanupBase_finalize(CleanupBase *self)
{
    PyObject *environ = self->environ;
    if (environ == NULL || environ == Py_None) {
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *error = PyErr_GetRaisedException();
#else
    PyObject *error_type, *error_value, *error_traceback;
    PyErr_Fetch(&error_type, &error_value, &error_traceback);
#endif
    Py_INCREF(environ);  /* close() sets _environ to None while it runs */
    PyObject *result = PyObject_CallMethodOneArg(
        (PyObject *)self, close_abandoned_name, environ);
    Py_DECREF(environ);
    if (result == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    else {
        Py_DECREF(result);
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(error);
#else
    PyErr_Restore(error_type, error_value, error_traceback);
#endif
}

static void CleanupBase_dealloc(CleanupBase *self);

/* object's __new__, which a static type does not inherit: no arguments, as for a Python class
 * without __init__. */
static PyObject *
CleanupBase_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_Format(PyExc_TypeError, "%.200s() takes no arguments", type->tp_name);
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static PyObject *
CleanupBase_iter(CleanupBase *self)
{
    /* The body's own iterator: the server's next() calls never enter code of ours. */
    if (self->body == NULL) {
        /* Unset: raise the AttributeError that the member descriptor raises. */
        return PyObject_GetAttrString((PyObject *)self, "_body");
    }
    return PyObject_GetIter(self->body);
}

static PyMemberDef CleanupBase_members[] = {
    {"_body", T_OBJECT_EX, offsetof(CleanupBase, body), 0, NULL},
    {"_close_body", T_OBJECT_EX, offsetof(CleanupBase, close_body), 0, NULL},
    {"_environ", T_OBJECT_EX, offsetof(CleanupBase, environ), 0, NULL},
    {"_failure", T_OBJECT_EX, offsetof(CleanupBase, failure), 0, NULL},
    {"_hooks", T_OBJECT_EX, offsetof(CleanupBase, hooks), 0, NULL},
    {NULL},
};

static PyTypeObject CleanupBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cleanup_middleware._speedups.ResponseCleanupBase",
    .tp_doc = PyDoc_STR("The slots, __iter__ and garbage-collection net of ResponseCleanup."),
    .tp_basicsize = sizeof(CleanupBase),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = CleanupBase_new,
    .tp_dealloc = (destructor)CleanupBase_dealloc,
    .tp_traverse = (traverseproc)CleanupBase_traverse,
    .tp_clear = (inquiry)CleanupBase_clear,
    .tp_finalize = (destructor)CleanupBase_finalize,
    .tp_iter = (getiterfunc)CleanupBase_iter,
    .tp_members = CleanupBase_members,
};

static void
CleanupBase_dealloc(CleanupBase *self)
{
    /* For a subclass (ResponseCleanup), subtype_dealloc already called the finalizer. */
    if (Py_IS_TYPE(self, &CleanupBaseType)
        && PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return;  /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    CleanupBase_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cleanup_middleware._speedups",
    .m_doc = PyDoc_STR("The optional C base of cleanup_middleware.cleanup.ResponseCleanup."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (close_abandoned_name == NULL) {
        close_abandoned_name = PyUnicode_InternFromString("_close_abandoned");
        if (close_abandoned_name == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&CleanupBaseType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&CleanupBaseType);
    if (PyModule_AddObject(module, "ResponseCleanupBase", (PyObject *)&CleanupBaseType) < 0) {
        Py_DECREF(&CleanupBaseType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
