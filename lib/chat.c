/* chat.c — instruction records to trained/untrained text segments; see chat.h. */
#include "chat.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- formats ---- */

static const char *const format_names[] = {
    [LLM_CHAT_NONE] = "none",
    [LLM_CHAT_CHATML] = "chatml",
    [LLM_CHAT_LLAMA2] = "llama2",
    [LLM_CHAT_LLAMA3] = "llama3",
};

int llm_chat_format_parse(const char *name, llm_chat_format *out)
{
    if (!name) return -1;
    for (size_t i = 0; i < sizeof format_names / sizeof *format_names; i++)
        if (!strcmp(name, format_names[i])) {
            *out = (llm_chat_format)i;
            return 0;
        }
    return -1;
}

const char *llm_chat_format_name(llm_chat_format f)
{
    return (unsigned)f < sizeof format_names / sizeof *format_names ? format_names[f] : "?";
}

int llm_chat_format_detect(const char *t, llm_chat_format *out)
{
    if (!t) return -1;
    if (strstr(t, "<|start_header_id|>")) *out = LLM_CHAT_LLAMA3;
    else if (strstr(t, "<|im_start|>")) *out = LLM_CHAT_CHATML;
    else if (strstr(t, "[INST]") && strstr(t, "<<SYS>>")) *out = LLM_CHAT_LLAMA2;
    else return -1;
    return 0;
}

/* ---- segments ---- */

void llm_chat_segments_reset(llm_chat_segments *s)
{
    for (size_t i = 0; i < s->count; i++) free(s->seg[i].text);
    s->count = 0;
}

void llm_chat_segments_free(llm_chat_segments *s)
{
    llm_chat_segments_reset(s);
    free(s->seg);
    s->seg = NULL;
    s->cap = 0;
}

/* One render call: segments from `start` on are ours (merge only among them). */
typedef struct {
    llm_chat_segments *out;
    size_t start;
    int oom;
} render;

static void add(render *r, const char *text, size_t len, int trained, int special, int eos)
{
    if (r->oom) return;
    llm_chat_segments *s = r->out;
    if (!special && !eos && s->count > r->start) {
        llm_chat_segment *last = &s->seg[s->count - 1];
        if (!last->special && !last->eos && last->trained == (unsigned)!!trained) {
            if (!len) return;
            char *p = realloc(last->text, last->len + len + 1);
            if (!p) { r->oom = 1; return; }
            memcpy(p + last->len, text, len);
            last->len += len;
            p[last->len] = 0;
            last->text = p;
            return;
        }
    }
    if (!len && !eos) return;
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        llm_chat_segment *seg = realloc(s->seg, cap * sizeof *seg);
        if (!seg) { r->oom = 1; return; }
        s->seg = seg;
        s->cap = cap;
    }
    char *p = malloc(len + 1);
    if (!p) { r->oom = 1; return; }
    if (len) memcpy(p, text, len);
    p[len] = 0;
    s->seg[s->count++] = (llm_chat_segment){ .text = p, .len = len, .trained = !!trained, .special = !!special, .eos = !!eos };
}

static void plain(render *r, const char *text, size_t len, int trained) { add(r, text, len, trained, 0, 0); }
static void plains(render *r, const char *text, int trained) { add(r, text, strlen(text), trained, 0, 0); }
static void special(render *r, const char *token, int trained) { add(r, token, strlen(token), trained, 1, 0); }

/* ---- whitespace as Python's str.strip() (and Jinja's trim) sees it ---- */

static int py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Decodes the UTF-8 sequence at p (n bytes available); returns its length, or
 * 0 when it is not well-formed (such bytes are never whitespace). */
static size_t utf8_at(const unsigned char *p, size_t n, uint32_t *cp)
{
    if (p[0] < 0x80) { *cp = p[0]; return 1; }
    size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc0 ? 2 : 0;
    if (!len || len > n) return 0;
    uint32_t c = p[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    *cp = c;
    return len;
}

static void strip(const char **s, size_t *n)
{
    const unsigned char *p = (const unsigned char *)*s;
    size_t b = 0, e = *n, k;
    uint32_t c;
    while (b < e && (k = utf8_at(p + b, e - b, &c)) && py_space(c)) b += k;
    while (e > b) {
        size_t start = e - 1;   /* back to the first byte of the last character */
        while (start > b && (p[start] & 0xc0) == 0x80 && e - start < 4) start--;
        if (utf8_at(p + start, e - start, &c) != e - start || !py_space(c)) break;
        e = start;
    }
    *s = (const char *)p + b;
    *n = e - b;
}

/* ---- records ---- */

enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };
static const char *const role_names[] = { "system", "user", "assistant" };

typedef struct {
    int role;
    const char *text;
    size_t len;
} message;

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Reads and checks "messages" into *msgs (malloc'd), *n. */
static int read_messages(const json_t *list, message **msgs, size_t *n, llm_err *err)
{
    if (!json_is_array(list)) return llm_errf(err, "record: \"messages\" is %s, not an array", type_name(list));
    size_t count = json_array_size(list);
    if (!count) return llm_errf(err, "record: \"messages\" is empty");
    message *m = malloc(count * sizeof *m);
    if (!m) return llm_errf(err, "record: out of memory for %zu messages", count);
    size_t turns = 0;   /* user/assistant messages so far */
    for (size_t i = 0; i < count; i++) {
        const json_t *o = json_array_get(list, i), *role = json_object_get(o, "role"), *content;
        const char *want;
        if (!json_is_object(o)) { llm_errf(err, "record: messages[%zu] is %s, not an object", i, type_name(o)); goto fail; }
        if (!role) { llm_errf(err, "record: messages[%zu] has no \"role\"", i); goto fail; }
        if (!json_is_string(role)) { llm_errf(err, "record: messages[%zu]: \"role\" is %s, not a string", i, type_name(role)); goto fail; }
        const char *r = json_string_value(role);
        if (!strcmp(r, "system")) m[i].role = ROLE_SYSTEM;
        else if (!strcmp(r, "user")) m[i].role = ROLE_USER;
        else if (!strcmp(r, "assistant")) m[i].role = ROLE_ASSISTANT;
        else { llm_errf(err, "record: messages[%zu]: role \"%.40s\" is not system, user or assistant", i, r); goto fail; }
        if (m[i].role == ROLE_SYSTEM && i) {
            llm_errf(err, "record: messages[%zu]: a system message is allowed only first", i);
            goto fail;
        }
        if (m[i].role != ROLE_SYSTEM) {
            want = turns % 2 ? "assistant" : "user";
            if (strcmp(r, want)) {
                llm_errf(err, "record: messages[%zu]: expected a %s message, got %s (roles must alternate user, assistant, ... after an optional system message)",
                         i, want, r);
                goto fail;
            }
            turns++;
        }
        content = json_object_get(o, "content");
        if (!content) { llm_errf(err, "record: messages[%zu] (%s) has no \"content\"", i, r); goto fail; }
        if (!json_is_string(content)) {
            llm_errf(err, "record: messages[%zu] (%s): \"content\" is %s, not a string", i, r, type_name(content));
            goto fail;
        }
        m[i].text = json_string_value(content);
        m[i].len = json_string_length(content);
        if (!m[i].len && m[i].role != ROLE_SYSTEM) { llm_errf(err, "record: messages[%zu] (%s): empty \"content\"", i, r); goto fail; }
    }
    if (!turns) { llm_errf(err, "record: \"messages\" has a system message and no user message"); goto fail; }
    *msgs = m;
    *n = count;
    return 0;
fail:
    free(m);
    return -1;
}

static int get_string(const json_t *rec, const char *key, const char **s, size_t *n, llm_err *err)
{
    const json_t *v = json_object_get(rec, key);
    if (!json_is_string(v)) return llm_errf(err, "record: \"%s\" is %s, not a string", key, type_name(v));
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

/* ---- the formats ---- */

static void render_chatml(render *r, const message *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int a = m[i].role == ROLE_ASSISTANT;
        special(r, "<|im_start|>", 0);
        plains(r, role_names[m[i].role], 0);
        plains(r, "\n", 0);
        plain(r, m[i].text, m[i].len, a);
        special(r, "<|im_end|>", a);
        plains(r, "\n", 0);
    }
}

static void render_llama3(render *r, const message *m, size_t n)
{
    special(r, "<|begin_of_text|>", 0);
    for (size_t i = 0; i < n; i++) {
        int a = m[i].role == ROLE_ASSISTANT;
        const char *t = m[i].text;
        size_t len = m[i].len;
        strip(&t, &len);
        special(r, "<|start_header_id|>", 0);
        plains(r, role_names[m[i].role], 0);
        special(r, "<|end_header_id|>", 0);
        plains(r, "\n\n", 0);
        plain(r, t, len, a);
        special(r, "<|eot_id|>", a);
    }
}

static void render_llama2(render *r, const message *m, size_t n)
{
    size_t i = 0;
    const message *sys = NULL;
    if (m[0].role == ROLE_SYSTEM) sys = &m[i++];
    for (; i < n; i++) {
        const char *t = m[i].text;
        size_t len = m[i].len;
        if (m[i].role == ROLE_USER) {
            special(r, "<s>", 0);
            plains(r, "[INST] ", 0);
            if (sys) {
                /* '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + user, then .strip():
                 * the front starts with '<'; the end may eat back into it. */
                static const char head[] = "<<SYS>>\n", tail[] = "\n<</SYS>>\n\n";
                size_t total = sizeof head - 1 + sys->len + sizeof tail - 1 + len;
                char *buf = malloc(total ? total : 1);
                if (!buf) { r->oom = 1; return; }
                size_t o = 0;
                memcpy(buf + o, head, sizeof head - 1), o += sizeof head - 1;
                if (sys->len) memcpy(buf + o, sys->text, sys->len), o += sys->len;
                memcpy(buf + o, tail, sizeof tail - 1), o += sizeof tail - 1;
                memcpy(buf + o, t, len), o += len;
                const char *s = buf;
                size_t sn = o;
                strip(&s, &sn);
                plain(r, s, sn, 0);
                free(buf);
                sys = NULL;
            } else {
                strip(&t, &len);
                plain(r, t, len, 0);
            }
            plains(r, " [/INST]", 0);
        } else {
            strip(&t, &len);
            plains(r, " ", 1);
            plain(r, t, len, 1);
            plains(r, " ", 1);
            special(r, "</s>", 1);
        }
    }
}

int llm_chat_render(llm_chat_format f, const json_t *record, llm_chat_segments *out, llm_err *err)
{
    if ((unsigned)f > LLM_CHAT_LLAMA3) return llm_errf(err, "record: unknown chat format %d", (int)f);
    if (!json_is_object(record)) return llm_errf(err, "record: %s, not a JSON object", record ? type_name(record) : "nothing");

    message *msgs = NULL, pair[2];
    size_t n = 0;
    const json_t *list = json_object_get(record, "messages");
    if (list) {
        if (f == LLM_CHAT_NONE)
            return llm_errf(err, "record: a \"messages\" record needs a chat format (chatml, llama2 or llama3), not none");
        if (read_messages(list, &msgs, &n, err)) return -1;
    } else {
        int hp = json_object_get(record, "prompt") != NULL, hr = json_object_get(record, "response") != NULL;
        if (!hp && !hr) return llm_errf(err, "record: has neither \"messages\" nor \"prompt\" and \"response\"");
        if (!hr) return llm_errf(err, "record: \"prompt\" without \"response\"");
        if (!hp) return llm_errf(err, "record: \"response\" without \"prompt\"");
        if (get_string(record, "prompt", &pair[0].text, &pair[0].len, err)) return -1;
        if (get_string(record, "response", &pair[1].text, &pair[1].len, err)) return -1;
        if (!pair[1].len) return llm_errf(err, "record: empty \"response\"");
        if (!pair[0].len && f != LLM_CHAT_NONE) return llm_errf(err, "record: empty \"prompt\"");
        pair[0].role = ROLE_USER;
        pair[1].role = ROLE_ASSISTANT;
        n = 2;
    }

    render r = { .out = out, .start = out->count };
    const message *m = msgs ? msgs : pair;
    switch (f) {
    case LLM_CHAT_NONE:
        plain(&r, m[0].text, m[0].len, 0);
        plain(&r, m[1].text, m[1].len, 1);
        add(&r, "", 0, 1, 0, 1);
        break;
    case LLM_CHAT_CHATML: render_chatml(&r, m, n); break;
    case LLM_CHAT_LLAMA2: render_llama2(&r, m, n); break;
    case LLM_CHAT_LLAMA3: render_llama3(&r, m, n); break;
    }
    free(msgs);
    if (r.oom) {
        while (out->count > r.start) free(out->seg[--out->count].text);
        return llm_errf(err, "record: out of memory rendering %zu messages", n);
    }
    return 0;
}

int llm_chat_generation_prompt(llm_chat_format f, llm_chat_segments *out, llm_err *err)
{
    render r = { .out = out, .start = out->count };
    switch (f) {
    case LLM_CHAT_CHATML:
        special(&r, "<|im_start|>", 0);
        plains(&r, "assistant\n", 0);
        break;
    case LLM_CHAT_LLAMA3:
        special(&r, "<|start_header_id|>", 0);
        plains(&r, "assistant", 0);
        special(&r, "<|end_header_id|>", 0);
        plains(&r, "\n\n", 0);
        break;
    case LLM_CHAT_LLAMA2:   /* the user turn's " [/INST]" is the cue */
    case LLM_CHAT_NONE:
        break;
    }
    if (r.oom) {
        while (out->count > r.start) free(out->seg[--out->count].text);
        return llm_errf(err, "out of memory");
    }
    return 0;
}

const char *llm_chat_end_token(llm_chat_format f)
{
    return f == LLM_CHAT_CHATML ? "<|im_end|>" : f == LLM_CHAT_LLAMA3 ? "<|eot_id|>" : f == LLM_CHAT_LLAMA2 ? "</s>" : NULL;
}
