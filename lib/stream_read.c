/* The stream reader: see stream.h. */
#include "msgpack_frame.h"
#include "stream.h"
#include "le.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { BEFORE_HEADER, IN_BODY, ENDED };

struct llm_stream_reader {
    int fd;
    char *name;
    size_t max_record;
    unsigned char *buf;      /* bytes [start, end) not yet consumed */
    size_t cap, start, end;
    uint64_t buf_offset;     /* stream offset of buf[0] */
    int eof;
    int state;
    uint64_t records;
    uint64_t rec_offset;
    size_t rec_len;          /* the current record is buf[start - rec_len, start) */
    msgpack_unpacked rec;    /* the current record; refers into buf */
    unsigned char *header_bytes;
    msgpack_unpacked header; /* refers into header_bytes */
    int token_width;
    const msgpack_object *token_fields;   /* array of str, or NULL for ["tokens"] */
};

const msgpack_object *llm_mp_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen && !memcmp(k->via.str.ptr, key, klen))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

int llm_mp_str_eq(const msgpack_object *o, const char *s)
{
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) && !memcmp(o->via.str.ptr, s, o->via.str.size);
}

int llm_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *v = llm_mp_get(map, key);
    if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return -1;
    *out = v->via.u64;
    return 0;
}

/* Reads more bytes after moving the unread ones to the front and making room
 * for at least `want` of them. Returns bytes read (0 at EOF) or -1. */
static long fill(llm_stream_reader *r, size_t want, llm_err *err)
{
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->buf_offset += r->start;
        r->end -= r->start;
        r->start = 0;
    }
    /* grow at most twofold per read, so that a record declaring a huge
     * length in a short file costs memory only as its bytes arrive */
    size_t need = r->end + 65536, doubled = r->cap > 65536 ? 2 * r->cap : 131072;
    if (want > need) need = want < doubled ? want : doubled;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : 65536;
        while (cap < need) cap *= 2;
        unsigned char *b = realloc(r->buf, cap);
        if (!b) return llm_errf(err, "%s: out of memory reading the record at byte %llu", r->name,
                                (unsigned long long)r->buf_offset);
        r->buf = b;
        r->cap = cap;
    }
    for (;;) {
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return llm_errf(err, "%s: read failed: %s", r->name, strerror(errno));
        if (n == 0) r->eof = 1;
        r->end += (size_t)n;
        return n;
    }
}

/* Frames and unpacks the next message into r->rec. 1 ok, 0 clean EOF, -1 error. */
static int next_message(llm_stream_reader *r, llm_err *err)
{
    for (;;) {
        size_t avail = r->end - r->start, len = 0;
        r->rec_offset = r->buf_offset + r->start;
        unsigned long long at = (unsigned long long)r->rec_offset;
        if (avail == 0 && r->eof) return 0;
        llm_mp_frame_status st = avail ? llm_mp_frame(r->buf + r->start, avail, r->max_record, &len)
                                       : LLM_MP_NEED_MORE;
        if (st == LLM_MP_TOO_BIG)
            return llm_errf(err, "%s: record at byte %llu is larger than the limit of %zu bytes", r->name, at, r->max_record);
        if (st == LLM_MP_INVALID)
            return llm_errf(err, "%s: invalid msgpack at byte %llu (in the record at byte %llu)", r->name,
                            at + len, at);
        if (st == LLM_MP_NEED_MORE) {
            if (r->eof)
                return llm_errf(err, "%s: truncated: the record at byte %llu is cut off after %zu bytes", r->name, at, avail);
            if (fill(r, len, err) < 0) return -1;
            continue;
        }
        size_t off = 0;
        msgpack_unpack_return ret = msgpack_unpack_next(&r->rec, (const char *)r->buf + r->start, len, &off);
        if (ret != MSGPACK_UNPACK_SUCCESS || off != len)
            return llm_errf(err, "%s: record at byte %llu is msgpack that cannot be decoded (nesting too deep?)", r->name, at);
        r->start += len;
        r->rec_len = len;
        return 1;
    }
}

/* Every record is a map with string keys and a string "type". */
static int check_shape(llm_stream_reader *r, const msgpack_object *o, llm_err *err)
{
    unsigned long long at = (unsigned long long)r->rec_offset;
    if (o->type != MSGPACK_OBJECT_MAP)
        return llm_errf(err, "%s: record at byte %llu is not a map", r->name, at);
    for (uint32_t i = 0; i < o->via.map.size; i++)
        if (o->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
            return llm_errf(err, "%s: record at byte %llu has a key that is not a string", r->name, at);
    const msgpack_object *t = llm_mp_get(o, "type");
    if (!t || t->type != MSGPACK_OBJECT_STR)
        return llm_errf(err, "%s: record at byte %llu has no string field 'type'", r->name, at);
    return 0;
}

static int read_header(llm_stream_reader *r, llm_err *err)
{
    int got = next_message(r, err);
    if (got < 0) return -1;
    if (got == 0) return llm_errf(err, "%s: empty stream: no header record", r->name);
    const msgpack_object *h = &r->rec.data;
    if (h->type != MSGPACK_OBJECT_MAP || !llm_mp_str_eq(llm_mp_get(h, "format"), LLM_STREAM_FORMAT))
        return llm_errf(err, "%s: not an llmux stream (no header record with format \"%s\" at byte 0)", r->name,
                        LLM_STREAM_FORMAT);
    if (check_shape(r, h, err)) return -1;
    if (!llm_mp_str_eq(llm_mp_get(h, "type"), "header"))
        return llm_errf(err, "%s: first record is not of type \"header\"", r->name);
    uint64_t version, width;
    if (llm_mp_get_u64(h, "version", &version) || version != LLM_STREAM_VERSION)
        return llm_errf(err, "%s: header: unsupported or missing version (this reader reads version %d)", r->name,
                        LLM_STREAM_VERSION);
    const msgpack_object *kind = llm_mp_get(h, "kind");
    if (!kind || kind->type != MSGPACK_OBJECT_STR) return llm_errf(err, "%s: header: missing string field 'kind'", r->name);
    if (llm_mp_get_u64(h, "token_width", &width) || (width != 2 && width != 4))
        return llm_errf(err, "%s: header: token_width must be 2 or 4", r->name);
    r->token_width = (int)width;
    const msgpack_object *tf = llm_mp_get(h, "token_fields");
    if (tf) {
        if (tf->type != MSGPACK_OBJECT_ARRAY) return llm_errf(err, "%s: header: token_fields is not an array", r->name);
        for (uint32_t i = 0; i < tf->via.array.size; i++)
            if (tf->via.array.ptr[i].type != MSGPACK_OBJECT_STR)
                return llm_errf(err, "%s: header: token_fields holds a non-string", r->name);
    }
    /* keep the header: copy its bytes and decode them again there */
    size_t len = (size_t)(r->buf_offset + r->start - r->rec_offset);
    r->header_bytes = malloc(len);
    if (!r->header_bytes) return llm_errf(err, "%s: out of memory", r->name);
    memcpy(r->header_bytes, r->buf + r->start - len, len);
    size_t off = 0;
    if (msgpack_unpack_next(&r->header, (const char *)r->header_bytes, len, &off) != MSGPACK_UNPACK_SUCCESS)
        return llm_errf(err, "%s: header could not be decoded twice", r->name);
    tf = llm_mp_get(&r->header.data, "token_fields");
    r->token_fields = tf;
    r->state = IN_BODY;
    return 0;
}

int llm_sr_open(llm_stream_reader **out, int fd, const char *name, size_t max_record, llm_err *err)
{
    return llm_sr_open_prefixed(out, fd, name, max_record, NULL, 0, err);
}

int llm_sr_open_prefixed(llm_stream_reader **out, int fd, const char *name, size_t max_record, const void *prefix,
                         size_t n, llm_err *err)
{
    *out = NULL;
    llm_stream_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->name = strdup(name)) || (n && !(r->buf = malloc(n + 65536)))) {
        if (r) free(r->name);
        free(r);
        return llm_errf(err, "%s: out of memory", name);
    }
    if (n) {
        memcpy(r->buf, prefix, n);
        r->cap = n + 65536;
        r->end = n;
    }
    r->fd = fd;
    r->max_record = max_record ? max_record : LLM_STREAM_MAX_RECORD_DEFAULT;
    msgpack_unpacked_init(&r->rec);
    msgpack_unpacked_init(&r->header);
    if (read_header(r, err)) { llm_sr_close(r); return -1; }
    *out = r;
    return 0;
}

void llm_sr_close(llm_stream_reader *r)
{
    if (!r) return;
    msgpack_unpacked_destroy(&r->rec);
    msgpack_unpacked_destroy(&r->header);
    free(r->header_bytes);
    free(r->buf);
    free(r->name);
    free(r);
}

const msgpack_object *llm_sr_header(const llm_stream_reader *r) { return &r->header.data; }
int llm_sr_token_width(const llm_stream_reader *r) { return r->token_width; }
uint64_t llm_sr_offset(const llm_stream_reader *r) { return r->rec_offset; }
uint64_t llm_sr_records(const llm_stream_reader *r) { return r->records; }
const msgpack_object *llm_sr_end(const llm_stream_reader *r) { return r->state == ENDED ? &r->rec.data : NULL; }

const char *llm_sr_kind(const llm_stream_reader *r)
{
    static __thread char kind[64];
    const msgpack_object *k = llm_mp_get(&r->header.data, "kind");
    size_t n = k->via.str.size < sizeof kind - 1 ? k->via.str.size : sizeof kind - 1;
    memcpy(kind, k->via.str.ptr, n);
    kind[n] = 0;
    return kind;
}

int llm_sr_is_token_field(const llm_stream_reader *r, const char *key, size_t keylen)
{
    if (!r->token_fields) return keylen == 6 && !memcmp(key, "tokens", 6);
    for (uint32_t i = 0; i < r->token_fields->via.array.size; i++) {
        const msgpack_object *s = &r->token_fields->via.array.ptr[i];
        if (s->via.str.size == keylen && !memcmp(s->via.str.ptr, key, keylen)) return 1;
    }
    return 0;
}

int llm_sr_next(llm_stream_reader *r, const msgpack_object **rec, llm_err *err)
{
    if (r->state == ENDED) return 0;
    int got = next_message(r, err);
    if (got < 0) return -1;
    unsigned long long at = (unsigned long long)r->rec_offset;
    if (got == 0)
        return llm_errf(err, "%s: truncated: the stream ends at byte %llu without its end record (%llu records read)",
                        r->name, at, (unsigned long long)r->records);
    const msgpack_object *o = &r->rec.data;
    if (check_shape(r, o, err)) return -1;
    const msgpack_object *type = llm_mp_get(o, "type");
    if (llm_mp_str_eq(type, "header"))
        return llm_errf(err, "%s: a second header record at byte %llu (streams cannot be concatenated)", r->name, at);
    if (llm_mp_str_eq(type, "end")) {
        uint64_t n;
        if (llm_mp_get_u64(o, "records", &n))
            return llm_errf(err, "%s: end record at byte %llu has no count 'records'", r->name, at);
        if (n != r->records)
            return llm_errf(err, "%s: end record at byte %llu counts %llu records, the stream has %llu", r->name, at,
                            (unsigned long long)n, (unsigned long long)r->records);
        r->state = ENDED;
        /* r->rec (the end record, see llm_sr_end) stays valid: fill only reads
         * here when every byte is consumed, so it writes over nothing but
         * what a read past the end brings in, and that is an error */
        if (r->start == r->end && !r->eof && fill(r, 0, err) < 0) return -1;
        if (r->start != r->end)
            return llm_errf(err, "%s: data after the end record, at byte %llu", r->name,
                            (unsigned long long)(r->buf_offset + r->start));
        return 0;
    }
    /* token fields must be bin of whole tokens, wherever they are read later */
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (!llm_sr_is_token_field(r, k->via.str.ptr, k->via.str.size)) continue;
        if (v->type != MSGPACK_OBJECT_BIN)
            return llm_errf(err, "%s: record at byte %llu: token field '%.*s' is not bin", r->name, at,
                            (int)k->via.str.size, k->via.str.ptr);
        if (v->via.bin.size % (uint32_t)r->token_width)
            return llm_errf(err, "%s: record at byte %llu: token field '%.*s' has %u bytes, not a multiple of the token width %d",
                            r->name, at, (int)k->via.str.size, k->via.str.ptr, v->via.bin.size, r->token_width);
    }
    r->records++;
    *rec = o;
    return 1;
}

uint64_t llm_sr_data_offset(const llm_stream_reader *r, const void *p)
{
    const unsigned char *rec = r->buf + r->start - r->rec_len, *q = p;
    if (!r->rec_len || q < rec || q > rec + r->rec_len) return UINT64_MAX;
    return r->rec_offset + (uint64_t)(q - rec);
}

int llm_sr_tokens(const llm_stream_reader *r, const msgpack_object *rec, const char *key,
                  uint32_t **ids, size_t *cap, size_t *n, llm_err *err)
{
    unsigned long long at = (unsigned long long)r->rec_offset;
    const msgpack_object *v = llm_mp_get(rec, key);
    if (!v) return llm_errf(err, "%s: record at byte %llu: no field '%s'", r->name, at, key);
    if (v->type != MSGPACK_OBJECT_BIN)
        return llm_errf(err, "%s: record at byte %llu: field '%s' is not bin", r->name, at, key);
    size_t w = (size_t)r->token_width, bytes = v->via.bin.size;
    if (bytes % w)
        return llm_errf(err, "%s: record at byte %llu: field '%s' has %zu bytes, not a multiple of the token width %zu",
                        r->name, at, key, bytes, w);
    size_t count = bytes / w;
    if (count > *cap) {
        uint32_t *p = realloc(*ids, (count ? count : 1) * sizeof *p);
        if (!p) return llm_errf(err, "%s: out of memory", r->name);
        *ids = p;
        *cap = count;
    }
    llm_le_to_u32(*ids, v->via.bin.ptr, count, (int)w);   /* unaligned bytes: never cast */
    *n = count;
    return 0;
}
