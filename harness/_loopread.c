/* harness._loopread: the fast transport's per-read path in C (harness/loop_reader.py).

   A streamed response is read in the event loop's own callback, some 30 times per request at
   a model's pace. In Python each read takes a dozen calls (the read with its kernel stamp, the
   stamp mapped to the monotonic clock, the chunked coding undone, the lines split) and is the
   larger part of the loop's own CPU per request. `ChunkedStream` does that work in one call:

   - `stream()`, the socket's read watcher's callback: one recvmsg (the kernel's receive stamp
     with it, harness/stamps.py's SO_TIMESTAMPNS option), the stamp mapped to perf_counter_ns,
     the chunks' data decoded (RFC 9112, 7.1, as harness/chunked.py) and split into lines
     (without their \n, as harness/loop_reader.py's LineSplitter); then
     `sink(owner, lines, stamp, end)` when the read completed lines or ended the stream, so the
     lines are timed once every ready socket of the loop's turn was read (end: None while the
     body goes on, True at its end, False when the connection closed before it, or the error).
   - `feed(data)`: the lines of body bytes that came with the response's head.

   harness/chunked.py and harness/stamps.py are the reference: the same errors with the same
   messages, the same clock offset rules (tests/test_loopread.py runs both on the same bytes).
   Built by `pip install` where a C compiler is found; harness/loop_reader.py falls back to the
   Python path without it. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_LINE 4096            /* harness/chunked.py's MAX_LINE */
#define SIZE_DIGITS 15           /* harness/chunked.py's _SIZE_DIGITS */
#define OFFSET_REUSE_NS 1000000LL /* harness/stamps.py's OFFSET_REUSE_NS */
#define CLOCK_PAIR_LIMIT_NS 4000LL
#define CLOCK_PAIR_RETRIES 3
#define NS 1000000000LL

enum { SIZE, DATA, DATA_END, DATA_END_LF, TRAILER }; /* expecting: a size line, chunk data, its CR, its LF, a trailer line */

static PyObject *ChunkedError;

/* ---- the clocks (harness/stamps.py's ClockOffset and StampedReads) ---- */

static long long offset_ns = 0;
static long long sampled_ns = LLONG_MIN / 2; /* never: the first stamp samples it */
static unsigned long long reads_kernel, reads_user, reads_clamped;

static long long
clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * NS + ts.tv_nsec;
}

/* perf_counter_ns is CLOCK_MONOTONIC on Linux; time_ns is CLOCK_REALTIME */
static void
sample_offset(void)
{
    long long before = clock_ns(CLOCK_MONOTONIC), wall = clock_ns(CLOCK_REALTIME), after = clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < CLOCK_PAIR_RETRIES && after - before > CLOCK_PAIR_LIMIT_NS; i++) {
        before = clock_ns(CLOCK_MONOTONIC);
        wall = clock_ns(CLOCK_REALTIME);
        after = clock_ns(CLOCK_MONOTONIC);
    }
    offset_ns = (before + after) / 2 - wall;
    sampled_ns = after;
}

/* A kernel stamp (CLOCK_REALTIME) on the monotonic clock, within [previous, now]. */
static long long
mapped(long long sec, long long nsec, long long previous)
{
    long long now = clock_ns(CLOCK_MONOTONIC);
    if (now - sampled_ns > OFFSET_REUSE_NS) {
        sample_offset();
        now = sampled_ns;
    }
    long long stamp = sec * NS + nsec + offset_ns;
    reads_kernel++;
    if (stamp < previous || stamp > now) {
        reads_clamped++;
        stamp = stamp < previous ? previous : stamp;
        stamp = stamp > now ? now : stamp;
    }
    return stamp;
}

/* ---- a growable byte buffer ---- */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int
buffer_add(Buffer *buffer, const char *bytes, Py_ssize_t n)
{
    if (buffer->len + n > buffer->cap) {
        Py_ssize_t cap = buffer->cap ? buffer->cap : 256;
        while (cap < buffer->len + n)
            cap *= 2;
        char *data = PyMem_Realloc(buffer->data, cap);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        buffer->data = data;
        buffer->cap = cap;
    }
    memcpy(buffer->data + buffer->len, bytes, n);
    buffer->len += n;
    return 0;
}

/* ---- the stream ---- */

typedef struct {
    PyObject_HEAD
    PyObject *owner;     /* the LoopReader: the sink's first argument, and gevent's `__self__` of the callback */
    PyObject *sink;      /* called with (owner, lines, stamp, end) */
    PyObject *excess;    /* bytes after the body's end (None until some came) */
    int fd;
    int stamp_option;    /* the kernel stamp's cmsg type, or -1: stamped when read */
    Py_ssize_t block_size;
    long long stamp;         /* the last read's (perf_counter_ns) */
    long long partial_stamp; /* the last read that brought body bytes (the partial line's) */
    unsigned long long left; /* data bytes of the current chunk still to come */
    int state;
    char complete;
    char ended;          /* the sink was told the end (or an error): reads stop */
    Buffer line;         /* a size or trailer line cut short */
    Buffer partial;      /* the start of an SSE line whose \n has not come */
} ChunkedStream;

static int
chunked_error(const char *message, PyObject *line)
{
    if (line == NULL)
        PyErr_SetString(ChunkedError, message);
    else
        PyErr_Format(ChunkedError, "%s%R", message, line);
    return -1;
}

/* The data of a chunk into whole lines (each a new bytes in `lines`); the rest kept as partial. */
static int
split_lines(ChunkedStream *self, const char *p, Py_ssize_t n, PyObject *lines)
{
    while (n > 0) {
        const char *end = memchr(p, '\n', n);
        if (end == NULL)
            return buffer_add(&self->partial, p, n);
        Py_ssize_t length = end - p;
        PyObject *line;
        if (self->partial.len) {
            if (buffer_add(&self->partial, p, length) < 0)
                return -1;
            line = PyBytes_FromStringAndSize(self->partial.data, self->partial.len);
            self->partial.len = 0;
        } else {
            line = PyBytes_FromStringAndSize(p, length);
        }
        if (line == NULL || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            return -1;
        }
        Py_DECREF(line);
        p = end + 1;
        n -= length + 1;
    }
    return 0;
}

static int
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A whole size or trailer line (without its \n): harness/chunked.py's ChunkedBody._line. */
static int
take_line(ChunkedStream *self, const char *line, Py_ssize_t n)
{
    if (n && line[n - 1] == '\r')
        n--;
    if (n > MAX_LINE)
        return chunked_error("a chunk size or trailer line of more than 4096 bytes", NULL);
    if (self->state == TRAILER) {
        if (n == 0) /* the empty line that ends the trailer section (and the body) */
            self->complete = 1;
        return 0;
    }
    const char *start = line, *stop = memchr(line, ';', n); /* a chunk extension ignored */
    if (stop == NULL)
        stop = line + n;
    while (start < stop && (*start == ' ' || *start == '\t'))
        start++;
    while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
        stop--;
    int ok = stop > start && stop - start <= SIZE_DIGITS;
    for (const char *c = start; ok && c < stop; c++)
        ok = is_hex(*c);
    if (!ok) {
        PyObject *shown = PyBytes_FromStringAndSize(line, n < 40 ? n : 40);
        if (shown == NULL)
            return -1;
        chunked_error("a chunk size that is not 1 to 15 hexadecimal digits: ", shown);
        Py_DECREF(shown);
        return -1;
    }
    unsigned long long size = 0;
    for (const char *c = start; c < stop; c++)
        size = size * 16 + (unsigned long long)(*c <= '9' ? *c - '0' : (*c | 0x20) - 'a' + 10);
    self->left = size;
    self->state = size ? DATA : TRAILER;
    return 0;
}

/* Body bytes: their chunks' data split into `lines`; 1 when some data came, 0 when none, -1 on error. */
static int
decode(ChunkedStream *self, const char *p, Py_ssize_t n, PyObject *lines)
{
    int data = 0;
    Py_ssize_t pos = 0;
    while (pos < n) {
        if (self->complete) {
            PyObject *more = PyBytes_FromStringAndSize(p + pos, n - pos);
            if (more == NULL)
                return -1;
            if (self->excess == Py_None) {
                Py_SETREF(self->excess, more);
            } else {
                PyBytes_ConcatAndDel(&self->excess, more);
                if (self->excess == NULL) {
                    self->excess = Py_NewRef(Py_None);
                    return -1;
                }
            }
            break;
        }
        switch (self->state) {
        case DATA: {
            Py_ssize_t take = n - pos;
            if ((unsigned long long)take > self->left)
                take = (Py_ssize_t)self->left;
            if (split_lines(self, p + pos, take, lines) < 0)
                return -1;
            data = 1;
            self->left -= take;
            pos += take;
            if (!self->left)
                self->state = DATA_END;
            break;
        }
        case DATA_END:
        case DATA_END_LF:
            if (p[pos] != (self->state == DATA_END ? '\r' : '\n'))
                return chunked_error("a chunk's data is not followed by CRLF", NULL);
            self->state = self->state == DATA_END ? DATA_END_LF : SIZE;
            pos++;
            break;
        default: { /* a size line, or a trailer line */
            const char *end = memchr(p + pos, '\n', n - pos);
            Py_ssize_t length = (end ? end - p : n) - pos;
            if (end == NULL || self->line.len) {
                if (buffer_add(&self->line, p + pos, length) < 0)
                    return -1;
            }
            pos += length;
            if (end == NULL) {
                if (self->line.len > MAX_LINE)
                    return chunked_error("a chunk size or trailer line of more than 4096 bytes", NULL);
                break;
            }
            pos++;
            int taken = self->line.len ? take_line(self, self->line.data, self->line.len) : take_line(self, end - length, length);
            self->line.len = 0;
            if (taken < 0)
                return -1;
        }
        }
    }
    return data;
}

static PyObject *
ChunkedStream_feed(ChunkedStream *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *lines = PyList_New(0);
    int data = lines == NULL ? -1 : decode(self, view.buf, view.len, lines);
    PyBuffer_Release(&view);
    if (data < 0) {
        Py_XDECREF(lines);
        return NULL;
    }
    if (data)
        self->partial_stamp = self->stamp;
    return lines;
}

static char read_buffer_static[64 * 1024];
static char *read_buffer = read_buffer_static;
static Py_ssize_t read_buffer_size = sizeof(read_buffer_static);

/* One non-blocking read with its stamp: the bytes read (0: the peer closed), -1 with nothing
   there (errno EAGAIN) or on an error (errno set). */
static Py_ssize_t
read_stamped(ChunkedStream *self)
{
    union {
        char bytes[CMSG_SPACE(2 * sizeof(long long))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {read_buffer, (size_t)self->block_size};
    struct msghdr message;
    memset(&message, 0, sizeof(message));
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    if (self->stamp_option >= 0) {
        message.msg_control = control.bytes;
        message.msg_controllen = sizeof(control.bytes);
    }
    ssize_t n;
    do {
        n = recvmsg(self->fd, &message, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    if (self->stamp_option >= 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c != NULL; c = CMSG_NXTHDR(&message, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == self->stamp_option && c->cmsg_len >= CMSG_LEN(2 * sizeof(long long))) {
                long long timespec[2];
                memcpy(timespec, CMSG_DATA(c), sizeof(timespec));
                self->stamp = mapped(timespec[0], timespec[1], self->stamp);
                return n;
            }
        }
    }
    self->stamp = clock_ns(CLOCK_MONOTONIC); /* none came (the end of the stream), or not asked for */
    reads_user++;
    return n;
}

/* The error raised, taken (normalized, with its traceback). */
static PyObject *
raised(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
}

/* Tell the sink; an error it raises goes to the owner's `throw` (what broke the stream). */
static PyObject *
tell(ChunkedStream *self, PyObject *lines, PyObject *end)
{
    PyObject *stamp = PyLong_FromLongLong(self->stamp);
    if (stamp == NULL)
        return NULL;
    PyObject *args[4] = {self->owner, lines, stamp, end};
    PyObject *result = PyObject_Vectorcall(self->sink, args, 4, NULL);
    Py_DECREF(stamp);
    if (result == NULL) {
        PyObject *error = raised();
        result = PyObject_CallMethod(self->owner, "throw", "O", error);
        Py_DECREF(error);
    }
    return result;
}

/* The socket's read watcher's callback. */
static PyObject *
ChunkedStream_call(ChunkedStream *self, PyObject *args, PyObject *kwargs)
{
    if (self->sink == NULL) {
        PyErr_SetString(PyExc_TypeError, "ChunkedStream was not initialized");
        return NULL;
    }
    if (self->ended)
        Py_RETURN_NONE;
    if (self->block_size > read_buffer_size) {
        char *bigger = PyMem_Malloc(self->block_size);
        if (bigger == NULL)
            return PyErr_NoMemory();
        if (read_buffer != read_buffer_static)
            PyMem_Free(read_buffer);
        read_buffer = bigger;
        read_buffer_size = self->block_size;
    }
    Py_ssize_t n = read_stamped(self);
    int read_error = errno;
    if (n < 0 && (read_error == EAGAIN || read_error == EWOULDBLOCK))
        Py_RETURN_NONE; /* woken for nothing after all */
    PyObject *lines = PyList_New(0);
    if (lines == NULL)
        return NULL;
    PyObject *end = Py_None;
    int broken = 0;
    if (n < 0) {
        errno = read_error;
        PyErr_SetFromErrno(PyExc_OSError);
        broken = 1;
    } else if (n == 0) {
        end = Py_False; /* closed before the body's end */
    } else {
        int data = decode(self, read_buffer, n, lines);
        if (data > 0)
            self->partial_stamp = self->stamp;
        broken = data < 0;
        if (!broken && self->complete)
            end = Py_True;
    }
    if (broken) {
        end = raised();
        Py_DECREF(lines); /* (the lines of a read that broke the coding are not timed) */
        lines = PyList_New(0);
        if (lines == NULL) {
            Py_DECREF(end);
            return NULL;
        }
    } else {
        Py_INCREF(end);
    }
    PyObject *result;
    if (end != Py_None)
        self->ended = 1;
    if (PyList_GET_SIZE(lines) || end != Py_None)
        result = tell(self, lines, end);
    else
        result = Py_NewRef(Py_None);
    Py_DECREF(lines);
    Py_DECREF(end);
    return result;
}

static int
ChunkedStream_init(ChunkedStream *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"owner", "sink", "fd", "stamp_option", "block_size", "stamp", NULL};
    PyObject *owner, *sink, *option;
    int fd;
    Py_ssize_t block_size;
    long long stamp;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOiOnL", names, &owner, &sink, &fd, &option, &block_size, &stamp))
        return -1;
    if (block_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "block_size must be positive");
        return -1;
    }
    int stamp_option = -1;
    if (option != Py_None) {
        long value = PyLong_AsLong(option);
        if (value == -1 && PyErr_Occurred())
            return -1;
        if (value < 0 || value > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "stamp_option must be a socket option number or None");
            return -1;
        }
        stamp_option = (int)value;
    }
    Py_XSETREF(self->owner, Py_NewRef(owner));
    Py_XSETREF(self->sink, Py_NewRef(sink));
    Py_XSETREF(self->excess, Py_NewRef(Py_None));
    self->fd = fd;
    self->stamp_option = stamp_option;
    self->block_size = block_size;
    self->stamp = self->partial_stamp = stamp;
    self->left = 0;
    self->state = SIZE;
    self->complete = self->ended = 0;
    self->line.len = self->partial.len = 0;
    return 0;
}

static int
ChunkedStream_traverse(ChunkedStream *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->sink);
    Py_VISIT(self->excess);
    return 0;
}

static int
ChunkedStream_clear(ChunkedStream *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->sink);
    Py_CLEAR(self->excess);
    return 0;
}

static void
ChunkedStream_dealloc(ChunkedStream *self)
{
    PyObject_GC_UnTrack(self);
    ChunkedStream_clear(self);
    PyMem_Free(self->line.data);
    PyMem_Free(self->partial.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
ChunkedStream_get_partial(ChunkedStream *self, void *closure)
{
    return PyBytes_FromStringAndSize(self->partial.data, self->partial.len);
}

static PyObject *
ChunkedStream_get_excess(ChunkedStream *self, void *closure)
{
    return self->excess == Py_None || self->excess == NULL ? PyBytes_FromStringAndSize(NULL, 0) : Py_NewRef(self->excess);
}

static PyObject *
ChunkedStream_get_complete(ChunkedStream *self, void *closure)
{
    return PyBool_FromLong(self->complete);
}

static PyMethodDef ChunkedStream_methods[] = {
    {"feed", (PyCFunction)ChunkedStream_feed, METH_O, "The lines of body bytes (those that came with the head)."},
    {NULL},
};

static PyMemberDef ChunkedStream_members[] = {
    {"__self__", T_OBJECT, offsetof(ChunkedStream, owner), READONLY, "the owner (gevent throws into a callback's __self__)"},
    {"stamp", T_LONGLONG, offsetof(ChunkedStream, stamp), READONLY, "the last read's stamp (perf_counter_ns)"},
    {"partial_stamp", T_LONGLONG, offsetof(ChunkedStream, partial_stamp), READONLY, "the stamp of the last read that brought body bytes"},
    {NULL},
};

static PyGetSetDef ChunkedStream_getset[] = {
    {"partial", (getter)ChunkedStream_get_partial, NULL, "the start of a line whose \\n has not come", NULL},
    {"excess", (getter)ChunkedStream_get_excess, NULL, "bytes after the body's end", NULL},
    {"complete", (getter)ChunkedStream_get_complete, NULL, "the last chunk and the trailer section came", NULL},
    {NULL},
};

static PyTypeObject ChunkedStreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "harness._loopread.ChunkedStream",
    .tp_doc = PyDoc_STR("ChunkedStream(owner, sink, fd, stamp_option, block_size, stamp): a chunked SSE body read, decoded and split in the loop's callback"),
    .tp_basicsize = sizeof(ChunkedStream),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ChunkedStream_init,
    .tp_dealloc = (destructor)ChunkedStream_dealloc,
    .tp_traverse = (traverseproc)ChunkedStream_traverse,
    .tp_clear = (inquiry)ChunkedStream_clear,
    .tp_call = (ternaryfunc)ChunkedStream_call,
    .tp_methods = ChunkedStream_methods,
    .tp_members = ChunkedStream_members,
    .tp_getset = ChunkedStream_getset,
};

static PyObject *
counts(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("{sKsKsK}", "kernel", reads_kernel, "user", reads_user, "clamped", reads_clamped);
}

static PyObject *
clock_offset(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(LL)", offset_ns, sampled_ns);
}

static PyObject *
forget_offset(PyObject *module, PyObject *unused)
{
    sampled_ns = LLONG_MIN / 2;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"counts", counts, METH_NOARGS, "This process's reads here by how they were stamped (harness/stamps.py's StampedReads)."},
    {"clock_offset", clock_offset, METH_NOARGS, "The monotonic clock less the wall clock (ns), and when it was sampled."},
    {"forget_offset", forget_offset, METH_NOARGS, "Sample the offset again at the next stamp."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "harness._loopread",
    .m_doc = "The fast transport's per-read path in C: see harness/loop_reader.py.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__loopread(void)
{
    if (PyType_Ready(&ChunkedStreamType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    ChunkedError = PyErr_NewExceptionWithDoc("harness._loopread.ChunkedError", "The body breaks the chunked coding.", PyExc_ValueError, NULL);
    if (ChunkedError == NULL || PyModule_AddObjectRef(m, "ChunkedError", ChunkedError) < 0 ||
        PyModule_AddObjectRef(m, "ChunkedStream", (PyObject *)&ChunkedStreamType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
