/* Matching generated text with answers: see eval_match.h. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "eval_match.h"

#include <pcre2.h>
#include <string.h>

void *llm_eval_regex_compile(const char *pattern, llm_err *err)
{
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        llm_errf(err, "not a valid regular expression: %s at offset %zu", (const char *)msg, (size_t)at);
    }
    return re;
}

void llm_eval_regex_free(void *re) { pcre2_code_free(re); }

static int space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static void trim(const char **s, size_t *n)
{
    while (*n && space(**s)) (*s)++, (*n)--;
    while (*n && space((*s)[*n - 1])) (*n)--;
}

int llm_eval_matches(llm_eval_match_kind kind, const char *text, size_t len, const char *answer, void *regex)
{
    size_t alen = strlen(answer);
    if (kind == LLM_MATCH_EXACT) {
        trim(&text, &len);
        trim(&answer, &alen);
        return len == alen && !memcmp(text, answer, len);
    }
    if (kind == LLM_MATCH_CONTAINS) return alen <= len && memmem(text, len, answer, alen) != NULL;
    if (!regex) return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(regex, NULL);
    if (!md) return 0;
    int rc = pcre2_match(regex, (PCRE2_SPTR)text, len, 0, 0, md, NULL);
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) {
        /* text that is not UTF-8 from some byte on (max_tokens cut a
         * character, or the model made bytes that are not one): the part
         * before it */
        size_t ok = pcre2_get_startchar(md);
        rc = pcre2_match(regex, (PCRE2_SPTR)text, ok < len ? ok : 0, 0, 0, md, NULL);
    }
    pcre2_match_data_free(md);
    return rc >= 0;
}
