/* Training steps: see train.h. */
#include "train.h"
#include "llmk.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void llm_train_state_defaults(llm_train_state *s)
{
    memset(s, 0, sizeof *s);
    s->sched = (llm_schedule){LLM_SCHED_COSINE, 6e-4, 6e-5, 0, 0};
    s->beta1 = 0.9;
    s->beta2 = 0.95;
    s->eps = 1e-8;
    s->weight_decay = 0.1;
    s->clip = 1.0;
    s->batch = 4;
    s->seq = 0;   /* the data's */
    s->accum = 1;
}

static const char *sched_names[] = {"cosine", "linear", "constant"};

const char *llm_schedule_name(llm_schedule_kind k) { return sched_names[k]; }

int llm_schedule_parse(const char *name, llm_schedule_kind *k)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, sched_names[i])) { *k = (llm_schedule_kind)i; return 0; }
    return -1;
}

double llm_schedule_lr(const llm_schedule *s, uint64_t step)
{
    if (step < s->warmup) return s->lr * (double)(step + 1) / (double)s->warmup;
    if (s->kind == LLM_SCHED_CONSTANT) return s->lr;
    if (step >= s->total_steps || s->total_steps <= s->warmup) return s->min_lr;
    double frac = (double)(step - s->warmup) / (double)(s->total_steps - s->warmup);   /* 0 .. 1 */
    double f = s->kind == LLM_SCHED_COSINE ? 0.5 * (1 + cos(M_PI * frac)) : 1 - frac;
    return s->min_lr + f * (s->lr - s->min_lr);
}

char *llm_train_state_to_json(const llm_train_state *s)
{
    json_t *o = json_object(), *sch = json_object(), *opt = json_object();
    json_object_set_new(o, "step", json_integer((json_int_t)s->step));
    json_object_set_new(o, "tokens", json_integer((json_int_t)s->tokens));
    json_object_set_new(o, "seed", json_integer((json_int_t)s->seed));
    json_t *cur = json_loads(s->cursor, 0, NULL);
    json_object_set_new(o, "data", cur ? cur : json_null());
    json_object_set_new(o, "batch", json_integer((json_int_t)s->batch));
    json_object_set_new(o, "seq", json_integer((json_int_t)s->seq));
    json_object_set_new(o, "accum", json_integer((json_int_t)s->accum));
    json_object_set_new(sch, "kind", json_string(llm_schedule_name(s->sched.kind)));
    json_object_set_new(sch, "lr", json_real(s->sched.lr));
    json_object_set_new(sch, "min_lr", json_real(s->sched.min_lr));
    json_object_set_new(sch, "warmup", json_integer((json_int_t)s->sched.warmup));
    json_object_set_new(sch, "total_steps", json_integer((json_int_t)s->sched.total_steps));
    json_object_set_new(o, "schedule", sch);
    json_object_set_new(opt, "beta1", json_real(s->beta1));
    json_object_set_new(opt, "beta2", json_real(s->beta2));
    json_object_set_new(opt, "eps", json_real(s->eps));
    json_object_set_new(opt, "weight_decay", json_real(s->weight_decay));
    json_object_set_new(opt, "clip", json_real(s->clip));
    json_object_set_new(o, "optimizer", opt);
    /* 17 significant digits: doubles come back exactly */
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    return text;
}

static int get_u64(json_t *o, const char *key, uint64_t *v, llm_err *err)
{
    json_t *j = json_object_get(o, key);
    if (!j) return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0) return llm_errf(err, "training: %s is not a count", key);
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

static int get_size(json_t *o, const char *key, size_t *v, llm_err *err)
{
    uint64_t u = *v;
    if (get_u64(o, key, &u, err)) return -1;
    *v = (size_t)u;
    return 0;
}

static int get_real(json_t *o, const char *key, double *v, llm_err *err)
{
    json_t *j = json_object_get(o, key);
    if (!j) return 0;
    if (!json_is_number(j) || !isfinite(json_number_value(j))) return llm_errf(err, "training: %s is not a number", key);
    *v = json_number_value(j);
    return 0;
}

int llm_train_state_from_json(llm_train_state *s, const char *text, llm_err *err)
{
    json_error_t jerr;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return llm_errf(err, "training: not a JSON object");
    }
    json_t *sch = json_object_get(o, "schedule"), *opt = json_object_get(o, "optimizer"), *cur = json_object_get(o, "data");
    int rc = get_u64(o, "step", &s->step, err) || get_u64(o, "tokens", &s->tokens, err) || get_u64(o, "seed", &s->seed, err) ||
             get_size(o, "batch", &s->batch, err) || get_size(o, "seq", &s->seq, err) || get_size(o, "accum", &s->accum, err);
    if (!rc && json_is_object(sch)) {
        const char *kind = json_string_value(json_object_get(sch, "kind"));
        if (kind && llm_schedule_parse(kind, &s->sched.kind)) rc = llm_errf(err, "training: unknown schedule '%s'", kind);
        if (!rc) rc = get_real(sch, "lr", &s->sched.lr, err) || get_real(sch, "min_lr", &s->sched.min_lr, err) ||
                      get_u64(sch, "warmup", &s->sched.warmup, err) || get_u64(sch, "total_steps", &s->sched.total_steps, err);
    }
    if (!rc && json_is_object(opt))
        rc = get_real(opt, "beta1", &s->beta1, err) || get_real(opt, "beta2", &s->beta2, err) ||
             get_real(opt, "eps", &s->eps, err) || get_real(opt, "weight_decay", &s->weight_decay, err) ||
             get_real(opt, "clip", &s->clip, err);
    if (!rc && json_is_object(cur)) {
        char *c = json_dumps(cur, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (c && strlen(c) < sizeof s->cursor) strcpy(s->cursor, c);
        else rc = llm_errf(err, "training: the data cursor is malformed");
        free(c);
    }
    json_decref(o);
    return rc ? -1 : 0;
}

/* ---- the trainer ---- */

struct llm_trainer {
    llm_model_file *f;
    llm_train_state *s;
    llm_weights w, g;
    float *grad;                /* (total) */
    llm_acts *acts;
    size_t B, T;
    uint32_t *tokens;           /* (accum, B, T + 1) */
    uint8_t *mask;
    uint32_t *inputs, *targets; /* (B * T) */
    float *scale, *loss;        /* (B * T) */
};

int llm_trainer_new(llm_trainer **out, llm_model_file *f, llm_train_state *s, llm_err *err)
{
    *out = NULL;
    if (s->seq < 1 || s->seq > f->cfg.ctx_len)
        return llm_errf(err, "sequence length %zu is not within the model's context of %zu", s->seq, f->cfg.ctx_len);
    if (s->batch < 1 || s->accum < 1) return llm_errf(err, "batch and accumulation steps must be at least 1");
    if (llm_model_file_add_moments(f, err)) return -1;
    llm_trainer *t = calloc(1, sizeof *t);
    if (!t) return llm_errf(err, "out of memory");
    t->f = f;
    t->s = s;
    t->B = s->batch;
    t->T = s->seq;
    size_t n = t->B * (t->T + 1), bt = t->B * t->T, bytes = (f->total * sizeof(float) + 63) / 64 * 64;
    t->grad = aligned_alloc(64, bytes);
    t->tokens = malloc(s->accum * n * sizeof *t->tokens);
    t->mask = malloc(s->accum * n);
    t->inputs = malloc(bt * sizeof *t->inputs);
    t->targets = malloc(bt * sizeof *t->targets);
    t->scale = malloc(bt * sizeof *t->scale);
    t->loss = malloc(bt * sizeof *t->loss);
    if (!t->grad || !t->tokens || !t->mask || !t->inputs || !t->targets || !t->scale || !t->loss) {
        llm_trainer_free(t);
        return llm_errf(err, "out of memory for training (%zu parameters)", f->total);
    }
    if (!(t->acts = llm_acts_new(&f->cfg, t->B, t->T, 1, err)) || llm_weights_bind(&t->w, &f->cfg, f->w, err) ||
        llm_weights_bind(&t->g, &f->cfg, t->grad, err)) {
        llm_trainer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void llm_trainer_free(llm_trainer *t)
{
    if (!t) return;
    llm_weights_free(&t->w);
    llm_weights_free(&t->g);
    llm_acts_free(t->acts);
    free(t->grad);
    free(t->tokens);
    free(t->mask);
    free(t->inputs);
    free(t->targets);
    free(t->scale);
    free(t->loss);
    free(t);
}

/* Splits row r of a batch of sequences (T + 1 tokens each, from a set whose
 * sequences are seq_len + 1 long: the first T + 1 are used) into inputs and
 * targets, with target weights `w` where the mask says trained. Returns the
 * number of trained targets; -1 when a token is outside the vocabulary. */
static long split_rows(llm_trainer *t, const uint32_t *tok, const uint8_t *mask, size_t n_seq, float w)
{
    size_t T = t->T, V = t->f->cfg.vocab_size;
    long trained = 0;
    for (size_t b = 0; b < t->B; b++) {
        const uint32_t *row = tok + b * n_seq;
        const uint8_t *m = mask + b * n_seq;
        for (size_t j = 0; j < T; j++) {
            if (row[j] >= V || row[j + 1] >= V) return -1;
            t->inputs[b * T + j] = row[j];
            t->targets[b * T + j] = row[j + 1];
            t->scale[b * T + j] = m[j + 1] ? w : 0.0f;
            trained += m[j + 1] ? 1 : 0;
        }
    }
    return trained;
}

int llm_trainer_gradient(llm_trainer *t, llm_batcher *data, llm_step_result *r, llm_err *err)
{
    llm_model_file *f = t->f;
    llm_train_state *s = t->s;
    size_t seq_len = llm_batcher_seq_len(data), n_seq = seq_len + 1;
    if (t->T > seq_len) return llm_errf(err, "--seq %zu is longer than the data's sequences (%zu)", t->T, seq_len);
    /* all micro-batches first: the loss is the mean over the step's trained targets */
    uint32_t *tok = malloc(s->accum * t->B * n_seq * sizeof *tok);
    uint8_t *mask = malloc(s->accum * t->B * n_seq);
    if (!tok || !mask) { free(tok); free(mask); return llm_errf(err, "out of memory"); }
    int rc = 0;
    for (size_t k = 0; !rc && k < s->accum; k++)
        rc = llm_batcher_next(data, t->B, tok + k * t->B * n_seq, mask + k * t->B * n_seq, err);
    uint64_t trained = 0;
    for (size_t k = 0; !rc && k < s->accum; k++) {
        long n = split_rows(t, tok + k * t->B * n_seq, mask + k * t->B * n_seq, n_seq, 1.0f);
        if (n < 0) rc = llm_errf(err, "the data has a token id outside the model's vocabulary of %zu", f->cfg.vocab_size);
        else trained += (uint64_t)n;
    }
    if (!rc && trained == 0) rc = llm_errf(err, "a step with no trained targets (every mask byte 0)");
    double loss_sum = 0;
    if (!rc) {
        memset(t->grad, 0, f->total * sizeof(float));
        float w = (float)(1.0 / (double)trained);
        for (size_t k = 0; k < s->accum; k++) {
            split_rows(t, tok + k * t->B * n_seq, mask + k * t->B * n_seq, n_seq, w);
            llm_forward(&f->cfg, &t->w, t->acts, t->inputs, t->B, t->T);
            llm_loss(&f->cfg, t->acts, t->targets, t->scale, t->loss, t->B, t->T);
            for (size_t i = 0; i < t->B * t->T; i++) loss_sum += (double)t->loss[i] * (t->scale[i] != 0.0f);
            llm_backward(&f->cfg, &t->w, &t->g, t->acts, t->inputs, t->B, t->T);
        }
    }
    free(tok);
    free(mask);
    if (rc) return -1;
    r->loss = loss_sum / (double)trained;
    r->tokens = trained;
    r->lr = llm_schedule_lr(&s->sched, s->step);
    double sumsq = 0;
    for (size_t i = 0; i < f->nparams; i++) sumsq += llmk_sumsq(t->grad + f->params[i].offset, f->params[i].size);
    r->grad_norm = sqrt(sumsq);
    if (!isfinite(r->loss) || !isfinite(r->grad_norm))
        return llm_errf(err, "step %llu: the loss (%g) or the gradient norm (%g) is not finite: training diverged",
                        (unsigned long long)s->step + 1, r->loss, r->grad_norm), LLM_TRAIN_DIVERGED;
    return 0;
}

const float *llm_trainer_grads(const llm_trainer *t) { return t->grad; }

int llm_trainer_step(llm_trainer *t, llm_batcher *data, llm_step_result *r, llm_err *err)
{
    int g = llm_trainer_gradient(t, data, r, err);
    if (g) return g;
    llm_model_file *f = t->f;
    llm_train_state *s = t->s;
    /* clip_grad_norm_: coefficient max_norm / (norm + 1e-6), clamped to 1; in float as torch computes it */
    float coef = 1.0f;
    if (s->clip > 0) {
        float c = (float)s->clip / ((float)r->grad_norm + 1e-6f);
        coef = c < 1.0f ? c : 1.0f;
    }
    for (size_t i = 0; i < f->nparams; i++) {
        const llm_param *p = &f->params[i];
        llmk_adamw_args a = {r->lr, s->beta1, s->beta2, s->eps, p->decay ? s->weight_decay : 0.0, coef, s->step + 1};
        llmk_adamw(f->w + p->offset, t->grad + p->offset, f->m + p->offset, f->v + p->offset, p->size, &a);
    }
    /* the squares overflow only where training has run away anyway */
    if (!isfinite(llmk_sumsq(f->w, f->total)))
        return llm_errf(err, "step %llu: the update made parameters too large or not finite: training diverged",
                        (unsigned long long)s->step + 1);
    s->step++;
    s->tokens += r->tokens;
    llm_cursor_save(llm_batcher_cursor(data), s->cursor, sizeof s->cursor);
    return 0;
}

int llm_trainer_eval(llm_trainer *t, llm_seqset *set, uint64_t max_seqs, double *loss, uint64_t *targets, llm_err *err)
{
    llm_model_file *f = t->f;
    size_t seq_len = llm_seqset_seq_len(set), n_seq = seq_len + 1;
    if (t->T > seq_len) return llm_errf(err, "--seq %zu is longer than the validation sequences (%zu)", t->T, seq_len);
    uint64_t n = llm_seqset_count(set);
    if (max_seqs && max_seqs < n) n = max_seqs;
    uint32_t *tok = malloc(t->B * n_seq * sizeof *tok);
    uint8_t *mask = malloc(t->B * n_seq);
    int rc = tok && mask ? 0 : llm_errf(err, "out of memory");
    double sum = 0;
    uint64_t count = 0;
    for (uint64_t at = 0; !rc && at < n; at += t->B) {
        size_t rows = n - at < t->B ? (size_t)(n - at) : t->B;
        for (size_t b = 0; !rc && b < t->B; b++) {
            /* a short last batch repeats its first row, weighted 0 */
            rc = llm_seqset_get(set, at + (b < rows ? b : 0), tok + b * n_seq, mask + b * n_seq, err);
            if (!rc && !llm_seqset_has_masks(set)) memset(mask + b * n_seq, 1, n_seq);
            if (!rc && b >= rows) memset(mask + b * n_seq, 0, n_seq);
        }
        if (rc) break;
        long k = split_rows(t, tok, mask, n_seq, 1.0f);
        if (k < 0) { rc = llm_errf(err, "the validation data has a token id outside the vocabulary"); break; }
        llm_forward(&f->cfg, &t->w, t->acts, t->inputs, t->B, t->T);
        llm_loss(&f->cfg, t->acts, t->targets, NULL, t->loss, t->B, t->T);
        for (size_t i = 0; i < t->B * t->T; i++)
            if (t->scale[i] != 0.0f) sum += t->loss[i];
        count += (uint64_t)k;
    }
    free(tok);
    free(mask);
    if (rc) return -1;
    *loss = count ? sum / (double)count : NAN;
    *targets = count;
    return 0;
}
