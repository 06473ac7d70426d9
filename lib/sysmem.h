/* sysmem.h — how much memory this process can still take, for checks made
 * before loading a model (llm-infer) rather than failing half way through. */
#ifndef LLMUX_SYSMEM_H
#define LLMUX_SYSMEM_H

#include <stdint.h>

/* The least of: the kernel's MemAvailable (/proc/meminfo), the cgroup v2
 * limit less its current use (/sys/fs/cgroup/memory.max, memory.current),
 * and RLIMIT_AS less the address space already in use (/proc/self/statm).
 * UINT64_MAX where none can be read. *what names the limit that decided
 * ("MemAvailable", "the cgroup's memory.max", "RLIMIT_AS (ulimit -v)"). */
uint64_t llm_mem_available(const char **what);

#endif
