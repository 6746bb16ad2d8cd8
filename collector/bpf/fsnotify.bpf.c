/* Deep hook on fsnotify(): what the kernel itself reports to inotify and
 * fanotify, so it also sees changes no syscall names (io_uring, the NFS
 * server, kernel-internal writes), and the rename cookie the kernel pairs
 * moved_from/moved_to with.
 *
 * 6.18 (BTF): int fsnotify(__u32 mask, const void *data, int data_type,
 *                          struct inode *dir, const struct qstr *file_name,
 *                          struct inode *inode, u32 cookie)
 * The cookie is the 7th argument, past x86-64's six argument registers:
 *  - FSNOTIFY_KPROBE: at function entry the return address is at *sp, so the
 *    7th argument is at sp + 8.
 *  - FSNOTIFY_FENTRY: the BPF trampoline passes all seven as plain arguments.
 * Its own BCC module (own ring buffer and loss table): it is loaded only
 * where the kernel allows the hook, next to snoopbus.bpf.c.
 * -D constants: as common.h, plus OFF_QSTR_LEN and the OFF_* used below.
 */
#include "common.h"

#define KIND_FSNOTIFY 14

/* enum fsnotify_data_type (include/linux/fsnotify_backend.h) */
#define FSNOTIFY_EVENT_PATH 1

struct fsn_rec {
    struct rec_hdr h;
    u32 mask;       /* FS_* bits */
    u32 cookie;     /* shared by the two halves of one rename */
    u64 ino;
    u32 dev;
    s32 data_type;
    u16 path_len;   /* walked names of the path (FSNOTIFY_EVENT_PATH only) */
    u16 name_len;   /* file_name, relative to dir */
    u32 _pad;
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(scratch_map, struct scratch, MAX_CPUS);
BPF_PERCPU_ARRAY(lost, u64, KIND_MAX);

static __always_inline struct scratch *get_scratch(void)
{
    u32 cpu = bpf_get_smp_processor_id();
    return scratch_map.lookup(&cpu);
}

static __always_inline void emit(u8 *buf, u32 size, u16 kind)
{
    size &= DATA_SIZE - 1;
    if (events.ringbuf_output(buf, size, 0) < 0) {
        u32 k = kind;
        u64 *n = lost.lookup(&k);
        if (n)
            (*n)++;
    }
}

static __always_inline u32 dir_verdict(void *dentry)
{
    return VERDICT_NONE;
}

static __always_inline int record(u32 mask, const void *data, int data_type,
                                  const void *file_name, const void *inode, u32 cookie)
{
    /* Only what the file events report: modify, attrib, close_write, moves,
     * create, delete (FS_* in include/linux/fsnotify_backend.h). */
    if (!(mask & (0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200)))
        return 0;
    struct scratch *s = get_scratch();
    if (!s)
        return 0;
    struct fsn_rec *r = (struct fsn_rec *)s->data;
    void *task = (void *)bpf_get_current_task();
    fill_hdr(&r->h, task, KIND_FSNOTIFY);
    r->mask = mask;
    r->cookie = cookie;
    r->data_type = data_type;
    r->ino = inode ? read_u64(inode, OFF_INODE_I_INO) : 0;
    r->dev = inode ? read_u32(read_ptr(inode, OFF_INODE_I_SB), OFF_SB_S_DEV) : 0;
    r->_pad = 0;
    set_pos(s, sizeof(*r));
    if (data_type == FSNOTIFY_EVENT_PATH && data) {
        void *fs = read_ptr(task, OFF_TASK_FS);
        walk_path(s, data, (char *)fs + OFF_FS_ROOT, &r->h.flags, F_PATH_TRUNC, 0);
    } else {
        r->h.flags |= F_PATH_TRUNC;  /* an inode or dentry event: no mount to walk */
    }
    u32 pos = get_pos(s);
    r->path_len = pos - sizeof(*r);
    r->name_len = 0;
    if (file_name && pos <= DATA_SIZE - NAME_SZ) {
        const char *name = read_ptr(file_name, OFF_QSTR_NAME);
        barrier_var(pos);
        int n = bpf_probe_read_kernel_str(s->data + (pos & (DATA_SIZE - 1)), NAME_SZ, name);
        if (n > 0) {
            r->name_len = n;
            pos += n & (NAME_SZ * 2 - 1);
        }
    }
    emit(s->data, pos, KIND_FSNOTIFY);
    return 0;
}

#ifdef FSNOTIFY_KPROBE
/* pt_regs is read at BTF offsets too (OFF_REGS_*), like every kernel struct. */
int fsnotify_kprobe(void *ctx)
{
    u32 cookie = 0;
    /* 7th argument: on the stack, just above the return address at entry. */
    u64 sp = read_u64(ctx, OFF_REGS_SP);
    bpf_probe_read_kernel(&cookie, sizeof(cookie), (void *)(sp + 8));
    return record((u32)read_u64(ctx, OFF_REGS_ARG0), read_ptr(ctx, OFF_REGS_ARG1),
                  (int)read_u64(ctx, OFF_REGS_ARG2), read_ptr(ctx, OFF_REGS_ARG4),
                  read_ptr(ctx, OFF_REGS_ARG5), cookie);
}
#endif

#ifdef FSNOTIFY_FENTRY
struct inode;  /* opaque: fields are read at BTF offsets */
struct qstr;
KFUNC_PROBE(fsnotify, u32 mask, const void *data, int data_type, struct inode *dir,
            const struct qstr *file_name, struct inode *inode, u32 cookie)
{
    return record(mask, data, data_type, file_name, inode, cookie);
}
#endif
