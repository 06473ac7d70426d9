/* The safetensors reader and writer: round trips, layout, and rejection of
 * every kind of malformed file (built in memory). */
#include "safetensors.h"
#include "unit.h"

#include <dirent.h>
#include <stdarg.h>
#include <unistd.h>

static char dir[] = "/tmp/llmux-unit-XXXXXX";

/* A file image: 8-byte length, header text, then `data` zero bytes. */
static unsigned char *image(size_t *len, size_t data, const char *fmt, ...)
{
    char hdr[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(hdr, sizeof hdr, fmt, ap);
    va_end(ap);
    *len = 8 + (size_t)n + data;
    unsigned char *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, hdr, (size_t)n);
    return b;
}

static int open_image(unsigned char *b, size_t len, llm_err *err)
{
    llm_st_file *f;
    int rc = llm_st_open_mem(b, len, "x.safetensors", &f, err);
    llm_st_close(f);
    free(b);
    return rc;
}

#define REJECT(data, needle, ...)                                      \
    do {                                                               \
        size_t len_;                                                   \
        unsigned char *b_ = image(&len_, data, __VA_ARGS__);           \
        llm_err e_;                                                    \
        int rc_ = open_image(b_, len_, &e_);                           \
        CHECK_ERR(rc_, e_, needle);                                    \
        if (rc_) CHECK(strstr(e_.msg, "x.safetensors") != NULL);       \
    } while (0)

#define ACCEPT(data, ...)                                              \
    do {                                                               \
        size_t len_;                                                   \
        unsigned char *b_ = image(&len_, data, __VA_ARGS__);           \
        llm_err e_;                                                    \
        int rc_ = open_image(b_, len_, &e_);                           \
        if (rc_) printf("# unexpected: %s\n", e_.msg);                 \
        CHECK(rc_ == 0);                                               \
    } while (0)

TEST(accepts_minimal_files)
{
    ACCEPT(0, "{}");
    ACCEPT(0, "{}      ");
    ACCEPT(8, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
    /* zero-size tensors may share an offset; a scalar has shape [] */
    ACCEPT(4, "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
              "\"y\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
              "\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}");
}

TEST(rejects_malformed_headers)
{
    llm_err e;
    CHECK_ERR(llm_st_open_mem("", 0, "x.safetensors", &(llm_st_file *){0}, &e), e, "empty");
    CHECK_ERR(llm_st_open_mem("\x02\0\0", 3, "x.safetensors", &(llm_st_file *){0}, &e), e, "too short");
    unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    CHECK_ERR(llm_st_open_mem(huge, 16, "x.safetensors", &(llm_st_file *){0}, &e), e, "exceeds the limit");
    unsigned char past[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK_ERR(llm_st_open_mem(past, 12, "x.safetensors", &(llm_st_file *){0}, &e), e, "past the end");
    REJECT(0, "does not start", "[]");
    REJECT(0, "invalid JSON", "{\"a\":");
    REJECT(0, "invalid JSON", "{} x");
    REJECT(0, "invalid JSON", "{\"a\":1,\"a\":2}");
    REJECT(0, "invalid JSON", "{\"\xff\":1}");
    REJECT(0, "not an object", "{\"a\":1}");
    REJECT(0, "unsupported dtype 'F4'", "{\"a\":{\"dtype\":\"F4\",\"shape\":[],\"data_offsets\":[0,0]}}");
    REJECT(0, "unknown field 'offsets'", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"offsets\":[0,4]}}");
    REJECT(0, "non-array shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,0]}}");
    REJECT(0, "shape holds", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}");
    REJECT(0, "shape holds", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,0]}}");
    REJECT(0, "invalid JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,0]}}");
    REJECT(0, "shape product overflows",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}");
    REJECT(0, "byte size overflows",
           "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}");
    REJECT(0, "data_offsets is not a pair", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0]}}");
    REJECT(8, "run backwards", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}");
    REJECT(4, "past the data section", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
    REJECT(8, "needs 4", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}");
    REJECT(8, "overlaps", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}");
    REJECT(12, "hole", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}");
    REJECT(8, "after the last tensor", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    REJECT(0, "not a string", "{\"__metadata__\":{\"k\":1}}");
    REJECT(0, "__metadata__ is not an object", "{\"__metadata__\":[]}");
    REJECT(4, "not in the file", "{\"__metadata__\":{\"quantization\":\"{\\\"b\\\":{\\\"type\\\":\\\"q8_0\\\",\\\"shape\\\":[32]}}\"},"
                                 "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}");
    REJECT(4, "takes 34 bytes", "{\"__metadata__\":{\"quantization\":\"{\\\"a\\\":{\\\"type\\\":\\\"q8_0\\\",\\\"shape\\\":[32]}}\"},"
                                "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}");
    REJECT(4, "multiple of 32", "{\"__metadata__\":{\"quantization\":\"{\\\"a\\\":{\\\"type\\\":\\\"q4_0\\\",\\\"shape\\\":[31]}}\"},"
                                "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}");
    REJECT(4, "unknown quantization type", "{\"__metadata__\":{\"quantization\":\"{\\\"a\\\":{\\\"type\\\":\\\"q3\\\",\\\"shape\\\":[32]}}\"},"
                                           "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}");
}

TEST(write_then_read_every_dtype)
{
    char path[256];
    snprintf(path, sizeof path, "%s/all.safetensors", dir);
    llm_err e;
    llm_st_writer *w = llm_st_writer_new();
    static unsigned char data[LLM_DTYPE_COUNT][6 * 8];
    for (int k = 0; k < LLM_DTYPE_COUNT; k++) {
        size_t n = 6 * llm_dtype_size((llm_dtype)k);
        for (size_t j = 0; j < n; j++) data[k][j] = (unsigned char)unit_rand();
        char name[32];
        snprintf(name, sizeof name, "w.%s", llm_dtype_name((llm_dtype)k));
        CHECK(llm_st_writer_add(w, name, (llm_dtype)k, 2, (uint64_t[]){2, 3}, data[k], n, &e) == 0);
    }
    CHECK(llm_st_writer_meta(w, "b", "2", &e) == 0);
    CHECK(llm_st_writer_meta(w, "a", "old", &e) == 0);
    CHECK(llm_st_writer_meta(w, "a", "1", &e) == 0);
    CHECK(llm_st_writer_meta(w, "quantization", "{}", &e) != 0);
    CHECK(llm_st_writer_add(w, "w.F32", LLM_F32, 1, (uint64_t[]){1}, data[0], 4, &e) != 0);
    CHECK(llm_st_writer_add(w, "bad", LLM_F32, 1, (uint64_t[]){3}, data[0], 8, &e) != 0);
    CHECK(llm_st_writer_write(w, path, &e) == 0);
    llm_st_writer_free(w);

    llm_st_file *f;
    CHECK(llm_st_open(path, &f, &e) == 0);
    if (!f) return;
    CHECK_EQ_U64(llm_st_count(f), LLM_DTYPE_COUNT);
    CHECK_EQ_U64((8 + llm_st_header_len(f)) % 8, 0);
    for (int k = 0; k < LLM_DTYPE_COUNT; k++) {
        char name[32];
        snprintf(name, sizeof name, "w.%s", llm_dtype_name((llm_dtype)k));
        const llm_st_tensor *t = llm_st_find(f, name);
        CHECK(t != NULL);
        if (!t) continue;
        CHECK(t->dtype == (llm_dtype)k && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
        CHECK(memcmp(t->data, data[k], 6 * llm_dtype_size((llm_dtype)k)) == 0);
    }
    /* layout: widest dtype first in the safetensors crate's order */
    for (size_t i = 1; i < llm_st_count(f); i++) CHECK(llm_st_at(f, i - 1)->dtype > llm_st_at(f, i)->dtype);
    CHECK(llm_st_find(f, "missing") == NULL);
    CHECK(llm_st_meta(f, "a") && !strcmp(llm_st_meta(f, "a"), "1"));
    CHECK(llm_st_meta_count(f) == 2 && !strcmp(llm_st_meta_key(f, 0), "a"));
    llm_st_close(f);
}

TEST(quantized_blobs_round_trip)
{
    char path[256];
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    llm_err e;
    llm_st_writer *w = llm_st_writer_new();
    static unsigned char q4[4 * 2 * 18];
    const llm_quant_type *q = llm_quant_find("q4_0");
    CHECK(q && q->block_bytes == 18);
    CHECK(llm_st_writer_add_quant(w, "lin", q, 2, (uint64_t[]){4, 64}, q4, sizeof q4, &e) == 0);
    CHECK(llm_st_writer_add_quant(w, "odd", q, 2, (uint64_t[]){4, 60}, q4, sizeof q4, &e) != 0);
    CHECK(llm_st_writer_add_quant(w, "short", q, 2, (uint64_t[]){4, 64}, q4, sizeof q4 - 1, &e) != 0);
    CHECK(llm_st_writer_write(w, path, &e) == 0);
    llm_st_writer_free(w);
    llm_st_file *f;
    CHECK(llm_st_open(path, &f, &e) == 0);
    if (!f) return;
    const llm_st_tensor *t = llm_st_find(f, "lin");
    CHECK(t && t->quant == q && t->quant_ndim == 2 && t->quant_shape[1] == 64 && t->dtype == LLM_U8);
    CHECK(strstr(llm_st_meta(f, "quantization"), "\"lin\":{\"type\":\"q4_0\",\"shape\":[4,64]}") != NULL);
    llm_st_close(f);
}

TEST(failed_write_leaves_no_file_and_no_temp)
{
    char path[256];
    snprintf(path, sizeof path, "%s/no-such-dir/x.safetensors", dir);
    llm_err e;
    llm_st_writer *w = llm_st_writer_new();
    CHECK_ERR(llm_st_writer_write(w, path, &e), e, "no-such-dir/x.safetensors");
    llm_st_writer_free(w);
    /* a successful write leaves only the final file in the directory */
    DIR *d = opendir(dir);
    struct dirent *de;
    int temps = 0;
    while (d && (de = readdir(d))) temps += strstr(de->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    CHECK(temps == 0);
}

TEST(every_prefix_of_a_valid_file_is_rejected)
{
    char path[256];
    snprintf(path, sizeof path, "%s/all.safetensors", dir);
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    if (!fp) return;
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        llm_st_file *f;
        llm_err e;
        if (llm_st_open_mem(buf, len, "p", &f, &e) == 0) { accepted++; llm_st_close(f); }
    }
    CHECK(accepted == 0);
}

int main(void)
{
    unit_seed();
    if (!mkdtemp(dir)) return 1;
    RUN(accepts_minimal_files);
    RUN(rejects_malformed_headers);
    RUN(write_then_read_every_dtype);
    RUN(quantized_blobs_round_trip);
    RUN(failed_write_leaves_no_file_and_no_temp);
    RUN(every_prefix_of_a_valid_file_is_rejected);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return unit_done();
}
