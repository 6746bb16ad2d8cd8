/* All snoopbus probes in one BCC module: one ring buffer, one loss table.
 *
 * Maps, and every helper that calls a map method, live in this file because
 * BCC rewrites map method calls only in the main source, not in headers.
 * Extra -D constants: ARGV_MAX. */
#include "common.h"
#include "proc.h"

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(scratch_map, struct scratch, MAX_CPUS);
/* Records the ring buffer had no room for, per CPU and per kind. */
BPF_PERCPU_ARRAY(lost, u64, KIND_MAX);

static __always_inline struct scratch *get_scratch(void)
{
    u32 cpu = bpf_get_smp_processor_id();
    return scratch_map.lookup(&cpu);
}

/* Copies the assembled record into the ring buffer; counts it lost if full. */
static __always_inline void emit(u8 *buf, u32 size, u16 kind)
{
    /* Records are shorter than DATA_SIZE; the mask is for the verifier. */
    size &= DATA_SIZE - 1;
    if (events.ringbuf_output(buf, size, 0) < 0) {
        u32 k = kind;
        u64 *n = lost.lookup(&k);
        if (n)
            (*n)++;
    }
}

/* Exec and exit, from scheduler raw tracepoints: no tracefs, no kprobes. */

RAW_TRACEPOINT_PROBE(sched_process_exec)
{
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct exec_rec *r = (struct exec_rec *)s->data;
    void *task = (void *)bpf_get_current_task();
    fill_hdr(&r->h, task, KIND_EXEC);

    /* The new image is in place: exe and argv are the new program's. */
    void *mm = read_ptr(task, OFF_TASK_MM);
    void *fs = read_ptr(task, OFF_TASK_FS);
    void *exe_file = read_ptr(mm, OFF_MM_EXE_FILE);
    void *root = (char *)fs + OFF_FS_ROOT;

    set_pos(s, sizeof(*r));
    walk_path(s, (char *)exe_file + OFF_FILE_F_PATH, root, &r->h.flags, F_EXE_TRUNC);
    r->exe_len = get_pos(s) - sizeof(*r);
    walk_path(s, (char *)fs + OFF_FS_PWD, root, &r->h.flags, F_CWD_TRUNC);
    u32 pos = get_pos(s);
    r->cwd_len = pos - sizeof(*r) - r->exe_len;

    u64 arg_start = read_u64(mm, OFF_MM_ARG_START);
    u64 arg_end = read_u64(mm, OFF_MM_ARG_END);
    u64 len = arg_end > arg_start ? arg_end - arg_start : 0;
    if (len > ARGV_MAX) {
        len = ARGV_MAX;
        r->h.flags |= F_ARGV_TRUNC;
    }
    if (pos > DATA_SIZE - 1)
        pos = DATA_SIZE - 1;
    if (len > DATA_SIZE - 1 - pos) {
        len = DATA_SIZE - 1 - pos;
        r->h.flags |= F_ARGV_TRUNC;
    }
    if (len > ARGV_MAX)
        len = ARGV_MAX;  /* restated for the verifier */
    u32 off = pos;
    barrier_var(off);  /* keep the mask: clang drops it after the clamp above */
    off &= DATA_SIZE - 1;
    if (bpf_probe_read_user(s->data + off, len, (void *)arg_start) < 0) {
        len = 0;
        r->h.flags |= F_ARGV_TRUNC;
    }
    r->argv_len = len;
    emit(s->data, pos + len, KIND_EXEC);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_process_exit)
{
    void *task = (void *)bpf_get_current_task();
    /* signal->live reaches 0 when the last thread exits: only then has the
     * process exited (a leader may leave before its threads). */
    void *signal = read_ptr(task, OFF_TASK_SIGNAL);
    if (read_u32(signal, OFF_SIGNAL_STRUCT_LIVE) != 0)
        return 0;

    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct exit_rec *r = (struct exit_rec *)s->data;
    fill_hdr(&r->h, task, KIND_EXIT);
    r->exit_code = read_u32(task, OFF_TASK_EXIT_CODE);
    r->_pad = 0;
    emit(s->data, sizeof(*r), KIND_EXIT);
    return 0;
}
