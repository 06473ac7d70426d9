/* llmux-logits: the logits lib/infer.c computes (the KV-cache forward
 * llm-infer runs), as JSON, for the tests that check other runtimes against
 * ours (t/conformance/test_convert_onnx.py).
 *
 *   llmux-logits MODEL IDS [IDS...]
 *
 * Each IDS is comma-separated token ids, run as one step of the same
 * sequence (llm_infer_step): the first a prompt, the next ones continuing
 * from the cache the earlier ones left. Prints one line: a JSON array with,
 * per step, the array of its tokens' logit rows, floats printed with 9
 * significant digits (exact for float32). */
#include "cli.h"
#include "infer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    if (argc < 3) llm_usage_error("usage: llmux-logits MODEL IDS [IDS...] (IDS: comma-separated token ids)");
    llm_err err;
    llm_infer *m;
    if (llm_infer_open(&m, argv[1], &err)) llm_die_err(&err);
    size_t V = llm_infer_config(m)->vocab_size;
    fputc('[', stdout);
    for (int a = 2; a < argc; a++) {
        size_t n = 1;
        for (const char *p = argv[a]; *p; p++) n += *p == ',';
        uint32_t *ids = malloc(n * sizeof *ids);
        float *logits = malloc(n * V * sizeof *logits);
        if (!ids || !logits) llm_die("out of memory");
        char *p = argv[a];
        for (size_t i = 0; i < n; i++) {
            char *end;
            unsigned long v = strtoul(p, &end, 10);
            if (end == p || (*end && *end != ',') || v > UINT32_MAX) llm_usage_error("'%s' is not comma-separated token ids", argv[a]);
            ids[i] = (uint32_t)v;
            p = *end ? end + 1 : end;
        }
        if (llm_infer_step(m, ids, n, logits, 1, &err)) llm_die_err(&err);
        printf("%s[", a > 2 ? "," : "");
        for (size_t i = 0; i < n; i++) {
            printf("%s[", i ? "," : "");
            for (size_t v = 0; v < V; v++) printf("%s%.9g", v ? "," : "", logits[i * V + v]);
            fputc(']', stdout);
        }
        fputc(']', stdout);
        free(ids);
        free(logits);
    }
    printf("]\n");
    llm_infer_close(m);
    return 0;
}
