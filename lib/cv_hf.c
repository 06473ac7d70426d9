/* Hugging Face directories in and out of llm-convert (see cv.h,
 * llm-tensors(5)).
 *
 * Reading. config.json names the model: GPT2LMHeadModel, LlamaForCausalLM,
 * MistralForCausalLM or Qwen2ForCausalLM (its "architectures", else its
 * "model_type"). Its fields become our config, with transformers' defaults
 * for the fields a config may leave out; anything that would make
 * transformers compute something we do not (a rope_scaling, a sliding
 * window in use, biases we have no place for, another activation, a head_dim
 * that is not hidden_size / heads, ...) is refused with a message naming the
 * field. The weights are model.safetensors, or the shards that
 * model.safetensors.index.json names (every file of its weight_map, each
 * tensor in the file the map says and no tensor the map does not name). A
 * tensor that needs no change (every tensor of the llama family, most of
 * GPT-2's) is read where it lies in the mapping; GPT-2's Conv1D weights,
 * stored (in, out), are transposed on demand by fill, and its fused c_attn
 * is split into q, k and v (the weight by fill, the bias as three slices of
 * the mapping). Buffers that are not parameters (attn.bias and
 * attn.masked_bias of old GPT-2 checkpoints, rotary_emb.inv_freq of old
 * Llama ones) and the lm_head.weight of a tied model are passed over.
 * tokenizer.json, tokenizer_config.json (its chat_template; a
 * chat_template.jinja beside it wins, as in transformers) and
 * generation_config.json become metadata, except a tokenizer_config.json or
 * generation_config.json that says only what the writer below derives from
 * the tokenizer (they were written for transformers' sake, not read from a
 * model): so llmux -> hf -> llmux gives back the very same file.
 *
 * Writing. A directory that transformers' AutoModelForCausalLM and
 * AutoTokenizer load as they are: config.json (every field of the
 * architecture that matters to the computation, written out),
 * model.safetensors (tensors under transformers' names, streamed one at a
 * time through the safetensors writer; GPT-2's transposed and fused back;
 * --dtype converts, quantized tensors are dequantized, to --dtype or f32),
 * tokenizer.json (our metadata as it is), tokenizer_config.json (ours, with
 * tokenizer_class PreTrainedTokenizerFast added when it has none; else one
 * made from the tokenizer's special tokens and our chat template) and
 * generation_config.json. The files go into a temp directory beside the
 * output, renamed into place at the end; an existing output is refused.
 *
 * The llama family is written as LlamaForCausalLM, or as Qwen2ForCausalLM
 * when it has q, k and v biases: Llama's attention_bias puts a bias on
 * o_proj as well, which our model does not have, whereas Qwen2's attention
 * has exactly q, k and v biases and the same computation otherwise (its
 * sliding window off). */
#include "cv.h"

#include "cli.h"
#include "fileio.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the names, both ways ---- */

/* One tensor of transformers' model and the tensor(s) of ours it holds. */
typedef struct {
    char hf[96];
    char ours[3][48];
    int n;               /* 1, or 3 for GPT-2's c_attn: q, k and v */
    int transpose;       /* GPT-2's Conv1D: (in, out) */
    size_t ndim;
    uint64_t shape[2];   /* transformers' shape */
    uint64_t part;       /* c_attn: rows (weight) or elements (bias) of each of q, k, v */
} hf_link;

static const char *const llama_layer_names[][2] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn.q.weight", "self_attn.q_proj.weight"},
    {"attn.k.weight", "self_attn.k_proj.weight"},
    {"attn.v.weight", "self_attn.v_proj.weight"},
    {"attn.q.bias", "self_attn.q_proj.bias"},
    {"attn.k.bias", "self_attn.k_proj.bias"},
    {"attn.v.bias", "self_attn.v_proj.bias"},
    {"attn.o.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn.gate.weight", "mlp.gate_proj.weight"},
    {"ffn.up.weight", "mlp.up_proj.weight"},
    {"ffn.down.weight", "mlp.down_proj.weight"},
};

/* ours, transformers', transposed */
static const struct { const char *ours, *hf; int transpose; } gpt2_layer_names[] = {
    {"attn_norm.weight", "ln_1.weight", 0},     {"attn_norm.bias", "ln_1.bias", 0},
    {"attn.o.weight", "attn.c_proj.weight", 1}, {"attn.o.bias", "attn.c_proj.bias", 0},
    {"ffn_norm.weight", "ln_2.weight", 0},      {"ffn_norm.bias", "ln_2.bias", 0},
    {"ffn.up.weight", "mlp.c_fc.weight", 1},    {"ffn.up.bias", "mlp.c_fc.bias", 0},
    {"ffn.down.weight", "mlp.c_proj.weight", 1}, {"ffn.down.bias", "mlp.c_proj.bias", 0},
};

/* The link of our parameter p; *j is p's place among the link's sources.
 * prefix: GPT-2's "transformer." (or "" in the oldest checkpoints). */
static int link_of(const llm_config *c, const char *prefix, const llm_param *p, hf_link *L, int *j)
{
    memset(L, 0, sizeof *L);
    *j = 0;
    L->n = 1;
    snprintf(L->ours[0], sizeof L->ours[0], "%s", p->name);
    L->ndim = p->ndim;
    L->shape[0] = p->shape[0];
    L->shape[1] = p->ndim == 2 ? p->shape[1] : 0;
    size_t layer;
    int used = 0;
    const char *rest = NULL;
    if (sscanf(p->name, "layers.%zu.%n", &layer, &used) == 1 && used > 0) rest = p->name + used;
    if (c->arch == LLM_ARCH_LLAMA) {
        const char *hf = NULL;
        if (!strcmp(p->name, "tok_embeddings.weight")) hf = "model.embed_tokens.weight";
        else if (!strcmp(p->name, "norm.weight")) hf = "model.norm.weight";
        else if (!strcmp(p->name, "output.weight")) hf = "lm_head.weight";
        if (hf) return snprintf(L->hf, sizeof L->hf, "%s", hf), 0;
        for (size_t i = 0; rest && i < sizeof llama_layer_names / sizeof llama_layer_names[0]; i++)
            if (!strcmp(rest, llama_layer_names[i][0]))
                return snprintf(L->hf, sizeof L->hf, "model.layers.%zu.%s", layer, llama_layer_names[i][1]), 0;
        return -1;
    }
    const char *hf = NULL;
    if (!strcmp(p->name, "tok_embeddings.weight")) hf = "wte.weight";
    else if (!strcmp(p->name, "pos_embeddings.weight")) hf = "wpe.weight";
    else if (!strcmp(p->name, "norm.weight")) hf = "ln_f.weight";
    else if (!strcmp(p->name, "norm.bias")) hf = "ln_f.bias";
    if (hf) return snprintf(L->hf, sizeof L->hf, "%s%s", prefix, hf), 0;
    if (!rest) return -1;
    for (size_t i = 0; i < sizeof gpt2_layer_names / sizeof gpt2_layer_names[0]; i++)
        if (!strcmp(rest, gpt2_layer_names[i].ours)) {
            snprintf(L->hf, sizeof L->hf, "%sh.%zu.%s", prefix, layer, gpt2_layer_names[i].hf);
            if ((L->transpose = gpt2_layer_names[i].transpose)) {
                L->shape[0] = p->shape[1];
                L->shape[1] = p->shape[0];
            }
            return 0;
        }
    /* q, k and v: one c_attn, (dim, 3 dim) as Conv1D stores it, bias (3 dim) */
    static const char qkv[] = "qkv";
    for (int k = 0; k < 3; k++) {
        char w[16], b[16];
        snprintf(w, sizeof w, "attn.%c.weight", qkv[k]);
        snprintf(b, sizeof b, "attn.%c.bias", qkv[k]);
        int is_w = !strcmp(rest, w), is_b = !strcmp(rest, b);
        if (!is_w && !is_b) continue;
        *j = k;
        L->n = 3;
        L->part = p->shape[0];
        for (int x = 0; x < 3; x++)
            snprintf(L->ours[x], sizeof L->ours[x], "layers.%zu.attn.%c.%s", layer, qkv[x], is_w ? "weight" : "bias");
        snprintf(L->hf, sizeof L->hf, "%sh.%zu.attn.c_attn.%s", prefix, layer, is_w ? "weight" : "bias");
        if (is_w) {
            L->transpose = 1;
            L->shape[0] = p->shape[1];
            L->shape[1] = 3 * p->shape[0];
        } else {
            L->shape[0] = 3 * p->shape[0];
        }
        return 0;
    }
    return -1;
}

static void shape_str(char *s, size_t n, size_t ndim, const uint64_t *shape)
{
    size_t k = (size_t)snprintf(s, n, "[");
    for (size_t i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(s + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (k < n) snprintf(s + k, n - k, "]");
}

/* ---- small files ---- */

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A whole text file; *out NULL (and 0 returned) when it does not exist. */
static int read_text(const char *dir, const char *name, char **out, llm_err *err)
{
    *out = NULL;
    char *path = join(dir, name);
    if (!path) return llm_errf(err, "out of memory");
    llm_mapped mp;
    int rc = 0;
    if (!exists(path) && errno == ENOENT) {
        free(path);
        return 0;
    }
    if (llm_map_file(&mp, path, err)) {
        free(path);
        return -1;
    }
    char *t = malloc(mp.size + 1);
    if (!t) rc = llm_errf(err, "out of memory");
    else {
        if (mp.size) memcpy(t, mp.data, mp.size);
        t[mp.size] = 0;
        if (strlen(t) != mp.size) rc = llm_errf(err, "%s: holds a NUL byte: not a text file", path);
    }
    llm_unmap_file(&mp);
    if (rc) free(t);
    else *out = t;
    free(path);
    return rc;
}

static json_t *parse_json(const char *text, const char *dir, const char *name, llm_err *err)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!j) return llm_errf(err, "%s/%s: line %d: %s", dir, name, je.line, je.text), NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        return llm_errf(err, "%s/%s: not a JSON object", dir, name), NULL;
    }
    return j;
}

/* ---- the tokenizer's special tokens ---- */

typedef struct {
    const char *bos, *eos, *unk;   /* into the parsed tokenizer (tok) */
    long long bos_id, eos_id;      /* -1 when unknown */
    json_t *tok;
} specials;

static long long token_id(json_t *tok, const char *text)
{
    json_t *added = json_object_get(tok, "added_tokens"), *a;
    size_t i;
    json_array_foreach(added, i, a) {
        const char *s = json_string_value(json_object_get(a, "content"));
        if (s && !strcmp(s, text) && json_is_integer(json_object_get(a, "id")))
            return json_integer_value(json_object_get(a, "id"));
    }
    json_t *v = json_object_get(json_object_get(json_object_get(tok, "model"), "vocab"), text);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static int is_added(json_t *tok, const char *text)
{
    json_t *added = json_object_get(tok, "added_tokens"), *a;
    size_t i;
    json_array_foreach(added, i, a) {
        const char *s = json_string_value(json_object_get(a, "content"));
        if (s && !strcmp(s, text)) return 1;
    }
    return 0;
}

/* The first or last special token of the post-processor's template for one
 * sequence (TemplateProcessing, alone or in a Sequence). */
static const char *template_special(json_t *pp, int last)
{
    if (!json_is_object(pp)) return NULL;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (type && !strcmp(type, "Sequence")) {
        json_t *ps = json_object_get(pp, "processors"), *x;
        size_t i;
        json_array_foreach(ps, i, x) {
            const char *s = template_special(x, last);
            if (s) return s;
        }
        return NULL;
    }
    if (!type || strcmp(type, "TemplateProcessing")) return NULL;
    json_t *single = json_object_get(pp, "single");
    size_t n = json_array_size(single);
    if (!n) return NULL;
    json_t *item = json_object_get(json_array_get(single, last ? n - 1 : 0), "SpecialToken");
    return json_string_value(json_object_get(item, "id"));
}

/* bos and eos as transformers' tokenizer would name them: eos as
 * llm_tok_eos picks it (lib/tokenizer.c), bos the template's first special
 * token or a known begin-of-text token. */
static void find_specials(const char *tok_text, specials *s)
{
    memset(s, 0, sizeof *s);
    s->bos_id = s->eos_id = -1;
    if (!tok_text || !(s->tok = json_loads(tok_text, 0, NULL))) return;
    static const char *eos_names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>", "<|eot_id|>"};
    static const char *bos_names[] = {"<|begin_of_text|>", "<s>", "<|startoftext|>"};
    for (size_t i = 0; i < sizeof eos_names / sizeof eos_names[0] && !s->eos; i++)
        if (is_added(s->tok, eos_names[i])) s->eos = eos_names[i];
    json_t *pp = json_object_get(s->tok, "post_processor");
    if (!s->eos) s->eos = template_special(pp, 1);
    s->bos = template_special(pp, 0);
    for (size_t i = 0; i < sizeof bos_names / sizeof bos_names[0] && !s->bos; i++)
        if (is_added(s->tok, bos_names[i])) s->bos = bos_names[i];
    if (s->bos && (s->bos_id = token_id(s->tok, s->bos)) < 0) s->bos = NULL;
    if (s->eos && (s->eos_id = token_id(s->tok, s->eos)) < 0) s->eos = NULL;
    s->unk = json_string_value(json_object_get(json_object_get(s->tok, "model"), "unk_token"));
}

/* The chat formats llmux knows by name, as the models ship their templates
 * (t/conformance/test_chat_templates.py). */
static const char *const chat_jinja[][2] = {
    {"chatml",
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
     "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"llama2",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
     "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
     "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
     "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
     "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
     "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
     "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
     "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"},
    {"llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
     "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
     "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
};

/* A Jinja template for our chat_template: itself, or the named format's. */
static const char *jinja_of(const char *tpl)
{
    if (!tpl) return NULL;
    for (size_t i = 0; i < sizeof chat_jinja / sizeof chat_jinja[0]; i++)
        if (!strcmp(tpl, chat_jinja[i][0])) return chat_jinja[i][1];
    return tpl;
}

/* The tokenizer_config.json the writer makes when we have none. */
static json_t *derived_tok_config(const llm_cv_model *m)
{
    specials s;
    find_specials(m->tokenizer, &s);
    json_t *o = json_object();
    json_object_set_new(o, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    if (s.bos) json_object_set_new(o, "bos_token", json_string(s.bos));
    if (s.eos) json_object_set_new(o, "eos_token", json_string(s.eos));
    if (s.unk) json_object_set_new(o, "unk_token", json_string(s.unk));
    json_object_set_new(o, "model_max_length", json_integer((json_int_t)m->c.ctx_len));
    json_object_set_new(o, "clean_up_tokenization_spaces", json_false());
    if (m->chat_template) json_object_set_new(o, "chat_template", json_string(jinja_of(m->chat_template)));
    json_decref(s.tok);
    return o;
}

/* The generation_config.json the writer makes when we have none. */
static json_t *derived_gen_config(const llm_cv_model *m)
{
    specials s;
    find_specials(m->tokenizer, &s);
    json_t *o = json_object();
    if (s.bos) json_object_set_new(o, "bos_token_id", json_integer(s.bos_id));
    if (s.eos) json_object_set_new(o, "eos_token_id", json_integer(s.eos_id));
    json_decref(s.tok);
    return o;
}

/* ---- reading ---- */

typedef struct {
    const char *name;
    const llm_st_tensor *t;
    const char *file;   /* the shard's path */
    int used;
} hf_entry;

typedef struct {
    llm_st_file **f;
    char **path;
    size_t nf;
    hf_entry *e;
    size_t ne;
    int sharded;   /* model.safetensors.index.json, not model.safetensors */
} hf_owner;

static void release_hf(void *owner)
{
    hf_owner *o = owner;
    if (!o) return;
    for (size_t i = 0; i < o->nf; i++) {
        llm_st_close(o->f[i]);
        free(o->path[i]);
    }
    free(o->f);
    free(o->path);
    free(o->e);
    free(o);
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const hf_entry *)a)->name, ((const hf_entry *)b)->name);
}

static hf_entry *find_entry(hf_owner *o, const char *name)
{
    hf_entry key = {name, NULL, NULL, 0};
    return bsearch(&key, o->e, o->ne, sizeof *o->e, entry_cmp);
}

/* Opens a shard (once); returns its index or -1. */
static long open_shard(hf_owner *o, const char *dir, const char *file, llm_err *err)
{
    char *path = join(dir, file);
    if (!path) return llm_errf(err, "out of memory");
    for (size_t i = 0; i < o->nf; i++)
        if (!strcmp(o->path[i], path)) {
            free(path);
            return (long)i;
        }
    llm_st_file **f = realloc(o->f, (o->nf + 1) * sizeof *f);
    if (f) o->f = f;
    char **p = realloc(o->path, (o->nf + 1) * sizeof *p);
    if (p) o->path = p;
    if (!f || !p) {
        free(path);
        return llm_errf(err, "out of memory");
    }
    if (!exists(path)) {
        int e = errno;
        llm_errf(err, "%s: %s", path, strerror(e));
        free(path);
        return -1;
    }
    if (llm_st_open(path, &o->f[o->nf], err)) {
        free(path);
        return -1;
    }
    o->path[o->nf] = path;
    return (long)o->nf++;
}

static int add_entries(hf_owner *o, size_t fi, llm_err *err)
{
    size_t n = llm_st_count(o->f[fi]);
    hf_entry *e = realloc(o->e, (o->ne + n + 1) * sizeof *e);
    if (!e) return llm_errf(err, "out of memory");
    o->e = e;
    for (size_t i = 0; i < n; i++) {
        const llm_st_tensor *t = llm_st_at(o->f[fi], i);
        o->e[o->ne++] = (hf_entry){t->name, t, o->path[fi], 0};
    }
    return 0;
}

static int open_weights(hf_owner *o, const char *dir, llm_err *err)
{
    char *single = join(dir, "model.safetensors"), *index = join(dir, "model.safetensors.index.json");
    int rc = 0;
    if (!single || !index) rc = llm_errf(err, "out of memory");
    else if (exists(single)) {
        long fi = open_shard(o, dir, "model.safetensors", err);
        rc = fi < 0 ? -1 : add_entries(o, (size_t)fi, err);
    } else if (exists(index)) {
        o->sharded = 1;
        char *text = NULL;
        json_t *j = NULL;
        if (read_text(dir, "model.safetensors.index.json", &text, err) ||
            !(j = parse_json(text, dir, "model.safetensors.index.json", err)))
            rc = -1;
        json_t *map = j ? json_object_get(j, "weight_map") : NULL;
        if (!rc && !json_is_object(map)) rc = llm_errf(err, "%s: no \"weight_map\" object", index);
        const char *name;
        json_t *v;
        /* every file the map names, opened and checked whole */
        json_object_foreach(map, name, v) {
            if (rc) break;
            const char *file = json_string_value(v);
            if (!file || !*file || strchr(file, '/') || !strcmp(file, "..") || !strcmp(file, ".")) {
                rc = llm_errf(err, "%s: the weight_map puts tensor '%s' in %s%s%s, not a file of this directory", index,
                              name, file ? "'" : "", file ? file : "something that is not a file name", file ? "'" : "");
                break;
            }
            size_t before = o->nf;
            long fi = open_shard(o, dir, file, err);
            if (fi < 0) rc = -1;
            else if ((size_t)fi == before) rc = add_entries(o, (size_t)fi, err);
        }
        /* each tensor where the map says, and the map's tensors only */
        for (size_t i = 0; !rc && i < o->ne; i++) {
            const char *want = json_string_value(json_object_get(map, o->e[i].name));
            const char *file = strrchr(o->e[i].file, '/') + 1;
            if (!want) rc = llm_errf(err, "%s: tensor '%s' is not in %s's weight_map", o->e[i].file, o->e[i].name,
                                     "model.safetensors.index.json");
            else if (strcmp(want, file))
                rc = llm_errf(err, "%s: tensor '%s' is here, but model.safetensors.index.json puts it in %s", o->e[i].file,
                              o->e[i].name, want);
        }
        json_object_foreach(map, name, v) {
            if (rc) break;
            char *path = join(dir, json_string_value(v));
            if (!path) rc = llm_errf(err, "out of memory");
            for (size_t fi = 0; !rc && fi < o->nf; fi++)
                if (!strcmp(o->path[fi], path) && !llm_st_find(o->f[fi], name)) {
                    const char *other = NULL;
                    for (size_t k = 0; k < o->nf && !other; k++)
                        if (llm_st_find(o->f[k], name)) other = strrchr(o->path[k], '/') + 1;
                    rc = llm_errf(err, "%s: no tensor '%s', which model.safetensors.index.json puts here%s%s%s", path,
                                  name, other ? " (" : "", other ? other : "", other ? " holds it)" : "");
                }
            free(path);
        }
        json_decref(j);
        free(text);
    } else {
        char *bin = join(dir, "pytorch_model.bin");
        int has_bin = bin && exists(bin);
        free(bin);
        rc = llm_errf(err, "%s: no model.safetensors or model.safetensors.index.json%s", dir,
                      has_bin ? " (pytorch_model.bin is not read: save the model with safe_serialization=True)" : "");
    }
    free(single);
    free(index);
    if (!rc) qsort(o->e, o->ne, sizeof *o->e, entry_cmp);
    return rc;
}

/* config.json's fields: the first problem is kept in rc. */
typedef struct {
    json_t *o;
    const char *path;
    llm_err *err;
    int rc;
} cfg_reader;

static json_t *cfg_get(cfg_reader *r, const char *key)
{
    json_t *v = json_object_get(r->o, key);
    return json_is_null(v) ? NULL : v;
}

static size_t cfg_size(cfg_reader *r, const char *key, size_t dflt, int required)
{
    if (r->rc) return dflt;
    json_t *v = cfg_get(r, key);
    if (!v) {
        if (required) r->rc = llm_errf(r->err, "%s: \"%s\" is missing", r->path, key);
        return dflt;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        r->rc = llm_errf(r->err, "%s: \"%s\" must be a positive integer", r->path, key);
        return dflt;
    }
    return (size_t)json_integer_value(v);
}

static double cfg_num(cfg_reader *r, const char *key, double dflt)
{
    if (r->rc) return dflt;
    json_t *v = cfg_get(r, key);
    if (!v) return dflt;
    if (!json_is_number(v)) r->rc = llm_errf(r->err, "%s: \"%s\" must be a number", r->path, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static int cfg_bool(cfg_reader *r, const char *key, int dflt)
{
    if (r->rc) return dflt;
    json_t *v = cfg_get(r, key);
    if (!v) return dflt;
    if (!json_is_boolean(v)) r->rc = llm_errf(r->err, "%s: \"%s\" must be true or false", r->path, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static const char *cfg_str(cfg_reader *r, const char *key, const char *dflt)
{
    if (r->rc) return dflt;
    json_t *v = cfg_get(r, key);
    if (!v) return dflt;
    if (!json_is_string(v)) r->rc = llm_errf(r->err, "%s: \"%s\" must be a string", r->path, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static void refuse(cfg_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(cfg_reader *r, const char *fmt, ...)
{
    if (r->rc) return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->rc = llm_errf(r->err, "%s: %s: llmux does not implement it", r->path, msg);
}

typedef enum { HF_GPT2, HF_LLAMA, HF_MISTRAL, HF_QWEN2 } hf_family;

static const struct { const char *arch, *type; hf_family f; } families[] = {
    {"GPT2LMHeadModel", "gpt2", HF_GPT2},
    {"LlamaForCausalLM", "llama", HF_LLAMA},
    {"MistralForCausalLM", "mistral", HF_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", HF_QWEN2},
};

/* The rope: rope_theta (top level, or in transformers 5's rope_parameters);
 * rope_scaling or a rope_type other than "default" is refused. */
static float read_rope(cfg_reader *r)
{
    double theta = cfg_num(r, "rope_theta", 10000.0);
    json_t *params = cfg_get(r, "rope_parameters"), *scaling = cfg_get(r, "rope_scaling");
    json_t *which[2] = {scaling, params};
    for (int i = 0; i < 2 && !r->rc; i++) {
        json_t *p = which[i];
        if (!p) continue;
        const char *key = i ? "rope_parameters" : "rope_scaling";
        if (!json_is_object(p)) {
            refuse(r, "a %s that is not an object", key);
            break;
        }
        json_t *t = json_object_get(p, "rope_type");
        if (!t) t = json_object_get(p, "type");
        const char *type = json_string_value(t);
        if (t && !type) r->rc = llm_errf(r->err, "%s: %s's rope_type must be a string", r->path, key);
        else if (type ? strcmp(type, "default") : i == 0)
            refuse(r, "%s of type '%s'", key, type ? type : "(none)");
        json_t *pf = json_object_get(p, "partial_rotary_factor");
        if (!r->rc && pf && (!json_is_number(pf) || json_number_value(pf) != 1.0))
            refuse(r, "%s", "a partial_rotary_factor (rotary embedding on part of each head)");
        json_t *th = json_object_get(p, "rope_theta");
        if (!r->rc && th) {
            if (!json_is_number(th)) r->rc = llm_errf(r->err, "%s: %s's rope_theta must be a number", r->path, key);
            else theta = json_number_value(th);
        }
    }
    json_t *pf = cfg_get(r, "partial_rotary_factor");
    if (!r->rc && pf && (!json_is_number(pf) || json_number_value(pf) != 1.0))
        refuse(r, "%s", "a partial_rotary_factor (rotary embedding on part of each head)");
    return (float)theta;
}

static int read_config(const char *dir, llm_config *c, hf_family *fam, llm_err *err)
{
    memset(c, 0, sizeof *c);
    char *text = NULL;
    if (read_text(dir, "config.json", &text, err)) return -1;
    if (!text) return llm_errf(err, "%s/config.json: %s", dir, strerror(ENOENT));
    json_t *o = parse_json(text, dir, "config.json", err);
    free(text);
    if (!o) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cfg_reader R = {o, path, err, 0}, *r = &R;
    /* which model */
    json_t *archs = cfg_get(r, "architectures");
    const char *arch = json_string_value(json_array_get(archs, 0));
    const char *type = cfg_str(r, "model_type", NULL);
    int found = -1;
    for (int i = 0; i < 4 && found < 0; i++)
        if (arch ? !strcmp(arch, families[i].arch) : type && !strcmp(type, families[i].type)) found = i;
    if (!r->rc && found < 0) {
        if (arch)
            r->rc = llm_errf(err, "%s: architecture '%s' is not one llm-convert reads (GPT2LMHeadModel, LlamaForCausalLM, "
                                  "MistralForCausalLM, Qwen2ForCausalLM)", path, arch);
        else if (type)
            r->rc = llm_errf(err, "%s: model_type '%s' is not one llm-convert reads (gpt2, llama, mistral, qwen2)", path, type);
        else r->rc = llm_errf(err, "%s: no \"architectures\" or \"model_type\": which model is it?", path);
    }
    if (!r->rc && cfg_get(r, "quantization_config")) refuse(r, "%s", "a quantization_config (a quantized checkpoint)");
    if (r->rc) {
        json_decref(o);
        return -1;
    }
    *fam = families[found].f;
    c->vocab_size = cfg_size(r, "vocab_size", 0, 1);
    if (*fam == HF_GPT2) {
        c->arch = LLM_ARCH_GPT2;
        c->dim = cfg_size(r, "n_embd", 0, 1);
        c->n_layers = cfg_size(r, "n_layer", 0, 1);
        c->n_heads = c->n_kv_heads = cfg_size(r, "n_head", 0, 1);
        c->ctx_len = cfg_size(r, "n_positions", 1024, 0);
        c->ffn_dim = cfg_size(r, "n_inner", 4 * c->dim, 0);
        c->norm_eps = (float)cfg_num(r, "layer_norm_epsilon", 1e-5);
        c->tied_embeddings = 1;
        c->qkv_bias = 1;
        const char *act = cfg_str(r, "activation_function", "gelu_new");
        if (!r->rc && strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh"))
            refuse(r, "activation_function '%s' (GPT-2's is gelu_new, tanh-approximated)", act);
        if (!cfg_bool(r, "tie_word_embeddings", 1)) refuse(r, "%s", "tie_word_embeddings false in a GPT-2");
        if (!cfg_bool(r, "scale_attn_weights", 1)) refuse(r, "%s", "scale_attn_weights false");
        if (cfg_bool(r, "scale_attn_by_inverse_layer_idx", 0)) refuse(r, "%s", "scale_attn_by_inverse_layer_idx true");
        if (cfg_bool(r, "add_cross_attention", 0)) refuse(r, "%s", "add_cross_attention true");
    } else {
        c->arch = LLM_ARCH_LLAMA;
        c->dim = cfg_size(r, "hidden_size", 0, 1);
        c->ffn_dim = cfg_size(r, "intermediate_size", 0, 1);
        c->n_layers = cfg_size(r, "num_hidden_layers", 0, 1);
        c->n_heads = cfg_size(r, "num_attention_heads", 0, 1);
        c->n_kv_heads = cfg_size(r, "num_key_value_heads", c->n_heads, 0);
        static const size_t default_ctx[] = {0, 2048, 131072, 32768};
        c->ctx_len = cfg_size(r, "max_position_embeddings", default_ctx[*fam], 0);
        c->norm_eps = (float)cfg_num(r, "rms_norm_eps", 1e-6);
        c->rope_theta = read_rope(r);
        c->tied_embeddings = cfg_bool(r, "tie_word_embeddings", 0);
        const char *act = cfg_str(r, "hidden_act", "silu");
        if (!r->rc && strcmp(act, "silu")) refuse(r, "hidden_act '%s' (llmux's SwiGLU is silu)", act);
        size_t head_dim = cfg_size(r, "head_dim", 0, 0);
        if (!r->rc && head_dim && c->n_heads && head_dim * c->n_heads != c->dim)
            refuse(r, "head_dim %zu, not hidden_size / num_attention_heads (%zu)", head_dim, c->dim / c->n_heads);
        if (cfg_bool(r, "mlp_bias", 0)) refuse(r, "%s", "mlp_bias true");
        if (*fam == HF_QWEN2) {
            c->qkv_bias = 1;   /* Qwen2's attention always has q, k and v biases */
            if (cfg_bool(r, "use_sliding_window", 0)) refuse(r, "%s", "use_sliding_window true (sliding-window attention)");
        } else if (cfg_bool(r, "attention_bias", 0)) {
            refuse(r, "%s", "attention_bias true (a bias on o_proj as well as q, k and v)");
        }
        json_t *lt = cfg_get(r, "layer_types"), *x;
        size_t i;
        json_array_foreach(lt, i, x) {
            const char *s = json_string_value(x);
            if (!r->rc && s && strcmp(s, "full_attention")) refuse(r, "layer_types '%.40s' (layer %zu)", s, i);
        }
        if (*fam == HF_MISTRAL) {
            size_t win = cfg_size(r, "sliding_window", 0, 0);
            if (!r->rc && win && win < c->ctx_len)
                refuse(r, "sliding_window %zu, smaller than max_position_embeddings %zu", win, c->ctx_len);
        }
    }
    json_decref(o);
    if (r->rc) return -1;
    if (llm_config_check(c, err)) return llm_err_prefix(err, "%s", path);
    return 0;
}

/* GPT-2's Conv1D weight, or one of q, k, v in c_attn: ours[r][c] is
 * src[c][off + r] (arg[0]: src's row length, arg[1]: off). */
static int fill_transpose(const llm_cv_tensor *t, void *out, llm_err *err)
{
    (void)err;
    const llm_st_tensor *s = t->src;
    const unsigned char *src = s->data;
    unsigned char *o = out;
    uint64_t rows = t->shape[0], cols = t->shape[1], stride = t->arg[0], off = t->arg[1];
    size_t es = llm_dtype_size(t->dtype);
    enum { BLK = 64 };
    for (uint64_t r0 = 0; r0 < rows; r0 += BLK)
        for (uint64_t c0 = 0; c0 < cols; c0 += BLK) {
            uint64_t r1 = r0 + BLK < rows ? r0 + BLK : rows, c1 = c0 + BLK < cols ? c0 + BLK : cols;
            for (uint64_t c = c0; c < c1; c++)
                for (uint64_t r = r0; r < r1; r++) {
                    const unsigned char *from = src + (c * stride + off + r) * es;
                    unsigned char *to = o + (r * cols + c) * es;
                    if (es == 4) memcpy(to, from, 4);
                    else memcpy(to, from, 2);
                }
        }
    return 0;
}

static int is_buffer(hf_family fam, const char *name, int tied)
{
    size_t n = strlen(name);
#define ENDS(s) (n >= sizeof(s) - 1 && !strcmp(name + n - (sizeof(s) - 1), s))
    if (fam == HF_GPT2 && (ENDS(".attn.bias") || ENDS(".attn.masked_bias"))) return 1;
    if (fam != HF_GPT2 && ENDS(".rotary_emb.inv_freq")) return 1;
    if (tied && !strcmp(name, "lm_head.weight")) return 1;   /* transformers ties it to the embeddings */
#undef ENDS
    return 0;
}

/* The metadata files. */
static int read_meta(const char *dir, llm_cv_model *m, llm_err *err)
{
    if (read_text(dir, "tokenizer.json", &m->tokenizer, err)) return -1;
    if (read_text(dir, "tokenizer_config.json", &m->tokenizer_config, err)) return -1;
    if (read_text(dir, "generation_config.json", &m->generation_config, err)) return -1;
    char *jinja = NULL;
    if (read_text(dir, "chat_template.jinja", &jinja, err)) return -1;
    int rc = 0;
    if (m->tokenizer_config) {
        json_t *tc = parse_json(m->tokenizer_config, dir, "tokenizer_config.json", err);
        if (!tc) rc = -1;
        json_t *ct = tc ? json_object_get(tc, "chat_template") : NULL;
        const char *tpl = json_string_value(ct);
        if (!tpl && json_is_array(ct)) {   /* named templates: the default one */
            json_t *x;
            size_t i;
            json_array_foreach(ct, i, x) {
                const char *name = json_string_value(json_object_get(x, "name"));
                if (name && !strcmp(name, "default")) tpl = json_string_value(json_object_get(x, "template"));
            }
        }
        if (!jinja && tpl && !(m->chat_template = strdup(tpl))) rc = llm_errf(err, "out of memory");
        json_decref(tc);
    }
    if (jinja) m->chat_template = jinja;
    /* a template we write for one of our formats reads back as its name */
    for (size_t i = 0; !rc && m->chat_template && i < sizeof chat_jinja / sizeof chat_jinja[0]; i++)
        if (!strcmp(m->chat_template, chat_jinja[i][1])) {
            free(m->chat_template);
            if (!(m->chat_template = strdup(chat_jinja[i][0]))) rc = llm_errf(err, "out of memory");
        }
    /* what the writer derives (for transformers' sake) is not kept */
    if (!rc && m->tokenizer_config) {
        json_t *tc = json_loads(m->tokenizer_config, 0, NULL), *d = derived_tok_config(m);
        if (json_equal(tc, d)) free(m->tokenizer_config), m->tokenizer_config = NULL;
        json_decref(tc);
        json_decref(d);
    }
    if (!rc && m->generation_config) {
        json_error_t je;
        json_t *gc = json_loads(m->generation_config, 0, &je), *d = derived_gen_config(m);
        if (!gc) rc = llm_errf(err, "%s/generation_config.json: line %d: %s", dir, je.line, je.text);
        else if (json_equal(gc, d)) free(m->generation_config), m->generation_config = NULL;
        json_decref(gc);
        json_decref(d);
    }
    return rc;
}

int llm_cv_read_hf(const char *dir, llm_cv_model *m, llm_err *err)
{
    memset(m, 0, sizeof *m);
    hf_owner *o = calloc(1, sizeof *o);
    if (!o) return llm_errf(err, "out of memory");
    m->owner = o;
    m->release = release_hf;
    hf_family fam = HF_GPT2;
    if (read_config(dir, &m->c, &fam, err) || open_weights(o, dir, err)) {
        llm_cv_model_free(m);
        return -1;
    }
    const llm_config *c = &m->c;
    const char *prefix = "transformer.";
    if (fam == HF_GPT2 && !find_entry(o, "transformer.wte.weight") && find_entry(o, "wte.weight")) prefix = "";
    size_t n, total;
    llm_param *p = llm_params_layout(c, &n, &total);
    m->t = calloc(n + 1, sizeof *m->t);
    int rc = !p || !m->t ? llm_errf(err, "out of memory") : 0;
    char index_path[4096];
    snprintf(index_path, sizeof index_path, "%s/%s", dir, o->sharded ? "model.safetensors.index.json" : "model.safetensors");
    for (size_t i = 0; i < n && !rc; i++) {
        hf_link L;
        int j;
        if (link_of(c, prefix, &p[i], &L, &j)) {
            rc = llm_errf(err, "%s: no Hugging Face name for tensor '%s'", dir, p[i].name);
            break;
        }
        hf_entry *e = find_entry(o, L.hf);
        if (!e) {
            rc = llm_errf(err, "%s: tensor '%s' is missing", index_path, L.hf);
            break;
        }
        e->used = 1;
        const llm_st_tensor *s = e->t;
        if (s->ndim != L.ndim || s->shape[0] != L.shape[0] || (L.ndim == 2 && s->shape[1] != L.shape[1])) {
            char got[96], want[96];
            shape_str(got, sizeof got, s->ndim, s->shape);
            shape_str(want, sizeof want, L.ndim, L.shape);
            rc = llm_errf(err, "%s: tensor '%s' has shape %s, config.json says %s", e->file, L.hf, got, want);
            break;
        }
        if (s->dtype != LLM_F32 && s->dtype != LLM_F16 && s->dtype != LLM_BF16) {
            rc = llm_errf(err, "%s: tensor '%s' is %s; llm-convert reads F32, F16 and BF16 weights", e->file, L.hf,
                          llm_dtype_name(s->dtype));
            break;
        }
        llm_cv_tensor *t = &m->t[m->n++];
        snprintf(t->name, sizeof t->name, "%s", p[i].name);
        t->dtype = s->dtype;
        t->ndim = p[i].ndim;
        t->shape[0] = p[i].shape[0];
        t->shape[1] = p[i].ndim == 2 ? p[i].shape[1] : 0;
        size_t es = llm_dtype_size(s->dtype);
        t->nbytes = llm_cv_nelem(t) * es;
        if (L.transpose) {
            t->fill = fill_transpose;
            t->src = s;
            t->arg[0] = s->shape[1];
            t->arg[1] = (uint64_t)j * L.part;
        } else {
            t->data = (const unsigned char *)s->data + (uint64_t)j * L.part * es;   /* c_attn's bias: a slice */
        }
    }
    free(p);
    for (size_t i = 0; i < o->ne && !rc; i++)
        if (!o->e[i].used && !is_buffer(fam, o->e[i].name, c->tied_embeddings))
            rc = llm_errf(err, "%s: tensor '%s' is not part of the model config.json describes", o->e[i].file,
                          o->e[i].name);
    if (!rc) rc = read_meta(dir, m, err);
    if (!rc) rc = llm_cv_check(m, dir, err);
    if (rc) llm_cv_model_free(m);
    return rc;
}

/* ---- writing ---- */

typedef struct {
    hf_link L;
    const llm_cv_tensor *src[3];
    llm_dtype to;
    void *buf;
    size_t cap;
} out_job;

static uint64_t link_nelem(const hf_link *L) { return L->shape[0] * (L->ndim == 2 ? L->shape[1] : 1); }

/* transformers' tensor from ours: converted, transposed, fused. */
static int fill_out(void *ctx, void *out, uint64_t nbytes, llm_err *err)
{
    out_job *j = ctx;
    const llm_cv_tensor *s0 = j->src[0];
    if (j->L.n == 1 && !j->L.transpose && !s0->quant && s0->dtype == j->to) {
        if (s0->fill) return s0->fill(s0, out, err);
        memcpy(out, s0->data, nbytes);
        return 0;
    }
    uint64_t n = link_nelem(&j->L);
    float *f = malloc(n * sizeof *f + 4), *tmp = NULL;
    int rc = f ? 0 : llm_errf(err, "out of memory");
    if (!rc && j->L.n == 1 && !j->L.transpose) rc = llm_cv_floats(s0, f, &j->buf, &j->cap, err);
    for (int k = 0; !rc && k < j->L.n && (j->L.n > 1 || j->L.transpose); k++) {
        const llm_cv_tensor *s = j->src[k];
        uint64_t ns = llm_cv_nelem(s);
        free(tmp);
        if (!(tmp = malloc(ns * sizeof *tmp + 4))) {
            rc = llm_errf(err, "out of memory");
            break;
        }
        if ((rc = llm_cv_floats(s, tmp, &j->buf, &j->cap, err))) break;
        if (!j->L.transpose) {   /* c_attn's bias: q, k, v back to back */
            memcpy(f + (uint64_t)k * ns, tmp, ns * sizeof *tmp);
            continue;
        }
        /* ours (rows, cols) into columns [k part, k part + rows) of (cols, width) */
        uint64_t rows = s->shape[0], cols = s->shape[1], width = j->L.shape[1], off = (uint64_t)k * j->L.part;
        enum { BLK = 64 };
        for (uint64_t r0 = 0; r0 < rows; r0 += BLK)
            for (uint64_t c0 = 0; c0 < cols; c0 += BLK) {
                uint64_t r1 = r0 + BLK < rows ? r0 + BLK : rows, c1 = c0 + BLK < cols ? c0 + BLK : cols;
                for (uint64_t r = r0; r < r1; r++)
                    for (uint64_t c = c0; c < c1; c++) f[c * width + off + r] = tmp[r * cols + c];
            }
    }
    if (!rc) {
        if (j->to == LLM_F32) memcpy(out, f, nbytes);
        else if (j->to == LLM_F16) llmk_f32_to_f16(out, f, n);
        else llmk_f32_to_bf16(out, f, n);
    }
    free(tmp);
    free(f);
    return rc;
}

/* The shortest decimal that reads back as the same float: 1e-05, not
 * 9.99999975e-06. */
static json_t *json_float(float v)
{
    char b[48];
    for (int p = 1; p <= 9; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)v);
        if ((float)strtod(b, NULL) == v) return json_real(strtod(b, NULL));
    }
    return json_real((double)v);
}

static const char *torch_dtype(llm_dtype t) { return t == LLM_F32 ? "float32" : t == LLM_F16 ? "float16" : "bfloat16"; }

static json_t *hf_config(const llm_cv_model *m, llm_dtype dt)
{
    const llm_config *c = &m->c;
    specials s;
    find_specials(m->tokenizer, &s);
    json_t *o = json_object();
#define SET(k, v) json_object_set_new(o, k, v)
#define INT(v) json_integer((json_int_t)(v))
    if (c->arch == LLM_ARCH_GPT2) {
        SET("architectures", json_pack("[s]", "GPT2LMHeadModel"));
        SET("model_type", json_string("gpt2"));
        SET("vocab_size", INT(c->vocab_size));
        SET("n_positions", INT(c->ctx_len));
        SET("n_embd", INT(c->dim));
        SET("n_layer", INT(c->n_layers));
        SET("n_head", INT(c->n_heads));
        SET("n_inner", INT(c->ffn_dim));
        SET("activation_function", json_string("gelu_new"));
        SET("layer_norm_epsilon", json_float(c->norm_eps));
        /* trained without dropout */
        SET("resid_pdrop", json_real(0));
        SET("embd_pdrop", json_real(0));
        SET("attn_pdrop", json_real(0));
        SET("initializer_range", json_real(0.02));
        SET("scale_attn_weights", json_true());
        SET("scale_attn_by_inverse_layer_idx", json_false());
        SET("reorder_and_upcast_attn", json_false());
        SET("add_cross_attention", json_false());
    } else {
        int qwen2 = c->qkv_bias;
        SET("architectures", json_pack("[s]", qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
        SET("model_type", json_string(qwen2 ? "qwen2" : "llama"));
        SET("vocab_size", INT(c->vocab_size));
        SET("hidden_size", INT(c->dim));
        SET("intermediate_size", INT(c->ffn_dim));
        SET("num_hidden_layers", INT(c->n_layers));
        SET("num_attention_heads", INT(c->n_heads));
        SET("num_key_value_heads", INT(c->n_kv_heads));
        SET("head_dim", INT(llm_config_head_dim(c)));
        SET("hidden_act", json_string("silu"));
        SET("max_position_embeddings", INT(c->ctx_len));
        SET("rms_norm_eps", json_float(c->norm_eps));
        /* rope_theta for transformers 4, rope_parameters for 5 */
        SET("rope_theta", json_float(c->rope_theta));
        SET("rope_parameters", json_pack("{s:s,s:o}", "rope_type", "default", "rope_theta", json_float(c->rope_theta)));
        SET("attention_dropout", json_real(0));
        SET("initializer_range", json_real(0.02));
        if (qwen2) {
            SET("use_sliding_window", json_false());
            SET("sliding_window", json_null());
            SET("max_window_layers", INT(c->n_layers));
        } else {
            SET("attention_bias", json_false());
            SET("mlp_bias", json_false());
        }
    }
    SET("tie_word_embeddings", json_boolean(c->tied_embeddings));
    SET("bos_token_id", s.bos ? json_integer(s.bos_id) : json_null());
    SET("eos_token_id", s.eos ? json_integer(s.eos_id) : json_null());
    SET("torch_dtype", json_string(torch_dtype(dt)));
    SET("use_cache", json_true());
#undef SET
#undef INT
    json_decref(s.tok);
    return o;
}

static int write_text(const char *dir, const char *name, const char *text, llm_err *err)
{
    char *path = join(dir, name);
    if (!path) return llm_errf(err, "out of memory");
    llm_atomic a;
    int rc = llm_atomic_open(&a, path, err);
    if (!rc && llm_write_all(a.fd, text, strlen(text), path, err)) {
        llm_atomic_abort(&a);
        rc = -1;
    } else if (!rc) {
        rc = llm_atomic_commit(&a, err);
    }
    free(path);
    return rc;
}

static int write_json(const char *dir, const char *name, json_t *j, llm_err *err)
{
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    char *t = s ? malloc(strlen(s) + 2) : NULL;
    int rc = t ? 0 : llm_errf(err, "out of memory");
    if (!rc) {
        strcpy(t, s);
        strcat(t, "\n");
        rc = write_text(dir, name, t, err);
    }
    free(s);
    free(t);
    return rc;
}

static int write_weights(const llm_cv_model *m, const char *dir, llm_dtype to, llm_err *err)
{
    size_t n, total;
    llm_param *p = llm_params_layout(&m->c, &n, &total);
    out_job *jobs = calloc(n + 1, sizeof *jobs);
    llm_st_writer *w = llm_st_writer_new();
    char *path = join(dir, "model.safetensors");
    int rc = !p || !jobs || !w || !path ? llm_errf(err, "out of memory") : 0;
    if (!rc) rc = llm_st_writer_meta(w, "format", "pt", err);   /* transformers' loader wants it */
    for (size_t i = 0; i < n && !rc; i++) {
        out_job *j = &jobs[i];
        int k;
        if (link_of(&m->c, "transformer.", &p[i], &j->L, &k)) {
            rc = llm_errf(err, "tensor '%s' has no Hugging Face name", p[i].name);
            break;
        }
        if (k) continue;   /* c_attn: written with q */
        for (int x = 0; x < j->L.n && !rc; x++)
            if (!(j->src[x] = llm_cv_find(m, j->L.ours[x]))) rc = llm_errf(err, "tensor '%s' is missing", j->L.ours[x]);
        if (rc) break;
        j->to = to;
        const llm_cv_tensor *s = j->src[0];
        uint64_t nbytes = link_nelem(&j->L) * llm_dtype_size(to);
        if (j->L.n == 1 && !j->L.transpose && !s->quant && s->dtype == to && s->data)
            rc = llm_st_writer_add(w, j->L.hf, to, j->L.ndim, j->L.shape, s->data, s->nbytes, err);
        else
            rc = llm_st_writer_add_fill(w, j->L.hf, to, j->L.ndim, j->L.shape, nbytes, fill_out, j, err);
    }
    if (!rc) rc = llm_st_writer_write(w, path, err);
    for (size_t i = 0; jobs && i < n; i++) free(jobs[i].buf);
    free(jobs);
    free(p);
    free(path);
    llm_st_writer_free(w);
    return rc;
}

static int write_tokenizer_config(const llm_cv_model *m, const char *dir, llm_err *err)
{
    if (!m->tokenizer_config) {
        json_t *d = derived_tok_config(m);
        int rc = write_json(dir, "tokenizer_config.json", d, err);
        json_decref(d);
        return rc;
    }
    json_t *tc = json_loads(m->tokenizer_config, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(tc)) {
        json_decref(tc);
        return llm_errf(err, "the model's tokenizer_config is not a JSON object");
    }
    int changed = 0;
    if (!json_object_get(tc, "tokenizer_class")) {
        json_object_set_new(tc, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
        changed = 1;
    }
    if (m->chat_template && !json_object_get(tc, "chat_template")) {
        json_object_set_new(tc, "chat_template", json_string(jinja_of(m->chat_template)));
        changed = 1;
    }
    int rc = changed ? write_json(dir, "tokenizer_config.json", tc, err)
                     : write_text(dir, "tokenizer_config.json", m->tokenizer_config, err);
    json_decref(tc);
    return rc;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = join(dir, e->d_name);
        if (p) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

int llm_cv_write_hf(const llm_cv_model *m, const char *out_dir, const llm_cv_options *o, llm_err *err)
{
    size_t len = strlen(out_dir);
    while (len > 1 && out_dir[len - 1] == '/') len--;
    char *out = strndup(out_dir, len), *parent = NULL, *tmp = NULL;
    if (!out) return llm_errf(err, "out of memory");
    struct stat st;
    int rc = 0;
    if (!lstat(out, &st)) rc = llm_errf(err, "%s already exists: llm-convert writes a new directory, never over one", out);
    /* the temp directory beside it, on the same file system */
    const char *slash = strrchr(out, '/'), *base = slash ? slash + 1 : out;
    if (!rc && !(parent = slash ? (slash == out ? strdup("/") : strndup(out, (size_t)(slash - out))) : strdup(".")))
        rc = llm_errf(err, "out of memory");
    if (!rc && !(tmp = malloc(strlen(parent) + strlen(base) + 16))) rc = llm_errf(err, "out of memory");
    if (!rc) {
        sprintf(tmp, "%s/.%s.tmp.XXXXXX", parent, base);
        if (!mkdtemp(tmp)) {
            rc = llm_errf(err, "%s: cannot make a directory there: %s", parent, strerror(errno));
            free(tmp);
            tmp = NULL;
        } else {
            mode_t um = umask(0);
            umask(um);
            chmod(tmp, 0777 & ~um);
        }
    }
    /* one dtype for the whole model (config.json's torch_dtype) */
    llm_dtype to = LLM_F32;
    int quant = 0, mixed = 0, have = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->t[i].quant) quant = 1;
        else if (!have) to = m->t[i].dtype, have = 1;
        else if (m->t[i].dtype != to) mixed = 1;
    }
    if (o && o->dtype_set) to = o->dtype;
    else if (quant || mixed) to = LLM_F32;
    if (!rc && quant)
        llm_warning("%s: quantized tensors are dequantized to %s (transformers has no llmux block types)", out,
                    to == LLM_F32 ? "f32" : to == LLM_F16 ? "f16" : "bf16");
    if (!rc) rc = write_weights(m, tmp, to, err);
    if (!rc) {
        json_t *cfg = hf_config(m, to);
        rc = write_json(tmp, "config.json", cfg, err);
        json_decref(cfg);
    }
    if (!rc && m->tokenizer) rc = write_text(tmp, "tokenizer.json", m->tokenizer, err);
    if (!rc && m->tokenizer) rc = write_tokenizer_config(m, tmp, err);
    if (!rc && !m->tokenizer) llm_warning("%s: the model has no tokenizer: no tokenizer.json written", out);
    if (!rc) {
        json_t *g = NULL;
        if (m->generation_config) rc = write_text(tmp, "generation_config.json", m->generation_config, err);
        else rc = write_json(tmp, "generation_config.json", g = derived_gen_config(m), err);
        json_decref(g);
    }
    if (!rc && renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_NOREPLACE)) {
        int e = errno;
        if (e == EINVAL || e == ENOSYS) {   /* a file system without RENAME_NOREPLACE */
            if (!lstat(out, &st)) e = EEXIST;
            else if (!rename(tmp, out)) e = 0;
            else e = errno;
        }
        if (e == EEXIST || e == ENOTEMPTY)
            rc = llm_errf(err, "%s already exists: llm-convert writes a new directory, never over one", out);
        else if (e) rc = llm_errf(err, "%s: cannot rename %s into place: %s", out, tmp, strerror(e));
    }
    if (rc && tmp) remove_tree(tmp);
    free(tmp);
    free(parent);
    free(out);
    return rc;
}
