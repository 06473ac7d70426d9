/* Chat segments to token ids: see chat_encode.h. */
#include "chat_encode.h"

int llm_chat_encode_segment(const llm_tokenizer *tok, llm_tok_scratch *s, const llm_chat_segment *g, int after_text,
                            llm_ids *ids, llm_err *err)
{
    if (g->eos || g->special) {
        uint32_t id;
        if (g->eos && llm_tok_eos(tok, &id)) return llm_errf(err, "the tokenizer has no end-of-sequence token");
        if (g->special && llm_tok_special(tok, g->text, &id))
            return llm_errf(err, "the chat template's token '%s' is not in the tokenizer", g->text);
        if (llm_ids_push(ids, id)) return llm_errf(err, "out of memory");
        return 0;
    }
    return g->len ? llm_tok_encode(tok, s, g->text, g->len, after_text ? LLM_TOK_CONTINUE : 0, ids, err) : 0;
}

int llm_chat_encode(const llm_tokenizer *tok, llm_tok_scratch *s, const llm_chat_segments *segs, llm_ids *ids,
                    llm_err *err)
{
    int after_text = 0;   /* the previous segment was text: this one continues it */
    for (size_t i = 0; i < segs->count; i++) {
        const llm_chat_segment *g = &segs->seg[i];
        if (llm_chat_encode_segment(tok, s, g, after_text, ids, err)) return -1;
        after_text = !g->eos && !g->special && g->len;
    }
    return 0;
}
