/* quantize.h — a model file to a quantized model file (llm-quantize).
 *
 * The matrices of the linear layers (2-D ".weight" tensors but the
 * embeddings) become blocks of the chosen type (kernels/llmk.h; layouts in
 * llm-tensors(5)); embeddings, norms and biases stay as they are, as do
 * tensors whose names match a --keep pattern (fnmatch) and tensors whose rows
 * are not a whole number of blocks. The metadata is kept but for the
 * training state, and the optimizer's moments are left out: the result is a
 * model for inference. Every quantized tensor's error against the original
 * is measured. */
#ifndef LLMUX_QUANTIZE_H
#define LLMUX_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct {
    const char *name;
    const char *type;          /* "q4_0", or the original dtype when kept */
    const char *why_kept;      /* NULL when quantized */
    uint64_t elements, bytes_before, bytes_after;
    double rmse, max_abs;      /* against the original (0 when kept) */
} llm_quant_report;

/* Called for each tensor written, in file order. */
typedef void (*llm_quant_report_fn)(void *ctx, const llm_quant_report *r);

int llm_quantize_file(const char *in, const char *out, const char *type, const char *const *keep, size_t nkeep,
                      llm_quant_report_fn fn, void *ctx, llm_err *err);

#endif
