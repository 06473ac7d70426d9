#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(llm_strbuf *b, size_t extra)
{
    if (b->failed) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) { b->failed = 1; return -1; }
    b->data = p;
    b->cap = cap;
    return 0;
}

void llm_sb_add(llm_strbuf *b, const void *p, size_t n)
{
    if (reserve(b, n)) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void llm_sb_puts(llm_strbuf *b, const char *s) { llm_sb_add(b, s, strlen(s)); }

void llm_sb_printf(llm_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void llm_sb_json_string(llm_strbuf *b, const char *s)
{
    llm_sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': llm_sb_add(b, "\\\"", 2); break;
        case '\\': llm_sb_add(b, "\\\\", 2); break;
        case '\b': llm_sb_add(b, "\\b", 2); break;
        case '\f': llm_sb_add(b, "\\f", 2); break;
        case '\n': llm_sb_add(b, "\\n", 2); break;
        case '\r': llm_sb_add(b, "\\r", 2); break;
        case '\t': llm_sb_add(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                llm_sb_add(b, esc, 6);
            } else {
                llm_sb_add(b, p, 1);
            }
        }
    }
    llm_sb_add(b, "\"", 1);
}

void llm_sb_free(llm_strbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
