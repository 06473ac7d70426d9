/* llmux-grad: the loss, logits and gradients of one batch, for the
 * conformance tier (t/conformance/test_train_torch.py compares them with
 * PyTorch autograd on transformers' models).
 *
 *   llmux-grad MODEL DATA B T OUT.safetensors
 *
 * The batch is the first B sequences of DATA in order, cut to T + 1 tokens;
 * the loss is the mean over trained targets (lib/train.c). OUT holds every
 * parameter's gradient under the parameter's name, "logits" (B*T, vocab),
 * and the loss in the metadata ("loss", printed with 17 digits). */
#include "batch.h"
#include "cli.h"
#include "model_file.h"
#include "safetensors.h"
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    if (argc != 6) llm_usage_error("usage: llmux-grad MODEL DATA B T OUT.safetensors");
    llm_err err;
    llm_model_file f;
    if (llm_model_file_read(&f, argv[1], 0, &err)) llm_die_err(&err);
    llm_batcher *data;
    if (llm_batcher_open(&data, argv[2], 0, 0, 0, 1, &err)) llm_die_err(&err);
    llm_train_state s;
    llm_train_state_defaults(&s);
    s.batch = (size_t)atoi(argv[3]);
    s.seq = (size_t)atoi(argv[4]);
    llm_trainer *t;
    if (llm_trainer_new(&t, &f, &s, &err)) llm_die_err(&err);
    llm_step_result r;
    if (llm_trainer_gradient(t, data, &r, &err)) llm_die_err(&err);
    /* the logits of the same batch, by a forward pass of their own (the
     * gradient pass turned them into their gradient) */
    llm_batcher_close(data);
    if (llm_batcher_open(&data, argv[2], 0, 0, 0, 1, &err)) llm_die_err(&err);
    size_t n = llm_batcher_seq_len(data) + 1, B = s.batch, T = s.seq;
    uint32_t *tok = malloc(B * n * sizeof *tok), *in = malloc(B * T * sizeof *in);
    if (llm_batcher_next(data, B, tok, NULL, &err)) llm_die_err(&err);
    for (size_t b = 0; b < B; b++) memcpy(in + b * T, tok + b * n, T * sizeof *in);
    llm_acts *a = llm_acts_new(&f.cfg, B, T, 0, &err);
    if (!a) llm_die_err(&err);
    llm_weights w;
    if (llm_weights_bind(&w, &f.cfg, f.w, &err)) llm_die_err(&err);
    llm_forward(&f.cfg, &w, a, in, B, T);

    llm_st_writer *out = llm_st_writer_new();
    char loss[64];
    snprintf(loss, sizeof loss, "%.17g", r.loss);
    if (llm_st_writer_meta(out, "loss", loss, &err)) llm_die_err(&err);
    const float *g = llm_trainer_grads(t);
    for (size_t i = 0; i < f.nparams; i++) {
        const llm_param *p = &f.params[i];
        uint64_t shape[2] = {p->shape[0], p->shape[1]};
        if (llm_st_writer_add(out, p->name, LLM_F32, p->ndim, shape, g + p->offset, p->size * 4, &err)) llm_die_err(&err);
    }
    uint64_t lshape[2] = {B * T, f.cfg.vocab_size};
    if (llm_st_writer_add(out, "logits", LLM_F32, 2, lshape, llm_acts_logits(a), B * T * f.cfg.vocab_size * 4, &err) ||
        llm_st_writer_write(out, argv[5], &err))
        llm_die_err(&err);
    llm_st_writer_free(out);
    llm_weights_free(&w);
    llm_acts_free(a);
    free(tok);
    free(in);
    llm_trainer_free(t);
    llm_batcher_close(data);
    llm_model_file_free(&f);
    return 0;
}
