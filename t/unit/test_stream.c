/* Streams: writer and reader round trips, byte-at-a-time delivery, every
 * truncation, garbage, limits, and the framing of raw msgpack. */
#include "msgpack_frame.h"
#include "stream.h"
#include "unit.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* Writes a stream of `records` docs into a memfd; returns the fd at offset 0. */
static int make_stream(int width, int records, uint32_t seed, size_t *size)
{
    int fd = memfd_create("stream", 0);
    llm_stream_writer *w;
    llm_err e;
    if (llm_sw_open(&w, fd, "mem", &e)) return -1;
    llm_sw_header(w, "docs", width, 1);
    llm_sw_kv_str(w, "tokenizer", "unit");
    uint32_t ids[300];
    for (int i = 0; i < records; i++) {
        size_t n = (size_t)(i * 37 % 300);
        for (size_t j = 0; j < n; j++) ids[j] = (seed + (uint32_t)(i * 1009 + j * 7919)) % (width == 2 ? 65536u : 4000000000u);
        llm_sw_record(w, "doc", 2);
        llm_sw_kv_u64(w, "id", (uint64_t)i);
        llm_sw_kv_tokens(w, "tokens", ids, n);
    }
    if (llm_sw_finish(w, &e)) { printf("# %s\n", e.msg); return -1; }
    llm_sw_free(w);
    *size = (size_t)lseek(fd, 0, SEEK_CUR);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

/* Reads a whole stream and checks every token; returns records read or -1. */
static int read_all(int fd, int records, uint32_t seed, int width, llm_err *e)
{
    llm_stream_reader *r;
    if (llm_sr_open(&r, fd, "mem", 0, e)) return -1;
    if (llm_sr_token_width(r) != width || strcmp(llm_sr_kind(r), "docs")) { llm_sr_close(r); return -2; }
    const msgpack_object *rec;
    uint32_t *ids = NULL;
    size_t cap = 0, n;
    int got, count = 0, bad = 0;
    while ((got = llm_sr_next(r, &rec, e)) == 1) {
        uint64_t id;
        if (llm_mp_get_u64(rec, "id", &id) || id != (uint64_t)count) bad++;
        if (llm_sr_tokens(r, rec, "tokens", &ids, &cap, &n, e)) { got = -1; break; }
        if (n != (size_t)(count * 37 % 300)) bad++;
        for (size_t j = 0; j < n; j++)
            if (ids[j] != (seed + (uint32_t)(count * 1009 + j * 7919)) % (width == 2 ? 65536u : 4000000000u)) bad++;
        count++;
    }
    free(ids);
    llm_sr_close(r);
    if (got < 0) return -1;
    return bad ? -3 : count;
}

TEST(round_trip_both_widths)
{
    for (int width = 2; width <= 4; width += 2) {
        size_t size;
        uint32_t seed = (uint32_t)unit_rand();
        int fd = make_stream(width, 200, seed, &size);
        llm_err e;
        int n = read_all(fd, 200, seed, width, &e);
        if (n < 0) printf("# width %d: %d %s\n", width, n, n == -1 ? e.msg : "");
        CHECK(n == 200);
        close(fd);
    }
}

TEST(byte_at_a_time_through_a_pipe)
{
    size_t size;
    int src = make_stream(4, 40, 7, &size);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        char c;
        while (read(src, &c, 1) == 1)
            if (write(p[1], &c, 1) != 1) _exit(1);
        _exit(0);
    }
    close(p[1]);
    llm_err e;
    CHECK(read_all(p[0], 40, 7, 4, &e) == 40);
    close(p[0]);
    close(src);
    waitpid(pid, NULL, 0);
}

TEST(every_truncation_is_an_error)
{
    size_t size;
    int src = make_stream(2, 12, 3, &size);
    unsigned char *all = malloc(size);
    CHECK(pread(src, all, size, 0) == (ssize_t)size);
    int silent = 0;
    for (size_t len = 0; len < size; len++) {
        int fd = memfd_create("cut", 0);
        if (write(fd, all, len) != (ssize_t)len) silent++;
        lseek(fd, 0, SEEK_SET);
        llm_err e;
        int n = read_all(fd, 12, 3, 2, &e);
        if (n != -1) silent++;
        else if (!strstr(e.msg, "mem: ") || !(strstr(e.msg, "truncated") || strstr(e.msg, "empty stream"))) {
            printf("# at %zu: %s\n", len, e.msg);
            silent++;
        }
        close(fd);
    }
    CHECK(silent == 0);
    free(all);
    close(src);
}

static int stream_of(const void *bytes, size_t n, llm_err *e, size_t max_record)
{
    int fd = memfd_create("raw", 0);
    if (write(fd, bytes, n) != (ssize_t)n) return -9;
    lseek(fd, 0, SEEK_SET);
    llm_stream_reader *r;
    int rc = llm_sr_open(&r, fd, "raw", max_record, e);
    if (rc == 0) {
        const msgpack_object *rec;
        while ((rc = llm_sr_next(r, &rec, e)) == 1) {}
        llm_sr_close(r);
    }
    close(fd);
    return rc;
}

/* msgpack for {"type":"header","format":"llmux-stream","version":1,"kind":"docs","token_width":4} */
static const char HDR[] = "\x85\xa4type\xa6header\xa6" "format\xacllmux-stream\xa7version\x01\xa4kind\xa4" "docs\xabtoken_width\x04";
#define END0 "\x82\xa4type\xa3" "end\xa7records\x00"

TEST(garbage_and_structure_errors)
{
    llm_err e;
    char buf[512];
    size_t h = sizeof HDR - 1;
    memcpy(buf, HDR, h);
    memcpy(buf + h, END0, sizeof END0 - 1);
    CHECK(stream_of(buf, h + sizeof END0 - 1, &e, 0) == 0);
    CHECK_ERR(stream_of("", 0, &e, 0), e, "empty stream");
    CHECK_ERR(stream_of("\xc1", 1, &e, 0), e, "invalid msgpack at byte 0");
    CHECK_ERR(stream_of("\x93\x01\x02\x03", 4, &e, 0), e, "not an llmux stream");
    buf[h] = (char)0xc1;
    char want[64];
    snprintf(want, sizeof want, "invalid msgpack at byte %zu", h);
    CHECK_ERR(stream_of(buf, h + 1, &e, 0), e, want);
    memcpy(buf + h, "\x01", 1);
    CHECK_ERR(stream_of(buf, h + 1, &e, 0), e, "not a map");
    memcpy(buf + h, "\x81\x01\x02", 3);
    CHECK_ERR(stream_of(buf, h + 3, &e, 0), e, "not a string");
    memcpy(buf + h, "\x81\xa1x\x02", 4);
    CHECK_ERR(stream_of(buf, h + 4, &e, 0), e, "no string field 'type'");
    memcpy(buf + h, HDR, h);
    CHECK_ERR(stream_of(buf, 2 * h, &e, 0), e, "second header");
    memcpy(buf + h, "\x82\xa4type\xa3" "end\xa7records\x05", sizeof END0 - 1);
    CHECK_ERR(stream_of(buf, h + sizeof END0 - 1, &e, 0), e, "counts 5 records, the stream has 0");
    memcpy(buf + h, END0 "\x00", sizeof END0);
    CHECK_ERR(stream_of(buf, h + sizeof END0, &e, 0), e, "data after the end record");
    /* a bin32 that declares 4 GiB is refused by size, not allocated */
    memcpy(buf + h, "\x81\xa4type\xc6\xff\xff\xff\xff", 10);
    CHECK_ERR(stream_of(buf, h + 11, &e, 0), e, "larger than the limit");
    /* a map32 that declares 4G entries likewise */
    memcpy(buf + h, "\xdf\xff\xff\xff\xff", 5);
    CHECK_ERR(stream_of(buf, h + 5, &e, 0), e, "larger than the limit");
    /* deep nesting is refused by msgpack-c, not a crash */
    size_t n = h;
    buf[n++] = (char)0x81; buf[n++] = (char)0xa1; buf[n++] = 'x';
    for (int i = 0; i < 200; i++) buf[n++] = (char)0x91;
    buf[n++] = 0;
    CHECK(stream_of(buf, n, &e, 0) == -1);
    /* a record bigger than a small limit */
    CHECK_ERR(stream_of(HDR, h, &e, 16), e, "larger than the limit of 16 bytes");
}

TEST(header_checks)
{
    llm_err e;
    char buf[256];
    size_t h = sizeof HDR - 1;
    memcpy(buf, HDR, h);
    buf[h - 1] = 3;   /* token_width 3 */
    CHECK_ERR(stream_of(buf, h, &e, 0), e, "token_width must be 2 or 4");
    memcpy(buf, HDR, h);
    buf[strstr(buf, "version") - buf + 7] = 2;   /* version 2 */
    CHECK_ERR(stream_of(buf, h, &e, 0), e, "version");
}

TEST(writer_refuses_misuse)
{
    int fd = memfd_create("w", 0);
    llm_stream_writer *w;
    llm_err e;
    CHECK(llm_sw_open(&w, fd, "w.stream", &e) == 0);
    CHECK(llm_sw_record(w, "doc", 0) != 0);   /* before the header */
    CHECK_ERR(llm_sw_finish(w, &e), e, "record before the header");
    llm_sw_free(w);
    CHECK(llm_sw_open(&w, fd, "w.stream", &e) == 0);
    llm_sw_header(w, "docs", 2, 0);
    llm_sw_record(w, "doc", 1);
    uint32_t big = 70000;
    CHECK(llm_sw_kv_tokens(w, "tokens", &big, 1) != 0);
    CHECK_ERR(llm_sw_finish(w, &e), e, "does not fit");
    llm_sw_free(w);
    CHECK(llm_sw_open(&w, fd, "w.stream", &e) == 0);
    llm_sw_header(w, "docs", 4, 0);
    llm_sw_record(w, "doc", 2);
    llm_sw_kv_u64(w, "id", 1);
    CHECK_ERR(llm_sw_finish(w, &e), e, "missing fields");
    llm_sw_free(w);
    close(fd);
    /* a write error (a closed descriptor) is reported by finish */
    CHECK(llm_sw_open(&w, 987, "gone.stream", &e) == 0);
    llm_sw_header(w, "docs", 4, 0);
    CHECK_ERR(llm_sw_finish(w, &e), e, "gone.stream: write failed");
    llm_sw_free(w);
}

TEST(frame_sizes)
{
    size_t len;
    CHECK(llm_mp_frame((const unsigned char *)"\x01", 1, 100, &len) == LLM_MP_COMPLETE && len == 1);
    CHECK(llm_mp_frame((const unsigned char *)"\x92\x01\x02\x03", 4, 100, &len) == LLM_MP_COMPLETE && len == 3);
    CHECK(llm_mp_frame((const unsigned char *)"\x92\x01", 2, 100, &len) == LLM_MP_NEED_MORE && len > 2);
    CHECK(llm_mp_frame((const unsigned char *)"\xc4\x05\x01", 3, 100, &len) == LLM_MP_NEED_MORE && len == 7);
    CHECK(llm_mp_frame((const unsigned char *)"\xcb\x00", 2, 100, &len) == LLM_MP_NEED_MORE && len == 9);
    CHECK(llm_mp_frame((const unsigned char *)"\xd8\x01", 2, 100, &len) == LLM_MP_NEED_MORE && len == 18);
    CHECK(llm_mp_frame((const unsigned char *)"\xc7\x02\x05\x00\x00", 5, 100, &len) == LLM_MP_COMPLETE && len == 5);
    CHECK(llm_mp_frame((const unsigned char *)"\xdc\xff\xff", 3, 100, &len) == LLM_MP_TOO_BIG);
    CHECK(llm_mp_frame((const unsigned char *)"\x91\xc1", 2, 100, &len) == LLM_MP_INVALID && len == 1);
    /* random bytes never claim more than they hold */
    unsigned char buf[64];
    int bad = 0;
    for (int rep = 0; rep < 100000; rep++) {
        size_t n = unit_rand() % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)unit_rand();
        llm_mp_frame_status st = llm_mp_frame(buf, n, 1000, &len);
        if (st == LLM_MP_COMPLETE && len > n) bad++;
        if (st == LLM_MP_NEED_MORE && len <= n) bad++;
        if (st == LLM_MP_COMPLETE) {   /* msgpack-c agrees on where the object ends */
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            msgpack_unpack_return ret = msgpack_unpack_next(&u, (const char *)buf, n, &off);
            if (ret == MSGPACK_UNPACK_SUCCESS && off != len) bad++;
            msgpack_unpacked_destroy(&u);
        }
    }
    CHECK(bad == 0);
}

int main(void)
{
    unit_seed();
    RUN(round_trip_both_widths);
    RUN(byte_at_a_time_through_a_pipe);
    RUN(every_truncation_is_an_error);
    RUN(garbage_and_structure_errors);
    RUN(header_checks);
    RUN(writer_refuses_misuse);
    RUN(frame_sizes);
    return unit_done();
}
