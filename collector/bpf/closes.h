/* close_write per open file when many fds close at once: a process's exit,
 * an exec (its close-on-exec fds) and close_range(2). The kernel then
 * releases each open file whose every reference was among those fds; no
 * syscall names them, so the probes look at the fd table just before:
 *
 *  exit   sched_process_exit, before exit_files(), when the task drops the
 *         table's last reference (all threads of the process, or its own).
 *  exec   sched_prepare_exec (6.10+), at the point of no return, before
 *         do_close_on_exec(): the fds with FD_CLOEXEC.
 *  range  close_range(first, last, flags) at its entry (not with
 *         CLOSE_RANGE_CLOEXEC, which closes nothing yet).
 *
 * Two passes, each its own tail program so the verifier sees each once:
 * scan_count counts, per open file, the fds among those closing that name
 * it (a dup'd fd, 1 and 2 on one log file); scan_emit reports the files
 * whose count is their whole reference count (file_refs), one record per
 * tail call, walking each path outside the fd loop. The fds of a range also
 * lose their "written" marks there.
 *
 * Extra -D constants: OFF_FILES_COUNT, OFF_FDTABLE_OPEN_FDS,
 * OFF_SIGNAL_NR_THREADS (and files.h's).
 */
#ifndef SNOOPBUS_CLOSES_H
#define SNOOPBUS_CLOSES_H

/* Syscall shapes of this block (files.h has the others). */
#define SHAPE_SCAN  7   /* close_range: a scan at enter */
#define SHAPE_NEWFD 8   /* dup, fcntl(F_DUPFD*): the returned number loses its mark */
#define F_DUPFD_V         0
#define F_DUPFD_CLOEXEC_V 1030

#define KS_SCAN_CUT 3   /* kstats slot: a scan ran out of window or tail calls */

#define SCAN_EXIT  1
#define SCAN_EXEC  2
#define SCAN_RANGE 3

/* fds looked at per scan (from its first): 16 words of the open-fd bitmap.
 * A table with open fds beyond is counted (KS_SCAN_CUT). */
#define SCAN_WORDS 16

#define CLOSE_RANGE_UNSHARE_F (1 << 1)
#define CLOSE_RANGE_CLOEXEC_F (1 << 2)

/* One scan in progress, per thread (the tail programs' shared state). */
struct scan_state {
    u64 ts;      /* every record of the scan has this time */
    u64 files;   /* the files_struct scanned: checked by each pass */
    u32 mode;    /* SCAN_* */
    u32 first;   /* fds [first, end) */
    u32 end;
    u32 next;    /* scan_emit resumes here */
    u32 nr;      /* the syscall's number (close_range), else 0 */
    u32 emit;    /* 0: marks only (close_range with CLOSE_RANGE_UNSHARE of a shared table) */
    u32 hits;    /* candidates scan_count found: none, no second pass */
    u32 _pad;
};

/* (open file, scan) -> fds of the scan naming it */
struct scan_ref_key {
    u64 file;
    u64 ts;
    u32 tid;
    u32 _pad;
};

/* Whether an open file's release is a close_write: opened for writing, on a
 * regular file (as close_at_enter decides for one fd). */
static __always_inline int writable_regular(void *file)
{
    struct file_head fh;
    read_file_head(file, &fh);
    if (!(fh.mode & FMODE_WRITE_F))
        return 0;
    return (inode_mode(fh.inode) & S_IFMT_F) == S_IFREG_F;
}

/* The words of a scan's fd bitmap: open fds, and only the close-on-exec
 * ones for an exec. */
static __always_inline u64 scan_word(void *fdt, u32 mode, u32 w)
{
    u64 open = read_u64(read_ptr(fdt, OFF_FDTABLE_OPEN_FDS), (long)w * 8);
    if (mode == SCAN_EXEC)
        open &= read_u64(read_ptr(fdt, OFF_FDTABLE_CLOSE_ON_EXEC), (long)w * 8);
    return open;
}

/* ---- O_TMPFILE files: unnamed until linkat gives them a name. ---- */

#define O_TMPFILE_F   020000000  /* __O_TMPFILE: stays in f_flags */
#define AT_EMPTY_PATH_F 0x1000

static __always_inline int is_tmpfile(void *file)
{
    return file && (read_u32(file, OFF_FILE_F_FLAGS) & O_TMPFILE_F);
}

/* The fd number in "/proc/self/fd/N", "/proc/thread-self/fd/N" or
 * "/dev/fd/N" (how linkat names an O_TMPFILE file without AT_EMPTY_PATH);
 * -1 for any other name. */
static __always_inline s32 proc_fd_name(const char *name)
{
    char b[32] = {};
    if (bpf_probe_read_user_str(b, sizeof(b), name) <= 0)
        return -1;
    u32 at = 0;
    if (b[0] == '/' && b[1] == 'd' && b[2] == 'e' && b[3] == 'v' && b[4] == '/' && b[5] == 'f'
        && b[6] == 'd' && b[7] == '/')
        at = 8;
    else if (b[0] == '/' && b[1] == 'p' && b[2] == 'r' && b[3] == 'o' && b[4] == 'c'
             && b[5] == '/' && b[6] == 's' && b[7] == 'e' && b[8] == 'l' && b[9] == 'f'
             && b[10] == '/' && b[11] == 'f' && b[12] == 'd' && b[13] == '/')
        at = 14;
    else if (b[0] == '/' && b[1] == 'p' && b[2] == 'r' && b[3] == 'o' && b[4] == 'c'
             && b[5] == '/' && b[6] == 't' && b[7] == 'h' && b[8] == 'r' && b[9] == 'e'
             && b[10] == 'a' && b[11] == 'd' && b[12] == '-' && b[13] == 's' && b[14] == 'e'
             && b[15] == 'l' && b[16] == 'f' && b[17] == '/' && b[18] == 'f' && b[19] == 'd'
             && b[20] == '/')
        at = 21;
    else
        return -1;
    s32 fd = 0;
    for (int i = 8; i < 31; i++) {
        if (i < (int)at)
            continue;
        char c = b[i];
        if (c == 0)
            return i > (int)at ? fd : -1;
        if (c < '0' || c > '9' || fd > 100000000)
            return -1;
        fd = fd * 10 + (c - '0');
    }
    return -1;
}

#endif
