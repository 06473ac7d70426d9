/* The paged KV cache: lib/kvpool.h alone (allocation up to the budget,
 * reference counts, the registry of full blocks, the LRU of free registered
 * blocks), lib/infer.h over it (sequences against llm_infer_step's own and
 * against llm_forward, forks and copy-on-write, truncation, the budget,
 * prefix sharing), and lib/generate.h's reservation of blocks per request
 * (waiting, refusing, cancelling).
 *
 * Two small models are written to a temporary directory (a llama with
 * grouped-query attention and a GPT-2), with random weights and a tiny
 * trained byte-level BPE tokenizer, and a context of 160 so that sequences
 * cross several blocks of LLM_KV_BLOCK (32) positions. */
#include "bpe_train.h"
#include "generate.h"
#include "infer.h"
#include "kvpool.h"
#include "model.h"
#include "model_file.h"
#include "tokenizer.h"
#include "unit.h"

#include <math.h>
#include <stdint.h>
#include <unistd.h>

#define CTX 160

static char tmpdir[64];
static char path_llama[128], path_gpt2[128];
static const char *paths[2] = {path_llama, path_gpt2};
static const char *names[2] = {"llama", "gpt2"};

/* ================= kvpool alone ================= */

static void fill(llm_kvpool *p, uint32_t b, float v, size_t n)
{
    float *d = llm_kvpool_data(p, b);
    for (size_t i = 0; i < n; i++) d[i] = v + (float)i;
}

static int holds(const llm_kvpool *p, uint32_t b, float v, size_t n)
{
    const float *d = llm_kvpool_data(p, b);
    for (size_t i = 0; i < n; i++)
        if (d[i] != v + (float)i) return 0;
    return 1;
}

TEST(kvpool_alloc_to_budget)
{
    llm_kvpool *p = llm_kvpool_new(16, 4, 4);
    CHECK(p != NULL);
    if (!p) return;
    CHECK_EQ_U64(llm_kvpool_max(p), 4);
    CHECK_EQ_U64(llm_kvpool_block_bytes(p), 64);
    CHECK_EQ_U64(llm_kvpool_available(p), 4);
    CHECK_EQ_U64(llm_kvpool_used(p), 0);
    uint32_t b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = llm_kvpool_alloc(p);
        CHECK(b[i] != LLM_KVPOOL_NONE);
        if (b[i] == LLM_KVPOOL_NONE) { llm_kvpool_free(p); return; }
        CHECK_EQ_U64(llm_kvpool_refs(p, b[i]), 1);
        CHECK(((uintptr_t)llm_kvpool_data(p, b[i]) & 63) == 0);
        fill(p, b[i], 100.0f * (float)i, 16);   /* the whole block is writable */
        for (int j = 0; j < i; j++) CHECK(b[j] != b[i]);
        CHECK_EQ_U64(llm_kvpool_used(p), (uint64_t)i + 1);
        CHECK_EQ_U64(llm_kvpool_available(p), 3 - (uint64_t)i);
    }
    for (int i = 0; i < 4; i++) CHECK(holds(p, b[i], 100.0f * (float)i, 16));   /* blocks do not overlap */
    CHECK(llm_kvpool_alloc(p) == LLM_KVPOOL_NONE);
    CHECK_EQ_U64(llm_kvpool_used(p), 4);
    /* a second reference keeps a block in use */
    llm_kvpool_ref(p, b[2]);
    CHECK_EQ_U64(llm_kvpool_refs(p, b[2]), 2);
    llm_kvpool_unref(p, b[2]);
    CHECK_EQ_U64(llm_kvpool_refs(p, b[2]), 1);
    CHECK_EQ_U64(llm_kvpool_used(p), 4);
    CHECK(llm_kvpool_alloc(p) == LLM_KVPOOL_NONE);
    /* unref returns it: the next alloc gives that block */
    llm_kvpool_unref(p, b[2]);
    CHECK_EQ_U64(llm_kvpool_refs(p, b[2]), 0);
    CHECK_EQ_U64(llm_kvpool_used(p), 3);
    CHECK_EQ_U64(llm_kvpool_available(p), 1);
    uint32_t again = llm_kvpool_alloc(p);
    CHECK_EQ_U64(again, b[2]);
    CHECK_EQ_U64(llm_kvpool_used(p), 4);
    CHECK_EQ_U64(llm_kvpool_available(p), 0);
    CHECK(llm_kvpool_alloc(p) == LLM_KVPOOL_NONE);
    for (int i = 0; i < 4; i++) llm_kvpool_unref(p, b[i]);
    CHECK_EQ_U64(llm_kvpool_used(p), 0);
    CHECK_EQ_U64(llm_kvpool_available(p), 4);
    llm_kvpool_free(p);

    /* no limit */
    p = llm_kvpool_new(8, 4, 0);
    CHECK(llm_kvpool_available(p) == SIZE_MAX);
    CHECK_EQ_U64(llm_kvpool_max(p), 0);
    int ok = 1;
    for (int i = 0; i < 200; i++) ok &= llm_kvpool_alloc(p) == (uint32_t)i;   /* fresh blocks in order */
    CHECK(ok);
    CHECK_EQ_U64(llm_kvpool_used(p), 200);
    CHECK(llm_kvpool_available(p) == SIZE_MAX);
    llm_kvpool_free(p);
}

TEST(kvpool_registry_and_lru)
{
    const size_t BT = 4, BF = 8;
    llm_kvpool *p = llm_kvpool_new(BF, BT, 6);
    if (!p) { CHECK(0); return; }
    const uint32_t ta[4] = {1, 2, 3, 4}, tb[4] = {5, 6, 7, 8}, tc[4] = {9, 10, 11, 12};
    uint64_t ka = llm_kvpool_key(p, 0, ta), kb = llm_kvpool_key(p, ka, tb), kc = llm_kvpool_key(p, kb, tc);
    CHECK(ka != kb && kb != kc && ka != kc);
    CHECK(llm_kvpool_key(p, 0, ta) == ka);          /* deterministic */
    CHECK(llm_kvpool_key(p, 1, ta) != ka);          /* seeded by the parent */
    uint32_t a = llm_kvpool_alloc(p), b = llm_kvpool_alloc(p), c = llm_kvpool_alloc(p), d = llm_kvpool_alloc(p);
    CHECK_EQ_U64(llm_kvpool_used(p), 4);
    fill(p, a, 10, BF), fill(p, b, 20, BF), fill(p, c, 30, BF), fill(p, d, 40, BF);
    CHECK(!llm_kvpool_registered(p, a));
    llm_kvpool_register(p, a, ka, 0, ta);
    llm_kvpool_register(p, b, kb, ka, tb);
    llm_kvpool_register(p, c, kc, kb, tc);
    CHECK(llm_kvpool_registered(p, a) && llm_kvpool_registered(p, b) && llm_kvpool_registered(p, c));
    CHECK(!llm_kvpool_registered(p, d));
    /* a registered block in use: lookup takes another reference */
    uint32_t got = llm_kvpool_lookup(p, ka, 0, ta);
    CHECK_EQ_U64(got, a);
    CHECK_EQ_U64(llm_kvpool_refs(p, a), 2);
    CHECK_EQ_U64(llm_kvpool_used(p), 4);
    llm_kvpool_unref(p, a);
    /* the parent and the tokens are compared, not only the key */
    CHECK(llm_kvpool_lookup(p, ka, 7, ta) == LLM_KVPOOL_NONE);
    const uint32_t ta2[4] = {1, 2, 3, 5};
    CHECK(llm_kvpool_lookup(p, ka, 0, ta2) == LLM_KVPOOL_NONE);
    CHECK(llm_kvpool_lookup(p, llm_kvpool_key(p, 0, ta2), 0, ta2) == LLM_KVPOOL_NONE);
    CHECK(llm_kvpool_lookup(p, kb, 0, tb) == LLM_KVPOOL_NONE);        /* tb after another prefix */
    CHECK(llm_kvpool_lookup(p, ka ^ 1, 0, ta) == LLM_KVPOOL_NONE);
    CHECK_EQ_U64(llm_kvpool_refs(p, a), 1);
    /* registering an existing key keeps the first block */
    llm_kvpool_register(p, d, ka, 0, ta);
    CHECK(!llm_kvpool_registered(p, d));
    got = llm_kvpool_lookup(p, ka, 0, ta);
    CHECK_EQ_U64(got, a);
    llm_kvpool_unref(p, got);
    /* registering a registered block under another key does nothing */
    llm_kvpool_register(p, a, 12345, 0, tb);
    CHECK(llm_kvpool_lookup(p, 12345, 0, tb) == LLM_KVPOOL_NONE);

    /* free them in the order b, a, c (registered) and d (plain) */
    llm_kvpool_unref(p, b);
    llm_kvpool_unref(p, a);
    llm_kvpool_unref(p, c);
    llm_kvpool_unref(p, d);
    CHECK_EQ_U64(llm_kvpool_used(p), 0);
    CHECK_EQ_U64(llm_kvpool_available(p), 6);   /* 2 unmade, 1 plain, 3 registered free */
    CHECK(llm_kvpool_registered(p, a) && llm_kvpool_registered(p, b) && llm_kvpool_registered(p, c));
    /* a plain free block goes first, then the unmade ones */
    CHECK_EQ_U64(llm_kvpool_alloc(p), d);
    uint32_t e = llm_kvpool_alloc(p), f = llm_kvpool_alloc(p);
    CHECK(e != LLM_KVPOOL_NONE && f != LLM_KVPOOL_NONE);
    CHECK(e != a && e != b && e != c && e != d && f != a && f != b && f != c && f != d && e != f);
    CHECK(llm_kvpool_registered(p, a) && llm_kvpool_registered(p, b) && llm_kvpool_registered(p, c));
    CHECK_EQ_U64(llm_kvpool_used(p), 3);
    CHECK_EQ_U64(llm_kvpool_available(p), 3);
    /* a free registered block is found again, content intact, and leaves the free list */
    float *pa = llm_kvpool_data(p, a);
    got = llm_kvpool_lookup(p, ka, 0, ta);
    CHECK_EQ_U64(got, a);
    CHECK(llm_kvpool_data(p, got) == pa);
    CHECK(holds(p, a, 10, BF));
    CHECK_EQ_U64(llm_kvpool_refs(p, a), 1);
    CHECK_EQ_U64(llm_kvpool_used(p), 4);
    CHECK_EQ_U64(llm_kvpool_available(p), 2);
    llm_kvpool_unref(p, a);   /* freed again: now the newest; the order is b, c, a */
    CHECK_EQ_U64(llm_kvpool_available(p), 3);
    /* no plain or unmade block left: the oldest freed registered block goes */
    uint32_t g1 = llm_kvpool_alloc(p);
    CHECK_EQ_U64(g1, b);
    CHECK(!llm_kvpool_registered(p, b));
    CHECK(llm_kvpool_lookup(p, kb, ka, tb) == LLM_KVPOOL_NONE);
    CHECK(llm_kvpool_registered(p, c) && llm_kvpool_registered(p, a));
    uint32_t g2 = llm_kvpool_alloc(p);
    CHECK_EQ_U64(g2, c);
    CHECK(llm_kvpool_lookup(p, kc, kb, tc) == LLM_KVPOOL_NONE);
    CHECK(llm_kvpool_registered(p, a));
    /* a is still there: look it up (content intact) */
    got = llm_kvpool_lookup(p, ka, 0, ta);
    CHECK_EQ_U64(got, a);
    CHECK(holds(p, a, 10, BF));
    CHECK(llm_kvpool_alloc(p) == LLM_KVPOOL_NONE);   /* all 6 in use */
    CHECK_EQ_U64(llm_kvpool_used(p), 6);
    CHECK_EQ_U64(llm_kvpool_available(p), 0);
    llm_kvpool_unref(p, a);
    uint32_t g3 = llm_kvpool_alloc(p);
    CHECK_EQ_U64(g3, a);
    CHECK(llm_kvpool_lookup(p, ka, 0, ta) == LLM_KVPOOL_NONE);
    CHECK(llm_kvpool_alloc(p) == LLM_KVPOOL_NONE);
    llm_kvpool_free(p);
}

TEST(kvpool_unregister)
{
    const size_t BT = 4, BF = 8;
    llm_kvpool *p = llm_kvpool_new(BF, BT, 3);
    if (!p) { CHECK(0); return; }
    const uint32_t t1[4] = {1, 2, 3, 4}, t2[4] = {7, 7, 7, 7};
    uint64_t k1 = llm_kvpool_key(p, 0, t1), k2 = llm_kvpool_key(p, 0, t2);
    uint32_t a = llm_kvpool_alloc(p), b = llm_kvpool_alloc(p);
    llm_kvpool_register(p, a, k1, 0, t1);
    llm_kvpool_register(p, b, k2, 0, t2);
    llm_kvpool_unref(p, a);
    llm_kvpool_unref(p, b);
    CHECK_EQ_U64(llm_kvpool_available(p), 3);
    /* unregistering a free registered block makes it plain: not found, and
     * the next alloc takes it before the unmade block */
    llm_kvpool_unregister(p, a);
    CHECK(!llm_kvpool_registered(p, a));
    CHECK(llm_kvpool_lookup(p, k1, 0, t1) == LLM_KVPOOL_NONE);
    CHECK_EQ_U64(llm_kvpool_available(p), 3);
    CHECK_EQ_U64(llm_kvpool_used(p), 0);
    CHECK_EQ_U64(llm_kvpool_alloc(p), a);
    CHECK(llm_kvpool_registered(p, b));
    /* a registered block in use, unregistered, goes plain when freed */
    uint32_t got = llm_kvpool_lookup(p, k2, 0, t2);
    CHECK_EQ_U64(got, b);
    llm_kvpool_unregister(p, b);
    CHECK(!llm_kvpool_registered(p, b));
    CHECK(llm_kvpool_lookup(p, k2, 0, t2) == LLM_KVPOOL_NONE);
    llm_kvpool_unref(p, b);
    CHECK_EQ_U64(llm_kvpool_alloc(p), b);   /* plain before unmade */
    /* the key can be registered again, by another block */
    uint32_t c = llm_kvpool_alloc(p);
    CHECK(c != LLM_KVPOOL_NONE && c != a && c != b);
    llm_kvpool_register(p, c, k2, 0, t2);
    CHECK(llm_kvpool_registered(p, c));
    got = llm_kvpool_lookup(p, k2, 0, t2);
    CHECK_EQ_U64(got, c);
    CHECK_EQ_U64(llm_kvpool_refs(p, c), 2);
    llm_kvpool_unregister(p, b);   /* not registered: nothing */
    CHECK(llm_kvpool_registered(p, c));
    llm_kvpool_free(p);
}

/* Many registrations (the registry grows) and lookups of every one. */
TEST(kvpool_registry_grows)
{
    const size_t BT = 4, NB = 300;
    llm_kvpool *p = llm_kvpool_new(4, BT, 0);
    if (!p) { CHECK(0); return; }
    uint64_t parent = 0, *keys = malloc(NB * sizeof *keys);
    uint32_t *blk = malloc(NB * sizeof *blk), t[4];
    for (size_t i = 0; i < NB; i++) {
        for (size_t j = 0; j < BT; j++) t[j] = (uint32_t)(i * 4 + j);
        keys[i] = llm_kvpool_key(p, parent, t);
        blk[i] = llm_kvpool_alloc(p);
        llm_kvpool_register(p, blk[i], keys[i], parent, t);
        parent = keys[i];
        if (i % 2) llm_kvpool_unref(p, blk[i]);
    }
    int ok = 1;
    parent = 0;
    for (size_t i = 0; i < NB; i++) {
        for (size_t j = 0; j < BT; j++) t[j] = (uint32_t)(i * 4 + j);
        uint32_t got = llm_kvpool_lookup(p, keys[i], parent, t);
        if (got != blk[i]) { ok = 0; printf("# block %zu: lookup %u, expected %u\n", i, got, blk[i]); break; }
        parent = keys[i];
    }
    CHECK(ok);
    CHECK_EQ_U64(llm_kvpool_used(p), NB);
    free(keys);
    free(blk);
    llm_kvpool_free(p);
}

/* ================= models ================= */

static int write_model(const char *path, llm_arch arch, const char *tok_json)
{
    llm_err err;
    llm_tokenizer *tok;
    if (llm_tok_from_json(tok_json, strlen(tok_json), "test", &tok, &err)) { printf("# %s\n", err.msg); return -1; }
    llm_config c = {0};
    c.arch = arch;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = arch == LLM_ARCH_LLAMA ? 2 : 4;
    c.dim = 64;
    c.ffn_dim = 128;
    c.vocab_size = llm_tok_vocab_size(tok);
    c.ctx_len = CTX;
    c.norm_eps = 1e-5f;
    c.rope_theta = arch == LLM_ARCH_LLAMA ? 10000.0f : 0;
    c.tied_embeddings = arch == LLM_ARCH_GPT2;
    c.qkv_bias = arch == LLM_ARCH_GPT2;
    llm_tok_free(tok);
    llm_model_file f;
    if (llm_config_check(&c, &err) || llm_model_file_new(&f, &c, &err)) { printf("# %s\n", err.msg); return -1; }
    llm_params_init(f.w, &c, f.params, f.nparams, arch == LLM_ARCH_LLAMA ? 11 : 12);
    /* larger weights than GPT-2's init: peakier distributions, attention
     * that does not average everything evenly */
    for (size_t i = 0; i < f.nparams; i++) {
        const llm_param *p = &f.params[i];
        int norm = strstr(p->name, "norm") != NULL;
        for (size_t j = 0; j < p->size; j++) {
            float *x = &f.w[p->offset + j];
            if (strstr(p->name, ".bias")) *x = 0.05f * (float)((int)(j * 7 % 11) - 5) / 5.0f;
            else if (!norm) *x *= 6.0f;
        }
    }
    int rc = llm_set_string(&f.tokenizer, tok_json, &err) || llm_model_file_write(&f, path, &err);
    if (rc) printf("# %s\n", err.msg);
    llm_model_file_free(&f);
    return rc ? -1 : 0;
}

static int make_models(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_kvpool.XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(path_llama, sizeof path_llama, "%s/llama.safetensors", tmpdir);
    snprintf(path_gpt2, sizeof path_gpt2, "%s/gpt2.safetensors", tmpdir);
    static const char *words[] = {"the", "beginning", "God", "created", "heaven", "and", "earth", "verse", " in",
                                  " the", " light", " was", " day", " night"};
    llm_err err;
    llm_bpe_trainer *t = llm_bpe_trainer_new(NULL);
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (llm_bpe_trainer_add_word(t, words[i], strlen(words[i]), 10 + i, &err)) return -1;
    llm_strbuf sb = {0};
    const char *specials[] = {"<|endoftext|>"};
    const char *re = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    int rc = llm_bpe_trainer_finish(t, 300, specials, 1, re, &sb, &err);
    llm_bpe_trainer_free(t);
    if (rc) { printf("# %s\n", err.msg); return -1; }
    llm_sb_add(&sb, "", 1);
    rc = write_model(path_llama, LLM_ARCH_LLAMA, sb.data) || write_model(path_gpt2, LLM_ARCH_GPT2, sb.data);
    llm_sb_free(&sb);
    return rc;
}

static void remove_models(void)
{
    unlink(path_llama);
    unlink(path_gpt2);
    rmdir(tmpdir);
}

static llm_infer *open_model(const char *path)
{
    llm_err err;
    llm_infer *m;
    if (llm_infer_open(&m, path, &err)) { printf("# open %s: %s\n", path, err.msg); return NULL; }
    return m;
}

static void random_tokens(uint32_t *t, size_t n, size_t V)
{
    for (size_t i = 0; i < n; i++) t[i] = 1 + (uint32_t)(unit_rand() % (V - 1));
}

static size_t kv_used(const llm_infer *m)
{
    llm_infer_kv st;
    llm_infer_kv_stats(m, &st);
    return st.used;
}

/* Runs one sequence through passes of the given sizes; the logits of each
 * pass's last token go to out (npass rows). Returns 0 or -1. */
static int run_passes(llm_infer *m, llm_infer_seq *s, const uint32_t *tokens, const size_t *passes, size_t npass,
                      float *out)
{
    size_t V = llm_infer_config(m)->vocab_size, at = 0;
    llm_err err;
    for (size_t i = 0; i < npass; i++) {
        if (llm_infer_batch(m, &s, tokens + at, &passes[i], 1, out + i * V, 0, &err)) {
            printf("# pass %zu (%zu tokens at %zu): %s\n", i, passes[i], llm_infer_seq_pos(s), err.msg);
            return -1;
        }
        at += passes[i];
    }
    return 0;
}

/* A fresh sequence fed hist in passes of these sizes: the logits of its last pass. */
static int fresh_logits(llm_infer *m, const uint32_t *hist, const size_t *passes, size_t npass, float *last)
{
    size_t V = llm_infer_config(m)->vocab_size;
    llm_err err;
    llm_infer_seq *s = llm_infer_seq_new(m, &err);
    float *all = malloc(npass * V * sizeof *all);
    int rc = !s || !all ? -1 : run_passes(m, s, hist, passes, npass, all);
    if (!rc) memcpy(last, all + (npass - 1) * V, V * sizeof *last);
    free(all);
    llm_infer_seq_free(s);
    return rc;
}

/* max |a - b| over max(1e-3, max |b|) */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, mx = 1e-3;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;   /* NaN wins */
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    }
    return d / mx;
}

/* ================= infer ================= */

/* Sequences give the bits llm_infer_step's own sequence gives for the same
 * tokens in the same passes (a prompt then single tokens; single tokens
 * only), and the logits of the unpaged training forward pass within 1e-4. */
TEST(infer_sequences_match_own_and_reference)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_infer *m = open_model(paths[mi]);
        if (!m) { CHECK(0); continue; }
        const llm_config *c = llm_infer_config(m);
        size_t V = c->vocab_size, P = 100, T = 140;
        llm_err err;
        uint32_t tokens[CTX];
        random_tokens(tokens, T, V);
        float *own_all = malloc(P * V * sizeof(float)), *seq_all = malloc(P * V * sizeof(float));
        float *own_dec = malloc(T * V * sizeof(float)), *seq_dec = malloc(T * V * sizeof(float));
        llm_infer_seq *s = llm_infer_seq_new(m, &err);
        /* a prompt of P (all logits), then single tokens */
        llm_infer_reset(m);
        CHECK(llm_infer_step(m, tokens, P, own_all, 1, &err) == 0);
        size_t cnt = P;
        CHECK(llm_infer_batch(m, &s, tokens, &cnt, 1, seq_all, 1, &err) == 0);
        CHECK(memcmp(own_all, seq_all, P * V * sizeof(float)) == 0);
        cnt = 1;
        int same = 1;
        for (size_t i = P; i < T; i++) {
            CHECK(llm_infer_step(m, tokens + i, 1, own_dec + i * V, 0, &err) == 0);
            CHECK(llm_infer_batch(m, &s, tokens + i, &cnt, 1, seq_dec + i * V, 0, &err) == 0);
            same &= memcmp(own_dec + i * V, seq_dec + i * V, V * sizeof(float)) == 0;
        }
        CHECK(same);
        CHECK_EQ_U64(llm_infer_pos(m), T);
        CHECK_EQ_U64(llm_infer_seq_pos(s), T);
        /* the unpaged reference: llm_forward over the whole T */
        llm_model_file f;
        llm_weights w;
        llm_acts *a = NULL;
        if (llm_model_file_read(&f, paths[mi], 0, &err) == 0) {
            if (llm_weights_bind(&w, &f.cfg, f.w, &err) == 0 && (a = llm_acts_new(&f.cfg, 1, T, 0, &err))) {
                llm_forward(&f.cfg, &w, a, tokens, 1, T);
                const float *ref = llm_acts_logits(a);
                double worst_prompt = 0, worst_dec = 0;
                for (size_t i = 0; i < P; i++) {
                    double d = rel_diff(seq_all + i * V, ref + i * V, V);
                    if (!(d <= worst_prompt)) worst_prompt = d;
                }
                for (size_t i = P; i < T; i++) {
                    double d = rel_diff(seq_dec + i * V, ref + i * V, V);
                    if (!(d <= worst_dec)) worst_dec = d;
                }
                printf("# %s: against llm_forward: prompt rows %.2e, decoded rows %.2e (relative)\n", names[mi],
                       worst_prompt, worst_dec);
                CHECK(worst_prompt <= 1e-4);
                CHECK(worst_dec <= 1e-4);
                /* token by token from the start: own and a sequence equal, and near the reference */
                llm_infer_reset(m);
                llm_infer_seq_truncate(s, 0);
                CHECK_EQ_U64(llm_infer_seq_pos(s), 0);
                double worst = 0;
                same = 1;
                for (size_t i = 0; i < T; i++) {
                    CHECK(llm_infer_step(m, tokens + i, 1, own_dec + i * V, 0, &err) == 0);
                    CHECK(llm_infer_batch(m, &s, tokens + i, &cnt, 1, seq_dec + i * V, 0, &err) == 0);
                    same &= memcmp(own_dec + i * V, seq_dec + i * V, V * sizeof(float)) == 0;
                    double d = rel_diff(seq_dec + i * V, ref + i * V, V);
                    if (!(d <= worst)) worst = d;
                }
                CHECK(same);
                printf("# %s: token by token against llm_forward: %.2e\n", names[mi], worst);
                CHECK(worst <= 1e-4);
                llm_acts_free(a);
                llm_weights_free(&w);
            } else {
                printf("# %s\n", err.msg);
                CHECK(0);
            }
            llm_model_file_free(&f);
        } else {
            printf("# %s\n", err.msg);
            CHECK(0);
        }
        /* decoding together in one batch: each sequence's bits as alone */
        llm_infer_seq *x = llm_infer_seq_new(m, &err), *y = llm_infer_seq_new(m, &err);
        size_t px = 37, py = 70;
        CHECK(run_passes(m, x, tokens, &px, 1, own_dec) == 0);
        CHECK(run_passes(m, y, tokens + 5, &py, 1, own_dec) == 0);
        llm_infer_seq *xy[2] = {x, y};
        uint32_t nt[2] = {3, 4};
        size_t ones[2] = {1, 1};
        float *both = malloc(2 * V * sizeof(float)), *alone = malloc(V * sizeof(float));
        CHECK(llm_infer_batch(m, xy, nt, ones, 2, both, 0, &err) == 0);
        uint32_t hx[38], hy[71];
        memcpy(hx, tokens, 37 * sizeof *hx), hx[37] = 3;
        memcpy(hy, tokens + 5, 70 * sizeof *hy), hy[70] = 4;
        size_t sx[2] = {37, 1}, sy[2] = {70, 1};
        CHECK(fresh_logits(m, hx, sx, 2, alone) == 0);
        CHECK(memcmp(both, alone, V * sizeof(float)) == 0);
        CHECK(fresh_logits(m, hy, sy, 2, alone) == 0);
        CHECK(memcmp(both + V, alone, V * sizeof(float)) == 0);
        free(both), free(alone);
        llm_infer_seq_free(x), llm_infer_seq_free(y);
        llm_infer_seq_free(s);
        llm_infer_reset(m);
        /* the own sequence keeps its blocks after a reset (it is reused); the
         * others are freed: 5 blocks of 140 positions at most */
        CHECK(kv_used(m) <= 5);
        free(own_all), free(seq_all), free(own_dec), free(seq_dec);
        llm_infer_close(m);
    }
}

/* A fork inside a block (45), inside the second block after more work (60),
 * and at a block boundary (64): each continuation gives the bits a fresh
 * sequence fed its whole history in the same passes gives, whichever writes
 * first; truncation then more tokens is a fresh run too. */
TEST(infer_fork_and_truncate)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_infer *m = open_model(paths[mi]);
        if (!m) { CHECK(0); continue; }
        size_t V = llm_infer_config(m)->vocab_size;
        llm_err err;
        uint32_t pre[CTX], X[40], Y[40], hist[CTX];
        random_tokens(pre, 100, V);
        random_tokens(X, 40, V);
        random_tokens(Y, 40, V);
        float *got = malloc(8 * V * sizeof(float)), *want = malloc(V * sizeof(float));
        llm_infer_seq *A = llm_infer_seq_new(m, &err), *B = llm_infer_seq_new(m, &err);
        size_t p45 = 45;
        CHECK(run_passes(m, A, pre, &p45, 1, got) == 0);
        CHECK_EQ_U64(kv_used(m), 2);
        llm_infer_seq_copy(B, A);
        CHECK_EQ_U64(llm_infer_seq_pos(B), 45);
        CHECK_EQ_U64(kv_used(m), 2);   /* shared, not copied */
        /* A goes on first: 10 tokens, then 5 single ones (copy-on-write of block 1) */
        size_t passes[6] = {10, 1, 1, 1, 1, 1};
        CHECK(run_passes(m, A, X, passes, 6, got) == 0);
        CHECK_EQ_U64(kv_used(m), 3);
        size_t full[7] = {45, 10, 1, 1, 1, 1, 1};
        memcpy(hist, pre, 45 * sizeof *hist), memcpy(hist + 45, X, 15 * sizeof *hist);
        CHECK(fresh_logits(m, hist, full, 7, want) == 0);
        CHECK(memcmp(got + 5 * V, want, V * sizeof(float)) == 0);
        /* B, untouched by A's writes */
        CHECK(run_passes(m, B, Y, passes, 6, got) == 0);
        memcpy(hist + 45, Y, 15 * sizeof *hist);
        CHECK(fresh_logits(m, hist, full, 7, want) == 0);
        CHECK(memcmp(got + 5 * V, want, V * sizeof(float)) == 0);
        CHECK_EQ_U64(kv_used(m), 3);   /* B held block 1 alone by then: written in place */
        /* fork B at 60 into C; C writes first (one token), then B (one token) */
        llm_infer_seq *C = llm_infer_seq_new(m, &err);
        llm_infer_seq_copy(C, B);
        CHECK_EQ_U64(kv_used(m), 3);
        size_t one = 1;
        CHECK(run_passes(m, C, X + 20, &one, 1, got) == 0);
        size_t full2[8] = {45, 10, 1, 1, 1, 1, 1, 1};
        hist[60] = X[20];
        CHECK(fresh_logits(m, hist, full2, 8, want) == 0);
        CHECK(memcmp(got, want, V * sizeof(float)) == 0);
        CHECK(run_passes(m, B, Y + 20, &one, 1, got) == 0);
        hist[60] = Y[20];
        CHECK(fresh_logits(m, hist, full2, 8, want) == 0);
        CHECK(memcmp(got, want, V * sizeof(float)) == 0);
        CHECK_EQ_U64(kv_used(m), 4);
        /* copying onto a sequence that holds blocks releases them */
        llm_infer_seq_copy(C, A);
        CHECK_EQ_U64(llm_infer_seq_pos(C), 60);
        CHECK_EQ_U64(kv_used(m), 3);
        llm_infer_seq_free(C);
        llm_infer_seq_free(B);
        CHECK_EQ_U64(kv_used(m), 2);

        /* forks that take turns, one token each: each reads back positions of
         * the shared block the other would have overwritten without a copy */
        {
            llm_infer_seq *F = llm_infer_seq_new(m, &err), *G = llm_infer_seq_new(m, &err);
            size_t n40 = 40, turns[7] = {40, 1, 1, 1, 1, 1, 1};
            CHECK(run_passes(m, F, pre, &n40, 1, got) == 0);
            llm_infer_seq_copy(G, F);
            float *lf = malloc(6 * V * sizeof(float)), *lgg = malloc(6 * V * sizeof(float));
            for (size_t i = 0; i < 6; i++) {
                size_t one1 = 1;
                CHECK(run_passes(m, F, X + i, &one1, 1, lf + i * V) == 0);
                CHECK(run_passes(m, G, Y + i, &one1, 1, lgg + i * V) == 0);
            }
            memcpy(hist, pre, 40 * sizeof *hist), memcpy(hist + 40, X, 6 * sizeof *hist);
            CHECK(fresh_logits(m, hist, turns, 7, want) == 0);
            CHECK(memcmp(lf + 5 * V, want, V * sizeof(float)) == 0);
            memcpy(hist + 40, Y, 6 * sizeof *hist);
            CHECK(fresh_logits(m, hist, turns, 7, want) == 0);
            CHECK(memcmp(lgg + 5 * V, want, V * sizeof(float)) == 0);
            free(lf), free(lgg);
            llm_infer_seq_free(F), llm_infer_seq_free(G);
        }

        /* a fork at a block boundary: no copy needed */
        llm_infer_seq *D = llm_infer_seq_new(m, &err), *E = llm_infer_seq_new(m, &err);
        size_t p64 = 64;
        CHECK(run_passes(m, D, pre, &p64, 1, got) == 0);
        llm_infer_seq_copy(E, D);
        size_t used0 = kv_used(m);
        size_t pp[3] = {3, 1, 1};
        CHECK(run_passes(m, E, Y, pp, 3, got) == 0);
        CHECK_EQ_U64(kv_used(m), used0 + 1);
        size_t fullb[4] = {64, 3, 1, 1};
        memcpy(hist, pre, 64 * sizeof *hist), memcpy(hist + 64, Y, 5 * sizeof *hist);
        CHECK(fresh_logits(m, hist, fullb, 4, want) == 0);
        CHECK(memcmp(got + 2 * V, want, V * sizeof(float)) == 0);
        CHECK(run_passes(m, D, X, pp, 3, got) == 0);
        memcpy(hist + 64, X, 5 * sizeof *hist);
        CHECK(fresh_logits(m, hist, fullb, 4, want) == 0);
        CHECK(memcmp(got + 2 * V, want, V * sizeof(float)) == 0);
        llm_infer_seq_free(D), llm_infer_seq_free(E);

        /* truncate inside a block, continue: a fresh run */
        llm_infer_seq *S = llm_infer_seq_new(m, &err);
        size_t p100 = 100;
        CHECK(run_passes(m, S, pre, &p100, 1, got) == 0);
        size_t u = kv_used(m);
        llm_infer_seq_truncate(S, 45);
        CHECK_EQ_U64(llm_infer_seq_pos(S), 45);
        CHECK_EQ_U64(kv_used(m), u - 2);   /* 4 blocks, now 2 */
        llm_infer_seq_truncate(S, 80);     /* beyond its length: nothing */
        CHECK_EQ_U64(llm_infer_seq_pos(S), 45);
        CHECK(run_passes(m, S, Y, passes, 6, got) == 0);
        memcpy(hist, pre, 45 * sizeof *hist), memcpy(hist + 45, Y, 15 * sizeof *hist);
        CHECK(fresh_logits(m, hist, full, 7, want) == 0);
        CHECK(memcmp(got + 5 * V, want, V * sizeof(float)) == 0);
        /* at a block boundary */
        llm_infer_seq_truncate(S, 32);
        CHECK(run_passes(m, S, X, pp, 3, got) == 0);
        {
            /* S's history: pre[0..32) computed in a pass of 100; compare against a fresh
             * sequence of 100, truncated to 32, then the same passes */
            llm_infer_seq *R = llm_infer_seq_new(m, &err);
            CHECK(run_passes(m, R, pre, &p100, 1, want) == 0);
            llm_infer_seq_truncate(R, 32);
            float *rg = malloc(3 * V * sizeof(float));
            CHECK(run_passes(m, R, X, pp, 3, rg) == 0);
            CHECK(memcmp(got + 2 * V, rg + 2 * V, V * sizeof(float)) == 0);
            free(rg);
            llm_infer_seq_free(R);
        }
        llm_infer_seq_truncate(S, 0);
        CHECK_EQ_U64(llm_infer_seq_pos(S), 0);
        llm_infer_seq_free(S);
        llm_infer_seq_free(A);
        CHECK_EQ_U64(kv_used(m), 0);
        free(got), free(want);
        llm_infer_close(m);
    }
}

/* The budget: a pass that needs more blocks than are free fails, changing
 * nothing; used never exceeds the limit. */
TEST(infer_kv_limit)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_infer *m = open_model(paths[mi]);
        if (!m) { CHECK(0); continue; }
        size_t V = llm_infer_config(m)->vocab_size;
        llm_err err;
        CHECK(llm_infer_kv_limit(m, 4, &err) == 0);
        llm_infer_kv st;
        llm_infer_kv_stats(m, &st);
        CHECK_EQ_U64(st.max, 4);
        CHECK_EQ_U64(st.available, 4);
        CHECK_EQ_U64(st.used, 0);
        CHECK_EQ_U64(st.block_bytes, llm_infer_kv_block_bytes(m));
        uint32_t tok[CTX];
        random_tokens(tok, CTX, V);
        float *lg = malloc(2 * V * sizeof(float)), *lg2 = malloc(3 * V * sizeof(float));
        llm_infer_seq *A = llm_infer_seq_new(m, &err), *B = llm_infer_seq_new(m, &err);
        size_t n100 = 100;
        CHECK(llm_infer_batch(m, &A, tok, &n100, 1, lg, 0, &err) == 0);
        llm_infer_kv_stats(m, &st);
        CHECK_EQ_U64(st.used, 4);
        CHECK_EQ_U64(st.available, 0);
        /* A's next token fits its last block, B's needs a new one: the pass fails */
        llm_infer_seq *AB[2] = {A, B};
        size_t ones[2] = {1, 1};
        uint32_t two[2] = {5, 6};
        memset(lg2, 0x7f, 2 * V * sizeof(float));
        CHECK_ERR(llm_infer_batch(m, AB, two, ones, 2, lg2, 0, &err), err, "KV cache is full");
        CHECK_EQ_U64(llm_infer_seq_pos(A), 100);
        CHECK_EQ_U64(llm_infer_seq_pos(B), 0);
        llm_infer_kv_stats(m, &st);
        CHECK_EQ_U64(st.used, 4);
        CHECK(st.used <= st.max);
        /* the own sequence shares the budget */
        CHECK_ERR(llm_infer_step(m, two, 1, lg2, 0, &err), err, "KV cache is full");
        CHECK_EQ_U64(llm_infer_pos(m), 0);
        /* the budget is set before use */
        CHECK(llm_infer_kv_limit(m, 8, &err) != 0);
        llm_infer_kv_stats(m, &st);
        CHECK_EQ_U64(st.max, 4);
        /* A alone fills its last block (28 more: 128), then needs a 5th */
        size_t n28 = 28, n1 = 1;
        CHECK(llm_infer_batch(m, &A, tok + 100, &n28, 1, lg, 0, &err) == 0);
        CHECK_EQ_U64(llm_infer_seq_pos(A), 128);
        CHECK_ERR(llm_infer_batch(m, &A, tok + 128, &n1, 1, lg, 0, &err), err, "KV cache is full");
        CHECK_EQ_U64(llm_infer_seq_pos(A), 128);
        /* the failures changed nothing: A's next logits are those of the same
         * passes on a model without a budget (without the failed ones) */
        llm_infer_seq_truncate(A, 100);
        CHECK_EQ_U64(kv_used(m), 4);
        CHECK(llm_infer_batch(m, &A, tok + 100, &n1, 1, lg, 0, &err) == 0);
        {
            llm_infer *u0 = open_model(paths[mi]);
            llm_infer_seq *r = u0 ? llm_infer_seq_new(u0, &err) : NULL;
            size_t pr[2] = {100, 28};
            if (r) {
                CHECK(run_passes(u0, r, tok, pr, 2, lg2) == 0);
                llm_infer_seq_truncate(r, 100);
                CHECK(run_passes(u0, r, tok + 100, &n1, 1, lg2) == 0);
                CHECK(memcmp(lg, lg2, V * sizeof(float)) == 0);
            } else {
                CHECK(0);
            }
            llm_infer_seq_free(r);
            llm_infer_close(u0);
        }
        /* freeing A lets B run */
        llm_infer_seq_truncate(A, 40);
        CHECK_EQ_U64(kv_used(m), 2);
        size_t n64 = 64;
        CHECK(llm_infer_batch(m, &B, tok, &n64, 1, lg, 0, &err) == 0);
        CHECK_EQ_U64(kv_used(m), 4);
        CHECK(llm_infer_batch(m, &B, tok, &n1, 1, lg, 0, &err) != 0);
        CHECK_EQ_U64(llm_infer_seq_pos(B), 64);
        llm_infer_kv_stats(m, &st);
        CHECK(st.used <= st.max);
        llm_infer_seq_free(A), llm_infer_seq_free(B);
        CHECK_EQ_U64(kv_used(m), 0);
        /* a limited model gives the bits of an unlimited one */
        llm_infer *u = open_model(paths[mi]);
        llm_infer_seq *x = llm_infer_seq_new(m, &err), *y = u ? llm_infer_seq_new(u, &err) : NULL;
        size_t pz[3] = {70, 1, 1};
        if (u && x && y) {
            CHECK(run_passes(m, x, tok, pz, 3, lg2) == 0);
            float *lu = malloc(3 * V * sizeof(float)), *lm = malloc(3 * V * sizeof(float));
            llm_infer_seq_truncate(x, 0);
            CHECK(run_passes(m, x, tok, pz, 3, lm) == 0);
            CHECK(run_passes(u, y, tok, pz, 3, lu) == 0);
            CHECK(memcmp(lm, lu, 3 * V * sizeof(float)) == 0);
            free(lu), free(lm);
        } else {
            CHECK(0);
        }
        llm_infer_seq_free(x), llm_infer_seq_free(y);
        llm_infer_close(u);
        free(lg), free(lg2);
        llm_infer_close(m);
    }
}

/* Two forks of one sequence whose last block is partly filled and shared,
 * in one decoding pass: the pass needs one new block (the first to write
 * copies the block, after which the second holds the original alone), so
 * it fits a budget with one block free. */
TEST(infer_kv_limit_forks_in_one_pass)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_infer *m = open_model(paths[mi]);
        if (!m) { CHECK(0); continue; }
        size_t V = llm_infer_config(m)->vocab_size;
        llm_err err;
        CHECK(llm_infer_kv_limit(m, 2, &err) == 0);
        uint32_t tok[16];
        random_tokens(tok, 16, V);
        float *lg = malloc(2 * V * sizeof(float));
        llm_infer_seq *A = llm_infer_seq_new(m, &err), *B = llm_infer_seq_new(m, &err);
        size_t n10 = 10;
        CHECK(llm_infer_batch(m, &A, tok, &n10, 1, lg, 0, &err) == 0);
        llm_infer_seq_copy(B, A);
        CHECK_EQ_U64(kv_used(m), 1);
        llm_infer_seq *AB[2] = {A, B};
        size_t ones[2] = {1, 1};
        uint32_t two[2] = {3, 4};
        int rc = llm_infer_batch(m, AB, two, ones, 2, lg, 0, &err);
        if (rc) printf("# %s: a pass of two forks sharing block 0 (10 positions), 1 block free: %s\n", names[mi], err.msg);
        CHECK(rc == 0);
        CHECK_EQ_U64(kv_used(m), rc ? 1 : 2);
        llm_infer_seq_free(A), llm_infer_seq_free(B);
        CHECK_EQ_U64(kv_used(m), 0);
        free(lg);
        llm_infer_close(m);
    }
}

/* Prefix sharing: a new sequence takes the registered whole blocks of a
 * prompt that begins the same way; writing into a shared block copies it;
 * truncating inside a block it holds alone takes it out of the registry. */
TEST(infer_prefix_sharing)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_infer *m = open_model(paths[mi]);
        if (!m) { CHECK(0); continue; }
        size_t V = llm_infer_config(m)->vocab_size;
        llm_err err;
        uint32_t P[CTX], Q[CTX], Z[40];
        random_tokens(P, 100, V);
        memcpy(Q, P, 64 * sizeof *Q);
        random_tokens(Q + 64, 40, V);
        random_tokens(Z, 40, V);
        float *lg = malloc(4 * V * sizeof(float)), *lb = malloc(4 * V * sizeof(float)), *want = malloc(V * sizeof(float));
        llm_infer_seq *A = llm_infer_seq_new(m, &err), *B = llm_infer_seq_new(m, &err);
        /* off: nothing is shared */
        CHECK_EQ_U64(llm_infer_seq_reuse(B, Q, 75), 0);
        llm_infer_share_prefixes(m, 1);
        CHECK_EQ_U64(llm_infer_seq_reuse(B, Q, 75), 0);   /* nothing registered yet */
        size_t n70 = 70;
        CHECK(run_passes(m, A, P, &n70, 1, lg) == 0);
        CHECK_EQ_U64(kv_used(m), 3);
        size_t got = llm_infer_seq_reuse(B, Q, 75);
        CHECK_EQ_U64(got, 64);
        CHECK_EQ_U64(llm_infer_seq_pos(B), 64);
        CHECK_EQ_U64(kv_used(m), 3);   /* the two blocks are shared */
        size_t rest = 11, n1 = 1;
        CHECK(run_passes(m, B, Q + 64, &rest, 1, lb) == 0);
        CHECK_EQ_U64(kv_used(m), 4);
        /* against a fresh run of the whole 75 */
        size_t all75 = 75;
        CHECK(fresh_logits(m, Q, &all75, 1, want) == 0);
        double d = rel_diff(lb, want, V);
        printf("# %s: 64 shared + 11 against 75 fresh: relative %.2e%s\n", names[mi], d, d == 0 ? " (equal)" : "");
        CHECK(d <= 1e-4);
        /* against 64 then 11, as B's passes (the shared keys came from a pass of 70) */
        size_t split[2] = {64, 11};
        CHECK(fresh_logits(m, Q, split, 2, want) == 0);
        printf("# %s: 64 shared + 11 against 64 + 11 fresh: %s\n", names[mi],
               memcmp(lb, want, V * sizeof(float)) ? "close, not equal" : "equal bit for bit");
        CHECK(rel_diff(lb, want, V) <= 1e-4);
        /* the shared keys are exactly A's: 64 shared + 6 equals a fresh pass of
         * 70 truncated to 64 then the same 6, bit for bit */
        {
            uint32_t P2[75];
            memcpy(P2, P, 64 * sizeof *P2);
            memcpy(P2 + 64, Z, 11 * sizeof *P2);
            llm_infer_seq *C = llm_infer_seq_new(m, &err), *R = llm_infer_seq_new(m, &err);
            CHECK_EQ_U64(llm_infer_seq_reuse(C, P2, 75), 64);
            size_t r6 = 6;
            CHECK(run_passes(m, C, P2 + 64, &r6, 1, lg) == 0);
            CHECK(run_passes(m, R, P, &n70, 1, lg + V) == 0);
            llm_infer_seq_truncate(R, 64);
            CHECK(run_passes(m, R, P2 + 64, &r6, 1, lg + 2 * V) == 0);
            CHECK(memcmp(lg, lg + 2 * V, V * sizeof(float)) == 0);
            llm_infer_seq_free(C), llm_infer_seq_free(R);
        }
        /* the reused positions hold P's keys: B's history is Q */
        CHECK(run_passes(m, B, Q + 75, &n1, 1, lb) == 0);
        CHECK_EQ_U64(llm_infer_seq_pos(B), 76);

        /* differences in the second block: only the first is shared */
        uint32_t Q2[CTX];
        memcpy(Q2, P, 70 * sizeof *Q2);
        Q2[40] = P[40] == 1 ? 2 : 1;
        llm_infer_seq *C = llm_infer_seq_new(m, &err);
        CHECK_EQ_U64(llm_infer_seq_reuse(C, Q2, 70), 32);
        llm_infer_seq_truncate(C, 0);
        Q2[40] = P[40], Q2[0] = P[0] == 1 ? 2 : 1;
        CHECK_EQ_U64(llm_infer_seq_reuse(C, Q2, 70), 0);
        /* at least the last token is left to run */
        CHECK_EQ_U64(llm_infer_seq_reuse(C, P, 64), 32);
        llm_infer_seq_truncate(C, 0);
        CHECK_EQ_U64(llm_infer_seq_reuse(C, P, 65), 64);
        llm_infer_seq_truncate(C, 0);
        /* a sequence that has positions does not reuse */
        size_t n3 = 3;
        CHECK(run_passes(m, C, P, &n3, 1, lg) == 0);
        CHECK_EQ_U64(llm_infer_seq_reuse(C, P, 70), 0);
        CHECK_EQ_U64(llm_infer_seq_pos(C), 3);
        llm_infer_seq_free(C);

        /* A writes into block 1, which B and the registry hold: a copy; a
         * later reuse of Q still finds P's blocks and gives B's bits */
        size_t before = kv_used(m);
        llm_infer_seq_truncate(A, 40);
        CHECK_EQ_U64(kv_used(m), before - 1);
        size_t n30 = 30;
        CHECK(run_passes(m, A, Z, &n30, 1, lg) == 0);
        CHECK_EQ_U64(kv_used(m), before + 1);   /* block 1 copied, block 2 new */
        llm_infer_seq *B2 = llm_infer_seq_new(m, &err);
        CHECK_EQ_U64(llm_infer_seq_reuse(B2, Q, 75), 64);
        float *lb2 = malloc(2 * V * sizeof(float));
        size_t pb[2] = {11, 1};
        CHECK(run_passes(m, B2, Q + 64, pb, 2, lb2) == 0);
        CHECK(memcmp(lb2 + V, lb, V * sizeof(float)) == 0);
        /* and A's new content is what a fresh P[0..40) + Z gives: 40 fresh then 30 */
        {
            uint32_t h[70];
            memcpy(h, P, 40 * sizeof *h), memcpy(h + 40, Z, 30 * sizeof *h);
            llm_infer_seq *R = llm_infer_seq_new(m, &err);
            size_t rp[2] = {70, 30};
            float *rl = malloc(2 * V * sizeof(float));
            CHECK(run_passes(m, R, P, rp, 1, rl) == 0);   /* P's 70 as A computed them */
            llm_infer_seq_truncate(R, 40);
            CHECK(run_passes(m, R, Z, rp + 1, 1, rl + V) == 0);
            CHECK(memcmp(rl + V, lg, V * sizeof(float)) == 0);
            free(rl);
            llm_infer_seq_free(R);
        }
        /* A's new first 64 are registered too */
        uint32_t AZ[75];
        memcpy(AZ, P, 40 * sizeof *AZ), memcpy(AZ + 40, Z, 30 * sizeof *AZ), memcpy(AZ + 70, Q + 70, 5 * sizeof *AZ);
        llm_infer_seq *C2 = llm_infer_seq_new(m, &err);
        CHECK_EQ_U64(llm_infer_seq_reuse(C2, AZ, 75), 64);
        llm_infer_seq_free(C2);
        llm_infer_seq_free(B2);
        llm_infer_seq_free(B);
        free(lb2);

        /* truncating inside a registered block held alone takes it out of the registry */
        llm_infer_seq_free(A);
        A = llm_infer_seq_new(m, &err);
        uint32_t W[CTX];
        random_tokens(W, 100, V);
        size_t n80 = 80;
        CHECK(run_passes(m, A, W, &n80, 1, lg) == 0);
        llm_infer_seq *D = llm_infer_seq_new(m, &err);
        CHECK_EQ_U64(llm_infer_seq_reuse(D, W, 80), 64);
        llm_infer_seq_truncate(D, 0);
        llm_infer_seq_truncate(A, 50);   /* block 1 (32..63) held by A alone */
        CHECK_EQ_U64(llm_infer_seq_reuse(D, W, 80), 32);
        llm_infer_seq_truncate(D, 0);
        uint32_t W2[CTX];
        memcpy(W2, W, 50 * sizeof *W2);
        random_tokens(W2 + 50, 30, V);
        size_t n30b = 30;
        CHECK(run_passes(m, A, W2 + 50, &n30b, 1, lg) == 0);
        CHECK_EQ_U64(llm_infer_seq_reuse(D, W, 80), 32);
        llm_infer_seq_truncate(D, 0);
        CHECK_EQ_U64(llm_infer_seq_reuse(D, W2, 80), 64);
        llm_infer_seq_free(D);

        /* freed sequences: no block used; their blocks stay registered and
         * are found again */
        llm_infer_seq_free(A);
        CHECK_EQ_U64(kv_used(m), 0);
        llm_infer_seq *E = llm_infer_seq_new(m, &err);
        CHECK_EQ_U64(llm_infer_seq_reuse(E, W2, 80), 64);
        CHECK_EQ_U64(kv_used(m), 2);
        llm_infer_seq_free(E);
        CHECK_EQ_U64(kv_used(m), 0);
        free(lg), free(lb), free(want);
        llm_infer_close(m);
    }
}

/* Prefix sharing under a budget: registered free blocks count as available
 * and are evicted, oldest first, when a pass needs them. */
TEST(infer_prefix_sharing_budget)
{
    llm_infer *m = open_model(path_llama);
    if (!m) { CHECK(0); return; }
    size_t V = llm_infer_config(m)->vocab_size;
    llm_err err;
    CHECK(llm_infer_kv_limit(m, 4, &err) == 0);
    llm_infer_share_prefixes(m, 1);
    uint32_t P[CTX], Q[CTX];
    random_tokens(P, CTX, V);
    random_tokens(Q, CTX, V);
    float *lg = malloc(V * sizeof(float));
    llm_infer_seq *A = llm_infer_seq_new(m, &err);
    size_t n64 = 64, n96 = 96;
    CHECK(run_passes(m, A, P, &n64, 1, lg) == 0);   /* 2 full blocks, registered */
    llm_infer_seq_free(A);
    llm_infer_kv st;
    llm_infer_kv_stats(m, &st);
    CHECK_EQ_U64(st.used, 0);
    CHECK_EQ_U64(st.available, 4);
    A = llm_infer_seq_new(m, &err);
    CHECK(run_passes(m, A, Q, &n64, 1, lg) == 0);   /* 2 unmade blocks: P's stay */
    llm_infer_seq *B = llm_infer_seq_new(m, &err);
    CHECK_EQ_U64(llm_infer_seq_reuse(B, P, 65), 64);
    llm_infer_seq_free(B);
    llm_infer_seq_truncate(A, 0);
    /* freed in the order P1, P0 (when B went: last block first), Q1, Q0; a
     * pass of 96 takes the three oldest, P1, P0 and Q1 */
    CHECK(run_passes(m, A, P + 64, &n96, 1, lg) == 0);
    llm_infer_kv_stats(m, &st);
    CHECK_EQ_U64(st.used, 3);
    CHECK_EQ_U64(st.available, 1);
    B = llm_infer_seq_new(m, &err);
    CHECK_EQ_U64(llm_infer_seq_reuse(B, P, 65), 0);
    llm_infer_seq_truncate(B, 0);
    CHECK_EQ_U64(llm_infer_seq_reuse(B, Q, 65), 32);   /* Q's first block is left */
    llm_infer_seq_free(B);
    llm_infer_seq_free(A);
    free(lg);
    llm_infer_close(m);
}

/* llm_infer_reset forgets the own sequence's tokens: what llm_infer_step
 * runs next must not write into blocks another sequence took from the
 * registry (the own sequence's registered blocks, shared by reuse). */
TEST(infer_reset_with_shared_blocks)
{
    llm_infer *m = open_model(path_llama);
    if (!m) { CHECK(0); return; }
    size_t V = llm_infer_config(m)->vocab_size;
    llm_err err;
    llm_infer_share_prefixes(m, 1);
    uint32_t P[CTX], Q[CTX];
    random_tokens(P, 80, V);
    random_tokens(Q, 80, V);
    float *lg = malloc(3 * V * sizeof(float)), *want = malloc(3 * V * sizeof(float));
    CHECK(llm_infer_step(m, P, 70, lg, 0, &err) == 0);
    size_t used_run = kv_used(m);
    llm_infer_reset(m);
    printf("# blocks used by the own sequence: %zu after 70 tokens, %zu after llm_infer_reset\n", used_run, kv_used(m));
    llm_infer_seq *B = llm_infer_seq_new(m, &err), *R = llm_infer_seq_new(m, &err);
    CHECK_EQ_U64(llm_infer_seq_reuse(B, P, 75), 64);
    /* the own sequence runs other tokens from position 0 */
    CHECK(llm_infer_step(m, Q, 70, lg, 0, &err) == 0);
    /* B goes on: as a sequence that took the same blocks from an untouched
     * copy (R ran P's 70 in one pass, as the own sequence did) */
    size_t pb[2] = {11, 1};
    CHECK(run_passes(m, B, P + 64, pb, 2, lg) == 0);
    size_t n70 = 70;
    CHECK(run_passes(m, R, P, &n70, 1, want) == 0);
    llm_infer_seq_truncate(R, 64);
    CHECK(run_passes(m, R, P + 64, pb, 2, want) == 0);
    int same = memcmp(lg + V, want + V, V * sizeof(float)) == 0;
    if (!same) printf("# B after the own sequence's reset and new tokens: relative difference %.2e\n", rel_diff(lg + V, want + V, V));
    CHECK(same);
    /* a new reuse of P finds P's content, not Q's */
    llm_infer_seq *C = llm_infer_seq_new(m, &err);
    size_t got = llm_infer_seq_reuse(C, P, 75);
    CHECK_EQ_U64(got, 64);
    if (got == 64) {
        CHECK(run_passes(m, C, P + 64, pb, 2, lg) == 0);
        CHECK(memcmp(lg + V, want + V, V * sizeof(float)) == 0);
    }
    llm_infer_seq_free(B), llm_infer_seq_free(R), llm_infer_seq_free(C);
    free(lg), free(want);
    llm_infer_close(m);
}

/* ================= generate ================= */

#define MAXREQ 8
typedef struct {
    uint32_t ids[MAXREQ][2][CTX];
    size_t n_ids[MAXREQ][2], events[MAXREQ], done[MAXREQ], cached[MAXREQ];
    char finish[MAXREQ][8];
} collect;

static void on_event(void *ctx, const llm_gen_event *e)
{
    collect *c = ctx;
    size_t r = (size_t)(uintptr_t)e->user;
    c->events[r]++;
    if (!e->done || e->choice > 1) return;
    c->done[r]++;
    memcpy(c->ids[r][e->choice], e->ids, e->n_ids * sizeof *e->ids);
    c->n_ids[r][e->choice] = e->n_ids;
    c->cached[r] = e->cached_tokens;
    snprintf(c->finish[r], sizeof c->finish[r], "%s", e->finish);
}

static llm_gen_params gparams(size_t max_tokens, uint64_t seed, size_t n)
{
    llm_gen_params p;
    memset(&p, 0, sizeof p);
    p.sampling.temperature = 1.0;
    p.seed = seed;
    p.max_tokens = max_tokens;
    p.n = n;
    p.ignore_eos = 1;
    return p;
}

/* Runs g to the end (at most `steps` steps); the most blocks used in a step. */
static int run_gen(llm_gen *g, llm_infer *m, size_t steps, size_t *max_used)
{
    llm_err err;
    for (size_t i = 0; i < steps; i++) {
        int rc = llm_gen_step(g, &err);
        size_t u = kv_used(m);
        if (max_used && u > *max_used) *max_used = u;
        if (rc < 0) { printf("# llm_gen_step: %s\n", err.msg); return -1; }
        if (rc == 0) return 0;
    }
    printf("# not done after %zu steps\n", steps);
    return -1;
}

/* The tokens of one request alone, on a model without a budget. */
static int alone(const char *path, const uint32_t *prompt, size_t n, const llm_gen_params *p, uint32_t *ids,
                 size_t *n_ids, size_t choice)
{
    llm_err err;
    llm_infer *m = open_model(path);
    llm_tokenizer *tok = NULL;
    if (!m || llm_tok_load(path, NULL, &tok, &err)) { llm_infer_close(m); return -1; }
    static collect c;
    memset(&c, 0, sizeof c);
    llm_gen *g = llm_gen_new(m, tok, 4, on_event, &c, &err);
    int rc = !g || llm_gen_add(g, prompt, n, p, (void *)(uintptr_t)0, &err) || run_gen(g, m, 1000, NULL) ? -1 : 0;
    if (!rc) {
        memcpy(ids, c.ids[0][choice], c.n_ids[0][choice] * sizeof *ids);
        *n_ids = c.n_ids[0][choice];
    }
    llm_gen_free(g);
    llm_tok_free(tok);
    llm_infer_close(m);
    return rc;
}

static int same_as_alone(const char *path, const collect *c, size_t r, size_t choice, const uint32_t *prompt, size_t n,
                         const llm_gen_params *p)
{
    uint32_t ids[CTX];
    size_t n_ids = 0;
    if (alone(path, prompt, n, p, ids, &n_ids, choice)) return 0;
    if (n_ids != c->n_ids[r][choice] || memcmp(ids, c->ids[r][choice], n_ids * sizeof *ids)) {
        printf("# request %zu choice %zu: %zu tokens, alone %zu (or different tokens)\n", r, choice, c->n_ids[r][choice], n_ids);
        return 0;
    }
    return 1;
}

/* A model with a KV budget of `budget` blocks, its tokenizer, and a
 * generator of 4 sequences reporting into c (emptied). */
typedef struct {
    llm_infer *m;
    llm_tokenizer *tok;
    llm_gen *g;
    size_t V;
} gen_fixture;

static int gen_open(gen_fixture *f, const char *path, size_t budget, collect *c)
{
    llm_err err;
    memset(f, 0, sizeof *f);
    memset(c, 0, sizeof *c);
    if (!(f->m = open_model(path))) return -1;
    f->V = llm_infer_config(f->m)->vocab_size;
    if (llm_tok_load(path, NULL, &f->tok, &err) || llm_infer_kv_limit(f->m, budget, &err) ||
        !(f->g = llm_gen_new(f->m, f->tok, 4, on_event, c, &err))) {
        llm_tok_free(f->tok);
        llm_infer_close(f->m);
        return -1;
    }
    return 0;
}

static void gen_close(gen_fixture *f)
{
    llm_gen_free(f->g);
    llm_tok_free(f->tok);
    llm_infer_close(f->m);
}

/* A budget too small for two requests at once: the second waits, both
 * complete with their tokens alone; a request that could need more than
 * the budget is refused. */
TEST(gen_budget_waits)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_err err;
        static collect c;
        gen_fixture f;
        if (gen_open(&f, paths[mi], 3, &c)) { CHECK(0); continue; }
        llm_infer *m = f.m;
        llm_gen *g = f.g;
        size_t V = f.V;
        uint32_t p1[20], p2[20], p3[20];
        random_tokens(p1, 20, V), random_tokens(p2, 20, V), random_tokens(p3, 20, V);
        llm_gen_params a = gparams(30, 5, 1), b = gparams(30, 6, 1);   /* 50 positions: 2 blocks each */
        CHECK(llm_gen_add(g, p1, 20, &a, (void *)(uintptr_t)0, &err) == 0);
        CHECK(llm_gen_add(g, p2, 20, &b, (void *)(uintptr_t)1, &err) == 0);
        /* 20 + 100 positions: 4 blocks; the budget is 3 */
        llm_gen_params big = gparams(100, 7, 1);
        CHECK_ERR(llm_gen_add(g, p3, 20, &big, (void *)(uintptr_t)2, &err), err, "KV cache blocks");
        /* to the end of the context (20 + 1000 -> 160): 5 blocks */
        llm_gen_params huge = gparams(1000, 7, 1);
        CHECK_ERR(llm_gen_add(g, p3, 20, &huge, (void *)(uintptr_t)2, &err), err, "KV cache blocks");
        /* 20 + 12: 1 block, fits, but waits behind request 1 (in order) */
        llm_gen_params three = gparams(12, 8, 1);
        CHECK(llm_gen_add(g, p3, 20, &three, (void *)(uintptr_t)2, &err) == 0);
        CHECK_EQ_U64(llm_gen_pending(g), 3);
        CHECK(llm_gen_step(g, &err) == 1);
        llm_gen_counts gc;
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.running, 1);
        CHECK_EQ_U64(gc.waiting, 2);
        CHECK_EQ_U64(gc.kv_reserved, 2);
        size_t max_used = 0;
        CHECK(run_gen(g, m, 1000, &max_used) == 0);
        CHECK(max_used <= 3);
        CHECK_EQ_U64(c.done[0], 1);
        CHECK_EQ_U64(c.done[1], 1);
        CHECK_EQ_U64(c.done[2], 1);
        CHECK_EQ_U64(c.n_ids[0][0], 30);
        CHECK_EQ_U64(c.n_ids[1][0], 30);
        CHECK(same_as_alone(paths[mi], &c, 0, 0, p1, 20, &a));
        CHECK(same_as_alone(paths[mi], &c, 1, 0, p2, 20, &b));
        CHECK(same_as_alone(paths[mi], &c, 2, 0, p3, 20, &three));
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.kv_reserved, 0);
        CHECK_EQ_U64(kv_used(m), 0);
        gen_close(&f);
    }
}

/* n = 2 samples of a 40-token prompt, 10 tokens each: 2 blocks per choice,
 * block 0 shared: 3 blocks, exactly the budget. llm_gen_add accepts it, so
 * it must complete. */
TEST(gen_budget_exact_for_samples)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_err err;
        static collect c;
        gen_fixture f;
        if (gen_open(&f, paths[mi], 3, &c)) { CHECK(0); continue; }
        llm_infer *m = f.m;
        llm_gen *g = f.g;
        size_t V = f.V;
        uint32_t p[40];
        random_tokens(p, 40, V);
        llm_gen_params a = gparams(10, 9, 2);
        CHECK(llm_gen_add(g, p, 40, &a, (void *)(uintptr_t)0, &err) == 0);
        size_t max_used = 0;
        int rc = run_gen(g, m, 1000, &max_used);
        if (rc) printf("# %s: n=2, 40-token prompt, max_tokens 10, budget 3 blocks (what llm_gen_add reserves)\n", names[mi]);
        CHECK(rc == 0);
        CHECK(max_used <= 3);
        if (!rc) {
            CHECK_EQ_U64(c.done[0], 2);
            CHECK(same_as_alone(paths[mi], &c, 0, 0, p, 40, &a));
            CHECK(same_as_alone(paths[mi], &c, 0, 1, p, 40, &a));
        }
        llm_gen_free(g);
        f.g = NULL;
        CHECK_EQ_U64(kv_used(m), 0);   /* with the generator gone */
        gen_close(&f);
    }
}

/* Cancelling a running request frees its blocks and its reservation (a
 * waiting one can start); no more events for it; the others as alone. */
TEST(gen_cancel)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_err err;
        static collect c;
        gen_fixture f;
        if (gen_open(&f, paths[mi], 6, &c)) { CHECK(0); continue; }
        llm_infer *m = f.m;
        llm_gen *g = f.g;
        size_t V = f.V;
        uint32_t p0[20], p1[30], p2[40], p3[10];
        random_tokens(p0, 20, V), random_tokens(p1, 30, V), random_tokens(p2, 40, V), random_tokens(p3, 10, V);
        llm_gen_params a = gparams(40, 1, 1);   /* 60: 2 blocks */
        llm_gen_params b = gparams(60, 2, 1);   /* 90: 3 blocks */
        llm_gen_params d = gparams(40, 3, 1);   /* 80: 3 blocks: waits */
        llm_gen_params e = gparams(20, 4, 1);   /* 30: 1 block: waits behind d */
        CHECK(llm_gen_add(g, p0, 20, &a, (void *)(uintptr_t)0, &err) == 0);
        CHECK(llm_gen_add(g, p1, 30, &b, (void *)(uintptr_t)1, &err) == 0);
        CHECK(llm_gen_add(g, p2, 40, &d, (void *)(uintptr_t)2, &err) == 0);
        CHECK(llm_gen_add(g, p3, 10, &e, (void *)(uintptr_t)3, &err) == 0);
        for (int i = 0; i < 5; i++) CHECK(llm_gen_step(g, &err) == 1);
        llm_gen_counts gc;
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.running, 2);
        CHECK_EQ_U64(gc.waiting, 2);
        CHECK_EQ_U64(gc.kv_reserved, 5);
        size_t used_before = kv_used(m), ev0 = c.events[0];
        CHECK(ev0 > 0);
        CHECK_EQ_U64(used_before, 3);   /* 20 + 4 and 30 + 4 positions: 1 and 2 blocks */
        /* cancel the running request 0 */
        CHECK(llm_gen_cancel(g, (void *)(uintptr_t)0) == 1);
        CHECK_EQ_U64(kv_used(m), 2);
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.running, 1);
        CHECK_EQ_U64(gc.kv_reserved, 3);
        CHECK_EQ_U64(llm_gen_pending(g), 3);
        CHECK(llm_gen_cancel(g, (void *)(uintptr_t)0) == 0);   /* gone */
        CHECK(llm_gen_cancel(g, (void *)(uintptr_t)7) == 0);
        /* cancel the last waiting request: the queue's tail is fixed */
        CHECK(llm_gen_cancel(g, (void *)(uintptr_t)3) == 1);
        CHECK_EQ_U64(llm_gen_pending(g), 2);
        CHECK(llm_gen_add(g, p3, 10, &e, (void *)(uintptr_t)4, &err) == 0);
        CHECK_EQ_U64(llm_gen_pending(g), 3);
        /* the next step starts request 2 (3 + 3 <= 6), and 4 must wait */
        CHECK(llm_gen_step(g, &err) == 1);
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.running, 2);
        CHECK_EQ_U64(gc.waiting, 1);
        size_t max_used = 0;
        CHECK(run_gen(g, m, 1000, &max_used) == 0);
        CHECK(max_used <= 6);
        CHECK_EQ_U64(c.events[0], ev0);   /* nothing after the cancel */
        CHECK_EQ_U64(c.done[0], 0);
        CHECK_EQ_U64(c.done[3], 0);
        CHECK_EQ_U64(c.done[1], 1);
        CHECK_EQ_U64(c.done[2], 1);
        CHECK_EQ_U64(c.done[4], 1);
        CHECK(same_as_alone(paths[mi], &c, 1, 0, p1, 30, &b));
        CHECK(same_as_alone(paths[mi], &c, 2, 0, p2, 40, &d));
        CHECK(same_as_alone(paths[mi], &c, 4, 0, p3, 10, &e));
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.kv_reserved, 0);
        CHECK_EQ_U64(kv_used(m), 0);
        CHECK_EQ_U64(llm_gen_pending(g), 0);
        /* cancelling a running beam search frees its beams' and spare sequences' blocks */
        llm_gen_params bm = gparams(20, 0, 2);
        bm.beams = 3;
        CHECK(llm_gen_add(g, p2, 40, &bm, (void *)(uintptr_t)5, &err) == 0);
        for (int i = 0; i < 4; i++) CHECK(llm_gen_step(g, &err) == 1);
        CHECK(kv_used(m) > 0);
        CHECK(llm_gen_cancel(g, (void *)(uintptr_t)5) == 1);
        CHECK_EQ_U64(kv_used(m), 0);
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.kv_reserved, 0);
        CHECK(llm_gen_step(g, &err) == 0);
        /* the cancelled requests' sequences are free again: a request that
         * needs all 4 starts and completes */
        llm_gen_params four = gparams(8, 11, 4);   /* 4 x 1 block */
        CHECK(llm_gen_add(g, p3, 10, &four, (void *)(uintptr_t)6, &err) == 0);
        CHECK(run_gen(g, m, 100, NULL) == 0);
        CHECK_EQ_U64(c.done[6], 2);   /* choices 0 and 1 recorded */
        CHECK_EQ_U64(kv_used(m), 0);
        gen_close(&f);
    }
}

/* Prefix sharing in the generator: a later request with the same first two
 * blocks runs only the rest (cached_tokens 64); its tokens, compared with a
 * run without sharing, are reported. */
TEST(gen_share_prefixes)
{
    for (int mi = 0; mi < 2; mi++) {
        llm_err err;
        static collect c;
        gen_fixture f;
        if (gen_open(&f, paths[mi], 8, &c)) { CHECK(0); continue; }
        llm_infer *m = f.m;
        llm_gen *g = f.g;
        size_t V = f.V;
        llm_gen_share_prefixes(g, 1);
        uint32_t p0[70], p1[75];
        random_tokens(p0, 70, V);
        memcpy(p1, p0, 64 * sizeof *p1);
        random_tokens(p1 + 64, 11, V);
        llm_gen_params a = gparams(10, 1, 1), b = gparams(10, 2, 2);
        CHECK(llm_gen_add(g, p0, 70, &a, (void *)(uintptr_t)0, &err) == 0);
        CHECK(run_gen(g, m, 1000, NULL) == 0);
        CHECK_EQ_U64(c.cached[0], 0);
        CHECK_EQ_U64(kv_used(m), 0);
        CHECK(llm_gen_add(g, p1, 75, &b, (void *)(uintptr_t)1, &err) == 0);
        CHECK(llm_gen_step(g, &err) == 1);
        CHECK_EQ_U64(kv_used(m), 3);   /* 2 shared blocks and block 2 */
        CHECK(run_gen(g, m, 1000, NULL) == 0);
        CHECK_EQ_U64(c.done[1], 2);
        CHECK_EQ_U64(c.cached[1], 64);
        CHECK_EQ_U64(kv_used(m), 0);
        llm_gen_counts gc;
        llm_gen_stats(g, &gc);
        CHECK_EQ_U64(gc.kv_reserved, 0);
        uint32_t ids[CTX];
        size_t n_ids = 0;
        if (alone(paths[mi], p1, 75, &b, ids, &n_ids, 0) == 0)
            printf("# %s: shared-prefix request against a fresh run: %s\n", names[mi],
                   n_ids == c.n_ids[1][0] && !memcmp(ids, c.ids[1][0], n_ids * sizeof *ids) ? "the same tokens"
                                                                                         : "different tokens");
        else
            CHECK(0);
        gen_close(&f);
    }
}

int main(void)
{
    unit_seed();
    RUN(kvpool_alloc_to_budget);
    RUN(kvpool_registry_and_lru);
    RUN(kvpool_unregister);
    RUN(kvpool_registry_grows);
    if (make_models()) {
        printf("# cannot write the test models\n");
        return 1;
    }
    RUN(infer_sequences_match_own_and_reference);
    RUN(infer_fork_and_truncate);
    RUN(infer_kv_limit);
    RUN(infer_kv_limit_forks_in_one_pass);
    RUN(infer_prefix_sharing);
    RUN(infer_prefix_sharing_budget);
    RUN(infer_reset_with_shared_blocks);
    RUN(gen_budget_waits);
    RUN(gen_budget_exact_for_samples);
    RUN(gen_cancel);
    RUN(gen_share_prefixes);
    remove_models();
    return unit_done();
}
