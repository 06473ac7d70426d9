/* llm-quantize: a model's matrices to quantized blocks. See llm-quantize(1);
 * the work is lib/quantize.c, the blocks kernels/quant_*.c. */
#include "cli.h"
#include "quantize.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *type, *out_path;
static llm_strlist keep;

static const llm_opt options[] = {
    {"type", 'q', LLM_OPT_STR, &type, "TYPE", "q8_0, q4_0, q4_k or nf4 (required)", 0, 0},
    {"output", 'o', LLM_OPT_STR, &out_path, "OUT", "the quantized model to write (required)", 0, 0},
    {"keep", 0, LLM_OPT_LIST, &keep, "PATTERN", "leave tensors whose names match (fnmatch) as they are; repeatable", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-quantize",
    .summary = "quantize a model's matrices to q8_0, q4_0, q4_k or nf4 blocks",
    .synopsis = "-q TYPE MODEL -o OUT [--keep PATTERN]...",
    .opts = options,
    .footer = "Prints one JSON line per tensor (name, type, rmse, max_abs, bytes before and after) and a\n"
              "total. Embeddings, norms and biases stay as they are. See llm-quantize(1).",
};

typedef struct {
    unsigned long long before, after, quantized, elements;
    double sq;   /* sum of squared errors */
    double max_abs;
} totals;

/* a tensor name as a JSON string: names come from the file */
static char *quoted(const char *name)
{
    json_t *j = json_string(name);
    char *s = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!s) llm_die("out of memory");
    return s;
}

static void report(void *ctx, const llm_quant_report *r)
{
    totals *t = ctx;
    char *name = quoted(r->name);
    t->before += r->bytes_before;
    t->after += r->bytes_after;
    if (!r->why_kept) {
        t->quantized++;
        t->elements += r->elements;
        t->sq += r->rmse * r->rmse * (double)r->elements;
        if (r->max_abs > t->max_abs) t->max_abs = r->max_abs;
        printf("{\"tensor\":%s,\"type\":\"%s\",\"rmse\":%.6g,\"max_abs\":%.6g,\"bytes_before\":%llu,\"bytes_after\":%llu}\n",
               name, r->type, r->rmse, r->max_abs, (unsigned long long)r->bytes_before, (unsigned long long)r->bytes_after);
    } else {
        printf("{\"tensor\":%s,\"type\":\"%s\",\"kept\":\"%s\",\"bytes\":%llu}\n", name, r->type, r->why_kept,
               (unsigned long long)r->bytes_before);
    }
    free(name);
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **args;
    int nargs = llm_cli_parse(&cmd, argc, argv, &args);
    if (!type) llm_usage_error("-q TYPE is required (q8_0, q4_0, q4_k or nf4)");
    if (!out_path) llm_usage_error("-o OUT is required");
    if (nargs != 1) llm_usage_error("give one MODEL");
    if (strcmp(type, "q8_0") && strcmp(type, "q4_0") && strcmp(type, "q4_k") && strcmp(type, "nf4"))
        llm_usage_error("-q must be q8_0, q4_0, q4_k or nf4, not '%s'", type);
    totals t = {0};
    llm_err err;
    if (llm_quantize_file(args[0], out_path, type, keep.items, (size_t)keep.count, report, &t, &err)) llm_die_err(&err);
    printf("{\"total\":true,\"type\":\"%s\",\"tensors_quantized\":%llu,\"rmse\":%.6g,\"max_abs\":%.6g,"
           "\"bytes_before\":%llu,\"bytes_after\":%llu,\"ratio\":%.4f}\n",
           type, t.quantized, t.elements ? __builtin_sqrt(t.sq / (double)t.elements) : 0.0, t.max_abs, t.before, t.after,
           t.after ? (double)t.before / (double)t.after : 0.0);
    return 0;
}
