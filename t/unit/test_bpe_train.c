/* BPE training (lib/bpe_train.h): known merges on tiny corpora, ties, ids,
 * special tokens, errors, the JSON's shape, and word counting through the
 * pretokenizer (one thread or many give the same counts). */
#include "bpe_train.h"
#include "unit.h"

#include <jansson.h>

static const char *GPT2_RE = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct { const char *w; uint64_t n; } wc;

/* Trains on the given words; returns the parsed tokenizer.json or NULL (err filled). */
static json_t *train_words(const wc *words, size_t nw, size_t vocab, const char *const *sp, size_t nsp, llm_err *err)
{
    llm_bpe_trainer *t = llm_bpe_trainer_new(NULL);
    for (size_t i = 0; i < nw; i++)
        if (llm_bpe_trainer_add_word(t, words[i].w, strlen(words[i].w), words[i].n, err)) return NULL;
    llm_strbuf sb = {0};
    json_t *j = NULL;
    if (llm_bpe_trainer_finish(t, vocab, sp, nsp, GPT2_RE, &sb, err) == 0) {
        json_error_t je;
        j = json_loadb(sb.data, sb.len, JSON_REJECT_DUPLICATES, &je);
        if (!j) printf("# JSON does not parse: %s (line %d)\n", je.text, je.line);
    }
    llm_sb_free(&sb);
    llm_bpe_trainer_free(t);
    return j;
}

static json_t *merges_of(json_t *j) { return json_object_get(json_object_get(j, "model"), "merges"); }
static json_t *vocab_of(json_t *j) { return json_object_get(json_object_get(j, "model"), "vocab"); }

/* merge i is [l, r] */
static int merge_is(json_t *j, size_t i, const char *l, const char *r)
{
    json_t *m = json_array_get(merges_of(j), i);
    if (!json_is_array(m) || json_array_size(m) != 2) return 0;
    const char *a = json_string_value(json_array_get(m, 0)), *b = json_string_value(json_array_get(m, 1));
    int ok = a && b && !strcmp(a, l) && !strcmp(b, r);
    if (!ok) printf("# merge %zu is [%s, %s], expected [%s, %s]\n", i, a ? a : "?", b ? b : "?", l, r);
    return ok;
}

static int64_t vocab_id(json_t *j, const char *tok)
{
    json_t *v = json_object_get(vocab_of(j), tok);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

TEST(aaab_merges)
{
    llm_err err;
    wc w[] = {{"aaab", 1}};
    json_t *j = train_words(w, 1, 1000, NULL, 0, &err);
    CHECK(j);
    if (!j) return;
    /* (a,a) has 2, then (aa,a) and (a,b) tie at 1: the smaller ids, (a,b) */
    CHECK_EQ_U64(json_array_size(merges_of(j)), 3);
    CHECK(merge_is(j, 0, "a", "a"));
    CHECK(merge_is(j, 1, "a", "b"));
    CHECK(merge_is(j, 2, "aa", "ab"));
    /* stops when every word is one token: 256 + 3 */
    CHECK_EQ_U64(json_object_size(vocab_of(j)), 259);
    CHECK_EQ_U64(vocab_id(j, "aa"), 256);
    CHECK_EQ_U64(vocab_id(j, "ab"), 257);
    CHECK_EQ_U64(vocab_id(j, "aaab"), 258);
    json_decref(j);
}

TEST(counts_weight_pairs)
{
    llm_err err;
    /* "xy" x3 beats "ab" x2 even though "ab" appears in more words */
    wc w[] = {{"ab", 1}, {"abq", 1}, {"xy", 3}};
    json_t *j = train_words(w, 3, 256 + 2, NULL, 0, &err);
    CHECK(j);
    if (!j) return;
    CHECK_EQ_U64(json_array_size(merges_of(j)), 2);
    CHECK(merge_is(j, 0, "x", "y"));
    CHECK(merge_is(j, 1, "a", "b"));
    json_decref(j);
}

TEST(overlapping_runs_merge_left_to_right)
{
    llm_err err;
    wc w[] = {{"aaa", 5}, {"ba", 3}};
    json_t *j = train_words(w, 2, 256 + 2, NULL, 0, &err);
    CHECK(j);
    if (!j) return;
    /* (a,a) = 10 first; "aaa" becomes [aa, a]: then (aa,a) = 5 beats (b,a) = 3 */
    CHECK(merge_is(j, 0, "a", "a"));
    CHECK(merge_is(j, 1, "aa", "a"));
    json_decref(j);
}

TEST(ties_follow_gpt2_byte_order)
{
    llm_err err;
    /* byte 0 ("Ā") sorts after every printable byte in GPT-2's order, so "zz"
     * wins the tie although 'z' > 0 as a byte; "!!" beats "zz" */
    wc w[] = {{"\x01\x01", 2}, {"zz", 2}, {"!!", 2}};
    json_t *j = train_words(w, 3, 1000, NULL, 0, &err);
    CHECK(j);
    if (!j) return;
    CHECK(merge_is(j, 0, "!", "!"));
    CHECK(merge_is(j, 1, "z", "z"));
    CHECK(merge_is(j, 2, "\xc4\x81", "\xc4\x81")); /* byte 1 -> U+0101 */
    json_decref(j);
}

TEST(byte_ids_and_strings)
{
    llm_err err;
    wc w[] = {{" \"\\\n", 1}};
    json_t *j = train_words(w, 1, 256, NULL, 0, &err);
    CHECK(j);
    if (!j) return;
    CHECK_EQ_U64(json_array_size(merges_of(j)), 0);
    CHECK_EQ_U64(json_object_size(vocab_of(j)), 256);
    CHECK_EQ_U64(vocab_id(j, "!"), 0);
    CHECK_EQ_U64(vocab_id(j, "~"), 93);
    CHECK_EQ_U64(vocab_id(j, "\xc2\xa1"), 94);             /* ¡ = byte 161 */
    CHECK_EQ_U64(vocab_id(j, "\xc3\xbf"), 187);            /* ÿ = byte 255 */
    CHECK_EQ_U64(vocab_id(j, "\xc4\x80"), 188);            /* Ā = byte 0 */
    CHECK_EQ_U64(vocab_id(j, "\xc4\xa0"), 188 + 32);       /* Ġ = space */
    CHECK_EQ_U64(vocab_id(j, "\xc5\x83"), 255);            /* Ń = byte 173 */
    CHECK_EQ_U64(vocab_id(j, "\""), 1);
    CHECK_EQ_U64(vocab_id(j, "\\"), 92 - 33);
    json_decref(j);
}

TEST(specials_come_first)
{
    llm_err err;
    const char *sp[] = {"<|endoftext|>", "<pad>"};
    wc w[] = {{"hello", 4}, {"help", 2}};
    json_t *j = train_words(w, 2, 2 + 256 + 3, sp, 2, &err);
    CHECK(j);
    if (!j) return;
    CHECK_EQ_U64(vocab_id(j, "<|endoftext|>"), 0);
    CHECK_EQ_U64(vocab_id(j, "<pad>"), 1);
    CHECK_EQ_U64(vocab_id(j, "!"), 2);
    CHECK_EQ_U64(json_object_size(vocab_of(j)), 2 + 256 + 3);
    CHECK_EQ_U64(json_array_size(merges_of(j)), 3);
    CHECK(merge_is(j, 0, "e", "l"));   /* (h,e) (e,l) (l,l)/(l,p) ... tie at 6: e < h */
    CHECK_EQ_U64(vocab_id(j, "el"), 258);
    json_t *added = json_object_get(j, "added_tokens");
    CHECK_EQ_U64(json_array_size(added), 2);
    json_t *a1 = json_array_get(added, 1);
    CHECK(json_integer_value(json_object_get(a1, "id")) == 1);
    CHECK(!strcmp(json_string_value(json_object_get(a1, "content")), "<pad>"));
    CHECK(json_is_true(json_object_get(a1, "special")));
    CHECK(json_is_false(json_object_get(a1, "normalized")));
    json_decref(j);
}

TEST(special_spelled_as_a_byte_string)
{
    llm_err err;
    /* "ab" as a special takes the place of the merged token "ab": no
     * duplicate vocab key, and the merge (a,b) yields the special's id */
    const char *sp[] = {"ab"};
    wc w[] = {{"abab", 3}};
    json_t *j = train_words(w, 1, 1000, sp, 1, &err);
    CHECK(j);
    if (!j) return;
    CHECK(merge_is(j, 0, "a", "b"));
    CHECK(merge_is(j, 1, "ab", "ab"));
    CHECK_EQ_U64(vocab_id(j, "ab"), 0);
    CHECK_EQ_U64(vocab_id(j, "abab"), 257);
    CHECK_EQ_U64(json_object_size(vocab_of(j)), 258);
    json_decref(j);
}

TEST(json_shape)
{
    llm_err err;
    wc w[] = {{"abc", 1}};
    json_t *j = train_words(w, 1, 300, NULL, 0, &err);
    CHECK(j);
    if (!j) return;
    CHECK(!strcmp(json_string_value(json_object_get(j, "version")), "1.0"));
    CHECK(json_is_null(json_object_get(j, "normalizer")));
    json_t *pre = json_object_get(j, "pre_tokenizer");
    CHECK(!strcmp(json_string_value(json_object_get(pre, "type")), "Sequence"));
    json_t *split = json_array_get(json_object_get(pre, "pretokenizers"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex")), GPT2_RE));
    CHECK(!strcmp(json_string_value(json_object_get(split, "behavior")), "Isolated"));
    json_t *bl = json_array_get(json_object_get(pre, "pretokenizers"), 1);
    CHECK(!strcmp(json_string_value(json_object_get(bl, "type")), "ByteLevel"));
    CHECK(json_is_false(json_object_get(bl, "use_regex")));
    json_t *model = json_object_get(j, "model");
    CHECK(!strcmp(json_string_value(json_object_get(model, "type")), "BPE"));
    CHECK(json_is_false(json_object_get(model, "byte_fallback")));
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(j, "decoder"), "type")), "ByteLevel"));
    json_decref(j);
}

TEST(errors)
{
    llm_err err;
    wc w[] = {{"abc", 1}};
    const char *sp[] = {"<s>", "</s>", "<s>"};
    CHECK(!train_words(w, 1, 255, NULL, 0, &err));
    CHECK(strstr(err.msg, "smaller than the 256 byte tokens"));
    CHECK(!train_words(w, 1, 257, sp, 2, &err));
    CHECK(strstr(err.msg, "smaller"));
    CHECK(!train_words(w, 1, 1000, sp, 3, &err));
    CHECK(strstr(err.msg, "twice"));
    const char *empty[] = {""};
    CHECK(!train_words(w, 1, 1000, empty, 1, &err));
    CHECK(strstr(err.msg, "empty"));
    const char *bad[] = {"\xff"};
    CHECK(!train_words(w, 1, 1000, bad, 1, &err));
    CHECK(strstr(err.msg, "UTF-8"));
    llm_bpe_trainer *t = llm_bpe_trainer_new(NULL);
    int rc = llm_bpe_trainer_add_word(t, "", 0, 1, &err);
    CHECK_ERR(rc, err, "empty");
    rc = llm_bpe_trainer_add_text(t, "abc", 3, &err);
    CHECK_ERR(rc, err, "pretokenizer");
    llm_bpe_trainer_free(t);
}

TEST(no_words)
{
    llm_err err;
    json_t *j = train_words(NULL, 0, 5000, NULL, 0, &err);
    CHECK(j);
    if (!j) return;
    CHECK_EQ_U64(json_object_size(vocab_of(j)), 256);
    CHECK_EQ_U64(json_array_size(merges_of(j)), 0);
    json_decref(j);
}

/* ---- through the pretokenizer ---- */

static char *train_text(const llm_pretok *p, const char *text, size_t n, int threads, size_t min_chunk,
                        size_t vocab, uint64_t *total, size_t *distinct)
{
    llm_err err;
    llm_bpe_trainer *t = llm_bpe_trainer_new(p);
    llm_bpe_trainer_set_threads(t, threads, min_chunk);
    if (llm_bpe_trainer_add_text(t, text, n, &err)) {
        printf("# add_text: %s\n", err.msg);
        llm_bpe_trainer_free(t);
        return NULL;
    }
    *distinct = llm_bpe_trainer_words(t, total);
    llm_strbuf sb = {0};
    int rc = llm_bpe_trainer_finish(t, vocab, NULL, 0, GPT2_RE, &sb, &err);
    llm_bpe_trainer_free(t);
    if (rc) {
        printf("# finish: %s\n", err.msg);
        llm_sb_free(&sb);
        return NULL;
    }
    return sb.data;
}

TEST(counts_pieces_of_text)
{
    llm_err err;
    llm_pretok *p;
    if (llm_pretok_new(&p, GPT2_RE, &err)) { printf("# %s\n", err.msg); CHECK(0); return; }
    const char *text = "hello hello world's end\n\n  hello";
    /* pieces: "hello" " hello" " world" "'s" " end" "\n\n " " " "hello"... per the regex */
    uint64_t total;
    size_t distinct;
    char *js = train_text(p, text, strlen(text), 1, 0, 1000, &total, &distinct);
    CHECK(js);
    /* hello | " hello" | " world" | "'s" | " end" | "\n\n " | " hello" */
    CHECK_EQ_U64(total, 7);
    CHECK_EQ_U64(distinct, 6);
    free(js);
    llm_bpe_trainer *t = llm_bpe_trainer_new(p);
    int rc = llm_bpe_trainer_add_text(t, "ok\xc3(", 4, &err);
    CHECK_ERR(rc, err, "invalid UTF-8 at byte 2");
    llm_bpe_trainer_free(t);
    llm_pretok_free(p);
}

TEST(threads_count_the_same)
{
    llm_err err;
    llm_pretok *p;
    if (llm_pretok_new(&p, GPT2_RE, &err)) { printf("# %s\n", err.msg); CHECK(0); return; }
    /* random words, spaces, newlines, digits, punctuation and some UTF-8 */
    static const char *parts[] = {"the", " of", " and", "\n", "  ", "\n\n", "!", "...", " 12", "3", "'s", "'ll",
                                  " caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", " ", "\t", "x", " Zebra", "-", "\r\n"};
    size_t n = 0, cap = 300000;
    char *text = malloc(cap + 16);
    while (n < cap) {
        const char *s = parts[unit_rand() % (sizeof parts / sizeof *parts)];
        size_t l = strlen(s);
        memcpy(text + n, s, l);
        n += l;
    }
    uint64_t t1, tn;
    size_t d1, dn;
    char *a = train_text(p, text, n, 1, 0, 600, &t1, &d1);
    CHECK(a);
    for (int th = 2; th <= 7 && a; th += 5) {
        char *b = train_text(p, text, n, th, 1000, 600, &tn, &dn);
        CHECK(b && !strcmp(a, b));
        CHECK_EQ_U64(t1, tn);
        CHECK_EQ_U64(d1, dn);
        free(b);
    }
    free(a);
    free(text);
    llm_pretok_free(p);
}

int main(void)
{
    unit_seed();
    RUN(aaab_merges);
    RUN(counts_weight_pairs);
    RUN(overlapping_runs_merge_left_to_right);
    RUN(ties_follow_gpt2_byte_order);
    RUN(byte_ids_and_strings);
    RUN(specials_come_first);
    RUN(special_spelled_as_a_byte_string);
    RUN(json_shape);
    RUN(errors);
    RUN(no_words);
    RUN(counts_pieces_of_text);
    RUN(threads_count_the_same);
    printf("1..%d\n", unit_count);
    return unit_done();
}
