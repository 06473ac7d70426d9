/* llm-shard: documents of tokens (an llm-tokenize stream) into training
 * sequences. See llm-shard(1); the packing is lib/pack.c. */
#include "cli.h"
#include "fileio.h"
#include "pack.h"
#include "seqset.h"
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int64_t seq_len;
static int no_cross_doc;
static uint64_t max_record, shard_size;
static const char *out_dir;

static const llm_opt options[] = {
    {"seq", 0, LLM_OPT_INT, &seq_len, "T", "tokens per sequence (each sequence holds T + 1: inputs and shifted targets)", 1, 1 << 24},
    {"no-cross-doc", 0, LLM_OPT_FLAG, &no_cross_doc, NULL, "no sequence crosses a document boundary (padding and a mask)", 0, 0},
    {"output", 'o', LLM_OPT_STR, &out_dir, "DIR", "write a shard set (a new directory) instead of a stream to stdout", 0, 0},
    {"shard-size", 0, LLM_OPT_SIZE, &shard_size, "SIZE", "with -o: bytes per shard file, about (default 64M)", 0, 0},
    {"max-record", 0, LLM_OPT_SIZE, &max_record, "SIZE", "largest input record accepted (default 64M)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-shard",
    .summary = "pack token documents into training sequences",
    .synopsis = "--seq T [--no-cross-doc] [-o DIR [--shard-size SIZE]] [FILE.stream...]",
    .opts = options,
    .footer = "Reads doc streams (llm-tokenize's output; '-' or no FILE is stdin) and writes one stream of\n"
              "sequence records to stdout, or with -o a shard set (see llm-shards(5)).",
};

typedef struct {
    llm_stream_writer *w;        /* a stream to stdout, or */
    llm_seqset_writer *set;      /* a shard set */
    int masks;
} sink;

static int emit(void *ctx, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err)
{
    sink *s = ctx;
    if (s->set) return llm_seqset_writer_add(s->set, tokens, mask, n, err);
    llm_sw_record(s->w, "seq", mask ? 2 : 1);
    llm_sw_kv_tokens(s->w, "tokens", tokens, n);
    if (mask) llm_sw_kv_bin(s->w, "mask", mask, n);
    return 0;
}

/* The header fields a sequence stream copies from its doc stream. */
typedef struct {
    char tokenizer[256];
    uint64_t vocab_size, eos;
    int width, has_eos, masks;
} source_info;

static void read_info(llm_stream_reader *r, const char *name, source_info *info)
{
    const msgpack_object *h = llm_sr_header(r), *tk = llm_mp_get(h, "tokenizer");
    if (strcmp(llm_sr_kind(r), "docs")) llm_die("%s: a stream of kind '%s', not docs", name, llm_sr_kind(r));
    if (tk && tk->type == MSGPACK_OBJECT_STR && tk->via.str.size < sizeof info->tokenizer) {
        memcpy(info->tokenizer, tk->via.str.ptr, tk->via.str.size);
        info->tokenizer[tk->via.str.size] = 0;
    }
    info->has_eos = llm_mp_get_u64(h, "eos_id", &info->eos) == 0;
    llm_mp_get_u64(h, "vocab_size", &info->vocab_size);
    info->width = llm_sr_token_width(r);
    info->masks = llm_mp_str_eq(llm_mp_get(h, "mask"), "loss");
}

static sink *cleanup_sink;

/* A failure leaves no half-written shard set behind. */
static void remove_partial_set(void)
{
    if (cleanup_sink && cleanup_sink->set) llm_seqset_writer_abort(cleanup_sink->set);
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    atexit(remove_partial_set);
    char **files;
    int nfiles = llm_cli_parse(&cmd, argc, argv, &files);
    if (!seq_len) llm_usage_error("--seq T is required");
    if (nfiles == 0) {
        static char *dash[] = {"-", NULL};
        files = dash;
        nfiles = 1;
    }
    llm_err err;
    sink s = {0};
    cleanup_sink = &s;
    llm_packer *p = NULL;
    source_info first = {0};
    uint32_t *ids = NULL;
    uint8_t *mask = NULL;
    size_t cap = 0, mask_cap = 0, n;
    for (int f = 0; f < nfiles; f++) {
        const char *name = strcmp(files[f], "-") ? files[f] : "<stdin>";
        int fd = strcmp(files[f], "-") ? open(files[f], O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
        if (fd < 0) llm_die("%s: %s", files[f], strerror(errno));
        llm_stream_reader *r;
        if (llm_sr_open(&r, fd, name, (size_t)max_record, &err)) llm_die_err(&err);
        source_info info = {0};
        read_info(r, name, &info);
        if (!info.has_eos) llm_die("%s: the stream's header has no eos_id to join documents with", name);
        if (f == 0) {
            first = info;
            llm_pack_opts o = {(size_t)seq_len, (uint32_t)info.eos, (uint32_t)info.eos, !no_cross_doc, info.masks};
            s.masks = info.masks || no_cross_doc;
            if (llm_packer_new(&p, &o, emit, &s, &err)) llm_die_err(&err);
            if (out_dir) {
                llm_seqset_info si = {info.tokenizer, info.vocab_size, info.eos, (uint32_t)seq_len,
                                      (uint32_t)info.width, s.masks, shard_size};
                if (llm_seqset_writer_open(&s.set, out_dir, &si, &err)) llm_die_err(&err);
            } else {
                if (llm_sw_open(&s.w, STDOUT_FILENO, "<stdout>", &err)) llm_die_err(&err);
                llm_sw_header(s.w, "seqs", info.width, 4 + (size_t)s.masks);
                llm_sw_kv_str(s.w, "tokenizer", info.tokenizer);
                llm_sw_kv_u64(s.w, "vocab_size", info.vocab_size);
                llm_sw_kv_u64(s.w, "eos_id", info.eos);
                llm_sw_kv_u64(s.w, "seq_len", (uint64_t)seq_len);
                if (s.masks) llm_sw_kv_str(s.w, "mask", "loss");
            }
        } else if (strcmp(info.tokenizer, first.tokenizer) || info.eos != first.eos || info.width != first.width ||
                   info.masks != first.masks) {
            llm_die("%s: tokenized differently from %s (tokenizer, eos, width or masks)", name, files[0]);
        }
        const msgpack_object *rec;
        int got;
        while ((got = llm_sr_next(r, &rec, &err)) == 1) {
            if (!llm_mp_str_eq(llm_mp_get(rec, "type"), "doc")) continue;
            if (llm_sr_tokens(r, rec, "tokens", &ids, &cap, &n, &err)) llm_die_err(&err);
            const msgpack_object *m = info.masks ? llm_mp_get(rec, "mask") : NULL;
            if (info.masks && (!m || m->type != MSGPACK_OBJECT_BIN || m->via.bin.size != n))
                llm_die("%s: record at byte %llu: mask missing or not one byte per token", name,
                        (unsigned long long)llm_sr_offset(r));
            if (m && n > mask_cap) {
                uint8_t *nm = realloc(mask, n);
                if (!nm) llm_die("out of memory");
                mask = nm;
                mask_cap = n;
            }
            if (m) memcpy(mask, m->via.bin.ptr, n);
            if (llm_packer_add(p, ids, m ? mask : NULL, n, &err)) llm_die_err(&err);
        }
        if (got < 0) llm_die_err(&err);
        llm_sr_close(r);
        if (fd != STDIN_FILENO) close(fd);
    }
    if (llm_packer_finish(p, &err)) llm_die_err(&err);
    const llm_pack_stats *st = llm_packer_stats(p);
    if (s.set) {
        llm_seqset_counts counts = {st->documents, st->tokens_in, st->tokens_dropped, st->tokens_padded};
        llm_seqset_writer *set = s.set;
        s.set = NULL;   /* finish frees it, on failure too */
        if (llm_seqset_writer_finish(set, &counts, &err)) llm_die_err(&err);
    } else if (llm_sw_finish(s.w, &err)) {
        llm_die_err(&err);
    }
    if (llm_progress_enabled())
        fprintf(stderr, "%s: %llu documents, %llu tokens: %llu sequences of %lld; %llu tokens dropped, %llu padded\n",
                llm_progname(),
                    (unsigned long long)st->documents, (unsigned long long)st->tokens_in,
                    (unsigned long long)st->sequences, (long long)seq_len, (unsigned long long)st->tokens_dropped,
                    (unsigned long long)st->tokens_padded);
    llm_sw_free(s.w);
    llm_packer_free(p);
    free(ids);
    free(mask);
    return 0;
}
