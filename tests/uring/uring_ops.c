/* Each file operation of issue 14 as an io_uring request, in the current
 * directory: what an attacker would submit to change files without syscalls.
 *
 *   uring_ops plain    openat, write, close, mkdirat, renameat, linkat,
 *                      symlinkat, unlinkat (file and dir) from one ring
 *   uring_ops sqpoll   the same from an SQPOLL ring: a kernel thread submits
 *   uring_ops hidden   openat with IOSQE_CQE_SKIP_SUCCESS (no completion),
 *                      then a direct open into a fixed slot, writev to it and
 *                      close of the slot, all linked
 * Exits non-zero, naming the step, when one fails. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static struct io_uring ring;

static void die(const char *what, int err)
{
    fprintf(stderr, "uring_ops: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static struct io_uring_sqe *sqe(void)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s)
        die("get_sqe", EBUSY);
    return s;
}

/* Submits what is queued and waits for `n` completions, each a success. */
static int run(const char *what, int n)
{
    int ret = io_uring_submit(&ring);
    if (ret < 0)
        die(what, ret);
    int res = 0;
    for (int i = 0; i < n; i++) {
        struct io_uring_cqe *cqe;
        ret = io_uring_wait_cqe(&ring, &cqe);
        if (ret < 0)
            die(what, ret);
        res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (res < 0)
            die(what, res);
    }
    return res;
}

static void ops(void)
{
    char data[] = "written through io_uring\n";
    io_uring_prep_openat(sqe(), AT_FDCWD, "a", O_CREAT | O_WRONLY | O_EXCL, 0640);
    int fd = run("openat", 1);
    io_uring_prep_write(sqe(), fd, data, sizeof(data) - 1, 0);
    run("write", 1);
    io_uring_prep_write(sqe(), fd, data, sizeof(data) - 1, 0);
    run("second write", 1);
    io_uring_prep_close(sqe(), fd);
    run("close", 1);
    io_uring_prep_mkdirat(sqe(), AT_FDCWD, "d", 0750);
    run("mkdirat", 1);
    int dfd = open("d", O_DIRECTORY | O_RDONLY);
    if (dfd < 0)
        die("open d", errno);
    io_uring_prep_renameat(sqe(), AT_FDCWD, "a", dfd, "b", 0);
    run("renameat", 1);
    io_uring_prep_linkat(sqe(), dfd, "b", AT_FDCWD, "c", 0);
    run("linkat", 1);
    io_uring_prep_symlinkat(sqe(), "d/b", AT_FDCWD, "s");
    run("symlinkat", 1);
    io_uring_prep_unlinkat(sqe(), AT_FDCWD, "c", 0);
    run("unlinkat", 1);
    io_uring_prep_unlinkat(sqe(), dfd, "b", 0);
    run("unlinkat b", 1);
    close(dfd);
    io_uring_prep_unlinkat(sqe(), AT_FDCWD, "d", AT_REMOVEDIR);
    run("unlinkat dir", 1);
}

static void hidden(void)
{
    char data[] = "hidden\n";
    struct iovec iov = {data, sizeof(data) - 1};
    int slots[1] = {-1};
    int ret = io_uring_register_files(&ring, slots, 1);
    if (ret < 0)
        die("register_files", ret);
    /* No CQE on success: nothing to see at completion. */
    struct io_uring_sqe *s = sqe();
    io_uring_prep_openat(s, AT_FDCWD, "skipped", O_CREAT | O_WRONLY, 0600);
    s->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_submit(&ring);
    struct stat st;
    for (int i = 0; stat("skipped", &st) != 0; i++) {
        if (i > 2000)
            die("skipped open never happened", ENOENT);
        usleep(1000);
    }
    /* A file that never gets an fd: open into fixed slot 0, write, close. */
    s = sqe();
    io_uring_prep_openat_direct(s, AT_FDCWD, "direct", O_CREAT | O_WRONLY, 0600, 0);
    s->flags |= IOSQE_IO_LINK;
    s = sqe();
    io_uring_prep_writev(s, 0, &iov, 1, 0);
    s->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
    s = sqe();
    io_uring_prep_close_direct(s, 0);
    run("direct open, writev, close", 3);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        die("usage: uring_ops plain|sqpoll|hidden", EINVAL);
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    if (!strcmp(argv[1], "sqpoll")) {
        p.flags = IORING_SETUP_SQPOLL;
        p.sq_thread_idle = 2000;
    }
    int ret = io_uring_queue_init_params(8, &ring, &p);
    if (ret < 0)
        die("queue_init", ret);
    if (!strcmp(argv[1], "hidden"))
        hidden();
    else
        ops();
    io_uring_queue_exit(&ring);
    return 0;
}
