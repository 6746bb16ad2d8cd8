/* File records and syscall specs: the layout collector/records.py decodes and
 * collector/syscalls.py fills.
 *
 * Hook: raw tracepoints raw_syscalls:sys_enter/sys_exit. The classic
 * syscalls:* tracepoints need tracefs (not mounted on a fresh host) and one
 * attachment per syscall; the raw pair needs neither, and its cost for an
 * unwanted syscall is one array lookup on the syscall number.
 * At enter the arguments are saved per thread; at exit, once the result is
 * known, the record is built: paths of fd-returning and fd-based calls from
 * the file itself, name-based calls as (walked base dir, user string) that
 * user space joins and folds.
 *
 * What each event means, and its limits:
 *  create       open family with FMODE_CREATED set: the call made the file;
 *               mknod/mknodat of any node (regular, FIFO, socket, device).
 *               A failed open is reported (--include-failed) as the create
 *               (O_CREAT) or open it tried to be.
 *  open         every successful open that did not create (opt-in).
 *  modify       the first write-family call (write, pwrite, writev, pwritev,
 *               sendfile, splice, copy_file_range, ftruncate, fallocate) on a
 *               regular file per (tgid, fd) since that fd number last named
 *               another file (open, close, dup2/dup3, dup, F_DUPFD,
 *               close_range, exec); an open with O_TRUNC of an existing
 *               regular file (it marks the fd written); truncate by name
 *               (each call); mmap of a file open for writing with MAP_SHARED
 *               (each call: the mapping outlives the fd; the fd is not
 *               marked). Fds duped or inherited over fork count on their own;
 *               the writes through a mapping make no syscall and are not seen;
 *               io_uring requests are hooked on their own (uring.h).
 *  close_write  the release of an open file opened for writing on a regular
 *               file (written or not), as inotify's IN_CLOSE_WRITE: when its
 *               last reference goes. close() (and the implicit close of
 *               dup2/dup3's target) reports it at entry when the fd holds
 *               the file's only reference (file_refs; ret unknown, F_NO_RET):
 *               a dup'd fd or a forked child's keeps it open. An exit, an
 *               exec (FD_CLOEXEC) and close_range release every file all of
 *               whose references are among the fds they close (closes.h).
 *               A reference held elsewhere when the fd closes (a shared
 *               mapping, another thread's call in flight on it) defers the
 *               release past what any probe here sees: no event then.
 *  delete, rmdir, mkdir, link, symlink, attrib (chmod/chown/utimes
 *               families, name- and fd-based; set/removexattr families as
 *               KIND_XATTR with the attribute's name), moved_from + moved_to (rename,
 *               renameat, renameat2; RENAME_EXCHANGE is two moves).
 * Paths: from the file itself when there is one (exact, the real dentries,
 * as seen from the task's root); otherwise the walked base plus the name
 * string; a string with a directory part is resolved again by lookup in user
 * space and checked against the inodes the call changed (F_TOUCHED, see
 * name_touched in snoopbus.bpf.c and collector/resolve.py).
 * ia32 syscalls (int $0x80, 32-bit programs) are decoded the same way from
 * their own numbers and argument registers (TS_COMPAT marks them).
 * In another mount namespace the path is the one the process sees, and the
 * record carries that namespace (mnt_ns) so consumers can tell.
 *
 * Extra -D constants: SELF_TGID, INCLUDE_FAILED, OPEN_EVENTS, PATH_FILTERS,
 * PREFIX_SCAN, HAVE_INCLUDES, COMM_FILTER, UID_FILTER, CGROUP_FILTER, and
 * the OFF_* below.
 */
#ifndef SNOOPBUS_FILES_H
#define SNOOPBUS_FILES_H

/* Record kinds, one per event type (loss is counted per kind). */
#define KIND_OPEN        3
#define KIND_CREATE      4
#define KIND_MODIFY      5
#define KIND_CLOSE_WRITE 6
#define KIND_DELETE      7
#define KIND_RENAME      8   /* one record -> moved_from + moved_to */
#define KIND_ATTRIB      9
#define KIND_MKDIR       10
#define KIND_RMDIR       11
#define KIND_LINK        12
#define KIND_SYMLINK     13
/* 14 was close_range's record: closes.h scans the fd table instead. */
#define KIND_MOUNT       15  /* the caller's mount table changed */
#define KIND_XATTR       20  /* attrib of an extended attribute: its name in seg[3] */
#define KIND_CHDIR       25  /* naming: chdir/fchdir succeeded: seg[0] is the new cwd */
/* Not records: slots of the lost map for other losses. */
#define LOST_INFLIGHT_FULL 30  /* no room to save a syscall's arguments */

/* How a syscall names its file. */
#define SHAPE_FDRET 1   /* returns an fd: open family */
#define SHAPE_FD    2   /* acts on an fd argument */
#define SHAPE_NAME  3   /* names files relative to a dirfd or the cwd */
#define SHAPE_CLOSE 4   /* close: handled at enter, while the fd still exists */
#define SHAPE_ARGS  5   /* no file: the arguments, for user space (mount) */
#define SHAPE_MMAP  6   /* mmap: a shared mapping of a file open for writing */

/* ia32 (int $0x80, 32-bit processes) syscalls: their own numbers, kept in
 * sys_spec at NR_IA32_BASE + nr; the slot at nr says whether one is there. */
#define NR_IA32_BASE 512
/* x32 (CONFIG_X86_X32_ABI) makes the 64-bit calls with this bit set; its own
 * numbers 512..547 (writev 516, pwritev 535, pwritev2 547 ...) are not decoded. */
#define X32_SYSCALL_BIT 0x40000000


/* Counters of what the kernel side filtered out (kstats map slots). */
#define KS_FILTERED_TASK 0  /* excluded comm, uid or cgroup */
#define KS_FILTERED_PATH 1  /* excluded (or not included) path prefix */
#define KS_FAILED        2  /* failed call, not reported without INCLUDE_FAILED */
#define KS_OVERFLOW_FULL 4  /* isolation: no room in `overflow`, counted lost per kind only */
#define KS_MAX           5

#define ARG_NONE (-1)

struct comm_key {
    char comm[16];
};

/* One syscall's entry in the sys_spec map: which argument is what. */
struct sc_spec {
    u8 shape;
    u8 kind;
    s8 fd;          /* fd argument (SHAPE_FD, SHAPE_CLOSE) */
    s8 dfd;         /* dirfd of the first name; ARG_NONE: the cwd */
    s8 name;        /* first path string */
    s8 dfd2;        /* second name (rename, link) */
    s8 name2;
    s8 target;      /* symlink target string */
    s8 flags;       /* flags argument */
    s8 mode;        /* mode argument */
    u8 how;         /* openat2: flags arg points to struct open_how */
    u8 ia32;        /* at slot nr < NR_IA32_BASE: slot NR_IA32_BASE + nr is wanted */
    u32 const_flags; /* creat: the flags it implies */
};

/* Inodes a name-based call changed (their ctime moved), for user space to
 * check the file it names after the fact against (collector/resolve.py). */
#define TOUCHED_MAX 4

/* Saved at enter in the thread's task storage, taken at exit. */
struct sc_args {
    u64 args[8];
    struct sc_spec sp;
    u32 nr;
    u32 live;  /* set at enter, cleared once its exit is handled */
    u64 touched_ino[TOUCHED_MAX];
    u32 touched_dev[TOUCHED_MAX];
    u32 ntouched;
    u32 _tpad;
};

/* Followed by four segments: path names walked from the first base (or the
 * file itself) leaf first, the first user string, then the same for the
 * second name (rename, link) or the symlink target in seg[3]. */
struct file_rec {
    struct rec_hdr h;
    s64 ret;
    u64 cookie;
    u64 ino;
    u32 dev;         /* kernel dev_t (MKDEV) of the file's super block */
    u32 mnt_ns;
    u32 nr;
    u32 oflags;      /* open flags, AT_* flags or RENAME_* flags */
    u32 mode;
    s32 fd;
    u16 seg[4];
};
/* With F_TOUCHED, the segments are followed by the inodes the call changed
 * (sc_args.touched_*), each as u64 ino, u32 dev (packed, 12 bytes). */
#define TOUCHED_SZ 12

#define TS_COMPAT_F    0x0002  /* arch/x86/include/asm/thread_info.h */
#define AT_FDCWD_VAL   (-100)
#define AT_REMOVEDIR_F 0x200
#define RENAME_EXCHANGE_F 2
#define O_CREAT_F      0100
#define O_TRUNC_F      01000
#define MAP_SHARED_F   0x01  /* also in MAP_SHARED_VALIDATE */
#define MAP_ANON_F     0x20
#define FMODE_WRITE_F  0x2
#define FMODE_CREATED_F 0x100000
#define S_IFMT_F  0170000
#define S_IFREG_F 0100000

static __always_inline u64 sc_arg(struct sc_args *a, s8 idx)
{
    return a->args[idx & 7];
}

/* The open file behind the current task's fd (0: none). */
static __always_inline void *fd_file(void *task, u32 fd)
{
    void *files = CUR_PTR(CUR_TASK(task), OFF_TASK_FILES);
    if (!files)
        return 0;
    void *fdt = CUR_PTR(files, OFF_FILES_FDT);
    if (!fdt)
        return 0;
    u32 max = CUR_U32(fdt, OFF_FDTABLE_MAX_FDS);
    if (fd >= max)
        return 0;
    void *arr = CUR_PTR(fdt, OFF_FDTABLE_FD);
    return read_ptr(arr, (long)fd * 8);
}

/* The current task's root (a struct path *): where its paths stop. */
static __always_inline void *task_root(void *task)
{
    return (char *)CUR_PTR(CUR_TASK(task), OFF_TASK_FS) + OFF_FS_ROOT;
}

/* References to an open file: fds in any table, mappings, in-flight calls.
 * FILE_REF_BIASED: a file_ref_t (6.13+) holds count - 1 and goes negative
 * once released; before, an atomic_long_t f_count holds the count. */
static __always_inline s64 file_refs(void *file)
{
    s64 c = (s64)read_u64(file, OFF_FILE_F_REF);
#if FILE_REF_BIASED
    return c < 0 ? 0 : c + 1;
#else
    return c;
#endif
}

static __always_inline u32 mnt_ns_inum(void *task)
{
    void *nsproxy = CUR_PTR(CUR_TASK(task), OFF_TASK_NSPROXY);
    if (!nsproxy)
        return 0;  /* an exiting task's is gone */
    void *mnt_ns = CUR_PTR(nsproxy, OFF_NSPROXY_MNT_NS);
    if (!mnt_ns)
        return 0;
    return CUR_U32(mnt_ns, OFF_MNT_NS_INUM);
}

static __always_inline u16 inode_mode(void *inode)
{
    u16 m = 0;
    bpf_probe_read_kernel(&m, sizeof(m), (char *)inode + OFF_INODE_I_MODE);
    return m;
}

/* An open file's f_mode, f_flags and f_inode, in one read when they lie
 * within FILE_HEAD_MAX bytes (as on x86-64 since 6.x): records ask for all
 * three, and each probe read saved is on every record. */
struct file_head {
    u32 mode;
    u32 flags;
    void *inode;
};
#define MIN2(a, b) ((a) < (b) ? (a) : (b))
#define MAX2(a, b) ((a) > (b) ? (a) : (b))
#define FILE_HEAD_LO (MIN2(MIN2(OFF_FILE_F_MODE, OFF_FILE_F_FLAGS), OFF_FILE_F_INODE) & ~7)
#define FILE_HEAD_HI MAX2(MAX2(OFF_FILE_F_MODE + 4, OFF_FILE_F_FLAGS + 4), OFF_FILE_F_INODE + 8)
#define FILE_HEAD_MAX 48

static __always_inline void read_file_head(void *file, struct file_head *fh)
{
#if FILE_HEAD_HI - FILE_HEAD_LO <= FILE_HEAD_MAX
    u64 b[FILE_HEAD_MAX / 8] = {};
    bpf_probe_read_kernel(b, FILE_HEAD_HI - FILE_HEAD_LO, (char *)file + FILE_HEAD_LO);
    fh->mode = *(u32 *)((u8 *)b + OFF_FILE_F_MODE - FILE_HEAD_LO);
    fh->flags = *(u32 *)((u8 *)b + OFF_FILE_F_FLAGS - FILE_HEAD_LO);
    fh->inode = *(void **)((u8 *)b + OFF_FILE_F_INODE - FILE_HEAD_LO);
#else
    fh->mode = read_u32(file, OFF_FILE_F_MODE);
    fh->flags = read_u32(file, OFF_FILE_F_FLAGS);
    fh->inode = read_ptr(file, OFF_FILE_F_INODE);
#endif
}

/* The record's ino and dev from the inode: i_sb and i_ino in one read when
 * they lie within 32 bytes. */
static __always_inline void fill_inode_of(struct file_rec *r, void *inode)
{
    void *sb;
#if OFF_INODE_I_INO > OFF_INODE_I_SB && OFF_INODE_I_INO - OFF_INODE_I_SB <= 24 \
    && (OFF_INODE_I_INO - OFF_INODE_I_SB) % 8 == 0
    u64 w[4] = {};
    bpf_probe_read_kernel(w, OFF_INODE_I_INO - OFF_INODE_I_SB + 8, (char *)inode + OFF_INODE_I_SB);
    sb = (void *)w[0];
    r->ino = w[(OFF_INODE_I_INO - OFF_INODE_I_SB) / 8];
#else
    sb = read_ptr(inode, OFF_INODE_I_SB);
    r->ino = read_u64(inode, OFF_INODE_I_INO);
#endif
    r->dev = read_u32(sb, OFF_SB_S_DEV);
}

static __always_inline void fill_inode(struct file_rec *r, void *file)
{
    fill_inode_of(r, read_ptr(file, OFF_FILE_F_INODE));
}

#endif
