/* gen_request.h — a generation request from JSON, with OpenAI's field names
 * (llm-infer's requests files, llm-serve's request bodies), and its prompt
 * from chat messages.
 *
 * Fields read (others are ignored; null is as if absent): temperature,
 * top_p, min_p, top_k, repetition_penalty, presence_penalty,
 * frequency_penalty, length_penalty, seed, max_tokens, n, beams,
 * top_logprobs, ignore_eos, stop (a string or a list of strings),
 * logit_bias (an object of token ids to biases in -100..100). */
#ifndef LLMUX_GEN_REQUEST_H
#define LLMUX_GEN_REQUEST_H

#include <jansson.h>

#include "chat.h"
#include "err.h"
#include "generate.h"
#include "tokenizer.h"

typedef struct {
    llm_gen_params p;        /* its lists point into the arrays below */
    char **stop;
    uint32_t *stop_ids;
    llm_logit_bias *bias;
    size_t stop_ids_cap;
} llm_gen_request;

/* q starts as a copy of defaults (lists included). */
int llm_gen_request_init(llm_gen_request *q, const llm_gen_params *defaults, llm_err *err);
void llm_gen_request_free(llm_gen_request *q);

/* Reads o's fields over q's. Fails on a value of the wrong type or out of
 * range, or parameters that do not go together (llm_gen_params_problem);
 * *field (when field is not NULL) is then the field at fault, or NULL. */
int llm_gen_request_read(llm_gen_request *q, const json_t *o, const char **field, llm_err *err);
/* Adds a token that ends a choice (a chat template's end token). */
int llm_gen_request_stop_id(llm_gen_request *q, uint32_t id, llm_err *err);

/* NULL, or what is wrong with the parameters; *field (when field is not
 * NULL) the field's name. */
const char *llm_gen_params_problem(const llm_gen_params *p, const char **field);

/* The chat format: name (chatml, llama2 or llama3) when given, else the
 * model's "chat_template" metadata tpl (a name, or a Jinja template
 * recognised by its signature). *has: whether there is one. Fails on a
 * name that is none of those; *unrecognised is set when tpl is there but
 * not recognised. */
int llm_gen_chat_format(const char *name, const char *tpl, llm_chat_format *fmt, int *has, int *unrecognised,
                        llm_err *err);

/* The prompt of messages (a JSON array of {role, content}) rendered with
 * format f and the assistant's header, appended to ids (segs is scratch);
 * *end_id the template's end token when it has one (*has_end). */
int llm_gen_encode_messages(const llm_tokenizer *tok, llm_tok_scratch *ts, llm_chat_format f, json_t *messages,
                            llm_chat_segments *segs, llm_ids *ids, uint32_t *end_id, int *has_end, llm_err *err);

#endif
