/* The model (lib/model.c, lib/model_file.c, lib/train.c) without PyPI:
 * the whole backward pass against finite differences of the loss for both
 * families, configuration checks and JSON, files written and read back
 * exactly, files that do not fit their configuration, and the schedule. */
#include "model.h"
#include "model_file.h"
#include "safetensors.h"
#include "train.h"
#include "unit.h"

#include <math.h>
#include <unistd.h>

static llm_config tiny(llm_arch arch)
{
    llm_config c = {arch, 2, 2, 2, 8, 16, 11, 6, 1e-5f, 10000.0f, 1, 1};
    if (arch == LLM_ARCH_LLAMA) {
        c.n_kv_heads = 1;
        c.tied_embeddings = 0;
        c.qkv_bias = 1;
    }
    return c;
}

/* mean loss of the batch; with g, the gradients added into g */
static double loss_of(const llm_config *c, float *w_base, float *g_base, const uint32_t *tok, size_t B, size_t T)
{
    llm_err err;
    llm_weights w, g;
    llm_weights_bind(&w, c, w_base, &err);
    llm_acts *a = llm_acts_new(c, B, T, g_base != NULL, &err);
    uint32_t in[64], tg[64];
    float scale[64], loss[64];
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            in[b * T + t] = tok[b * (T + 1) + t];
            tg[b * T + t] = tok[b * (T + 1) + t + 1];
            scale[b * T + t] = 1.0f / (float)(B * T);
        }
    llm_forward(c, &w, a, in, B, T);
    llm_loss(c, a, tg, g_base ? scale : NULL, loss, B, T);
    double sum = 0;
    for (size_t i = 0; i < B * T; i++) sum += loss[i];
    if (g_base) {
        llm_weights_bind(&g, c, g_base, &err);
        llm_backward(c, &w, &g, a, in, B, T);
        llm_weights_free(&g);
    }
    llm_acts_free(a);
    llm_weights_free(&w);
    return sum / (double)(B * T);
}

static void check_gradients(llm_arch arch)
{
    llm_config c = tiny(arch);
    size_t n, total;
    llm_param *p = llm_params_layout(&c, &n, &total);
    float *w = calloc(total, sizeof *w), *g = calloc(total, sizeof *g), *dir = calloc(total, sizeof *dir);
    llm_params_init(w, &c, p, n, 3);
    /* norms and biases away from 1 and 0, so their gradients are exercised */
    for (size_t i = 0; i < total; i++) w[i] += 0.05f * (float)((int)(unit_rand() % 200) - 100) / 100.0f;
    uint32_t tok[2 * 7];
    for (size_t i = 0; i < 14; i++) tok[i] = (uint32_t)(unit_rand() % c.vocab_size);
    loss_of(&c, w, g, tok, 2, 6);
    /* per tensor: the directional derivative along a random direction */
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        double analytic = 0, scale = 0;
        for (size_t i = 0; i < p[k].size; i++) {
            dir[i] = (float)((int)(unit_rand() % 2001) - 1000) / 1000.0f;
            analytic += (double)g[p[k].offset + i] * dir[i];
            scale += fabs((double)g[p[k].offset + i] * dir[i]);
        }
        /* central differences at h and h/2, combined (Richardson) so the
         * truncation error is O(h^4): float32 rounding of the loss (~1e-7)
         * over a step of 1e-2 leaves ~1e-5 of noise, the rest is exact */
        float *x = w + p[k].offset;
        float *saved = malloc(p[k].size * sizeof *saved);
        memcpy(saved, x, p[k].size * sizeof *saved);
        double d[2];
        for (int r = 0; r < 2; r++) {
            float h = r ? 5e-3f : 1e-2f;
            for (size_t i = 0; i < p[k].size; i++) x[i] = saved[i] + h * dir[i];
            double up = loss_of(&c, w, NULL, tok, 2, 6);
            for (size_t i = 0; i < p[k].size; i++) x[i] = saved[i] - h * dir[i];
            double down = loss_of(&c, w, NULL, tok, 2, 6);
            d[r] = (up - down) / (2.0 * h);
        }
        memcpy(x, saved, p[k].size * sizeof *saved);
        free(saved);
        double numeric = (4 * d[1] - d[0]) / 3;
        /* 2e-3 of the sum of the terms' sizes, plus a floor for the noise */
        if (fabs(numeric - analytic) > 2e-3 * scale + 2e-5) {
            printf("# %s %s: analytic %.8g numeric %.8g\n", arch == LLM_ARCH_GPT2 ? "gpt2" : "llama", p[k].name, analytic,
                   numeric);
            bad++;
        }
    }
    CHECK(bad == 0);
    free(w);
    free(g);
    free(dir);
    free(p);
}

TEST(gpt2_gradients_match_finite_differences) { check_gradients(LLM_ARCH_GPT2); }
TEST(llama_gradients_match_finite_differences) { check_gradients(LLM_ARCH_LLAMA); }

TEST(config_json_round_trip_and_checks)
{
    llm_err err;
    for (int a = 0; a < 2; a++) {
        llm_config c = tiny((llm_arch)a), back;
        char *j = llm_config_to_json(&c);
        CHECK(llm_config_from_json(&back, j, &err) == 0);
        CHECK(!memcmp(&c, &back, sizeof c));
        free(j);
    }
    llm_config c;
    CHECK_ERR(llm_config_from_json(&c, "{\"arch\":\"gpt3\"}", &err), err, "arch");
    CHECK_ERR(llm_config_from_json(&c, "[1]", &err), err, "not a JSON object");
    CHECK_ERR(llm_config_from_json(&c, "{\"arch\":\"llama\",\"n_layers\":1,\"n_heads\":3,\"dim\":8,\"ffn_dim\":8,"
                                       "\"vocab_size\":5,\"ctx_len\":4}", &err), err, "multiple of n_heads");
    CHECK_ERR(llm_config_from_json(&c, "{\"arch\":\"llama\",\"n_layers\":1,\"n_heads\":4,\"n_kv_heads\":3,\"dim\":8,"
                                       "\"ffn_dim\":8,\"vocab_size\":5,\"ctx_len\":4}", &err), err, "n_kv_heads");
    CHECK_ERR(llm_config_from_json(&c, "{\"arch\":\"gpt2\",\"n_layers\":0,\"n_heads\":1,\"dim\":8,\"ffn_dim\":8,"
                                       "\"vocab_size\":5,\"ctx_len\":4}", &err), err, "n_layers");
    CHECK(llm_config_preset(&c, "gpt2-small", &err) == 0 && c.dim == 768 && c.n_layers == 12);
    size_t n, total;
    llm_param *p = llm_params_layout(&c, &n, &total);
    CHECK_EQ_U64(total, 124439808);   /* GPT-2 small's parameter count (tied embeddings) */
    free(p);
    CHECK_ERR(llm_config_preset(&c, "gpt5", &err), err, "unknown preset");
}

TEST(files_round_trip_and_refuse_what_does_not_fit)
{
    llm_err err;
    llm_config c = tiny(LLM_ARCH_LLAMA);
    llm_model_file f, back;
    CHECK(llm_model_file_new(&f, &c, &err) == 0);
    llm_params_init(f.w, &c, f.params, f.nparams, 9);
    CHECK(llm_model_file_add_moments(&f, &err) == 0);
    for (size_t i = 0; i < f.total; i++) { f.m[i] = (float)i; f.v[i] = (float)(2 * i); }
    llm_set_string(&f.tokenizer, "{}", &err);
    llm_set_string(&f.training, "{\"step\":3}", &err);
    char path[] = "/tmp/test_model.XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(llm_model_file_write(&f, path, &err) == 0);
    CHECK(llm_model_file_read(&back, path, 1, &err) == 0);
    CHECK(!memcmp(f.w, back.w, f.total * 4) && back.m && !memcmp(f.m, back.m, f.total * 4) && !memcmp(f.v, back.v, f.total * 4));
    CHECK(back.training && !strcmp(back.training, "{\"step\":3}"));
    llm_model_file_free(&back);
    /* a file of another configuration's tensors: named, with its shape */
    llm_config other = c;
    other.ffn_dim = 24;
    llm_model_file o;
    llm_model_file_new(&o, &other, &err);
    memset(o.w, 0, o.total * 4);
    char *cj = llm_config_to_json(&c);
    llm_st_writer *w = llm_st_writer_new();
    llm_st_writer_meta(w, "config", cj, &err);
    for (size_t i = 0; i < o.nparams; i++) {
        uint64_t shape[2] = {o.params[i].shape[0], o.params[i].shape[1]};
        llm_st_writer_add(w, o.params[i].name, LLM_F32, o.params[i].ndim, shape, o.w + o.params[i].offset, o.params[i].size * 4, &err);
    }
    CHECK(llm_st_writer_write(w, path, &err) == 0);
    llm_st_writer_free(w);
    CHECK_ERR(llm_model_file_read(&back, path, 1, &err), err, "layers.0.ffn.gate.weight' has shape [24, 8], the config says [16, 8]");
    /* a missing tensor */
    w = llm_st_writer_new();
    llm_st_writer_meta(w, "config", cj, &err);
    uint64_t s1[1] = {8};
    llm_st_writer_add(w, "norm.weight", LLM_F32, 1, s1, f.w, 32, &err);
    llm_st_writer_write(w, path, &err);
    llm_st_writer_free(w);
    CHECK_ERR(llm_model_file_read(&back, path, 1, &err), err, "tensor 'tok_embeddings.weight' is missing");
    /* an extra tensor */
    w = llm_st_writer_new();
    llm_st_writer_meta(w, "config", cj, &err);
    for (size_t i = 0; i < f.nparams; i++) {
        uint64_t shape[2] = {f.params[i].shape[0], f.params[i].shape[1]};
        llm_st_writer_add(w, f.params[i].name, LLM_F32, f.params[i].ndim, shape, f.w + f.params[i].offset, f.params[i].size * 4, &err);
    }
    llm_st_writer_add(w, "extra.weight", LLM_F32, 1, s1, f.w, 32, &err);
    llm_st_writer_write(w, path, &err);
    llm_st_writer_free(w);
    CHECK_ERR(llm_model_file_read(&back, path, 1, &err), err, "tensor 'extra.weight' is not part of this config");
    free(cj);
    unlink(path);
    llm_model_file_free(&o);
    llm_model_file_free(&f);
}

TEST(schedule)
{
    llm_schedule s = {LLM_SCHED_COSINE, 1.0, 0.1, 10, 110};
    CHECK(fabs(llm_schedule_lr(&s, 0) - 0.1) < 1e-12);
    CHECK(fabs(llm_schedule_lr(&s, 9) - 1.0) < 1e-12);
    CHECK(fabs(llm_schedule_lr(&s, 10) - 1.0) < 1e-12);
    CHECK(fabs(llm_schedule_lr(&s, 60) - 0.55) < 1e-12);   /* half way down the cosine */
    CHECK(fabs(llm_schedule_lr(&s, 110) - 0.1) < 1e-12);
    CHECK(fabs(llm_schedule_lr(&s, 500) - 0.1) < 1e-12);
    s.kind = LLM_SCHED_LINEAR;
    CHECK(fabs(llm_schedule_lr(&s, 35) - (0.1 + 0.75 * 0.9)) < 1e-12);
    s.kind = LLM_SCHED_CONSTANT;
    CHECK(fabs(llm_schedule_lr(&s, 500) - 1.0) < 1e-12);
    llm_train_state a, b;
    llm_err err;
    llm_train_state_defaults(&a);
    a.step = 7;
    a.sched.lr = 0.1 + 0.2;   /* not exact in binary: must come back as it was */
    strcpy(a.cursor, "{\"n\":5,\"seed\":1,\"shuffle\":true,\"rank\":0,\"world\":1,\"epoch\":0,\"pos\":2}");
    char *j = llm_train_state_to_json(&a);
    llm_train_state_defaults(&b);
    CHECK(llm_train_state_from_json(&b, j, &err) == 0);
    CHECK(b.step == 7 && b.sched.lr == a.sched.lr && !strcmp(a.cursor, b.cursor));
    free(j);
}

int main(void)
{
    RUN(gpt2_gradients_match_finite_differences);
    RUN(llama_gradients_match_finite_differences);
    RUN(config_json_round_trip_and_checks);
    RUN(files_round_trip_and_refuse_what_does_not_fit);
    RUN(schedule);
    return unit_done();
}
