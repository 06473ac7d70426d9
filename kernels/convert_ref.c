/* Scalar oracles for the element conversions and the float summary. */
#include "llmk.h"

#include <math.h>
#include <string.h>

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

void llmk_f16_to_f32_ref(float *out, const uint16_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, &in[i], 2);
        uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
        float v;
        if (exp == 0)
            v = ldexpf((float)man, -24);                     /* zero and subnormals */
        else if (exp == 31)
            v = bits_to_f32(0x7f800000u | man << 13 | (man ? 0x400000u : 0));   /* inf; NaN made quiet, as F16C does */
        else
            v = bits_to_f32((exp + 112) << 23 | man << 13);
        out[i] = bits_to_f32(f32_to_bits(v) | sign);
    }
}

void llmk_bf16_to_f32_ref(float *out, const uint16_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, &in[i], 2);
        out[i] = bits_to_f32((uint32_t)h << 16);
    }
}

void llmk_f32_to_bf16_ref(uint16_t *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f32_to_bits(in[i]);
        uint16_t h;
        if ((u & 0x7fffffffu) > 0x7f800000u)
            h = (uint16_t)((u >> 16) | 0x40);               /* NaN stays a quiet NaN */
        else
            h = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);   /* nearest even */
        memcpy(&out[i], &h, 2);
    }
}

void llmk_f32_to_f16_ref(uint16_t *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f32_to_bits(in[i]);
        uint32_t sign = (u >> 16) & 0x8000u, abs = u & 0x7fffffffu;
        uint16_t h;
        if (abs > 0x7f800000u) {
            h = (uint16_t)(sign | 0x7e00u | ((abs >> 13) & 0x3ff));     /* quiet NaN */
        } else if (abs >= 0x477ff000u) {
            h = (uint16_t)(sign | 0x7c00u);                             /* rounds to inf */
        } else if (abs < 0x38800000u) {
            /* subnormal or zero in f16: value = abs_float * 2^24 rounded to nearest even */
            float a = bits_to_f32(abs) * 16777216.0f;                   /* exact: power of two */
            float r = nearbyintf(a);                                    /* default mode: to even */
            h = (uint16_t)(sign | (uint32_t)r);
        } else {
            uint32_t m = abs + 0xfffu + ((abs >> 13) & 1);              /* nearest even on 13 dropped bits */
            h = (uint16_t)(sign | (((m >> 23) - 112) << 10 | ((m >> 13) & 0x3ff)));
        }
        memcpy(&out[i], &h, 2);
    }
}

void llmk_stats_f32_ref(llmk_stats *s, const float *x, size_t n)
{
    memset(s, 0, sizeof *s);
    s->min = INFINITY;
    s->max = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, &x[i], 4);
        if (isnan(v)) { s->nan++; continue; }
        if (isinf(v)) { s->inf++; continue; }
        s->count++;
        if (v < s->min) s->min = v;
        if (v > s->max) s->max = v;
        s->sum += v;
        s->sumsq += (double)v * v;
    }
}
