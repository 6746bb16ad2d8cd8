/* All snoopbus probes in one BCC module: one ring buffer, one loss table.
 *
 * Maps, and every helper that calls a map method, live in this file because
 * BCC rewrites map method calls only in the main source, not in headers.
 * Extra -D constants: ARGV_MAX, TASK_STORAGE, RINGBUF_BYTES, RESERVE_BYTES,
 * COAL_SEED, COALESCE_NS, COALESCE_MAX, SOURCE_RATE, SOURCE_BURST_NS, PRESSURE_BYTES,
 * and those
 * files.h lists. */
#include "common.h"
#include "proc.h"
#include "files.h"
#include "closes.h"

/* Every record, exec and exit among file records: a thread's exec is read
 * before the file records of its new image. File records leave RESERVE_BYTES
 * of it to exec, exit and fork (ring_out). */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(scratch_map, struct scratch, MAX_CPUS);
/* Records the ring buffer had no room for, per CPU and per kind. */
BPF_PERCPU_ARRAY(lost, u64, KIND_MAX);

/* File probes. sys_spec: syscall nr -> what it does (zero: not wanted),
 * filled from collector/syscalls.py after the tail programs are in place. */
BPF_ARRAY(sys_spec, struct sc_spec, 2 * NR_IA32_BASE);
/* A syscall's saved arguments, from sys_enter to its sys_exit. With
 * TASK_STORAGE (kernels since 5.11) in the calling task's own storage: no
 * hashing, no size bound, freed with the task; else in a map keyed by thread
 * id. `live` says an entry waits for its exit. */
#if TASK_STORAGE
BPF_TASK_STORAGE(inflight, struct sc_args);
#else
BPF_HASH(inflight, u32, struct sc_args, 65536);
#endif

static __always_inline struct sc_args *inflight_get(int create)
{
#if TASK_STORAGE
    struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
    return inflight.task_storage_get(t, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
#else
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (create) {
        struct sc_args zero = {};
        return inflight.lookup_or_try_init(&tid, &zero);
    }
    return inflight.lookup(&tid);
#endif
}

static __always_inline void inflight_done(struct sc_args *a)
{
#if TASK_STORAGE
    a->live = 0;
#else
    u32 tid = (u32)bpf_get_current_pid_tgid();
    inflight.delete(&tid);
#endif
}

/* fds written since they were opened: a modify event is for the first write
 * only. Keyed by the process image (its mm) too: exec, or a pid reused after
 * an exit, brings a new mm, so an fd either closed unseen cannot hide the
 * first write through its number later. LRU: entries of ended images go. */
struct written_key {
    u64 mm;
    u32 tgid;
    u32 fd;
};
BPF_TABLE("lru_hash", struct written_key, u8, written, 65536);

static __always_inline struct written_key written_key(void *task, u64 pid_tgid, u32 fd)
{
    struct written_key k = {
        .mm = (u64)CUR_PTR(CUR_TASK(task), OFF_TASK_MM), .tgid = pid_tgid >> 32, .fd = fd,
    };
    return k;
}

/* Drops an fd's written mark. Most fds carry none (read-only ones, or one
 * never written): a lookup takes no lock, a delete takes the bucket's. */
static __always_inline void written_forget(struct written_key *k)
{
    if (written.lookup(k))
        written.delete(k);
}
BPF_PROG_ARRAY(tails, 4);
/* closes.h: scans of the fd table at exit, exec and close_range. */
BPF_HASH(scans, u32, struct scan_state, 4096);
BPF_TABLE("lru_hash", struct scan_ref_key, u32, scan_refs, 16384);
BPF_PROG_ARRAY(scan_tails, 2);  /* 0: scan_count, 1: scan_emit */
BPF_PERCPU_ARRAY(kstats, u64, KS_MAX);
/* Last rename cookie time per CPU: keeps cookies strictly increasing. */
BPF_PERCPU_ARRAY(cookie_ts, u64, 1);
/* Filters, filled from user space before the probes see any syscall. */
struct dir_key {
    u64 ino;
    u32 dev;
    u32 _pad;
};
BPF_HASH(f_dir, struct dir_key, u8, 1024);        /* VERDICT_INCLUDE / _EXCLUDE */
/* FNV-1a 64 of each folded prefix string: for names passed as absolute strings. */
BPF_HASH(f_prefix, u64, u8, 1024);
BPF_HASH(f_comm, struct comm_key, u8, 256);
BPF_HASH(f_uid, u32, u8, 256);
BPF_HASH(f_cgroup, u64, u8, 256);

static __always_inline void kstat(u32 slot)
{
    u64 *n = kstats.lookup(&slot);
    if (n)
        (*n)++;
}

static __always_inline void count_lost(u32 kind)
{
    u64 *n = lost.lookup(&kind);
    if (n)
        (*n)++;
}

static __always_inline u32 dir_verdict(void *dentry)
{
#if PATH_FILTERS
    void *inode = read_ptr(dentry, OFF_DENTRY_D_INODE);
    if (!inode)
        return VERDICT_NONE;
    struct dir_key k = {};
    k.ino = read_u64(inode, OFF_INODE_I_INO);
    k.dev = read_u32(read_ptr(inode, OFF_INODE_I_SB), OFF_SB_S_DEV);
    u8 *v = f_dir.lookup(&k);
    return v ? *v : VERDICT_NONE;
#else
    return VERDICT_NONE;
#endif
}

static __always_inline struct scratch *get_scratch(void)
{
    u32 cpu = bpf_get_smp_processor_id();
    return scratch_map.lookup(&cpu);
}

#define BPF_RB_NO_WAKEUP_F    1
#define BPF_RB_FORCE_WAKEUP_F 2
/* Records per CPU between reader wake-ups. A wake-up is an irq_work (a
 * self-IPI: a VM exit under a hypervisor), measured as the largest part of a
 * record's cost when the reader keeps up and so is woken for nearly every
 * record. So a CPU wakes the reader every WAKEUP_EVERY records, or when
 * its last wake-up is WAKEUP_NS (-D, ProbeLimits.wakeup_us) old: a record
 * under light load goes at once (latency), under heavy load wake-ups stay
 * rare (at most one per WAKEUP_NS or per 64 records). The reader also
 * drains on its poll timeout, so a quiet CPU's last records wait at most
 * that long. */
#define WAKEUP_EVERY 64
struct wake_state {
    u64 n;
    u64 last;
};
BPF_PERCPU_ARRAY(emitted, struct wake_state, 1);

/* ---- Isolation: one source cannot blind the collector (proto/README.md) ----
 *
 * Coalescing: a thread's file record identical to its last one but for its
 * time (same kind, inode and size, and the same rec_hash of every other byte:
 * header, fields, names; so the same event on the wire) is not emitted; it is
 * counted in the thread's `coal` entry, and the count goes out as one
 * KIND_REPEAT record (user space: the last event again, with `count`) when
 * the thread's next different record comes, when COALESCE_NS passed since the
 * chain's last record went out, at its exec or its exit. A chain starts only
 * at a record that reached the ring buffer, so a repeat always has its base.
 *
 * Fair share: while the file ring buffer holds more than PRESSURE_BYTES not
 * yet read, each source may emit SOURCE_RATE records/s (within half a burst
 * of SOURCE_BURST_NS worth); what it emits beyond is not written but counted
 * per (tgid, kind) in `overflow`, which user space drains as `summary` events.
 * Below the pressure mark every record goes (nothing is withheld while there
 * is room). A source is a uid for uids other than root: an unprivileged user
 * cannot change uid, and threads, children and sessions all share it; root
 * (which can unload the probes anyway) is one source per process. Records
 * the ring had no room for are counted there too (`lost`), so every file
 * event of every process is delivered, coalesced, summarized or counted.
 */
struct coal_state {
    u64 ino;
    u64 hash;     /* rec_hash of the chain's first record */
    u64 since;    /* when the chain's last record (first or repeat) went out */
    u32 dev;
    u32 size;
    u32 pending;  /* identical records not yet reported */
    u16 kind;     /* 0: no chain */
    u16 _pad;
};
BPF_HASH(coal, u32, struct coal_state, 65536);  /* by thread; freed at its exit */
/* Source -> the GCRA's theoretical arrival time (boot ns). */
BPF_TABLE("lru_hash", u64, u64, budget, 16384);
struct over_key {
    u32 tgid;
    u32 kind;
};
struct over_val {
    u64 summarized;  /* over the fair share under pressure: not written */
    u64 lost;        /* no room in the ring buffer */
    u64 first_ts;
    u64 last_ts;
    u64 ino;         /* the last such record's file, when it had one */
    u32 dev;
    u32 uid;
};
/* Cumulative: user space reports the growth; it deletes the entries of
 * processes gone once reported (collector/summary.py). */
BPF_HASH(overflow, struct over_key, struct over_val, 65536);
/* [0] bytes the probes wrote to `events` (as ring buffer positions count
 * them: headers and padding included), [1] bytes the reader consumed, stored
 * by it after each drain (LoadedProbes.consumer_position). Two elements: each
 * has one writer. Array lookups are inlined: a few instructions each. */
BPF_ARRAY(ring_pos, u64, 2);

static __always_inline void count_lost_n(u32 kind, u64 n)
{
    u64 *c = lost.lookup(&kind);
    if (c)
        *c += n;
}

static __always_inline void overflow_add(struct rec_hdr *h, u16 kind, u64 summarized, u64 gone,
                                         u64 ino, u32 dev)
{
    struct over_key k = {.tgid = h->pid, .kind = kind};
    struct over_val *v = overflow.lookup(&k);
    if (!v) {
        struct over_val init = {.first_ts = h->ts, .uid = h->uid};
        /* Only if still absent: an entry another CPU made meanwhile keeps
         * the counts it already has (an update would zero them). */
        overflow.insert(&k, &init);
        v = overflow.lookup(&k);
        if (!v) {  /* table full: still counted, as lost, per kind (callers
                    * counted `gone` there already) */
            count_lost_n(kind, summarized);
            kstat(KS_OVERFLOW_FULL);
            return;
        }
    }
    __sync_fetch_and_add(&v->summarized, summarized);
    __sync_fetch_and_add(&v->lost, gone);
    v->last_ts = h->ts;
    v->ino = ino;
    v->dev = dev;
}

static __always_inline u64 wake_flags(void)
{
    u32 zero = 0;
    u64 flags = BPF_RB_NO_WAKEUP_F;
    struct wake_state *w = emitted.lookup(&zero);
    if (w) {
        u64 now = bpf_ktime_get_ns();
        if ((++w->n & (WAKEUP_EVERY - 1)) == 0 || now - w->last >= WAKEUP_NS) {
            flags = BPF_RB_FORCE_WAKEUP_F;
            w->last = now;
        }
    }
    return flags;
}

/* Writes a record to `events`, keeping count of the bytes written (ring_pos[0]).
 * A file record (file != 0) is refused, as if the ring buffer were full, when
 * it would leave less than RESERVE_BYTES free as far as the probes can tell
 * (the reader's position is stored after each drain, so they see the ring
 * fuller than it is, never emptier): exec, exit and fork records may use that
 * reserve, so file traffic never takes their room. Concurrent writers can
 * pass the check together: a CPU's record at most each, far below the reserve. */
static __always_inline int ring_out(void *buf, u32 size, int file)
{
    u32 zero = 0, one = 1;
    u64 *prod = ring_pos.lookup(&zero);
    if (!prod)
        return -1;
    size &= DATA_SIZE - 1;
    u64 need = (size + 8 + 7) & ~7;  /* as ring buffer positions count it */
    if (file) {
        u64 *cons = ring_pos.lookup(&one);
        if (cons && (s64)(*prod + need - *cons) > (s64)RINGBUF_BYTES - RESERVE_BYTES)
            return -1;
    }
    if (events.ringbuf_output(buf, size, wake_flags()) < 0)
        return -1;
    __sync_fetch_and_add(prod, need);
    return 0;
}

/* Every byte of a record of up to COAL_BYTES but its time (the first 8),
 * under a per-load secret seed: two file records of a thread with the same
 * kind, inode, size and hash make the same event but for `ts`. Longer records
 * are not coalesced (the bound keeps the verifier's work small). */
#define COAL_BYTES 512
static __always_inline u64 rec_hash(u8 *buf, u32 size)
{
    u64 h = (u64)COAL_SEED ^ size;
    for (u32 off = 8; off < COAL_BYTES; off += 8) {
        if (off >= size)
            break;
        /* The last word may reach past the record: stale scratch bytes, which
         * can only make two hashes differ (a repeat not seen), never agree. */
        u64 w = *(u64 *)(buf + (off & (COAL_BYTES - 1)));
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 31;
    }
    return h;
}

/* The chain's pending count as a KIND_REPEAT record (ts: now); counted per
 * (tgid, kind) as lost when the ring buffer has no room for it. */
static __always_inline void coal_flush(struct coal_state *st, struct rec_hdr *h)
{
    u32 n = st->pending;
    if (!n)
        return;
    st->pending = 0;
    struct repeat_rec rr = {};
    rr.h = *h;
    rr.h.kind = KIND_REPEAT;
    rr.h.flags = 0;
    rr.count = n;
    rr.of_kind = st->kind;
    if (ring_out(&rr, sizeof(rr), 1) < 0) {
        count_lost_n(st->kind, n);
        overflow_add(h, st->kind, 0, n, st->ino, st->dev);
        st->kind = 0;  /* the chain has no more base */
    }
}

/* Ends the calling thread's chain (exec, exit): its pending count goes out. */
static __always_inline void coal_end(void *task, int forget)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct coal_state *st = coal.lookup(&tid);
    if (!st)
        return;
    if (st->pending) {
        struct rec_hdr h;
        fill_hdr(&h, task, KIND_REPEAT);
        coal_flush(st, &h);
    }
    st->kind = 0;
    if (forget)
        coal.delete(&tid);
}

/* Whether the source of `h` may write now: always while no more than
 * PRESSURE_BYTES are unread (half the room file records may take; no source's
 * state is looked at then), so a legitimate burst (a `tar x` the reader is
 * briefly behind on) is delivered whole. Past it (a reader slower than the
 * writers), a source may write while within half a burst of its rate (GCRA:
 * one u64 per source; races between CPUs only blur it); one beyond (the
 * flooder) is refused and charged for each refusal, up to two bursts ahead,
 * so it stays held back while it keeps trying and for a burst's time after:
 * the rest of the room, up to the reserve, is the others'. A source idle for
 * a burst's time starts afresh. */
#if SOURCE_RATE
static __always_inline int within_share(struct rec_hdr *h)
{
    u32 zero = 0, one = 1;
    u64 *prod = ring_pos.lookup(&zero);
    u64 *cons = ring_pos.lookup(&one);
    s64 unread = prod && cons ? (s64)(*prod - *cons) : 0;
    if (unread <= PRESSURE_BYTES)
        return 1;
    u64 now = h->ts;
    u64 src = h->uid ? ((u64)1 << 32) | h->uid : h->pid;
    u64 cost = 1000000000ULL / SOURCE_RATE;
    u64 *tat = budget.lookup(&src);
    if (!tat || *tat + SOURCE_BURST_NS < now) {
        u64 t = now + cost;
        budget.update(&src, &t);
        return 1;
    }
    u64 t = *tat < now ? now : *tat;
    if (t - now > SOURCE_BURST_NS / 2) {
        u64 cap = now + 2 * SOURCE_BURST_NS;
        *tat = t + cost < cap ? t + cost : cap;
        return 0;
    }
    *tat = t + cost;
    return 1;
}
#else
/* Fair shares off (SOURCE_RATE 0): every source may always write. */
static __always_inline int within_share(struct rec_hdr *h)
{
    return 1;
}
#endif

static __always_inline void emit_file(struct file_rec *r, u32 size, u16 kind)
{
    u32 tid = r->h.tid;
    struct coal_state *st = coal.lookup(&tid);
    /* Fd-table scans (exit, exec, close_range) neither start nor join a
     * chain: at an exit the thread's entry is gone already, and would stay. */
    int chained = r->ino && !(r->h.flags & F_CLOSED_BY_MASK) && size <= COAL_BYTES;
    u64 hash = 0;
    size &= DATA_SIZE - 1;
    if (chained)
        hash = rec_hash((u8 *)r, size);
    if (st && st->kind && chained && st->kind == kind && st->ino == r->ino
        && st->size == size && st->hash == hash) {
        st->pending++;
        if (r->h.ts - st->since < COALESCE_NS && st->pending < COALESCE_MAX)
            return;  /* coalesced */
        coal_flush(st, &r->h);
        st->since = r->h.ts;
        return;
    }
    if (st) {
        coal_flush(st, &r->h);
        st->kind = 0;
    }
    if (!within_share(&r->h)) {
        overflow_add(&r->h, kind, 1, 0, r->ino, r->dev);
        return;
    }
    if (ring_out(r, size, 1) < 0) {
        count_lost(kind);
        overflow_add(&r->h, kind, 0, 1, r->ino, r->dev);
        return;
    }
    if (!chained)
        return;
    if (!st) {
        struct coal_state init = {};
        coal.update(&tid, &init);  /* full: this thread is not coalesced */
        st = coal.lookup(&tid);
        if (!st)
            return;
    }
    st->kind = kind;
    st->ino = r->ino;
    st->dev = r->dev;
    st->size = size;
    st->hash = hash;
    st->since = r->h.ts;
    st->pending = 0;
}

/* Copies the assembled record into the ring buffer: exec, exit and fork
 * (counted lost if full; they may use the reserve), file records through
 * emit_file. */
static __always_inline void emit(u8 *buf, u32 size, u16 kind)
{
    if (kind == KIND_EXEC || kind == KIND_EXIT || kind == KIND_FORK) {
        if (ring_out(buf, size, 0) < 0)
            count_lost(kind);
        return;
    }
    emit_file((struct file_rec *)buf, size, kind);
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
    walk_path(s, (char *)exe_file + OFF_FILE_F_PATH, root, &r->h.flags, F_EXE_TRUNC, 0);
    r->exe_len = get_pos(s) - sizeof(*r);
    walk_path(s, (char *)fs + OFF_FS_PWD, root, &r->h.flags, F_CWD_TRUNC, 0);
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
    u32 end = pos + len;
    /* A #! script (naming): binfmt_script replaced bprm->interp with the
     * interpreter; bprm->filename is still what the process ran. */
    void *bprm = (void *)ctx->args[2];
    const char *fname = read_ptr(bprm, OFF_BPRM_FILENAME);
    if (fname && fname != read_ptr(bprm, OFF_BPRM_INTERP)
        && end < DATA_SIZE - PATH_MAX_LEN) {
        barrier_var(end);
        int n = bpf_probe_read_kernel_str(s->data + (end & (DATA_SIZE - 1)), PATH_MAX_LEN, fname);
        if (n > 0) {
            r->h.flags |= F_SCRIPT;
            end += n & (PATH_MAX_LEN * 2 - 1);
        }
    }
    coal_end(task, 0);  /* repeats before it were the old image's */
    emit(s->data, end, KIND_EXEC);
    return 0;
}

/* A new process (naming): its parent's image until it execs. Threads are not
 * processes: their tgid is their creator's. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
    void *child = (void *)ctx->args[1];
    u32 tgid = read_u32(child, OFF_TASK_TGID);
    if (read_u32(child, OFF_TASK_PID) != tgid)
        return 0;
    if ((bpf_get_current_pid_tgid() >> 32) == SELF_TGID)
        return 0;
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct fork_rec *r = (struct fork_rec *)s->data;
    fill_hdr(&r->h, (void *)bpf_get_current_task(), KIND_FORK);
    r->child = tgid;
    r->_pad = 0;
    emit(s->data, sizeof(*r), KIND_FORK);
    return 0;
}

static __always_inline void exit_closes(void *ctx, void *task, void *signal, int group_dead,
                                        u64 ts);

RAW_TRACEPOINT_PROBE(sched_process_exit)
{
    void *task = (void *)bpf_get_current_task();
    coal_end(task, 1);  /* every thread: its chain's count, and its entry */
    /* signal->live reaches 0 when the last thread exits: only then has the
     * process exited (a leader may leave before its threads). */
    void *signal = read_ptr(task, OFF_TASK_SIGNAL);
    if (read_u32(signal, OFF_SIGNAL_STRUCT_LIVE) != 0) {
        exit_closes(ctx, task, signal, 0, 0);
        return 0;
    }

    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct exit_rec *r = (struct exit_rec *)s->data;
    fill_hdr(&r->h, task, KIND_EXIT);
    r->exit_code = read_u32(task, OFF_TASK_EXIT_CODE);
    r->_pad = 0;
    u64 ts = r->h.ts;
    emit(s->data, sizeof(*r), KIND_EXIT);
    exit_closes(ctx, task, signal, 1, ts);
    return 0;
}


/* ---- File events: raw_syscalls sys_enter / sys_exit ---- */

/* The process filters: cheap, checked before anything is saved. */
static __always_inline int task_excluded(u64 pid_tgid)
{
    if ((pid_tgid >> 32) == SELF_TGID)
        return 1;
#if UID_FILTER
    u32 uid = (u32)bpf_get_current_uid_gid();
    if (f_uid.lookup(&uid))
        return 1;
#endif
#if COMM_FILTER
    struct comm_key ck = {};
    bpf_get_current_comm(&ck.comm, sizeof(ck.comm));
    if (f_comm.lookup(&ck))
        return 1;
#endif
#if CGROUP_FILTER
    u64 cg = bpf_get_current_cgroup_id();
    if (f_cgroup.lookup(&cg))
        return 1;
#endif
    return 0;
}

static __always_inline int path_dropped(u32 verdict)
{
    if (verdict == VERDICT_EXCLUDE)
        return 1;
    return HAVE_INCLUDES && verdict != VERDICT_INCLUDE;
}

static __always_inline void scan_start(void *ctx, void *task, u32 mode, u32 first, u32 end,
                                       u32 nr, u64 ts, u32 emit_closes);

/* ---- ia32 syscalls: TS_COMPAT, their own numbers and argument registers ---- */

static __always_inline int task_compat(void)
{
#if TASK_STORAGE
    /* A direct load through the task's BTF pointer (5.11+, as task storage):
     * asked for the 64-bit calls whose numbers ia32 has too (fstat is ia32's
     * open), so a helper call here cost every such call ~40 ns. */
    u8 *t = (u8 *)bpf_get_current_task_btf();
    return (*(volatile u32 *)(t + OFF_TASK_TI_STATUS) & TS_COMPAT_F) != 0;
#else
    return (read_u32((void *)bpf_get_current_task(), OFF_TASK_TI_STATUS) & TS_COMPAT_F) != 0;
#endif
}

/* The spec of the syscall the current task makes as `nr` (a 64-bit number,
 * or an ia32 one under TS_COMPAT); its sys_spec key in *key. NULL: unwanted. */
static __always_inline struct sc_spec *spec_of(u32 nr, u32 *key, int *compat)
{
    nr &= ~X32_SYSCALL_BIT;  /* x32 calls the 64-bit ones with bit 30 set */
    if (nr >= NR_IA32_BASE)  /* no 64-bit syscall this high but x32's own (512..547) */
        return 0;
    struct sc_spec *sp = sys_spec.lookup(&nr);
    if (!sp || !(sp->shape | sp->ia32))
        return 0;
    *compat = task_compat();
    *key = nr;
    if (*compat) {
        *key = nr + NR_IA32_BASE;
        sp = sys_spec.lookup(key);
    }
    return sp && sp->shape ? sp : 0;
}

/* The six argument registers, ia32's (bx, cx, dx, si, di, bp; 32 bits each)
 * or x86-64's, from one read of the part of pt_regs that holds both
 * (probes.py checks it is within ARGS_WINDOW u64s). */
#define ARGS_WINDOW 12
#define ARG_IDX(off) (((off) - OFF_REGS_ARGS_LO) / 8)

static __always_inline void read_args(void *regs, int compat, u64 *v)
{
    u64 r[ARGS_WINDOW] = {};
    bpf_probe_read_kernel(r, sizeof(r), (char *)regs + OFF_REGS_ARGS_LO);
    if (compat) {
        v[0] = (u32)r[ARG_IDX(OFF_REGS32_ARG0)];
        v[1] = (u32)r[ARG_IDX(OFF_REGS32_ARG1)];
        v[2] = (u32)r[ARG_IDX(OFF_REGS32_ARG2)];
        v[3] = (u32)r[ARG_IDX(OFF_REGS32_ARG3)];
        v[4] = (u32)r[ARG_IDX(OFF_REGS32_ARG4)];
        v[5] = (u32)r[ARG_IDX(OFF_REGS32_ARG5)];
    } else {
        v[0] = r[ARG_IDX(OFF_REGS_ARG0)];
        v[1] = r[ARG_IDX(OFF_REGS_ARG1)];
        v[2] = r[ARG_IDX(OFF_REGS_ARG2)];
        v[3] = r[ARG_IDX(OFF_REGS_ARG3)];
        v[4] = r[ARG_IDX(OFF_REGS_ARG4)];
        v[5] = r[ARG_IDX(OFF_REGS_ARG5)];
    }
}

RAW_TRACEPOINT_PROBE(sys_enter)
{
    u32 nr = 0;
    int compat = 0;
    struct sc_spec *sp = spec_of(ctx->args[1], &nr, &compat);
    if (!sp)
        return 0;  /* most syscalls: one array lookup, no helper call */
    void *task = (void *)bpf_get_current_task();
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (task_excluded(pid_tgid)) {
        if ((pid_tgid >> 32) != SELF_TGID)
            kstat(KS_FILTERED_TASK);
        return 0;
    }
    void *regs = (void *)ctx->args[0];
    u64 v[6] = {};
    read_args(regs, compat, v);
    if (sp->shape == SHAPE_FD && sp->kind == KIND_MODIFY) {
        /* Only the first write through an fd is an event: skip the rest here. */
        u64 fd = v[0];
        if (sp->fd == 2)  /* the splice family writes to arg 2 */
            fd = v[2];
        struct written_key key = written_key(task, pid_tgid, (u32)fd);
        if (written.lookup(&key))
            return 0;
    }
    if (sp->shape == SHAPE_MMAP
        && ((v[3] & (MAP_SHARED_F | MAP_ANON_F)) != MAP_SHARED_F || (s32)v[4] < 0))
        return 0;  /* private or anonymous: every process maps its libraries so */
    if (sp->shape == SHAPE_SCAN) {
        /* close_range(first, last, flags): closes.h. CLOSE_RANGE_CLOEXEC
         * only marks the fds; with CLOSE_RANGE_UNSHARE a shared table is
         * copied and the copy's fds close: the files stay open. */
        u32 first = v[0], last = v[1];
        u32 flags = v[2];
        if (first > last || (flags & ~(CLOSE_RANGE_UNSHARE_F | CLOSE_RANGE_CLOEXEC_F))
            || (flags & CLOSE_RANGE_CLOEXEC_F))
            return 0;
        void *files = read_ptr(task, OFF_TASK_FILES);
        u32 shared = (flags & CLOSE_RANGE_UNSHARE_F) && (s32)read_u32(files, OFF_FILES_COUNT) > 1;
        scan_start(ctx, task, SCAN_RANGE, first, last == 0xffffffff ? last : last + 1, nr, 0,
                   !shared);
        return 0;
    }
    if (sp->shape == SHAPE_NEWFD && sp->flags >= 0) {
        /* fcntl: only F_DUPFD and F_DUPFD_CLOEXEC make an fd */
        u32 cmd = sp->flags == 1 ? v[1] : v[0];
        if (cmd != F_DUPFD_V && cmd != F_DUPFD_CLOEXEC_V)
            return 0;
    }
    if (sp->shape == SHAPE_CLOSE) {
        /* close(fd), or dup2/dup3(old, fd), which closes fd first when it
         * is open and differs from old. */
        u32 fd = v[0];
        if (sp->fd == 1) {
            fd = v[1];
            if (fd == (u32)v[0])
                return 0;
        }
        struct written_key key = written_key(task, pid_tgid, fd);
        written_forget(&key);
        struct scratch *s = get_scratch();
        if (!s)
            return 0;
        s->close_fd = fd;
        s->close_nr = nr;
        tails.call(ctx, 1);  /* close_at_enter */
        return 0;
    }
    struct sc_args *a = inflight_get(1);
    if (!a) {
        count_lost(LOST_INFLIGHT_FULL);
        return 0;
    }
    a->args[0] = v[0];
    a->args[1] = v[1];
    a->args[2] = v[2];
    a->args[3] = v[3];
    a->args[4] = v[4];
    a->args[5] = v[5];
    a->sp = *sp;
    a->nr = nr;
    a->live = 1;
    a->ntouched = 0;
    return 0;
}

/* Whether the user string at data[at] is one plain component (no '/', not
 * starting with '.'): then the walked base's path verdict is the name's. */
static __always_inline int single_component(struct scratch *s, u32 at, int n)
{
    if (n <= 1 || s->data[at & (DATA_SIZE - 1)] == '.')
        return 0;
    for (int i = 0; i < NAME_SZ; i++) {
        if (i >= n)
            return 1;
        char c = s->data[(at + i) & (DATA_SIZE - 1)];
        if (c == '/')
            return 0;
        if (c == 0)
            return 1;
    }
    return 0;
}

#define VERDICT_UNDECIDED 3
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME  0x100000001b3ULL

/* The verdict for an absolute name string at data[at], n bytes with its NUL:
 * the hash of the name up to each '/' (and of the whole name) is looked up in
 * f_prefix, and the longest match wins. Names that would fold ("//", "/.",
 * "/..") or are longer than PREFIX_SCAN are left to user space (UNDECIDED);
 * user space keeps every prefix shorter than PREFIX_SCAN. */
static __always_inline u32 name_verdict(struct scratch *s, u32 at, int n)
{
#if PATH_FILTERS
    u64 h = FNV_OFFSET;
    u32 verdict = VERDICT_NONE;
    char prev = 0;
    for (int i = 0; i < PREFIX_SCAN; i++) {
        if (i >= n)
            return VERDICT_UNDECIDED;
        char c = s->data[(at + i) & (DATA_SIZE - 1)];
        if (c == '/' || c == 0) {
            if (c == '/' && prev == '/')
                return VERDICT_UNDECIDED;
            if (i > 0 && prev != '/') {
                u8 *v = f_prefix.lookup(&h);
                if (v)
                    verdict = *v;
            }
            if (c == 0)
                return verdict;
        } else if (c == '.' && prev == '/') {
            return VERDICT_UNDECIDED;
        }
        h ^= (u8)c;
        h *= FNV_PRIME;
        prev = c;
    }
#endif
    return VERDICT_UNDECIDED;
}

/* How far the kernel's path verdict (s->verdict) decides a name. */
#define NAME_IN_BASE  1  /* one component in a walked base: the base's verdict */
#define NAME_ABSOLUTE 2  /* an absolute name matched as a string: exact */

/* Appends (base names, user string) for a name relative to dfd (or the cwd):
 * the base is walked only for relative names; user space joins and folds.
 * Returns NAME_* when the kernel's verdict decides this name, else 0. */
static __always_inline int add_name(struct scratch *s, struct file_rec *r, void *task,
                                     void *root, s64 dfd, const char *name, u16 trunc_flag,
                                     int base_seg, int kernel)
{
    u32 start = get_pos(s);
    char first = 0;
    int walked = 0;
    if (kernel)  /* io_uring: the kernel's copy (struct filename) */
        bpf_probe_read_kernel(&first, 1, name);
    else
        bpf_probe_read_user(&first, 1, name);
    set_verdict(s, VERDICT_NONE);
    if (first != '/') {
        void *base = 0;
        if (dfd == AT_FDCWD_VAL) {
            void *fs = read_ptr(task, OFF_TASK_FS);
            base = (char *)fs + OFF_FS_PWD;
        } else {
            void *file = fd_file(task, (u32)dfd);
            if (file)
                base = (char *)file + OFF_FILE_F_PATH;
            else
                r->h.flags |= trunc_flag | F_FD_GONE;
        }
        if (base) {
            walk_path(s, base, root, &r->h.flags, trunc_flag, PATH_FILTERS);
            walked = 1;
        }
    }
    u32 mid = get_pos(s);
    r->seg[base_seg & 3] = mid - start;
    if (mid > DATA_SIZE - PATH_MAX_LEN) {
        r->h.flags |= trunc_flag;
        r->seg[(base_seg + 1) & 3] = 0;
        return 0;
    }
    barrier_var(mid);
    int n = kernel
        ? bpf_probe_read_kernel_str(s->data + (mid & (DATA_SIZE - 1)), PATH_MAX_LEN, name)
        : bpf_probe_read_user_str(s->data + (mid & (DATA_SIZE - 1)), PATH_MAX_LEN, name);
    if (n < 0)
        n = 0;
    r->seg[(base_seg + 1) & 3] = n;
    set_pos(s, mid + (n & (PATH_MAX_LEN * 2 - 1)));
    if (!PATH_FILTERS)
        return 0;
    if (first == '/') {
        u32 v = name_verdict(s, mid, n);
        if (v == VERDICT_UNDECIDED)
            return 0;
        set_verdict(s, v);
        return NAME_ABSOLUTE;
    }
    return walked && single_component(s, mid, n) ? NAME_IN_BASE : 0;
}

/* ---- Name check (naming): which inodes a name-based call changed ----
 * A name-based call (unlink, rename, mkdir, ...) names its file by a string
 * the kernel resolves, following symlinks inside it; the probes see the
 * string, not the dentries it led to. Every such call changes the ctime of
 * the directories (and files) it acts on, and the kernel's timestamp
 * tracepoints (ctime_ns_xchg, ctime_xchg_skip for multigrain filesystems,
 * inode_set_ctime_to_ts for the rest) report each inode. name_touched,
 * attached to them by probes.py where they exist, notes the inodes that
 * have a name (a dentry alias: not the one being created) while the calling
 * thread is inside a name-based call; the record carries them, and user
 * space checks the directory it resolves the string to against them. */
static __always_inline void append_touched(struct scratch *s, struct file_rec *r,
                                           struct sc_args *a)
{
    u32 n = a->ntouched;
    u32 pos = get_pos(s);
    if (!n || pos > DATA_SIZE - TOUCHED_MAX * TOUCHED_SZ)
        return;
    for (int i = 0; i < TOUCHED_MAX; i++) {
        if (i >= n)
            break;
        u32 at = pos + i * TOUCHED_SZ;
        barrier_var(at);
        at &= DATA_SIZE - 1;
        *(u64 *)(s->data + at) = a->touched_ino[i];
        *(u32 *)(s->data + at + 8) = a->touched_dev[i];
        set_pos(s, pos + (i + 1) * TOUCHED_SZ);
    }
    r->h.flags |= F_TOUCHED;
}

int name_touched(struct bpf_raw_tracepoint_args *ctx)
{
    struct sc_args *a = inflight_get(0);
    if (!a || !a->live || a->sp.shape != SHAPE_NAME)
        return 0;
    void *inode = (void *)ctx->args[0];
    if (!read_ptr(inode, OFF_INODE_I_DENTRY))
        return 0;  /* no dentry yet: the inode the call is creating */
    u64 ino = read_u64(inode, OFF_INODE_I_INO);
    u32 dev = read_u32(read_ptr(inode, OFF_INODE_I_SB), OFF_SB_S_DEV);
    u32 n = a->ntouched;
    if (n >= TOUCHED_MAX)
        return 0;
    for (int i = 0; i < TOUCHED_MAX; i++) {
        if (i >= n)
            break;
        if (a->touched_ino[i] == ino && a->touched_dev[i] == dev)
            return 0;
    }
    a->touched_ino[n & (TOUCHED_MAX - 1)] = ino;
    a->touched_dev[n & (TOUCHED_MAX - 1)] = dev;
    a->ntouched = n + 1;
    return 0;
}
/* ---- end of name check ---- */

static __always_inline void fill_common(struct file_rec *r, void *task, u16 kind, s64 ret,
                                        struct sc_args *a)
{
    fill_hdr(&r->h, task, kind);
    r->ret = ret;
    r->cookie = 0;
    r->ino = 0;
    r->dev = 0;
    r->mnt_ns = mnt_ns_inum(task);
    r->nr = a->nr;
    r->oflags = 0;  /* the caller's: sys_exit may have read open_how */
    r->mode = a->sp.mode >= 0 ? (u32)sc_arg(a, a->sp.mode) : 0;
    r->fd = a->sp.fd >= 0 ? (s32)sc_arg(a, a->sp.fd) : -1;
    r->seg[0] = r->seg[1] = r->seg[2] = r->seg[3] = 0;
}

/* Stage one at exit: the first file (fd or first name), then stage two for a
 * second name, else emit. Split so each program is verified on its own. */
RAW_TRACEPOINT_PROBE(sys_exit)
{
    void *regs = (void *)ctx->args[0];
    u32 nr = read_u64(regs, OFF_REGS_ORIG_AX) & ~X32_SYSCALL_BIT;
    if (nr >= NR_IA32_BASE)
        return 0;
    struct sc_spec *sp = sys_spec.lookup(&nr);
    if (!sp || !(sp->shape | sp->ia32))
        return 0;
    if ((sp->shape == SHAPE_CLOSE || sp->shape == SHAPE_SCAN) && !sp->ia32)
        return 0;  /* handled at enter: nothing saved to look up */
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct sc_args *a = inflight_get(0);
    if (!a || !a->live)
        return 0;
    /* a->nr is the sys_spec key: an ia32 call's is NR_IA32_BASE + nr. */
    if ((a->nr & (NR_IA32_BASE - 1)) != nr) {  /* left over from a call whose exit we never saw */
        inflight_done(a);
        return 0;
    }
    s64 ret = (s64)ctx->args[1];
    if (a->sp.shape == SHAPE_NEWFD) {
        /* dup, fcntl(F_DUPFD): the number names another file now */
        if (ret >= 0) {
            struct written_key key =
                written_key((void *)bpf_get_current_task(), pid_tgid, (u32)ret);
            written_forget(&key);
        }
        inflight_done(a);
        return 0;
    }
    if (ret < 0 && !INCLUDE_FAILED) {
        kstat(KS_FAILED);
        inflight_done(a);
        return 0;
    }
    void *task = (void *)bpf_get_current_task();
    u16 kind = a->sp.kind;
    void *file = 0;
    u32 oflags = a->sp.flags >= 0 ? (u32)sc_arg(a, a->sp.flags) : a->sp.const_flags;
    struct file_head fh = {};  /* the file's, read once where there is one */
    if (a->sp.shape == SHAPE_FDRET) {
        /* The open family: which event it is, decided before any record is
         * built, as most opens make none (no open events: only creates and
         * truncations are reported). */
        if (ret >= 0) {
            file = fd_file(task, (u32)ret);
            if (file)
                read_file_head(file, &fh);
            if (a->sp.how) {
                u64 f = 0;
                bpf_probe_read_user(&f, sizeof(f), (void *)sc_arg(a, 2));
                oflags = (u32)f;
            }
            struct written_key key = written_key(task, pid_tgid, (u32)ret);
            if (file && (fh.mode & FMODE_CREATED_F))
                kind = KIND_CREATE;
            else if (file && (oflags & O_TRUNC_F)
                     && (inode_mode(fh.inode) & S_IFMT_F) == S_IFREG_F)
                kind = KIND_MODIFY;  /* O_TRUNC truncated an existing file (IN_MODIFY) */
            else
                kind = KIND_OPEN;
            if (kind == KIND_MODIFY) {
                u8 one = 1;
                written.update(&key, &one);  /* its first write is not another modify */
            } else {
                written_forget(&key);  /* a new file behind this fd number */
            }
        } else {
            /* Failed open: reported as the create or open it tried to be. */
            kind = (oflags & O_CREAT_F) ? KIND_CREATE : KIND_OPEN;
        }
        if (kind == KIND_OPEN && !OPEN_EVENTS)
            goto done;
    }
    struct scratch *s = get_scratch();
    if (!s)
        goto done;
    struct file_rec *r = (struct file_rec *)s->data;
    void *root = task_root(task);
    fill_common(r, task, kind, ret, a);
    r->oflags = oflags;
    set_pos(s, sizeof(*r));
    set_verdict(s, VERDICT_NONE);

    if (a->sp.shape == SHAPE_FDRET) {
        if (ret >= 0)
            r->fd = (s32)ret;
    } else if (a->sp.shape == SHAPE_FD) {
        file = fd_file(task, (u32)r->fd);
        if (file)
            read_file_head(file, &fh);
        if (kind == KIND_MODIFY) {
            struct written_key key = written_key(task, pid_tgid, (u32)r->fd);
            u8 one = 1;
            if (ret >= 0)  /* a failed write (--include-failed) changed nothing */
                written.update(&key, &one);
            if (file && (inode_mode(fh.inode) & S_IFMT_F) != S_IFREG_F)
                goto done;  /* pipes, sockets, ttys: not file changes */
        }
    } else if (a->sp.shape == SHAPE_MMAP) {
        /* A shared mapping of a file open for writing: writable now, or by
         * mprotect later. Each is reported: the mapping outlives its fd. */
        file = fd_file(task, (u32)r->fd);
        if (file)
            read_file_head(file, &fh);
        if (!file || !(fh.mode & FMODE_WRITE_F)
            || (inode_mode(fh.inode) & S_IFMT_F) != S_IFREG_F)
            goto done;
        if (ret >= 0)
            r->ret = 0;  /* the mapping's address: not for the bus */
    } else if (kind == KIND_DELETE && (r->oflags & AT_REMOVEDIR_F) && a->sp.flags >= 0) {
        kind = KIND_RMDIR;
    }
    r->h.kind = kind;

    /* One walk site: the file's path, or (chdir, naming) the new cwd. */
    const void *walk = file ? (char *)file + OFF_FILE_F_PATH : 0;
    if (kind == KIND_CHDIR && ret >= 0)
        walk = (char *)read_ptr(task, OFF_TASK_FS) + OFF_FS_PWD;
    if (walk) {
        if (file) {
            fill_inode_of(r, fh.inode);
            if (fh.flags & O_TMPFILE_F)
                r->h.flags |= F_TMPFILE;  /* its dentry's name is made up ("#ino") */
        }
        walk_path(s, walk, root, &r->h.flags, F_PATH_TRUNC, PATH_FILTERS);
        r->seg[0] = get_pos(s) - sizeof(*r);
        if (kind != KIND_CHDIR && path_dropped(get_verdict(s))) {
            kstat(KS_FILTERED_PATH);
            goto done;
        }
    } else if (a->sp.shape == SHAPE_FD || (a->sp.shape == SHAPE_FDRET && ret >= 0)) {
        r->h.flags |= F_PATH_TRUNC | F_FD_GONE;
    } else if (a->sp.name >= 0) {
        tails.call(ctx, 2);  /* exit_first_name */
        goto done;           /* only if the tail call failed */
    }
    if (a->sp.name2 >= 0 || a->sp.target >= 0) {
        tails.call(ctx, 0);  /* exit_second_name */
        goto done;
    }
    emit(s->data, get_pos(s), kind);
done:
    inflight_done(a);
    return 0;
}

/* Stage one for a name-based call: the first name, relative to its dirfd or
 * the cwd. Its own program: with the path filters, a walk plus the name scan
 * in sys_exit itself exceeded the verifier's budget. sys_exit has filled the
 * record's fixed part in this CPU's scratch. */
int exit_first_name(struct bpf_raw_tracepoint_args *ctx)
{
    struct sc_args *a = inflight_get(0);
    if (!a || !a->live)
        return 0;
    struct scratch *s = get_scratch();
    if (!s)
        goto done;
    struct file_rec *r = (struct file_rec *)s->data;
    void *task = (void *)bpf_get_current_task();
    void *root = task_root(task);
    const char *name = (const char *)sc_arg(a, a->sp.name);
    s64 dfd = a->sp.dfd >= 0 ? (s64)(s32)sc_arg(a, a->sp.dfd) : AT_FDCWD_VAL;
    if (!name) {
        /* utimensat(fd, NULL, ...): the fd itself */
        void *file = fd_file(task, (u32)dfd);
        if (file) {
            fill_inode(r, file);
            walk_path(s, (char *)file + OFF_FILE_F_PATH, root, &r->h.flags, F_PATH_TRUNC,
                      PATH_FILTERS);
            r->seg[0] = get_pos(s) - sizeof(*r);
            if (path_dropped(get_verdict(s))) {
                kstat(KS_FILTERED_PATH);
                goto done;
            }
        } else {
            r->h.flags |= F_PATH_TRUNC | F_FD_GONE;
        }
    } else {
        int decided = add_name(s, r, task, root, dfd, name, F_PATH_TRUNC, 0, 0);
        /* In a base, only an exclude decides: the name itself may be an
         * included directory. Renames and links are left to user space:
         * either name may matter. */
        u32 v = get_verdict(s);
        if (a->sp.name2 < 0
            && ((decided == NAME_IN_BASE && v == VERDICT_EXCLUDE)
                || (decided == NAME_ABSOLUTE && path_dropped(v)))) {
            kstat(KS_FILTERED_PATH);
            goto done;
        }
    }
    if (a->sp.name2 >= 0 || a->sp.target >= 0) {
        tails.call(ctx, 0);  /* exit_second_name */
        goto done;
    }
    append_touched(s, r, a);
    emit(s->data, get_pos(s), r->h.kind);
done:
    inflight_done(a);
    return 0;
}

/* A rename's cookie, unique per host and boot, across collector restarts:
 * boot time (strictly increasing per CPU) * CPUs + CPU; user space shifts it
 * left once so an exchange's two moves get two cookies. */
static __always_inline u64 next_cookie(void)
{
    u32 zero = 0;
    u64 *last = cookie_ts.lookup(&zero);
    u64 t = bpf_ktime_get_boot_ns();
    if (last) {
        if (t <= *last)
            t = *last + 1;
        *last = t;
    }
    return t * MAX_CPUS + bpf_get_smp_processor_id();
}

/* Stage two at exit: the second name of rename/link, or a symlink target. */
int exit_second_name(struct bpf_raw_tracepoint_args *ctx)
{
    struct sc_args *a = inflight_get(0);
    if (!a || !a->live)
        return 0;
    struct scratch *s = get_scratch();
    if (!s)
        goto done;
    struct file_rec *r = (struct file_rec *)s->data;
    void *task = (void *)bpf_get_current_task();
    void *root = task_root(task);
    if (r->h.kind == KIND_LINK && a->sp.flags >= 0) {
        /* linkat of an O_TMPFILE file (closes.h): its create, under the new name */
        void *src = 0;
        const char *old = (const char *)sc_arg(a, a->sp.name);
        char first = 0;
        bpf_probe_read_user(&first, 1, old);
        if ((r->oflags & AT_EMPTY_PATH_F) && first == 0) {
            src = fd_file(task, (u32)sc_arg(a, a->sp.dfd));
        } else {
            s32 n = proc_fd_name(old);
            if (n >= 0)
                src = fd_file(task, (u32)n);
        }
        if (is_tmpfile(src)) {
            r->h.flags |= F_TMPFILE;
            r->oflags = read_u32(src, OFF_FILE_F_FLAGS);
            fill_inode(r, src);
        }
    }
    if (a->sp.name2 >= 0) {
        const char *name = (const char *)sc_arg(a, a->sp.name2);
        s64 dfd = a->sp.dfd2 >= 0 ? (s64)(s32)sc_arg(a, a->sp.dfd2) : AT_FDCWD_VAL;
        add_name(s, r, task, root, dfd, name, F_PATH2_TRUNC, 2, 0);  /* verdict: user space */
        if (r->h.kind == KIND_RENAME) {
            if (r->oflags & RENAME_EXCHANGE_F && a->sp.flags >= 0)
                r->h.flags |= F_EXCHANGE;
            r->cookie = next_cookie();
        }
    } else {
        u32 pos = get_pos(s);
        if (pos <= DATA_SIZE - PATH_MAX_LEN) {
            barrier_var(pos);
            const char *target = (const char *)sc_arg(a, a->sp.target);
            int n = bpf_probe_read_user_str(s->data + (pos & (DATA_SIZE - 1)), PATH_MAX_LEN,
                                            target);
            if (n < 0)
                n = 0;
            r->seg[3] = n;
            set_pos(s, pos + (n & (PATH_MAX_LEN * 2 - 1)));
        } else {
            r->h.flags |= F_PATH2_TRUNC;
        }
    }
    append_touched(s, r, a);
    emit(s->data, get_pos(s), r->h.kind);
done:
    inflight_done(a);
    return 0;
}

/* A close_write record for `file` at `fd`: ts 0 is now; `by` a SCAN_* when
 * no close() of that fd released it. */
static __always_inline void emit_close_write(void *task, void *file, u32 fd, u32 nr, u64 ts,
                                             u16 by)
{
    struct scratch *s = get_scratch();
    if (!s)
        return;
    struct file_rec *r = (struct file_rec *)s->data;
    void *root = task_root(task);
    fill_hdr(&r->h, task, KIND_CLOSE_WRITE);
    if (ts)
        r->h.ts = ts;
    r->h.flags |= F_NO_RET | ((by << F_CLOSED_BY_SHIFT) & F_CLOSED_BY_MASK);
    r->ret = 0;
    r->cookie = 0;
    r->mnt_ns = mnt_ns_inum(task);
    r->nr = nr;
    struct file_head fh;
    read_file_head(file, &fh);
    r->oflags = fh.flags;
    r->mode = 0;
    r->fd = fd;
    r->seg[1] = r->seg[2] = r->seg[3] = 0;
    fill_inode_of(r, fh.inode);
    if (fh.flags & O_TMPFILE_F)
        r->h.flags |= F_TMPFILE;
    set_pos(s, sizeof(*r));
    walk_path(s, (char *)file + OFF_FILE_F_PATH, root, &r->h.flags, F_PATH_TRUNC, PATH_FILTERS);
    r->seg[0] = get_pos(s) - sizeof(*r);
    if (path_dropped(get_verdict(s))) {
        kstat(KS_FILTERED_PATH);
        return;
    }
    emit(s->data, get_pos(s), KIND_CLOSE_WRITE);
}

/* close(fd) (or the close dup2/dup3 make of their target) at enter, while the
 * fd still names its file: close_write when it was open for writing on a
 * regular file and this fd holds its last reference (as inotify's
 * IN_CLOSE_WRITE, at the open file's release: another fd, a forked child's,
 * closes it later). Its result is not known (F_NO_RET);
 * close releases a valid fd even when it reports an error. */
int close_at_enter(struct bpf_raw_tracepoint_args *ctx)
{
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    u32 fd = s->close_fd, nr = s->close_nr;  /* sys_enter decoded them */
    void *task = (void *)bpf_get_current_task();
    void *file = fd_file(task, fd);
    if (!file || !writable_regular(file))
        return 0;
    if (file_refs(file) > 1)
        return 0;  /* not the last reference: the file stays open */
    emit_close_write(task, file, fd, nr, 0, 0);
    return 0;
}


/* ---- close_write of the files an exit, an exec or close_range releases
 * (closes.h). Its own block: scan_start starts a scan, scan_count and
 * scan_emit are tail programs in scan_tails. ---- */

static __always_inline void scan_start(void *ctx, void *task, u32 mode, u32 first, u32 end,
                                       u32 nr, u64 ts, u32 emit_closes)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct scan_state st = {};
    st.ts = ts ? ts : bpf_ktime_get_boot_ns();
    st.files = (u64)read_ptr(task, OFF_TASK_FILES);
    st.mode = mode;
    st.first = first;
    st.end = end;
    st.next = first;
    st.nr = nr;
    st.emit = emit_closes;
    if (!st.files || scans.update(&tid, &st) < 0)
        return;
    scan_tails.call(ctx, 0);
    scans.delete(&tid);  /* only if the tail call failed */
}

/* Whether this thread's exit releases its fd table: the process's last
 * thread when every other holder of the table is one of its own threads
 * (they are all exiting), or a thread holding the only reference (a table
 * of its own, or the others are gone). Another process sharing the table
 * (CLONE_FILES) keeps the files open: its own exit closes them. */
static __always_inline void exit_closes(void *ctx, void *task, void *signal, int group_dead,
                                        u64 ts)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (task_excluded(pid_tgid))
        return;
    void *files = read_ptr(task, OFF_TASK_FILES);
    if (!files)
        return;
    s32 users = (s32)read_u32(files, OFF_FILES_COUNT);
    s32 threads = (s32)read_u32(signal, OFF_SIGNAL_NR_THREADS);
    if (group_dead ? users > threads : users != 1)
        return;
    scan_start(ctx, task, SCAN_EXIT, 0, 0xffffffff, 0, ts, 1);
}

/* exec at its point of no return: the close-on-exec fds close next. A table
 * shared with another process is copied first, and the copy's references
 * go: the files stay open. HAVE_PREPARE_EXEC: the kernel has the tracepoint
 * (6.10+); before, those closes make no event. */
#if HAVE_PREPARE_EXEC
RAW_TRACEPOINT_PROBE(sched_prepare_exec)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (task_excluded(pid_tgid))
        return 0;
    void *task = (void *)bpf_get_current_task();
    void *files = read_ptr(task, OFF_TASK_FILES);
    void *signal = read_ptr(task, OFF_TASK_SIGNAL);
    if ((s32)read_u32(files, OFF_FILES_COUNT) > (s32)read_u32(signal, OFF_SIGNAL_NR_THREADS))
        return 0;
    scan_start(ctx, task, SCAN_EXEC, 0, 0xffffffff, 0, 0, 1);
    return 0;
}
#endif

/* The loops below re-read what stays the same across fds (mode, emit) from
 * the map through volatile pointers and mask the bitmap words instead of
 * comparing each fd with the bounds: a branch on a register that lives on
 * would leave each path with its own bounds for it, and the verifier could
 * then not merge the paths of one iteration (it runs out of budget). */
static __always_inline u32 vread(u32 *p)
{
    return *(volatile u32 *)p;
}

/* Bitmap word w of a scan of [first, end), masked to it. */
static __always_inline u64 scan_bits(void *fdt, struct scan_state *st, u32 w, u32 first,
                                     u32 end)
{
    u64 bits = scan_word(fdt, vread(&st->mode), w);
    if (w == first / 64)
        bits &= ~0ULL << (first & 63);
    u32 rem = end - w * 64;
    if (rem < 64)
        bits &= (1ULL << rem) - 1;
    return bits;
}

/* The fd table a tail pass of the thread's scan works on. */
struct scan_table {
    void *task;
    void *fdt;
    void *arr;  /* fdt->fd */
    u32 max;    /* fdt->max_fds */
};

/* Both passes' prologue: the thread's scan, if its fd table is still the one
 * the scan started on (else the scan ends), and that table. */
static __always_inline struct scan_state *scan_resume(u32 tid, struct scan_table *t)
{
    struct scan_state *st = scans.lookup(&tid);
    if (!st)
        return 0;
    t->task = (void *)bpf_get_current_task();
    void *files = read_ptr(t->task, OFF_TASK_FILES);
    if ((u64)files != st->files) {
        scans.delete(&tid);
        return 0;
    }
    t->fdt = read_ptr(files, OFF_FILES_FDT);
    t->max = read_u32(t->fdt, OFF_FDTABLE_MAX_FDS);
    t->arr = read_ptr(t->fdt, OFF_FDTABLE_FD);
    return st;
}

/* Pass one: per open file, how many of the closing fds name it; a range's
 * fds lose their written marks. */
int scan_count(struct bpf_raw_tracepoint_args *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct scan_table t;
    struct scan_state *st = scan_resume(tid, &t);
    if (!st)
        return 0;
    void *task = t.task, *fdt = t.fdt, *arr = t.arr;
    u32 first = st->first, end = st->end < t.max ? st->end : t.max;
    struct written_key wk = written_key(task, pid_tgid, 0);
    struct scan_ref_key k = {.ts = st->ts, .tid = tid};
    u32 one = 1;
    for (u32 i = 0; i < SCAN_WORDS; i++) {
        u32 w = first / 64 + i;
        if (w * 64 >= end)
            break;
        u64 bits = scan_bits(fdt, st, w, first, end);
        for (u32 b = 0; b < 64; b++) {
            if (!bits)
                break;
            u64 bit = bits & 1;
            bits >>= 1;
            if (!bit)
                continue;
            u32 fd = w * 64 + b;
            if (vread(&st->mode) == SCAN_RANGE) {
                wk.fd = fd;
                written.delete(&wk);
            }
            if (!vread(&st->emit))
                continue;
            void *file = read_ptr(arr, (long)fd * 8);
            if (!file || !writable_regular(file))
                continue;
            k.file = (u64)file;
            u32 *n = scan_refs.lookup(&k);
            if (n)
                (*n)++;
            else
                scan_refs.update(&k, &one);
            *(volatile u32 *)&st->hits = 1;
        }
    }
    if ((first / 64 + SCAN_WORDS) * 64 < end)
        kstat(KS_SCAN_CUT);  /* fds past the window: not looked at */
    if (st->hits)
        scan_tails.call(ctx, 1);
    scans.delete(&tid);
    return 0;
}

/* Pass two: the next open file whose every reference is among the closing
 * fds gets its close_write; then the next, by a tail call to itself. */
int scan_emit(struct bpf_raw_tracepoint_args *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct scan_table t;
    struct scan_state *st = scan_resume(tid, &t);
    if (!st)
        return 0;
    void *task = t.task, *fdt = t.fdt, *arr = t.arr;
    u32 first = st->first, next = st->next;
    u32 end = st->end < t.max ? st->end : t.max;
    u32 limit = (first / 64 + SCAN_WORDS) * 64;
    if (end > limit)
        end = limit;
    struct scan_ref_key k = {.ts = st->ts, .tid = tid};
    void *hit = 0;
    u32 hit_fd = 0;
    for (u32 i = 0; i < SCAN_WORDS && !hit; i++) {
        u32 w = next / 64 + i;
        if (w * 64 >= end)
            break;
        u64 bits = scan_bits(fdt, st, w, next, end);
        for (u32 b = 0; b < 64; b++) {
            if (!bits)
                break;
            u64 bit = bits & 1;
            bits >>= 1;
            if (!bit)
                continue;
            u32 fd = w * 64 + b;
            void *file = read_ptr(arr, (long)fd * 8);
            k.file = (u64)file;
            u32 *n = scan_refs.lookup(&k);
            if (!n)
                continue;  /* not a candidate, or decided at its first fd */
            s64 refs = *n;
            scan_refs.delete(&k);
            if (file_refs(file) != refs)
                continue;  /* held elsewhere too: released later */
            hit = file;
            hit_fd = fd;
            break;
        }
    }
    if (!hit) {
        scans.delete(&tid);
        return 0;
    }
    st->next = hit_fd + 1;
    emit_close_write(task, hit, hit_fd, st->nr, st->ts, st->mode);
    scan_tails.call(ctx, 1);
    kstat(KS_SCAN_CUT);  /* out of tail calls: the rest of the scan is not reported */
    scans.delete(&tid);
    return 0;
}


/* ---- io_uring requests (uring.h): file operations that make no syscall ---- */
#if URING
#include "uring.h"

/* 0: uring_first_name, 1: uring_second_name. */
BPF_PROG_ARRAY(uring_tails, 2);
/* Writes whose fd or fixed slot named no file at submit (a linked open fills
 * it later): request -> the fd, resolved from req->file at completion. */
BPF_TABLE("lru_hash", u64, s32, uring_pending, 4096);

static __always_inline void uring_fill(struct file_rec *r, void *task, u16 kind, u32 op)
{
    fill_hdr(&r->h, task, kind);
    uring_owner_comm(&r->h, task);
    r->h.flags = F_URING;
    r->ret = 0;
    r->cookie = 0;
    r->ino = 0;
    r->dev = 0;
    r->mnt_ns = mnt_ns_inum(task);
    r->nr = op;
    r->oflags = 0;
    r->mode = 0;
    r->fd = -1;
    r->seg[0] = r->seg[1] = r->seg[2] = r->seg[3] = 0;
}

/* The record's path from the file itself (or none, F_FD_GONE), then emit. */
static __always_inline void uring_emit_file(struct scratch *s, struct file_rec *r, void *task,
                                            void *file)
{
    set_pos(s, sizeof(*r));
    if (file) {
        void *root = task_root(task);
        fill_inode(r, file);
        walk_path(s, (char *)file + OFF_FILE_F_PATH, root, &r->h.flags, F_PATH_TRUNC,
                  PATH_FILTERS);
        r->seg[0] = get_pos(s) - sizeof(*r);
        if (path_dropped(get_verdict(s))) {
            kstat(KS_FILTERED_PATH);
            return;
        }
    } else {
        r->h.flags |= F_PATH_TRUNC | F_FD_GONE;
    }
    emit(s->data, get_pos(s), r->h.kind);
}

/* Every submitted request, after its prep. Name-based operations go to the
 * tail programs; writes and closes are handled here, at submit, while the fd
 * or fixed slot they name still holds the file. */
RAW_TRACEPOINT_PROBE(io_uring_submit_req)
{
    void *req = (void *)ctx->args[0];
    u8 op = 0;
    bpf_probe_read_kernel(&op, sizeof(op), (char *)req + OFF_REQ_OPCODE);
    int write = uring_is_write(op);
    int named = uring_is_name_op(op)
        || (uring_is_open(op) && (read_u64(req, OFF_REQ_FLAGS) & REQ_F_CQE_SKIP_F));
    if (!write && !named && op != UOP_CLOSE)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (task_excluded(pid_tgid)) {
        if ((pid_tgid >> 32) != SELF_TGID)
            kstat(KS_FILTERED_TASK);
        return 0;
    }
    if (named) {
        uring_tails.call(ctx, 0);  /* uring_first_name */
        return 0;
    }
    void *task = (void *)bpf_get_current_task();
    void *cmd = (char *)req + OFF_REQ_CMD;
    s32 fd;
    void *file;
    if (write) {
        file = uring_req_file(req, task, &fd);
    } else {
        u32 slot = read_u32(cmd, OFF_IO_CLOSE_SLOT);  /* 0: a process fd */
        if (slot) {
            fd = URING_SLOT_FD(slot - 1);
            file = uring_fixed_file(req, slot - 1);
        } else {
            fd = (s32)read_u32(cmd, OFF_IO_CLOSE_FD);
            file = fd_file(task, (u32)fd);
        }
    }
    struct written_key key = written_key(task, pid_tgid, (u32)fd);
    if (write) {
        if (written.lookup(&key))
            return 0;
        if (file) {
            u8 one = 1;
            written.update(&key, &one);
            if ((inode_mode(read_ptr(file, OFF_FILE_F_INODE)) & S_IFMT_F) != S_IFREG_F)
                return 0;
        } else if (!(read_u64(req, OFF_REQ_FLAGS) & REQ_F_CQE_SKIP_F)) {
            u64 rk = (u64)req;
            uring_pending.update(&rk, &fd);  /* io_uring_complete resolves it */
            return 0;
        }  /* else no completion will come: reported now, path unknown */
    } else {
        if (!file && fd < -1 && !(read_u64(req, OFF_REQ_FLAGS) & REQ_F_CQE_SKIP_F)) {
            /* A slot a linked request fills: written or not is known once the
             * close completes (the written map), and user space has the path. */
            u64 rk = (u64)req;
            uring_pending.update(&rk, &fd);
            return 0;
        }
        written.delete(&key);
        /* Every close of a writable file, not only its last reference's (as
         * close(2) has it): requests still in flight hold references (a
         * SQPOLL ring's write is put after the close is submitted), so the
         * last one cannot be told here. */
        if (!file || !writable_regular(file))
            return 0;
    }
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct file_rec *r = (struct file_rec *)s->data;
    uring_fill(r, task, write ? KIND_MODIFY : KIND_CLOSE_WRITE, op);
    r->h.flags |= F_NO_RET;
    r->fd = fd;
    if (file && !write)
        r->oflags = read_u32(file, OFF_FILE_F_FLAGS);
    uring_emit_file(s, r, task, file);
    return 0;
}

/* Name-based requests at submit: the first name, from the request's struct
 * filename (the kernel's copy), relative to its dirfd or the cwd. */
int uring_first_name(struct bpf_raw_tracepoint_args *ctx)
{
    void *req = (void *)ctx->args[0];
    u8 op = 0;
    bpf_probe_read_kernel(&op, sizeof(op), (char *)req + OFF_REQ_OPCODE);
    void *cmd = (char *)req + OFF_REQ_CMD;
    u16 kind;
    s32 dfd;
    void *fname;
    u32 oflags = 0, mode = 0;
    if (op == UOP_RENAMEAT) {
        kind = KIND_RENAME;
        dfd = (s32)read_u32(cmd, OFF_IO_RENAME_OLD_DFD);
        fname = read_ptr(cmd, OFF_IO_RENAME_OLDPATH);
        oflags = read_u32(cmd, OFF_IO_RENAME_FLAGS);
    } else if (op == UOP_UNLINKAT) {
        oflags = read_u32(cmd, OFF_IO_UNLINK_FLAGS);
        kind = (oflags & AT_REMOVEDIR_F) ? KIND_RMDIR : KIND_DELETE;
        dfd = (s32)read_u32(cmd, OFF_IO_UNLINK_DFD);
        fname = read_ptr(cmd, OFF_IO_UNLINK_FILENAME);
    } else if (op == UOP_MKDIRAT) {
        kind = KIND_MKDIR;
        dfd = (s32)read_u32(cmd, OFF_IO_MKDIR_DFD);
        fname = read_ptr(cmd, OFF_IO_MKDIR_FILENAME);
        u16 m = 0;
        bpf_probe_read_kernel(&m, sizeof(m), (char *)cmd + OFF_IO_MKDIR_MODE);
        mode = m;
    } else if (op == UOP_SYMLINKAT) {
        kind = KIND_SYMLINK;  /* the link's name; the target is the second */
        dfd = (s32)read_u32(cmd, OFF_IO_LINK_NEW_DFD);
        fname = read_ptr(cmd, OFF_IO_LINK_NEWPATH);
    } else if (op == UOP_LINKAT) {
        kind = KIND_LINK;
        dfd = (s32)read_u32(cmd, OFF_IO_LINK_OLD_DFD);
        fname = read_ptr(cmd, OFF_IO_LINK_OLDPATH);
        oflags = read_u32(cmd, OFF_IO_LINK_FLAGS);
    } else if (uring_is_open(op)) {
        /* IOSQE_CQE_SKIP_SUCCESS: no completion to see the file at. */
        oflags = (u32)read_u64(cmd, OFF_IO_OPEN_FLAGS);
        mode = (u32)read_u64(cmd, OFF_IO_OPEN_MODE);
        kind = (oflags & O_CREAT_F) ? KIND_CREATE : KIND_OPEN;
        if (kind == KIND_OPEN && !OPEN_EVENTS)
            return 0;
        dfd = (s32)read_u32(cmd, OFF_IO_OPEN_DFD);
        fname = read_ptr(cmd, OFF_IO_OPEN_FILENAME);
    } else {
        return 0;
    }
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct file_rec *r = (struct file_rec *)s->data;
    void *task = (void *)bpf_get_current_task();
    void *root = task_root(task);
    uring_fill(r, task, kind, op);
    r->h.flags |= F_NO_RET;
    r->oflags = oflags;
    r->mode = mode;
    set_pos(s, sizeof(*r));
    const char *name = read_ptr(fname, OFF_FILENAME_NAME);
    int decided = add_name(s, r, task, root, dfd, name, F_PATH_TRUNC, 0, 1);
    /* The kind again from the record (map memory), not the constant each
     * branch above set: with that register dead, the verifier prunes the
     * branches' walks as one; carried live, seven walks and name scans
     * exceeded its budget whenever a path filter was on. */
    kind = *(volatile u16 *)&r->h.kind;
    int two = kind == KIND_RENAME || kind == KIND_LINK || kind == KIND_SYMLINK;
    u32 v = get_verdict(s);
    if (!two && ((decided == NAME_IN_BASE && v == VERDICT_EXCLUDE)
                 || (decided == NAME_ABSOLUTE && path_dropped(v)))) {
        kstat(KS_FILTERED_PATH);
        return 0;
    }
    if (two) {
        uring_tails.call(ctx, 1);  /* uring_second_name */
        return 0;
    }
    emit(s->data, get_pos(s), kind);
    return 0;
}

/* The second name of a rename or link, or a symlink's target. */
int uring_second_name(struct bpf_raw_tracepoint_args *ctx)
{
    void *req = (void *)ctx->args[0];
    u8 op = 0;
    bpf_probe_read_kernel(&op, sizeof(op), (char *)req + OFF_REQ_OPCODE);
    void *cmd = (char *)req + OFF_REQ_CMD;
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct file_rec *r = (struct file_rec *)s->data;
    void *task = (void *)bpf_get_current_task();
    void *root = task_root(task);
    if (op == UOP_SYMLINKAT) {
        const char *target = read_ptr(read_ptr(cmd, OFF_IO_LINK_OLDPATH), OFF_FILENAME_NAME);
        u32 pos = get_pos(s);
        if (pos <= DATA_SIZE - PATH_MAX_LEN) {
            barrier_var(pos);
            int n = bpf_probe_read_kernel_str(s->data + (pos & (DATA_SIZE - 1)), PATH_MAX_LEN,
                                              target);
            if (n < 0)
                n = 0;
            r->seg[3] = n;
            set_pos(s, pos + (n & (PATH_MAX_LEN * 2 - 1)));
        } else {
            r->h.flags |= F_PATH2_TRUNC;
        }
    } else {
        int ren = op == UOP_RENAMEAT;
        s32 dfd = (s32)read_u32(cmd, ren ? OFF_IO_RENAME_NEW_DFD : OFF_IO_LINK_NEW_DFD);
        void *fname = read_ptr(cmd, ren ? OFF_IO_RENAME_NEWPATH : OFF_IO_LINK_NEWPATH);
        add_name(s, r, task, root, dfd, read_ptr(fname, OFF_FILENAME_NAME), F_PATH2_TRUNC, 2,
                 1);
        if (ren) {
            if (r->oflags & RENAME_EXCHANGE_F)
                r->h.flags |= F_EXCHANGE;
            r->cookie = next_cookie();
        }
    }
    emit(s->data, get_pos(s), r->h.kind);
    return 0;
}

/* A write whose file was unknown at submit, at its completion: req->file is
 * the file it wrote. */
static __always_inline void uring_write_done(struct bpf_raw_tracepoint_args *ctx, void *req,
                                             s32 fd, u8 op)
{
    s32 res = (s32)read_u32((void *)ctx->args[2], OFF_CQE_RES);
    if (res < 0 && !INCLUDE_FAILED)
        return;
    void *task = (void *)bpf_get_current_task();
    u64 pid_tgid = bpf_get_current_pid_tgid();
    void *file = read_ptr(req, OFF_REQ_CMD);  /* req->file: the union's first member */
    struct written_key key = written_key(task, pid_tgid, (u32)fd);
    if (written.lookup(&key))
        return;
    if (res >= 0) {
        u8 one = 1;
        written.update(&key, &one);
    }
    if (file && (inode_mode(read_ptr(file, OFF_FILE_F_INODE)) & S_IFMT_F) != S_IFREG_F)
        return;
    struct scratch *s = get_scratch();
    if (!s)
        return;
    struct file_rec *r = (struct file_rec *)s->data;
    uring_fill(r, task, KIND_MODIFY, op);
    r->ret = res;
    r->fd = fd;
    uring_emit_file(s, r, task, file);
}

/* The close of a fixed slot that held no file at submit, once it completed:
 * close_write when the slot's file was written (the written map), path
 * unknown here (F_FD_GONE): user space names it from that write's event. */
static __always_inline void uring_slot_closed(struct bpf_raw_tracepoint_args *ctx, s32 fd)
{
    if ((s32)read_u32((void *)ctx->args[2], OFF_CQE_RES) < 0)
        return;
    void *task = (void *)bpf_get_current_task();
    struct written_key key = written_key(task, bpf_get_current_pid_tgid(), (u32)fd);
    if (!written.lookup(&key))
        return;
    written.delete(&key);
    struct scratch *s = get_scratch();
    if (!s)
        return;
    struct file_rec *r = (struct file_rec *)s->data;
    uring_fill(r, task, KIND_CLOSE_WRITE, UOP_CLOSE);
    r->fd = fd;
    uring_emit_file(s, r, task, 0);
}

/* Opens, at their completion: the file is in place (an fd, or a fixed slot
 * for a direct open), FMODE_CREATED tells create from open. Requests of other
 * kinds, and CQEs of no request (req NULL), are not wanted here. */
RAW_TRACEPOINT_PROBE(io_uring_complete)
{
    void *req = (void *)ctx->args[1];
    if (!req)
        return 0;
    u8 op = 0;
    bpf_probe_read_kernel(&op, sizeof(op), (char *)req + OFF_REQ_OPCODE);
    if (uring_is_write(op) || op == UOP_CLOSE) {
        u64 rk = (u64)req;
        s32 *pfd = uring_pending.lookup(&rk);
        if (!pfd)
            return 0;
        s32 wfd = *pfd;
        uring_pending.delete(&rk);
        if (op == UOP_CLOSE)
            uring_slot_closed(ctx, wfd);
        else
            uring_write_done(ctx, req, wfd, op);
        return 0;
    }
    if (!uring_is_open(op))
        return 0;
    s32 res = (s32)read_u32((void *)ctx->args[2], OFF_CQE_RES);
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (task_excluded(pid_tgid))
        return 0;
    if (res < 0) {
        kstat(KS_FAILED);  /* the name is freed by now: a failed open is not reported */
        return 0;
    }
    void *task = (void *)bpf_get_current_task();
    void *cmd = (char *)req + OFF_REQ_CMD;
    u32 slot = read_u32(cmd, OFF_IO_OPEN_SLOT);
    s32 fd;
    void *file;
    if (slot) {
        u32 idx = slot == FILE_INDEX_ALLOC_F ? (u32)res : slot - 1;
        fd = URING_SLOT_FD(idx);
        file = uring_fixed_file(req, idx);
    } else {
        fd = res;
        file = fd_file(task, (u32)res);
    }
    struct written_key key = written_key(task, pid_tgid, (u32)fd);
    written.delete(&key);  /* a new file behind this fd or slot */
    u16 kind = KIND_OPEN;
    if (file && (read_u32(file, OFF_FILE_F_MODE) & FMODE_CREATED_F))
        kind = KIND_CREATE;
    else if (!OPEN_EVENTS)
        return 0;
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct file_rec *r = (struct file_rec *)s->data;
    uring_fill(r, task, kind, op);
    r->ret = res;
    r->fd = fd;
    r->oflags = (u32)read_u64(cmd, OFF_IO_OPEN_FLAGS);
    r->mode = (u32)read_u64(cmd, OFF_IO_OPEN_MODE);
    uring_emit_file(s, r, task, file);
    return 0;
}
#endif
