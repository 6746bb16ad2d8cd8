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
 *  create       open family with FMODE_CREATED set: the call made the file.
 *               A failed open is reported (--include-failed) as the create
 *               (O_CREAT) or open it tried to be. mknod/mkfifo are not hooked.
 *  open         every successful open that did not create (opt-in).
 *  modify       the first write-family call (write, pwrite, writev, pwritev,
 *               sendfile, splice, copy_file_range) on a regular file per
 *               (tgid, fd) since that fd number was last opened or closed.
 *               Fds duped or inherited over fork count on their own; writes
 *               through mmap or io_uring make no syscall and are not seen
 *               (the fsnotify hooks would see them where the kernel allows).
 *  close_write  close() of an fd open for writing on a regular file, taken
 *               at close's entry (its ret is unknown, F_NO_RET); also the
 *               implicit close of dup2/dup3's target. One per closed fd, not
 *               per last reference as inotify has it: a duped fd closes twice.
 *               Files closed by exit, exec (O_CLOEXEC) or close_range make no
 *               event.
 *  delete, rmdir, mkdir, link, symlink, attrib (chmod/chown/utimes/truncate
 *               families, name- and fd-based), moved_from + moved_to (rename,
 *               renameat, renameat2; RENAME_EXCHANGE is two moves).
 * Paths: from the file itself when there is one (exact, the real dentries,
 * as seen from the task's root); otherwise the walked base plus the name
 * string; a string with a directory part is resolved again by lookup in user
 * space and checked against the inodes the call changed (F_TOUCHED, see
 * name_touched in snoopbus.bpf.c and collector/resolve.py).
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
#define KIND_CLOSE_RANGE 14  /* close_range(first, last, flags): fd, mode, oflags */
#define KIND_MOUNT       15  /* the caller's mount table changed */
#define KIND_CHDIR       25  /* naming: chdir/fchdir succeeded: seg[0] is the new cwd */
/* Not records: slots of the lost map for other losses. */
#define LOST_INFLIGHT_FULL 30  /* no room to save a syscall's arguments */

/* How a syscall names its file. */
#define SHAPE_FDRET 1   /* returns an fd: open family */
#define SHAPE_FD    2   /* acts on an fd argument */
#define SHAPE_NAME  3   /* names files relative to a dirfd or the cwd */
#define SHAPE_CLOSE 4   /* close: handled at enter, while the fd still exists */
#define SHAPE_ARGS  5   /* no file: the arguments, for user space (close_range, mount) */

/* Record flags beyond common.h's. */
#define F_FD_GONE  (1 << 5)  /* the fd did not resolve to a file */
#define F_NO_RET   (1 << 6)  /* reported at enter: ret unknown */
#define F_EXCHANGE (1 << 7)  /* renameat2(RENAME_EXCHANGE) */
#define F_CLOEXEC  (1 << 8)  /* modify: exec will close this fd (FD_CLOEXEC) */
#define F_TOUCHED  (1 << 13) /* name-based: touched inodes follow the segments */

/* Counters of what the kernel side filtered out (kstats map slots). */
#define KS_FILTERED_TASK 0  /* excluded comm, uid or cgroup */
#define KS_FILTERED_PATH 1  /* excluded (or not included) path prefix */
#define KS_FAILED        2  /* failed call, not reported without INCLUDE_FAILED */
#define KS_MAX           4

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
    u8 _pad;
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
#define FMODE_WRITE_F  0x2
#define FMODE_CREATED_F 0x100000
#define S_IFMT_F  0170000
#define S_IFREG_F 0100000

static __always_inline u64 sc_arg(struct sc_args *a, s8 idx)
{
    return a->args[idx & 7];
}

static __always_inline void *fd_file(void *task, u32 fd)
{
    void *files = read_ptr(task, OFF_TASK_FILES);
    void *fdt = read_ptr(files, OFF_FILES_FDT);
    if (!fdt)
        return 0;
    u32 max = read_u32(fdt, OFF_FDTABLE_MAX_FDS);
    if (fd >= max)
        return 0;
    void *arr = read_ptr(fdt, OFF_FDTABLE_FD);
    return read_ptr(arr, (long)fd * 8);
}

/* The fd's FD_CLOEXEC bit: the fd table's close_on_exec bitmap, not f_flags
 * (fcntl(F_SETFD) and dup3(O_CLOEXEC) change only the bitmap). */
static __always_inline int fd_cloexec(void *task, u32 fd)
{
    void *files = read_ptr(task, OFF_TASK_FILES);
    void *fdt = read_ptr(files, OFF_FILES_FDT);
    void *bits = read_ptr(fdt, OFF_FDTABLE_CLOSE_ON_EXEC);
    return (read_u64(bits, (long)(fd / 64) * 8) >> (fd % 64)) & 1;
}

static __always_inline u32 mnt_ns_inum(void *task)
{
    void *nsproxy = read_ptr(task, OFF_TASK_NSPROXY);
    void *mnt_ns = read_ptr(nsproxy, OFF_NSPROXY_MNT_NS);
    return read_u32(mnt_ns, OFF_MNT_NS_INUM);
}

static __always_inline u16 inode_mode(void *inode)
{
    u16 m = 0;
    bpf_probe_read_kernel(&m, sizeof(m), (char *)inode + OFF_INODE_I_MODE);
    return m;
}

static __always_inline void fill_inode(struct file_rec *r, void *file)
{
    void *inode = read_ptr(file, OFF_FILE_F_INODE);
    void *sb = read_ptr(inode, OFF_INODE_I_SB);
    r->ino = read_u64(inode, OFF_INODE_I_INO);
    r->dev = read_u32(sb, OFF_SB_S_DEV);
}

#endif
