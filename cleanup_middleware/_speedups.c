/* The optional C base of cleanup_middleware.cleanup.ResponseCleanup.
 *
 * It does in C three things of each request that the pure-Python code does through a call into
 * Python: the server's iter(body), the check of the garbage-collection net when the object is
 * reclaimed, and the common case of add_cleanup. Everything else stays in Python (cleanup.py),
 * which falls back to a pure Python base with the same slots, __iter__ and __del__, and to its
 * own add_cleanup, when this module cannot be imported.
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
    PyObject *outcome;
} CleanupBase;


static int
CleanupBase_traverse(CleanupBase *self, visitproc visit, void *arg)
{
    Py_VISIT(self->body);
    Py_VISIT(self->close_body);
    Py_VISIT(self->environ);
    Py_VISIT(self->failure);
    Py_VISIT(self->hooks);
    Py_VISIT(self->outcome);
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
    Py_CLEAR(self->outcome);
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
    /* The name made here, not kept: this runs only for an abandoned response, and a string
     * kept by the module would be shared by every interpreter of the process. */
    PyObject *result = PyObject_CallMethod((PyObject *)self, "_close_abandoned", "O", environ);
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
    {"_outcome", T_OBJECT_EX, offsetof(CleanupBase, outcome), 0, NULL},
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
    /* Freeing a member may free another such object, and so on down a chain (through _body, a
     * million deep, say): the trashcan defers the deep ones instead of overflowing the C stack,
     * as CPython's own containers do. For a subclass, subtype_dealloc has its own and this one
     * stands aside. */
    Py_TRASHCAN_BEGIN(self, CleanupBase_dealloc)
    CleanupBase_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

/* add_cleanup's fallback (the Python function, which handles every case but the common one
 * and raises its errors), the environ key, and functools.partial: set by setup_add_cleanup(),
 * for the interpreter that called it first. A module of single-phase initialisation is shared
 * by the sub-interpreters of a process (mod_wsgi's application groups), whose objects must not
 * be mixed: the others keep the Python add_cleanup. The owner is known by its ID, which is
 * never reused in a process, not by its address, which a later interpreter may get once the
 * owner is gone (it would then take the dead owner's objects for its own). */
static int64_t owner = -1;
static PyObject *python_add_cleanup;
static PyObject *environ_key;
static PyObject *partial_type;

/* add_cleanup(environ, fn, /, *args, **kwargs): the common case in C, without the Python
 * function's frame and its **kwargs dict. Everything else (no middleware, a closed response,
 * fn not callable, a pure-Python or foreign object in the environ, hooks that are not a list)
 * goes to the Python function. With the GIL, nothing runs between reading the hooks and
 * appending to them (PyList_Append makes no object the collector tracks), so close() cannot
 * replace them in between and the Python function's check after appending is not needed. The
 * partial is made first: making it may run other code, and a close() meanwhile leaves the
 * hooks closed, which the fallback then reports. */
static PyObject *
add_cleanup(PyObject *Py_UNUSED(module), PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (owner != PyInterpreterState_GetID(PyInterpreterState_Get())) {
        PyErr_SetString(PyExc_RuntimeError,
                        "_speedups.add_cleanup() belongs to another interpreter; "
                        "use cleanup_middleware.add_cleanup");
        return NULL;
    }
    if (nargs < 2 || !PyDict_CheckExact(args[0]) || !PyCallable_Check(args[1])) {
        goto fallback;
    }
    PyObject *hook;
    if (nargs == 2 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)) {
        hook = Py_NewRef(args[1]);
    }
    else {
        hook = PyObject_Vectorcall(partial_type, args + 1, nargs - 1, kwnames);
        if (hook == NULL) {
            return NULL;
        }
    }
    PyObject *cleanup = PyDict_GetItemWithError(args[0], environ_key);  /* borrowed */
    if (cleanup == NULL || !PyObject_TypeCheck(cleanup, &CleanupBaseType)) {
        Py_DECREF(hook);
        if (PyErr_Occurred()) {
            return NULL;
        }
        goto fallback;
    }
    PyObject *hooks = ((CleanupBase *)cleanup)->hooks;
    if (hooks == NULL || !PyList_CheckExact(hooks)) {
        Py_DECREF(hook);
        goto fallback;
    }
    int appended = PyList_Append(hooks, hook);
    Py_DECREF(hook);
    if (appended < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
fallback:
    return PyObject_Vectorcall(python_add_cleanup, args, nargsf, kwnames);
}

static PyObject *
setup_add_cleanup(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "setup_add_cleanup(python_add_cleanup, key, partial)");
        return NULL;
    }
    int64_t caller = PyInterpreterState_GetID(PyInterpreterState_Get());
    if (caller < 0) {
        return NULL;
    }
    if (owner >= 0) {
        /* Another interpreter's, or this one's again (a reload): keep the first. */
        return Py_NewRef(owner == caller ? Py_True : Py_False);
    }
    owner = caller;
    python_add_cleanup = Py_NewRef(args[0]);
    environ_key = Py_NewRef(args[1]);
    partial_type = Py_NewRef(args[2]);
    Py_RETURN_TRUE;
}

static PyMethodDef speedups_methods[] = {
    {"add_cleanup", (PyCFunction)(void (*)(void))add_cleanup, METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("add_cleanup($module, environ, fn, /, *args, **kwargs)\n--\n\n"
               "Run fn(*args, **kwargs) once, when the server closes this request's response.\n\n"
               "cleanup_middleware.cleanup.add_cleanup with its common case in C; see that "
               "function's documentation.")},
    {"setup_add_cleanup", (PyCFunction)(void (*)(void))setup_add_cleanup, METH_FASTCALL,
     PyDoc_STR("setup_add_cleanup($module, python_add_cleanup, key, partial, /)\n--\n\n"
               "Give add_cleanup its fallback, the environ key and functools.partial, for this\n"
               "interpreter if it is the first to ask; return whether it is.")},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cleanup_middleware._speedups",
    .m_doc = PyDoc_STR("The optional C base of cleanup_middleware.cleanup.ResponseCleanup."),
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
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
