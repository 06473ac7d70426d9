/* clock.h — seconds on the monotonic clock, for timings and deadlines. */
#ifndef LLMUX_CLOCK_H
#define LLMUX_CLOCK_H

double llm_seconds(void);

#endif
