/* Chat rendering: exact strings for every format (with and without a system
 * message, multi-turn), trained flags on exactly the assistant parts, special
 * segments, whitespace stripping as the templates do it, and every bad record.
 *
 * `test_chat --render` reads JSON lines {"format": F, "record": R} on stdin and
 * prints one JSON line per input, {"segments": [[text, trained, special, eos],
 * ...]} or {"error": msg}; t/conformance/test_chat_templates.py compares that
 * with the models' Jinja chat templates. */
#include "chat.h"
#include "unit.h"

/* One render, flattened for checking. */
typedef struct {
    int rc;
    llm_err err;
    char text[4096];      /* all segments concatenated; an eos segment as "<EOS>" */
    char trained[4096];   /* trained segments; "|" where an untrained run separates two */
    char specials[1024];  /* special segments, each followed by "," ("+" before it when trained) */
    size_t count;
    int adjacent_plain;   /* two neighbouring plain segments with the same flags (should merge) */
} rendered;

static void cat(char *dst, size_t cap, const char *s, size_t n)
{
    size_t l = strlen(dst);
    if (l + n >= cap) n = cap - l - 1;
    memcpy(dst + l, s, n);
    dst[l + n] = 0;
}

static void flatten(const llm_chat_segments *s, size_t from, rendered *out)
{
    out->text[0] = out->trained[0] = out->specials[0] = 0;
    out->count = s->count - from;
    out->adjacent_plain = 0;
    int in_trained = 0, any_trained = 0;
    for (size_t i = from; i < s->count; i++) {
        const llm_chat_segment *g = &s->seg[i];
        if (g->eos) cat(out->text, sizeof out->text, "<EOS>", 5);
        else cat(out->text, sizeof out->text, g->text, g->len);
        if (g->trained) {
            if (!in_trained && any_trained) cat(out->trained, sizeof out->trained, "|", 1);
            if (g->eos) cat(out->trained, sizeof out->trained, "<EOS>", 5);
            else cat(out->trained, sizeof out->trained, g->text, g->len);
            any_trained = 1;
        }
        in_trained = g->trained;
        if (g->special) {
            if (g->trained) cat(out->specials, sizeof out->specials, "+", 1);
            cat(out->specials, sizeof out->specials, g->text, g->len);
            cat(out->specials, sizeof out->specials, ",", 1);
        }
        if (i > from) {
            const llm_chat_segment *p = &s->seg[i - 1];
            if (!p->special && !g->special && !p->eos && !g->eos && p->trained == g->trained) out->adjacent_plain = 1;
        }
        if (g->text[g->len] != 0) out->adjacent_plain = 2;   /* not NUL-terminated */
    }
}

static rendered render(llm_chat_format f, const char *json)
{
    rendered r;
    memset(&r, 0, sizeof r);
    json_error_t je;
    json_t *rec = json_loads(json, JSON_DECODE_ANY, &je);
    if (!rec) {
        printf("# bad JSON in test: %s: %s\n", json, je.text);
        r.rc = -2;
        return r;
    }
    llm_chat_segments s = { 0 };
    r.rc = llm_chat_render(f, rec, &s, &r.err);
    if (r.rc == 0) flatten(&s, 0, &r);
    else if (s.count) r.rc = -3;   /* failure must leave out as it was */
    llm_chat_segments_free(&s);
    json_decref(rec);
    return r;
}

#define CHECK_STR(a, b)                                                                         \
    do {                                                                                        \
        const char *a_ = (a), *b_ = (b);                                                        \
        if (strcmp(a_, b_)) {                                                                   \
            printf("# %s:%d: %s\n#   got:  \"", __FILE__, __LINE__, #a);                         \
            for (const char *p_ = a_; *p_; p_++) printf(*p_ == '\n' ? "\\n" : "%c", *p_);       \
            printf("\"\n#   want: \"");                                                         \
            for (const char *p_ = b_; *p_; p_++) printf(*p_ == '\n' ? "\\n" : "%c", *p_);       \
            printf("\"\n");                                                                     \
            unit_failures++;                                                                    \
        }                                                                                       \
    } while (0)

/* Renders and checks the whole text, the trained parts and the specials. */
#define CHECK_RENDER(fmt, json, want_text, want_trained, want_specials) \
    do {                                                                \
        rendered r_ = render(fmt, json);                                \
        CHECK_EQ_U64(r_.rc, 0);                                         \
        if (r_.rc) printf("#   error: %s\n", r_.err.msg);               \
        CHECK_STR(r_.text, want_text);                                  \
        CHECK_STR(r_.trained, want_trained);                            \
        CHECK_STR(r_.specials, want_specials);                          \
        CHECK_EQ_U64(r_.adjacent_plain, 0);                             \
    } while (0)

#define CHECK_RENDER_ERR(fmt, json, needle)            \
    do {                                                \
        rendered r_ = render(fmt, json);                \
        CHECK(r_.rc == -1);                             \
        CHECK_ERR(r_.rc, r_.err, needle);               \
        CHECK(strncmp(r_.err.msg, "record: ", 8) == 0); \
    } while (0)

static const char *SYS_TURN = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                              " {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}";
static const char *ONE_TURN = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}";
static const char *MULTI = "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"},"
                           " {\"role\": \"user\", \"content\": \"U1\"}, {\"role\": \"assistant\", \"content\": \"A1\"},"
                           " {\"role\": \"user\", \"content\": \"U2\"}, {\"role\": \"assistant\", \"content\": \"A2\"}]}";
static const char *PAIR = "{\"prompt\": \"Q?\", \"response\": \"A.\", \"id\": 7}";

TEST(format_parse_and_name)
{
    llm_chat_format f = LLM_CHAT_LLAMA3;
    CHECK(llm_chat_format_parse("none", &f) == 0 && f == LLM_CHAT_NONE);
    CHECK(llm_chat_format_parse("chatml", &f) == 0 && f == LLM_CHAT_CHATML);
    CHECK(llm_chat_format_parse("llama2", &f) == 0 && f == LLM_CHAT_LLAMA2);
    CHECK(llm_chat_format_parse("llama3", &f) == 0 && f == LLM_CHAT_LLAMA3);
    f = LLM_CHAT_CHATML;
    CHECK(llm_chat_format_parse("ChatML", &f) == -1);
    CHECK(llm_chat_format_parse("llama-2", &f) == -1);
    CHECK(llm_chat_format_parse("", &f) == -1);
    CHECK(llm_chat_format_parse(NULL, &f) == -1);
    CHECK(f == LLM_CHAT_CHATML);
    for (int i = LLM_CHAT_NONE; i <= LLM_CHAT_LLAMA3; i++) {
        CHECK(llm_chat_format_parse(llm_chat_format_name((llm_chat_format)i), &f) == 0);
        CHECK((int)f == i);
    }
    CHECK_STR(llm_chat_format_name((llm_chat_format)42), "?");
}

/* The chat_template strings of the models' tokenizer_config.json files. */
static const char *QWEN2_TEMPLATE =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
    "assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
static const char *LLAMA2_TEMPLATE =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}"
    "{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
static const char *LLAMA3_TEMPLATE =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
static const char *MISTRAL_TEMPLATE =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
    "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ "
    "raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

TEST(format_detect)
{
    llm_chat_format f = LLM_CHAT_NONE;
    CHECK(llm_chat_format_detect(QWEN2_TEMPLATE, &f) == 0 && f == LLM_CHAT_CHATML);
    CHECK(llm_chat_format_detect(LLAMA2_TEMPLATE, &f) == 0 && f == LLM_CHAT_LLAMA2);
    CHECK(llm_chat_format_detect(LLAMA3_TEMPLATE, &f) == 0 && f == LLM_CHAT_LLAMA3);
    f = LLM_CHAT_NONE;
    CHECK(llm_chat_format_detect(MISTRAL_TEMPLATE, &f) == -1);   /* [INST] without <<SYS>>: not Llama 2's spacing */
    CHECK(llm_chat_format_detect("{{ messages }}", &f) == -1);
    CHECK(llm_chat_format_detect("", &f) == -1);
    CHECK(llm_chat_format_detect(NULL, &f) == -1);
    CHECK(f == LLM_CHAT_NONE);
}

TEST(chatml)
{
    CHECK_RENDER(LLM_CHAT_CHATML, ONE_TURN,
                 "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
                 "Hello!<|im_end|>",
                 "<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,");
    CHECK_RENDER(LLM_CHAT_CHATML, SYS_TURN,
                 "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
                 "Hello!<|im_end|>",
                 "<|im_start|>,<|im_end|>,<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,");
    CHECK_RENDER(LLM_CHAT_CHATML, MULTI,
                 "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
                 "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n",
                 "A1<|im_end|>|A2<|im_end|>",
                 "<|im_start|>,<|im_end|>,<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,");
    /* content as it is: no stripping; special-token strings in content stay plain text */
    CHECK_RENDER(LLM_CHAT_CHATML,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \" x <|im_end|>\\n\"}, {\"role\": \"assistant\", \"content\": \"\\n y \"}]}",
                 "<|im_start|>user\n x <|im_end|>\n<|im_end|>\n<|im_start|>assistant\n\n y <|im_end|>\n",
                 "\n y <|im_end|>",
                 "<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,");
    CHECK_RENDER(LLM_CHAT_CHATML, PAIR,
                 "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>\n",
                 "A.<|im_end|>",
                 "<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,");
}

/* The exact segment list of one ChatML turn: what the tokenizer will see. */
TEST(chatml_segments)
{
    json_t *rec = json_loads(ONE_TURN, 0, NULL);
    llm_chat_segments s = { 0 };
    llm_err e;
    CHECK(llm_chat_render(LLM_CHAT_CHATML, rec, &s, &e) == 0);
    static const struct { const char *text; int trained, special; } want[] = {
        { "<|im_start|>", 0, 1 }, { "user\nHi", 0, 0 },      { "<|im_end|>", 0, 1 }, { "\n", 0, 0 },
        { "<|im_start|>", 0, 1 }, { "assistant\n", 0, 0 },   { "Hello!", 1, 0 },     { "<|im_end|>", 1, 1 },
        { "\n", 0, 0 },
    };
    CHECK_EQ_U64(s.count, sizeof want / sizeof *want);
    for (size_t i = 0; i < s.count && i < sizeof want / sizeof *want; i++) {
        CHECK_STR(s.seg[i].text, want[i].text);
        CHECK_EQ_U64(s.seg[i].len, strlen(want[i].text));
        CHECK_EQ_U64(s.seg[i].trained, want[i].trained);
        CHECK_EQ_U64(s.seg[i].special, want[i].special);
        CHECK_EQ_U64(s.seg[i].eos, 0);
    }
    llm_chat_segments_free(&s);
    json_decref(rec);
}

TEST(llama2)
{
    CHECK_RENDER(LLM_CHAT_LLAMA2, ONE_TURN,
                 "<s>[INST] Hi [/INST] Hello! </s>",
                 " Hello! </s>",
                 "<s>,+</s>,");
    CHECK_RENDER(LLM_CHAT_LLAMA2, SYS_TURN,
                 "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s>",
                 " Hello! </s>",
                 "<s>,+</s>,");
    CHECK_RENDER(LLM_CHAT_LLAMA2, MULTI,
                 "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST] A2 </s>",
                 " A1 </s>| A2 </s>",
                 "<s>,+</s>,<s>,+</s>,");
    CHECK_RENDER(LLM_CHAT_LLAMA2, PAIR, "<s>[INST] Q? [/INST] A. </s>", " A. </s>", "<s>,+</s>,");
    /* ending with a user message, as Meta's chat_completion renders the prompt */
    CHECK_RENDER(LLM_CHAT_LLAMA2,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"U1\"}, {\"role\": \"assistant\", \"content\": \"A1\"},"
                 " {\"role\": \"user\", \"content\": \"U2\"}]}",
                 "<s>[INST] U1 [/INST] A1 </s><s>[INST] U2 [/INST]",
                 " A1 </s>",
                 "<s>,+</s>,<s>,");
}

/* content.strip() as the template and Meta's code do it: Unicode whitespace,
 * both ends; with a system block the user's leading space survives (the
 * stripped string starts with "<<SYS>>"), the system text is not stripped. */
TEST(llama2_strip)
{
    CHECK_RENDER(LLM_CHAT_LLAMA2,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \" \\t Hi there\\n\"},"
                 " {\"role\": \"assistant\", \"content\": \"\\u3000\\u00a0 Hello \\u2003\\n\"},"
                 " {\"role\": \"user\", \"content\": \"\\u200bx\\u200b\"}, {\"role\": \"assistant\", \"content\": \"caf\\u00e9 \"}]}",
                 "<s>[INST] Hi there [/INST] Hello </s><s>[INST] \xe2\x80\x8bx\xe2\x80\x8b [/INST] caf\xc3\xa9 </s>",
                 " Hello </s>| caf\xc3\xa9 </s>",
                 "<s>,+</s>,<s>,+</s>,");
    CHECK_RENDER(LLM_CHAT_LLAMA2,
                 "{\"messages\": [{\"role\": \"system\", \"content\": \" S \"}, {\"role\": \"user\", \"content\": \"  Hi  \"},"
                 " {\"role\": \"assistant\", \"content\": \"A\"}]}",
                 "<s>[INST] <<SYS>>\n S \n<</SYS>>\n\n  Hi [/INST] A </s>",
                 " A </s>",
                 "<s>,+</s>,");
    /* a whitespace-only user after a system block: strip eats back into the block */
    CHECK_RENDER(LLM_CHAT_LLAMA2,
                 "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \" \"}]}",
                 "<s>[INST] <<SYS>>\nS\n<</SYS>> [/INST]",
                 "",
                 "<s>,");
}

TEST(llama3)
{
    CHECK_RENDER(LLM_CHAT_LLAMA3, ONE_TURN,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
                 "Hello!<|eot_id|>",
                 "<|begin_of_text|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,<|start_header_id|>,<|end_header_id|>,+<|eot_id|>,");
    CHECK_RENDER(LLM_CHAT_LLAMA3, SYS_TURN,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
                 "Hello!<|eot_id|>",
                 "<|begin_of_text|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,"
                 "<|start_header_id|>,<|end_header_id|>,+<|eot_id|>,");
    CHECK_RENDER(LLM_CHAT_LLAMA3, MULTI,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>",
                 "A1<|eot_id|>|A2<|eot_id|>",
                 "<|begin_of_text|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,"
                 "<|start_header_id|>,<|end_header_id|>,+<|eot_id|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,"
                 "<|start_header_id|>,<|end_header_id|>,+<|eot_id|>,");
    /* | trim on every message, the system one included */
    CHECK_RENDER(LLM_CHAT_LLAMA3,
                 "{\"messages\": [{\"role\": \"system\", \"content\": \"\\n S \"}, {\"role\": \"user\", \"content\": \" Hi\\n\\n\"},"
                 " {\"role\": \"assistant\", \"content\": \"\\u00a0Hello \"}]}",
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>",
                 "Hello<|eot_id|>",
                 "<|begin_of_text|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,"
                 "<|start_header_id|>,<|end_header_id|>,+<|eot_id|>,");
    CHECK_RENDER(LLM_CHAT_LLAMA3, PAIR,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nA.<|eot_id|>",
                 "A.<|eot_id|>",
                 "<|begin_of_text|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,<|start_header_id|>,<|end_header_id|>,+<|eot_id|>,");
}

TEST(none)
{
    json_t *rec = json_loads("{\"prompt\": \"Translate: chat\\n\", \"response\": \" cat\"}", 0, NULL);
    llm_chat_segments s = { 0 };
    llm_err e;
    CHECK(llm_chat_render(LLM_CHAT_NONE, rec, &s, &e) == 0);
    CHECK_EQ_U64(s.count, 3);
    if (s.count == 3) {
        CHECK_STR(s.seg[0].text, "Translate: chat\n");
        CHECK(!s.seg[0].trained && !s.seg[0].special && !s.seg[0].eos);
        CHECK_STR(s.seg[1].text, " cat");
        CHECK(s.seg[1].trained && !s.seg[1].special && !s.seg[1].eos);
        CHECK_EQ_U64(s.seg[2].len, 0);
        CHECK(s.seg[2].text && s.seg[2].text[0] == 0);
        CHECK(s.seg[2].trained && !s.seg[2].special && s.seg[2].eos);
    }
    llm_chat_segments_free(&s);
    json_decref(rec);
    CHECK_RENDER(LLM_CHAT_NONE, PAIR, "Q?A.<EOS>", "A.<EOS>", "");
    /* no prompt text: the whole response is trained */
    CHECK_RENDER(LLM_CHAT_NONE, "{\"prompt\": \"\", \"response\": \"all of it\"}", "all of it<EOS>", "all of it<EOS>", "");
}

/* An empty system message is rendered as each template renders it. */
TEST(empty_system)
{
    const char *rec = "{\"messages\": [{\"role\": \"system\", \"content\": \"\"}, {\"role\": \"user\", \"content\": \"Hi\"},"
                      " {\"role\": \"assistant\", \"content\": \"Yo\"}]}";
    CHECK_RENDER(LLM_CHAT_CHATML, rec,
                 "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n",
                 "Yo<|im_end|>", "<|im_start|>,<|im_end|>,<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,");
    CHECK_RENDER(LLM_CHAT_LLAMA2, rec, "<s>[INST] <<SYS>>\n\n<</SYS>>\n\nHi [/INST] Yo </s>", " Yo </s>", "<s>,+</s>,");
    CHECK_RENDER(LLM_CHAT_LLAMA3, rec,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>",
                 "Yo<|eot_id|>",
                 "<|begin_of_text|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,<|start_header_id|>,<|end_header_id|>,<|eot_id|>,"
                 "<|start_header_id|>,<|end_header_id|>,+<|eot_id|>,");
}

/* "messages" wins over "prompt" (ultrachat_200k has both); extra fields ignored. */
TEST(messages_preferred)
{
    CHECK_RENDER(LLM_CHAT_CHATML,
                 "{\"prompt\": \"Hi\", \"prompt_id\": \"x1\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\", \"name\": \"bob\"},"
                 " {\"role\": \"assistant\", \"content\": \"Yo\", \"weight\": 1}], \"score\": 3.5}",
                 "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n",
                 "Yo<|im_end|>", "<|im_start|>,<|im_end|>,<|im_start|>,+<|im_end|>,");
}

/* Appending, resetting, and a failure leaving out as it was. */
TEST(append_reset)
{
    json_t *a = json_loads(ONE_TURN, 0, NULL), *b = json_loads(PAIR, 0, NULL),
           *bad = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"user\", \"content\": \"y\"}]}", 0, NULL);
    llm_chat_segments s = { 0 };
    llm_err e;
    rendered r;
    CHECK(llm_chat_render(LLM_CHAT_LLAMA2, a, &s, &e) == 0);
    size_t n1 = s.count;
    CHECK(llm_chat_render(LLM_CHAT_LLAMA2, b, &s, &e) == 0);
    flatten(&s, 0, &r);
    CHECK_STR(r.text, "<s>[INST] Hi [/INST] Hello! </s><s>[INST] Q? [/INST] A. </s>");
    CHECK_EQ_U64(s.count, 2 * n1);
    size_t n2 = s.count;
    CHECK(llm_chat_render(LLM_CHAT_LLAMA2, bad, &s, &e) == -1);
    CHECK_EQ_U64(s.count, n2);
    /* reset keeps the array */
    llm_chat_segments_reset(&s);
    CHECK_EQ_U64(s.count, 0);
    CHECK(s.seg != NULL && s.cap >= n2);
    CHECK(llm_chat_render(LLM_CHAT_CHATML, b, &s, &e) == 0);
    size_t n3 = s.count;
    CHECK(llm_chat_render(LLM_CHAT_CHATML, b, &s, &e) == 0);
    CHECK_EQ_U64(s.count, 2 * n3);
    /* many records: the array grows */
    llm_chat_segments_reset(&s);
    for (int i = 0; i < 100; i++) CHECK(llm_chat_render(LLM_CHAT_LLAMA3, a, &s, &e) == 0);
    CHECK_EQ_U64(s.count, 100 * 12);
    llm_chat_segments_free(&s);
    CHECK(s.seg == NULL && s.count == 0 && s.cap == 0);
    llm_chat_segments_free(&s);   /* twice is harmless */
    json_decref(a);
    json_decref(b);
    json_decref(bad);
}

/* Content with a NUL byte keeps its length. */
TEST(embedded_nul)
{
    json_t *rec = json_loads("{\"prompt\": \"a\\u0000b\", \"response\": \"c\\u0000\"}", JSON_ALLOW_NUL, NULL);
    CHECK(rec != NULL);
    llm_chat_segments s = { 0 };
    llm_err e;
    CHECK(llm_chat_render(LLM_CHAT_NONE, rec, &s, &e) == 0);
    CHECK_EQ_U64(s.count, 3);
    if (s.count == 3) {
        CHECK_EQ_U64(s.seg[0].len, 3);
        CHECK(memcmp(s.seg[0].text, "a\0b", 4) == 0);
        CHECK_EQ_U64(s.seg[1].len, 2);
    }
    llm_chat_segments_free(&s);
    json_decref(rec);
}

TEST(errors)
{
    static const llm_chat_format all[] = { LLM_CHAT_CHATML, LLM_CHAT_LLAMA2, LLM_CHAT_LLAMA3 };
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) {
        llm_chat_format f = all[k];
        CHECK_RENDER_ERR(f, "[1, 2]", "not a JSON object");
        CHECK_RENDER_ERR(f, "\"text\"", "not a JSON object");
        CHECK_RENDER_ERR(f, "{}", "neither \"messages\" nor \"prompt\" and \"response\"");
        CHECK_RENDER_ERR(f, "{\"text\": \"x\"}", "neither");
        CHECK_RENDER_ERR(f, "{\"prompt\": \"x\"}", "\"prompt\" without \"response\"");
        CHECK_RENDER_ERR(f, "{\"response\": \"x\"}", "\"response\" without \"prompt\"");
        CHECK_RENDER_ERR(f, "{\"prompt\": 3, \"response\": \"x\"}", "\"prompt\" is a number, not a string");
        CHECK_RENDER_ERR(f, "{\"prompt\": \"x\", \"response\": null}", "\"response\" is null, not a string");
        CHECK_RENDER_ERR(f, "{\"prompt\": \"x\", \"response\": [\"y\"]}", "\"response\" is an array, not a string");
        CHECK_RENDER_ERR(f, "{\"prompt\": \"x\", \"response\": \"\"}", "empty \"response\"");
        CHECK_RENDER_ERR(f, "{\"prompt\": \"\", \"response\": \"y\"}", "empty \"prompt\"");
        CHECK_RENDER_ERR(f, "{\"messages\": \"hi\"}", "\"messages\" is a string, not an array");
        CHECK_RENDER_ERR(f, "{\"messages\": null, \"prompt\": \"x\", \"response\": \"y\"}", "\"messages\" is null, not an array");
        CHECK_RENDER_ERR(f, "{\"messages\": []}", "\"messages\" is empty");
        CHECK_RENDER_ERR(f, "{\"messages\": [\"hi\"]}", "messages[0] is a string, not an object");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"content\": \"hi\"}]}", "messages[0] has no \"role\"");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": 1, \"content\": \"hi\"}]}", "messages[0]: \"role\" is a number, not a string");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"tool\", \"content\": \"x\"}]}",
                         "messages[1]: role \"tool\" is not system, user or assistant");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"User\", \"content\": \"hi\"}]}", "role \"User\" is not system");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"system\", \"content\": \"x\"}]}",
                         "messages[1]: a system message is allowed only first");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"system\", \"content\": \"a\"}, {\"role\": \"system\", \"content\": \"b\"}]}",
                         "messages[1]: a system message is allowed only first");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"assistant\", \"content\": \"hi\"}]}", "messages[0]: expected a user message, got assistant");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"assistant\", \"content\": \"hi\"}]}",
                         "messages[1]: expected a user message, got assistant");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]}",
                         "messages[1]: expected a assistant message, got user");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"},"
                            " {\"role\": \"assistant\", \"content\": \"c\"}]}",
                         "messages[2]: expected a user message, got assistant");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}]}", "has a system message and no user message");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\"}]}", "messages[0] (user) has no \"content\"");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": null}]}", "messages[0] (user): \"content\" is null, not a string");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": 5}]}",
                         "messages[1] (assistant): \"content\" is a number, not a string");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}]}]}",
                         "messages[0] (user): \"content\" is an array, not a string");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"\"}]}", "messages[0] (user): empty \"content\"");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"\"}]}",
                         "messages[1] (assistant): empty \"content\"");
        CHECK_RENDER_ERR(f, "{\"messages\": [{\"role\": \"system\", \"content\": false}, {\"role\": \"user\", \"content\": \"a\"}]}",
                         "messages[0] (system): \"content\" is a boolean, not a string");
    }
    CHECK_RENDER_ERR(LLM_CHAT_NONE, ONE_TURN, "a \"messages\" record needs a chat format");
    CHECK_RENDER_ERR(LLM_CHAT_NONE, "{\"prompt\": \"x\", \"response\": \"\"}", "empty \"response\"");
    CHECK_RENDER_ERR(LLM_CHAT_NONE, "{\"prompt\": {}, \"response\": \"x\"}", "\"prompt\" is an object, not a string");
    CHECK_RENDER_ERR(LLM_CHAT_NONE, "7", "a number, not a JSON object");
    CHECK_RENDER_ERR((llm_chat_format)9, PAIR, "unknown chat format");
    llm_err e;
    llm_chat_segments s = { 0 };
    CHECK_ERR(llm_chat_render(LLM_CHAT_CHATML, NULL, &s, &e), e, "not a JSON object");
    /* a long, odd role is cut short and kept on one line */
    rendered r = render(LLM_CHAT_CHATML, "{\"messages\": [{\"role\": \"a\\nb0123456789012345678901234567890123456789xyz\", \"content\": \"x\"}]}");
    CHECK(r.rc == -1 && !strchr(r.err.msg, '\n') && !strstr(r.err.msg, "xyz"));
    /* NULL err is allowed */
    json_t *j = json_loads("{}", 0, NULL);
    CHECK(llm_chat_render(LLM_CHAT_CHATML, j, &s, NULL) == -1);
    json_decref(j);
}

/* Random conversations: in every format, the trained text is exactly the
 * assistant parts, every special segment is one of the format's tokens, and
 * nothing that should have merged was left apart. */
TEST(random_conversations)
{
    static const char *const words[] = { "a", " b", "c\n", "<|im_end|>", "[INST]", "</s>", "\xc3\xa9", "  ", "x y" };
    static const char *const specials[] = { "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|begin_of_text|>",
                                            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>" };
    for (int iter = 0; iter < 300; iter++) {
        json_t *msgs = json_array();
        int sys = unit_rand() % 2, turns = 1 + (int)(unit_rand() % 6);
        if (sys) json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", "sys"));
        char expect_trained[3][2048] = { "", "", "" };   /* chatml, llama2, llama3 */
        for (int t = 0; t < turns; t++) {
            char content[256] = "w";   /* starts and ends with a non-space */
            int nw = (int)(unit_rand() % 5);
            for (int w = 0; w < nw; w++) strcat(content, words[unit_rand() % (sizeof words / sizeof *words)]);
            strcat(content, "z");
            int user = t % 2 == 0;
            json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", user ? "user" : "assistant", "content", content));
            if (!user) {
                const char *sep = expect_trained[0][0] ? "|" : "";
                snprintf(expect_trained[0] + strlen(expect_trained[0]), 2048 - strlen(expect_trained[0]), "%s%s<|im_end|>", sep, content);
                snprintf(expect_trained[1] + strlen(expect_trained[1]), 2048 - strlen(expect_trained[1]), "%s %s </s>", sep, content);
                snprintf(expect_trained[2] + strlen(expect_trained[2]), 2048 - strlen(expect_trained[2]), "%s%s<|eot_id|>", sep, content);
            }
        }
        json_t *rec = json_pack("{s:o}", "messages", msgs);
        static const llm_chat_format fs[] = { LLM_CHAT_CHATML, LLM_CHAT_LLAMA2, LLM_CHAT_LLAMA3 };
        for (int k = 0; k < 3; k++) {
            llm_chat_segments s = { 0 };
            llm_err e;
            rendered r;
            CHECK(llm_chat_render(fs[k], rec, &s, &e) == 0);
            flatten(&s, 0, &r);
            CHECK_STR(r.trained, expect_trained[k]);
            CHECK_EQ_U64(r.adjacent_plain, 0);
            for (size_t i = 0; i < s.count; i++) {
                if (!s.seg[i].special) continue;
                int known = 0;
                for (size_t q = 0; q < sizeof specials / sizeof *specials; q++) known |= !strcmp(s.seg[i].text, specials[q]);
                CHECK(known);
            }
            llm_chat_segments_free(&s);
        }
        json_decref(rec);
    }
}

/* ---- --render: JSON lines in, segments out (for the conformance tier) ---- */
static int render_mode(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *in = json_loadb(line, (size_t)n, 0, &je), *out;
        llm_chat_format f;
        if (!in || llm_chat_format_parse(json_string_value(json_object_get(in, "format")), &f)) {
            fprintf(stderr, "test_chat --render: bad input line: %s\n", in ? "unknown format" : je.text);
            json_decref(in);
            rc = 1;
            break;
        }
        llm_chat_segments s = { 0 };
        llm_err e;
        if (llm_chat_render(f, json_object_get(in, "record"), &s, &e)) {
            out = json_pack("{s:s}", "error", e.msg);
        } else {
            json_t *list = json_array();
            for (size_t i = 0; i < s.count; i++)
                json_array_append_new(list, json_pack("[s#,b,b,b]", s.seg[i].text, s.seg[i].len, s.seg[i].trained, s.seg[i].special,
                                                      s.seg[i].eos));
            out = json_pack("{s:o}", "segments", list);
        }
        char *text = json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", text);
        free(text);
        json_decref(out);
        json_decref(in);
        llm_chat_segments_free(&s);
    }
    free(line);
    fflush(stdout);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--render")) return render_mode();
    unit_seed();
    RUN(format_parse_and_name);
    RUN(format_detect);
    RUN(chatml);
    RUN(chatml_segments);
    RUN(llama2);
    RUN(llama2_strip);
    RUN(llama3);
    RUN(none);
    RUN(empty_system);
    RUN(messages_preferred);
    RUN(append_reset);
    RUN(embedded_nul);
    RUN(errors);
    RUN(random_conversations);
    return unit_done();
}
