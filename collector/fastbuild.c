/* The collector's hot path in C: ring-buffer records of the common file kinds
 * -> events already encoded as msgpack maps, ready to be spliced into a batch.
 *
 * It takes exactly the records the Python builder's reference path
 * (records.decode -> EventBuilder.build_all) turns into plain events: one path,
 * or a plain rename, named by the kernel's own dentries (nothing to resolve
 * after the fact), in the collector's mount namespace. Every other record goes
 * to the Python callable it is given, in order, so ids stay in record order.
 * The layout and the kind and flag numbers come from collector/records.py when
 * a Builder is made (collector/native.py); this file holds none of them.
 * tests/test_fastbuild.py holds the two paths to byte-identical payloads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The struct formats this file reads (records.HDR, records.FILE_TAIL): a Builder
 * refuses any other, so a changed layout disables the native path, loudly. */
#define HDR_FORMAT "<QQIIIIIHH16s"
#define TAIL_FORMAT "<qQQIIIIIi4H"
#define HDR_SIZE 56
#define TAIL_SIZE 56
#define NAMES_AT (HDR_SIZE + TAIL_SIZE)
#define PCACHE_MAX 8192

/* Event types the native path makes, in the order Python hands their subjects. */
enum { T_OPEN, T_CREATE, T_MODIFY, T_CLOSE_WRITE, T_DELETE, T_ATTRIB, T_MKDIR, T_RMDIR,
       T_MOVED_FROM, T_MOVED_TO, NTYPES };
static const char *TYPE_NAMES[NTYPES] = {"open", "create", "modify", "close_write", "delete",
                                         "attrib", "mkdir", "rmdir", "moved_from", "moved_to"};

#define BUF_FIRST_CAP 256
#include "native_buf.h" /* Buf, buf_reserve */

/* The write helpers assume room was reserved: a whole event reserves its bound first. */
static inline void put(Buf *b, const void *src, size_t n) {
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static inline void put1(Buf *b, uint8_t c) { b->p[b->len++] = (char)c; }
static inline void put_be(Buf *b, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--)
        put1(b, (uint8_t)(v >> (8 * i)));
}

/* Integers in msgpack's smallest form, as msgpack-python packs them. */
static void put_uint(Buf *b, uint64_t v) {
    if (v < 0x80) put1(b, (uint8_t)v);
    else if (v < 0x100) { put1(b, 0xcc); put_be(b, v, 1); }
    else if (v < 0x10000) { put1(b, 0xcd); put_be(b, v, 2); }
    else if (v < 0x100000000ULL) { put1(b, 0xce); put_be(b, v, 4); }
    else { put1(b, 0xcf); put_be(b, v, 8); }
}
static void put_int(Buf *b, int64_t v) {
    if (v >= 0) put_uint(b, (uint64_t)v);
    else if (v >= -32) put1(b, (uint8_t)(int8_t)v);
    else if (v >= -128) { put1(b, 0xd0); put_be(b, (uint64_t)v, 1); }
    else if (v >= -32768) { put1(b, 0xd1); put_be(b, (uint64_t)v, 2); }
    else if (v >= -2147483648LL) { put1(b, 0xd2); put_be(b, (uint64_t)v, 4); }
    else { put1(b, 0xd3); put_be(b, (uint64_t)v, 8); }
}
static void put_map(Buf *b, unsigned n) { put1(b, (uint8_t)(0x80 | n)); } /* n < 16 here */
static void put_str_hdr(Buf *b, size_t n) {
    if (n < 32) put1(b, (uint8_t)(0xa0 | n));
    else if (n < 0x100) { put1(b, 0xd9); put_be(b, n, 1); }
    else if (n < 0x10000) { put1(b, 0xda); put_be(b, n, 2); }
    else { put1(b, 0xdb); put_be(b, n, 4); }
}
static void put_bin_hdr(Buf *b, size_t n) {
    if (n < 0x100) { put1(b, 0xc4); put_be(b, n, 1); }
    else if (n < 0x10000) { put1(b, 0xc5); put_be(b, n, 2); }
    else { put1(b, 0xc6); put_be(b, n, 4); }
}
static void put_key(Buf *b, const char *k) {
    size_t n = strlen(k);
    put_str_hdr(b, n);
    put(b, k, n);
}

/* Whether Python's strict UTF-8 decoder takes these bytes (no surrogates,
 * overlongs or code points past U+10FFFF). */
static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) need = 1;
        else if (c == 0xe0) { need = 2; lo = 0xa0; }
        else if (c >= 0xe1 && c <= 0xec) need = 2;
        else if (c == 0xed) { need = 2; hi = 0x9f; }
        else if (c >= 0xee && c <= 0xef) need = 2;
        else if (c == 0xf0) { need = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) need = 3;
        else if (c == 0xf4) { need = 3; hi = 0x8f; }
        else return 0;
        if (i + need >= n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80) return 0;
        i += need + 1;
    }
    return 1;
}

/* Kernel text as the codec puts it on the wire: str when it is UTF-8, else
 * bin of the bytes (what text_from_kernel's surrogateescape stands for). */
static void put_text(Buf *b, const char *s, size_t n) {
    if (valid_utf8((const uint8_t *)s, n)) put_str_hdr(b, n);
    else put_bin_hdr(b, n);
    put(b, s, n);
}

/* --- paths (collector/paths.py) ------------------------------------------ */

/* paths.fold: `src` with ".", ".." and repeated slashes folded; out holds n + 1. */
static size_t fold(const char *src, size_t n, char *out) {
    size_t o = 0, i = 0;
    while (i < n) {
        while (i < n && src[i] == '/') i++;
        size_t j = i;
        while (j < n && src[j] != '/') j++;
        size_t len = j - i;
        if (len == 0 || (len == 1 && src[i] == '.')) { i = j; continue; }
        if (len == 2 && src[i] == '.' && src[i + 1] == '.') {
            if (o > 0) {
                while (out[o - 1] != '/') o--;
                o--;
            }
        } else {
            out[o++] = '/';
            memcpy(out + o, src + i, len);
            o += len;
        }
        i = j;
    }
    if (o == 0) out[o++] = '/';
    return o;
}

/* paths.names_to_path: leaf-first NUL-terminated names -> "/a/b"; out holds n + 1. */
static size_t names_to_path(const char *names, size_t n, char *out) {
    if (n == 0) { out[0] = '/'; return 1; }
    size_t clen = names[n - 1] == '\0' ? n - 1 : n;
    size_t pos = 0, end = clen;
    out[pos++] = '/';
    for (Py_ssize_t i = (Py_ssize_t)clen - 1; i >= -1; i--) {
        if (i == -1 || names[i] == '\0') {
            memcpy(out + pos, names + i + 1, end - (size_t)(i + 1));
            pos += end - (size_t)(i + 1);
            if (i != -1) out[pos++] = '/';
            end = (size_t)i;
        }
    }
    return pos;
}

/* resolve.needs_resolution: a directory part inside the string. */
static int needs_resolution(const char *s, size_t n) {
    while (n && s[n - 1] == '/') n--;
    size_t i = 0;
    while (i < n && s[i] == '/') i++;
    return memchr(s + i, '/', n - i) != NULL;
}

static size_t user_len(const char *raw, size_t n) {
    const char *z = memchr(raw, '\0', n);
    return z ? (size_t)(z - raw) : n;
}

/* --- the builder ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    uint64_t seq;  /* the last id number given, by either path */
    PyObject *procs;  /* ProcCache's pid -> ProcInfo (borrowed lookups) */
    PyObject *proc_cb;  /* buf -> (ProcInfo | None, the proc map encoded) */
    PyObject *filter;  /* path bytes -> bool, or None */
    PyObject *pcache;  /* header bytes -> (info, encoded proc map) */
    PyObject *subjects[NTYPES];
    PyObject *truncated;  /* paths.TRUNCATED */
    Py_ssize_t filtered;
    long long host_ns;  /* -1: every mount namespace is ours */
    int kind_type[256];  /* record kind -> T_*, -1: not taken */
    int kind_rename, kind_close_write;
    unsigned f_path_trunc, f_path2_trunc, f_fd_gone, f_no_ret, f_exchange, f_known;
    unsigned rename_whiteout, version;
    uint32_t *noted;
    Py_ssize_t n_noted;
    Buf out, scratch;
    char id_prefix[256];
    size_t id_prefix_len;
    Buf host;  /* "host" and its value, encoded */
    /* The last proc section used: a thread's records come in runs. */
    char last_key[44];
    PyObject *last_info, *last_packed;
    /* tid -> its last file record (bytes), oldest first: what a repeat record
     * (the kernel coalesced N more like it) stands on. EventBuilder's own dict,
     * kept here in record order, by both paths. */
    PyObject *last;
    Py_ssize_t last_max;
    PyObject *last_tid;  /* the tid remembered last (an int), at the dict's end */
    unsigned not_file[4];  /* exec, exit, fork, repeat: kinds not remembered */
} Builder;

static void Builder_dealloc(Builder *self) {
    Py_XDECREF(self->procs);
    Py_XDECREF(self->proc_cb);
    Py_XDECREF(self->filter);
    Py_XDECREF(self->pcache);
    Py_XDECREF(self->truncated);
    Py_XDECREF(self->last_info);
    Py_XDECREF(self->last_packed);
    Py_XDECREF(self->last);
    Py_XDECREF(self->last_tid);
    for (int i = 0; i < NTYPES; i++) Py_XDECREF(self->subjects[i]);
    PyMem_Free(self->noted);
    PyMem_Free(self->out.p);
    PyMem_Free(self->scratch.p);
    PyMem_Free(self->host.p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int get_uint(PyObject *d, const char *key, unsigned *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "layout has no %s", key);
        return -1;
    }
    unsigned long x = PyLong_AsUnsignedLong(v);
    if (PyErr_Occurred()) return -1;
    *out = (unsigned)x;
    return 0;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Builder(layout: dict, host, instance, subjects: tuple, procs, proc_cb, filter, host_ns) */
static int Builder_init(Builder *self, PyObject *args, PyObject *kw) {
    PyObject *layout, *subjects, *procs, *proc_cb, *filter;
    const char *host, *instance;
    Py_ssize_t host_len, instance_len;
    long long host_ns;
    if (!PyArg_ParseTuple(args, "O!s#s#O!O!OOL", &PyDict_Type, &layout, &host, &host_len,
                          &instance, &instance_len, &PyTuple_Type, &subjects, &PyDict_Type,
                          &procs, &proc_cb, &filter, &host_ns))
        return -1;
    PyObject *hf = PyDict_GetItemString(layout, "hdr_format");
    PyObject *tf = PyDict_GetItemString(layout, "tail_format");
    if (hf == NULL || tf == NULL || !PyUnicode_Check(hf) || !PyUnicode_Check(tf) ||
        strcmp(PyUnicode_AsUTF8(hf), HDR_FORMAT) || strcmp(PyUnicode_AsUTF8(tf), TAIL_FORMAT)) {
        PyErr_SetString(PyExc_ValueError, "record layout differs from the one fastbuild.c reads "
                                          "(" HDR_FORMAT ", " TAIL_FORMAT ")");
        return -1;
    }
    if (PyTuple_GET_SIZE(subjects) != NTYPES) {
        PyErr_SetString(PyExc_ValueError, "one subject per native event type");
        return -1;
    }
    for (int i = 0; i < 256; i++) self->kind_type[i] = -1;
    PyObject *kinds = PyDict_GetItemString(layout, "kinds");  /* type name -> kind */
    if (kinds == NULL || !PyDict_Check(kinds)) {
        PyErr_SetString(PyExc_ValueError, "layout has no kinds");
        return -1;
    }
    for (int t = 0; t <= T_RMDIR; t++) {
        unsigned k;
        if (get_uint(kinds, TYPE_NAMES[t], &k) < 0) return -1;
        if (k > 255) { PyErr_SetString(PyExc_ValueError, "kind over 255"); return -1; }
        self->kind_type[k] = t;
    }
    unsigned kr, kc;
    if (get_uint(kinds, "rename", &kr) < 0 || get_uint(kinds, "close_write", &kc) < 0) return -1;
    self->kind_rename = (int)kr;
    self->kind_close_write = (int)kc;
    if (get_uint(layout, "F_PATH_TRUNC", &self->f_path_trunc) < 0 ||
        get_uint(layout, "F_PATH2_TRUNC", &self->f_path2_trunc) < 0 ||
        get_uint(layout, "F_FD_GONE", &self->f_fd_gone) < 0 ||
        get_uint(layout, "F_NO_RET", &self->f_no_ret) < 0 ||
        get_uint(layout, "F_EXCHANGE", &self->f_exchange) < 0 ||
        get_uint(layout, "known_flags", &self->f_known) < 0 ||
        get_uint(layout, "RENAME_WHITEOUT", &self->rename_whiteout) < 0 ||
        get_uint(layout, "version", &self->version) < 0)
        return -1;
    PyObject *last = PyDict_GetItemString(layout, "last");
    PyObject *not_file = PyDict_GetItemString(layout, "not_file_kinds");
    unsigned last_max;
    if (last == NULL || !PyDict_Check(last) || not_file == NULL || !PyTuple_Check(not_file) ||
        PyTuple_GET_SIZE(not_file) != 4 || get_uint(layout, "last_max", &last_max) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "layout has no last, "
                                               "last_max or not_file_kinds");
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        self->not_file[i] = (unsigned)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(not_file, i));
        if (PyErr_Occurred()) return -1;
    }
    Py_INCREF(last);
    self->last = last;
    self->last_max = (Py_ssize_t)last_max;
    PyObject *noted = PyDict_GetItemString(layout, "noted_nrs");
    PyObject *seq = noted ? PySequence_Fast(noted, "noted_nrs") : NULL;
    if (seq == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "layout has no noted_nrs");
        return -1;
    }
    self->n_noted = PySequence_Fast_GET_SIZE(seq);
    self->noted = PyMem_Malloc(sizeof(uint32_t) * (size_t)(self->n_noted + 1));
    for (Py_ssize_t i = 0; i < self->n_noted; i++) {
        self->noted[i] = (uint32_t)PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, i));
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) return -1;
    qsort(self->noted, (size_t)self->n_noted, sizeof(uint32_t), cmp_u32);
    self->truncated = PyDict_GetItemString(layout, "truncated");
    if (self->truncated == NULL || !PyBytes_Check(self->truncated)) {
        PyErr_SetString(PyExc_ValueError, "layout has no truncated marker");
        return -1;
    }
    Py_INCREF(self->truncated);
    for (int i = 0; i < NTYPES; i++) {
        self->subjects[i] = PyTuple_GET_ITEM(subjects, i);
        Py_INCREF(self->subjects[i]);
    }
    if ((size_t)instance_len + 2 > sizeof self->id_prefix) {
        PyErr_SetString(PyExc_ValueError, "instance too long");
        return -1;
    }
    memcpy(self->id_prefix, instance, (size_t)instance_len);
    self->id_prefix[instance_len] = '-';
    self->id_prefix_len = (size_t)instance_len + 1;
    if (buf_reserve(&self->host, (size_t)host_len + 16) < 0) return -1;
    put_key(&self->host, "host");
    put_str_hdr(&self->host, (size_t)host_len);
    put(&self->host, host, (size_t)host_len);
    Py_INCREF(procs);
    self->procs = procs;
    Py_INCREF(proc_cb);
    self->proc_cb = proc_cb;
    Py_INCREF(filter);
    self->filter = filter;
    self->pcache = PyDict_New();
    self->host_ns = host_ns;
    return self->pcache ? 0 : -1;
}

static int is_noted(Builder *self, uint32_t nr) {
    return bsearch(&nr, self->noted, (size_t)self->n_noted, sizeof(uint32_t), cmp_u32) != NULL;
}

static inline uint64_t rd(const char *p, int n) {
    uint64_t v = 0;
    memcpy(&v, p, (size_t)n); /* little endian: the only byte order BPF records come in here */
    return v;
}

/* A resolved path in self->scratch at [off, off+len), or absent. */
typedef struct {
    size_t off, len;
    int present;
} Path;

/* records._resolve over a record's segments; walked/name point into the record.
 * has_name: a user string was given (its bytes up to the NUL are the name). */
static int resolve(Builder *self, const char *walked, size_t wlen, const char *raw, size_t rlen,
                   int has_name, int gone, Path *out) {
    Buf *s = &self->scratch;
    out->present = 1;
    size_t nlen = has_name ? user_len(raw, rlen) : 0;
    if (buf_reserve(s, 2 * (wlen + nlen) + 8) < 0) return -1;
    char *tmp = s->p + s->len;
    if (!has_name) {
        if (gone && !wlen) { out->present = 0; return 0; }
        out->off = s->len;
        out->len = names_to_path(walked, wlen, tmp);
        s->len += out->len;
        return 0;
    }
    if (nlen && raw[0] == '/') {
        out->off = s->len;
        out->len = fold(raw, nlen, tmp);
        s->len += out->len;
        return 0;
    }
    if (gone) { out->present = 0; return 0; }
    /* fold(names_to_path(walked) + "/" + name): the joined string after the folded one */
    char *joined = tmp + wlen + nlen + 3;
    size_t j = names_to_path(walked, wlen, joined);
    joined[j++] = '/';
    memcpy(joined + j, raw, nlen);
    j += nlen;
    out->off = s->len;
    out->len = fold(joined, j, tmp);
    s->len += out->len;
    return 0;
}

static int mark_truncated(Builder *self, Path *p) {
    Py_ssize_t tn = PyBytes_GET_SIZE(self->truncated);
    const char *t = PyBytes_AS_STRING(self->truncated);
    if (p->len >= (size_t)tn && memcmp(self->scratch.p + p->off, t, (size_t)tn) == 0) return 0;
    if (buf_reserve(&self->scratch, p->len + (size_t)tn) < 0) return -1;
    char *dst = self->scratch.p + self->scratch.len;
    memcpy(dst, t, (size_t)tn);
    memcpy(dst + tn, self->scratch.p + p->off, p->len);
    p->off = self->scratch.len;
    p->len += (size_t)tn;
    self->scratch.len += p->len;
    return 0;
}

/* The user-space path filter: 1 wanted, 0 not, -1 error. */
static int wanted(Builder *self, const Path *a, const Path *b) {
    const Path *ps[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        if (ps[i] == NULL || !ps[i]->present) continue;
        PyObject *arg = PyBytes_FromStringAndSize(self->scratch.p + ps[i]->off,
                                                  (Py_ssize_t)ps[i]->len);
        if (arg == NULL) return -1;
        PyObject *r = PyObject_CallOneArg(self->filter, arg);
        Py_DECREF(arg);
        if (r == NULL) return -1;
        int yes = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (yes) return yes; /* 1, or -1 on error */
    }
    self->filtered++;
    return 0;
}

/* The proc section of a record's events, encoded (a borrowed reference to a
 * bytes object the builder keeps), or NULL on error. */
static PyObject *proc_section(Builder *self, PyObject *rec, const char *buf, uint32_t pid) {
    char key[44];
    memcpy(key, buf + 8, 28);  /* cgroup, pid, tid, ppid, uid, gid */
    memcpy(key + 28, buf + 40, 16);  /* comm */
    PyObject *pidobj = PyLong_FromUnsignedLong(pid);
    if (pidobj == NULL) return NULL;
    PyObject *info = PyDict_GetItemWithError(self->procs, pidobj);  /* borrowed */
    Py_DECREF(pidobj);
    if (info == NULL && PyErr_Occurred()) return NULL;
    if (info != NULL && info == self->last_info && memcmp(key, self->last_key, 44) == 0)
        return self->last_packed;
    PyObject *kobj = PyBytes_FromStringAndSize(key, 44);
    if (kobj == NULL) return NULL;
    PyObject *entry = PyDict_GetItemWithError(self->pcache, kobj);  /* borrowed */
    if (entry == NULL && PyErr_Occurred()) { Py_DECREF(kobj); return NULL; }
    if (entry == NULL || info == NULL || PyTuple_GET_ITEM(entry, 0) != info) {
        /* Unknown here: the Python builder looks the process up (maybe in /proc). */
        PyObject *got = PyObject_CallOneArg(self->proc_cb, rec);
        if (got == NULL) { Py_DECREF(kobj); return NULL; }
        if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(got, 1))) {
            Py_DECREF(got);
            Py_DECREF(kobj);
            PyErr_SetString(PyExc_TypeError, "proc callback must return (info, bytes)");
            return NULL;
        }
        if (PyDict_GET_SIZE(self->pcache) >= PCACHE_MAX) PyDict_Clear(self->pcache);
        int bad = PyDict_SetItem(self->pcache, kobj, got);
        Py_DECREF(got);  /* the cache holds it */
        if (bad) { Py_DECREF(kobj); return NULL; }
        entry = got;
    }
    Py_DECREF(kobj);
    PyObject *e_info = PyTuple_GET_ITEM(entry, 0), *e_packed = PyTuple_GET_ITEM(entry, 1);
    Py_INCREF(e_info);
    Py_XSETREF(self->last_info, e_info);
    Py_INCREF(e_packed);
    Py_XSETREF(self->last_packed, e_packed);
    memcpy(self->last_key, key, 44);
    return e_packed;
}

static inline uint64_t encode_dev(uint32_t kdev) {
    uint64_t major = kdev >> 20, minor = kdev & 0xFFFFF;
    return (minor & 0xFF) | (major << 8) | ((minor & ~(uint64_t)0xFF) << 12);
}

typedef struct {
    const char *buf;
    __int128 ts;
    int has_ret;
    int64_t ret;
    uint64_t ino;
    uint32_t dev, mnt_ns, oflags, mode;
    PyObject *proc;
} Common;

/* One event, encoded, appended to `list` as (subject, bytes). */
static int emit(Builder *self, PyObject *list, const Common *c, int type, const Path *path,
                int truncated, int has_cookie, uint64_t cookie) {
    Buf *b = &self->out;
    b->len = 0;
    Py_ssize_t plen = PyBytes_GET_SIZE(c->proc);
    if (buf_reserve(b, 256 + (size_t)plen + (path->present ? path->len : 0)) < 0) return -1;
    put_map(b, 7 + (unsigned)c->has_ret + (unsigned)has_cookie);
    put_key(b, "v");
    put_uint(b, self->version);
    put_key(b, "id");
    char num[24];  /* the id number in decimal, written from the end */
    int nd = 0;
    for (uint64_t v = ++self->seq; v || !nd; v /= 10)
        num[sizeof num - 1 - nd++] = (char)('0' + v % 10);
    put_str_hdr(b, self->id_prefix_len + (size_t)nd);
    put(b, self->id_prefix, self->id_prefix_len);
    put(b, num + sizeof num - nd, (size_t)nd);
    put_key(b, "ts");
    if (c->ts >= 0) put_uint(b, (uint64_t)c->ts);
    else put_int(b, (int64_t)c->ts);
    put(b, self->host.p, self->host.len);
    put_key(b, "type");
    put_key(b, TYPE_NAMES[type]);
    put_key(b, "proc");
    put(b, PyBytes_AS_STRING(c->proc), (size_t)plen);
    put_key(b, "file");
    int with_flags = type == T_OPEN || type == T_CREATE;
    int with_mode = c->mode && (type == T_CREATE || type == T_MKDIR || type == T_ATTRIB);
    put_map(b, 1 + (unsigned)path->present + (unsigned)(truncated != 0) + (c->ino ? 2u : 0u) +
                   (unsigned)with_flags + (unsigned)with_mode);
    put_key(b, "mnt_ns");
    put_uint(b, c->mnt_ns);
    if (path->present) {
        put_key(b, "path");
        put_text(b, self->scratch.p + path->off, path->len);
    }
    if (truncated) {
        put_key(b, "path_truncated");
        put1(b, 0xc3);
    }
    if (c->ino) {
        put_key(b, "inode");
        put_uint(b, c->ino);
        put_key(b, "dev");
        put_uint(b, encode_dev(c->dev));
    }
    if (with_flags) {
        put_key(b, "flags");
        put_uint(b, c->oflags);
    }
    if (with_mode) {
        put_key(b, "mode");
        put_uint(b, c->mode & 07777);
    }
    if (c->has_ret) {
        put_key(b, "ret");
        put_int(b, c->ret);
    }
    if (has_cookie) {
        put_key(b, "cookie");
        put_uint(b, cookie);
    }
    PyObject *data = PyBytes_FromStringAndSize(b->p, (Py_ssize_t)b->len);
    if (data == NULL) return -1;
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) { Py_DECREF(data); return -1; }
    Py_INCREF(self->subjects[type]);
    PyTuple_SET_ITEM(pair, 0, self->subjects[type]);
    PyTuple_SET_ITEM(pair, 1, data);
    int r = PyList_Append(list, pair);
    Py_DECREF(pair);
    return r;
}

/* 1: built into `list`; 0: not a record this path takes; -1: error. */
static int build_one(Builder *self, PyObject *list, PyObject *rec, long long offset) {
    const char *buf = PyBytes_AS_STRING(rec);
    size_t n = (size_t)PyBytes_GET_SIZE(rec);
    if (n < NAMES_AT) return 0;
    unsigned kind = (unsigned)rd(buf + 36, 2), flags = (unsigned)rd(buf + 38, 2);
    int type = kind < 256 ? self->kind_type[kind] : -1;
    int rename = (int)kind == self->kind_rename;
    /* A flag it does not know the meaning of (what closed a file, O_TMPFILE,
     * io_uring, any new one): the Python builder's. */
    if ((type < 0 && (!rename || flags & self->f_exchange)) || flags & ~self->f_known) return 0;
    const char *t = buf + HDR_SIZE;
    uint32_t nr = (uint32_t)rd(t + 32, 4), oflags = (uint32_t)rd(t + 36, 4);
    if (is_noted(self, nr) || (rename && oflags & self->rename_whiteout)) return 0;
    size_t s0 = rd(t + 48, 2), s1 = rd(t + 50, 2), s2 = rd(t + 52, 2), s3 = rd(t + 54, 2);
    if (NAMES_AT + s0 + s1 + s2 + s3 > n || (!rename && (s2 || s3))) return 0;
    uint32_t mnt_ns = (uint32_t)rd(t + 28, 4);
    if (self->host_ns >= 0 && (long long)mnt_ns != self->host_ns) return 0;
    const char *w0 = buf + NAMES_AT, *n1 = w0 + s0, *w2 = n1 + s1, *n3 = w2 + s2;
    int gone = (flags & self->f_fd_gone) != 0;
    /* A name with a directory part is resolved again after the fact: Python does that. */
    if (s1 && !(flags & self->f_path_trunc)) {
        size_t ul = user_len(n1, s1);
        if (needs_resolution(n1, ul) && !(gone && !(ul && n1[0] == '/'))) return 0;
    }
    if (s3 && !(flags & self->f_path2_trunc)) {
        size_t ul = user_len(n3, s3);
        if (needs_resolution(n3, ul)) return 0;
    }
    Common c;
    uint64_t cookie = rd(t + 8, 8);
    if (rename && cookie >> 63) return 0; /* cookie << 1 does not fit: Python refuses it */
    c.ts = (__int128)rd(buf, 8) + offset;
    if (c.ts > (__int128)UINT64_MAX || c.ts < (__int128)INT64_MIN) return 0;
    self->scratch.len = 0;
    Path p1 = {0, 0, 0}, p2 = {0, 0, 0};
    if (!s1 && !s0 && !gone && (int)kind != self->kind_close_write) {
        if (!(flags & self->f_path_trunc)) {
            if (buf_reserve(&self->scratch, 1) < 0) return -1;
            self->scratch.p[0] = '/';
            self->scratch.len = 1;
            p1.present = 1;
            p1.len = 1;
        }
    } else if (resolve(self, w0, s0, n1, s1, s1 != 0, gone, &p1) < 0) {
        return -1;
    }
    if (p1.present && flags & self->f_path_trunc && mark_truncated(self, &p1) < 0) return -1;
    if (rename && (s2 || s3)) {
        if (resolve(self, w2, s2, s3 ? n3 : "\0", s3 ? s3 : 1, 1, 0, &p2) < 0) return -1;
        if (flags & self->f_path2_trunc && mark_truncated(self, &p2) < 0) return -1;
    }
    if (self->filter != Py_None) {
        int w = wanted(self, &p1, rename ? &p2 : NULL);
        if (w <= 0) return w < 0 ? -1 : 1;
    }
    c.buf = buf;
    c.proc = proc_section(self, rec, buf, (uint32_t)rd(buf + 16, 4));
    if (c.proc == NULL) return -1;
    c.has_ret = !(flags & self->f_no_ret);
    c.ret = (int64_t)rd(t, 8);
    c.ino = rd(t + 16, 8);
    c.dev = (uint32_t)rd(t + 24, 4);
    c.mnt_ns = mnt_ns;
    c.oflags = oflags;
    c.mode = (uint32_t)rd(t + 40, 4);
    int trunc1 = (flags & self->f_path_trunc) || !p1.present;
    if (!rename) return emit(self, list, &c, type, &p1, trunc1, 0, 0) < 0 ? -1 : 1;
    if (emit(self, list, &c, T_MOVED_FROM, &p1, trunc1, 1, cookie << 1) < 0) return -1;
    int trunc2 = (flags & self->f_path2_trunc) != 0;
    return emit(self, list, &c, T_MOVED_TO, &p2, trunc2, 1, cookie << 1) < 0 ? -1 : 1;
}

/* Keeps a file record as its thread's last (re-inserted: the dict's order is
 * recency; the oldest goes past last_max), as EventBuilder._remember does. */
static int remember(Builder *self, PyObject *rec) {
    const char *buf = PyBytes_AS_STRING(rec);
    if (PyBytes_GET_SIZE(rec) < HDR_SIZE) return 0;
    unsigned kind = (unsigned)rd(buf + 36, 2);
    for (int i = 0; i < 4; i++)
        if (kind == self->not_file[i]) return 0;
    unsigned long t = (unsigned long)rd(buf + 20, 4);
    /* A thread's records come in runs: its key is the dict's last already. */
    if (self->last_tid != NULL && PyLong_AsUnsignedLong(self->last_tid) == t)
        return PyDict_SetItem(self->last, self->last_tid, rec);
    PyObject *tid = PyLong_FromUnsignedLong(t);
    if (tid == NULL) return -1;
    int had = PyDict_Contains(self->last, tid);
    if (had < 0 || (had && PyDict_DelItem(self->last, tid) < 0)) goto fail;
    if (!had && PyDict_GET_SIZE(self->last) >= self->last_max) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        if (PyDict_Next(self->last, &pos, &k, &v)) {
            Py_INCREF(k);
            int bad = PyDict_DelItem(self->last, k);
            Py_DECREF(k);
            if (bad) goto fail;
        }
    }
    int r = PyDict_SetItem(self->last, tid, rec);
    Py_XSETREF(self->last_tid, tid);
    return r;
fail:
    Py_DECREF(tid);
    return -1;
}

static PyObject *Builder_drain(Builder *self, PyObject *args) {
    PyObject *records, *fallback;
    long long offset;
    if (!PyArg_ParseTuple(args, "O!LO", &PyList_Type, &records, &offset, &fallback)) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(records);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        int r = PyBytes_CheckExact(rec) ? build_one(self, out, rec, offset) : 0;
        if (r < 0) goto fail;
        /* Before a fallback: a repeat record (the Python builder's) finds its
         * base here, the record itself is not one. */
        if (PyBytes_CheckExact(rec) && remember(self, rec) < 0) goto fail;
        if (r == 0) {
            PyObject *evs = PyObject_CallOneArg(fallback, rec);
            if (evs == NULL) goto fail;
            Py_ssize_t at = PyList_GET_SIZE(out);
            int bad = PyList_SetSlice(out, at, at, evs);
            Py_DECREF(evs);
            if (bad) goto fail;
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *Builder_next(Builder *self) {
    return PyLong_FromUnsignedLongLong(++self->seq);
}

static PyObject *Builder_get_filtered(Builder *self, void *closure) {
    return PyLong_FromSsize_t(self->filtered);
}

static PyMethodDef Builder_methods[] = {
    {"drain", (PyCFunction)Builder_drain, METH_VARARGS,
     "drain(records, clock_offset, fallback) -> [(subject, event)]: the events of a list of "
     "records, in order; the common file records as encoded maps (bytes), every other "
     "record through fallback(record) -> [(subject, event)]."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Builder_getset[] = {
    {"filtered", (getter)Builder_get_filtered, NULL, "events the path filter refused here", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "snoopbus.collector._fastbuild.Builder",
    .tp_basicsize = sizeof(Builder),
    .tp_dealloc = (destructor)Builder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Records -> encoded events; also the id counter both paths number events from.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Builder_next,
    .tp_methods = Builder_methods,
    .tp_getset = Builder_getset,
    .tp_init = (initproc)Builder_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastbuild",
    "Common file records -> msgpack-encoded events (collector/fastbuild.c).", -1, NULL,
};

PyMODINIT_FUNC PyInit__fastbuild(void) {
    if (PyType_Ready(&BuilderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
