/* Process records: the layout collector/records.py decodes. */
#ifndef SNOOPBUS_PROC_H
#define SNOOPBUS_PROC_H

/* Followed by data: exe names (exe_len bytes), cwd names (cwd_len), argv (argv_len). */
struct exec_rec {
    struct rec_hdr h;
    u16 exe_len;
    u16 cwd_len;
    u32 argv_len;
};

/* Attribution (naming): a new process, forked without exec yet, inherits
 * its parent's image; a #! script's path as given rides after argv. */
#define KIND_FORK 24

struct fork_rec {
    struct rec_hdr h;  /* the parent */
    u32 child;         /* the new process's tgid */
    u32 _pad;
};

struct exit_rec {
    struct rec_hdr h;
    u32 exit_code;   /* raw wait status: code << 8, or the signal number */
    u32 _pad;
};

#endif
