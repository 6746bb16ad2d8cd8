/* All snoopbus probes in one BCC module: one ring buffer, one loss table.
 *
 * Maps, and every helper that calls a map method, live in this file because
 * BCC rewrites map method calls only in the main source, not in headers.
 * Extra -D constants: ARGV_MAX, TASK_STORAGE, and those files.h lists. */
#include "common.h"
#include "proc.h"
#include "files.h"

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(scratch_map, struct scratch, MAX_CPUS);
/* Records the ring buffer had no room for, per CPU and per kind. */
BPF_PERCPU_ARRAY(lost, u64, KIND_MAX);

/* File probes. sys_spec: syscall nr -> what it does (zero: not wanted),
 * filled from collector/syscalls.py after the tail programs are in place. */
BPF_ARRAY(sys_spec, struct sc_spec, 512);
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
        .mm = (u64)read_ptr(task, OFF_TASK_MM), .tgid = pid_tgid >> 32, .fd = fd,
    };
    return k;
}
BPF_PROG_ARRAY(tails, 4);
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
 * record. The reader also drains on its poll timeout, so a quiet CPU's
 * records wait at most that long. */
#define WAKEUP_EVERY 64
BPF_PERCPU_ARRAY(emitted, u64, 1);

/* Copies the assembled record into the ring buffer; counts it lost if full. */
static __always_inline void emit(u8 *buf, u32 size, u16 kind)
{
    u32 zero = 0;
    u64 flags = BPF_RB_NO_WAKEUP_F;
    u64 *n = emitted.lookup(&zero);
    if (n && (++(*n) & (WAKEUP_EVERY - 1)) == 0)
        flags = BPF_RB_FORCE_WAKEUP_F;
    /* Records are shorter than DATA_SIZE; the mask is for the verifier. */
    size &= DATA_SIZE - 1;
    if (events.ringbuf_output(buf, size, flags) < 0)
        count_lost(kind);
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

RAW_TRACEPOINT_PROBE(sys_enter)
{
    u32 nr = ctx->args[1];
    struct sc_spec *sp = sys_spec.lookup(&nr);
    if (!sp || !sp->shape)
        return 0;
    /* A 32-bit (ia32) syscall has other numbers: ia32's 3 is read, not close.
     * TS_COMPAT in thread_info.status marks one; those are not decoded. */
    void *task = (void *)bpf_get_current_task();
    if (read_u32(task, OFF_TASK_TI_STATUS) & TS_COMPAT_F)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (task_excluded(pid_tgid)) {
        if ((pid_tgid >> 32) != SELF_TGID)
            kstat(KS_FILTERED_TASK);
        return 0;
    }
    void *regs = (void *)ctx->args[0];
    if (sp->shape == SHAPE_FD && sp->kind == KIND_MODIFY) {
        /* Only the first write through an fd is an event: skip the rest here. */
        long off = sp->fd == 2 ? OFF_REGS_ARG2 : OFF_REGS_ARG0;  /* splice family: arg 2 */
        struct written_key key = written_key(task, pid_tgid, (u32)read_u64(regs, off));
        if (written.lookup(&key))
            return 0;
    }
    if (sp->shape == SHAPE_CLOSE) {
        /* close(fd), or dup2/dup3(old, fd), which closes fd first when it
         * is open and differs from old. */
        u32 fd = read_u64(regs, sp->fd == 1 ? OFF_REGS_ARG1 : OFF_REGS_ARG0);
        if (sp->fd == 1 && fd == (u32)read_u64(regs, OFF_REGS_ARG0))
            return 0;
        struct written_key key = written_key(task, pid_tgid, fd);
        written.delete(&key);
        tails.call(ctx, 1);  /* close_at_enter */
        return 0;
    }
    struct sc_args *a = inflight_get(1);
    if (!a) {
        count_lost(LOST_INFLIGHT_FULL);
        return 0;
    }
    /* The six argument registers lie within 64 bytes of pt_regs (checked by
     * probes.py): one read instead of six. */
    u64 r[8] = {};
    bpf_probe_read_kernel(r, sizeof(r), (char *)regs + OFF_REGS_ARGS_LO);
    a->args[0] = r[(OFF_REGS_ARG0 - OFF_REGS_ARGS_LO) / 8];
    a->args[1] = r[(OFF_REGS_ARG1 - OFF_REGS_ARGS_LO) / 8];
    a->args[2] = r[(OFF_REGS_ARG2 - OFF_REGS_ARGS_LO) / 8];
    a->args[3] = r[(OFF_REGS_ARG3 - OFF_REGS_ARGS_LO) / 8];
    a->args[4] = r[(OFF_REGS_ARG4 - OFF_REGS_ARGS_LO) / 8];
    a->args[5] = r[(OFF_REGS_ARG5 - OFF_REGS_ARGS_LO) / 8];
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
                                     int base_seg)
{
    u32 start = get_pos(s);
    char first = 0;
    int walked = 0;
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
    int n = bpf_probe_read_user_str(s->data + (mid & (DATA_SIZE - 1)), PATH_MAX_LEN, name);
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
    r->oflags = a->sp.flags >= 0 ? (u32)sc_arg(a, a->sp.flags) : a->sp.const_flags;
    r->mode = a->sp.mode >= 0 ? (u32)sc_arg(a, a->sp.mode) : 0;
    r->fd = a->sp.fd >= 0 ? (s32)sc_arg(a, a->sp.fd) : -1;
    r->seg[0] = r->seg[1] = r->seg[2] = r->seg[3] = 0;
}

/* Stage one at exit: the first file (fd or first name), then stage two for a
 * second name, else emit. Split so each program is verified on its own. */
RAW_TRACEPOINT_PROBE(sys_exit)
{
    void *regs = (void *)ctx->args[0];
    u32 nr = read_u64(regs, OFF_REGS_ORIG_AX);
    struct sc_spec *sp = sys_spec.lookup(&nr);
    if (!sp || !sp->shape)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct sc_args *a = inflight_get(0);
    if (!a || !a->live)
        return 0;
    if (a->nr != nr) {  /* left over from a call whose exit we never saw */
        inflight_done(a);
        return 0;
    }
    s64 ret = (s64)ctx->args[1];
    if (ret < 0 && !INCLUDE_FAILED) {
        kstat(KS_FAILED);
        inflight_done(a);
        return 0;
    }
    struct scratch *s = get_scratch();
    if (!s) {
        inflight_done(a);
        return 0;
    }
    struct file_rec *r = (struct file_rec *)s->data;
    void *task = (void *)bpf_get_current_task();
    void *root = (char *)read_ptr(task, OFF_TASK_FS) + OFF_FS_ROOT;
    u16 kind = a->sp.kind;
    fill_common(r, task, kind, ret, a);
    set_pos(s, sizeof(*r));
    set_verdict(s, VERDICT_NONE);

    void *file = 0;
    if (a->sp.shape == SHAPE_FDRET && ret >= 0) {
        file = fd_file(task, (u32)ret);
        r->fd = (s32)ret;
        if (a->sp.how) {
            u64 f = 0;
            bpf_probe_read_user(&f, sizeof(f), (void *)sc_arg(a, 2));
            r->oflags = (u32)f;
        }
        struct written_key key = written_key(task, pid_tgid, (u32)ret);
        written.delete(&key);  /* a new file behind this fd number */
        if (file && (read_u32(file, OFF_FILE_F_MODE) & FMODE_CREATED_F))
            kind = KIND_CREATE;
        else if (!OPEN_EVENTS)
            goto done;
        else
            kind = KIND_OPEN;
    } else if (a->sp.shape == SHAPE_FDRET) {
        /* Failed open: reported as the create or open it tried to be. */
        kind = (r->oflags & O_CREAT_F) ? KIND_CREATE : KIND_OPEN;
        if (kind == KIND_OPEN && !OPEN_EVENTS)
            goto done;
    } else if (a->sp.shape == SHAPE_FD) {
        file = fd_file(task, (u32)r->fd);
        if (kind == KIND_MODIFY) {
            struct written_key key = written_key(task, pid_tgid, (u32)r->fd);
            u8 one = 1;
            if (ret >= 0)  /* a failed write (--include-failed) changed nothing */
                written.update(&key, &one);
            if (file && (inode_mode(read_ptr(file, OFF_FILE_F_INODE)) & S_IFMT_F) != S_IFREG_F)
                goto done;  /* pipes, sockets, ttys: not file changes */
            if (file && fd_cloexec(task, (u32)r->fd))
                r->h.flags |= F_CLOEXEC;  /* user space closes it at the exec record */
        }
    } else if (kind == KIND_DELETE && (r->oflags & AT_REMOVEDIR_F) && a->sp.flags >= 0) {
        kind = KIND_RMDIR;
    }
    r->h.kind = kind;

    /* One walk site: the file's path, or (chdir, naming) the new cwd. */
    const void *walk = file ? (char *)file + OFF_FILE_F_PATH : 0;
    if (kind == KIND_CHDIR && ret >= 0)
        walk = (char *)read_ptr(task, OFF_TASK_FS) + OFF_FS_PWD;
    if (walk) {
        if (file)
            fill_inode(r, file);
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
    void *root = (char *)read_ptr(task, OFF_TASK_FS) + OFF_FS_ROOT;
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
        int decided = add_name(s, r, task, root, dfd, name, F_PATH_TRUNC, 0);
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
    void *root = (char *)read_ptr(task, OFF_TASK_FS) + OFF_FS_ROOT;
    if (a->sp.name2 >= 0) {
        const char *name = (const char *)sc_arg(a, a->sp.name2);
        s64 dfd = a->sp.dfd2 >= 0 ? (s64)(s32)sc_arg(a, a->sp.dfd2) : AT_FDCWD_VAL;
        add_name(s, r, task, root, dfd, name, F_PATH2_TRUNC, 2);  /* verdict: user space */
        if (r->h.kind == KIND_RENAME) {
            if (r->oflags & RENAME_EXCHANGE_F && a->sp.flags >= 0)
                r->h.flags |= F_EXCHANGE;
            /* Unique per host and boot, across collector restarts: boot time
             * (strictly increasing per CPU) * CPUs + CPU; user space shifts
             * it left once so an exchange's two moves get two cookies. */
            u32 zero = 0;
            u64 *last = cookie_ts.lookup(&zero);
            u64 t = bpf_ktime_get_boot_ns();
            if (last) {
                if (t <= *last)
                    t = *last + 1;
                *last = t;
            }
            r->cookie = t * MAX_CPUS + bpf_get_smp_processor_id();
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

/* close(fd) (or the close dup2/dup3 make of their target) at enter, while the
 * fd still names its file: close_write when it was open for writing on a
 * regular file. Its result is not known (F_NO_RET);
 * close releases a valid fd even when it reports an error. */
int close_at_enter(struct bpf_raw_tracepoint_args *ctx)
{
    void *regs = (void *)ctx->args[0];
    u32 nr = ctx->args[1];
    struct sc_spec *sp = sys_spec.lookup(&nr);
    u32 fd = read_u64(regs, sp && sp->fd == 1 ? OFF_REGS_ARG1 : OFF_REGS_ARG0);
    void *task = (void *)bpf_get_current_task();
    void *file = fd_file(task, fd);
    if (!file)
        return 0;
    if (!(read_u32(file, OFF_FILE_F_MODE) & FMODE_WRITE_F))
        return 0;
    if ((inode_mode(read_ptr(file, OFF_FILE_F_INODE)) & S_IFMT_F) != S_IFREG_F)
        return 0;
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct file_rec *r = (struct file_rec *)s->data;
    void *root = (char *)read_ptr(task, OFF_TASK_FS) + OFF_FS_ROOT;
    fill_hdr(&r->h, task, KIND_CLOSE_WRITE);
    r->h.flags |= F_NO_RET;
    r->ret = 0;
    r->cookie = 0;
    r->mnt_ns = mnt_ns_inum(task);
    r->nr = nr;
    r->oflags = read_u32(file, OFF_FILE_F_FLAGS);
    r->mode = 0;
    r->fd = fd;
    r->seg[1] = r->seg[2] = r->seg[3] = 0;
    fill_inode(r, file);
    set_pos(s, sizeof(*r));
    walk_path(s, (char *)file + OFF_FILE_F_PATH, root, &r->h.flags, F_PATH_TRUNC, PATH_FILTERS);
    r->seg[0] = get_pos(s) - sizeof(*r);
    if (path_dropped(get_verdict(s))) {
        kstat(KS_FILTERED_PATH);
        return 0;
    }
    emit(s->data, get_pos(s), KIND_CLOSE_WRITE);
    return 0;
}
