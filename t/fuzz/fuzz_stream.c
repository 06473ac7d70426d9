/* fuzz_stream.c — libFuzzer target for the msgpack stream reader and framer.
 *
 * 1. llm_mp_frame on the input itself, under a few limits, with its contract
 *    checked: COMPLETE means 1 <= len <= n and len <= limit, the same answer
 *    for exactly those len bytes, NEED_MORE for one byte fewer, and msgpack-c
 *    decoding exactly len bytes (when its nesting limit lets it decode at
 *    all); NEED_MORE means len > n; INVALID means a 0xc1 byte at len.
 * 2. The input as a stream: written to a memfd, read back through
 *    llm_sr_open with a small record limit and llm_sr_next to the end, every
 *    record described as JSON and its token fields decoded.
 * A broken promise is __builtin_trap; ASan and UBSan catch the rest.
 *
 * Build and run: t/fuzz/run SECONDS. */
#include "describe.h"
#include "msgpack_frame.h"
#include "stream.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)
#define NAME "fuzz.stream"

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_frame(const uint8_t *p, size_t n, size_t limit)
{
    size_t len = (size_t)-1;
    llm_mp_frame_status st = llm_mp_frame(p, n, limit, &len);
    switch (st) {
    case LLM_MP_COMPLETE: {
        CHECK(len >= 1 && len <= n && len <= limit);
        size_t len2 = 0;
        CHECK(llm_mp_frame(p, len, limit, &len2) == LLM_MP_COMPLETE && len2 == len);
        CHECK(llm_mp_frame(p, len - 1, limit, &len2) == LLM_MP_NEED_MORE && len2 > len - 1 && len2 <= len);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        msgpack_unpack_return ret = msgpack_unpack_next(&u, (const char *)p, len, &off);
        /* PARSE_ERROR is allowed only for nesting deeper than msgpack-c's stack */
        CHECK(ret != MSGPACK_UNPACK_CONTINUE);
        if (ret == MSGPACK_UNPACK_SUCCESS) CHECK(off == len);
        msgpack_unpacked_destroy(&u);
        break;
    }
    case LLM_MP_NEED_MORE:
        CHECK(len > n);
        break;
    case LLM_MP_INVALID:
        CHECK(len < n && p[len] == 0xc1);
        break;
    case LLM_MP_TOO_BIG:
        break;
    default:
        CHECK(0);
    }
}

static void check_err(const llm_err *err)
{
    CHECK(memchr(err->msg, 0, sizeof err->msg) != NULL);
    CHECK(strncmp(err->msg, NAME ": ", sizeof NAME + 1) == 0);
#ifndef FUZZ_LAX_MESSAGES   /* err.h promises one line; -DFUZZ_LAX_MESSAGES waives it */
    CHECK(strchr(err->msg, '\n') == NULL);
#endif
}

static unsigned describe(const llm_stream_reader *r, const msgpack_object *rec)
{
    json_t *j = llm_describe_record(r, rec);
    CHECK(j != NULL);
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    CHECK(text != NULL);
    unsigned n = (unsigned)strlen(text);
    free(text);
    json_decref(j);
    return n;
}

static unsigned tokens(const llm_stream_reader *r, const msgpack_object *rec, const char *key,
                       uint32_t **ids, size_t *cap)
{
    llm_err err;
    size_t n = (size_t)-1;
    const msgpack_object *v = llm_mp_get(rec, key);
    if (llm_sr_tokens(r, rec, key, ids, cap, &n, &err)) {
        check_err(&err);
        return 0;
    }
    CHECK(v && v->type == MSGPACK_OBJECT_BIN);
    size_t w = (size_t)llm_sr_token_width(r);
    CHECK(v->via.bin.size == n * w && n <= *cap);
    const unsigned char *b = (const unsigned char *)v->via.bin.ptr;
    for (size_t i = 0; i < n; i++) {
        uint32_t want = (uint32_t)b[i * w] | (uint32_t)b[i * w + 1] << 8;
        if (w == 4) want |= (uint32_t)b[i * w + 2] << 16 | (uint32_t)b[i * w + 3] << 24;
        CHECK((*ids)[i] == want);
    }
    return (unsigned)n;
}

static void read_stream(const uint8_t *data, size_t size, size_t max_record)
{
    int fd = memfd_create("fuzz-stream", MFD_CLOEXEC);
    if (fd < 0) return;
    for (size_t done = 0; done < size;) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) { close(fd); return; }
        done += (size_t)w;
    }
    if (lseek(fd, 0, SEEK_SET) != 0) { close(fd); return; }

    llm_err err;
    llm_stream_reader *r = NULL;
    if (llm_sr_open(&r, fd, NAME, max_record, &err)) {
        CHECK(r == NULL);
        check_err(&err);
        close(fd);
        return;
    }
    CHECK(r != NULL);
    int width = llm_sr_token_width(r);
    CHECK(width == 2 || width == 4);
    const msgpack_object *h = llm_sr_header(r);
    CHECK(h && h->type == MSGPACK_OBJECT_MAP);
    unsigned acc = describe(r, h) + (unsigned)strlen(llm_sr_kind(r));
    uint32_t *ids = NULL;
    size_t cap = 0;
    uint64_t nrec = 0;
    const msgpack_object *rec;
    int got;
    while ((got = llm_sr_next(r, &rec, &err)) == 1) {
        nrec++;
        CHECK(llm_sr_records(r) == nrec);
        CHECK(rec && rec->type == MSGPACK_OBJECT_MAP);
        acc += describe(r, rec);
        acc += tokens(r, rec, "tokens", &ids, &cap);
        /* every other token field the header names */
        for (uint32_t i = 0; i < rec->via.map.size; i++) {
            const msgpack_object *k = &rec->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= 256 ||
                memchr(k->via.str.ptr, 0, k->via.str.size) ||
                !llm_sr_is_token_field(r, k->via.str.ptr, k->via.str.size))
                continue;
            char key[256];
            memcpy(key, k->via.str.ptr, k->via.str.size);
            key[k->via.str.size] = 0;
            acc += tokens(r, rec, key, &ids, &cap);
        }
    }
    if (got < 0) {
        check_err(&err);
    } else {
        CHECK(got == 0);
        CHECK(llm_sr_next(r, &rec, &err) == 0);   /* stays ended */
    }
    free(ids);
    llm_sr_close(r);
    close(fd);
    sink = acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[] = {1, 7, 64, 4096, SIZE_MAX};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) check_frame(data, size, limits[i]);
    /* and from every offset a record could start at, cheaply: the first few */
    for (size_t off = 1; off < size && off < 8; off++) check_frame(data + off, size - off, 4096);

    read_stream(data, size, 4096);
    return 0;
}
