/* llm-convert's model in flight: see cv.h. */
#include "cv.h"

#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void llm_cv_model_free(llm_cv_model *m)
{
    if (m->release) m->release(m->owner);
    free(m->tokenizer);
    free(m->tokenizer_config);
    free(m->chat_template);
    free(m->generation_config);
    free(m->t);
    memset(m, 0, sizeof *m);
}

const llm_cv_tensor *llm_cv_find(const llm_cv_model *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name)) return &m->t[i];
    return NULL;
}

uint64_t llm_cv_nelem(const llm_cv_tensor *t)
{
    uint64_t n = 1;
    for (size_t i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int grow(void **buf, size_t *cap, size_t need, llm_err *err)
{
    if (need <= *cap) return 0;
    void *b = realloc(*buf, need ? need : 1);
    if (!b) return llm_errf(err, "out of memory (%zu bytes)", need);
    *buf = b;
    *cap = need;
    return 0;
}

const void *llm_cv_bytes(const llm_cv_tensor *t, void **buf, size_t *cap, llm_err *err)
{
    if (t->data) return t->data;
    if (!t->fill) return llm_errf(err, "tensor '%s' has no bytes", t->name), NULL;
    if (grow(buf, cap, t->nbytes, err) || t->fill(t, *buf, err)) return NULL;
    return *buf;
}

int llm_cv_floats(const llm_cv_tensor *t, float *out, void **buf, size_t *cap, llm_err *err)
{
    const void *b = llm_cv_bytes(t, buf, cap, err);
    if (!b) return -1;
    uint64_t n = llm_cv_nelem(t);
    if (t->quant) {
        llmk_qtype qt;
        if (llmk_qtype_find(t->quant->name, &qt)) return llm_errf(err, "tensor '%s': unknown block type", t->name);
        llmk_dequantize(qt, out, b, n);
        return 0;
    }
    switch (t->dtype) {
    case LLM_F32: memcpy(out, b, n * 4); return 0;
    case LLM_F16:
    case LLM_BF16: {
        /* b may be unaligned and may be *buf itself: go through a copy */
        uint16_t *h = malloc(n * 2 + 2);
        if (!h) return llm_errf(err, "out of memory");
        memcpy(h, b, n * 2);
        if (t->dtype == LLM_F16) llmk_f16_to_f32(out, h, n);
        else llmk_bf16_to_f32(out, h, n);
        free(h);
        return 0;
    }
    default: return llm_errf(err, "tensor '%s' is %s, not a float type", t->name, llm_dtype_name(t->dtype));
    }
}

int llm_cv_check(const llm_cv_model *m, const char *path, llm_err *err)
{
    if (llm_config_check(&m->c, err)) return llm_err_prefix(err, "%s", path);
    size_t n, total;
    llm_param *p = llm_params_layout(&m->c, &n, &total);
    if (!p) return llm_errf(err, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const llm_cv_tensor *t = llm_cv_find(m, p[i].name);
        if (!t) {
            rc = llm_errf(err, "%s: tensor '%s' is missing", path, p[i].name);
        } else if (t->ndim != p[i].ndim || t->shape[0] != p[i].shape[0] || (t->ndim == 2 && t->shape[1] != p[i].shape[1])) {
            rc = llm_errf(err, "%s: tensor '%s' has shape [%llu%s%llu], the config says [%zu%s%zu]", path, p[i].name,
                          (unsigned long long)t->shape[0], t->ndim == 2 ? ", " : "",
                          t->ndim == 2 ? (unsigned long long)t->shape[1] : 0ull, p[i].shape[0], p[i].ndim == 2 ? ", " : "",
                          p[i].ndim == 2 ? p[i].shape[1] : 0);
        }
    }
    for (size_t i = 0; i < m->n && !rc; i++) {
        size_t k = 0;
        while (k < n && strcmp(p[k].name, m->t[i].name)) k++;
        if (k == n) rc = llm_errf(err, "%s: tensor '%s' is not part of the model its config describes", path, m->t[i].name);
    }
    free(p);
    return rc;
}

static const char *const format_names[] = {"llmux", "hf", "gguf", "onnx", "llmc"};

const char *llm_cv_format_name(llm_cv_format f) { return (unsigned)f < 5 ? format_names[f] : "?"; }

int llm_cv_format_parse(const char *name, llm_cv_format *f)
{
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, format_names[i])) return *f = (llm_cv_format)i, 0;
    return -1;
}

int llm_cv_detect(const char *path, llm_cv_format *f, llm_err *err)
{
    struct stat st;
    if (stat(path, &st)) return llm_errf(err, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        char *cfg = malloc(strlen(path) + 16);
        if (!cfg) return llm_errf(err, "out of memory");
        strcpy(cfg, path);
        strcat(cfg, "/config.json");
        int has = access(cfg, R_OK) == 0;
        free(cfg);
        if (!has) return llm_errf(err, "%s: a directory without config.json: not a Hugging Face model", path);
        return *f = LLM_CV_HF, 0;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) return llm_errf(err, "%s: %s", path, strerror(errno));
    unsigned char h[16] = {0};
    ssize_t got = read(fd, h, sizeof h);
    close(fd);
    if (got >= 4 && !memcmp(h, "GGUF", 4)) return *f = LLM_CV_GGUF, 0;
    uint32_t magic = got >= 4 ? (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24 : 0;
    if (magic == 20240326u) return *f = LLM_CV_LLMC, 0;   /* llm.c's model files */
    if (got >= 9 && h[8] == '{') return *f = LLM_CV_LLMUX, 0;   /* a safetensors header */
    return llm_errf(err, "%s: not a Hugging Face directory, GGUF, llm.c or safetensors file", path);
}
