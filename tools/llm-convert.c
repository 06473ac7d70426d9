/* llm-convert — a model from one format to another: llmux safetensors,
 * Hugging Face directories, GGUF, ONNX (out only) and llm.c checkpoints.
 * See man/man1/llm-convert.1; the formats are lib/cv_*.c (lib/cv.h). */
#include "cli.h"
#include "cv.h"

#include <stdio.h>
#include <string.h>

static const char *to_name, *from_name, *out_path, *dtype_name;

static const llm_opt options[] = {
    {"to", 0, LLM_OPT_STR, &to_name, "FORMAT", "llmux, hf, gguf, onnx or llmc", 0, 0},
    {"output", 'o', LLM_OPT_STR, &out_path, "OUT", "the file (a directory for hf) to write", 0, 0},
    {"dtype", 0, LLM_OPT_STR, &dtype_name, "TYPE", "f32, f16 or bf16: float tensors written as this (default: as read)", 0,
     0},
    {"from", 0, LLM_OPT_STR, &from_name, "FORMAT", "the input's format (default: detected)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    "llm-convert",
    "convert a model between llmux, Hugging Face, GGUF, ONNX and llm.c",
    "IN --to FORMAT -o OUT [--dtype TYPE] [--from FORMAT]",
    options,
    "IN is detected: a directory with config.json (hf), a GGUF file, an llm.c checkpoint, or an llmux\n"
    "safetensors file. Tensors are streamed: one at a time in memory besides what is mapped. Nothing is\n"
    "written when anything fails.",
};

typedef int (*reader)(const char *, llm_cv_model *, llm_err *);
typedef int (*writer)(const llm_cv_model *, const char *, const llm_cv_options *, llm_err *);

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **args;
    int nargs = llm_cli_parse(&cmd, argc, argv, &args);
    if (nargs != 1) llm_usage_error("give one IN");
    if (!to_name) llm_usage_error("--to is required: llmux, hf, gguf, onnx or llmc");
    if (!out_path) llm_usage_error("-o OUT is required");
    llm_cv_format to, from;
    if (llm_cv_format_parse(to_name, &to)) llm_usage_error("--to must be llmux, hf, gguf, onnx or llmc, not '%s'", to_name);
    if (from_name && (llm_cv_format_parse(from_name, &from) || from == LLM_CV_ONNX))
        llm_usage_error("--from must be llmux, hf, gguf or llmc, not '%s'", from_name);
    llm_cv_options o = {0};
    if (dtype_name) {
        o.dtype_set = 1;
        if (!strcmp(dtype_name, "f32")) o.dtype = LLM_F32;
        else if (!strcmp(dtype_name, "f16")) o.dtype = LLM_F16;
        else if (!strcmp(dtype_name, "bf16")) o.dtype = LLM_BF16;
        else llm_usage_error("--dtype must be f32, f16 or bf16, not '%s'", dtype_name);
    }
    llm_err err;
    if (!from_name && llm_cv_detect(args[0], &from, &err)) llm_die_err(&err);
    static const reader readers[] = {llm_cv_read_llmux, llm_cv_read_hf, llm_cv_read_gguf, NULL, llm_cv_read_llmc};
    static const writer writers[] = {llm_cv_write_llmux, llm_cv_write_hf, llm_cv_write_gguf, llm_cv_write_onnx,
                                     llm_cv_write_llmc};
    llm_cv_model m;
    if (readers[from](args[0], &m, &err)) llm_die_err(&err);
    int rc = writers[to](&m, out_path, &o, &err);
    llm_cv_model_free(&m);
    if (rc) llm_die_err(&err);
    fprintf(stderr, "llm-convert: %s (%s) -> %s (%s)\n", args[0], llm_cv_format_name(from), out_path, llm_cv_format_name(to));
    return 0;
}
