/* Task files: see eval_task.h and llm-tasks(5). */
#include "eval_task.h"
#include "eval_match.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *llm_eval_type_name(llm_eval_type type)
{
    switch (type) {
    case LLM_EVAL_MC: return "mc";
    case LLM_EVAL_CLOZE: return "cloze";
    case LLM_EVAL_GEN: return "gen";
    default: return "none";
    }
}

static int type_parse(const char *s, llm_eval_type *type)
{
    if (!strcmp(s, "mc")) *type = LLM_EVAL_MC;
    else if (!strcmp(s, "cloze")) *type = LLM_EVAL_CLOZE;
    else if (!strcmp(s, "gen")) *type = LLM_EVAL_GEN;
    else return -1;
    return 0;
}

const char *llm_eval_match_name(llm_eval_match_kind kind)
{
    return kind == LLM_MATCH_CONTAINS ? "contains" : kind == LLM_MATCH_REGEX ? "regex" : "exact";
}

int llm_eval_match_parse(const char *s, llm_eval_match_kind *kind)
{
    if (!strcmp(s, "exact")) *kind = LLM_MATCH_EXACT;
    else if (!strcmp(s, "contains")) *kind = LLM_MATCH_CONTAINS;
    else if (!strcmp(s, "regex")) *kind = LLM_MATCH_REGEX;
    else return -1;
    return 0;
}

size_t llm_eval_example_max_tokens(const llm_eval_task *t, const llm_eval_example *e)
{
    return e->max_tokens ? e->max_tokens : t->max_tokens;
}

llm_eval_match_kind llm_eval_example_match(const llm_eval_task *t, const llm_eval_example *e)
{
    return e->has_match ? e->match : t->match;
}

void llm_eval_example_stop(const llm_eval_task *t, const llm_eval_example *e, char *const **stop, size_t *n)
{
    if (e->has_stop) *stop = e->stop, *n = e->n_stop;
    else if (t->has_stop) *stop = t->stop, *n = t->n_stop;
    else *stop = &t->fewshot_delim, *n = 1;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

static void example_free(llm_eval_example *e)
{
    for (size_t i = 0; e->regex && i < e->n_choices; i++) llm_eval_regex_free(e->regex[i]);
    free(e->regex);
    free(e->context);
    free_strings(e->choices, e->n_choices);
    free_strings(e->stop, e->n_stop);
    memset(e, 0, sizeof *e);
}

void llm_eval_task_free(llm_eval_task *t)
{
    for (size_t i = 0; i < t->n; i++) example_free(&t->ex[i]);
    free(t->ex);
    free(t->path);
    free(t->name);
    free(t->description);
    free(t->target_delim);
    free(t->fewshot_delim);
    free_strings(t->stop, t->n_stop);
    memset(t, 0, sizeof *t);
}

/* ---- fields ---- */

static char *dup_string(const json_t *s)
{
    size_t n = json_string_length(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, json_string_value(s), n + 1);
    return p;
}

/* A string field: 1 and *out (malloc'd) when present, 0 when absent, -1 on
 * a field of another type or no memory. */
static int get_string(json_t *o, const char *key, char **out, llm_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    if (!json_is_string(v)) return llm_errf(err, "\"%s\" must be a string", key);
    if (!(*out = dup_string(v))) return llm_errf(err, "out of memory");
    return 1;
}

/* A string or a list of strings (a nonempty list unless allow_none; each
 * string nonempty when nonempty_each). */
static int get_strings(json_t *o, const char *key, int nonempty_each, int allow_none, char ***out, size_t *n,
                       llm_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    size_t count = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v)) return llm_errf(err, "\"%s\" must be a string or a list of strings", key);
    if (json_is_array(v) && count == 0 && !allow_none) return llm_errf(err, "\"%s\" is an empty list", key);
    char **list = calloc(count ? count : 1, sizeof *list);
    if (!list) return llm_errf(err, "out of memory");
    for (size_t i = 0; i < count; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        int bad = !json_is_string(s) ? 1 : nonempty_each && json_string_length(s) == 0 ? 2 : 0;
        if (bad || !(list[i] = dup_string(s))) {
            free_strings(list, count);
            if (bad == 1) return llm_errf(err, "\"%s\" must be a string or a list of strings", key);
            if (bad == 2) return json_is_array(v) ? llm_errf(err, "\"%s\" item %zu is an empty string", key, i)
                                                  : llm_errf(err, "\"%s\" is an empty string", key);
            return llm_errf(err, "out of memory");
        }
    }
    *out = list;
    *n = count;
    return 1;
}

static int get_count(json_t *o, const char *key, uint64_t min, uint64_t max, uint64_t *out, llm_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max)
        return llm_errf(err, "\"%s\" must be an integer from %llu to %llu", key, (unsigned long long)min,
                        (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* ---- the header ---- */

static int read_header(llm_eval_task *t, json_t *o, llm_err *err)
{
    static const char *known[] = {"task", "type", "description", "target_delimiter", "fewshot_delimiter", "shots",
                                  "max_tokens", "stop", "match"};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(key, known[i])) i++;
        if (i == sizeof known / sizeof known[0])
            return llm_errf(err, "the header has an unknown field \"%s\" (task, type, description, target_delimiter, "
                                 "fewshot_delimiter, shots, max_tokens, stop, match)", key);
    }
    char *s = NULL, *name = NULL;
    int rc;
    if ((rc = get_string(o, "task", &name, err)) < 0) return -1;
    if (!*name) { free(name); return llm_errf(err, "\"task\" is an empty name"); }
    free(t->name);
    t->name = name;
    if ((rc = get_string(o, "type", &s, err)) < 0) return -1;
    if (rc) {
        int bad = type_parse(s, &t->type);
        free(s);
        s = NULL;
        if (bad) return llm_errf(err, "\"type\" must be mc, cloze or gen");
    }
    if (get_string(o, "description", &s, err) < 0) return -1;
    if (s) { free(t->description); t->description = s; s = NULL; }
    if (get_string(o, "target_delimiter", &s, err) < 0) return -1;
    if (s) { free(t->target_delim); t->target_delim = s; s = NULL; }
    if (get_string(o, "fewshot_delimiter", &s, err) < 0) return -1;
    if (s) { free(t->fewshot_delim); t->fewshot_delim = s; s = NULL; }
    uint64_t n;
    if ((rc = get_count(o, "shots", 0, 1 << 20, &n, err)) < 0) return -1;
    if (rc) t->has_shots = 1, t->shots = n;
    if ((rc = get_count(o, "max_tokens", 1, 1 << 24, &n, err)) < 0) return -1;
    if (rc) t->max_tokens = (size_t)n;
    if ((rc = get_strings(o, "stop", 1, 1, &t->stop, &t->n_stop, err)) < 0) return -1;
    if (rc) t->has_stop = 1;
    if ((rc = get_string(o, "match", &s, err)) < 0) return -1;
    if (rc) {
        int bad = llm_eval_match_parse(s, &t->match);
        free(s);
        if (bad) return llm_errf(err, "\"match\" must be exact, contains or regex");
    }
    return 0;
}

/* ---- an example ---- */

static llm_eval_type infer_type(json_t *o)
{
    if (json_object_get(o, "choices")) return LLM_EVAL_MC;
    if (json_object_get(o, "prompt")) return LLM_EVAL_GEN;
    if (json_object_get(o, "text") || json_object_get(o, "answer")) return LLM_EVAL_CLOZE;
    return LLM_EVAL_NONE;
}

static int need_string(json_t *o, const char *key, char **out, llm_err *err)
{
    int rc = get_string(o, key, out, err);
    if (rc == 0) return llm_errf(err, "no \"%s\"", key);
    return rc < 0 ? -1 : 0;
}

static int read_mc(llm_eval_example *e, json_t *o, llm_err *err)
{
    if (need_string(o, "context", &e->context, err)) return -1;
    json_t *c = json_object_get(o, "choices");
    if (!json_is_array(c) || json_array_size(c) < 2) return llm_errf(err, "\"choices\" must be a list of two or more strings");
    int rc = get_strings(o, "choices", 1, 0, &e->choices, &e->n_choices, err);
    if (rc < 0) return -1;
    json_t *g = json_object_get(o, "gold");
    if (!g) return llm_errf(err, "no \"gold\" (the index of the right choice, from 0)");
    if (!json_is_integer(g) || json_integer_value(g) < 0 || (size_t)json_integer_value(g) >= e->n_choices)
        return llm_errf(err, "\"gold\" must be an integer from 0 to %zu (the index of the right choice)", e->n_choices - 1);
    e->gold = (size_t)json_integer_value(g);
    return 0;
}

static int read_cloze(llm_eval_example *e, json_t *o, llm_err *err)
{
    char *text = NULL;
    int rc = get_string(o, "text", &text, err);
    if (rc < 0) return -1;
    if (rc) {
        if (json_object_get(o, "answer") || json_object_get(o, "context")) {
            free(text);
            return llm_errf(err, "a cloze example has \"text\", or \"context\" and \"answer\", not both");
        }
        char *sp = strrchr(text, ' ');
        if (!sp || !sp[1]) {
            free(text);
            return llm_errf(err, "\"text\" must end with a word after a space (the word to predict)");
        }
        e->choices = calloc(1, sizeof *e->choices);
        if (!e->choices || !(e->choices[0] = strdup(sp))) { free(text); return llm_errf(err, "out of memory"); }
        e->n_choices = 1;
        *sp = 0;
        e->context = text;
        e->joined = 1;
        return 0;
    }
    if (need_string(o, "context", &e->context, err)) return -1;
    char *answer = NULL;
    if ((rc = get_string(o, "answer", &answer, err)) <= 0) return rc < 0 ? -1 : llm_errf(err, "no \"answer\" (or \"text\")");
    if (!*answer) { free(answer); return llm_errf(err, "\"answer\" is an empty string"); }
    if (!(e->choices = calloc(1, sizeof *e->choices))) { free(answer); return llm_errf(err, "out of memory"); }
    e->choices[0] = answer;
    e->n_choices = 1;
    return 0;
}

static int read_gen(const llm_eval_task *t, llm_eval_example *e, json_t *o, llm_err *err)
{
    if (need_string(o, "prompt", &e->context, err)) return -1;
    if (!*e->context) return llm_errf(err, "\"prompt\" is an empty string: nothing to continue");
    int rc = get_strings(o, "answer", 0, 0, &e->choices, &e->n_choices, err);
    if (rc <= 0) return rc < 0 ? -1 : llm_errf(err, "no \"answer\"");
    char *m = NULL;
    if ((rc = get_string(o, "match", &m, err)) < 0) return -1;
    if (rc) {
        int bad = llm_eval_match_parse(m, &e->match);
        free(m);
        if (bad) return llm_errf(err, "\"match\" must be exact, contains or regex");
        e->has_match = 1;
    }
    if ((rc = get_strings(o, "stop", 1, 1, &e->stop, &e->n_stop, err)) < 0) return -1;
    e->has_stop = rc;
    uint64_t n;
    if ((rc = get_count(o, "max_tokens", 1, 1 << 24, &n, err)) < 0) return -1;
    if (rc) e->max_tokens = (size_t)n;
    if (llm_eval_example_match(t, e) == LLM_MATCH_REGEX) {
        if (!(e->regex = calloc(e->n_choices, sizeof *e->regex))) return llm_errf(err, "out of memory");
        for (size_t i = 0; i < e->n_choices; i++)
            if (!(e->regex[i] = llm_eval_regex_compile(e->choices[i], err)))
                return e->n_choices > 1 ? llm_err_prefix(err, "answer %zu", i + 1) : llm_err_prefix(err, "\"answer\"");
    }
    return 0;
}

static int read_example(llm_eval_task *t, llm_eval_example *e, json_t *o, llm_err *err)
{
    char *s = NULL;
    llm_eval_type type = LLM_EVAL_NONE;
    int rc = get_string(o, "type", &s, err);
    if (rc < 0) return -1;
    if (rc) {
        int bad = type_parse(s, &type);
        free(s);
        if (bad) return llm_errf(err, "\"type\" must be mc, cloze or gen");
    }
    if (type == LLM_EVAL_NONE) type = infer_type(o);
    if (type == LLM_EVAL_NONE) type = t->type;
    if (type == LLM_EVAL_NONE)
        return llm_errf(err, "not an example: no \"choices\" (mc), \"text\" or \"answer\" (cloze), \"prompt\" (gen), "
                             "and no \"type\"");
    if (t->type != LLM_EVAL_NONE && type != t->type)
        return llm_errf(err, "a %s example in a task of type %s", llm_eval_type_name(type), llm_eval_type_name(t->type));
    if ((rc = get_string(o, "split", &s, err)) < 0) return -1;
    if (rc) {
        e->fewshot = !strcmp(s, "train");
        free(s);
    }
    rc = type == LLM_EVAL_MC ? read_mc(e, o, err) : type == LLM_EVAL_CLOZE ? read_cloze(e, o, err) : read_gen(t, e, o, err);
    if (!rc && t->type == LLM_EVAL_NONE) t->type = type;   /* the first example sets it */
    return rc;
}

/* ---- the file ---- */

static char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 6 && !strcmp(b + n - 6, ".jsonl")) n -= 6;
    else if (n > 5 && !strcmp(b + n - 5, ".json")) n -= 5;
    return strndup(b, n);
}

static int is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
    return 1;
}

int llm_eval_task_load(llm_eval_task *t, const char *path, int skip_bad, int allow_no_scored, llm_eval_warn_fn warn,
                       void *ctx, llm_err *err)
{
    memset(t, 0, sizeof *t);
    t->path = strdup(path);
    t->name = base_name(path);
    t->target_delim = strdup(" ");
    t->fewshot_delim = strdup("\n\n");
    t->description = strdup("");
    t->max_tokens = LLM_EVAL_DEFAULT_MAX_TOKENS;
    if (!t->path || !t->name || !t->target_delim || !t->fewshot_delim || !t->description) {
        llm_eval_task_free(t);
        return llm_errf(err, "out of memory");
    }
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) {
        llm_errf(err, "%s: %s", path, strerror(errno));
        llm_eval_task_free(t);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0, seen = 0, scored = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (is_blank(line)) continue;
        int first = seen++ == 0;
        llm_err e;
        json_error_t je;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &je);
        int bad = 0;
        if (!o) bad = llm_errf(&e, "not JSON: %s", je.text);
        else if (!json_is_object(o)) bad = llm_errf(&e, "not a JSON object");
        else if (json_object_get(o, "task")) {
            if (!first) bad = llm_errf(&e, "a header line (with \"task\") must be the file's first line");
            else if (read_header(t, o, &e)) {
                /* a bad header spoils every line: never skipped */
                json_decref(o);
                rc = llm_errf(err, "%s:%zu: %s", path, lineno, e.msg);
                break;
            }
            json_decref(o);
            if (!bad) continue;
            o = NULL;
        }
        if (!bad) {
            if (t->n == t->cap) {
                size_t nc = t->cap ? t->cap * 2 : 64;
                llm_eval_example *ne = realloc(t->ex, nc * sizeof *ne);
                if (!ne) { json_decref(o); rc = llm_errf(err, "out of memory"); break; }
                t->ex = ne;
                t->cap = nc;
            }
            llm_eval_example *ex = &t->ex[t->n];
            memset(ex, 0, sizeof *ex);
            ex->line = lineno;
            if (read_example(t, ex, o, &e)) {
                example_free(ex);
                bad = -1;
            } else {
                t->n++;
                if (ex->fewshot) t->n_fewshot++;
                else scored++;
            }
        }
        json_decref(o);
        if (bad) {
            char msg[sizeof e.msg + 64];
            snprintf(msg, sizeof msg, "%s:%zu: %s", path, lineno, e.msg);
            if (!skip_bad) { rc = llm_errf(err, "%s", msg); break; }
            t->bad++;
            if (warn) warn(ctx, msg);
        }
    }
    if (!rc && ferror(f)) rc = llm_errf(err, "%s: %s", path, strerror(errno));
    free(line);
    if (f != stdin) fclose(f);
    if (!rc && !scored && !allow_no_scored)
        rc = t->bad ? llm_errf(err, "%s: no examples to score (%zu bad lines skipped)", path, t->bad)
                    : t->n ? llm_errf(err, "%s: no examples to score: every line is a few-shot example (\"split\":\"train\")", path)
                           : llm_errf(err, "%s: no examples", path);
    if (!rc && !t->n && allow_no_scored) rc = llm_errf(err, "%s: no examples", path);
    if (rc) llm_eval_task_free(t);
    return rc;
}
