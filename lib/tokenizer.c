/* Tokenizer loading and the encode/decode pipeline: see tokenizer.h.
 * Pipeline per encode: split the text on added tokens (when allowed); for
 * each other segment: normalize, pre-tokenize into pieces, BPE each piece;
 * then the post-processor's template. */
#include "tokenizer.h"
#include "fileio.h"
#include "pretok.h"
#include "safetensors.h"
#include "unicode.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define NONE UINT32_MAX

typedef struct {
    char *text;
    size_t len;
    uint32_t id;
    int special, lstrip, rstrip, single_word;
} added_token;

typedef enum { NORM_NFC, NORM_PREPEND, NORM_REPLACE } norm_kind;
typedef struct {
    norm_kind kind;
    char *a, *b;   /* PREPEND: a; REPLACE: a -> b */
} norm_op;

enum { PREPEND_NEVER, PREPEND_ALWAYS, PREPEND_FIRST };

struct llm_tokenizer {
    char name[96];
    llm_bpe *bpe;
    llm_pretok *pretok;          /* NULL: no splitting */
    norm_op *norms;
    size_t nnorms;
    int add_prefix_space;        /* ByteLevel pre-tokenizer */
    int metaspace, ms_prepend, ms_split;
    char ms_repl[8];
    added_token *added;
    size_t nadded;
    uint8_t added_first[256];    /* 1 when some added token starts with this byte */
    /* decoding */
    int dec_metaspace;           /* "▁" -> " " */
    int dec_byte_fallback;       /* "<0xXX>" -> the byte */
    int dec_strip;               /* leading spaces to strip */
    /* post-processor */
    llm_ids tpl_prefix, tpl_suffix;
    char *json;                  /* tokenizer.json text, when loaded from it */
    int has_eos;
    uint32_t eos;
    size_t vocab_size;
};

/* ---- small helpers ---- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static void note_id(llm_tokenizer *t, uint32_t id)
{
    if ((size_t)id + 1 > t->vocab_size) t->vocab_size = (size_t)id + 1;
}

static int add_added(llm_tokenizer *t, const char *text, size_t len, uint32_t id, int special, llm_err *err)
{
    if (id >= LLM_BPE_MAX_ID) return llm_errf(err, "added token id %u is larger than %u", id, LLM_BPE_MAX_ID - 1);
    added_token *a = realloc(t->added, (t->nadded + 1) * sizeof *a);
    if (!a) return llm_errf(err, "out of memory");
    t->added = a;
    a = &t->added[t->nadded];
    memset(a, 0, sizeof *a);
    if (!len || !(a->text = malloc(len + 1))) return llm_errf(err, len ? "out of memory" : "an added token is empty");
    memcpy(a->text, text, len);
    a->text[len] = 0;
    a->len = len;
    a->id = id;
    a->special = special;
    t->added_first[(unsigned char)text[0]] = 1;
    t->nadded++;
    note_id(t, id);
    return 0;
}

static const added_token *find_added_id(const llm_tokenizer *t, uint32_t id)
{
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].id == id) return &t->added[i];
    return NULL;
}

void llm_tok_free(llm_tokenizer *t)
{
    if (!t) return;
    llm_bpe_free(t->bpe);
    llm_pretok_free(t->pretok);
    for (size_t i = 0; i < t->nnorms; i++) { free(t->norms[i].a); free(t->norms[i].b); }
    free(t->norms);
    for (size_t i = 0; i < t->nadded; i++) free(t->added[i].text);
    free(t->added);
    llm_ids_free(&t->tpl_prefix);
    llm_ids_free(&t->tpl_suffix);
    free(t->json);
    free(t);
}

const char *llm_tok_name(const llm_tokenizer *t) { return t->name; }
size_t llm_tok_vocab_size(const llm_tokenizer *t) { return t->vocab_size; }
const char *llm_tok_json(const llm_tokenizer *t) { return t->json; }

int llm_tok_special(const llm_tokenizer *t, const char *text, uint32_t *id)
{
    for (size_t i = 0; i < t->nadded; i++)
        if (!strcmp(t->added[i].text, text)) { *id = t->added[i].id; return 0; }
    return llm_bpe_lookup(t->bpe, text, strlen(text), id);
}

int llm_tok_eos(const llm_tokenizer *t, uint32_t *id)
{
    if (!t->has_eos) return -1;
    *id = t->eos;
    return 0;
}

static void pick_eos(llm_tokenizer *t)
{
    static const char *names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>", "<|eot_id|>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (llm_tok_special(t, names[i], &t->eos) == 0) { t->has_eos = 1; return; }
    if (t->tpl_suffix.n) { t->eos = t->tpl_suffix.v[t->tpl_suffix.n - 1]; t->has_eos = 1; }
}

/* ---- tiktoken rank files ---- */

/* The encodings' special tokens and highest rank (tiktoken_ext's facts), so
 * that a rank file read under the wrong name is refused. */
static const struct {
    const char *name;
    uint32_t max_rank;
    struct { const char *text; uint32_t id; } special[5];
} encodings[] = {
    {"gpt2", 50255, {{"<|endoftext|>", 50256}}},
    {"r50k_base", 50255, {{"<|endoftext|>", 50256}}},
    {"p50k_base", 50280, {{"<|endoftext|>", 50256}}},
    {"cl100k_base", 100255, {{"<|endoftext|>", 100257}, {"<|fim_prefix|>", 100258}, {"<|fim_middle|>", 100259},
                             {"<|fim_suffix|>", 100260}, {"<|endofprompt|>", 100276}}},
    {"o200k_base", 199997, {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}}},
};

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64 (with '=' padding) into out; returns the length or -1. */
static long b64decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    size_t i = 0;
    for (; i < n && s[i] != '='; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    for (; i < n; i++)
        if (s[i] != '=') return -1;
    return (long)o;
}

static int load_tiktoken(const char *path, const unsigned char *data, size_t size, const char *encoding,
                         llm_tokenizer *t, llm_err *err)
{
    size_t e = 0, ne = sizeof encodings / sizeof encodings[0];
    while (e < ne && strcmp(encodings[e].name, encoding)) e++;
    if (e == ne)
        return llm_errf(err, "%s: unknown encoding '%s' (gpt2, r50k_base, p50k_base, cl100k_base, o200k_base)", path,
                        encoding);
    size_t line = 1;
    unsigned char tok[1024];
    for (size_t pos = 0; pos < size; line++) {
        const unsigned char *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size, len = end - pos;
        const char *s = (const char *)data + pos;
        pos = end + 1;
        if (len && s[len - 1] == '\r') len--;
        if (!len) continue;
        const char *sp = memchr(s, ' ', len);
        if (!sp) return llm_errf(err, "%s:%zu: expected 'BASE64 RANK'", path, line);
        long n = b64decode(s, (size_t)(sp - s), tok, sizeof tok);
        char *endp;
        char num[24];
        size_t nl2 = len - (size_t)(sp - s) - 1;
        if (nl2 == 0 || nl2 >= sizeof num) return llm_errf(err, "%s:%zu: bad rank", path, line);
        memcpy(num, sp + 1, nl2);
        num[nl2] = 0;
        unsigned long rank = strtoul(num, &endp, 10);
        if (n <= 0 || *endp || rank >= NONE) return llm_errf(err, "%s:%zu: bad token or rank", path, line);
        if (llm_bpe_set_token(t->bpe, (uint32_t)rank, tok, (size_t)n, err))
            return llm_err_prefix(err, "%s:%zu", path, line);
        note_id(t, (uint32_t)rank);
    }
    if (llm_bpe_vocab_size(t->bpe) < 256) return llm_errf(err, "%s: fewer than 256 tokens: not a rank file", path);
    if (llm_bpe_vocab_size(t->bpe) != (size_t)encodings[e].max_rank + 1)
        return llm_errf(err, "%s: the highest rank is %zu, but %s's is %u: not a %s rank file (give --pattern)", path,
                        llm_bpe_vocab_size(t->bpe) - 1, encoding, encodings[e].max_rank, encoding);
    for (int i = 0; i < 5 && encodings[e].special[i].text; i++) {
        size_t len;
        if (llm_bpe_token(t->bpe, encodings[e].special[i].id, &len))
            return llm_errf(err, "%s: %s's special token id %u is also a rank here: not a %s rank file", path, encoding,
                            encodings[e].special[i].id, encoding);
    }
    if (llm_bpe_merges_from_ranks(t->bpe, err)) return llm_err_prefix(err, "%s", path);
    llm_bpe_set_whole_piece_lookup(t->bpe, 1);
    for (int i = 0; i < 5 && encodings[e].special[i].text; i++)
        if (add_added(t, encodings[e].special[i].text, strlen(encodings[e].special[i].text), encodings[e].special[i].id,
                      1, err))
            return -1;
    if (llm_pretok_new(&t->pretok, llm_pretok_named_pattern(encoding), err)) return llm_err_prefix(err, "%s", path);
    snprintf(t->name, sizeof t->name, "%s", encoding);
    return 0;
}

/* ---- tokenizer.json ---- */

/* GPT-2's byte-to-unicode table: printable bytes stand for themselves, the
 * others for U+0100 + n in byte order. byte_of[cp] inverts it (cp < 324). */
static void byte_level_inverse(int16_t byte_of[324])
{
    for (int i = 0; i < 324; i++) byte_of[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_of[printable ? b : 256 + n++] = (int16_t)b;
    }
}

/* Maps a byte-level vocabulary string to its bytes; -1 when a character is
 * outside the table (such a token cannot come out of byte-level BPE). */
static long byte_level_decode(const int16_t byte_of[324], const char *s, unsigned char *out, size_t cap)
{
    size_t o = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(s);
    while (left > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(p, left, &cp);
        if (k <= 0 || cp < 0 || cp >= 324 || byte_of[cp] < 0 || o >= cap) return -1;
        out[o++] = (unsigned char)byte_of[cp];
        p += k;
        left -= k;
    }
    return (long)o;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static int type_is(const json_t *o, const char *type) { return o && jstr(o, "type") && !strcmp(jstr(o, "type"), type); }

static int add_norm(llm_tokenizer *t, norm_kind kind, const char *a, const char *b, llm_err *err)
{
    norm_op *n = realloc(t->norms, (t->nnorms + 1) * sizeof *n);
    if (!n) return llm_errf(err, "out of memory");
    t->norms = n;
    n[t->nnorms] = (norm_op){kind, a ? strdup(a) : NULL, b ? strdup(b) : NULL};
    t->nnorms++;
    return 0;
}

static int parse_normalizer(llm_tokenizer *t, const json_t *n, const char *path, llm_err *err)
{
    if (!n || json_is_null(n)) return 0;
    if (type_is(n, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(n, "normalizers"), i, v)
            if (parse_normalizer(t, v, path, err)) return -1;
        return 0;
    }
    if (type_is(n, "NFC")) return add_norm(t, NORM_NFC, NULL, NULL, err);
    if (type_is(n, "Prepend") && jstr(n, "prepend")) return add_norm(t, NORM_PREPEND, jstr(n, "prepend"), NULL, err);
    if (type_is(n, "Replace")) {
        const json_t *pat = json_object_get(n, "pattern");
        const char *from = jstr(pat, "String"), *to = jstr(n, "content");
        if (!from || !*from || !to) return llm_errf(err, "%s: normalizer Replace: only a String pattern is supported", path);
        return add_norm(t, NORM_REPLACE, from, to, err);
    }
    return llm_errf(err, "%s: normalizer '%s' is not supported", path, jstr(n, "type") ? jstr(n, "type") : "?");
}

static int set_split(llm_tokenizer *t, const char *pattern, const char *path, llm_err *err)
{
    if (t->pretok) return llm_errf(err, "%s: more than one splitting pre-tokenizer is not supported", path);
    if (llm_pretok_new(&t->pretok, pattern, err)) return llm_err_prefix(err, "%s: pre-tokenizer pattern", path);
    return 0;
}

static int parse_pretokenizer(llm_tokenizer *t, const json_t *p, const char *path, llm_err *err)
{
    if (!p || json_is_null(p)) return 0;
    if (type_is(p, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(p, "pretokenizers"), i, v)
            if (parse_pretokenizer(t, v, path, err)) return -1;
        return 0;
    }
    if (type_is(p, "ByteLevel")) {
        t->add_prefix_space = json_is_true(json_object_get(p, "add_prefix_space"));
        const json_t *use_regex = json_object_get(p, "use_regex");
        if (!use_regex || json_is_true(use_regex)) return set_split(t, llm_pretok_named_pattern("gpt2"), path, err);
        return 0;
    }
    if (type_is(p, "Split")) {
        const json_t *pat = json_object_get(p, "pattern");
        const char *behavior = jstr(p, "behavior");
        if (!jstr(pat, "Regex")) return llm_errf(err, "%s: pre-tokenizer Split: only a Regex pattern is supported", path);
        if (!behavior || strcmp(behavior, "Isolated") || json_is_true(json_object_get(p, "invert")))
            return llm_errf(err, "%s: pre-tokenizer Split: only behavior Isolated without invert is supported", path);
        return set_split(t, jstr(pat, "Regex"), path, err);
    }
    if (type_is(p, "Metaspace")) {
        const char *r = jstr(p, "replacement"), *scheme = jstr(p, "prepend_scheme");
        if (!r || strlen(r) >= sizeof t->ms_repl) return llm_errf(err, "%s: pre-tokenizer Metaspace: bad replacement", path);
        strcpy(t->ms_repl, r);
        t->metaspace = 1;
        t->ms_split = !json_is_false(json_object_get(p, "split"));
        if (!scheme) t->ms_prepend = json_is_false(json_object_get(p, "add_prefix_space")) ? PREPEND_NEVER : PREPEND_ALWAYS;
        else if (!strcmp(scheme, "always")) t->ms_prepend = PREPEND_ALWAYS;
        else if (!strcmp(scheme, "first")) t->ms_prepend = PREPEND_FIRST;
        else t->ms_prepend = PREPEND_NEVER;
        return 0;
    }
    return llm_errf(err, "%s: pre-tokenizer '%s' is not supported", path, jstr(p, "type") ? jstr(p, "type") : "?");
}

static int parse_decoder(llm_tokenizer *t, const json_t *d, const char *path, llm_err *err)
{
    if (!d || json_is_null(d) || type_is(d, "ByteLevel")) return 0;
    if (type_is(d, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(d, "decoders"), i, v)
            if (parse_decoder(t, v, path, err)) return -1;
        return 0;
    }
    if (type_is(d, "Replace")) {
        const char *from = jstr(json_object_get(d, "pattern"), "String"), *to = jstr(d, "content");
        if (from && to && !strcmp(from, "\xe2\x96\x81") && !strcmp(to, " ")) { t->dec_metaspace = 1; return 0; }
        return llm_errf(err, "%s: decoder Replace other than '\xe2\x96\x81' -> ' ' is not supported", path);
    }
    if (type_is(d, "ByteFallback")) { t->dec_byte_fallback = 1; return 0; }
    if (type_is(d, "Fuse")) return 0;
    if (type_is(d, "Strip")) {
        t->dec_strip = (int)json_integer_value(json_object_get(d, "start"));
        return 0;
    }
    if (type_is(d, "Metaspace")) {
        t->dec_metaspace = 1;
        const char *scheme = jstr(d, "prepend_scheme");
        t->dec_strip = !(scheme && !strcmp(scheme, "never"));
        return 0;
    }
    return llm_errf(err, "%s: decoder '%s' is not supported", path, jstr(d, "type") ? jstr(d, "type") : "?");
}

static int parse_template(llm_tokenizer *t, const json_t *pp, const char *path, llm_err *err)
{
    if (!pp || json_is_null(pp) || type_is(pp, "ByteLevel")) return 0;
    if (type_is(pp, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(pp, "processors"), i, v)
            if (parse_template(t, v, path, err)) return -1;
        return 0;
    }
    if (!type_is(pp, "TemplateProcessing"))
        return llm_errf(err, "%s: post-processor '%s' is not supported", path, jstr(pp, "type") ? jstr(pp, "type") : "?");
    const json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens");
    int after = 0;
    size_t i;
    json_t *item;
    json_array_foreach(single, i, item) {
        const json_t *sp = json_object_get(item, "SpecialToken");
        if (json_object_get(item, "Sequence")) { after = 1; continue; }
        if (!sp) return llm_errf(err, "%s: post-processor template item %zu is neither SpecialToken nor Sequence", path, i);
        const json_t *def = json_object_get(specials, jstr(sp, "id") ? jstr(sp, "id") : "");
        const json_t *ids = json_object_get(def, "ids");
        if (!json_is_array(ids)) return llm_errf(err, "%s: post-processor names special token '%s' without ids", path, jstr(sp, "id"));
        size_t k;
        json_t *id;
        json_array_foreach(ids, k, id)
            if (llm_ids_push(after ? &t->tpl_suffix : &t->tpl_prefix, (uint32_t)json_integer_value(id)))
                return llm_errf(err, "out of memory");
    }
    return 0;
}

static int parse_model(llm_tokenizer *t, const json_t *m, int byte_level, const char *path, llm_err *err)
{
    if (!type_is(m, "BPE"))
        return llm_errf(err, "%s: model '%s' is not supported (only BPE)", path, m && jstr(m, "type") ? jstr(m, "type") : "?");
    const char *unsupported[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(m, unsupported[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && !*json_string_value(v)))
            return llm_errf(err, "%s: BPE option '%s' is not supported", path, unsupported[i]);
    }
    const json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0)
        return llm_errf(err, "%s: BPE dropout is not supported", path);
    const json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges)) return llm_errf(err, "%s: BPE model without vocab and merges", path);
    int16_t byte_of[324];
    byte_level_inverse(byte_of);
    const char *key;
    json_t *v;
    unsigned char buf[1024];
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= NONE)
            return llm_errf(err, "%s: vocab entry '%s' has no valid id", path, key);
        uint32_t id = (uint32_t)json_integer_value(v);
        long n = byte_level ? byte_level_decode(byte_of, key, buf, sizeof buf) : -1;
        const void *bytes = n >= 0 ? (const void *)buf : (const void *)key;
        size_t len = n >= 0 ? (size_t)n : strlen(key);
        if (llm_bpe_set_token(t->bpe, id, bytes, len, err)) return llm_err_prefix(err, "%s: vocab entry '%s'", path, key);
        note_id(t, id);
    }
    size_t i;
    json_t *mg;
    json_array_foreach(merges, i, mg) {
        char left[512], right[512];
        if (json_is_string(mg)) {
            const char *s = json_string_value(mg), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ') || (size_t)(sp - s) >= sizeof left || strlen(sp + 1) >= sizeof right)
                return llm_errf(err, "%s: merge %zu is not 'LEFT RIGHT'", path, i);
            memcpy(left, s, (size_t)(sp - s));
            left[sp - s] = 0;
            strcpy(right, sp + 1);
        } else if (json_is_array(mg) && json_array_size(mg) == 2 && json_is_string(json_array_get(mg, 0)) &&
                   json_is_string(json_array_get(mg, 1))) {
            snprintf(left, sizeof left, "%s", json_string_value(json_array_get(mg, 0)));
            snprintf(right, sizeof right, "%s", json_string_value(json_array_get(mg, 1)));
        } else {
            return llm_errf(err, "%s: merge %zu is neither 'LEFT RIGHT' nor a pair", path, i);
        }
        const json_t *l = json_object_get(vocab, left), *r = json_object_get(vocab, right);
        if (!l || !r) return llm_errf(err, "%s: merge %zu names a token not in the vocab", path, i);
        if (llm_bpe_add_merge(t->bpe, (uint32_t)json_integer_value(l), (uint32_t)json_integer_value(r), (uint32_t)i, err))
            return llm_err_prefix(err, "%s", path);
    }
    int byte_fallback = json_is_true(json_object_get(m, "byte_fallback"));
    uint32_t unk = NONE;
    if (jstr(m, "unk_token")) {
        const json_t *u = json_object_get(vocab, jstr(m, "unk_token"));
        if (u) unk = (uint32_t)json_integer_value(u);
    }
    if (!byte_level) llm_bpe_set_char_symbols(t->bpe, byte_fallback, unk);
    if (json_is_true(json_object_get(m, "ignore_merges"))) llm_bpe_set_whole_piece_lookup(t->bpe, 1);
    return 0;
}

/* Byte-level when the pre-tokenizer or the decoder is ByteLevel. */
static int mentions_byte_level(const json_t *j)
{
    if (json_is_object(j)) {
        if (type_is(j, "ByteLevel")) return 1;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
            if (mentions_byte_level(v)) return 1;
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
            if (mentions_byte_level(v)) return 1;
    }
    return 0;
}

int llm_tok_from_json(const char *text, size_t n, const char *path, llm_tokenizer **out, llm_err *err)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return llm_errf(err, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    llm_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->bpe = llm_bpe_new()) || !(t->json = malloc(n + 1))) {
        json_decref(root);
        llm_tok_free(t);
        return llm_errf(err, "out of memory");
    }
    memcpy(t->json, text, n);
    t->json[n] = 0;
    snprintf(t->name, sizeof t->name, "tokenizer.json:%016llx", (unsigned long long)fnv1a(text, n));
    int byte_level = mentions_byte_level(json_object_get(root, "pre_tokenizer")) ||
                     mentions_byte_level(json_object_get(root, "decoder"));
    int rc = parse_model(t, json_object_get(root, "model"), byte_level, path, err);
    if (!rc) rc = parse_normalizer(t, json_object_get(root, "normalizer"), path, err);
    if (!rc) rc = parse_pretokenizer(t, json_object_get(root, "pre_tokenizer"), path, err);
    if (!rc) rc = parse_decoder(t, json_object_get(root, "decoder"), path, err);
    if (!rc) rc = parse_template(t, json_object_get(root, "post_processor"), path, err);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(root, "added_tokens"), i, a) {
        if (rc) break;
        const char *content = jstr(a, "content");
        const json_t *id = json_object_get(a, "id");
        if (!content || !json_is_integer(id)) { rc = llm_errf(err, "%s: added token %zu without content and id", path, i); break; }
        if (json_integer_value(id) < 0) { rc = llm_errf(err, "%s: added token %zu has a negative id", path, i); break; }
        rc = add_added(t, content, strlen(content), (uint32_t)json_integer_value(id), json_is_true(json_object_get(a, "special")), err);
        if (rc) llm_err_prefix(err, "%s", path);
        if (!rc) {
            added_token *at = &t->added[t->nadded - 1];
            at->lstrip = json_is_true(json_object_get(a, "lstrip"));
            at->rstrip = json_is_true(json_object_get(a, "rstrip"));
            at->single_word = json_is_true(json_object_get(a, "single_word"));
        }
    }
    json_decref(root);
    if (rc) { llm_tok_free(t); return -1; }
    llm_bpe_prepare(t->bpe);
    pick_eos(t);
    *out = t;
    return 0;
}

int llm_tok_load(const char *path, const char *encoding, llm_tokenizer **out, llm_err *err)
{
    *out = NULL;
    llm_mapped m;
    if (llm_map_file(&m, path, err)) return -1;
    int rc;
    size_t ws = 0;   /* tokenizer.json may start with a BOM or white space */
    if (m.size >= 3 && !memcmp(m.data, "\xef\xbb\xbf", 3)) ws = 3;
    while (ws < m.size && (m.data[ws] == ' ' || m.data[ws] == '\t' || m.data[ws] == '\n' || m.data[ws] == '\r')) ws++;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0 && m.size >= 8; i--) header_len = header_len << 8 | m.data[i];
    int safetensors = m.size >= 9 && m.data[8] == '{' && header_len <= m.size - 8;
    if (!safetensors && ws < m.size && m.data[ws] == '{') {
        rc = llm_tok_from_json((const char *)m.data + ws, m.size - ws, path, out, err);
    } else if (safetensors) {
        llm_st_file *f;
        rc = llm_st_open_mem(m.data, m.size, path, &f, err);
        if (!rc) {
            const char *json = llm_st_meta(f, "tokenizer");
            rc = json ? llm_tok_from_json(json, strlen(json), path, out, err)
                      : llm_errf(err, "%s: the model file holds no tokenizer (metadata 'tokenizer')", path);
            llm_st_close(f);
        }
    } else {
        char name[64] = "";
        if (!encoding) {
            const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
            const char *dot = strstr(base, ".tiktoken");
            size_t len = dot ? (size_t)(dot - base) : strlen(base);
            snprintf(name, sizeof name, "%.*s", (int)len, base);
            encoding = name;
        }
        llm_tokenizer *t = calloc(1, sizeof *t);
        rc = !t || !(t->bpe = llm_bpe_new()) ? llm_errf(err, "out of memory")
                                              : load_tiktoken(path, m.data, m.size, encoding, t, err);
        if (!rc) {
            llm_bpe_prepare(t->bpe);
            pick_eos(t);
        }
        if (rc) llm_tok_free(t);
        else *out = t;
    }
    llm_unmap_file(&m);
    return rc;
}

/* ---- encoding ---- */

struct llm_tok_scratch {
    llm_bpe_scratch *bpe;
    llm_pretok_scratch *pre;
    llm_strbuf norm;
    size_t last_piece;       /* ids the last piece encoded produced (byte mode needs it) */
    llm_strbuf unstable;
};

llm_tok_scratch *llm_tok_scratch_new(const llm_tokenizer *t)
{
    llm_tok_scratch *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->bpe = llm_bpe_scratch_new();
    s->pre = t->pretok ? llm_pretok_scratch_new(t->pretok) : NULL;
    if (!s->bpe || (t->pretok && !s->pre)) { llm_tok_scratch_free(s); return NULL; }
    return s;
}

void llm_tok_scratch_free(llm_tok_scratch *s)
{
    if (!s) return;
    llm_bpe_scratch_free(s->bpe);
    llm_pretok_scratch_free(s->pre);
    llm_sb_free(&s->norm);
    llm_sb_free(&s->unstable);
    free(s);
}

/* NFC of b, in place. utf8proc 2.8 wrongly composes a Hangul LV syllable with
 * U+11A7 (which is TBase, not a trailing jamo) and drops the U+11A7; since
 * U+11A7 is a starter that composes with nothing, the text is normalized in
 * parts between its occurrences, which gives the true NFC. */
static int nfc(llm_strbuf *b, llm_err *err)
{
    llm_strbuf res = {0};
    size_t start = 0;
    for (size_t i = 0; i <= b->len; i++) {
        int cut = i + 3 <= b->len && !memcmp(b->data + i, "\xe1\x86\xa7", 3);
        if (!cut && i < b->len) continue;
        if (i > start) {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)b->data + start, (utf8proc_ssize_t)(i - start),
                                                &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (len < 0) { llm_sb_free(&res); return llm_errf(err, "NFC normalization failed: %s", utf8proc_errmsg(len)); }
            llm_sb_add(&res, dst, (size_t)len);
            free(dst);
        }
        if (cut) {
            llm_sb_add(&res, "\xe1\x86\xa7", 3);
            i += 2;
        }
        start = i + 1;
    }
    if (res.failed) { llm_sb_free(&res); return llm_errf(err, "out of memory"); }
    llm_sb_free(b);
    *b = res;
    if (!b->data) llm_sb_add(b, "", 0);
    return 0;
}

/* Applies the normalizers (and the pre-tokenizer's text edits) to one segment
 * into s->norm. */
static int normalize(const llm_tokenizer *t, llm_tok_scratch *s, const char *text, size_t n, int first,
                     int cont, llm_err *err)
{
    llm_strbuf *b = &s->norm;
    b->len = 0;
    llm_sb_add(b, text, n);
    for (size_t i = 0; i < t->nnorms && !b->failed; i++) {
        const norm_op *op = &t->norms[i];
        if (op->kind == NORM_NFC) {
            if (nfc(b, err)) return -1;
        } else if (op->kind == NORM_PREPEND) {
            if (b->len && !cont) {
                llm_strbuf tmp = {0};
                llm_sb_puts(&tmp, op->a);
                llm_sb_add(&tmp, b->data, b->len);
                llm_sb_free(b);
                *b = tmp;
            }
        } else {
            llm_strbuf tmp = {0};
            size_t alen = strlen(op->a);
            for (size_t k = 0; k < b->len;) {
                if (k + alen <= b->len && !memcmp(b->data + k, op->a, alen)) { llm_sb_puts(&tmp, op->b); k += alen; }
                else llm_sb_add(&tmp, b->data + k++, 1);
            }
            llm_sb_free(b);
            *b = tmp;
        }
    }
    if (t->add_prefix_space && !cont && (b->len == 0 || b->data[0] != ' ')) {
        llm_strbuf tmp = {0};
        llm_sb_add(&tmp, " ", 1);
        llm_sb_add(&tmp, b->data ? b->data : "", b->len);
        llm_sb_free(b);
        *b = tmp;
    }
    if (t->metaspace) {
        llm_strbuf tmp = {0};
        int prepend = !cont && (t->ms_prepend == PREPEND_ALWAYS || (t->ms_prepend == PREPEND_FIRST && first));
        size_t rl = strlen(t->ms_repl);
        if (prepend && !(b->len >= rl && !memcmp(b->data, t->ms_repl, rl))) llm_sb_puts(&tmp, t->ms_repl);
        for (size_t k = 0; k < b->len; k++) {
            if (b->data[k] == ' ') llm_sb_puts(&tmp, t->ms_repl);
            else llm_sb_add(&tmp, b->data + k, 1);
        }
        llm_sb_free(b);
        *b = tmp;
    }
    if (b->failed) return llm_errf(err, "out of memory");
    return 0;
}

static int encode_segment(const llm_tokenizer *t, llm_tok_scratch *s, const char *text, size_t n, int first,
                          int cont, llm_ids *out, llm_err *err)
{
    if (!n) return 0;
    if (normalize(t, s, text, n, first, cont, err)) return -1;
    const char *p = s->norm.data;
    size_t len = s->norm.len;
    if (!len) return 0;
    if (t->pretok) {
        size_t pos = 0, start, end;
        while (pos < len && llm_pretok_find(t->pretok, s->pre, p, len, pos, &start, &end)) {
            size_t before = out->n;
            if (llm_bpe_encode(t->bpe, s->bpe, (const unsigned char *)p + start, end - start, out, err)) return -1;
            s->last_piece = out->n - before;
            pos = end;
        }
        return 0;
    }
    if (t->metaspace && t->ms_split) {   /* pieces start at each replacement character */
        size_t rl = strlen(t->ms_repl), start = 0;
        for (size_t k = 1; k <= len; k++)
            if (k == len || (k + rl <= len && !memcmp(p + k, t->ms_repl, rl))) {
                if (llm_bpe_encode(t->bpe, s->bpe, (const unsigned char *)p + start, k - start, out, err)) return -1;
                start = k;
            }
        return 0;
    }
    size_t before = out->n;
    int rc = llm_bpe_encode(t->bpe, s->bpe, (const unsigned char *)p, len, out, err);
    s->last_piece = out->n - before;
    return rc;
}

static int is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int is_word_byte(char c)
{
    unsigned char u = (unsigned char)c;
    return u >= 0x80 || u == '_' || (u >= '0' && u <= '9') || ((u | 0x20) >= 'a' && (u | 0x20) <= 'z');
}

/* The added token matching at text[pos], longest first; NULL when none. A
 * single_word token matches only with no word character on either side. */
static const added_token *added_at(const llm_tokenizer *t, const char *text, size_t n, size_t pos)
{
    const added_token *best = NULL;
    for (size_t i = 0; i < t->nadded; i++) {
        const added_token *a = &t->added[i];
        if (a->len > n - pos || memcmp(text + pos, a->text, a->len)) continue;
        if (a->single_word && ((pos > 0 && is_word_byte(text[pos - 1])) ||
                               (pos + a->len < n && is_word_byte(text[pos + a->len]))))
            continue;
        if (best && best->len >= a->len) continue;
        best = a;
    }
    return best;
}

size_t llm_tok_cut_point(const llm_tokenizer *t, int flags, const char *text, size_t n, size_t target)
{
    if (flags || !t->pretok || !strcmp(llm_pretok_engine(t->pretok), "pcre2") || t->nnorms || t->metaspace ||
        t->add_prefix_space || t->dec_metaspace)
        return n;
    size_t limit = n - target > (1u << 20) ? target + (1u << 20) : n;
    for (size_t i = target < 2 ? 2 : target; i < limit; i++) {
        unsigned char before = (unsigned char)text[i - 2], c = (unsigned char)text[i] | 0x20;
        if (text[i - 1] == '\n' && before > ' ' && before < 0x7f && c >= 'a' && c <= 'z') return i;
    }
    return n;
}

static int token_is_all_space(const llm_tokenizer *t, uint32_t id)
{
    size_t len;
    const unsigned char *p = llm_bpe_token(t->bpe, id, &len);
    if (!p) return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] != ' ' && p[i] != '\n' && p[i] != '\t') return 0;
    return 1;
}

/* Byte mode past the first invalid byte at v: tiktoken's _encode_bytes. The
 * valid prefix is encoded as usual; then the ids of its last piece (widened
 * over preceding all-whitespace tokens, as tiktoken does) are taken back and
 * their bytes, with everything from v on, encoded as one piece. */
static int encode_bytes_tail(const llm_tokenizer *t, llm_tok_scratch *s, const char *text, size_t n, size_t v,
                             llm_ids *out, llm_err *err)
{
    size_t doc_start = out->n;   /* (after the template's prefix, which is never taken back) */
    s->last_piece = 0;
    if (encode_segment(t, s, text, v, 1, 0, out, err)) return -1;
    size_t lp = out->n > doc_start ? s->last_piece : 0;
    if (lp && token_is_all_space(t, out->v[out->n - lp]))
        while (lp < out->n - doc_start && token_is_all_space(t, out->v[out->n - lp - 1])) lp++;
    s->unstable.len = 0;
    if (llm_tok_decode(t, out->v + out->n - lp, lp, &s->unstable, err)) return -1;
    out->n -= lp;
    llm_sb_add(&s->unstable, text + v, n - v);
    if (s->unstable.failed) return llm_errf(err, "out of memory");
    return llm_bpe_encode(t->bpe, s->bpe, (const unsigned char *)s->unstable.data, s->unstable.len, out, err);
}

int llm_tok_encode(const llm_tokenizer *t, llm_tok_scratch *s, const char *text, size_t n, int flags, llm_ids *out,
                   llm_err *err)
{
    size_t invalid_at = n;
    if (flags & LLM_TOK_BYTES) {
        invalid_at = llm_utf8_valid_prefix(text, n);
        if (invalid_at < n && (t->nnorms || t->metaspace || t->add_prefix_space || t->dec_metaspace))
            return llm_errf(err, "invalid UTF-8 at byte %zu, and this tokenizer reads only text", invalid_at);
        flags &= ~LLM_TOK_ALLOW_SPECIAL;
    }
    if (flags & LLM_TOK_ADD_SPECIAL)
        for (size_t i = 0; i < t->tpl_prefix.n; i++)
            if (llm_ids_push(out, t->tpl_prefix.v[i])) return llm_errf(err, "out of memory");
    if (invalid_at < n) {
        if (encode_bytes_tail(t, s, text, n, invalid_at, out, err)) return -1;
        n = 0;   /* all of it encoded: only the template's suffix is left */
    }
    size_t seg = 0;
    int first = 1;
    if (flags & LLM_TOK_ALLOW_SPECIAL) {
        for (size_t pos = 0; pos < n; pos++) {
            if (!t->added_first[(unsigned char)text[pos]]) continue;
            const added_token *a = added_at(t, text, n, pos);
            if (!a) continue;
            size_t seg_end = pos, next = pos + a->len;
            if (a->lstrip) while (seg_end > seg && is_space_byte(text[seg_end - 1])) seg_end--;
            if (a->rstrip) while (next < n && is_space_byte(text[next])) next++;
            if (encode_segment(t, s, text + seg, seg_end - seg, first, first && (flags & LLM_TOK_CONTINUE), out, err))
                return -1;
            if (llm_ids_push(out, a->id)) return llm_errf(err, "out of memory");
            first = 0;
            seg = next;
            pos = next - 1;
        }
    }
    if (encode_segment(t, s, text + seg, n - seg, first, first && (flags & LLM_TOK_CONTINUE), out, err)) return -1;
    if (flags & LLM_TOK_ADD_SPECIAL)
        for (size_t i = 0; i < t->tpl_suffix.n; i++)
            if (llm_ids_push(out, t->tpl_suffix.v[i])) return llm_errf(err, "out of memory");
    return 0;
}

/* ---- decoding ---- */

static int hexval(int c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

int llm_tok_decode(const llm_tokenizer *t, const uint32_t *ids, size_t n, llm_strbuf *out, llm_err *err)
{
    size_t start = out->len;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const unsigned char *p = llm_bpe_token(t->bpe, ids[i], &len);
        if (!p) {
            const added_token *a = find_added_id(t, ids[i]);
            if (!a) return llm_errf(err, "token id %u is not in the vocabulary", ids[i]);
            llm_sb_add(out, a->text, a->len);
            continue;
        }
        if (t->dec_byte_fallback && len == 6 && !memcmp(p, "<0x", 3) && p[5] == '>' && hexval(p[3]) >= 0 && hexval(p[4]) >= 0) {
            unsigned char byte = (unsigned char)(hexval(p[3]) << 4 | hexval(p[4]));
            llm_sb_add(out, &byte, 1);
            continue;
        }
        if (t->dec_metaspace) {
            for (size_t k = 0; k < len; k++) {
                if (k + 3 <= len && !memcmp(p + k, "\xe2\x96\x81", 3)) { llm_sb_add(out, " ", 1); k += 2; }
                else llm_sb_add(out, p + k, 1);
            }
        } else {
            llm_sb_add(out, p, len);
        }
    }
    for (int k = 0; k < t->dec_strip && out->len > start && out->data[start] == ' '; k++) {
        memmove(out->data + start, out->data + start + 1, out->len - start - 1);
        out->len--;
        out->data[out->len] = 0;
    }
    return out->failed ? llm_errf(err, "out of memory") : 0;
}
