/* libFuzzer target: tokenizer.json text -> llm_tok_from_json; when it loads,
 * encode a few fixed texts and the valid UTF-8 prefix of the input itself
 * (with and without special tokens), then decode the ids. Any crash, leak
 * or undefined behaviour is a bug; refusals are fine but must be one line. */
#include "tokenizer.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

static void encode_decode(const llm_tokenizer *t, llm_tok_scratch *s, const char *text, size_t n, int flags)
{
    llm_ids ids = {0};
    llm_err err;
    if (llm_tok_encode(t, s, text, n, flags, &ids, &err) == 0) {
        llm_strbuf out = {0};
        if (llm_tok_decode(t, ids.v, ids.n, &out, &err) != 0 && strchr(err.msg, '\n')) __builtin_trap();
        llm_sb_free(&out);
    } else if (strchr(err.msg, '\n')) {
        __builtin_trap();
    }
    llm_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    llm_tokenizer *t;
    llm_err err;
    if (llm_tok_from_json((const char *)data, size, "fuzz.json", &t, &err)) {
        if (strchr(err.msg, '\n') || !strstr(err.msg, "fuzz.json")) {
            if (!strstr(err.msg, "out of memory")) __builtin_trap();
        }
        return 0;
    }
    llm_tok_scratch *s = llm_tok_scratch_new(t);
    if (s) {
        static const char *texts[] = {"", "Hello world", " a  b\n\nc", "\xc3\xa9t\xc3\xa9 \xe2\x96\x81x", "<s>x</s>"};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
            for (int f = 0; f < 4; f++) encode_decode(t, s, texts[i], strlen(texts[i]), f);
        size_t v = llm_utf8_valid_prefix((const char *)data, size < 512 ? size : 512);
        encode_decode(t, s, (const char *)data, v, LLM_TOK_ALLOW_SPECIAL | LLM_TOK_ADD_SPECIAL);
        encode_decode(t, s, (const char *)data, size < 512 ? size : 512, LLM_TOK_BYTES);
    }
    llm_tok_scratch_free(s);
    llm_tok_free(t);
    return 0;
}
