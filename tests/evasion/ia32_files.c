/* File changes made with ia32 system calls (int $0x80) from a static 64-bit
 * program: what a user hiding from 64-bit-only syscall monitors would do.
 * Built `gcc -static -no-pie`: every string is in static data, below 4 GiB,
 * where 32-bit pointer arguments can reach it. Run in an empty directory it
 * owns; exits non-zero naming the call that failed. */
#include <stdio.h>
#include <stdlib.h>

/* ia32 numbers, arch/x86/entry/syscalls/syscall_32.tbl */
#define NR_write 4
#define NR_open 5
#define NR_close 6
#define NR_creat 8
#define NR_link 9
#define NR_unlink 10
#define NR_mknod 14
#define NR_chmod 15
#define NR_rename 38
#define NR_mkdir 39
#define NR_rmdir 40
#define NR_symlink 83
#define NR_truncate 92
#define NR_mmap2 192
#define NR_setxattr 226
#define NR_fallocate 324

static long sys32(long nr, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r8 asm("r8") = f;  /* ebp (arg 6) is set from it around the call */
    asm volatile("push %%rbp\n\tmov %%r8, %%rbp\n\tint $0x80\n\tpop %%rbp"
                 : "=a"(ret), "+r"(r8)
                 : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                 : "memory", "r9", "r10", "r11");
    return ret;
}

static long check(const char *what, long ret)
{
    if (ret < 0 && ret > -4096) {
        fprintf(stderr, "%s: errno %ld\n", what, -ret);
        exit(1);
    }
    return ret;
}

#define CALL(nr, a, b, c, d, e, f) check(#nr, sys32(nr, (long)(a), (long)(b), (long)(c), \
                                                 (long)(d), (long)(e), (long)(f)))

static const char data[] = "ia32";
static const char value[] = "v";

int main(void)
{
    long fd = CALL(NR_creat, "c32", 0644, 0, 0, 0, 0);
    CALL(NR_write, fd, data, 4, 0, 0, 0);
    CALL(NR_close, fd, 0, 0, 0, 0, 0);
    CALL(NR_rename, "c32", "r32", 0, 0, 0, 0);
    CALL(NR_chmod, "r32", 04755, 0, 0, 0, 0);
    CALL(NR_truncate, "r32", 1, 0, 0, 0, 0);
    CALL(NR_setxattr, "r32", "user.snoop", value, 1, 0, 0);
    CALL(NR_link, "r32", "l32", 0, 0, 0, 0);
    CALL(NR_symlink, "r32", "s32", 0, 0, 0, 0);
    CALL(NR_mkdir, "d32", 0750, 0, 0, 0, 0);
    CALL(NR_rmdir, "d32", 0, 0, 0, 0, 0);
    CALL(NR_mknod, "p32", 0010600, 0, 0, 0, 0);  /* a FIFO */
    /* open O_RDWR|O_TRUNC an existing file, fallocate, map it shared */
    fd = CALL(NR_open, "l32", 02 | 01000, 0, 0, 0, 0);
    CALL(NR_fallocate, fd, 0, 0, 0, 4096, 0);  /* mode, offset lo/hi, len lo/hi */
    long addr = CALL(NR_mmap2, 0, 4096, 3, 1, fd, 0);  /* PROT_READ|WRITE, MAP_SHARED */
    *(volatile char *)(unsigned long)(unsigned int)addr = 'm';
    CALL(NR_unlink, "s32", 0, 0, 0, 0, 0);
    CALL(NR_unlink, "r32", 0, 0, 0, 0, 0);
    return 0;  /* exits with the fd open: close_write by exit */
}
