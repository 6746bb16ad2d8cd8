/* Shared by every snoopbus probe program and mirrored by collector/records.py
 * (tests/collector/test_record_layout.py holds the record structs to its formats).
 *
 * Kernel structs are never dereferenced through headers: BCC compiles against
 * whatever headers are installed, which may be from another kernel. Every
 * field is read at an OFF_* offset that the loader takes from the running
 * kernel's BTF and passes with -D.
 *
 * The main program (snoopbus.bpf.c) defines the maps and the helpers that
 * use them. Required -D constants: MAX_CPUS, DATA_SIZE (power of two), SLACK,
 * NAME_SZ, PATH_MAX_LEN, PATH_DEPTH_MAX, RINGBUF_PAGES, and the OFF_* below.
 */
#ifndef SNOOPBUS_COMMON_H
#define SNOOPBUS_COMMON_H

/* Record kinds: the first field the user-space decoder dispatches on. */
#define KIND_EXEC 1
#define KIND_EXIT 2
/* N more file records of the thread identical to its last one (isolation:
 * coalesced in the kernel, see emit_file in snoopbus.bpf.c). */
#define KIND_REPEAT 26
#define KIND_MAX 32

/* Record flags (rec_hdr.flags, 16 bits): the one table of them, for every
 * record kind; collector/records.py mirrors it and
 * tests/collector/test_record_constants.py checks that both agree and no two overlap. */
#define F_EXE_TRUNC   (1 << 0)  /* exe path deeper or longer than the limits */
#define F_CWD_TRUNC   (1 << 1)
#define F_ARGV_TRUNC  (1 << 2)  /* argv longer than ARGV_MAX */
#define F_PATH_TRUNC  (1 << 3)
#define F_PATH2_TRUNC (1 << 4)
#define F_FD_GONE     (1 << 5)  /* the fd did not resolve to a file */
#define F_NO_RET      (1 << 6)  /* reported at enter: ret unknown */
#define F_EXCHANGE    (1 << 7)  /* renameat2(RENAME_EXCHANGE) */
/* bit 8 is free (was F_CLOEXEC: the exec scan in closes.h reports those files) */
#define F_TOUCHED     (1 << 9)  /* name-based: touched inodes follow the segments (files.h) */
#define F_SCRIPT      (1 << 10) /* exec: the #! script's name (NUL-terminated) follows argv */
#define F_TMPFILE     (1 << 11) /* the file was opened with O_TMPFILE (closes.h) */
/* close_write released by no close(): bits 12-13 say what (SCAN_* in closes.h) */
#define F_CLOSED_BY_SHIFT 12
#define F_CLOSED_BY_MASK  (3 << F_CLOSED_BY_SHIFT)
/* bit 14 is free */
#define F_URING       (1 << 15) /* submitted through io_uring: nr holds the opcode (uring.h) */

struct rec_hdr {
    u64 ts;          /* CLOCK_BOOTTIME ns */
    u64 cgroup;      /* cgroup v2 id */
    u32 pid;         /* tgid */
    u32 tid;
    u32 ppid;
    u32 uid;
    u32 gid;
    u16 kind;
    u16 flags;
    char comm[16];
};

/* KIND_REPEAT: the thread's last file record stands for `count` more. */
struct repeat_rec {
    struct rec_hdr h;
    u32 count;
    u16 of_kind;  /* the kind of the record repeated */
    u16 _pad;
};

/* Per-CPU scratch where a variable-length record is assembled before it is
 * copied into the ring buffer with its real size. SLACK lets the verifier
 * see that a write of up to SLACK bytes at (pos & (DATA_SIZE-1)) stays inside.
 * A plain array indexed by CPU: per-CPU map values are capped at 32 KiB. */
struct scratch {
    /* Write position in data. Kept in map memory and accessed through
     * volatile pointers so the verifier knows nothing of its value: paths
     * through the path walks then look alike and are pruned, instead of each
     * early exit re-verifying all that follows (which exceeds its budget). */
    u32 pos;
    u32 verdict;  /* path filter verdict of the last walk (VERDICT_*), same technique */
    /* Handed from sys_enter to its close_at_enter tail call on this CPU: the
     * fd closing and the syscall's sys_spec key (no second decode there). */
    u32 close_fd;
    u32 close_nr;
    u8 data[DATA_SIZE + SLACK];
};

static __always_inline u32 get_pos(struct scratch *s)
{
    return *(volatile u32 *)&s->pos;
}

static __always_inline void set_pos(struct scratch *s, u32 pos)
{
    *(volatile u32 *)&s->pos = pos;
}

static __always_inline u32 get_verdict(struct scratch *s)
{
    return *(volatile u32 *)&s->verdict;
}

static __always_inline void set_verdict(struct scratch *s, u32 v)
{
    *(volatile u32 *)&s->verdict = v;
}

/* Path filter verdicts: the nearest filtered ancestor directory decides. */
#define VERDICT_NONE    0
#define VERDICT_INCLUDE 1
#define VERDICT_EXCLUDE 2

/* Defined in the main .bpf.c: BCC rewrites map method calls only there. */
static __always_inline struct scratch *get_scratch(void);
static __always_inline void emit(u8 *buf, u32 size, u16 kind);
static __always_inline u32 dir_verdict(void *dentry);

/* Hides a value from clang's range analysis so a bounds mask survives. */
#define barrier_var(v) asm volatile("" : "+r"(v))

static __always_inline void *read_ptr(const void *base, long off)
{
    void *p = 0;
    bpf_probe_read_kernel(&p, sizeof(p), (const char *)base + off);
    return p;
}

static __always_inline u64 read_u64(const void *base, long off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 read_u32(const void *base, long off)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

/* Reads along pointer chains from the current task (its parent, nsproxy,
 * files, fs, mm). With TASK_STORAGE (5.11+, which has
 * bpf_get_current_task_btf) they are plain loads through the task's BTF
 * pointer: the verifier types each one against the kernel's BTF and the JIT
 * makes it a load that reads 0 on a fault, as a failed probe read does; a
 * helper call saved per field, on every record. Without, probe reads from
 * `task`. Every `task` passed here is the current task. */
#if TASK_STORAGE
#define CUR_TASK(task) ((void *)bpf_get_current_task_btf())
#define CUR_PTR(base, off) (*(void *volatile *)((char *)(base) + (off)))
#define CUR_U32(base, off) (*(volatile u32 *)((char *)(base) + (off)))
#else
#define CUR_TASK(task) ((void *)(task))
#define CUR_PTR(base, off) read_ptr(base, off)
#define CUR_U32(base, off) read_u32(base, off)
#endif

static __always_inline void fill_hdr(struct rec_hdr *h, void *task, u16 kind)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 uid_gid = bpf_get_current_uid_gid();
    void *parent = CUR_PTR(CUR_TASK(task), OFF_TASK_REAL_PARENT);

    h->ts = bpf_ktime_get_boot_ns();
    h->cgroup = bpf_get_current_cgroup_id();
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->ppid = CUR_U32(parent, OFF_TASK_TGID);
    h->uid = (u32)uid_gid;
    h->gid = uid_gid >> 32;
    h->kind = kind;
    h->flags = 0;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

/* Reads a struct path's two pointers (one read when they are adjacent). */
static __always_inline void read_path(const void *path, void **dentry, void **mnt)
{
#if OFF_PATH_MNT < 16 && OFF_PATH_DENTRY < 16
    void *p[2] = {};
    bpf_probe_read_kernel(p, sizeof(p), path);
    *mnt = p[OFF_PATH_MNT / 8];
    *dentry = p[OFF_PATH_DENTRY / 8];
#else
    *mnt = read_ptr(path, OFF_PATH_MNT);
    *dentry = read_ptr(path, OFF_PATH_DENTRY);
#endif
}

/* A dentry's parent and name pointer: one read when they lie within 32 bytes
 * (d_parent, then d_name), as on every kernel since 3.x. Probe reads are the
 * walk's cost, so each one saved is per path component. */
#define DNAME_PTR_OFF (OFF_DENTRY_D_NAME + OFF_QSTR_NAME)
#if DNAME_PTR_OFF > OFF_DENTRY_D_PARENT && DNAME_PTR_OFF - OFF_DENTRY_D_PARENT <= 24 \
    && (DNAME_PTR_OFF - OFF_DENTRY_D_PARENT) % 8 == 0
#define DENTRY_ONE_READ 1
#endif

static __always_inline void read_dentry(const void *dentry, void **parent, const char **name)
{
#ifdef DENTRY_ONE_READ
    void *p[4] = {};
    bpf_probe_read_kernel(p, DNAME_PTR_OFF - OFF_DENTRY_D_PARENT + 8,
                          (const char *)dentry + OFF_DENTRY_D_PARENT);
    *parent = p[0];
    *name = p[(DNAME_PTR_OFF - OFF_DENTRY_D_PARENT) / 8];
#else
    *parent = read_ptr(dentry, OFF_DENTRY_D_PARENT);
    *name = read_ptr(dentry, DNAME_PTR_OFF);
#endif
}

/* Appends the path of `path` (a struct path *) to s->data at s->pos, as
 * NUL-terminated names from the leaf up; user space reverses them. Walks
 * d_parent, crossing mounts through struct mount, and stops at `root` (the
 * task's root, so the path is the one the task sees) or at the top of the
 * mount tree. Sets trunc_flag when depth or space ran out. With `check`,
 * also looks each dentry up in the path filter until one has a verdict,
 * which it leaves in s->verdict (the nearest filtered ancestor wins). */
static __always_inline void walk_path(struct scratch *s, const void *path, const void *root,
                                      u16 *flags, u16 trunc_flag, int check)
{
    void *dentry, *vfsmnt, *root_dentry, *root_mnt;
    read_path(path, &dentry, &vfsmnt);
    read_path(root, &root_dentry, &root_mnt);
    void *mnt = (char *)vfsmnt - OFF_MOUNT_MNT;
    void *mnt_root = read_ptr(vfsmnt, OFF_VFSMOUNT_MNT_ROOT);  /* re-read at crossings only */
    u32 start = get_pos(s);

    if (check)
        set_verdict(s, VERDICT_NONE);
    for (int i = 0; i < PATH_DEPTH_MAX; i++) {
        if (check && get_verdict(s) == VERDICT_NONE)
            set_verdict(s, dir_verdict(dentry));
        if (dentry == root_dentry && vfsmnt == root_mnt)
            return;
        void *parent;
        const char *name;
        read_dentry(dentry, &parent, &name);
        /* Its own parent yet not a mount's root: a pseudo file (memfd, shmem
         * mapping) on an internal mount. Its name is all its path. */
        int pseudo = dentry == parent && dentry != mnt_root;
        if (!pseudo && (dentry == mnt_root || dentry == parent)) {
            void *mnt_parent = read_ptr(mnt, OFF_MOUNT_MNT_PARENT);
            if (mnt_parent == mnt || !mnt_parent)
                return;  /* top of this mount tree */
            dentry = read_ptr(mnt, OFF_MOUNT_MNT_MOUNTPOINT);
            mnt = mnt_parent;
            vfsmnt = (char *)mnt + OFF_MOUNT_MNT;
            mnt_root = read_ptr(vfsmnt, OFF_VFSMOUNT_MNT_ROOT);
            continue;
        }
        u32 pos = get_pos(s);
        if (pos - start > PATH_MAX_LEN || pos > DATA_SIZE - NAME_SZ)
            break;
        int n = bpf_probe_read_kernel_str(s->data + (pos & (DATA_SIZE - 1)), NAME_SZ, name);
        if (n <= 0)
            break;
        set_pos(s, pos + n);
        if (pseudo)
            return;
        dentry = parent;
    }
    *flags |= trunc_flag;
}

#endif
