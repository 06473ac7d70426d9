/* The stream writer: see stream.h. */
#include "fileio.h"
#include "stream.h"
#include "le.h"

#include <stdlib.h>
#include <string.h>

#define OUTBUF (1u << 16)

struct llm_stream_writer {
    int fd;
    char *name;
    msgpack_packer pk;
    unsigned char *buf;     /* OUTBUF bytes of output not yet written */
    size_t len;
    int failed;
    llm_err first_err;      /* the first failure, reported by llm_sw_finish */
    uint64_t records;
    int token_width;        /* 0 until the header is written */
    size_t fields_left;     /* key/value pairs the open record still owes */
    unsigned char *scratch; /* token encoding */
    size_t scratch_cap;
};

static int fail(llm_stream_writer *w, const char *fmt, const char *detail)
{
    if (!w->failed) llm_errf(&w->first_err, fmt, w->name, detail);
    w->failed = 1;
    return -1;
}

static int flush(llm_stream_writer *w)
{
    if (w->failed) return -1;
    llm_err e;
    if (llm_write_all(w->fd, w->buf, w->len, w->name, &e)) {
        w->first_err = e;
        w->failed = 1;
        return -1;
    }
    w->len = 0;
    return 0;
}

/* msgpack-c's write callback: buffer small pieces, write big ones through. */
static int write_cb(void *data, const char *p, size_t n)
{
    llm_stream_writer *w = data;
    if (w->failed) return -1;
    if (w->len + n > OUTBUF && flush(w)) return -1;
    if (n >= OUTBUF) {
        llm_err e;
        if (llm_write_all(w->fd, p, n, w->name, &e)) { w->first_err = e; w->failed = 1; return -1; }
        return 0;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

int llm_sw_open(llm_stream_writer **out, int fd, const char *name, llm_err *err)
{
    *out = NULL;
    llm_stream_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->name = strdup(name)) || !(w->buf = malloc(OUTBUF))) {
        if (w) { free(w->name); free(w); }
        return llm_errf(err, "%s: out of memory", name);
    }
    w->fd = fd;
    msgpack_packer_init(&w->pk, w, write_cb);
    *out = w;
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int begin_map(llm_stream_writer *w, const char *type, size_t fixed, size_t more)
{
    if (w->failed) return -1;
    if (w->fields_left) return fail(w, "%s: internal error: a record was started before the last one was complete%s", "");
    if (fixed + more > UINT32_MAX) return fail(w, "%s: record has too many fields%s", "");
    msgpack_pack_map(&w->pk, fixed + more);
    pack_str(&w->pk, "type");
    pack_str(&w->pk, type);
    return w->failed ? -1 : 0;
}

int llm_sw_header(llm_stream_writer *w, const char *kind, int token_width, size_t nextra)
{
    if (token_width != 2 && token_width != 4) return fail(w, "%s: token width must be 2 or 4%s", "");
    if (w->token_width) return fail(w, "%s: internal error: header written twice%s", "");
    if (begin_map(w, "header", 5, nextra)) return -1;
    pack_str(&w->pk, "format");
    pack_str(&w->pk, LLM_STREAM_FORMAT);
    pack_str(&w->pk, "version");
    msgpack_pack_uint32(&w->pk, LLM_STREAM_VERSION);
    pack_str(&w->pk, "kind");
    pack_str(&w->pk, kind);
    pack_str(&w->pk, "token_width");
    msgpack_pack_uint32(&w->pk, (uint32_t)token_width);
    w->token_width = token_width;
    w->fields_left = nextra;
    return w->failed ? -1 : 0;
}

int llm_sw_record(llm_stream_writer *w, const char *type, size_t nfields)
{
    if (!w->token_width) return fail(w, "%s: internal error: record before the header%s", "");
    if (!strcmp(type, "header") || !strcmp(type, "end")) return fail(w, "%s: internal error: record type '%s' is reserved", type);
    if (begin_map(w, type, 1, nfields)) return -1;
    w->fields_left = nfields;
    w->records++;
    return 0;
}

static int key(llm_stream_writer *w, const char *k)
{
    if (w->failed) return -1;
    if (!w->fields_left) return fail(w, "%s: internal error: more fields than the record declared (at '%s')", k);
    pack_str(&w->pk, k);
    return w->failed ? -1 : 0;
}

int llm_sw_kv_done(llm_stream_writer *w)
{
    if (w->failed) return -1;
    w->fields_left--;
    return 0;
}

int llm_sw_kv_str(llm_stream_writer *w, const char *k, const char *v)
{
    if (key(w, k)) return -1;
    pack_str(&w->pk, v);
    return llm_sw_kv_done(w);
}

int llm_sw_kv_u64(llm_stream_writer *w, const char *k, uint64_t v)
{
    if (key(w, k)) return -1;
    msgpack_pack_uint64(&w->pk, v);
    return llm_sw_kv_done(w);
}

int llm_sw_kv_i64(llm_stream_writer *w, const char *k, int64_t v)
{
    if (key(w, k)) return -1;
    msgpack_pack_int64(&w->pk, v);
    return llm_sw_kv_done(w);
}

int llm_sw_kv_f64(llm_stream_writer *w, const char *k, double v)
{
    if (key(w, k)) return -1;
    msgpack_pack_double(&w->pk, v);
    return llm_sw_kv_done(w);
}

int llm_sw_kv_bin(llm_stream_writer *w, const char *k, const void *data, size_t n)
{
    if (key(w, k)) return -1;
    if (n > UINT32_MAX) return fail(w, "%s: bin field '%s' is larger than msgpack allows", k);
    msgpack_pack_bin(&w->pk, n);
    msgpack_pack_bin_body(&w->pk, data, n);
    return llm_sw_kv_done(w);
}

int llm_sw_kv_tokens(llm_stream_writer *w, const char *k, const uint32_t *ids, size_t n)
{
    size_t width = (size_t)w->token_width, bytes = n * width;
    if (n > UINT32_MAX / 4) return fail(w, "%s: too many tokens in field '%s'", k);
    if (bytes > w->scratch_cap) {
        unsigned char *s = realloc(w->scratch, bytes);
        if (!s) return fail(w, "%s: out of memory encoding '%s'", k);
        w->scratch = s;
        w->scratch_cap = bytes;
    }
    if (llm_u32_to_le(w->scratch, ids, n, (int)width))
        return fail(w, "%s: token id in '%s' does not fit the stream's 2-byte width", k);
    return llm_sw_kv_bin(w, k, w->scratch, bytes);
}

msgpack_packer *llm_sw_packer(llm_stream_writer *w) { return &w->pk; }

int llm_sw_finish(llm_stream_writer *w, llm_err *err)
{
    if (!w->failed && !w->token_width) fail(w, "%s: internal error: finished without a header%s", "");
    if (!w->failed && w->fields_left) fail(w, "%s: internal error: the last record is missing fields%s", "");
    if (!w->failed) {
        msgpack_pack_map(&w->pk, 2);
        pack_str(&w->pk, "type");
        pack_str(&w->pk, "end");
        pack_str(&w->pk, "records");
        msgpack_pack_uint64(&w->pk, w->records);
        flush(w);
    }
    if (w->failed) {
        if (err) *err = w->first_err;
        return -1;
    }
    return 0;
}

void llm_sw_free(llm_stream_writer *w)
{
    if (!w) return;
    free(w->scratch);
    free(w->buf);
    free(w->name);
    free(w);
}
