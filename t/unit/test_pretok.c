/* Pre-tokenization: each hand-written scanner against the PCRE2 engine on the
 * same pattern (fixed tricky cases, then thousands of random strings over a
 * weighted alphabet of many scripts), the Unicode tables against PCRE2's
 * (which are Unicode 14.0 in PCRE2 10.42: code points that changed since are
 * left out of random inputs), the PCRE2 engine's find-all rules, and UTF-8. */
#include "pretok.h"
#include "unicode.h"
#include "unit.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---- helpers ---- */

typedef struct {
    size_t n, cap;
    size_t *se; /* start, end pairs */
} pieces;

static void pieces_of(const llm_pretok *p, llm_pretok_scratch *s, const char *t, size_t n, pieces *out)
{
    out->n = 0;
    size_t pos = 0, st, en;
    while (llm_pretok_find(p, s, t, n, pos, &st, &en)) {
        if (en <= st || st < pos || en > n) { /* broken contract: record and stop */
            printf("# find returned [%zu, %zu) from pos %zu, len %zu\n", st, en, pos, n);
            unit_failures++;
            break;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? 2 * out->cap : 64;
            out->se = realloc(out->se, out->cap * 2 * sizeof *out->se);
        }
        out->se[2 * out->n] = st, out->se[2 * out->n + 1] = en;
        out->n++;
        pos = en;
    }
}

static void print_escaped(const char *label, const char *t, size_t n)
{
    printf("# %s \"", label);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') putchar(c);
        else printf("\\x%02x", c);
    }
    printf("\"\n");
}

static void print_pieces(const char *label, const char *t, const pieces *p)
{
    printf("# %s:", label);
    for (size_t k = 0; k < p->n; k++) {
        printf(" [");
        for (size_t i = p->se[2 * k]; i < p->se[2 * k + 1]; i++) {
            unsigned char c = (unsigned char)t[i];
            if (c >= 0x21 && c < 0x7f && c != '\\') putchar(c);
            else printf("\\x%02x", c);
        }
        printf("]");
    }
    printf("\n");
}

static int same_pieces(const pieces *a, const pieces *b)
{
    return a->n == b->n && (!a->n || !memcmp(a->se, b->se, a->n * 2 * sizeof *a->se));
}

/* A scanner and the PCRE2 engine on one pattern. */
typedef struct {
    const char *what, *pattern;
    llm_pretok *scan, *re;
    llm_pretok_scratch *ss, *rs;
    pieces a, b;
    int reported;
} pair;

static int pair_open(pair *pr, const char *what, const char *pattern, const char *engine)
{
    memset(pr, 0, sizeof *pr);
    pr->what = what, pr->pattern = pattern;
    llm_err err;
    if (!pattern || llm_pretok_new(&pr->scan, pattern, &err) || llm_pretok_new_regex(&pr->re, pattern, &err)) {
        printf("# %s: %s\n", what, pattern ? err.msg : "no pattern");
        return -1;
    }
    if (strcmp(llm_pretok_engine(pr->scan), engine) || strcmp(llm_pretok_engine(pr->re), "pcre2")) {
        printf("# %s: engines %s, %s\n", what, llm_pretok_engine(pr->scan), llm_pretok_engine(pr->re));
        return -1;
    }
    pr->ss = llm_pretok_scratch_new(pr->scan);
    pr->rs = llm_pretok_scratch_new(pr->re);
    return pr->ss && pr->rs ? 0 : -1;
}

static void pair_close(pair *pr)
{
    llm_pretok_scratch_free(pr->ss);
    llm_pretok_scratch_free(pr->rs);
    llm_pretok_free(pr->scan);
    llm_pretok_free(pr->re);
    free(pr->a.se);
    free(pr->b.se);
}

/* Compares the piece lists; returns 1 when they agree. The text is copied to
 * a heap block of its exact size, so that a sanitizer sees any read past it. */
static int pair_check(pair *pr, const char *text, size_t n)
{
    char *t = malloc(n ? n : 1);
    memcpy(t, text, n);
    pieces_of(pr->scan, pr->ss, t, n, &pr->a);
    pieces_of(pr->re, pr->rs, t, n, &pr->b);
    free(t);
    if (same_pieces(&pr->a, &pr->b)) return 1;
    unit_failures++;
    if (pr->reported++ < 5) {
        printf("# %s: scanner and PCRE2 differ on:\n", pr->what);
        print_escaped("text", text, n);
        print_pieces("scanner", text, &pr->a);
        print_pieces("pcre2  ", text, &pr->b);
    }
    return 0;
}

/* tiktoken 0.14's own spellings (tiktoken_ext/openai_public.py), which the
 * scanners recognise too */
#define O200K_U "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define O200K_W "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
static const char R50K_TT[] = "'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s";
static const char CL100K_TT[] =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|"
    "\\s*[\\r\\n]|\\s+(?!\\S)|\\s";
static const char O200K_TT[] =
    "[^\\r\\n\\p{L}\\p{N}]?" O200K_U "*" O200K_W "+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "[^\\r\\n\\p{L}\\p{N}]?" O200K_U "+" O200K_W "*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const struct {
    const char *what, *name, *pattern, *engine;
} scanners[] = {
    {"gpt2", "gpt2", NULL, "gpt2"},
    {"cl100k_base", "cl100k_base", NULL, "cl100k"},
    {"o200k_base", "o200k_base", NULL, "o200k"},
    {"llama3", "llama3", NULL, "llama3"},
    {"qwen2", "qwen2", NULL, "qwen2"},
    {"r50k (tiktoken spelling)", NULL, R50K_TT, "gpt2"},
    {"cl100k (tiktoken spelling)", NULL, CL100K_TT, "cl100k"},
    {"o200k (tiktoken spelling)", NULL, O200K_TT, "o200k"},
};
#define NSCAN (sizeof scanners / sizeof scanners[0])

static int open_scanner(pair *pr, size_t k)
{
    const char *pat = scanners[k].pattern ? scanners[k].pattern : llm_pretok_portable_pattern(scanners[k].name);
    return pair_open(pr, scanners[k].what, pat, scanners[k].engine);
}

/* ---- Unicode classes: the tables against PCRE2's ---- */

static pcre2_code *class_re;
static pcre2_match_data *class_md;

/* which of L N S M UPPER LOWER PCRE2 gives the code point */
static unsigned pcre2_flags(uint32_t cp)
{
    if (!class_re) {
        int code;
        PCRE2_SIZE off;
        class_re = pcre2_compile((PCRE2_SPTR) "(?=(\\p{L})?)(?=(\\p{N})?)(?=(\\s)?)(?=(\\p{M})?)"
                                              "(?=([\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])?)"
                                              "(?=([\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])?)",
                                 PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &code, &off, NULL);
        if (!class_re) return 0xFF;
        pcre2_jit_compile(class_re, PCRE2_JIT_COMPLETE);
        class_md = pcre2_match_data_create_from_pattern(class_re, NULL);
    }
    char buf[4];
    size_t n = llm_utf8_encode(cp, buf);
    if (pcre2_match(class_re, (PCRE2_SPTR)buf, n, 0, 0, class_md, NULL) < 0) return 0xFF;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(class_md);
    uint32_t groups = pcre2_get_ovector_count(class_md);
    static const unsigned bit[] = {0, LLM_UC_L, LLM_UC_N, LLM_UC_S, LLM_UC_M, LLM_UC_UPPER, LLM_UC_LOWER};
    unsigned f = 0;
    for (uint32_t g = 1; g < 7 && g < groups; g++)
        if (ov[2 * g] != PCRE2_UNSET) f |= bit[g];
    return f;
}

static int changed_since_pcre2(uint32_t cp)
{
    for (size_t k = 0; k < llm_uc_n_changed; k++)
        if (cp >= llm_uc_changed[2 * k] && cp <= llm_uc_changed[2 * k + 1]) return 1;
    return 0;
}

/* Whether PCRE2 classifies cp as the tables do, so that it can be oracle. */
static int oracle_agrees(uint32_t cp) { return pcre2_flags(cp) == llm_uc_flags(cp); }

TEST(unicode_tables_against_pcre2)
{
    CHECK(!strcmp(llm_unicode_version(), "16.0.0"));
    size_t differ = 0, unexplained = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        unsigned a = llm_uc_flags(cp), b = pcre2_flags(cp);
        if (a == b) continue;
        differ++;
        /* PCRE2's \s has U+180E (its \h list); Unicode's White_Space has not since 6.3 */
        if (cp == 0x180E && (a ^ b) == LLM_UC_S) continue;
        if (changed_since_pcre2(cp)) continue;
        if (unexplained++ < 10) printf("# U+%04X: tables 0x%02x, PCRE2 0x%02x\n", cp, a, b);
    }
    printf("# %zu code points classed differently by PCRE2 %d.%d, all changed between Unicode %s and %s, or U+180E\n",
           differ, PCRE2_MAJOR, PCRE2_MINOR, llm_uc_changed_since, llm_unicode_version());
    CHECK_EQ_U64(unexplained, 0);
    /* facts that pin the version: U+1C89 is a letter new in 16.0; U+A7CE is new in 17.0 */
    CHECK(llm_uc_is_letter(0x1C89) && llm_uc_is_upper_class(0x1C89) && !llm_uc_is_lower_class(0x1C89));
    CHECK(!llm_uc_is_letter(0xA7CE) && !llm_uc_flags(0x88F));
    /* White_Space, exactly */
    static const uint32_t ws[] = {9, 10, 11, 12, 13, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
                                  0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
    size_t nws = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) nws += llm_uc_is_space(cp);
    CHECK_EQ_U64(nws, sizeof ws / sizeof ws[0]);
    for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++) CHECK(llm_uc_flags(ws[k]) == LLM_UC_S);
    CHECK(!llm_uc_is_space(0x180E) && !llm_uc_is_space(0x200B) && !llm_uc_is_space(0xFEFF) && !llm_uc_is_space(0x1C));
    /* a few classes */
    CHECK(llm_uc_flags('A') == (LLM_UC_L | LLM_UC_UPPER) && llm_uc_flags('z') == (LLM_UC_L | LLM_UC_LOWER));
    CHECK(llm_uc_flags(0x01C5) == (LLM_UC_L | LLM_UC_UPPER));                /* Lt */
    CHECK(llm_uc_flags(0x02B0) == (LLM_UC_L | LLM_UC_UPPER | LLM_UC_LOWER)); /* Lm */
    CHECK(llm_uc_flags(0x4E2D) == (LLM_UC_L | LLM_UC_UPPER | LLM_UC_LOWER)); /* Lo */
    CHECK(llm_uc_flags(0x0301) == (LLM_UC_M | LLM_UC_UPPER | LLM_UC_LOWER)); /* Mn */
    CHECK(llm_uc_flags(0x20DD) == (LLM_UC_M | LLM_UC_UPPER | LLM_UC_LOWER)); /* Me */
    CHECK(llm_uc_is_number(0x0663) && llm_uc_is_number(0x216B) && llm_uc_is_number(0xBD) && llm_uc_is_number(0xB2));
    CHECK(llm_uc_flags(0xFFFD) == 0 && llm_uc_flags(0x110000) == 0 && llm_uc_flags(0x10FFFF) == 0);
}

/* ---- UTF-8 ---- */

TEST(utf8)
{
    static const struct {
        const char *s;
        size_t n, valid;
    } cases[] = {
        {"", 0, 0},
        {"abc", 3, 3},
        {"a\xc3\xa9z", 4, 4},
        {"\xe2\x82\xac\xf0\x9f\x98\x80", 7, 7},
        {"ab\xc0\x80", 4, 2},          /* overlong NUL */
        {"ab\xc1\xbf", 4, 2},          /* overlong */
        {"\xe0\x9f\xbf", 3, 0},        /* overlong 3-byte */
        {"x\xed\xa0\x80", 4, 1},       /* surrogate */
        {"\xed\x9f\xbf", 3, 3},        /* U+D7FF */
        {"\xf0\x8f\xbf\xbf", 4, 0},    /* overlong 4-byte */
        {"\xf4\x8f\xbf\xbf", 4, 4},    /* U+10FFFF */
        {"\xf4\x90\x80\x80", 4, 0},    /* > U+10FFFF */
        {"\xf5\x80\x80\x80", 4, 0},
        {"abcdefgh\x80", 9, 8},        /* lone continuation after the 8-byte fast path */
        {"abcdefghijklmno\xe2\x82", 17, 15}, /* truncated */
        {"\xc3", 1, 0},
        {"\xff", 1, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t got = llm_utf8_valid_prefix(cases[k].s, cases[k].n);
        if (got != cases[k].valid) printf("# case %zu\n", k);
        CHECK_EQ_U64(got, cases[k].valid);
    }
    /* every scalar value round-trips through encode, validate and decode */
    size_t bad = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        char b[4];
        size_t n = llm_utf8_encode(cp, b);
        uint32_t back;
        size_t m = llm_utf8_decode(b, n, 0, &back);
        if (m != n || back != cp || llm_utf8_valid_prefix(b, n) != n ||
            llm_utf8_decode(b, n == 1 ? 1 : n - 1, 0, &back) != 1)
            bad++;
    }
    CHECK_EQ_U64(bad, 0);
    /* random bytes: the prefix is valid, and the decoder never reads past the end */
    for (int r = 0; r < 20000; r++) {
        char b[16];
        size_t n = unit_rand() % 16;
        for (size_t i = 0; i < n; i++) b[i] = (char)(unit_rand() % 4 ? 0x80 + unit_rand() % 0x80 : unit_rand() % 0x80);
        size_t v = llm_utf8_valid_prefix(b, n);
        CHECK(v <= n);
        CHECK_EQ_U64(llm_utf8_valid_prefix(b, v), v);
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t l = llm_utf8_decode(b, n, i, &cp);
            if (l < 1 || i + l > n) { CHECK(0); break; }
            i += l;
        }
    }
}

/* ---- the named patterns and the engines ---- */

TEST(named_patterns)
{
    static const struct {
        const char *name, *engine;
    } names[] = {{"gpt2", "gpt2"},       {"r50k_base", "gpt2"},  {"p50k_base", "gpt2"}, {"cl100k_base", "cl100k"},
                 {"o200k_base", "o200k"}, {"llama3", "llama3"}, {"qwen2", "qwen2"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const char *pat = llm_pretok_named_pattern(names[k].name);
        CHECK(pat != NULL);
        if (!pat) continue;
        llm_pretok *p;
        llm_err err;
        CHECK(llm_pretok_new(&p, pat, &err) == 0);
        CHECK(!strcmp(llm_pretok_engine(p), names[k].engine));
        llm_pretok_free(p);
        CHECK(llm_pretok_new_regex(&p, pat, &err) == 0);
        CHECK(!strcmp(llm_pretok_engine(p), "pcre2"));
        llm_pretok_free(p);
    }
    CHECK(llm_pretok_named_pattern("gpt3") == NULL && llm_pretok_named_pattern(NULL) == NULL);
    /* named: tiktoken 0.14's own spellings; portable: as in ../shared/refs/tokenizers/ (the .json
     * files) and Llama 3's tokenizer.json */
    CHECK(!strcmp(llm_pretok_named_pattern("gpt2"), R50K_TT) && !strcmp(llm_pretok_named_pattern("p50k_base"), R50K_TT));
    CHECK(!strcmp(llm_pretok_named_pattern("cl100k_base"), CL100K_TT));
    CHECK(!strcmp(llm_pretok_named_pattern("o200k_base"), O200K_TT));
    CHECK(llm_pretok_portable_pattern("gpt3") == NULL);
    CHECK(!strcmp(llm_pretok_portable_pattern("gpt2"),
                  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"));
    CHECK(!strcmp(llm_pretok_named_pattern("llama3"),
                  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"));
    /* a pattern that differs by one character is not a known one */
    llm_pretok *p;
    llm_err err;
    CHECK(llm_pretok_new(&p, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s*", &err) == 0);
    CHECK(!strcmp(llm_pretok_engine(p), "pcre2"));
    llm_pretok_free(p);
}

TEST(compile_errors)
{
    llm_pretok *p = (llm_pretok *)1;
    llm_err err;
    int rc = llm_pretok_new(&p, "ab(c", &err);
    CHECK_ERR(rc, err, "offset 4");
    CHECK(p == NULL);
    rc = llm_pretok_new(&p, "x\\p{Bogus}", &err);
    CHECK_ERR(rc, err, "offset");
    rc = llm_pretok_new_regex(&p, "[z-a]", &err);
    CHECK_ERR(rc, err, "offset");
    rc = llm_pretok_new(&p, NULL, &err);
    CHECK_ERR(rc, err, "pattern");
}

/* pieces of text under a pattern, as "a|b|c" */
static void joined(const char *pattern, int regex, const char *t, size_t n, char *out, size_t cap)
{
    llm_pretok *p;
    llm_err err;
    out[0] = 0;
    if ((regex ? llm_pretok_new_regex : llm_pretok_new)(&p, pattern, &err)) {
        snprintf(out, cap, "error: %s", err.msg);
        return;
    }
    llm_pretok_scratch *s = llm_pretok_scratch_new(p);
    pieces pc = {0};
    pieces_of(p, s, t, n, &pc);
    size_t o = 0;
    for (size_t k = 0; k < pc.n && o + 1 < cap; k++) {
        if (k) out[o++] = '|';
        for (size_t i = pc.se[2 * k]; i < pc.se[2 * k + 1] && o + 1 < cap; i++) out[o++] = t[i];
    }
    out[o] = 0;
    free(pc.se);
    llm_pretok_scratch_free(s);
    llm_pretok_free(p);
}

#define CHECK_SPLIT(pattern, regex, text, want)                              \
    do {                                                                     \
        char got_[1024];                                                     \
        joined(pattern, regex, text, sizeof text - 1, got_, sizeof got_);    \
        if (strcmp(got_, want)) printf("# got \"%s\", want \"%s\"\n", got_, want); \
        CHECK(!strcmp(got_, want));                                          \
    } while (0)

TEST(pcre2_find_all)
{
    /* empty matches are never pieces: on one character further (Rust regex and
     * Oniguruma, as tiktoken and tokenizers use them, give the same non-empty pieces) */
    CHECK_SPLIT("x*", 1, "aaxxbx", "xx|x");
    CHECK_SPLIT("x*|y", 1, "yxy", "x");
    CHECK_SPLIT("\\b", 1, "ab cd", "");
    CHECK_SPLIT("(?=é)|é+", 1, "aéébé", ""); /* empty at each é; a multi-byte step */
    CHECK_SPLIT("é+", 1, "aéébé", "éé|é");
    /* text between matches is skipped; matches after pos only */
    CHECK_SPLIT("\\p{Lu}\\p{Ll}*", 1, "hello World, Über alles", "World|Über");
    /* lookbehind sees the text before pos */
    {
        llm_pretok *p;
        llm_err err;
        CHECK(llm_pretok_new(&p, "(?<=a)b", &err) == 0);
        llm_pretok_scratch *s = llm_pretok_scratch_new(p);
        size_t st, en;
        CHECK(llm_pretok_find(p, s, "abab", 4, 1, &st, &en) == 1 && st == 1 && en == 2);
        CHECK(llm_pretok_find(p, s, "abab", 4, 2, &st, &en) == 1 && st == 3 && en == 4);
        CHECK(llm_pretok_find(p, s, "abab", 4, 4, &st, &en) == 0);
        CHECK(llm_pretok_find(p, s, "abab", 4, 9, &st, &en) == 0);
        /* invalid UTF-8 never matches and never crashes (PCRE2_MATCH_INVALID_UTF) */
        CHECK(llm_pretok_find(p, s, "a\xffgab", 5, 0, &st, &en) == 1 && st == 4 && en == 5);
        llm_pretok_scratch_free(s);
        llm_pretok_free(p);
    }
    /* a scanner at the end of the text */
    {
        llm_pretok *p;
        llm_err err;
        CHECK(llm_pretok_new(&p, llm_pretok_named_pattern("gpt2"), &err) == 0);
        llm_pretok_scratch *s = llm_pretok_scratch_new(p);
        size_t st, en;
        CHECK(s && llm_pretok_find(p, s, "ab", 2, 2, &st, &en) == 0);
        CHECK(llm_pretok_find(p, s, "ab", 0, 0, &st, &en) == 0);
        llm_pretok_scratch_free(s);
        llm_pretok_free(p);
    }
}

/* Expected pieces, worked out by hand from the regex and confirmed with
 * tiktoken 0.14 where marked (see the report on how). Both engines must
 * give them. */
TEST(known_splits)
{
    static const struct {
        const char *name, *text, *want;
    } cases[] = {
        {"gpt2", "Hello world's 12345 !!!  \n\n x", "Hello| world|'s| 12345| !!!|  \n\n| x"},
        {"gpt2", "I'LL  don't\t\tx", "I|'|LL| | don|'t|\t|\t|x"},
        {"gpt2", "a  ", "a|  "},
        {"cl100k_base", "Hello world's 12345 !!!  \n\n x", "Hello| world|'s| |123|45| !!!|  \n\n| x"},
        {"cl100k_base", "I'LL  don'T\t\tx", "I|'LL| | don|'T|\t|\tx"},
        {"cl100k_base", "foo.\r\n\r\nbar", "foo|.\r\n\r\n|bar"},
        {"cl100k_base", "a \n  b", "a| \n| | b"},
        {"cl100k_base", "\n  ", "\n|  "},            /* tiktoken's spelling differs: below */
        {"cl100k_base", "x'\xc5\xbf" "a", "x|'\xc5\xbf" "a"}, /* 'ſ is no contraction here */
        {"llama3", "x'\xc5\xbf" "a", "x|'\xc5\xbf|a"},        /* (?i:'s) matches 'ſ (tokenizers: the same) */
        {"qwen2", "abc 12345", "abc| |1|2|3|4|5"},
        {"o200k_base", "HELLOworld Hello WORLD don't", "HELLOworld| Hello| WORLD| don't"},
        {"o200k_base", "path/to//x\n/\ny", "path|/to|//|x|\n|/\n|y"},
        {"o200k_base", "e\xcc\x81t\xc3\xa9", "e\xcc\x81t\xc3\xa9"},         /* marks are in both letter classes */
        {"o200k_base", "A\xcc\x81" "B", "A\xcc\x81|B"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *pat = llm_pretok_portable_pattern(cases[k].name);
        for (int regex = 0; regex < 2; regex++) {
            char got[512];
            joined(pat, regex, cases[k].text, strlen(cases[k].text), got, sizeof got);
            if (strcmp(got, cases[k].want)) {
                printf("# %s (%s): case %zu\n", cases[k].name, regex ? "pcre2" : "scanner", k);
                print_escaped("got ", got, strlen(got));
                print_escaped("want", cases[k].want, strlen(cases[k].want));
                CHECK(0);
            }
        }
    }
    /* tiktoken's spellings: \s++$ takes a final whitespace run whole; (?i:) folds ſ */
    CHECK_SPLIT(CL100K_TT, 0, "\n  ", "\n  ");
    CHECK_SPLIT(CL100K_TT, 1, "\n  ", "\n  ");
    CHECK_SPLIT(CL100K_TT, 0, "a\n  b\n ", "a|\n| | b|\n ");
    CHECK_SPLIT(CL100K_TT, 0, "'\xc5\xbf" "a", "'\xc5\xbf|a");
    CHECK_SPLIT(O200K_TT, 0, "x'\xc5\xbf!", "x'\xc5\xbf|!");
    CHECK_SPLIT(O200K_TT, 1, "x'\xc5\xbf!", "x'\xc5\xbf|!");
    CHECK_SPLIT(llm_pretok_portable_pattern("o200k_base"), 0, "x'\xc5\xbf!", "x|'\xc5\xbf|!");
}

/* ---- scanners against PCRE2 ---- */

/* fixed tricky cases, run through every scanner */
static const char *const tricky[] = {
    "", " ", "  ", "a", "'", "''", "'s", "'S", "'ll", "'LL", "'lL", "'re", "'Re", "'ve", "'VE", "'m", "'d", "'t",
    "'x", "'l", "'r", "'v", "'\xc5\xbf", "'\xc5\xbf" "a", "'\xe2\x84\xaa", "don't", "DON'T", "y'all", "rock'n'roll",
    "'s'S'll", "it's'", "'''s", "I'm", "we'VE", " 's", "x 's", "\xe2\x80\x99s", "don\xe2\x80\x99t",
    "Hello, world!", "Hello world", "  Hello", "\tHello", "\t\tHello", "\xc2\xa0Hello", "\xe3\x80\x80\xe4\xb8\xad",
    "a\n", "a\n\n", "a\r\n", "a\r\n\r\n", "a \n", "a \n ", "a  \n  b", "\n", "\n\n", "\r", "\r\n", " \n", "\n ",
    "\n x", " \n x", "   x", "   ", "x   ", "x   y", "x \t y", "\t", "\t\t", "\xc2\x85x", "x\xc2\x85", "\xe2\x80\xa8 x",
    "!!!", " !!!", "  !!!", "!!!\n", "!!!\n\n", "!!!\r\n", "!!! ", "?!\n\nx", " ?\n", "a.\n\nb", "...\r\n\r\n",
    "123", "1234567", " 123", "12a", "a12", "1 2", "\xd9\xa3\xd9\xa4\xd9\xa5\xd9\xa6", "\xe2\x85\xab\xe2\x85\xab",
    "\xc2\xbd\xc2\xbd\xc2\xbd\xc2\xbd", "x\xc2\xb2", "\xef\xbc\x93\xef\xbc\x94",
    "HELLO", "HELLOworld", "helloWORLD", "HeLLo", "\xc7\x85" "a", "a\xc7\x85", "\xca\xb0" "A", "A\xca\xb0",
    "e\xcc\x81", "\xcc\x81", "\xcc\x81\xcc\x81", " \xcc\x81", "!\xcc\x81", "A\xcc\x81", "a\xcc\x81" "B",
    "\xcc\x81" "A", "\xcc\x81" "a", "1\xcc\x81", "\n\xcc\x81", "\xe2\x83\x9d", "AB\xcc\x81" "C", "AB\xcc\x81" "c",
    "\xe4\xb8\xad\xe6\x96\x87", "\xe4\xb8\xad" "A", "A\xe4\xb8\xad", "a\xe4\xb8\xad" "B", "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80",
    "\xf0\x9f\x98\x80", " \xf0\x9f\x98\x80", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "a\xe2\x80\x8d" "b", "\xef\xb8\x8f" "a",
    "a/b", "a//b", "a/\n/b", "/\n/", " /", "x/\r\n/", "http://x.org/a/b", "x\n/",
    "HELLO'S", "hello's", "HELLO'S x", "ABC'd", "\xc3\x89T\xc3\x89'S",
};

TEST(scanners_tricky)
{
    for (size_t k = 0; k < NSCAN; k++) {
        pair pr;
        if (open_scanner(&pr, k)) { CHECK(0); pair_close(&pr); continue; }
        for (size_t c = 0; c < sizeof tricky / sizeof tricky[0]; c++) pair_check(&pr, tricky[c], strlen(tricky[c]));
        /* every pair of tricky cases, concatenated */
        char buf[256];
        for (size_t a = 0; a < sizeof tricky / sizeof tricky[0]; a++)
            for (size_t b = 0; b < sizeof tricky / sizeof tricky[0]; b++) {
                size_t la = strlen(tricky[a]), lb = strlen(tricky[b]);
                memcpy(buf, tricky[a], la);
                memcpy(buf + la, tricky[b], lb);
                pair_check(&pr, buf, la + lb);
            }
        pair_close(&pr);
    }
}

/* The random alphabet: weighted groups of code points or short strings. */
typedef struct {
    int weight;
    const char *items[40];
} group;

static const group groups[] = {
    {30, {"a", "e", "t", "s", "l", "r", "v", "m", "d", "x", "z"}},
    {12, {"A", "E", "T", "S", "L", "R", "V", "M", "D", "X", "Z"}},
    {20, {" "}},
    {6, {"0", "1", "5", "9"}},
    {8, {".", ",", "!", "?", "-", "(", ")", "\"", "#", "*", "_", "@", "$", "`", "~", "^", "&", "=", "+", "<", ";", "[", "]", "{", "}",
        "\\", "|", ":", "%", "\x7f", "\x01"}},
    {6, {"/"}},
    {10, {"'"}},
    {6, {"'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'Ll", "'d", "'D",
         "'\xc5\xbf", "'\xe2\x84\xaa", "\xe2\x80\x99s"}},
    {8, {"\n", "\r", "\r\n", "\t", "\n\n", "\r\n\r\n", "\x0b", "\x0c"}},
    {4, {"\xc2\xa0", "\xe2\x80\x83", "\xe3\x80\x80", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xc2\x85", "\xe1\x9a\x80",
         "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe2\x80\x8b", "\xef\xbb\xbf", "\x1c"}},
    {8, {"\xc3\xa9", "\xc3\x9f", "\xc3\x84", "\xc5\xbf", "\xce\xb1", "\xce\xa9", "\xd0\xb4", "\xd0\x96", "\xd8\xb9",
         "\xd7\xa9", "\xe4\xb8\xad", "\xe6\x96\x87", "\xe3\x81\x82", "\xed\x95\x9c", "\xe0\xa4\xb9", "\xe0\xb8\x81",
         "\xc7\x85", "\xca\xb0", "\xc2\xaa", "\xe1\xb4\xac", "\xe2\x84\xaa", "\xf0\x90\x90\x80", "\xf0\x9d\x90\x80"}},
    {5, {"\xcc\x81", "\xcc\x88", "\xe2\x83\x9d", "\xe0\xa4\xbf", "\xe0\xa5\x8d", "\xef\xb8\x8f", "\xf0\x9f\x8f\xbd"}},
    {3, {"\xf0\x9f\x98\x80", "\xf0\x9f\x91\x8d", "\xe2\x80\x8d", "\xe2\x82\xac", "\xc2\xa9", "\xe2\x80\x94",
         "\xe2\x80\x9c", "\xc2\xbf"}},
    {4, {"\xd9\xa3", "\xe0\xa5\xa9", "\xef\xbc\x93", "\xe2\x85\xab", "\xc2\xb2", "\xc2\xbd", "\xf0\x9d\x9f\x8e"}},
    {2, {"internationalization", "INTERNATIONALIZATION", "Supercalifragilistic", "abcdefghijklmnopqrstuvwxyz",
         "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "01234567890123456789", "               ", "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n"}},
    {3, {NULL}}, /* a random code point the oracle classes as we do */
};

static size_t pick_random_cp(char *out)
{
    for (;;) {
        uint32_t r = (uint32_t)unit_rand();
        uint32_t cp = r % 8 ? r % 0x10000 >> (r % 3 == 0 ? 4 : 0) : 0x10000 + r % 0x30000;
        if (cp >= 0xD800 && cp < 0xE000) continue;
        if (cp == 0x180E || changed_since_pcre2(cp) || !oracle_agrees(cp)) continue;
        return llm_utf8_encode(cp, out);
    }
}

static size_t random_text(char *buf, size_t cap)
{
    static int total;
    if (!total)
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) total += groups[g].weight;
    size_t n = 0, items = unit_rand() % 40;
    for (size_t k = 0; k < items && n + 8 < cap; k++) {
        int w = (int)(unit_rand() % (uint64_t)total);
        size_t g = 0;
        while (w >= groups[g].weight) w -= groups[g++].weight;
        if (!groups[g].items[0]) {
            n += pick_random_cp(buf + n);
            continue;
        }
        size_t m = 0;
        while (groups[g].items[m]) m++;
        const char *it = groups[g].items[unit_rand() % m];
        size_t l = strlen(it);
        memcpy(buf + n, it, l);
        n += l;
    }
    return n;
}

TEST(alphabet_is_oracle_safe)
{
    /* every fixed character of the alphabet is classed alike by PCRE2 and the tables */
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
        for (size_t m = 0; groups[g].items[m]; m++) {
            const char *s = groups[g].items[m];
            size_t n = strlen(s);
            for (size_t i = 0; i < n;) {
                uint32_t cp;
                i += llm_utf8_decode(s, n, i, &cp);
                if (!oracle_agrees(cp)) {
                    printf("# U+%04X\n", cp);
                    CHECK(0);
                }
            }
        }
}

TEST(scanners_random)
{
    int rounds = getenv("PRETOK_ROUNDS") ? atoi(getenv("PRETOK_ROUNDS")) : 20000;
    char buf[512];
    for (size_t k = 0; k < NSCAN; k++) {
        pair pr;
        if (open_scanner(&pr, k)) { CHECK(0); pair_close(&pr); continue; }
        int ok = 0;
        for (int r = 0; r < rounds; r++) {
            size_t n = random_text(buf, sizeof buf);
            if (llm_utf8_valid_prefix(buf, n) != n) { CHECK(0); continue; }
            ok += pair_check(&pr, buf, n);
        }
        printf("# %s: %d of %d random strings agree\n", scanners[k].what, ok, rounds);
        pair_close(&pr);
    }
}

/* Long runs (deep backtracking for PCRE2, long loops for the scanners). */
TEST(scanners_long_runs)
{
    static const char *const units[] = {" ", "a", "A", "1", "!", "\n", " \n", "\xcc\x81", "\xe4\xb8\xad", "Ab", "'s",
                                        "\xc2\xa0", "/", "a\xcc\x81"};
    size_t n = 1 << 20;
    char *buf = malloc(n + 8);
    for (size_t k = 0; k < NSCAN; k++) {
        pair pr;
        if (open_scanner(&pr, k)) { CHECK(0); pair_close(&pr); continue; }
        for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
            size_t l = strlen(units[u]), m = 0;
            while (m + l <= n) memcpy(buf + m, units[u], l), m += l;
            buf[m] = 'x'; /* a different final character */
            pair_check(&pr, buf, m + 1);
            pair_check(&pr, buf, m);
        }
        pair_close(&pr);
    }
    free(buf);
}

/* The scanners on arbitrary bytes (not valid UTF-8, which callers must not
 * pass): they still cover the text with non-empty pieces and stay in bounds. */
TEST(scanners_invalid_utf8)
{
    for (size_t k = 0; k < NSCAN; k++) {
        pair pr;
        if (open_scanner(&pr, k)) { CHECK(0); pair_close(&pr); continue; }
        for (int r = 0; r < 20000; r++) {
            size_t n = unit_rand() % 64;
            char *buf = malloc(n ? n : 1); /* exact size: a sanitizer sees any read past it */
            for (size_t i = 0; i < n; i++) {
                uint64_t x = unit_rand();
                buf[i] = (char)(x % 3 == 0 ? "a A'\n1\r!s"[x / 3 % 10] : (int)(x >> 8));
            }
            pieces_of(pr.scan, pr.ss, buf, n, &pr.a);
            size_t covered = 0;
            for (size_t p = 0; p < pr.a.n; p++) {
                if (pr.a.se[2 * p] != covered) break;
                covered = pr.a.se[2 * p + 1];
            }
            CHECK_EQ_U64(covered, n);
            pieces_of(pr.re, pr.rs, buf, n, &pr.b); /* no crash, no hang */
            free(buf);
        }
        pair_close(&pr);
    }
}

int main(void)
{
    unit_seed();
    RUN(utf8);
    RUN(unicode_tables_against_pcre2);
    RUN(named_patterns);
    RUN(compile_errors);
    RUN(pcre2_find_all);
    RUN(known_splits);
    RUN(alphabet_is_oracle_safe);
    RUN(scanners_tricky);
    RUN(scanners_random);
    RUN(scanners_long_runs);
    RUN(scanners_invalid_utf8);
    pcre2_match_data_free(class_md);
    pcre2_code_free(class_re);
    return unit_done();
}
