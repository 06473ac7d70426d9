/* The tokenizer between llmux and GGUF (see cv_gguf.h): our tokenizer.json
 * (byte-level BPE) to tokenizer.ggml.* and back. */
#include "cv_gguf.h"

#include "pretok.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the tokenizer, out ---- */

static const json_t *find_split(const json_t *pre, int *byte_level_regex)
{
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return NULL;
    if (!strcmp(type, "Split")) return pre;
    if (!strcmp(type, "ByteLevel")) {
        const json_t *r = json_object_get(pre, "use_regex");
        if (!r || json_is_true(r)) *byte_level_regex = 1;
        return NULL;
    }
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(pre, "pretokenizers"), i, p) {
            const json_t *s = find_split(p, byte_level_regex);
            if (s) return s;
        }
    }
    return NULL;
}

static int mentions_byte_level(const json_t *pre)
{
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return 0;
    if (!strcmp(type, "ByteLevel")) return 1;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(pre, "pretokenizers"), i, p)
        if (mentions_byte_level(p)) return 1;
    return 0;
}

/* llama.cpp's name (tokenizer.ggml.pre) for the pre-tokenizer's pattern. */
static const char *pre_name(const json_t *pre)
{
    int blr = 0;
    const json_t *split = find_split(pre, &blr);
    const char *pat = json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex"));
    if (!pat) return blr && !split ? "gpt-2" : "default";
    llm_pretok *p;
    llm_err e;
    if (llm_pretok_new(&p, pat, &e)) return "default";
    const char *engine = llm_pretok_engine(p), *name = "default";
    if (!strcmp(engine, "gpt2")) name = "gpt-2";
    else if (!strcmp(engine, "llama3")) name = "llama-bpe";
    else if (!strcmp(engine, "qwen2")) name = "qwen2";
    else if (!strcmp(engine, "o200k")) name = "gpt-4o";
    llm_pretok_free(p);
    return name;
}

/* The id of a token given by text, or -1. */
static long long token_id(const llm_tokenizer *tok, const char *text)
{
    uint32_t id;
    return text && !llm_tok_special(tok, text, &id) ? (long long)id : -1;
}

static int add_tokenizer(llm_gguf_writer *w, const llm_cv_model *m, llm_err *err)
{
    enum { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5 };
    json_error_t jerr;
    json_t *root = json_loads(m->tokenizer, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *model = json_object_get(root, "model");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!root) return llm_errf(err, "the tokenizer is not JSON: %s", jerr.text);
    llm_tokenizer *tok = NULL;
    size_t V = m->c.vocab_size;
    const char **s = calloc(V + 1, sizeof *s);
    size_t *len = calloc(V + 1, sizeof *len);
    int32_t *type = calloc(V + 1, sizeof *type);
    char *pads = malloc(V * 16 + 1);
    const char **ms = NULL;
    size_t *mlen = NULL;
    char *mbuf = NULL;
    int rc = !s || !len || !type || !pads ? llm_errf(err, "out of memory") : 0;
    if (!rc && (!mtype || strcmp(mtype, "BPE") || !mentions_byte_level(json_object_get(root, "pre_tokenizer"))))
        rc = llm_errf(err, "the tokenizer is not byte-level BPE: GGUF export takes byte-level BPE tokenizers (as GPT-2's, "
                           "Llama 3's, Qwen 2's)");
    if (!rc) rc = llm_tok_from_json(m->tokenizer, strlen(m->tokenizer), "the tokenizer", &tok, err);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(model, "vocab"), key, v) {
        if (rc) break;
        json_int_t id = json_integer_value(v);
        if (id < 0 || (size_t)id >= V)
            rc = llm_errf(err, "the tokenizer's token '%s' has id %lld, past the vocab_size %zu of the config", key,
                          (long long)id, V);
        else if (!s[id]) s[id] = key, len[id] = strlen(key), type[id] = NORMAL;
    }
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, v) {
        if (rc) break;
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        const char *content = json_string_value(json_object_get(v, "content"));
        if (!content || id < 0 || (size_t)id >= V) {
            rc = llm_errf(err, "the tokenizer's added token %zu has id %lld, past the vocab_size %zu of the config", i,
                          (long long)id, V);
            break;
        }
        s[id] = content;
        len[id] = json_string_length(json_object_get(v, "content"));
        type[id] = json_is_true(json_object_get(v, "special")) ? CONTROL : USER_DEFINED;
    }
    for (size_t k = 0; k < V && !rc; k++)
        if (!s[k]) {   /* ids the tokenizer does not use: llama.cpp's converter pads with these */
            char *p = pads + 16 * k;
            len[k] = (size_t)snprintf(p, 16, "[PAD%zu]", k);
            s[k] = p;
            type[k] = UNUSED;
        }
    const json_t *unk = json_object_get(model, "unk_token");
    long long unk_id = json_is_string(unk) ? token_id(tok, json_string_value(unk)) : -1;
    if (unk_id < 0 && json_is_string(unk)) {
        const json_t *u = json_object_get(json_object_get(model, "vocab"), json_string_value(unk));
        unk_id = u ? json_integer_value(u) : -1;
    }
    if (unk_id >= 0 && (size_t)unk_id < V) type[unk_id] = UNKNOWN;
    /* merges: "LEFT RIGHT" */
    const json_t *merges = json_object_get(model, "merges");
    size_t nm = json_array_size(merges), total = 0;
    json_array_foreach(merges, i, v) total += json_is_string(v) ? json_string_length(v) + 1 : 0;
    json_array_foreach(merges, i, v)
        if (json_is_array(v))
            total += json_string_length(json_array_get(v, 0)) + json_string_length(json_array_get(v, 1)) + 2;
    if (!rc && (!(ms = calloc(nm + 1, sizeof *ms)) || !(mlen = calloc(nm + 1, sizeof *mlen)) ||
                !(mbuf = malloc(total + 1))))
        rc = llm_errf(err, "out of memory");
    size_t at = 0;
    json_array_foreach(merges, i, v) {
        if (rc) break;
        ms[i] = mbuf + at;
        if (json_is_string(v)) {
            memcpy(mbuf + at, json_string_value(v), json_string_length(v));
            at += json_string_length(v);
        } else {
            const json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1);
            if (!json_is_string(a) || !json_is_string(b) || strchr(json_string_value(a), ' ') ||
                strchr(json_string_value(b), ' ')) {
                rc = llm_errf(err, "the tokenizer's merge %zu has a space in a token: GGUF's merges are 'LEFT RIGHT'", i);
                break;
            }
            at += (size_t)sprintf(mbuf + at, "%s %s", json_string_value(a), json_string_value(b));
        }
        mlen[i] = (size_t)(mbuf + at - ms[i]);
    }
    /* BOS: the post-processor's first special token; else tokenizer_config's
     * bos_token; else the EOS (as GPT-2's bos_token is its <|endoftext|>) */
    long long bos = -1;
    int add_bos = 0;
    uint32_t eos32;
    long long eos = tok && !llm_tok_eos(tok, &eos32) ? (long long)eos32 : -1;
    const json_t *pp = json_object_get(root, "post_processor");
    const json_t *first = json_object_get(json_array_get(json_object_get(pp, "single"), 0), "SpecialToken");
    if (first) {
        const char *id = json_string_value(json_object_get(first, "id"));
        const json_t *def = json_object_get(json_object_get(pp, "special_tokens"), id ? id : "");
        const json_t *ids = json_object_get(def, "ids");
        if (json_array_size(ids) == 1) bos = json_integer_value(json_array_get(ids, 0)), add_bos = 1;
    }
    if (bos < 0 && m->tokenizer_config) {
        json_t *tc = json_loads(m->tokenizer_config, 0, NULL);
        const json_t *b = json_object_get(tc, "bos_token");
        if (json_is_object(b)) b = json_object_get(b, "content");
        if (json_is_string(b)) bos = token_id(tok, json_string_value(b));
        json_decref(tc);
    }
    if (bos < 0) bos = eos;
    if (!rc) rc = llm_gguf_add_string(w, "tokenizer.ggml.model", "gpt2", 4, err);
    const char *pre = rc ? "" : pre_name(json_object_get(root, "pre_tokenizer"));
    if (!rc) rc = llm_gguf_add_string(w, "tokenizer.ggml.pre", pre, strlen(pre), err);
    if (!rc) rc = llm_gguf_add_strings(w, "tokenizer.ggml.tokens", s, len, V, err);
    if (!rc) rc = llm_gguf_add_i32s(w, "tokenizer.ggml.token_type", type, V, err);
    if (!rc) rc = llm_gguf_add_strings(w, "tokenizer.ggml.merges", ms, mlen, nm, err);
    if (!rc && bos >= 0 && (size_t)bos < V) rc = llm_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos, err);
    if (!rc && eos >= 0 && (size_t)eos < V) rc = llm_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos, err);
    if (!rc && unk_id >= 0 && (size_t)unk_id < V)
        rc = llm_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk_id, err);
    if (!rc) rc = llm_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", add_bos, err);
    if (!rc) rc = llm_gguf_add_bool(w, "tokenizer.ggml.add_eos_token", 0, err);
    if (!rc) rc = llm_gguf_add_string(w, "tokenizer.huggingface.json", m->tokenizer, strlen(m->tokenizer), err);
    llm_tok_free(tok);
    json_decref(root);
    free(s);
    free(len);
    free(type);
    free(pads);
    free(ms);
    free(mlen);
    free(mbuf);
    return rc;
}

/* The chat template: ours, else tokenizer_config's. malloc'd or NULL. */
static char *chat_template_of(const llm_cv_model *m)
{
    if (m->chat_template) return strdup(m->chat_template);
    if (!m->tokenizer_config) return NULL;
    json_t *tc = json_loads(m->tokenizer_config, 0, NULL);
    const char *t = json_string_value(json_object_get(tc, "chat_template"));
    char *d = t ? strdup(t) : NULL;
    json_decref(tc);
    return d;
}

int llm_cv_gguf_write_tokenizer(llm_gguf_writer *w, const llm_cv_model *m, llm_err *err)
{
    int rc = m->tokenizer ? add_tokenizer(w, m, err) : 0;
    char *tpl = rc ? NULL : chat_template_of(m);
    if (tpl) rc = llm_gguf_add_string(w, "tokenizer.chat_template", tpl, strlen(tpl), err);
    free(tpl);
    if (!rc && m->tokenizer_config)
        rc = llm_gguf_add_string(w, "llmux.tokenizer_config", m->tokenizer_config, strlen(m->tokenizer_config), err);
    if (!rc && m->generation_config)
        rc = llm_gguf_add_string(w, "llmux.generation_config", m->generation_config, strlen(m->generation_config), err);
    return rc;
}

/* ---- the tokenizer, in ---- */

static int dup_string(const llm_gguf_file *f, const char *key, char **out, llm_err *err)
{
    const char *s;
    size_t len;
    int rc = llm_gguf_get_string(f, key, 0, &s, &len, err);
    if (rc) return rc < 0 ? -1 : 0;
    if (memchr(s, 0, len)) return llm_errf(err, "%s: key '%s' holds a NUL byte", f->path, key);
    if (!(*out = malloc(len + 1))) return llm_errf(err, "out of memory");
    memcpy(*out, s, len);
    (*out)[len] = 0;
    return 0;
}

/* A tokenizer.json (byte-level BPE) from tokenizer.ggml.*; with check_only,
 * only the checks of the arrays against each other and the model. */
static int build_tokenizer(const llm_gguf_file *f, const llm_config *c, int check_only, char **out, llm_err *err)
{
    enum { UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4 };
    const char *path = f->path, *model, *pre = NULL;
    size_t mlen, plen = 0;
    const llm_gguf_kv *tokens, *types = NULL, *merges = NULL;
    if (llm_gguf_get_string(f, "tokenizer.ggml.model", 1, &model, &mlen, err)) return -1;
    if (llm_gguf_get_array(f, "tokenizer.ggml.tokens", 1, LLM_GGUF_STRING, &tokens, err)) return -1;
    if (tokens->count != c->vocab_size)
        return llm_errf(err, "%s: key 'tokenizer.ggml.tokens' has %llu tokens, but tensor 'token_embd.weight' has %zu rows",
                        path, (unsigned long long)tokens->count, c->vocab_size);
    if (llm_gguf_get_array(f, "tokenizer.ggml.token_type", 0, -1, &types, err) < 0) return -1;
    if (types && (types->elem_type == LLM_GGUF_STRING || types->elem_type == LLM_GGUF_ARRAY ||
                  types->elem_type == LLM_GGUF_F32 || types->elem_type == LLM_GGUF_F64 || types->count != tokens->count))
        return llm_errf(err, "%s: key 'tokenizer.ggml.token_type' is not an array of %llu integers", path,
                        (unsigned long long)tokens->count);
    if (llm_gguf_get_array(f, "tokenizer.ggml.merges", 0, LLM_GGUF_STRING, &merges, err) < 0) return -1;
    uint64_t bos = UINT64_MAX, eos = UINT64_MAX;
    int add_bos = 0;
    if (llm_gguf_get_uint(f, "tokenizer.ggml.bos_token_id", 0, &bos, err) < 0) return -1;
    if (llm_gguf_get_uint(f, "tokenizer.ggml.eos_token_id", 0, &eos, err) < 0) return -1;
    if (llm_gguf_get_bool(f, "tokenizer.ggml.add_bos_token", 0, &add_bos, err) < 0) return -1;
    if ((bos != UINT64_MAX && bos >= tokens->count) || (add_bos && bos == UINT64_MAX))
        return llm_errf(err, "%s: key 'tokenizer.ggml.bos_token_id' is missing or past the tokens", path);
    if (eos != UINT64_MAX && eos >= tokens->count)
        return llm_errf(err, "%s: key 'tokenizer.ggml.eos_token_id' is past the tokens", path);
    if (check_only) return 0;
    if (!(mlen == 4 && !memcmp(model, "gpt2", 4)))
        return llm_errf(err, "%s: key 'tokenizer.ggml.model' is '%.*s': llm-convert reads byte-level BPE tokenizers "
                             "('gpt2')", path, (int)(mlen > 40 ? 40 : mlen), model);
    if (llm_gguf_get_string(f, "tokenizer.ggml.pre", 0, &pre, &plen, err) < 0) return -1;
    static const struct {
        const char *gguf, *ours;
    } pres[] = {
        {"gpt-2", "gpt2"}, {"llama-bpe", "llama3"}, {"llama3", "llama3"}, {"qwen2", "qwen2"}, {"gpt-4o", "o200k_base"},
    };
    const char *pattern = NULL;
    for (size_t i = 0; pre && i < sizeof pres / sizeof pres[0]; i++)
        if (plen == strlen(pres[i].gguf) && !memcmp(pre, pres[i].gguf, plen))
            pattern = llm_pretok_portable_pattern(pres[i].ours);
    if (!pattern)
        return llm_errf(err, "%s: key 'tokenizer.ggml.pre' is %s%.*s%s: llm-convert knows the pre-tokenizers gpt-2, "
                             "llama-bpe, qwen2 and gpt-4o", path, pre ? "'" : "", pre ? (int)(plen > 40 ? 40 : plen) : 7,
                        pre ? pre : "missing", pre ? "'" : "");

    json_t *root = json_object(), *added = json_array(), *vocab = json_object(), *jm = json_array();
    int rc = !root || !added || !vocab || !jm ? llm_errf(err, "out of memory") : 0;
    const unsigned char *p = tokens->val;
    char *bos_text = NULL;
    for (uint64_t i = 0; i < tokens->count && !rc; i++) {
        const char *s;
        size_t len;
        llm_gguf_next_string(&p, &s, &len);
        json_t *str = json_stringn(s, len);
        if (!str || memchr(s, 0, len)) {
            json_decref(str);
            rc = llm_errf(err, "%s: key 'tokenizer.ggml.tokens': token %llu is not UTF-8 text", path,
                          (unsigned long long)i);
            break;
        }
        const char *text = json_string_value(str);
        if (!json_object_get(vocab, text)) json_object_set_new(vocab, text, json_integer((json_int_t)i));
        int64_t ty = types ? llm_gguf_array_int(types, i) : 1;
        if (ty == CONTROL || ty == USER_DEFINED || ty == UNKNOWN) {
            json_t *a = json_object();
            json_object_set_new(a, "id", json_integer((json_int_t)i));
            json_object_set(a, "content", str);
            json_object_set_new(a, "single_word", json_false());
            json_object_set_new(a, "lstrip", json_false());
            json_object_set_new(a, "rstrip", json_false());
            json_object_set_new(a, "normalized", json_false());
            json_object_set_new(a, "special", json_boolean(ty != USER_DEFINED));
            json_array_append_new(added, a);
        }
        if (i == bos) bos_text = strdup(text);
        json_decref(str);
    }
    p = merges ? merges->val : NULL;
    for (uint64_t i = 0; merges && i < merges->count && !rc; i++) {
        const char *s;
        size_t len;
        llm_gguf_next_string(&p, &s, &len);
        json_t *str = json_stringn(s, len);
        if (!str || memchr(s, 0, len)) {
            json_decref(str);
            rc = llm_errf(err, "%s: key 'tokenizer.ggml.merges': merge %llu is not UTF-8 text", path,
                          (unsigned long long)i);
            break;
        }
        json_array_append_new(jm, str);
    }
    if (!rc && add_bos && !bos_text) rc = llm_errf(err, "out of memory");
    if (!rc) {
        json_object_set_new(root, "version", json_string("1.0"));
        json_object_set_new(root, "truncation", json_null());
        json_object_set_new(root, "padding", json_null());
        json_object_set(root, "added_tokens", added);
        json_object_set_new(root, "normalizer", json_null());
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                                      "pretokenizers", "type", "Split", "pattern", "Regex", pattern, "behavior",
                                      "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets",
                                      1, "use_regex", 0));
        if (add_bos)
            json_object_set_new(root, "post_processor",
                                json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
                                          "{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[I], s:[s]}}}",
                                          "type", "TemplateProcessing", "single", "SpecialToken", "id", bos_text,
                                          "type_id", 0, "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id",
                                          bos_text, "type_id", 0, "Sequence", "id", "A", "type_id", 0, "SpecialToken",
                                          "id", bos_text, "type_id", 1, "Sequence", "id", "B", "type_id", 1,
                                          "special_tokens", bos_text, "id", bos_text, "ids", (json_int_t)bos, "tokens",
                                          bos_text));
        else
            json_object_set_new(root, "post_processor", json_null());
        json_object_set_new(root, "decoder", json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                                       "trim_offsets", 1, "use_regex", 1));
        json_t *mo = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b}", "type", "BPE", "dropout", "unk_token",
                               "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                               "ignore_merges", 0);
        if (mo) {
            json_object_set(mo, "vocab", vocab);
            json_object_set(mo, "merges", jm);
        }
        json_object_set_new(root, "model", mo);
        *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!*out || !mo || !json_object_get(root, "pre_tokenizer") || !json_object_get(root, "post_processor"))
            rc = llm_errf(err, "out of memory");
    }
    free(bos_text);
    json_decref(root);
    json_decref(added);
    json_decref(vocab);
    json_decref(jm);
    return rc;
}

int llm_cv_gguf_read_tokenizer(const llm_gguf_file *f, llm_cv_model *m, llm_err *err)
{
    int rc = dup_string(f, "tokenizer.huggingface.json", &m->tokenizer, err);
    if (!rc && llm_gguf_get(f, "tokenizer.ggml.model"))
        rc = build_tokenizer(f, &m->c, m->tokenizer != NULL, &m->tokenizer, err);
    if (!rc && m->tokenizer) {   /* it must load, and fit the model */
        llm_tokenizer *tok = NULL;
        char name[600];
        snprintf(name, sizeof name, "%s: the tokenizer from key '%s'", f->path,
                 llm_gguf_get(f, "tokenizer.huggingface.json") ? "tokenizer.huggingface.json" : "tokenizer.ggml.tokens");
        rc = llm_tok_from_json(m->tokenizer, strlen(m->tokenizer), name, &tok, err);
        if (!rc && llm_tok_vocab_size(tok) > m->c.vocab_size)
            rc = llm_errf(err, "%s: %zu tokens, more than the %zu rows of 'token_embd.weight'", name, llm_tok_vocab_size(tok),
                          m->c.vocab_size);
        if (tok) llm_tok_free(tok);
    }
    if (!rc) rc = dup_string(f, "tokenizer.chat_template", &m->chat_template, err);
    if (!rc) rc = dup_string(f, "llmux.tokenizer_config", &m->tokenizer_config, err);
    if (!rc) rc = dup_string(f, "llmux.generation_config", &m->generation_config, err);
    return rc;
}

