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

struct exit_rec {
    struct rec_hdr h;
    u32 exit_code;   /* raw wait status: code << 8, or the signal number */
    u32 _pad;
};

#endif
