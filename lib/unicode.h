/* unicode.h — UTF-8 decoding and validation, and the Unicode classes the
 * pre-tokenizer needs, from generated tables (lib/unicode_tables.h, made by
 * scripts/gen-unicode-tables.py).
 *
 * Unicode 16.0, the version of the tables in the Rust regex crate that
 * tiktoken 0.14 is built with (the generator's header records the evidence).
 * Classes are those of regex syntax:
 *   letter       \p{L}   Lu Ll Lt Lm Lo
 *   number       \p{N}   Nd Nl No
 *   mark         \p{M}   Mn Mc Me
 *   space        \s      Unicode White_Space, as Rust regex's \s (not U+180E)
 *   upper class  [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]   as in o200k_base's pattern
 *   lower class  [\p{Ll}\p{Lm}\p{Lo}\p{M}]          as in o200k_base's pattern */
#ifndef LLMUX_UNICODE_H
#define LLMUX_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

/* One flag byte per code point. */
enum {
    LLM_UC_L = 0x01,     /* \p{L} */
    LLM_UC_N = 0x02,     /* \p{N} */
    LLM_UC_S = 0x04,     /* White_Space */
    LLM_UC_M = 0x08,     /* \p{M} */
    LLM_UC_UPPER = 0x10, /* Lu Lt Lm Lo M */
    LLM_UC_LOWER = 0x20, /* Ll Lm Lo M */
};

#define LLM_UC_SHIFT 7
extern const uint8_t llm_uc_stage1[]; /* (0x110000 >> LLM_UC_SHIFT) block indexes */
extern const uint8_t llm_uc_stage2[]; /* blocks of 1 << LLM_UC_SHIFT flag bytes */

/* "16.0.0" */
const char *llm_unicode_version(void);

/* The flags (LLM_UC_*) of a code point; 0 beyond U+10FFFF. */
static inline unsigned llm_uc_flags(uint32_t cp)
{
    if (cp >= 0x110000) return 0;
    return llm_uc_stage2[((unsigned)llm_uc_stage1[cp >> LLM_UC_SHIFT] << LLM_UC_SHIFT) |
                         (cp & ((1u << LLM_UC_SHIFT) - 1))];
}
static inline int llm_uc_is_letter(uint32_t cp) { return (llm_uc_flags(cp) & LLM_UC_L) != 0; }
static inline int llm_uc_is_number(uint32_t cp) { return (llm_uc_flags(cp) & LLM_UC_N) != 0; }
static inline int llm_uc_is_mark(uint32_t cp) { return (llm_uc_flags(cp) & LLM_UC_M) != 0; }
static inline int llm_uc_is_space(uint32_t cp) { return (llm_uc_flags(cp) & LLM_UC_S) != 0; }
static inline int llm_uc_is_upper_class(uint32_t cp) { return (llm_uc_flags(cp) & LLM_UC_UPPER) != 0; }
static inline int llm_uc_is_lower_class(uint32_t cp) { return (llm_uc_flags(cp) & LLM_UC_LOWER) != 0; }

/* Code point ranges [first, last] (pairs) whose flags differ between Unicode
 * 14.0 (PCRE2 10.42's tables, the unit tests' oracle) and the tables' version. */
extern const char llm_uc_changed_since[]; /* "14.0.0" */
extern const uint32_t llm_uc_changed[];
extern const size_t llm_uc_n_changed;

/* The length of the longest prefix of s[0..n) that is valid UTF-8 (shortest
 * form, no surrogates, at most U+10FFFF): n when all of it is. */
size_t llm_utf8_valid_prefix(const char *s, size_t n);

/* Decodes the code point at s[i] (i < n): returns its length in bytes (1-4)
 * and sets *cp. An invalid or truncated sequence decodes as one byte, with
 * *cp = 0xFFFD; it never reads at or past s[n]. Overlong forms and surrogates
 * are not rejected here: llm_utf8_valid_prefix is the check. */
static inline size_t llm_utf8_decode(const char *str, size_t n, size_t i, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)str + i;
    size_t left = n - i;
    unsigned b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    if (b0 >= 0xC2 && b0 < 0xE0) {
        if (left >= 2 && (s[1] & 0xC0) == 0x80) {
            *cp = ((b0 & 0x1Fu) << 6) | (s[1] & 0x3Fu);
            return 2;
        }
    } else if (b0 >= 0xE0 && b0 < 0xF0) {
        if (left >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
            *cp = ((b0 & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
            return 3;
        }
    } else if (b0 >= 0xF0 && b0 < 0xF5) {
        if (left >= 4 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) {
            *cp = ((b0 & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
            return 4;
        }
    }
    *cp = 0xFFFD;
    return 1;
}

/* Appends s[0..n) to b with what is not UTF-8 replaced by U+FFFD, one for
 * each maximal subpart (as Unicode recommends and Python's
 * errors="replace" does): text a model made, for JSON. */
void llm_utf8_sanitized(llm_strbuf *b, const char *s, size_t n);

/* Writes cp (<= U+10FFFF) as UTF-8 into out; returns the length (1-4). */
size_t llm_utf8_encode(uint32_t cp, char out[4]);

#endif
