/* llm-tokenize: text to tokens (and back), and tokenizer training.
 * See llm-tokenize(1). The work is in lib/: tokenizer.c (encode/decode),
 * docsource.c (files, JSONL, directories, archives), encode_pool.c (threads,
 * order), chat.c (instruction data), bpe_train.c (training). */
#include "bpe_train.h"
#include "cli.h"
#include "docsource.h"
#include "encode_pool.h"
#include "fileio.h"
#include "pretok.h"
#include "stream.h"
#include "tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tok_path, *encoding, *format, *field, *out_path, *chat_name, *separator = "\n";
static int skip_bad, allow_special, add_special, instruct, jsonl_stdin, bytes_mode;
static int64_t threads = 0, vocab_size = 0;
static llm_strlist specials;
static uint64_t max_doc;

static const llm_opt encode_opts[] = {
    {"tokenizer", 't', LLM_OPT_STR, &tok_path, "TOK", "tokenizer.json, NAME.tiktoken rank file, or model file", 0, 0},
    {"pattern", 0, LLM_OPT_STR, &encoding, "NAME", "encoding of a rank file (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base)", 0, 0},
    {"format", 'f', LLM_OPT_STR, &format, "FMT", "stream (default when stdout is not a terminal), ids, or count", 0, 0},
    {"output", 'o', LLM_OPT_STR, &out_path, "FILE", "write here (atomically) instead of stdout", 0, 0},
    {"field", 0, LLM_OPT_STR, &field, "NAME", "JSONL text field (default text)", 0, 0},
    {"jsonl", 0, LLM_OPT_FLAG, &jsonl_stdin, NULL, "stdin is JSON lines", 0, 0},
    {"jobs", 'j', LLM_OPT_INT, &threads, "N", "threads (default: all cores); output order is input order", 1, 1024},
    {"allow-special", 0, LLM_OPT_FLAG, &allow_special, NULL, "special and added tokens in the text become their ids", 0, 0},
    {"add-special", 0, LLM_OPT_FLAG, &add_special, NULL, "add the tokenizer's BOS/EOS template to each document", 0, 0},
    {"instruct", 0, LLM_OPT_FLAG, &instruct, NULL, "JSONL instruction data (prompt/response or messages) with a loss mask", 0, 0},
    {"chat-template", 0, LLM_OPT_STR, &chat_name, "NAME", "chatml, llama2, llama3 or none (default: from tokenizer_config.json)", 0, 0},
    {"bytes", 0, LLM_OPT_FLAG, &bytes_mode, NULL, "documents are any bytes, invalid UTF-8 included (byte-level tokenizers)", 0, 0},
    {"skip-bad", 0, LLM_OPT_FLAG, &skip_bad, NULL, "skip bad documents and report how many", 0, 0},
    {"max-doc", 0, LLM_OPT_SIZE, &max_doc, "SIZE", "largest document (default 1G)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd encode_cmd = {
    .name = "llm-tokenize",
    .summary = "text to tokens, tokens to text, and tokenizer training",
    .synopsis = "-t TOK [--format stream|ids|count] [-j N] [FILE...]\n"
                "decode -t TOK [--separator STR] [FILE]\n"
                "train --vocab-size N [--pattern NAME] [--special TOKEN]... -o tokenizer.json FILE...",
    .opts = encode_opts,
    .footer = "FILE: text (one document), NAME.jsonl (a document per line), a directory (recursively),\n"
              "an archive (each member a document), or - for stdin. See 'llm-tokenize decode --help'\n"
              "and 'llm-tokenize train --help'.",
};

static const llm_opt decode_opts[] = {
    {"tokenizer", 't', LLM_OPT_STR, &tok_path, "TOK", "the tokenizer the ids came from", 0, 0},
    {"pattern", 0, LLM_OPT_STR, &encoding, "NAME", "encoding of a rank file", 0, 0},
    {"separator", 0, LLM_OPT_STR, &separator, "STR", "written between documents (default: a newline)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd decode_cmd = {
    .name = "llm-tokenize decode",
    .summary = "token ids (a stream, or JSON arrays one per line) back to text",
    .synopsis = "-t TOK [--separator STR] [FILE]",
    .opts = decode_opts,
};

static const llm_opt train_opts[] = {
    {"vocab-size", 0, LLM_OPT_INT, &vocab_size, "N", "tokens in the vocabulary, bytes and specials included", 257, 16777216},
    {"pattern", 0, LLM_OPT_STR, &encoding, "NAME", "pre-tokenization: gpt2 (default), cl100k_base, o200k_base, llama3, qwen2", 0, 0},
    {"special", 0, LLM_OPT_LIST, &specials, "TOKEN", "a special token (repeatable); ids 0.. in the order given", 0, 0},
    {"output", 'o', LLM_OPT_STR, &out_path, "FILE", "the tokenizer.json to write", 0, 0},
    {"field", 0, LLM_OPT_STR, &field, "NAME", "JSONL text field (default text)", 0, 0},
    {"skip-bad", 0, LLM_OPT_FLAG, &skip_bad, NULL, "skip bad documents and report how many", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd train_cmd = {
    .name = "llm-tokenize train",
    .summary = "learn a byte-level BPE tokenizer that Hugging Face tokenizers loads",
    .synopsis = "--vocab-size N [--pattern NAME] [--special TOKEN]... -o tokenizer.json FILE...",
    .opts = train_opts,
};

/* ---- encode ---- */

typedef struct {
    int fmt;                     /* 0 stream, 1 ids, 2 count */
    llm_stream_writer *sw;
    FILE *text_out;
    uint64_t docs, tokens, bytes, bad;
    llm_progress progress;
} sink;

static int emit(void *ctx, const llm_encoded *d, llm_err *err)
{
    sink *k = ctx;
    if (d->error) {
        if (!skip_bad) return llm_errf(err, "%s: %s", d->origin, d->error);
        llm_warning("%s: %s; skipped", d->origin, d->error);
        k->bad++;
        return 0;
    }
    k->docs++;
    k->tokens += d->n;
    k->bytes += d->text_bytes;
    llm_progress_update(&k->progress, k->docs);
    if (k->fmt == 0) {
        llm_sw_record(k->sw, "doc", d->mask ? 3 : 2);
        llm_sw_kv_u64(k->sw, "id", d->index);
        llm_sw_kv_tokens(k->sw, "tokens", d->ids, d->n);
        if (d->mask) llm_sw_kv_bin(k->sw, "mask", d->mask, d->n);
        return 0;
    }
    if (k->fmt == 1) {
        fputc('[', k->text_out);
        for (size_t i = 0; i < d->n; i++) fprintf(k->text_out, i ? ",%u" : "%u", d->ids[i]);
        if (fputs("]\n", k->text_out) == EOF) return llm_errf(err, "write error: %s", strerror(errno));
    }
    return 0;
}

static const char *const rank_encodings[] = {"gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base"};

static void warn_skipped(void *ctx, const char *msg)
{
    (void)ctx;
    llm_warning("%s; skipped", msg);
}

static void report_skipped(uint64_t n)
{
    if (n) llm_warning("skipped %llu bad document%s", (unsigned long long)n, n == 1 ? "" : "s");
}

static llm_tokenizer *load_tokenizer(void)
{
    if (!tok_path) llm_usage_error("no tokenizer: give -t TOK");
    if (encoding) {
        size_t i = 0, n = sizeof rank_encodings / sizeof rank_encodings[0];
        while (i < n && strcmp(rank_encodings[i], encoding)) i++;
        if (i == n) llm_usage_error("--pattern '%s' is not an encoding of rank files (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base)", encoding);
    }
    llm_tokenizer *t;
    llm_err err;
    if (llm_tok_load(tok_path, encoding, &t, &err)) llm_die_err(&err);
    if (encoding && !strncmp(llm_tok_name(t), "tokenizer.json:", 15))
        llm_warning("%s: --pattern applies to rank files only; ignored", tok_path);
    return t;
}

/* The chat format: --chat-template, else a tokenizer_config.json beside the tokenizer. */
static int chat_format(void)
{
    llm_chat_format f = LLM_CHAT_NONE;
    if (chat_name) {
        if (llm_chat_format_parse(chat_name, &f)) llm_usage_error("unknown --chat-template '%s'", chat_name);
        return (int)f;
    }
    char cfg[4096];
    const char *slash = strrchr(tok_path, '/');
    snprintf(cfg, sizeof cfg, "%.*stokenizer_config.json", slash ? (int)(slash - tok_path + 1) : 0, tok_path);
    json_t *j = json_load_file(cfg, 0, NULL);
    if (j) {
        const char *tpl = json_string_value(json_object_get(j, "chat_template"));
        if (tpl && llm_chat_format_detect(tpl, &f)) llm_warning("%s: chat template not recognised; using none", cfg);
        json_decref(j);
    }
    return (int)f;
}

static int run_encode(int nfiles, char **files)
{
    llm_tokenizer *t = load_tokenizer();
    sink k = {0};
    if (!format) format = out_path || !isatty(STDOUT_FILENO) ? "stream" : "ids";
    if (!strcmp(format, "stream")) k.fmt = 0;
    else if (!strcmp(format, "ids")) k.fmt = 1;
    else if (!strcmp(format, "count")) k.fmt = 2;
    else llm_usage_error("--format must be stream, ids or count, not '%s'", format);
    if (instruct && k.fmt == 1) llm_usage_error("--instruct needs --format stream (the mask travels in the stream)");
    if (instruct && (bytes_mode || allow_special || add_special))
        llm_usage_error("--instruct takes its special tokens from the chat template: no --bytes, --allow-special or --add-special");
    int nthreads = threads ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    llm_err err;

    llm_atomic out = {.fd = -1, .slot = -1};
    int fd = STDOUT_FILENO;
    const char *out_name = "<stdout>";
    if (out_path) {
        if (llm_atomic_open(&out, out_path, &err)) llm_die_err(&err);
        fd = out.fd;
        out_name = out_path;
    }
    if (k.fmt == 0) {
        if (llm_sw_open(&k.sw, fd, out_name, &err)) llm_die_err(&err);
        int width = llm_tok_vocab_size(t) <= 65536 ? 2 : 4;
        uint32_t eos;
        int has_eos = llm_tok_eos(t, &eos) == 0;
        llm_sw_header(k.sw, "docs", width, 2 + (size_t)has_eos + (instruct ? 1 : 0));
        llm_sw_kv_str(k.sw, "tokenizer", llm_tok_name(t));
        llm_sw_kv_u64(k.sw, "vocab_size", llm_tok_vocab_size(t));
        if (has_eos) llm_sw_kv_u64(k.sw, "eos_id", eos);
        if (instruct) llm_sw_kv_str(k.sw, "mask", "loss");
    } else if (k.fmt == 1) {
        k.text_out = out_path ? fdopen(dup(fd), "w") : stdout;   /* a dup: fclose'd before the commit */
        if (!k.text_out) llm_die("%s: %s", out_name, strerror(errno));
    }

    llm_docsrc_opts dopts = {.jsonl_stdin = jsonl_stdin || instruct, .field = field, .keep_json = instruct,
                             .skip_bad = skip_bad, .max_doc_bytes = (size_t)max_doc, .binary = bytes_mode,
                             .on_skip = warn_skipped};
    llm_docsrc *src;
    if (llm_docsrc_open(&src, (const char *const *)files, (size_t)nfiles, &dopts, &err)) llm_die_err(&err);
    int flags = (allow_special ? LLM_TOK_ALLOW_SPECIAL : 0) | (add_special ? LLM_TOK_ADD_SPECIAL : 0) |
                (bytes_mode ? LLM_TOK_BYTES : 0);
    llm_encpool *pool;
    if (llm_encpool_new(&pool, t, nthreads, flags, instruct ? chat_format() : -1, emit, &k, &err)) llm_die_err(&err);
    llm_progress_start(&k.progress, "documents", 0);
    llm_doc doc;
    int r;
    while ((r = llm_docsrc_next(src, &doc, &err)) == 1) {
        if (instruct && !doc.json) {
            if (!skip_bad) llm_die("%s: not a JSON record (--instruct reads JSON lines)", doc.origin);
            llm_warning("%s: not a JSON record; skipped", doc.origin);
            k.bad++;
            continue;
        }
        if (llm_encpool_submit(pool, doc.text, doc.len, instruct ? doc.json : NULL, doc.origin, &err)) break;
    }
    if (r < 0 || llm_encpool_finish(pool, &err)) {
        if (out_path) llm_atomic_abort(&out);
        llm_die_err(&err);
    }
    llm_progress_end(&k.progress);
    k.bad += llm_docsrc_skipped(src);
    llm_encpool_free(pool);
    llm_docsrc_close(src);

    if (k.fmt == 0 && llm_sw_finish(k.sw, &err)) {
        if (out_path) llm_atomic_abort(&out);
        llm_die_err(&err);
    }
    llm_sw_free(k.sw);
    if (k.fmt == 2) {
        k.text_out = out_path ? fdopen(dup(fd), "w") : stdout;
        if (!k.text_out) llm_die("%s: %s", out_name, strerror(errno));
        fprintf(k.text_out, "{\"documents\":%llu,\"tokens\":%llu,\"bytes\":%llu,\"skipped\":%llu}\n",
                (unsigned long long)k.docs, (unsigned long long)k.tokens, (unsigned long long)k.bytes,
                (unsigned long long)k.bad);
    }
    if (out_path) {
        if (k.text_out && fclose(k.text_out) != 0) {
            llm_atomic_abort(&out);
            llm_die("%s: write error: %s", out_path, strerror(errno));
        }
        if (llm_atomic_commit(&out, &err)) llm_die_err(&err);
    }
    report_skipped(k.bad);
    llm_tok_free(t);
    return 0;
}

/* ---- decode ---- */

static void write_text(const llm_strbuf *b)
{
    if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len) llm_die("write error: %s", strerror(errno));
}

static int run_decode(int nfiles, char **files)
{
    if (nfiles > 1) llm_usage_error("decode reads one FILE (or stdin)");
    llm_tokenizer *t = load_tokenizer();
    const char *path = nfiles ? files[0] : "-";
    int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    const char *name = strcmp(path, "-") ? path : "<stdin>";
    if (fd < 0) llm_die("%s: %s", path, strerror(errno));
    llm_err err;
    llm_strbuf text = {0};
    uint64_t ndocs = 0;
    /* ids lines start with '[' (after white space), streams with a msgpack map */
    unsigned char first;
    ssize_t got;
    uint64_t lineno = 1;
    while ((got = read(fd, &first, 1)) == 1 && (first == ' ' || first == '\t' || first == '\r' || first == '\n'))
        if (first == '\n') lineno++;
    if (got < 0) llm_die("%s: %s", name, strerror(errno));
    if (got == 0) return 0;
    if (first == '[') {
        llm_strbuf line = {0};
        llm_sb_add(&line, &first, 1);
        FILE *in = fdopen(fd, "r");
        if (!in) llm_die("%s: %s", name, strerror(errno));
        llm_ids ids = {0};
        for (int c;;) {
            c = fgetc(in);
            if (c != EOF && c != '\n') { char ch = (char)c; llm_sb_add(&line, &ch, 1); continue; }
            if (line.len) {
                json_error_t jerr;
                json_t *a = json_loadb(line.data, line.len, 0, &jerr);
                if (!json_is_array(a)) llm_die("%s:%llu: not a JSON array of ids", name, (unsigned long long)lineno);
                ids.n = 0;
                size_t i;
                json_t *v;
                json_array_foreach(a, i, v) {
                    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
                        llm_die("%s:%llu: element %zu is not a token id", name, (unsigned long long)lineno, i);
                    llm_ids_push(&ids, (uint32_t)json_integer_value(v));
                }
                json_decref(a);
                text.len = 0;
                if (ndocs++) llm_sb_puts(&text, separator);
                if (llm_tok_decode(t, ids.v, ids.n, &text, &err)) llm_die("%s:%llu: %s", name, (unsigned long long)lineno, err.msg);
                write_text(&text);
            }
            if (c == EOF) break;
            line.len = 0;
            lineno++;
        }
        if (ferror(in)) llm_die("%s: read error", name);
        llm_ids_free(&ids);
        llm_sb_free(&line);
    } else {
        llm_stream_reader *r;
        if (llm_sr_open_prefixed(&r, fd, name, 0, &first, 1, &err)) llm_die_err(&err);
        const msgpack_object *tk = llm_mp_get(llm_sr_header(r), "tokenizer");
        if (tk && tk->type == MSGPACK_OBJECT_STR && !llm_mp_str_eq(tk, llm_tok_name(t)))
            llm_die("%s: the stream was tokenized with '%.*s', not with %s ('%s')", name, (int)tk->via.str.size,
                    tk->via.str.ptr, tok_path, llm_tok_name(t));
        const msgpack_object *rec;
        uint32_t *ids = NULL;
        size_t cap = 0, n;
        int rc;
        while ((rc = llm_sr_next(r, &rec, &err)) == 1) {
            if (!llm_mp_get(rec, "tokens")) continue;
            if (llm_sr_tokens(r, rec, "tokens", &ids, &cap, &n, &err)) llm_die_err(&err);
            text.len = 0;
            if (ndocs++) llm_sb_puts(&text, separator);
            if (llm_tok_decode(t, ids, n, &text, &err))
                llm_die("%s: record at byte %llu: %s", name, (unsigned long long)llm_sr_offset(r), err.msg);
            write_text(&text);
        }
        if (rc < 0) llm_die_err(&err);
        free(ids);
        llm_sr_close(r);
    }
    llm_sb_free(&text);
    llm_tok_free(t);
    return 0;
}

/* ---- train ---- */

static int run_train(int nfiles, char **files)
{
    if (!vocab_size) llm_usage_error("--vocab-size N is required");
    if (!out_path) llm_usage_error("-o tokenizer.json is required");
    if (nfiles == 0) llm_usage_error("no training FILE given");
    const char *pattern = llm_pretok_portable_pattern(encoding ? encoding : "gpt2");
    if (!pattern) llm_usage_error("unknown --pattern '%s'", encoding);
    llm_err err;
    llm_pretok *p;
    if (llm_pretok_new(&p, pattern, &err)) llm_die_err(&err);
    llm_bpe_trainer *tr = llm_bpe_trainer_new(p);
    if (!tr) llm_die("out of memory");
    llm_docsrc_opts dopts = {.field = field, .skip_bad = skip_bad, .on_skip = warn_skipped};
    llm_docsrc *src;
    if (llm_docsrc_open(&src, (const char *const *)files, (size_t)nfiles, &dopts, &err)) llm_die_err(&err);
    llm_doc doc;
    int r;
    llm_progress progress;
    llm_progress_start(&progress, "documents", 0);
    while ((r = llm_docsrc_next(src, &doc, &err)) == 1) {
        if (llm_bpe_trainer_add_text(tr, doc.text, doc.len, &err)) llm_die("%s: %s", doc.origin, err.msg);
        llm_progress_update(&progress, doc.index + 1);
    }
    llm_progress_end(&progress);
    if (r < 0) llm_die_err(&err);
    report_skipped(llm_docsrc_skipped(src));
    llm_docsrc_close(src);
    llm_strbuf json = {0};
    if (llm_bpe_trainer_finish(tr, (size_t)vocab_size, specials.items, (size_t)specials.count, pattern, &json, &err))
        llm_die_err(&err);
    llm_atomic out;
    if (llm_atomic_open(&out, out_path, &err) || llm_write_all(out.fd, json.data, json.len, out_path, &err) ||
        llm_atomic_commit(&out, &err))
        llm_die_err(&err);
    llm_sb_free(&json);
    llm_bpe_trainer_free(tr);
    llm_pretok_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **files;
    int n;
    if (argc > 1 && !strcmp(argv[1], "decode")) {
        n = llm_cli_parse(&decode_cmd, argc - 1, argv + 1, &files);
        return run_decode(n, files);
    }
    if (argc > 1 && !strcmp(argv[1], "train")) {
        n = llm_cli_parse(&train_cmd, argc - 1, argv + 1, &files);
        return run_train(n, files);
    }
    n = llm_cli_parse(&encode_cmd, argc, argv, &files);
    return run_encode(n, files);
}
