/* io_uring requests: the file operations a process submits through a ring
 * make no syscall of their own, so raw_syscalls never sees them.
 *
 * Hooks (raw tracepoints, no tracefs): io_uring_submit_req(req) fires after
 * the request's prep, so its command data (struct io_open, io_rename, ...)
 * holds the names the kernel copied from user memory (struct filename: what
 * the kernel will act on, not re-read from the process) and the fd or fixed
 * slot it names; io_uring_complete(ctx, req, cqe) fires as each CQE is filled.
 *
 *  rename, unlink, mkdir, link, symlink (and open with IOSQE_CQE_SKIP_SUCCESS,
 *      which posts no CQE): at submit, from the request's struct filename
 *      names, joined to the walked dirfd/cwd base as for syscalls. The result
 *      is not known yet (F_NO_RET): a request that fails is reported too.
 *  open (openat, openat2): at completion, from the file itself (regular fd or
 *      fixed slot), create when FMODE_CREATED, as sys_exit does for open().
 *  write family, fallocate, ftruncate, splice/tee (their output): modify at
 *      submit, first per fd (or fixed slot) as for syscalls, from the file
 *      the fd names then; a slot or fd a linked request fills later is
 *      resolved at completion from req->file.
 *  close: close_write at submit, while the fd (or fixed slot) still names
 *      its file, for a regular file open for writing; a slot a linked open
 *      fills: at completion, when it was written (user space has the path).
 *  Not hooked: setxattr/fsetxattr requests (no attrib event).
 * Requests run by an SQPOLL thread or an io-wq worker are io threads of the
 * ring owner's process: tgid and creds are the owner's; comm is taken from
 * the thread group leader.
 *
 * Extra -D constants: URING (0: no io_uring hooks), OFF_REQ_* / OFF_IO_* /
 * OFF_CTX_* / OFF_RSRC_* / OFF_FILENAME_NAME / OFF_CQE_RES /
 * OFF_TASK_FLAGS / OFF_TASK_GROUP_LEADER / OFF_TASK_COMM.
 */
#ifndef SNOOPBUS_URING_H
#define SNOOPBUS_URING_H

/* enum io_uring_op (uapi, stable numbers). */
#define UOP_WRITEV        2
#define UOP_WRITE_FIXED   5
#define UOP_FALLOCATE     17
#define UOP_OPENAT        18
#define UOP_CLOSE         19
#define UOP_WRITE         23
#define UOP_SPLICE        30  /* the request's fd is the output */
#define UOP_TEE           33
#define UOP_OPENAT2       28
#define UOP_RENAMEAT      35
#define UOP_UNLINKAT      36
#define UOP_MKDIRAT       37
#define UOP_SYMLINKAT     38
#define UOP_LINKAT        39
#define UOP_FTRUNCATE     55
#define UOP_WRITEV_FIXED  61

/* io_kiocb flags (REQ_F_*_BIT in io_uring_types.h). */
#define REQ_F_FIXED_FILE_F (1ULL << 0)
#define REQ_F_CQE_SKIP_F   (1ULL << 6)
#define PF_IO_WORKER_F     0x10        /* io-wq workers and SQPOLL threads */
#define FFS_MASK_F         (~3UL)      /* io_rsrc_node.file_ptr's flag bits */
#define FILE_INDEX_ALLOC_F 0xffffffffU /* IORING_FILE_INDEX_ALLOC */

/* A fixed file slot as a record's fd (and written-map key): below -1, so it
 * never looks like a process fd. */
#define URING_SLOT_FD(slot) (-2 - (s32)(slot))

static __always_inline int uring_is_write(u32 op)
{
    return op == UOP_WRITE || op == UOP_WRITEV || op == UOP_WRITE_FIXED
        || op == UOP_WRITEV_FIXED || op == UOP_FALLOCATE || op == UOP_FTRUNCATE
        || op == UOP_SPLICE || op == UOP_TEE;
}

static __always_inline int uring_is_name_op(u32 op)
{
    return op >= UOP_RENAMEAT && op <= UOP_LINKAT;
}

static __always_inline int uring_is_open(u32 op)
{
    return op == UOP_OPENAT || op == UOP_OPENAT2;
}

/* The file in a ring's fixed table at `slot`, or 0. */
static __always_inline void *uring_fixed_file(void *req, u32 slot)
{
    void *ctx = read_ptr(req, OFF_REQ_CTX);
    if (slot >= read_u32(ctx, OFF_CTX_FILES_NR))
        return 0;
    void *node = read_ptr(read_ptr(ctx, OFF_CTX_FILES_NODES), (long)slot * 8);
    if (!node)
        return 0;
    return (void *)(read_u64(node, OFF_RSRC_NODE_FILE_PTR) & FFS_MASK_F);
}

/* The file a request's fd names at submit (a fixed slot or the process's fd),
 * and the fd as records carry it. */
static __always_inline void *uring_req_file(void *req, void *task, s32 *fd)
{
    u32 n = read_u32(req, OFF_REQ_CQE_FD);
    if (read_u64(req, OFF_REQ_FLAGS) & REQ_F_FIXED_FILE_F) {
        *fd = URING_SLOT_FD(n);
        return uring_fixed_file(req, n);
    }
    *fd = (s32)n;
    return fd_file(task, n);
}

/* io threads (SQPOLL, io-wq) are named iou-sqp-N / iou-wrk-N: report the
 * process's own name, the ring owner's. */
static __always_inline void uring_owner_comm(struct rec_hdr *h, void *task)
{
    if (!(read_u32(task, OFF_TASK_FLAGS) & PF_IO_WORKER_F))
        return;
    void *leader = read_ptr(task, OFF_TASK_GROUP_LEADER);
    bpf_probe_read_kernel(h->comm, sizeof(h->comm), (char *)leader + OFF_TASK_COMM);
}

#endif
