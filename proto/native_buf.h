/* A growable byte buffer, the one both native modules write into
 * (collector/fastbuild.c, consumers/archive/fastcols.c; setup.py puts proto/
 * on their include path), with Python's allocator: a failed allocation sets
 * MemoryError and returns -1.
 *
 * The including file defines BUF_FIRST_CAP first: the bytes of a Buf's first
 * allocation (each module's own typical size), doubled from there as needed.
 */
#ifndef SNOOPBUS_NATIVE_BUF_H
#define SNOOPBUS_NATIVE_BUF_H

#include <Python.h>
#include <stddef.h>

#ifndef BUF_FIRST_CAP
#error "define BUF_FIRST_CAP (a Buf's first allocation, in bytes) before including native_buf.h"
#endif

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

/* Room for `more` bytes past len. */
static int buf_reserve(Buf *b, size_t more) {
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : BUF_FIRST_CAP;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

#endif
