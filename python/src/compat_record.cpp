// exo_compat's record fast paths: record() as a plain CPython METH_O function
// and record_metrics() as a native awaitable, both bound to one _CompatCore.

#include "compat_record.hpp"

#include <utility>

#include "compat_core.hpp"

namespace gpucluster::python::compat {

namespace {

// record() as plain CPython METH_O functions: the per-call path skips
// pybind11's argument dispatch (its allocations and thread-local bookkeeping).
struct FastRecord {
  CompatCore* core;
  PyObject* owner;  // the _CompatCore Python object, kept alive by the capsule
};

// Runs core->record(metrics); false with the Python error set if it raised.
bool run_record(CompatCore* core, PyObject* metrics) noexcept {
  try {
    core->record(metrics);
    return true;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (...) {
    try {
      translate_error(std::current_exception());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
      PyErr_SetString(PyExc_RuntimeError, "unknown C++ error");
    }
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "unknown C++ error");
  }
  return false;
}

PyObject* fast_record(PyObject* self, PyObject* metrics) {
  auto* bound = static_cast<FastRecord*>(PyCapsule_GetPointer(self, nullptr));
  if (bound == nullptr) return nullptr;
  if (!run_record(bound->core, metrics)) return nullptr;
  Py_RETURN_NONE;
}

// What `await manager.record_metrics(m)` awaits: a native stand-in for the
// seed's coroutine, which records `m` when it is first resumed (awaited, sent
// None, or stepped by a Task) and then returns None, raising the record's
// error there. It is a collections.abc.Coroutine (__await__, send, throw,
// close), so asyncio.create_task/ensure_future/gather/run take it; like a
// coroutine it runs once, and one dropped unawaited warns (RuntimeWarning).
// Costs one small allocation, against a coroutine's frame and object.
struct PendingRecord {
  PyObject ob_base;  // PyObject_HEAD
  CompatCore* core;
  PyObject* owner;    // the _CompatCore object (strong): keeps `core` alive
  PyObject* metrics;  // strong; nullptr once run, thrown into or closed
};

PyTypeObject* pending_record_type = nullptr;

// A few freed PendingRecords, reused (as CPython's own free lists do): each
// await then costs no allocator call. Touched only with the GIL held.
constexpr int kPendingFreeMax = 16;
PendingRecord* pending_free[kPendingFreeMax];
int pending_free_count = 0;

PySendResult pending_send(PyObject* self, PyObject* arg, PyObject** result) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  *result = nullptr;
  if (p->metrics == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  }
  if (arg != nullptr && arg != Py_None) {
    PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
    return PYGEN_ERROR;
  }
  PyObject* metrics = std::exchange(p->metrics, nullptr);
  const bool ok = run_record(p->core, metrics);
  Py_DECREF(metrics);
  if (!ok) return PYGEN_ERROR;
  Py_INCREF(Py_None);
  *result = Py_None;
  return PYGEN_RETURN;
}

PyObject* pending_iternext(PyObject* self) {
  PyObject* result = nullptr;
  if (pending_send(self, Py_None, &result) == PYGEN_RETURN) Py_DECREF(result);  // returned: StopIteration
  return nullptr;
}

PyObject* pending_await(PyObject* self) {
  Py_INCREF(self);
  return self;
}

PyObject* pending_send_method(PyObject* self, PyObject* value) {
  PyObject* result = nullptr;
  const PySendResult status = pending_send(self, value, &result);
  if (status == PYGEN_RETURN) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
  }
  return nullptr;
}

// throw(exception) or throw(type[, value[, traceback]]): the record never runs
// and the exception is raised, as from a coroutine that has not started.
PyObject* pending_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 3) {
    PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
    return nullptr;
  }
  Py_CLEAR(reinterpret_cast<PendingRecord*>(self)->metrics);
  PyObject* type = args[0];
  PyObject* value = nargs > 1 && args[1] != Py_None ? args[1] : nullptr;
  PyObject* traceback = nargs > 2 && args[2] != Py_None ? args[2] : nullptr;
  if (traceback != nullptr && !PyTraceBack_Check(traceback)) {
    PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
    return nullptr;
  }
  if (PyExceptionInstance_Check(type)) {
    if (value != nullptr) {
      PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
      return nullptr;
    }
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(type)), type);
  } else if (PyExceptionClass_Check(type)) {
    PyErr_SetObject(type, value);
  } else {
    PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                 Py_TYPE(type)->tp_name);
    return nullptr;
  }
  if (traceback != nullptr) {
    PyObject *t = nullptr, *v = nullptr, *tb = nullptr;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v != nullptr) PyException_SetTraceback(v, traceback);
    Py_XDECREF(tb);
    Py_INCREF(traceback);
    PyErr_Restore(t, v, traceback);
  }
  return nullptr;
}

PyObject* pending_close(PyObject* self, PyObject* /*unused*/) {
  Py_CLEAR(reinterpret_cast<PendingRecord*>(self)->metrics);
  Py_RETURN_NONE;
}

int pending_traverse(PyObject* self, visitproc visit, void* arg) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(p->owner);
  Py_VISIT(p->metrics);
  return 0;
}

int pending_clear(PyObject* self) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  Py_CLEAR(p->metrics);
  Py_CLEAR(p->owner);
  return 0;
}

void pending_dealloc(PyObject* self) {
  auto* p = reinterpret_cast<PendingRecord*>(self);
  PyTypeObject* type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (p->metrics != nullptr) {  // never awaited: nothing was recorded, as with the seed's coroutine
    PyObject *t = nullptr, *v = nullptr, *tb = nullptr;
    PyErr_Fetch(&t, &v, &tb);
    if (PyErr_WarnEx(PyExc_RuntimeWarning, "coroutine 'record_metrics' was never awaited", 1) < 0) {
      PyErr_WriteUnraisable(nullptr);
    }
    PyErr_Restore(t, v, tb);
  }
  pending_clear(self);
  if (pending_free_count < kPendingFreeMax) {
    pending_free[pending_free_count++] = p;  // memory kept for record_later
  } else {
    PyObject_GC_Del(self);
  }
  Py_DECREF(type);
}

PyMethodDef pending_methods[] = {
    {"send", &pending_send_method, METH_O, "send(None): records the sample; raises StopIteration (returns None)."},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&pending_throw)), METH_FASTCALL,
     "throw(exception): drops the sample and raises the exception."},
    {"close", &pending_close, METH_NOARGS, "close(): drops the sample unrecorded."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot pending_slots[] = {
    {Py_am_await, reinterpret_cast<void*>(&pending_await)},
    {Py_am_send, reinterpret_cast<void*>(&pending_send)},
    {Py_tp_iternext, reinterpret_cast<void*>(&pending_iternext)},
    {Py_tp_methods, pending_methods},
    {Py_tp_traverse, reinterpret_cast<void*>(&pending_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(&pending_clear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(&pending_dealloc)},
    {Py_tp_doc, const_cast<char*>("A record_metrics call waiting to be awaited (a native coroutine stand-in).")},
    {0, nullptr},
};

PyType_Spec pending_spec = {"gpucluster._native._PendingRecord", sizeof(PendingRecord), 0,
                            Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, pending_slots};

PyObject* record_later(PyObject* self, PyObject* metrics) {
  auto* bound = static_cast<FastRecord*>(PyCapsule_GetPointer(self, nullptr));
  if (bound == nullptr) return nullptr;
  PendingRecord* p = nullptr;
  if (pending_free_count > 0) {
    p = pending_free[--pending_free_count];
    PyObject_Init(reinterpret_cast<PyObject*>(p), pending_record_type);  // refcount 1, a type reference
  } else {
    p = PyObject_GC_New(PendingRecord, pending_record_type);
    if (p == nullptr) return nullptr;
  }
  p->core = bound->core;
  Py_INCREF(bound->owner);
  p->owner = bound->owner;
  Py_INCREF(metrics);
  p->metrics = metrics;
  PyObject_GC_Track(p);
  return reinterpret_cast<PyObject*>(p);
}

PyMethodDef fast_record_def = {"record", &fast_record, METH_O,
                               "record(metrics): validate and store one GPUMetrics (the fast path)"};
PyMethodDef record_later_def = {"record_metrics", &record_later, METH_O,
                                "record_metrics(metrics): an awaitable that validates and stores one GPUMetrics "
                                "when awaited (the seed's async record_metrics)"};

py::object bind_to_core(const py::object& core_object, PyMethodDef* def) {
  auto* bound = new FastRecord{core_object.cast<CompatCore*>(), core_object.ptr()};
  Py_INCREF(bound->owner);
  PyObject* capsule = PyCapsule_New(bound, nullptr, [](PyObject* c) {
    auto* b = static_cast<FastRecord*>(PyCapsule_GetPointer(c, nullptr));
    Py_DECREF(b->owner);
    delete b;
  });
  if (capsule == nullptr) {
    Py_DECREF(bound->owner);
    delete bound;
    throw py::error_already_set();
  }
  const py::object owner = py::reinterpret_steal<py::object>(capsule);
  PyObject* function = PyCFunction_New(def, capsule);
  if (function == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(function);
}

}  // namespace

void init_record_types(py::module_& m) {
  pending_record_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&pending_spec));  // lives as long as the module
  if (pending_record_type == nullptr) throw py::error_already_set();
  m.add_object("_PendingRecord", py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(pending_record_type)));
}

py::object fast_record_function(const py::object& core) {
  return bind_to_core(core, &fast_record_def);
}

py::object record_later_function(const py::object& core) {
  return bind_to_core(core, &record_later_def);
}

}  // namespace gpucluster::python::compat
