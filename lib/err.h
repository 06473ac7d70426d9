/* err.h — how lib/ reports failure without exiting or printing.
 *
 * Every fallible library function takes an `llm_err *` and returns a status
 * (0 ok, -1 failure, or a documented positive value).  On failure it fills
 * err->msg with one line that names the file and the problem, e.g.
 *   "model.safetensors: tensor 'wte': offsets [0, 96) but F32 [4, 8] needs 128 bytes"
 * The program decides what to do with it (usually llm_die_err()). */
#ifndef LLMUX_ERR_H
#define LLMUX_ERR_H

#include <stddef.h>

typedef struct llm_err {
    char msg[512];
} llm_err;

/* Formats the message (printf-style) into err, if err is not NULL; returns -1
 * so that callers can write `return llm_errf(err, "...")`. */
int llm_errf(llm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "<prefix>: <old message>". Returns -1. */
int llm_err_prefix(llm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
