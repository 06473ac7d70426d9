/* pretok.c — pre-tokenization: the PCRE2 engine, and hand-written scanners
 * for the patterns of the known encodings that return exactly the matches
 * the regex would (t/unit/test_pretok.c holds them to PCRE2).
 *
 * How the scanners read the patterns. A regex tries its alternatives in
 * order at one start position and takes the first that matches; within one,
 * greedy quantifiers take the most and give back one character at a time.
 * All the known patterns match at every position of valid UTF-8 (each
 * character is a letter, a number, a space or "other"), so a match always
 * starts at pos and the scanner only has to find its end:
 *
 *   \s+(?!\S)      the whitespace run, less its last character when a
 *                  non-space follows (fails for a run of one: then \s+)
 *   \s*[\r\n]+     the whitespace run up to and including its last \r or \n
 *   \s++$          (tiktoken's spelling) the run, when it reaches the end
 *   X?\p{L}+       with X = [^\r\n\p{L}\p{N}]: one such character, then
 *                  letters (X is never a letter, so no giving back matters)
 *   o200k's  X? U* W+ C?  (U = Lu Lt Lm Lo M, W = Ll Lm Lo M, C the
 *                  contractions): U* takes the U run [s,u); if the next
 *                  character is W, W+ takes the W run after it; if not, U*
 *                  gives back down to the last W character in [s,u), which
 *                  W+ then takes alone; with none, the alternative fails for
 *                  this s. Marks are in X, U and W at once, so X taken and X
 *                  not taken are both tried, as the regex does.
 *
 * Contractions: the patterns that spell them (?i:...) also match U+017F
 * LATIN SMALL LETTER LONG S for s (Unicode simple case folding, in PCRE2,
 * Rust regex and Oniguruma alike); the spelled-out 's|'S|... lists do not.
 *
 * Speed: a 256-entry class table for ASCII, lib/unicode.h's two-stage table
 * for the rest, and runs of ASCII letters or digits sixteen bytes at a time
 * (SSE2), so that a word's length costs no branch mispredictions.
 *
 * The scanners never read past text[len) and always advance on any bytes;
 * on invalid UTF-8 (which callers must not pass) an invalid byte is one
 * "other" character. PCRE2 runs with PCRE2_MATCH_INVALID_UTF: no per-call
 * validation of the whole subject, and safe on invalid input too.
 *
 * The PCRE2 engine answers with PCRE2's Unicode tables (14.0 in Debian 12's
 * 10.42) and its \s, which has U+180E: on characters new since, and on
 * U+180E, it can split otherwise than the scanners and tiktoken do. */
#include "pretok.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "unicode.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define INLINE static inline __attribute__((always_inline))

/* ---- the patterns ---- */

#define CONTRACTIONS_CS "'s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D"
#define O200K_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define O200K_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"

static const char PAT_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PAT_CL100K[] =
    "(" CONTRACTIONS_CS ")|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
static const char PAT_O200K[] =
    "[^\\r\\n\\p{L}\\p{N}]?" O200K_UPPER "*" O200K_LOWER "+(" CONTRACTIONS_CS ")?|"
    "[^\\r\\n\\p{L}\\p{N}]?" O200K_UPPER "+" O200K_LOWER "*(" CONTRACTIONS_CS ")?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* tiktoken 0.14's own spellings (tiktoken_ext/openai_public.py) */
static const char PAT_GPT2_TT_OLD[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?[\\p{L}]+| ?[\\p{N}]+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PAT_R50K_TT[] =
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s";
static const char PAT_CL100K_TT[] =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|"
    "\\s*[\\r\\n]|\\s+(?!\\S)|\\s";
static const char PAT_O200K_TT[] =
    "[^\\r\\n\\p{L}\\p{N}]?" O200K_UPPER "*" O200K_LOWER "+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "[^\\r\\n\\p{L}\\p{N}]?" O200K_UPPER "+" O200K_LOWER "*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Each name's two spellings: `named`, the one tiktoken 0.14 runs for its
 * encodings (possessive quantifiers, "\\s++$"), so that ids equal tiktoken's;
 * `portable`, without possessives or '$', for tokenizer.json files that
 * Hugging Face tokenizers (Oniguruma, where '$' also matches before a
 * newline) must read as we do. llama3 and qwen2 as their tokenizer.json
 * files spell them. */
static const struct {
    const char *name, *named, *portable;
} spellings[] = {
    {"gpt2", PAT_R50K_TT, PAT_GPT2},
    {"r50k_base", PAT_R50K_TT, PAT_GPT2},
    {"p50k_base", PAT_R50K_TT, PAT_GPT2},
    {"cl100k_base", PAT_CL100K_TT, PAT_CL100K},
    {"o200k_base", PAT_O200K_TT, PAT_O200K},
    {"llama3", PAT_LLAMA3, PAT_LLAMA3},
    {"qwen2", PAT_QWEN2, PAT_QWEN2},
};

static int spelling(const char *name)
{
    for (size_t i = 0; name && i < sizeof spellings / sizeof spellings[0]; i++)
        if (!strcmp(name, spellings[i].name)) return (int)i;
    return -1;
}

const char *llm_pretok_named_pattern(const char *name)
{
    int i = spelling(name);
    return i < 0 ? NULL : spellings[i].named;
}

const char *llm_pretok_portable_pattern(const char *name)
{
    int i = spelling(name);
    return i < 0 ? NULL : spellings[i].portable;
}

/* ---- character classes ---- */

/* ASCII table: the LLM_UC_* flags, plus NL for \r \n and HI for bytes >= 0x80
 * (look the code point up). */
enum {
    C_L = LLM_UC_L, C_N = LLM_UC_N, C_S = LLM_UC_S, C_M = LLM_UC_M,
    C_UP = LLM_UC_UPPER, C_LO = LLM_UC_LOWER, C_NL = 0x40, C_HI = 0x80,
};
#define U_ C_L | C_UP
#define L_ C_L | C_LO
#define D_ C_N
#define S_ C_S
static const uint8_t ascii_class[256] = {
    /* 00 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, S_, S_ | C_NL, S_, S_, S_ | C_NL, 0, 0,
    /* 10 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 20 */ S_, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 30 */ D_, D_, D_, D_, D_, D_, D_, D_, D_, D_, 0, 0, 0, 0, 0, 0,
    /* 40 */ 0, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_,
    /* 50 */ U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, U_, 0, 0, 0, 0, 0,
    /* 60 */ 0, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_,
    /* 70 */ L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, 0, 0, 0, 0, 0,
    [0x80 ... 0xFF] = C_HI,
};
#undef U_
#undef L_
#undef D_
#undef S_

typedef const unsigned char uchar;

/* The class of the character at t[i] (i < n); its length in *len. */
INLINE unsigned cls(uchar *t, size_t n, size_t i, size_t *len)
{
    unsigned c = ascii_class[t[i]];
    if (LIKELY(!(c & C_HI))) {
        *len = 1;
        return c;
    }
    uint32_t cp;
    *len = llm_utf8_decode((const char *)t, n, i, &cp);
    return llm_uc_flags(cp);
}

#ifdef __SSE2__
#include <emmintrin.h>

/* Bit k set when byte k of t[0..16) is an ASCII character with `mask` (one of
 * C_L, C_UP, C_LO, C_N: a constant, so that the other cases fold away). */
INLINE unsigned ascii16(uchar *t, unsigned mask)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)t), lo;
    int k;
    if (mask == C_L) lo = _mm_or_si128(x, _mm_set1_epi8(0x20)), k = 26, x = _mm_sub_epi8(lo, _mm_set1_epi8('a'));
    else if (mask == C_LO) k = 26, x = _mm_sub_epi8(x, _mm_set1_epi8('a'));
    else if (mask == C_UP) k = 26, x = _mm_sub_epi8(x, _mm_set1_epi8('A'));
    else k = 10, x = _mm_sub_epi8(x, _mm_set1_epi8('0'));
    /* x < k, unsigned */
    __m128i in = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8((char)(k - 1))), x);
    return (unsigned)_mm_movemask_epi8(in);
}
#define HAVE_ASCII16(mask) ((mask) == C_L || (mask) == C_LO || (mask) == C_UP || (mask) == C_N)
#endif

/* The end of the run of characters from i that have any of `mask`. */
INLINE size_t run_any(uchar *t, size_t n, size_t i, unsigned mask)
{
    for (;;) {
#ifdef __SSE2__
        if (HAVE_ASCII16(mask)) {
            /* ASCII sixteen bytes at a time; the scalar step below then looks
             * at the byte that stopped it */
            while (i + 16 <= n) {
                unsigned m = ascii16(t + i, mask);
                if (m != 0xFFFF) {
                    i += (size_t)__builtin_ctz(~m);
                    break;
                }
                i += 16;
            }
        }
#endif
        if (i >= n) return i;
        unsigned c = ascii_class[t[i]];
        if (c & mask) {
            i++;
            continue;
        }
        if (LIKELY(!(c & C_HI))) return i;
        size_t l;
        if (!(cls(t, n, i, &l) & mask)) return i;
        i += l;
    }
}

/* The end of the run of characters from i that have none of `mask`. */
INLINE size_t run_none(uchar *t, size_t n, size_t i, unsigned mask)
{
    while (i < n) {
        unsigned c = ascii_class[t[i]];
        if (!(c & (mask | C_HI))) {
            i++;
            continue;
        }
        if (LIKELY(!(c & C_HI))) break;
        size_t l;
        if (cls(t, n, i, &l) & mask) break;
        i += l;
    }
    return i;
}

/* At most `max` characters with any of `mask`, from i. */
INLINE size_t run_any_max(uchar *t, size_t n, size_t i, unsigned mask, int max)
{
    for (int k = 0; k < max && i < n; k++) {
        size_t l;
        if (!(cls(t, n, i, &l) & mask)) break;
        i += l;
    }
    return i;
}

/* [\r\n]* (and '/' too when slash) */
INLINE size_t run_nl(uchar *t, size_t n, size_t i, int slash)
{
    while (i < n && (t[i] == '\r' || t[i] == '\n' || (slash && t[i] == '/'))) i++;
    return i;
}

/* The whitespace alternatives, at i (a whitespace character):
 *   [\s++$]  [\s*[\r\n]+]  \s+(?!\S)  \s+ */
INLINE size_t whitespace(uchar *t, size_t n, size_t i, int to_end, int newline)
{
    size_t j = i, last = i, nl = SIZE_MAX;
    while (j < n) {
        size_t l;
        unsigned c = cls(t, n, j, &l);
        if (!(c & C_S)) break;
        if (c & C_NL) nl = j;
        last = j;
        j += l;
    }
    if (to_end && j == n) return n;
    if (newline && nl != SIZE_MAX) return nl + 1;
    if (j == n || last == i) return j;
    return last;
}

/* The contraction at t[i] ('s 't 're 've 'm 'll 'd), if any: its end, else i.
 * Any ASCII case unless `exact`; also 'ſ (U+017F, C5 BF) when `fold`. */
INLINE size_t contraction(uchar *t, size_t n, size_t i, int exact, int fold)
{
    if (i + 1 >= n || t[i] != '\'') return i;
    unsigned a = t[i + 1], b = i + 2 < n ? t[i + 2] : 0;
    if (fold && a == 0xC5 && b == 0xBF) return i + 3;
    if (!exact) a |= 0x20, b |= 0x20; /* ASCII letters to lower case; no other byte becomes one */
    switch (a) {
    case 's': case 't': case 'm': case 'd': return i + 2;
    case 'r': case 'v': return b == 'e' ? i + 3 : i;
    case 'l': return b == 'l' ? i + 3 : i;
    default: return i;
    }
}

/* ---- the scanners: the end of the match at i (i < n) ---- */

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (and tiktoken's r50k spelling, with \s++$, which is the same language) */
static size_t scan_gpt2(uchar *t, size_t n, size_t i)
{
    size_t e = contraction(t, n, i, 1, 0);
    if (e > i) return e;
    size_t s = i, l;
    unsigned c = cls(t, n, i, &l);
    if (t[i] == ' ' && i + 1 < n) {
        size_t l2;
        unsigned c2 = cls(t, n, i + 1, &l2);
        if (!(c2 & C_S)) s = i + 1, c = c2, l = l2;
    }
    if (c & C_L) return run_any(t, n, s + l, C_L);
    if (c & C_N) return run_any(t, n, s + l, C_N);
    if (!(c & C_S)) return run_none(t, n, s + l, C_L | C_N | C_S);
    return whitespace(t, n, i, 0, 0);
}

/* cl100k_base, Llama 3 (fold), Qwen 2 (fold, one digit), tiktoken's cl100k
 * spelling (fold, \s++$):
 *   C|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
INLINE size_t scan_cl(uchar *t, size_t n, size_t i, int fold, int digits, int to_end)
{
    size_t e = contraction(t, n, i, 0, fold);
    if (e > i) return e;
    size_t l;
    unsigned c = cls(t, n, i, &l);
    if (c & C_L) return run_any(t, n, i + l, C_L);
    if (!(c & (C_N | C_NL)) && i + l < n) {
        size_t l2;
        if (cls(t, n, i + l, &l2) & C_L) return run_any(t, n, i + l + l2, C_L);
    }
    if (c & C_N) return run_any_max(t, n, i + l, C_N, digits - 1);
    if (t[i] == ' ' && i + 1 < n) {
        size_t l2;
        if (!(cls(t, n, i + 1, &l2) & (C_L | C_N | C_S)))
            return run_nl(t, n, run_none(t, n, i + 1 + l2, C_L | C_N | C_S), 0);
    }
    if (!(c & C_S)) return run_nl(t, n, run_none(t, n, i + l, C_L | C_N | C_S), 0);
    return whitespace(t, n, i, to_end, 1);
}

static size_t scan_cl100k(uchar *t, size_t n, size_t i) { return scan_cl(t, n, i, 0, 3, 0); }
static size_t scan_cl100k_tt(uchar *t, size_t n, size_t i) { return scan_cl(t, n, i, 1, 3, 1); }
static size_t scan_llama3(uchar *t, size_t n, size_t i) { return scan_cl(t, n, i, 1, 3, 0); }
static size_t scan_qwen2(uchar *t, size_t n, size_t i) { return scan_cl(t, n, i, 1, 1, 0); }

/* o200k: X? U* W+ C? from s; its end, or s when it fails */
INLINE size_t o200k_alt1(uchar *t, size_t n, size_t s, int fold)
{
    size_t j = s, last_w = s, l;
    unsigned c = 0;
    while (j < n) {
        c = cls(t, n, j, &l);
        if (!(c & C_UP)) break;
        j += l;
        if (c & C_LO) last_w = j;
    }
    if (j < n && (c & C_LO)) return contraction(t, n, run_any(t, n, j + l, C_LO), 0, fold);
    if (last_w > s) return contraction(t, n, last_w, 0, fold);
    return s;
}

/* o200k: X? U+ W* C? from s; its end, or s when it fails */
INLINE size_t o200k_alt2(uchar *t, size_t n, size_t s, int fold)
{
    size_t l;
    if (s >= n || !(cls(t, n, s, &l) & C_UP)) return s;
    size_t u = run_any(t, n, s + l, C_UP);
    return contraction(t, n, run_any(t, n, u, C_LO), 0, fold);
}

/* o200k_base (and tiktoken's spelling, with (?i:) contractions: fold):
 *   X?U*W+C?|X?U+W*C?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
INLINE size_t scan_o2(uchar *t, size_t n, size_t i, int fold)
{
    size_t l, e;
    unsigned c = cls(t, n, i, &l);
    int x = !(c & (C_L | C_N | C_NL)) && i + l < n; /* [^\r\n\p{L}\p{N}] can be taken */
    if (x && (e = o200k_alt1(t, n, i + l, fold)) > i + l) return e;
    if ((c & (C_UP | C_LO)) && (e = o200k_alt1(t, n, i, fold)) > i) return e;
    if (x && (e = o200k_alt2(t, n, i + l, fold)) > i + l) return e;
    if ((c & C_UP) && (e = o200k_alt2(t, n, i, fold)) > i) return e;
    if (c & C_N) return run_any_max(t, n, i + l, C_N, 2);
    if (t[i] == ' ' && i + 1 < n) {
        size_t l2;
        if (!(cls(t, n, i + 1, &l2) & (C_L | C_N | C_S)))
            return run_nl(t, n, run_none(t, n, i + 1 + l2, C_L | C_N | C_S), 1);
    }
    if (!(c & C_S)) return run_nl(t, n, run_none(t, n, i + l, C_L | C_N | C_S), 1);
    return whitespace(t, n, i, 0, 1);
}

static size_t scan_o200k(uchar *t, size_t n, size_t i) { return scan_o2(t, n, i, 0); }
static size_t scan_o200k_tt(uchar *t, size_t n, size_t i) { return scan_o2(t, n, i, 1); }

/* ---- pretokenizers ---- */

typedef size_t (*scan_fn)(uchar *t, size_t n, size_t i);

struct llm_pretok {
    scan_fn scan;       /* NULL: PCRE2 */
    const char *engine;
    pcre2_code *re;
};

struct llm_pretok_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *jit_stack;
};

static const struct {
    const char *pattern;
    scan_fn scan;
    const char *engine;
} known[] = {
    {PAT_GPT2, scan_gpt2, "gpt2"},
    {PAT_GPT2_TT_OLD, scan_gpt2, "gpt2"},
    {PAT_R50K_TT, scan_gpt2, "gpt2"},
    {PAT_CL100K, scan_cl100k, "cl100k"},
    {PAT_CL100K_TT, scan_cl100k_tt, "cl100k"},
    {PAT_O200K, scan_o200k, "o200k"},
    {PAT_O200K_TT, scan_o200k_tt, "o200k"},
    {PAT_LLAMA3, scan_llama3, "llama3"},
    {PAT_QWEN2, scan_qwen2, "qwen2"},
};

static int pretok_make(llm_pretok **out, const char *pattern, int regex_only, llm_err *err)
{
    *out = NULL;
    if (!pattern) return llm_errf(err, "pretokenizer: no pattern");
    llm_pretok *p = calloc(1, sizeof *p);
    if (!p) return llm_errf(err, "pretokenizer: out of memory");
    if (!regex_only) {
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
            if (!strcmp(pattern, known[k].pattern)) {
                p->scan = known[k].scan;
                p->engine = known[k].engine;
                *out = p;
                return 0;
            }
        }
    }
    int code;
    PCRE2_SIZE offset;
    p->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                          &code, &offset, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0) strcpy((char *)msg, "unknown error");
        free(p);
        return llm_errf(err, "pretokenizer pattern: %s at offset %zu", (const char *)msg, (size_t)offset);
    }
    (void)pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* where JIT is missing, pcre2_match interprets */
    p->engine = "pcre2";
    *out = p;
    return 0;
}

int llm_pretok_new(llm_pretok **out, const char *pattern, llm_err *err) { return pretok_make(out, pattern, 0, err); }

int llm_pretok_new_regex(llm_pretok **out, const char *pattern, llm_err *err)
{
    return pretok_make(out, pattern, 1, err);
}

void llm_pretok_free(llm_pretok *p)
{
    if (!p) return;
    pcre2_code_free(p->re);
    free(p);
}

const char *llm_pretok_engine(const llm_pretok *p) { return p->engine; }

llm_pretok_scratch *llm_pretok_scratch_new(const llm_pretok *p)
{
    llm_pretok_scratch *s = calloc(1, sizeof *s);
    if (!s || !p->re) return s;
    s->md = pcre2_match_data_create_from_pattern(p->re, NULL);
    s->mc = pcre2_match_context_create(NULL);
    /* JIT stack: 32 KiB, growing to 8 MiB (the default is 32 KiB on the machine stack) */
    s->jit_stack = pcre2_jit_stack_create(32 << 10, 8 << 20, NULL);
    if (!s->md || !s->mc) {
        llm_pretok_scratch_free(s);
        return NULL;
    }
    if (s->jit_stack) pcre2_jit_stack_assign(s->mc, NULL, s->jit_stack);
    return s;
}

void llm_pretok_scratch_free(llm_pretok_scratch *s)
{
    if (!s) return;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mc);
    pcre2_jit_stack_free(s->jit_stack);
    free(s);
}

static int find_pcre2(const llm_pretok *p, llm_pretok_scratch *s, const char *text, size_t len, size_t pos,
                      size_t *start, size_t *end)
{
    uint32_t options = 0;
    while (pos <= len) {
        int rc = pcre2_match(p->re, (PCRE2_SPTR)text, len, pos, options, s->md, s->mc);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) {
            /* JIT stack or match limits: the interpreter (heap frames) once, then give the next
             * character alone so that no text is lost */
            if (!(options & PCRE2_NO_JIT)) {
                options |= PCRE2_NO_JIT;
                continue;
            }
            if (pos >= len) return 0;
            size_t e = pos + 1;
            while (e < len && ((unsigned char)text[e] & 0xC0) == 0x80) e++;
            *start = pos, *end = e;
            return 1;
        }
        options &= ~(uint32_t)PCRE2_NO_JIT;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        if (ov[1] > ov[0]) {
            *start = ov[0], *end = ov[1];
            return 1;
        }
        /* an empty match: on from one character further */
        size_t at = ov[0] > pos ? ov[0] : pos;
        if (at >= len) return 0;
        pos = at + 1;
        while (pos < len && ((unsigned char)text[pos] & 0xC0) == 0x80) pos++;
    }
    return 0;
}

int llm_pretok_find(const llm_pretok *p, llm_pretok_scratch *s, const char *text, size_t len, size_t pos,
                    size_t *start, size_t *end)
{
    if (p->scan) {
        if (pos >= len) return 0;
        *start = pos;
        *end = p->scan((uchar *)text, len, pos);
        return 1;
    }
    return find_pcre2(p, s, text, len, pos, start, end);
}
