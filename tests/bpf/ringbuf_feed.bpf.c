/* Feeds a ring buffer from tests/test_ringbuf.py: each getppid() of process
 * TGID writes record number n = 0, 1, 2, ... Every DISCARD_EVERY-th one is
 * reserved and then discarded; the others are output with a size that
 * cycles through 1..MAX_LEN bytes, every byte holding (n + i) & 0xff, so
 * the reader's alignment, wrap-around and order are all checked.
 * -D constants: TGID, NR_GETPPID, MAX_LEN (power of two), DISCARD_EVERY, PAGES. */
BPF_RINGBUF_OUTPUT(rb, PAGES);
BPF_ARRAY(seq, u64, 1);
BPF_ARRAY(failed, u64, 1);
struct scratch {
    u8 b[2 * MAX_LEN];  /* twice: the size mask below stays inside */
};
BPF_PERCPU_ARRAY(buf, struct scratch, 1);

struct discarded {
    u64 n;
    u8 pad[32];
};

RAW_TRACEPOINT_PROBE(sys_enter)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TGID || ctx->args[1] != NR_GETPPID)
        return 0;
    u32 zero = 0;
    u64 *next = seq.lookup(&zero);
    struct scratch *s = buf.lookup(&zero);
    if (!next || !s)
        return 0;
    u64 n = (*next)++;
    if (n % DISCARD_EVERY == DISCARD_EVERY - 1) {
        struct discarded *d = rb.ringbuf_reserve(sizeof(struct discarded));
        if (!d) {
            u64 *f = failed.lookup(&zero);
            if (f)
                (*f)++;
            return 0;
        }
        d->n = n;
        rb.ringbuf_discard(d, 0);
        return 0;
    }
    u32 len = (n * 37) % MAX_LEN + 1;
    /* All of it, whatever len is: a constant trip count the verifier follows. */
    for (int i = 0; i < MAX_LEN; i++)
        s->b[i] = (u8)(n + i);
    /* The struct, not s->b: BCC's rewriter asserts on an array member here. */
    if (rb.ringbuf_output(s, len & (2 * MAX_LEN - 1), 0) < 0) {
        u64 *f = failed.lookup(&zero);
        if (f)
            (*f)++;
    }
    return 0;
}
