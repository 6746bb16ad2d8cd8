/* The archive's hot path in C: msgpack event payloads -> Arrow column buffers.
 *
 * A fetched batch's payloads are decoded in one call, every event straight
 * into the buffers of its columns (validity, values, offsets), with no
 * Python object per event but its id. It takes only what the reference path
 * (proto/fastpath.py's decode, then columns.records_table) turns into rows
 * unchanged: every key known and of its exact wire type, text valid UTF-8,
 * ints that fit their column, no nil, no key twice; and, per message, one
 * host, one type and one UTC day. Any other message is left out (its span is
 * None) and goes through the reference path. The columns, their kinds and
 * the required keys come from Python (consumers/archive/native.py); this file
 * holds none of them. tests/consumers/archive/test_archive_native.py holds the
 * two paths to identical tables.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { K_INT, K_UINT, K_TEXT, K_TEXTS, K_BOOL };
enum { W_TOP, W_PROC, W_FILE, NWITHIN };
/* Top-level keys with checks of their own (their column index, or -1). */
enum { R_V, R_ID, R_TS, R_HOST, R_TYPE, NREQ };
#define MAXCOLS 64
#define MAXTYPES 32
#define SLOTS 256 /* per map: a key's hash -> its column + 1 */

#define BUF_FIRST_CAP 1024
#include "native_buf.h" /* Buf, buf_reserve */

typedef struct {
    int kind, within;
    const char *key; /* borrowed from `keys` */
    Py_ssize_t keylen;
    Buf valid;  /* one byte per row, packed at the end */
    Buf data;   /* int64/uint64 values; bool bytes; int32 offsets (text, list) */
    Buf child;  /* texts: the items' int32 offsets */
    Buf chars;  /* text bytes */
    int32_t nchild; /* texts: items so far */
    size_t nulls;
    size_t n; /* rows filled; absent values are padded with nulls when a later row comes */
} Col;

typedef struct {
    PyObject_HEAD
    int ncols;
    Col cols[MAXCOLS];
    int req[NREQ];
    int sub[NWITHIN]; /* the top-level key naming each map ("proc", "file"): unused for top */
    PyObject *keys; /* keeps the key strings alive */
    PyObject *subkeys;
    const char *subname[NWITHIN];
    Py_ssize_t sublen[NWITHIN];
    uint8_t slots[NWITHIN][SLOTS];
    int ntypes;
    const char *types[MAXTYPES];
    Py_ssize_t typelen[MAXTYPES];
    PyObject *typelist;
    long long day_ns;
    Py_ssize_t max_events, max_bytes;
    size_t rows; /* rows of the messages taken */
    size_t row;  /* the row being decoded */
} Decoder;

/* -- reading msgpack ---------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
} Rd;

static inline int rd_need(Rd *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static inline uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* A container header: its length, or -1 if the next item is not one of `base` (fix), `b16`, `b32`. */
static long long rd_len(Rd *r, uint8_t fixbase, uint8_t fixmask, uint8_t b16, uint8_t b32) {
    if (!rd_need(r, 1))
        return -1;
    uint8_t c = *r->p;
    if ((c & ~fixmask) == fixbase) {
        r->p++;
        return c & fixmask;
    }
    if (c == b16 && rd_need(r, 3)) {
        long long n = (long long)be(r->p + 1, 2);
        r->p += 3;
        return n;
    }
    if (c == b32 && rd_need(r, 5)) {
        long long n = (long long)be(r->p + 1, 4);
        r->p += 5;
        return n;
    }
    return -1;
}

static inline long long rd_map(Rd *r) { return rd_len(r, 0x80, 0x0f, 0xde, 0xdf); }
static inline long long rd_array(Rd *r) { return rd_len(r, 0x90, 0x0f, 0xdc, 0xdd); }

/* A str (never bin): its bytes, or NULL. */
static const uint8_t *rd_str(Rd *r, size_t *len) {
    if (!rd_need(r, 1))
        return NULL;
    uint8_t c = *r->p;
    size_t n, h;
    if ((c & 0xe0) == 0xa0) {
        n = c & 0x1f;
        h = 1;
    } else if (c == 0xd9 && rd_need(r, 2)) {
        n = r->p[1];
        h = 2;
    } else if (c == 0xda && rd_need(r, 3)) {
        n = be(r->p + 1, 2);
        h = 3;
    } else if (c == 0xdb && rd_need(r, 5)) {
        n = be(r->p + 1, 4);
        h = 5;
    } else {
        return NULL;
    }
    if (!rd_need(r, h + n))
        return NULL;
    const uint8_t *s = r->p + h;
    r->p += h + n;
    *len = n;
    return s;
}

/* An int: 0 and *v (as signed if *neg) on success; -1 if the item is no int. */
static int rd_int(Rd *r, uint64_t *v, int *neg) {
    if (!rd_need(r, 1))
        return -1;
    uint8_t c = *r->p;
    int64_t s;
    *neg = 0;
    if (c <= 0x7f) {
        *v = c;
        r->p++;
        return 0;
    }
    if (c >= 0xe0) {
        s = (int8_t)c;
        r->p++;
        goto signed_;
    }
    static const int widths[] = {1, 2, 4, 8};
    if (c >= 0xcc && c <= 0xcf) {
        int w = widths[c - 0xcc];
        if (!rd_need(r, 1 + w))
            return -1;
        *v = be(r->p + 1, w);
        r->p += 1 + w;
        return 0;
    }
    if (c >= 0xd0 && c <= 0xd3) {
        int w = widths[c - 0xd0];
        if (!rd_need(r, 1 + w))
            return -1;
        uint64_t u = be(r->p + 1, w);
        switch (w) {
        case 1: s = (int8_t)u; break;
        case 2: s = (int16_t)u; break;
        case 4: s = (int32_t)u; break;
        default: s = (int64_t)u;
        }
        r->p += 1 + w;
        goto signed_;
    }
    return -1;
signed_:
    if (s >= 0) {
        *v = (uint64_t)s;
        return 0;
    }
    *neg = 1;
    *v = (uint64_t)s;
    return 0;
}

/* Strict UTF-8, as Python's decoder: no overlongs, no surrogates, <= U+10FFFF. */
static int utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            if (i + 1 >= n || (s[i + 1] & 0xc0) != 0x80)
                return 0;
            i += 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            if (i + 2 >= n)
                return 0;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80)
                return 0;
            if (c == 0xe0 && c1 < 0xa0)
                return 0;
            if (c == 0xed && c1 >= 0xa0)
                return 0; /* a surrogate */
            i += 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            if (i + 3 >= n)
                return 0;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 || (s[i + 3] & 0xc0) != 0x80)
                return 0;
            if (c == 0xf0 && c1 < 0x90)
                return 0;
            if (c == 0xf4 && c1 >= 0x90)
                return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* -- building columns ---------------------------------------------------- */

typedef struct {
    size_t valid, data, child, chars, nulls, n;
    int32_t nchild;
} Mark;

static void mark_all(Decoder *d, Mark *m) {
    for (int i = 0; i < d->ncols; i++) {
        Col *c = &d->cols[i];
        m[i] = (Mark){c->valid.len, c->data.len, c->child.len, c->chars.len, c->nulls, c->n,
                      c->nchild};
    }
}

static void rewind_all(Decoder *d, const Mark *m) {
    for (int i = 0; i < d->ncols; i++) {
        Col *c = &d->cols[i];
        c->valid.len = m[i].valid;
        c->data.len = m[i].data;
        c->child.len = m[i].child;
        c->chars.len = m[i].chars;
        c->nulls = m[i].nulls;
        c->n = m[i].n;
        c->nchild = m[i].nchild;
    }
}

/* Nulls up to row `upto` (exclusive): the rows where this column's key was absent. */
static int pad(Col *c, size_t upto) {
    if (c->n >= upto)
        return 0;
    size_t k = upto - c->n;
    if (buf_reserve(&c->valid, k) < 0)
        return -1;
    memset(c->valid.p + c->valid.len, 0, k);
    c->valid.len += k;
    c->nulls += k;
    c->n = upto;
    if (c->kind == K_INT || c->kind == K_UINT || c->kind == K_BOOL) {
        size_t w = c->kind == K_BOOL ? 1 : 8;
        if (buf_reserve(&c->data, k * w) < 0)
            return -1;
        memset(c->data.p + c->data.len, 0, k * w);
        c->data.len += k * w;
    } else { /* the next offsets repeat the last */
        if (buf_reserve(&c->data, k * 4) < 0)
            return -1;
        int32_t at = c->kind == K_TEXT ? (int32_t)c->chars.len : c->nchild;
        for (size_t i = 0; i < k; i++)
            memcpy(c->data.p + c->data.len + 4 * i, &at, 4);
        c->data.len += k * 4;
    }
    return 0;
}

/* The value of row `row` comes next: nulls before it, then its validity. */
static inline int put_valid(Col *c, size_t row) {
    if (pad(c, row) < 0 || buf_reserve(&c->valid, 1) < 0)
        return -1;
    c->valid.p[c->valid.len++] = 1;
    c->n = row + 1;
    return 0;
}

static int put_text(Buf *offsets, Buf *chars, const uint8_t *s, size_t n) {
    if (buf_reserve(chars, n) < 0 || buf_reserve(offsets, 4) < 0)
        return -1;
    memcpy(chars->p + chars->len, s, n);
    chars->len += n;
    int32_t at = (int32_t)chars->len;
    memcpy(offsets->p + offsets->len, &at, 4);
    offsets->len += 4;
    return 0;
}

/* Outcome of one value or event: taken, not for this path (the message goes
 * to the reference path), or a Python error. */
enum { OK = 0, SKIP = 1, ERR = -1 };

static inline unsigned hash(const uint8_t *k, size_t n) {
    return (unsigned)(n * 31 + (n ? k[0] * 7u + k[n - 1] * 13u + k[n / 2] : 0)) % SLOTS;
}

static int find(Decoder *d, int within, const uint8_t *k, size_t n) {
    const uint8_t *slots = d->slots[within];
    for (unsigned h = hash(k, n);; h = (h + 1) % SLOTS) {
        int i = slots[h] - 1;
        if (i < 0)
            return -1;
        Col *c = &d->cols[i];
        if ((size_t)c->keylen == n && memcmp(c->key, k, n) == 0)
            return i;
    }
}

static int value(Decoder *d, Col *c, Rd *r) {
    uint64_t v;
    int neg;
    size_t n;
    const uint8_t *s;
    switch (c->kind) {
    case K_INT:
    case K_UINT:
        if (rd_int(r, &v, &neg) < 0)
            return SKIP;
        if (c->kind == K_INT && !neg && v > (uint64_t)INT64_MAX)
            return SKIP; /* fits no int64 column: the reference path says so */
        if (c->kind == K_UINT && neg)
            return SKIP;
        if (put_valid(c, d->row) < 0 || buf_reserve(&c->data, 8) < 0)
            return ERR;
        memcpy(c->data.p + c->data.len, &v, 8);
        c->data.len += 8;
        return OK;
    case K_BOOL:
        if (!rd_need(r, 1) || (*r->p != 0xc2 && *r->p != 0xc3))
            return SKIP;
        if (put_valid(c, d->row) < 0 || buf_reserve(&c->data, 1) < 0)
            return ERR;
        c->data.p[c->data.len++] = *r->p == 0xc3;
        r->p++;
        return OK;
    case K_TEXT:
        s = rd_str(r, &n);
        if (s == NULL || !utf8_ok(s, n))
            return SKIP;
        if (put_valid(c, d->row) < 0 || put_text(&c->data, &c->chars, s, n) < 0)
            return ERR;
        return OK;
    default: { /* K_TEXTS */
        long long items = rd_array(r);
        if (items < 0)
            return SKIP;
        if (pad(c, d->row) < 0) /* before the items: the nulls' offsets are the last list's end */
            return ERR;
        for (long long i = 0; i < items; i++) {
            s = rd_str(r, &n);
            if (s == NULL || !utf8_ok(s, n))
                return SKIP;
            if (put_text(&c->child, &c->chars, s, n) < 0)
                return ERR;
        }
        c->nchild += (int32_t)items;
        if (put_valid(c, d->row) < 0 || buf_reserve(&c->data, 4) < 0)
            return ERR;
        memcpy(c->data.p + c->data.len, &c->nchild, 4);
        c->data.len += 4;
        return OK;
    }
    }
}

/* What one event said of the checks made per message. */
typedef struct {
    const uint8_t *host, *type;
    size_t hostlen, typelen;
    int64_t ts;
} Seen;

static int map_fields(Decoder *d, Rd *r, int within, uint64_t *seen, Seen *ev);

static int event(Decoder *d, Rd *r, Seen *ev) {
    uint64_t seen = 0;
    int rc = map_fields(d, r, W_TOP, &seen, ev);
    if (rc != OK)
        return rc;
    for (int q = 0; q < NREQ; q++)
        if (!(seen >> d->req[q] & 1))
            return SKIP;
    return OK;
}

/* One map's keys into their columns, then nulls for the absent ones. */
static int map_fields(Decoder *d, Rd *r, int within, uint64_t *seen, Seen *ev) {
    long long n = rd_map(r);
    if (n < 0)
        return SKIP;
    int subseen[NWITHIN] = {0};
    for (long long i = 0; i < n; i++) {
        size_t kl;
        const uint8_t *k = rd_str(r, &kl);
        if (k == NULL)
            return SKIP;
        if (within == W_TOP) {
            int w;
            for (w = W_PROC; w < NWITHIN; w++)
                if ((size_t)d->sublen[w] == kl && memcmp(d->subname[w], k, kl) == 0)
                    break;
            if (w < NWITHIN) {
                if (subseen[w])
                    return SKIP;
                subseen[w] = 1;
                uint64_t inner = 0;
                int rc = map_fields(d, r, w, &inner, NULL);
                if (rc != OK)
                    return rc;
                continue;
            }
        }
        int col = find(d, within, k, kl);
        if (col < 0 || (*seen >> col & 1))
            return SKIP; /* an unknown key, or one given twice */
        *seen |= 1ULL << col;
        Col *c = &d->cols[col];
        const uint8_t *start = r->p;
        int rc = value(d, c, r);
        if (rc != OK)
            return rc;
        if (within != W_TOP)
            continue;
        if (col == d->req[R_V]) {
            int64_t v;
            memcpy(&v, c->data.p + c->data.len - 8, 8);
            if (v != 1 || *start != 0x01)
                return SKIP; /* the schema's version, as a positive fixint */
        } else if (col == d->req[R_ID]) {
            size_t len;
            Rd again = {start, r->p};
            const uint8_t *s = rd_str(&again, &len);
            if (len < 1 || len > 1024)
                return SKIP;
            for (size_t j = 0; j < len; j++)
                if (s[j] < 0x21 || s[j] > 0x7e)
                    return SKIP; /* printable ASCII, no space */
        } else if (col == d->req[R_TS]) {
            memcpy(&ev->ts, c->data.p + c->data.len - 8, 8);
        } else if (col == d->req[R_HOST] || col == d->req[R_TYPE]) {
            size_t len;
            Rd again = {start, r->p};
            const uint8_t *s = rd_str(&again, &len);
            if (col == d->req[R_HOST]) {
                if (len < 1)
                    return SKIP;
                ev->host = s;
                ev->hostlen = len;
            } else {
                int t;
                for (t = 0; t < d->ntypes; t++)
                    if ((size_t)d->typelen[t] == len && memcmp(d->types[t], s, len) == 0)
                        break;
                if (t == d->ntypes)
                    return SKIP;
                ev->type = s;
                ev->typelen = len;
            }
        }
    }
    return OK; /* absent keys: padded with nulls when their column's next value comes */
}

static long long floor_div(long long a, long long b) {
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* One payload: its rows appended and OK, or SKIP with nothing appended. */
static int message(Decoder *d, const uint8_t *p, size_t len, Mark *marks, PyObject *ids,
                   long long *day, Seen *first) {
    if ((Py_ssize_t)len > d->max_bytes)
        return SKIP;
    Rd r = {p, p + len};
    long long n = rd_array(&r);
    if (n < 1 || n > d->max_events)
        return SKIP;
    mark_all(d, marks);
    Py_ssize_t ids_at = PyList_GET_SIZE(ids);
    int rc = OK;
    long long lo = 0, hi = 0;
    for (long long i = 0; i < n; i++) {
        Seen ev = {0};
        d->row = d->rows + (size_t)i;
        rc = event(d, &r, &ev);
        if (rc != OK)
            break;
        if (i == 0) {
            *first = ev;
            lo = hi = ev.ts;
        } else if (ev.hostlen != first->hostlen || memcmp(ev.host, first->host, ev.hostlen) ||
                   ev.typelen != first->typelen || memcmp(ev.type, first->type, ev.typelen)) {
            rc = SKIP; /* the reference path checks each event against the subject */
            break;
        }
        lo = ev.ts < lo ? ev.ts : lo;
        hi = ev.ts > hi ? ev.ts : hi;
        /* The id, as a str: the archive's dedup key. */
        Col *c = &d->cols[d->req[R_ID]];
        int32_t end, start = 0;
        memcpy(&end, c->data.p + c->data.len - 4, 4);
        if (c->data.len >= 8)
            memcpy(&start, c->data.p + c->data.len - 8, 4);
        PyObject *id = PyUnicode_New(end - start, 127); /* checked: printable ASCII */
        if (id != NULL)
            memcpy(PyUnicode_1BYTE_DATA(id), c->chars.p + start, (size_t)(end - start));
        if (id == NULL || PyList_Append(ids, id) < 0) {
            Py_XDECREF(id);
            rc = ERR;
            break;
        }
        Py_DECREF(id);
    }
    if (rc == OK && r.p != r.end)
        rc = SKIP; /* trailing bytes */
    if (rc == OK) {
        *day = floor_div(lo, d->day_ns);
        if (floor_div(hi, d->day_ns) != *day)
            rc = SKIP; /* spans two days: two partitions, the reference path splits it */
    }
    if (rc != OK) {
        rewind_all(d, marks);
        if (PyList_SetSlice(ids, ids_at, PyList_GET_SIZE(ids), NULL) < 0)
            return ERR;
        return rc;
    }
    d->rows += (size_t)n;
    return OK;
}

static PyObject *packed(const Buf *bytes, size_t n) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((n + 7) / 8));
    if (out == NULL)
        return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    memset(o, 0, (n + 7) / 8);
    for (size_t i = 0; i < n; i++)
        o[i >> 3] |= (uint8_t)((bytes->p[i] & 1) << (i & 7));
    return out;
}

static PyObject *as_bytes(const Buf *b, int lead_zero) {
    /* Offsets buffers hold the ends: Arrow wants a leading 0 too. */
    Py_ssize_t extra = lead_zero ? 4 : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)b->len + extra);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    if (lead_zero)
        memset(o, 0, 4);
    if (b->len)
        memcpy(o + extra, b->p, b->len);
    return out;
}

/* The buffers of one column, as Arrow's from_buffers takes them (validity None when no nulls). */
static PyObject *column(Col *c, size_t rows) {
    PyObject *valid = c->nulls ? packed(&c->valid, rows) : Py_NewRef(Py_None);
    if (valid == NULL)
        return NULL;
    PyObject *out = NULL;
    switch (c->kind) {
    case K_INT:
    case K_UINT: {
        PyObject *data = as_bytes(&c->data, 0);
        out = data ? Py_BuildValue("(NN)", valid, data) : NULL;
        break;
    }
    case K_BOOL: {
        PyObject *data = packed(&c->data, rows);
        out = data ? Py_BuildValue("(NN)", valid, data) : NULL;
        break;
    }
    case K_TEXT: {
        PyObject *offs = as_bytes(&c->data, 1), *chars = offs ? as_bytes(&c->chars, 0) : NULL;
        out = chars ? Py_BuildValue("(NNN)", valid, offs, chars) : NULL;
        if (chars == NULL)
            Py_XDECREF(offs);
        break;
    }
    default: {
        PyObject *offs = as_bytes(&c->data, 1), *child = offs ? as_bytes(&c->child, 1) : NULL,
                 *chars = child ? as_bytes(&c->chars, 0) : NULL;
        out = chars ? Py_BuildValue("(NNNN)", valid, offs, child, chars) : NULL;
        if (chars == NULL) {
            Py_XDECREF(offs);
            Py_XDECREF(child);
        }
    }
    }
    if (out == NULL)
        Py_XDECREF(valid); /* Py_BuildValue's N steals only on success */
    return out;
}

static void reset(Decoder *d) {
    for (int i = 0; i < d->ncols; i++) {
        Col *c = &d->cols[i];
        c->valid.len = c->data.len = c->child.len = c->chars.len = 0;
        c->nchild = 0;
        c->nulls = 0;
        c->n = 0;
    }
    d->rows = 0;
}

/* decode(payloads) -> (rows, spans, ids, columns): spans[i] is
 * (start, stop, day, host, type) for a payload taken, None for one left out. */
static PyObject *Decoder_decode(Decoder *d, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "decode: expected a list of payloads");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *spans = PyList_New(n), *ids = PyList_New(0), *cols = NULL, *out = NULL;
    Mark marks[MAXCOLS];
    if (spans == NULL || ids == NULL)
        goto done;
    reset(d);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_buffer view;
        if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0)
            goto done;
        size_t start = d->rows;
        long long day = 0;
        Seen first = {0};
        int rc = message(d, view.buf, (size_t)view.len, marks, ids, &day, &first);
        PyObject *span = Py_None;
        if (rc == OK) {
            span = Py_BuildValue("(nnLs#s#)", (Py_ssize_t)start, (Py_ssize_t)d->rows, day,
                                 (const char *)first.host, (Py_ssize_t)first.hostlen,
                                 (const char *)first.type, (Py_ssize_t)first.typelen);
        } else {
            Py_INCREF(span);
        }
        PyBuffer_Release(&view);
        if (rc == ERR || span == NULL)
            goto done;
        PyList_SET_ITEM(spans, i, span);
    }
    cols = PyList_New(d->ncols);
    if (cols == NULL)
        goto done;
    for (int i = 0; i < d->ncols; i++) {
        if (pad(&d->cols[i], d->rows) < 0)
            goto done;
        PyObject *c = column(&d->cols[i], d->rows);
        if (c == NULL)
            goto done;
        PyList_SET_ITEM(cols, i, c);
    }
    out = Py_BuildValue("(nOOO)", (Py_ssize_t)d->rows, spans, ids, cols);
done:
    Py_DECREF(seq);
    Py_XDECREF(spans);
    Py_XDECREF(ids);
    Py_XDECREF(cols);
    return out;
}

/* Decoder(columns, required, maps, types, day_ns, max_events, max_bytes):
 * columns: [(within, key, kind)], within 0 top, 1 and 2 the maps named in `maps`;
 * required: the column indexes of v, id, ts, host, type (top level). */
static int Decoder_init(Decoder *d, PyObject *args, PyObject *kw) {
    PyObject *columns, *required, *maps, *types;
    if (!PyArg_ParseTuple(args, "OOOOLnn", &columns, &required, &maps, &types, &d->day_ns,
                          &d->max_events, &d->max_bytes))
        return -1;
    if (d->day_ns <= 0) {
        PyErr_SetString(PyExc_ValueError, "day_ns must be positive");
        return -1;
    }
    Py_ssize_t n = PySequence_Length(columns);
    if (n < 0)
        return -1;
    if (n > MAXCOLS) {
        PyErr_SetString(PyExc_ValueError, "too many columns");
        return -1;
    }
    Py_XSETREF(d->keys, PyList_New(0));
    if (d->keys == NULL)
        return -1;
    d->ncols = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_GetItem(columns, i);
        int within, kind;
        PyObject *key;
        if (t == NULL || !PyArg_ParseTuple(t, "iUi", &within, &key, &kind)) {
            Py_XDECREF(t);
            return -1;
        }
        if (within < 0 || within >= NWITHIN || kind < K_INT || kind > K_BOOL ||
            PyList_Append(d->keys, key) < 0) {
            Py_DECREF(t);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "bad column");
            return -1;
        }
        Col *c = &d->cols[d->ncols++];
        c->within = within;
        c->kind = kind;
        c->key = PyUnicode_AsUTF8AndSize(key, &c->keylen);
        Py_DECREF(t);
        if (c->key == NULL)
            return -1;
    }
    memset(d->slots, 0, sizeof d->slots);
    for (int i = 0; i < d->ncols; i++) {
        Col *c = &d->cols[i];
        unsigned h = hash((const uint8_t *)c->key, (size_t)c->keylen);
        while (d->slots[c->within][h])
            h = (h + 1) % SLOTS;
        d->slots[c->within][h] = (uint8_t)(i + 1);
    }
    if (!PyArg_ParseTuple(required, "iiiii", &d->req[R_V], &d->req[R_ID], &d->req[R_TS],
                          &d->req[R_HOST], &d->req[R_TYPE]))
        return -1;
    static const int want[NREQ] = {K_INT, K_TEXT, K_INT, K_TEXT, K_TEXT};
    for (int q = 0; q < NREQ; q++)
        if (d->req[q] < 0 || d->req[q] >= d->ncols || d->cols[d->req[q]].within != W_TOP ||
            d->cols[d->req[q]].kind != want[q]) {
            PyErr_SetString(PyExc_ValueError, "bad required column");
            return -1;
        }
    Py_XSETREF(d->subkeys, PySequence_Tuple(maps));
    if (d->subkeys == NULL || PyTuple_GET_SIZE(d->subkeys) != NWITHIN - 1) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "maps: two names");
        return -1;
    }
    for (int w = W_PROC; w < NWITHIN; w++) {
        d->subname[w] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(d->subkeys, w - 1),
                                                &d->sublen[w]);
        if (d->subname[w] == NULL)
            return -1;
    }
    Py_XSETREF(d->typelist, PySequence_Tuple(types));
    if (d->typelist == NULL)
        return -1;
    if (PyTuple_GET_SIZE(d->typelist) > MAXTYPES) {
        PyErr_SetString(PyExc_ValueError, "too many types");
        return -1;
    }
    d->ntypes = (int)PyTuple_GET_SIZE(d->typelist);
    for (int t = 0; t < d->ntypes; t++) {
        d->types[t] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(d->typelist, t), &d->typelen[t]);
        if (d->types[t] == NULL)
            return -1;
    }
    return 0;
}

static void Decoder_dealloc(Decoder *d) {
    for (int i = 0; i < MAXCOLS; i++) {
        Col *c = &d->cols[i];
        PyMem_Free(c->valid.p);
        PyMem_Free(c->data.p);
        PyMem_Free(c->child.p);
        PyMem_Free(c->chars.p);
    }
    Py_XDECREF(d->keys);
    Py_XDECREF(d->subkeys);
    Py_XDECREF(d->typelist);
    Py_TYPE(d)->tp_free((PyObject *)d);
}

static PyMethodDef Decoder_methods[] = {
    {"decode", (PyCFunction)Decoder_decode, METH_O,
     "decode(payloads) -> (rows, spans, ids, columns)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "snoopbus.consumers.archive._fastcols.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
    .tp_doc = "msgpack event payloads -> Arrow column buffers (see fastcols.c)",
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcols", "The archive's native decoder.", -1, NULL,
};

PyMODINIT_FUNC PyInit__fastcols(void) {
    if (PyType_Ready(&DecoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
