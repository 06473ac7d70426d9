/* train.h — training steps on the CPU: batches in, AdamW updates out.
 *
 * One optimizer step: `accum` micro-batches of B sequences of T + 1 tokens
 * (lib/batch.h) are run forward and backward, their gradients summed, the
 * loss being the mean over every trained target of the step (a target is
 * trained when its mask byte is 1); then the gradients' global norm, clipped
 * to `clip` as torch.nn.utils.clip_grad_norm_ does (coefficient
 * clip / (norm + 1e-6) when below 1); then AdamW as torch.optim.AdamW
 * (decoupled weight decay on matrices and embeddings only), at the learning
 * rate of the schedule for this step.
 *
 * Schedule (step s counts from 0): linear warmup lr * (s + 1) / warmup for
 * s < warmup, then from lr down to min_lr over the steps up to total_steps:
 * cosine, linear, or constant (lr throughout). Steps past total_steps stay at
 * min_lr.
 *
 * Everything a step depends on is in the checkpoint's "training" metadata
 * (this state, as JSON) and in the optimizer moments, so a run resumed from a
 * checkpoint takes the same steps as one that never stopped. */
#ifndef LLMUX_TRAIN_H
#define LLMUX_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "err.h"
#include "model.h"
#include "model_file.h"

typedef enum { LLM_SCHED_COSINE = 0, LLM_SCHED_LINEAR, LLM_SCHED_CONSTANT } llm_schedule_kind;

typedef struct {
    llm_schedule_kind kind;
    double lr, min_lr;
    uint64_t warmup, total_steps;
} llm_schedule;

typedef struct {
    llm_schedule sched;
    double beta1, beta2, eps, weight_decay, clip;   /* clip 0: none */
    size_t batch, seq, accum;
    uint64_t seed;                                  /* data order (and initialisation) */
    /* where training is */
    uint64_t step, tokens;                          /* steps taken, target tokens trained on */
    char cursor[256];                               /* the data cursor, as llm_cursor_save writes it */
} llm_train_state;

void llm_train_state_defaults(llm_train_state *s);
double llm_schedule_lr(const llm_schedule *s, uint64_t step);
const char *llm_schedule_name(llm_schedule_kind k);
int llm_schedule_parse(const char *name, llm_schedule_kind *k);
/* The "training" metadata: malloc'd JSON, and back (fields absent in the
 * JSON keep their values in s). */
char *llm_train_state_to_json(const llm_train_state *s);
int llm_train_state_from_json(llm_train_state *s, const char *json, llm_err *err);

typedef struct {
    double loss;          /* mean over the step's trained targets */
    double grad_norm;     /* before clipping */
    double lr;
    uint64_t tokens;      /* trained targets in this step */
} llm_step_result;

typedef struct llm_trainer llm_trainer;
/* The trainer works on f (parameters and moments, which it adds when f has
 * none) with the state s; both stay the caller's. */
int llm_trainer_new(llm_trainer **out, llm_model_file *f, llm_train_state *s, llm_err *err);
void llm_trainer_free(llm_trainer *t);
/* One optimizer step on the next batches of data; updates s->step, tokens
 * and cursor. Returns 0; LLM_TRAIN_DIVERGED when the loss or the gradients
 * are not finite (nothing is updated: the parameters and moments are the
 * last good state); or -1 on another error: in the data, or an update that
 * made the parameters not finite (they are then lost: keeping a copy to
 * undo it would cost three times the parameters' memory). */
#define LLM_TRAIN_DIVERGED (-2)
int llm_trainer_step(llm_trainer *t, llm_batcher *data, llm_step_result *r, llm_err *err);
/* The first half of a step: the gradients of the next batches (loss, norm
 * and learning rate in r), without an update; the same return values. */
int llm_trainer_gradient(llm_trainer *t, llm_batcher *data, llm_step_result *r, llm_err *err);
const float *llm_trainer_grads(const llm_trainer *t);   /* (total), the model's layout */
/* Mean loss over the trained targets of up to max_seqs sequences of a set,
 * in order (0: all), with the current parameters (no update). */
int llm_trainer_eval(llm_trainer *t, llm_seqset *set, uint64_t max_seqs, double *loss, uint64_t *targets, llm_err *err);

#endif
