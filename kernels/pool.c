/* The worker threads the CPU kernels share.
 *
 * One pool of (threads - 1) workers, made on first use; the calling thread
 * takes a share too. A parallel_for hands every thread one contiguous chunk
 * (the kernels size their work so that chunks are even), so there is no
 * queue: a generation counter wakes the workers and a countdown tells the
 * caller they are done. Calls from two threads at once take turns; a call
 * from inside a task runs inline. */
#include "llmk.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;  /* one parallel_for at a time */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int wanted;            /* threads asked for (0: default) */
static int started;           /* workers running */
static unsigned long generation;
static int pending;           /* workers still busy with this generation */
static struct {
    llmk_range_fn fn;
    void *ctx;
    size_t n, chunk;
} job;
static __thread int inside_task;

static int default_threads(void)
{
    const char *env = getenv("LLMK_THREADS");
    int n = env ? atoi(env) : 0;
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
}

void llmk_set_threads(int n)
{
    pthread_mutex_lock(&call_lock);
    wanted = n <= 0 ? 0 : n > MAX_THREADS ? MAX_THREADS : n;
    pthread_mutex_unlock(&call_lock);
}

int llmk_threads(void) { return wanted ? wanted : default_threads(); }

static void run_chunk(int index)
{
    size_t begin = (size_t)index * job.chunk;
    if (begin >= job.n) return;
    size_t end = begin + job.chunk < job.n ? begin + job.chunk : job.n;
    inside_task = 1;
    job.fn(job.ctx, begin, end);
    inside_task = 0;
}

static void *worker(void *arg)
{
    int index = (int)(size_t)arg;   /* 1 .. workers; the caller is 0 */
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (generation == seen) pthread_cond_wait(&wake, &lock);
        seen = generation;
        pthread_mutex_unlock(&lock);
        run_chunk(index);
        pthread_mutex_lock(&lock);
        if (--pending == 0) pthread_cond_signal(&done);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* Starts workers up to `n` - 1; returns how many threads can take part. */
static int ensure_workers(int n)
{
    while (started < n - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, (void *)(size_t)(started + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;   /* fewer threads, same results */
        started++;
    }
    return started + 1 < n ? started + 1 : n;
}

void llmk_parallel_for(size_t n, size_t grain, llmk_range_fn fn, void *ctx)
{
    if (n == 0) return;
    if (grain == 0) grain = 1;
    size_t max_chunks = (n + grain - 1) / grain;
    int threads = llmk_threads();
    if (inside_task || threads == 1 || max_chunks == 1) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&call_lock);
    int parts = (size_t)threads < max_chunks ? threads : (int)max_chunks;
    parts = ensure_workers(parts);
    if (parts <= 1) {
        pthread_mutex_unlock(&call_lock);
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&lock);
    job.fn = fn;
    job.ctx = ctx;
    job.n = n;
    job.chunk = (n + (size_t)parts - 1) / (size_t)parts;
    pending = started;   /* every worker wakes; those past the end do nothing */
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    run_chunk(0);
    pthread_mutex_lock(&lock);
    while (pending > 0) pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&call_lock);
}
