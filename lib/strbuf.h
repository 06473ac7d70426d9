/* strbuf.h — a growable byte buffer, and JSON string escaping in the form
 * serde_json writes (so our safetensors headers match the Python package's). */
#ifndef LLMUX_STRBUF_H
#define LLMUX_STRBUF_H

#include <stddef.h>

typedef struct {
    char *data;
    size_t len, cap;
    int failed;     /* an allocation failed; data is then unusable */
} llm_strbuf;

void llm_sb_add(llm_strbuf *b, const void *p, size_t n);
void llm_sb_puts(llm_strbuf *b, const char *s);
void llm_sb_printf(llm_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string: escapes '"', '\\' and control bytes
 * (\b \f \n \r \t, others as \u00XX); other bytes, UTF-8 included, as they are. */
void llm_sb_json_string(llm_strbuf *b, const char *s);
void llm_sb_free(llm_strbuf *b);

#endif
