#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Messages stay one line whatever the input put in them: control bytes (a
 * tensor name with a newline, jansson quoting the bytes near a JSON error, an
 * escape sequence) are written as \n, \t or \xNN. */
static void one_line(char *msg, size_t cap)
{
    char out[sizeof ((llm_err *)0)->msg];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && o + 5 < sizeof out; p++) {
        if (*p == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (*p == '\t') { out[o++] = '\\'; out[o++] = 't'; }
        else if (*p < 0x20 || *p == 0x7f) o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
        else out[o++] = (char)*p;
    }
    out[o] = 0;
    memcpy(msg, out, o + 1 < cap ? o + 1 : cap);
    msg[cap - 1] = 0;
}

int llm_errf(llm_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    one_line(err->msg, sizeof err->msg);
    return -1;
}

int llm_err_prefix(llm_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    char prefix[256], joined[sizeof prefix + sizeof err->msg + 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg);
    size_t n = strlen(joined);
    if (n >= sizeof err->msg) n = sizeof err->msg - 1;
    memcpy(err->msg, joined, n);
    err->msg[n] = 0;
    one_line(err->msg, sizeof err->msg);
    return -1;
}
