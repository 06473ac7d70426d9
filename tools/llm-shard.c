/* llm-shard: documents of tokens (an llm-tokenize stream) into training
 * sequences. See llm-shard(1); the packing is lib/pack.c, shard sets
 * lib/seqset.c. */
#include "cli.h"
#include "fileio.h"
#include "hash.h"
#include "pack.h"
#include "le.h"
#include "seqset.h"
#include "shuffle.h"
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int64_t seq_len, seed;
static int no_cross_doc, shuffle;
static uint64_t max_record, shard_size, mem;
static const char *out_dir, *tmp_dir;
static double val_fraction;

static const llm_opt options[] = {
    {"seq", 0, LLM_OPT_INT, &seq_len, "T", "tokens per sequence (each sequence holds T + 1: inputs and shifted targets)", 1, 1 << 24},
    {"no-cross-doc", 0, LLM_OPT_FLAG, &no_cross_doc, NULL, "no sequence crosses a document boundary (padding and a mask)", 0, 0},
    {"output", 'o', LLM_OPT_STR, &out_dir, "DIR", "write shard sets DIR/train (and DIR/val) instead of a stream to stdout", 0, 0},
    {"val", 0, LLM_OPT_DOUBLE, &val_fraction, "F", "with -o: this fraction of the documents goes to DIR/val", 0, 0},
    {"seed", 0, LLM_OPT_INT, &seed, "S", "which documents go to val, and the order of --shuffle (default 0)", 0, 0},
    {"shuffle", 0, LLM_OPT_FLAG, &shuffle, NULL, "write the sequences in an order scattered by --seed (a global shuffle, on disk)", 0, 0},
    {"mem", 0, LLM_OPT_SIZE, &mem, "SIZE", "with --shuffle: memory to use, about (default a quarter of RAM)", 0, 0},
    {"tmp", 0, LLM_OPT_STR, &tmp_dir, "DIR", "with --shuffle: temporary files go here (default DIR of -o, else $TMPDIR or /tmp)", 0, 0},
    {"shard-size", 0, LLM_OPT_SIZE, &shard_size, "SIZE", "with -o: bytes per shard file, about (default 64M)", 0, 0},
    {"max-record", 0, LLM_OPT_SIZE, &max_record, "SIZE", "largest input record accepted (default 64M)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-shard",
    .summary = "pack token documents into training sequences",
    .synopsis = "--seq T [--no-cross-doc] [--shuffle [--mem SIZE] [--tmp DIR]] [--seed S] [-o DIR [--val F] [--shard-size SIZE]] [FILE.stream...]",
    .opts = options,
    .footer = "Reads doc streams (llm-tokenize's output; '-' or no FILE is stdin) and writes one stream of\n"
              "sequence records to stdout, or with -o shard sets DIR/train and DIR/val (see llm-shards(5)).",
};

/* One output: a stream to stdout, or a shard set; with its own packer and,
 * with --shuffle, its own shuffler between the two. */
typedef struct {
    const char *name;            /* "train", "val" */
    llm_stream_writer *w;
    llm_seqset_writer *set;
    llm_packer *packer;
    llm_shuffler *shuffler;
    int width, masks;
    unsigned char *rec;          /* one record in the shard layout (llm_seq_encode) */
    uint32_t *tokens;            /* one sequence, decoded back for a stream */
    uint8_t *mask;
} split;

static split splits[2] = {{.name = "train"}, {.name = "val"}};
static int nsplits = 1;

/* A failure leaves no half-written shard set behind. */
static void remove_partial_sets(void)
{
    for (int i = 0; i < nsplits; i++)
        if (splits[i].set) llm_seqset_writer_abort(splits[i].set);
}

/* A sequence to its output: stream or shard set. */
static int write_seq(split *s, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err)
{
    if (s->set) return llm_seqset_writer_add(s->set, tokens, mask, n, err);
    llm_sw_record(s->w, "seq", mask ? 2 : 1);
    llm_sw_kv_tokens(s->w, "tokens", tokens, n);
    if (mask) llm_sw_kv_bin(s->w, "mask", mask, n);
    return 0;
}

/* A sequence coming out of the shuffle, in the shard layout. */
static int unshuffle(void *ctx, const void *rec, llm_err *err)
{
    split *s = ctx;
    if (s->set) return llm_seqset_writer_add_record(s->set, rec, err);
    size_t n = (size_t)seq_len + 1;
    llm_seq_decode(s->tokens, s->masks ? s->mask : NULL, rec, n, s->width);
    return write_seq(s, s->tokens, s->masks ? s->mask : NULL, n, err);
}

/* A sequence from the packer. */
static int emit(void *ctx, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err)
{
    split *s = ctx;
    if (!s->shuffler) return write_seq(s, tokens, mask, n, err);
    if (llm_seq_encode(s->rec, tokens, mask, n, s->width))
        return llm_errf(err, "a token id does not fit %d bytes", s->width);
    return llm_shuffler_add(s->shuffler, s->rec, err);
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

static const char *shuffle_dir(void)
{
    if (tmp_dir) return tmp_dir;
    if (out_dir) return out_dir;
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

static void open_outputs(const source_info *info)
{
    llm_err err;
    int masks = info->masks || no_cross_doc;
    if (out_dir && mkdir(out_dir, 0777) != 0 && errno != EEXIST) llm_die("%s: %s", out_dir, strerror(errno));
    for (int i = 0; i < nsplits; i++) {
        split *s = &splits[i];
        llm_pack_opts o = {(size_t)seq_len, (uint32_t)info->eos, (uint32_t)info->eos, !no_cross_doc, info->masks};
        if (llm_packer_new(&s->packer, &o, emit, s, &err)) llm_die_err(&err);
        s->width = info->width;
        s->masks = masks;
        if (shuffle) {
            size_t n = (size_t)seq_len + 1, rec = llm_seq_record_bytes((uint32_t)seq_len, (uint32_t)info->width, masks);
            s->rec = malloc(rec);
            s->tokens = malloc(n * sizeof *s->tokens);
            s->mask = malloc(n);
            if (!s->rec || !s->tokens || !s->mask) llm_die("out of memory");
            /* the splits share the budget; the input's buffers have the rest */
            if (llm_shuffler_new(&s->shuffler, rec, (uint64_t)seed, (size_t)(mem * 3 / 4) / (size_t)nsplits, shuffle_dir(),
                                 &err))
                llm_die_err(&err);
        }
        if (out_dir) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", out_dir, s->name);
            llm_seqset_info si = {info->tokenizer, info->vocab_size, info->eos, (uint32_t)seq_len,
                                  (uint32_t)info->width, masks, shard_size};
            if (llm_seqset_writer_open(&s->set, path, &si, &err)) llm_die_err(&err);
            continue;
        }
        if (llm_sw_open(&s->w, STDOUT_FILENO, "<stdout>", &err)) llm_die_err(&err);
        llm_sw_header(s->w, "seqs", info->width, 4 + (size_t)masks);
        llm_sw_kv_str(s->w, "tokenizer", info->tokenizer);
        llm_sw_kv_u64(s->w, "vocab_size", info->vocab_size);
        llm_sw_kv_u64(s->w, "eos_id", info->eos);
        llm_sw_kv_u64(s->w, "seq_len", (uint64_t)seq_len);
        if (masks) llm_sw_kv_str(s->w, "mask", "loss");
    }
}

/* Which split document number `doc` goes to: the same for the same seed,
 * whatever else is in the input. */
static int split_of(uint64_t doc)
{
    if (nsplits == 1) return 0;
    uint64_t h = llm_hash_mix((uint64_t)seed * 0x9e3779b97f4a7c15ull ^ llm_hash_mix(doc + 1));
    return (double)(h >> 11) * 0x1.0p-53 < val_fraction ? 1 : 0;
}

static void finish_outputs(void)
{
    llm_err err;
    for (int i = 0; i < nsplits; i++) {
        split *s = &splits[i];
        if (llm_packer_finish(s->packer, &err)) llm_die_err(&err);
        if (s->shuffler) {
            if (llm_progress_enabled())
                fprintf(stderr, "%s: %s: writing %llu sequences in shuffled order\n", llm_progname(), s->name,
                        (unsigned long long)llm_shuffler_count(s->shuffler));
            if (llm_shuffler_finish(s->shuffler, unshuffle, s, &err)) llm_die_err(&err);
            llm_shuffler_free(s->shuffler);
            s->shuffler = NULL;
        }
        const llm_pack_stats *st = llm_packer_stats(s->packer);
        if (s->set) {
            llm_seqset_counts counts = {st->documents, st->tokens_in, st->tokens_dropped, st->tokens_padded};
            llm_seqset_writer *set = s->set;
            s->set = NULL;   /* finish frees it, on failure too */
            if (llm_seqset_writer_finish(set, &counts, &err)) llm_die_err(&err);
        } else if (llm_sw_finish(s->w, &err)) {
            llm_die_err(&err);
        }
        if (llm_progress_enabled())
            fprintf(stderr, "%s: %s: %llu documents, %llu tokens: %llu sequences of %lld; %llu tokens dropped, %llu padded\n",
                    llm_progname(), s->name, (unsigned long long)st->documents, (unsigned long long)st->tokens_in,
                    (unsigned long long)st->sequences, (long long)seq_len, (unsigned long long)st->tokens_dropped,
                    (unsigned long long)st->tokens_padded);
        llm_sw_free(s->w);
        llm_packer_free(s->packer);
        free(s->rec);
        free(s->tokens);
        free(s->mask);
    }
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    atexit(remove_partial_sets);
    char **files;
    int nfiles = llm_cli_parse(&cmd, argc, argv, &files);
    if (!seq_len) llm_usage_error("--seq T is required");
    if (val_fraction < 0 || val_fraction >= 1) llm_usage_error("--val must be at least 0 and less than 1");
    if (val_fraction > 0 && !out_dir) llm_usage_error("--val needs -o DIR (the two splits are two shard sets)");
    if (val_fraction > 0) nsplits = 2;
    if (!shuffle && (mem || tmp_dir)) llm_usage_error("--mem and --tmp are for --shuffle");
    if (shuffle) {
        if (!mem) mem = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE) / 4;
        if (mem < (16u << 20)) llm_usage_error("--mem must be at least 16M");
        /* one input record is held whole while it is read; keep it to an eighth */
        if (!max_record) max_record = mem / 8 < LLM_STREAM_MAX_RECORD_DEFAULT ? mem / 8 : LLM_STREAM_MAX_RECORD_DEFAULT;
    }
    if (nfiles == 0) {
        static char *dash[] = {"-", NULL};
        files = dash;
        nfiles = 1;
    }
    llm_err err;
    source_info first = {0};
    /* a document is decoded and packed a piece at a time: memory does not
     * grow with its length beyond the record itself */
    enum { PIECE = 65536 };
    static uint32_t ids[PIECE];
    uint64_t doc = 0;
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
            open_outputs(&info);
        } else if (strcmp(info.tokenizer, first.tokenizer) || info.eos != first.eos || info.width != first.width ||
                   info.masks != first.masks) {
            llm_die("%s: tokenized differently from %s (tokenizer, eos, width or masks)", name, files[0]);
        }
        const msgpack_object *rec;
        int got;
        while ((got = llm_sr_next(r, &rec, &err)) == 1) {
            if (!llm_mp_str_eq(llm_mp_get(rec, "type"), "doc")) continue;
            const msgpack_object *t = llm_mp_get(rec, "tokens");
            if (!t || t->type != MSGPACK_OBJECT_BIN)
                llm_die("%s: record at byte %llu: no tokens", name, (unsigned long long)llm_sr_offset(r));
            size_t n = t->via.bin.size / (size_t)info.width;   /* whole tokens: the reader checked */
            const msgpack_object *m = info.masks ? llm_mp_get(rec, "mask") : NULL;
            if (info.masks && (!m || m->type != MSGPACK_OBJECT_BIN || m->via.bin.size != n))
                llm_die("%s: record at byte %llu: mask missing or not one byte per token", name,
                        (unsigned long long)llm_sr_offset(r));
            llm_packer *packer = splits[split_of(doc++)].packer;
            if (n == 0 && m && llm_packer_append(packer, ids, (const uint8_t *)m->via.bin.ptr, 0, &err)) llm_die_err(&err);
            for (size_t at = 0; at < n; at += PIECE) {
                size_t k = n - at < PIECE ? n - at : PIECE;
                llm_le_to_u32(ids, (const unsigned char *)t->via.bin.ptr + at * (size_t)info.width, k, info.width);
                if (llm_packer_append(packer, ids, m ? (const uint8_t *)m->via.bin.ptr + at : NULL, k, &err))
                    llm_die_err(&err);
            }
            if (llm_packer_end_doc(packer, &err)) llm_die_err(&err);
        }
        if (got < 0) llm_die_err(&err);
        llm_sr_close(r);
        if (fd != STDIN_FILENO) close(fd);
    }
    finish_outputs();
    return 0;
}
