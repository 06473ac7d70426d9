/* peak.h — this machine's fp32 multiply-add peak, measured (for MFU). */
#ifndef LLMUX_PEAK_H
#define LLMUX_PEAK_H

/* GFLOP/s of `threads` threads running llmk_fma_burn together, best of 3
 * runs of about 50 ms each. */
double llm_fp32_peak_gflops(int threads);

#endif
