/* The rename pairer's hot loop (consumers/pairing.py, PairTable._add_records)
 * in C: one message's halves, already checked in Python (one kind, cookies
 * unique and not waiting, ids unique and not resolved, room in the table),
 * each parked or paired with the waiting half of the other kind.
 *
 * It makes the same objects as the Python loop, through the same types
 * (Half, Outcome, the fast-path event struct, msgspec.structs.replace), and
 * leaves anything but the common case of a renamed record to the Python
 * functions it is given: pairing.py's `_add_records_py` and `renamed_record`
 * are the reference, and tests/consumers/test_rename_pairing.py holds the
 * two to the same outcomes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Set once by setup(): the types and helpers of pairing.py. */
static PyObject *HalfT, *OutcomeT, *EventT, *Replace, *EmptyProc, *PyRenamed, *RenamedMaps;
static Py_ssize_t MaxId;
static PyObject *s_type, *s_id, *s_ts, *s_host, *s_file, *s_path, *s_proc, *s_ret, *s_v, *s_cookie,
    *s_event, *s_renamed, *s_empty, *s_plus, *kw_path, *kw_old_path;

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *h, *o, *e, *r, *ep, *pr, *pm;
    Py_ssize_t mx;
    if (!PyArg_ParseTuple(args, "OOOOOOOn", &h, &o, &e, &r, &ep, &pr, &pm, &mx))
        return NULL;
    Py_XSETREF(HalfT, Py_NewRef(h));
    Py_XSETREF(OutcomeT, Py_NewRef(o));
    Py_XSETREF(EventT, Py_NewRef(e));
    Py_XSETREF(Replace, Py_NewRef(r));
    Py_XSETREF(EmptyProc, Py_NewRef(ep));
    Py_XSETREF(PyRenamed, Py_NewRef(pr));
    Py_XSETREF(RenamedMaps, Py_NewRef(pm));
    MaxId = mx;
    Py_RETURN_NONE;
}

/* renamed_record(src, dst) for two records whose files differ in the path
 * only (the collector's halves); anything else goes to the Python one. */
static PyObject *renamed_c(PyObject *src, PyObject *dst) {
    PyObject *sf = NULL, *df = NULL, *sid = NULL, *did = NULL, *rid = NULL, *spath = NULL,
             *tmp = NULL, *file = NULL, *proc = NULL, *ret = NULL, *sts = NULL, *dts = NULL,
             *v = NULL, *host = NULL, *cookie = NULL, *res = NULL;
    int eq, lt;
    if (!(sf = PyObject_GetAttr(src, s_file)) || !(df = PyObject_GetAttr(dst, s_file)))
        goto done;
    if (sf == Py_None || df == Py_None)
        goto slow;
    if (!(sid = PyObject_GetAttr(src, s_id)) || !(did = PyObject_GetAttr(dst, s_id)))
        goto done;
    if (!PyUnicode_CheckExact(sid) || !PyUnicode_CheckExact(did) ||
        PyUnicode_GET_LENGTH(sid) + 1 + PyUnicode_GET_LENGTH(did) > MaxId)
        goto slow;
    if (!(spath = PyObject_GetAttr(sf, s_path)))
        goto done;
    {   /* replace(df, path=sf.path) == sf: src adds nothing but its path */
        PyObject *a[2] = {df, spath};
        if (!(tmp = PyObject_Vectorcall(Replace, a, 1, kw_path)))
            goto done;
    }
    if ((eq = PyObject_RichCompareBool(tmp, sf, Py_EQ)) < 0)
        goto done;
    if (!eq)
        goto slow;
    if ((eq = PyObject_IsTrue(spath)) < 0)
        goto done;
    {   /* replace(df, old_path=sf.path or "") */
        PyObject *a[2] = {df, eq ? spath : s_empty};
        if (!(file = PyObject_Vectorcall(Replace, a, 1, kw_old_path)))
            goto done;
    }
    if (!(rid = PyUnicode_Concat(sid, s_plus)))
        goto done;
    Py_SETREF(rid, PyUnicode_Concat(rid, did));
    if (!rid)
        goto done;
    if (!(proc = PyObject_GetAttr(src, s_proc)))
        goto done;
    if (proc != Py_None && (eq = PyObject_RichCompareBool(proc, EmptyProc, Py_EQ)) < 0)
        goto done;
    if (proc == Py_None || eq) {  /* the other half's process, if it has one */
        Py_SETREF(proc, PyObject_GetAttr(dst, s_proc));
        if (!proc || (eq = PyObject_RichCompareBool(proc, EmptyProc, Py_EQ)) < 0)
            goto done;
        if (eq)
            Py_SETREF(proc, Py_NewRef(Py_None));
    }
    if (!(ret = PyObject_GetAttr(dst, s_ret)))
        goto done;
    if (ret == Py_None) {
        Py_SETREF(ret, PyObject_GetAttr(src, s_ret));
        if (!ret)
            goto done;
    }
    if (!(sts = PyObject_GetAttr(src, s_ts)) || !(dts = PyObject_GetAttr(dst, s_ts)))
        goto done;
    if ((lt = PyObject_RichCompareBool(sts, dts, Py_LT)) < 0)
        goto done;
    if (!(v = PyObject_GetAttr(dst, s_v)) || !(host = PyObject_GetAttr(src, s_host)) ||
        !(cookie = PyObject_GetAttr(src, s_cookie)))
        goto done;
    {
        PyObject *a[9] = {v, rid, lt ? sts : dts, host, s_renamed, proc, file, cookie, ret};
        res = PyObject_Vectorcall(EventT, a, 9, NULL);
    }
    goto done;
slow:
    res = PyObject_CallFunctionObjArgs(PyRenamed, src, dst, NULL);
done:
    Py_XDECREF(sf); Py_XDECREF(df); Py_XDECREF(sid); Py_XDECREF(did); Py_XDECREF(rid);
    Py_XDECREF(spath); Py_XDECREF(tmp); Py_XDECREF(file); Py_XDECREF(proc); Py_XDECREF(ret);
    Py_XDECREF(sts); Py_XDECREF(dts); Py_XDECREF(v); Py_XDECREF(host); Py_XDECREF(cookie);
    return res;
}

static PyObject *py_renamed(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "renamed(src, dst)");
        return NULL;
    }
    return renamed_c(args[0], args[1]);
}

/* add_records(out, records, ids, tss, cookies, same, partners, own, host,
 *             kind, to, other, window, quiet, token, done) -> (parked, stop)
 * As _add_records_py's loop: `stop` is the index after a pairing whose
 * partner's id is among this message's own (the rest then goes one at a
 * time, in Python), else -1. */
static PyObject *add_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 16) {
        PyErr_SetString(PyExc_TypeError, "add_records: 16 arguments");
        return NULL;
    }
    PyObject *out = args[0], *records = args[1], *ids = args[2], *tss = args[3],
             *cookies = args[4], *same = args[5], *partners = args[6], *own = args[7],
             *host = args[8], *kind = args[9], *other = args[11], *window = args[12],
             *quiet = args[13], *token = args[14], *done = args[15];
    int to = PyObject_IsTrue(args[10]);
    if (to < 0)
        return NULL;
    if (!PyList_CheckExact(out) || !PyList_CheckExact(records) || !PyList_CheckExact(ids) ||
        !PyList_CheckExact(tss) || !PyList_CheckExact(cookies) ||
        !PyDict_CheckExact(same) || !PyDict_CheckExact(partners) || !PyAnySet_Check(own) ||
        !PyList_CheckExact(done)) {
        PyErr_SetString(PyExc_TypeError, "add_records: lists, dicts and a set expected");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records), parked = 0, stop = -1;
    if (PyList_GET_SIZE(ids) != n || PyList_GET_SIZE(tss) != n ||
        PyList_GET_SIZE(cookies) != n) {
        PyErr_SetString(PyExc_ValueError, "add_records: lists of different lengths");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = PyList_GET_ITEM(records, i), *eid = PyList_GET_ITEM(ids, i),
                 *ts = PyList_GET_ITEM(tss, i), *cookie = PyList_GET_ITEM(cookies, i);
        int gt = PyObject_RichCompareBool(ts, other, Py_GT);
        if (gt < 0)
            return NULL;
        PyObject *deadline = PyNumber_Add(gt ? ts : other, window);
        if (!deadline)
            return NULL;
        PyObject *partner = PyDict_GetItemWithError(partners, cookie);
        if (!partner && PyErr_Occurred()) {
            Py_DECREF(deadline);
            return NULL;
        }
        Py_XINCREF(partner);
        /* A paired half keeps no record: the output holds what it needs. */
        PyObject *ha[7] = {partner ? Py_None : ev, host, eid, kind, deadline, quiet, token};
        PyObject *half = PyObject_Vectorcall(HalfT, ha, 7, NULL);
        Py_DECREF(deadline);
        if (!half) {
            Py_XDECREF(partner);
            return NULL;
        }
        if (!partner) {
            if (PyDict_SetItem(same, cookie, half) < 0) {
                Py_DECREF(half);
                return NULL;
            }
            Py_DECREF(half);
            parked++;
            continue;
        }
        PyObject *pid = NULL, *pev = NULL, *event = NULL, *halves = NULL,
                 *outcome = NULL;
        int ok = 0, mine = 0;
        if (PyDict_DelItem(partners, cookie) < 0 || PyList_Append(done, eid) < 0 ||
            !(pid = PyObject_GetAttr(partner, s_id)) || PyList_Append(done, pid) < 0)
            goto fail;
        PyObject *src = to ? partner : half, *dst = to ? half : partner;
        if (!(pev = PyObject_GetAttr(partner, s_event)))
            goto fail;
        if (PyDict_CheckExact(pev)) {  /* the partner took the reference path: maps */
            if (!(event = PyObject_CallFunctionObjArgs(RenamedMaps, to ? pev : ev, to ? ev : pev,
                                                       NULL)))
                goto fail;
        } else if (!(event = to ? renamed_c(pev, ev) : renamed_c(ev, pev))) {
            goto fail;
        }
        if (PyObject_SetAttr(partner, s_event, Py_None) < 0 || !(halves = PyList_New(2)))
            goto fail;
        PyList_SET_ITEM(halves, 0, Py_NewRef(src));
        PyList_SET_ITEM(halves, 1, Py_NewRef(dst));
        PyObject *oa[2] = {event, halves};
        if (!(outcome = PyObject_Vectorcall(OutcomeT, oa, 2, NULL)))
            goto fail;
        if (PyList_Append(out, outcome) < 0 || (mine = PySet_Contains(own, pid)) < 0)
            goto fail;
        ok = 1;
    fail:
        Py_XDECREF(pid); Py_XDECREF(pev); Py_XDECREF(event);
        Py_XDECREF(halves); Py_XDECREF(outcome); Py_DECREF(partner); Py_DECREF(half);
        if (!ok)
            return NULL;
        if (mine) {  /* a later half of this message may now be a duplicate */
            stop = i + 1;
            break;
        }
    }
    return Py_BuildValue("nn", parked, stop);
}

/* check_records(records, kinds, waiting, new_ids, old_ids) as _check_records:
 * None unless the records are of one kind (kinds: its index in waiting), each
 * with a cookie, none reused or waiting already, ids unique and none in
 * new_ids or old_ids (None: empty); else (k, kind, ids, tss, cookies, own ids,
 * greatest ts). */
static PyObject *check_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "check_records: 5 arguments");
        return NULL;
    }
    PyObject *records = args[0], *kinds = args[1], *waiting = args[2], *new_ids = args[3],
             *old_ids = args[4];
    if (!PyList_CheckExact(records) || !PyDict_CheckExact(kinds) ||
        !PyTuple_CheckExact(waiting) || PyTuple_GET_SIZE(waiting) != 2 ||
        (new_ids != Py_None && !PyAnySet_Check(new_ids)) ||
        (old_ids != Py_None && !PyAnySet_Check(old_ids))) {
        PyErr_SetString(PyExc_TypeError, "check_records: a list, a dict, two dicts, sets");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records);
    if (n == 0)
        Py_RETURN_NONE;
    PyObject *ids = PyList_New(n), *tss = PyList_New(n), *cookies = PyList_New(n),
             *own = PySet_New(NULL), *seen = PySet_New(NULL), *kind = NULL, *top = NULL,
             *res = NULL;
    Py_ssize_t k = -1;
    if (!ids || !tss || !cookies || !own || !seen)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i), *type, *cookie, *eid, *ts;
        int r = 0;
        if (!(type = PyObject_GetAttr(rec, s_type)))
            goto done;
        if (kind == NULL) {
            kind = type;
        } else {
            r = PyObject_RichCompareBool(type, kind, Py_EQ);
            Py_DECREF(type);
            if (r <= 0)
                goto done;  /* an error, or two kinds: None */
        }
        if (!(cookie = PyObject_GetAttr(rec, s_cookie)))
            goto done;
        PyList_SET_ITEM(cookies, i, cookie);
        if (cookie == Py_None)
            goto none;
        if (!(eid = PyObject_GetAttr(rec, s_id)))
            goto done;
        PyList_SET_ITEM(ids, i, eid);
        if (!(ts = PyObject_GetAttr(rec, s_ts)))
            goto done;
        PyList_SET_ITEM(tss, i, ts);
        if (top == NULL || (r = PyObject_RichCompareBool(ts, top, Py_GT)) > 0)
            Py_XSETREF(top, Py_NewRef(ts));
        else if (r < 0)
            goto done;
        if (PySet_Add(seen, cookie) < 0 || PySet_Add(own, eid) < 0)
            goto done;
    }
    if (PySet_GET_SIZE(seen) != n || PySet_GET_SIZE(own) != n)
        goto none;  /* a cookie or an id twice */
    {
        PyObject *index = PyDict_GetItemWithError(kinds, kind);
        if (!index) {
            if (PyErr_Occurred())
                goto done;
            goto none;
        }
        if ((k = PyLong_AsSsize_t(index)) == -1 && PyErr_Occurred())
            goto done;
        if (k < 0 || k > 1) {
            PyErr_SetString(PyExc_ValueError, "check_records: a kind's index is 0 or 1");
            goto done;
        }
    }
    PyObject *same = PyTuple_GET_ITEM(waiting, k);
    if (!PyDict_CheckExact(same)) {
        PyErr_SetString(PyExc_TypeError, "check_records: waiting holds dicts");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = PyDict_Contains(same, PyList_GET_ITEM(cookies, i));
        if (r < 0)
            goto done;
        if (r)
            goto none;
        for (int g = 0; g < 2; g++) {
            PyObject *resolved = g ? old_ids : new_ids;
            if (resolved == Py_None)
                continue;
            if ((r = PySet_Contains(resolved, PyList_GET_ITEM(ids, i))) < 0)
                goto done;
            if (r)
                goto none;
        }
    }
    res = Py_BuildValue("nOOOOOO", k, kind, ids, tss, cookies, own, top);
    goto done;
none:
    res = Py_NewRef(Py_None);
done:
    Py_XDECREF(ids); Py_XDECREF(tss); Py_XDECREF(cookies); Py_XDECREF(own);
    Py_XDECREF(seen); Py_XDECREF(kind); Py_XDECREF(top);
    return res;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "the types and helpers of pairing.py"},
    {"renamed", (PyCFunction)(void (*)(void))py_renamed, METH_FASTCALL,
     "renamed_record(src, dst)"},
    {"check_records", (PyCFunction)(void (*)(void))check_records, METH_FASTCALL,
     "a message's halves checked for the one-pass loop"},
    {"add_records", (PyCFunction)(void (*)(void))add_records, METH_FASTCALL,
     "one message's halves parked or paired"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpair", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastpair(void) {
#define INTERN(var, text) if (!(var = PyUnicode_InternFromString(text))) return NULL
    INTERN(s_type, "type"); INTERN(s_id, "id"); INTERN(s_ts, "ts"); INTERN(s_host, "host"); INTERN(s_file, "file");
    INTERN(s_path, "path"); INTERN(s_proc, "proc"); INTERN(s_ret, "ret"); INTERN(s_v, "v");
    INTERN(s_cookie, "cookie"); INTERN(s_event, "event"); INTERN(s_renamed, "renamed");
    INTERN(s_empty, ""); INTERN(s_plus, "+");
#undef INTERN
    if (!(kw_path = Py_BuildValue("(s)", "path")) ||
        !(kw_old_path = Py_BuildValue("(s)", "old_path")))
        return NULL;
    return PyModule_Create(&module);
}
