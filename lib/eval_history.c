/* The history of results as tables: see eval_history.h. */
#include "eval_history.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *model, *task, *type;
    json_t **rows;
    size_t n, cap;
} group;

struct llm_eval_history {
    group *g;
    size_t n, cap, bad, rows;
};

llm_eval_history *llm_eval_history_new(void) { return calloc(1, sizeof(llm_eval_history)); }

void llm_eval_history_free(llm_eval_history *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) {
        group *g = &h->g[i];
        for (size_t k = 0; k < g->n; k++) json_decref(g->rows[k]);
        free(g->rows), free(g->model), free(g->task), free(g->type);
    }
    free(h->g);
    free(h);
}

size_t llm_eval_history_bad(const llm_eval_history *h) { return h->bad; }
size_t llm_eval_history_rows(const llm_eval_history *h) { return h->rows; }

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* NULL or what is wrong with a line. */
static const char *check(json_t *o)
{
    if (!json_is_object(o)) return "not a JSON object";
    if (!str(o, "time")) return "no \"time\" string: not an llm-eval result";
    if (!str(o, "model")) return "no \"model\" string: not an llm-eval result";
    if (!str(o, "task")) return "no \"task\" string: not an llm-eval result";
    if (!json_is_object(json_object_get(o, "metrics"))) return "no \"metrics\" object: not an llm-eval result";
    return NULL;
}

static int add(llm_eval_history *h, json_t *o)
{
    const char *model = str(o, "model"), *task = str(o, "task"), *type = str(o, "type");
    group *g = NULL;
    for (size_t i = 0; i < h->n && !g; i++)
        if (!strcmp(h->g[i].model, model) && !strcmp(h->g[i].task, task)) g = &h->g[i];
    if (!g) {
        if (h->n == h->cap) {
            size_t nc = h->cap ? h->cap * 2 : 8;
            group *ng = realloc(h->g, nc * sizeof *ng);
            if (!ng) return -1;
            h->g = ng;
            h->cap = nc;
        }
        g = &h->g[h->n];
        memset(g, 0, sizeof *g);
        if (!(g->model = strdup(model)) || !(g->task = strdup(task)) || !(g->type = strdup(type ? type : ""))) {
            free(g->model), free(g->task), free(g->type);
            return -1;
        }
        h->n++;
    }
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 16;
        json_t **nr = realloc(g->rows, nc * sizeof *nr);
        if (!nr) return -1;
        g->rows = nr;
        g->cap = nc;
    }
    g->rows[g->n++] = json_incref(o);
    h->rows++;
    return 0;
}

int llm_eval_history_read(llm_eval_history *h, const char *path, int skip_bad, llm_eval_warn_fn warn, void *ctx,
                          llm_err *err)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    const char *name = f == stdin ? "stdin" : path;
    if (!f) return llm_errf(err, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) > 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
        if (i == (size_t)len) continue;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        char problem[300];
        const char *bad = NULL;
        if (!o) snprintf(problem, sizeof problem, "not JSON: %s", je.text), bad = problem;
        else bad = check(o);
        if (!bad && add(h, o)) rc = llm_errf(err, "out of memory");
        json_decref(o);
        if (bad) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s:%zu: %s", name, lineno, bad);
            if (!skip_bad) rc = llm_errf(err, "%s", msg);
            else {
                h->bad++;
                if (warn) warn(ctx, msg);
            }
        }
    }
    if (!rc && ferror(f)) rc = llm_errf(err, "%s: %s", name, strerror(errno));
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* ---- the table ---- */

typedef struct {
    const char *name;
    int right;               /* numbers: right-aligned */
    size_t width;
} column;

/* The cell of row o, column c (metrics from index 2 to 2 + nm). */
static void cell(json_t *o, size_t c, const char *const *metrics, size_t nm, char *buf, size_t n)
{
    if (c == 0) { snprintf(buf, n, "%s", str(o, "time")); return; }
    if (c == 1) {
        const char *hash = str(o, "model_hash");
        snprintf(buf, n, "%.8s", hash ? hash : "-");
        return;
    }
    if (c < 2 + nm) {
        json_t *v = json_object_get(json_object_get(o, "metrics"), metrics[c - 2]);
        if (json_is_number(v)) snprintf(buf, n, "%.4f", json_number_value(v));
        else snprintf(buf, n, "-");
        return;
    }
    if (c == 2 + nm) {
        json_t *counts = json_object_get(o, "counts");
        static const char *names[] = {"examples", "sequences", "windows", "tasks"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            json_t *v = json_object_get(counts, names[i]);
            if (json_is_integer(v)) { snprintf(buf, n, "%lld", (long long)json_integer_value(v)); return; }
        }
        snprintf(buf, n, "-");
        return;
    }
    json_t *s = json_object_get(o, "seconds");
    if (json_is_number(s)) snprintf(buf, n, "%.1f", json_number_value(s));
    else snprintf(buf, n, "-");
}

static void pad(llm_strbuf *out, size_t n)
{
    for (size_t i = 0; i < n; i++) llm_sb_add(out, " ", 1);
}

static void table(const group *g, llm_strbuf *out)
{
    /* the metrics of the table, in the order first seen */
    size_t nm = 0, cap = 8;
    const char **metrics = malloc(cap * sizeof *metrics);
    if (!metrics) { out->failed = 1; return; }
    for (size_t r = 0; r < g->n; r++) {
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(g->rows[r], "metrics"), key, v) {
            size_t k = 0;
            while (k < nm && strcmp(metrics[k], key)) k++;
            if (k < nm) continue;
            if (nm == cap) {
                const char **nmx = realloc(metrics, (cap *= 2) * sizeof *nmx);
                if (!nmx) { free(metrics); out->failed = 1; return; }
                metrics = nmx;
            }
            metrics[nm++] = key;
        }
    }
    size_t nc = nm + 4;
    column *cols = calloc(nc, sizeof *cols);
    if (!cols) { free(metrics); out->failed = 1; return; }
    cols[0] = (column){"time", 0, 4};
    cols[1] = (column){"hash", 0, 4};
    for (size_t k = 0; k < nm; k++) cols[2 + k] = (column){metrics[k], 1, strlen(metrics[k])};
    cols[2 + nm] = (column){"n", 1, 1};
    cols[3 + nm] = (column){"seconds", 1, 7};
    char buf[128];
    for (size_t r = 0; r < g->n; r++)
        for (size_t c = 0; c < nc; c++) {
            cell(g->rows[r], c, metrics, nm, buf, sizeof buf);
            if (strlen(buf) > cols[c].width) cols[c].width = strlen(buf);
        }
    llm_sb_printf(out, "== %s  %s", g->model, g->task);
    if (*g->type) llm_sb_printf(out, " (%s)", g->type);
    llm_sb_puts(out, "\n");
    for (size_t r = 0; r <= g->n; r++) {
        for (size_t c = 0; c < nc; c++) {
            const char *text = buf;
            if (r == 0) text = cols[c].name;
            else cell(g->rows[r - 1], c, metrics, nm, buf, sizeof buf);
            size_t w = strlen(text), fill = cols[c].width - w;
            if (c) pad(out, 2);
            if (cols[c].right) pad(out, fill);
            llm_sb_puts(out, text);
            if (!cols[c].right && c + 1 < nc) pad(out, fill);
        }
        llm_sb_puts(out, "\n");
    }
    free(cols);
    free(metrics);
}

void llm_eval_history_table(const llm_eval_history *h, llm_strbuf *out)
{
    for (size_t i = 0; i < h->n; i++) {
        if (i) llm_sb_puts(out, "\n");
        table(&h->g[i], out);
    }
}
