/* The model's configuration: checks, presets, and the "config" metadata
 * JSON (llm-tensors(5)). */
#include "model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

size_t llm_config_head_dim(const llm_config *c) { return c->dim / c->n_heads; }
size_t llm_config_qkv_dim(const llm_config *c) { return (c->n_heads + 2 * c->n_kv_heads) * llm_config_head_dim(c); }

int llm_config_check(const llm_config *c, llm_err *err)
{
    if (c->arch != LLM_ARCH_GPT2 && c->arch != LLM_ARCH_LLAMA) return llm_errf(err, "config: unknown arch");
    struct { const char *name; size_t v, max; } dims[] = {
        {"n_layers", c->n_layers, 1024},     {"n_heads", c->n_heads, 4096},   {"n_kv_heads", c->n_kv_heads, 4096},
        {"dim", c->dim, 1u << 17},           {"ffn_dim", c->ffn_dim, 1u << 19}, {"vocab_size", c->vocab_size, 1u << 24},
        {"ctx_len", c->ctx_len, 1u << 20},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v < 1 || dims[i].v > dims[i].max)
            return llm_errf(err, "config: %s %zu is out of range (1 to %zu)", dims[i].name, dims[i].v, dims[i].max);
    if (c->dim % c->n_heads) return llm_errf(err, "config: dim %zu is not a multiple of n_heads %zu", c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads)
        return llm_errf(err, "config: n_heads %zu is not a multiple of n_kv_heads %zu", c->n_heads, c->n_kv_heads);
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return llm_errf(err, "config: norm_eps must be between 0 and 1");
    if (c->arch == LLM_ARCH_GPT2) {
        if (c->n_kv_heads != c->n_heads) return llm_errf(err, "config: gpt2 has n_kv_heads equal to n_heads");
        if (!c->tied_embeddings) return llm_errf(err, "config: gpt2 ties its embeddings (tied_embeddings true)");
        if (!c->qkv_bias) return llm_errf(err, "config: gpt2 has biases on q, k and v (qkv_bias true)");
    } else {
        if (llm_config_head_dim(c) % 2) return llm_errf(err, "config: the rotary embedding needs an even head dimension");
        if (!(c->rope_theta > 1 && isfinite(c->rope_theta))) return llm_errf(err, "config: rope_theta must be above 1");
    }
    double params = (double)c->vocab_size * (double)c->dim * 2 +
                    (double)c->n_layers * ((double)llm_config_qkv_dim(c) * c->dim + 3.0 * c->ffn_dim * c->dim + 2.0 * c->dim * c->dim);
    if (params > 0x1p40) return llm_errf(err, "config: about %.3g parameters is more than this program takes", params);
    return 0;
}

typedef struct {
    const char *name;
    llm_config c;
} preset;

static const preset presets[] = {
    {"gpt2-tiny", {LLM_ARCH_GPT2, 4, 4, 4, 128, 512, 50257, 256, 1e-5f, 0, 1, 1}},
    {"gpt2-small", {LLM_ARCH_GPT2, 12, 12, 12, 768, 3072, 50257, 1024, 1e-5f, 0, 1, 1}},
    {"gpt2-medium", {LLM_ARCH_GPT2, 24, 16, 16, 1024, 4096, 50257, 1024, 1e-5f, 0, 1, 1}},
    {"gpt2-large", {LLM_ARCH_GPT2, 36, 20, 20, 1280, 5120, 50257, 1024, 1e-5f, 0, 1, 1}},
    {"llama-tiny", {LLM_ARCH_LLAMA, 4, 4, 2, 128, 352, 32000, 256, 1e-5f, 10000.0f, 0, 0}},
    /* the shape of the TinyStories 110M Llama (llama2.c's stories110M) */
    {"llama-small", {LLM_ARCH_LLAMA, 12, 12, 12, 768, 2048, 32000, 1024, 1e-5f, 10000.0f, 0, 0}},
    /* the shape of Llama 3.2 1B */
    {"llama-1b", {LLM_ARCH_LLAMA, 16, 32, 8, 2048, 8192, 128256, 2048, 1e-5f, 500000.0f, 1, 0}},
};

const char *llm_config_preset_names(void)
{
    return "gpt2-tiny, gpt2-small, gpt2-medium, gpt2-large, llama-tiny, llama-small, llama-1b";
}

int llm_config_preset(llm_config *c, const char *name, llm_err *err)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, name)) {
            *c = presets[i].c;
            return 0;
        }
    return llm_errf(err, "unknown preset '%s' (there are %s)", name, llm_config_preset_names());
}

char *llm_config_to_json(const llm_config *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "arch", json_string(c->arch == LLM_ARCH_GPT2 ? "gpt2" : "llama"));
    json_object_set_new(o, "n_layers", json_integer((json_int_t)c->n_layers));
    json_object_set_new(o, "n_heads", json_integer((json_int_t)c->n_heads));
    json_object_set_new(o, "n_kv_heads", json_integer((json_int_t)c->n_kv_heads));
    json_object_set_new(o, "dim", json_integer((json_int_t)c->dim));
    json_object_set_new(o, "ffn_dim", json_integer((json_int_t)c->ffn_dim));
    json_object_set_new(o, "vocab_size", json_integer((json_int_t)c->vocab_size));
    json_object_set_new(o, "ctx_len", json_integer((json_int_t)c->ctx_len));
    json_object_set_new(o, "norm_eps", json_real(c->norm_eps));
    if (c->arch == LLM_ARCH_LLAMA) json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "tied_embeddings", json_boolean(c->tied_embeddings));
    json_object_set_new(o, "qkv_bias", json_boolean(c->qkv_bias));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    return s;
}

static int get_size(json_t *o, const char *key, size_t *v, llm_err *err)
{
    json_t *j = json_object_get(o, key);
    if (!json_is_integer(j) || json_integer_value(j) < 1)
        return llm_errf(err, "config: %s is missing or not a positive integer", key);
    *v = (size_t)json_integer_value(j);
    return 0;
}

static int get_float(json_t *o, const char *key, float *v, int required, llm_err *err)
{
    json_t *j = json_object_get(o, key);
    if (!j && !required) return 0;
    if (!json_is_number(j)) return llm_errf(err, "config: %s is missing or not a number", key);
    *v = (float)json_number_value(j);
    return 0;
}

int llm_config_from_json(llm_config *c, const char *text, llm_err *err)
{
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return llm_errf(err, "config: not a JSON object%s%s", o ? "" : ": ", o ? "" : jerr.text);
    }
    const char *arch = json_string_value(json_object_get(o, "arch"));
    int rc = 0;
    if (!arch || (strcmp(arch, "gpt2") && strcmp(arch, "llama")))
        rc = llm_errf(err, "config: arch must be \"gpt2\" or \"llama\"%s%s", arch ? ", not " : "", arch ? arch : "");
    else
        c->arch = strcmp(arch, "gpt2") ? LLM_ARCH_LLAMA : LLM_ARCH_GPT2;
    if (!rc) rc = get_size(o, "n_layers", &c->n_layers, err);
    if (!rc) rc = get_size(o, "n_heads", &c->n_heads, err);
    c->n_kv_heads = c->n_heads;
    if (!rc && json_object_get(o, "n_kv_heads")) rc = get_size(o, "n_kv_heads", &c->n_kv_heads, err);
    if (!rc) rc = get_size(o, "dim", &c->dim, err);
    if (!rc) rc = get_size(o, "ffn_dim", &c->ffn_dim, err);
    if (!rc) rc = get_size(o, "vocab_size", &c->vocab_size, err);
    if (!rc) rc = get_size(o, "ctx_len", &c->ctx_len, err);
    c->norm_eps = 1e-5f;
    if (!rc) rc = get_float(o, "norm_eps", &c->norm_eps, 0, err);
    c->rope_theta = 10000.0f;
    if (!rc && c->arch == LLM_ARCH_LLAMA) rc = get_float(o, "rope_theta", &c->rope_theta, 0, err);
    json_t *tied = json_object_get(o, "tied_embeddings"), *bias = json_object_get(o, "qkv_bias");
    if (!rc && ((tied && !json_is_boolean(tied)) || (bias && !json_is_boolean(bias))))
        rc = llm_errf(err, "config: tied_embeddings and qkv_bias are true or false");
    c->tied_embeddings = tied ? json_is_true(tied) : c->arch == LLM_ARCH_GPT2;
    c->qkv_bias = bias ? json_is_true(bias) : c->arch == LLM_ARCH_GPT2;
    json_decref(o);
    if (!rc) rc = llm_config_check(c, err);
    return rc;
}
