#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int llm_errf(llm_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
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
    return -1;
}
