#include "unicode.h"

#include <string.h>

#include "unicode_tables.h"

_Static_assert(LLM_UC_TABLE_SHIFT == LLM_UC_SHIFT, "unicode_tables.h: regenerate, or update LLM_UC_SHIFT");
_Static_assert(LLM_UC_TABLE_STAGE1_BYTES == 1, "unicode_tables.h: stage 1 must be uint8_t");
_Static_assert(sizeof llm_uc_stage1 == (0x110000 >> LLM_UC_SHIFT), "unicode_tables.h: stage 1 size");

const char *llm_unicode_version(void) { return LLM_UC_TABLE_VERSION; }

size_t llm_utf8_valid_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        /* ASCII, eight bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned b0 = s[i];
        if (b0 < 0x80) {
            i++;
            continue;
        }
        size_t left = n - i;
        if (b0 >= 0xC2 && b0 < 0xE0) {
            if (left < 2 || (s[i + 1] & 0xC0) != 0x80) return i;
            i += 2;
        } else if (b0 >= 0xE0 && b0 < 0xF0) {
            if (left < 3) return i;
            unsigned b1 = s[i + 1];
            /* E0: no overlongs (A0..BF); ED: no surrogates (80..9F) */
            unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
            if (b1 < lo || b1 > hi || (s[i + 2] & 0xC0) != 0x80) return i;
            i += 3;
        } else if (b0 >= 0xF0 && b0 < 0xF5) {
            if (left < 4) return i;
            unsigned b1 = s[i + 1];
            /* F0: no overlongs (90..BF); F4: at most U+10FFFF (80..8F) */
            unsigned lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
            if (b1 < lo || b1 > hi || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80) return i;
            i += 4;
        } else {
            return i;
        }
    }
    return n;
}

size_t llm_utf8_encode(uint32_t cp, char out[4])
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The bytes at s that a UTF-8 decoder replaces with one U+FFFD: the
 * longest start of a well-formed sequence there (Unicode's "maximal
 * subpart"), at least 1. s does not start a whole valid character. */
static size_t maximal_subpart(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) need = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4) need = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else return 1;
    size_t i = 1;
    if (i < n && s[i] >= lo && s[i] <= hi)
        for (i++; i <= need && i < n && s[i] >= 0x80 && s[i] <= 0xbf; i++) {}
    return i <= need ? i : 1;
}

void llm_utf8_sanitized(llm_strbuf *b, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t ok = llm_utf8_valid_prefix(s + i, n - i);
        llm_sb_add(b, s + i, ok);
        i += ok;
        if (i < n) {
            llm_sb_add(b, "\xef\xbf\xbd", 3);   /* U+FFFD */
            i += maximal_subpart((const unsigned char *)s + i, n - i);
        }
    }
}
