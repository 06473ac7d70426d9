/* Suites: see eval_suite.h. */
#include "eval_suite.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void llm_eval_suite_free(llm_eval_suite *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->e[i].path), free(s->e[i].name), free(s->e[i].shots_file);
    free(s->e);
    free(s->path);
    free(s->name);
    memset(s, 0, sizeof *s);
}

/* The path p without "." segments and "dir/.." pairs (as text: through a
 * symbolic link to a directory that may name another file; suites name
 * files beside them, where it does not matter). A new string, or NULL. */
static char *tidy(const char *p)
{
    size_t len = strlen(p);
    char *out = malloc(len + 2);
    if (!out) return NULL;
    int abs = p[0] == '/';
    size_t o = 0, kept = 0;   /* kept: segments written that ".." may remove */
    if (abs) out[o++] = '/';
    size_t base = o;
    for (const char *in = p; *in;) {
        const char *end = strchr(in, '/');
        size_t n = end ? (size_t)(end - in) : strlen(in);
        int dots = n == 2 && in[0] == '.' && in[1] == '.';
        if (n == 0 || (n == 1 && in[0] == '.') || (dots && abs && o == base)) {
            /* nothing ("/.." is "/") */
        } else if (dots && kept) {
            o--;   /* the '/' after the last segment */
            while (o > base && out[o - 1] != '/') o--;
            kept--;
        } else {
            memcpy(out + o, in, n);
            o += n;
            out[o++] = '/';
            if (!dots) kept++;
        }
        in += n + (end ? 1 : 0);
    }
    if (o > base) o--;   /* the last '/' */
    if (o == 0) out[o++] = '.';
    out[o] = 0;
    return out;
}

/* dir of the suite + rel, unless rel is absolute. */
static char *resolve(const char *suite, const char *rel)
{
    const char *slash = strrchr(suite, '/');
    if (rel[0] == '/' || !slash) return strdup(rel);
    size_t d = (size_t)(slash - suite) + 1, n = strlen(rel);
    char *p = malloc(d + n + 1);
    if (!p) return NULL;
    memcpy(p, suite, d);
    memcpy(p + d, rel, n + 1);
    char *t = tidy(p);
    free(p);
    return t;
}

static int get_u64(json_t *o, const char *key, uint64_t min, uint64_t *out, int *has, llm_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min)
        return llm_errf(err, "\"%s\" must be an integer of at least %llu", key, (unsigned long long)min);
    *out = (uint64_t)json_integer_value(v);
    if (has) *has = 1;
    return 0;
}

static int read_entry(llm_eval_suite *s, llm_eval_suite_entry *e, json_t *o, llm_err *err)
{
    static const char *known[] = {"task", "data", "text", "name", "shots", "seed", "shots_file", "limit", "max_tokens",
                                  "window", "stride"};
    const char *key;
    json_t *v;
    if (!json_is_object(o)) return llm_errf(err, "not a JSON object");
    json_object_foreach(o, key, v) {
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(key, known[i])) i++;
        if (i == sizeof known / sizeof known[0])
            return llm_errf(err, "unknown field \"%s\" (task, data, text, name, shots, seed, shots_file, limit, "
                                 "max_tokens, window, stride)", key);
    }
    static const char *kinds[] = {"task", "data", "text"};
    int found = 0;
    for (int k = 0; k < 3; k++) {
        json_t *p = json_object_get(o, kinds[k]);
        if (!p) continue;
        if (found++) return llm_errf(err, "a line names one of \"task\", \"data\" and \"text\"");
        if (!json_is_string(p) || !json_string_length(p)) return llm_errf(err, "\"%s\" must be a path", kinds[k]);
        e->kind = (llm_eval_suite_kind)k;
        if (!(e->path = resolve(s->path, json_string_value(p)))) return llm_errf(err, "out of memory");
    }
    if (!found) return llm_errf(err, "no \"task\", \"data\" or \"text\" to evaluate");
    json_t *name = json_object_get(o, "name"), *sf = json_object_get(o, "shots_file");
    if (name && (!json_is_string(name) || !json_string_length(name))) return llm_errf(err, "\"name\" must be a string");
    if (name && !(e->name = strdup(json_string_value(name)))) return llm_errf(err, "out of memory");
    if (sf && (!json_is_string(sf) || !json_string_length(sf))) return llm_errf(err, "\"shots_file\" must be a path");
    if (sf && !(e->shots_file = resolve(s->path, json_string_value(sf)))) return llm_errf(err, "out of memory");
    if (get_u64(o, "shots", 0, &e->shots, &e->has_shots, err) || get_u64(o, "seed", 0, &e->seed, &e->has_seed, err) ||
        get_u64(o, "limit", 1, &e->limit, NULL, err) || get_u64(o, "max_tokens", 1, &e->max_tokens, NULL, err) ||
        get_u64(o, "window", 1, &e->window, NULL, err) || get_u64(o, "stride", 1, &e->stride, NULL, err))
        return -1;
    if (e->kind != LLM_SUITE_TASK && (e->has_shots || sf || json_object_get(o, "max_tokens")))
        return llm_errf(err, "\"shots\", \"shots_file\" and \"max_tokens\" are for tasks");
    if (e->kind != LLM_SUITE_TEXT && (e->window || e->stride)) return llm_errf(err, "\"window\" and \"stride\" are for text");
    return 0;
}

int llm_eval_suite_load(llm_eval_suite *s, const char *path, llm_err *err)
{
    memset(s, 0, sizeof *s);
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t bn = strlen(b);
    if (bn > 6 && !strcmp(b + bn - 6, ".jsonl")) bn -= 6;
    s->path = strdup(path);
    s->name = strndup(b, bn);
    if (!s->path || !s->name) { llm_eval_suite_free(s); return llm_errf(err, "out of memory"); }
    FILE *f = fopen(path, "r");
    if (!f) {
        llm_errf(err, "%s: %s", path, strerror(errno));
        llm_eval_suite_free(s);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0, ecap = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) > 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
        if (i == (size_t)len) continue;
        if (s->n == ecap) {
            ecap = ecap ? ecap * 2 : 16;
            llm_eval_suite_entry *ne = realloc(s->e, ecap * sizeof *ne);
            if (!ne) { rc = llm_errf(err, "out of memory"); break; }
            s->e = ne;
        }
        llm_eval_suite_entry *e = &s->e[s->n++];
        memset(e, 0, sizeof *e);
        e->line = lineno;
        json_error_t je;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &je);
        llm_err e2;
        if (!o) rc = llm_errf(err, "%s:%zu: not JSON: %s", path, lineno, je.text);
        else if (read_entry(s, e, o, &e2)) rc = llm_errf(err, "%s:%zu: %s", path, lineno, e2.msg);
        json_decref(o);
    }
    if (!rc && ferror(f)) rc = llm_errf(err, "%s: %s", path, strerror(errno));
    if (!rc && !s->n) rc = llm_errf(err, "%s: an empty suite", path);
    free(line);
    fclose(f);
    if (rc) llm_eval_suite_free(s);
    return rc;
}
