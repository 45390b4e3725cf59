/*
 * kflow's integer kernels: the arithmetic of the MAX78000/MAX78002
 * accelerator as kflow-ai8x-sim defines it (spec/max78002.md §2, §3),
 * in portable C99. Signed right shifts and left shifts of negative values
 * are implementation-defined or undefined in C99 (6.5.7), so shifts of
 * signed values go through kf_asr and multiplications.
 */

/* The inner loops need every register: inlined into their callers they
 * spill to the stack. */
#if defined(__GNUC__)
#define KF_NOINLINE __attribute__((noinline))
#else
#define KF_NOINLINE
#endif

enum { KF_ACT_NONE = 0, KF_ACT_RELU = 1, KF_ACT_ABS = 2 };
enum { KF_POOL_MAX = 0, KF_POOL_AVG = 1 };
enum { KF_ELT_NONE = 0, KF_ELT_ADD = 1, KF_ELT_SUB = 2, KF_ELT_XOR = 3, KF_ELT_OR = 4 };

#if KF_NEED_PREPARE || KF_NEED_SCALE
static int32_t kf_clamp8(int32_t v)
{
    return v < -128 ? -128 : (v > 127 ? 127 : v);
}
#endif

#if KF_NEED_SCALE
/* Floor division by 2^n, as an arithmetic shift would give it. */
static int32_t kf_asr(int32_t a, int n)
{
    return a >= 0 ? a >> n : -1 - ((-1 - a) >> n);
}

/* spec §3.3: n = 7 − S; a right shift rounds half toward +inf (adding
 * bit n−1 after the shift equals adding 2^(n−1) before it, without
 * overflow), a left shift saturates. Then the activation of §2.9. */
static int8_t kf_scale(int32_t acc, int n, int act)
{
    int32_t v;
    if (n > 0) {
        v = kf_clamp8(kf_asr(acc, n) + (kf_asr(acc, n - 1) & 1));
    } else {
        const int s = -n;
        const int32_t hi = 127 >> s;
        const int32_t lo = kf_asr(-128, s);
        if (acc > hi) {
            v = 127;
        } else {
            /* Within [lo, hi] the product fits easily: |acc| <= 128, s <= 8. */
            v = kf_clamp8((acc < lo ? lo : acc) * ((int32_t)1 << s));
        }
    }
    if (act == KF_ACT_RELU && v < 0) {
        v = 0;
    } else if (act == KF_ACT_ABS) {
        v = v < 0 ? -v : v;
        v = v > 127 ? 127 : v;
    }
    return (int8_t)v;
}

/* The output step shared by every operator: 8-bit outputs are scaled,
 * 32-bit outputs are the raw accumulator (spec §3.4). */
static void kf_store(void *out, size_t at, int32_t acc, int shift_n, int act, int wide)
{
    if (wide) {
        ((int32_t *)out)[at] = acc;
    } else {
        ((int8_t *)out)[at] = kf_scale(acc, shift_n, act);
    }
}
#endif

#if KF_NEED_PREPARE
/* How a layer's operands become its operator input (spec §2.1 steps 1-4). */
typedef struct {
    uint16_t channels; /* of one operand, or of the concatenation */
    uint16_t h, w;     /* operand planes, after in_dim */
    uint16_t ph, pw;   /* pooled planes */
    uint8_t pool_h, pool_w, stride, pool, avg_round;
    uint8_t eltwise, pool_first, operands;
} kf_prep_t;

static int32_t kf_fold(int op, int32_t a, int32_t b)
{
    switch (op) {
    case KF_ELT_SUB:
        return a - b;
    case KF_ELT_XOR:
        return a ^ b;
    case KF_ELT_OR:
        return a | b;
    default:
        return a + b;
    }
}

/* spec §3.7: operands fold from the left in 32 bits and clip once. */
static int32_t kf_combined(const int8_t *const *src, int n, int op, size_t at)
{
    int32_t a = src[0][at];
    int k;
    for (k = 1; k < n; k++) {
        a = kf_fold(op, a, src[k][at]);
    }
    return kf_clamp8(a);
}

/* spec §3.5: truncation toward zero (C99's division), or with
 * --avg-pool-rounding half away from zero. */
static int32_t kf_average(int32_t sum, int32_t n, int rounding)
{
    int32_t q;
    if (!rounding) {
        q = sum / n;
    } else if (sum < 0) {
        q = -((2 * -sum + n) / (2 * n));
    } else {
        q = (2 * sum + n) / (2 * n);
    }
    return kf_clamp8(q);
}

/* The pooled value at (oy, ox) of the plane at offset `off` of the
 * combination of `n` operands (n = 1: the plane itself). */
static int32_t kf_window(const kf_prep_t *p, const int8_t *const *src, int n, size_t off, int oy, int ox)
{
    const int y0 = oy * p->stride, x0 = ox * p->stride;
    int32_t best = -128, sum = 0;
    int y, x;
    for (y = y0; y < y0 + p->pool_h; y++) {
        for (x = x0; x < x0 + p->pool_w; x++) {
            const int32_t v = kf_combined(src, n, p->eltwise, off + (size_t)y * p->w + (size_t)x);
            best = v > best ? v : best;
            sum += v;
        }
    }
    if (p->pool == KF_POOL_MAX) {
        return best;
    }
    return kf_average(sum, (int32_t)p->pool_h * p->pool_w, p->avg_round);
}

/* Concatenation, element-wise and pooling into `dst`. A layer without
 * pooling pools 1x1 with stride 1, which copies. */
static void kf_prepare(const kf_prep_t *p, const int8_t *const *src, const uint16_t *src_channels, int8_t *dst)
{
    const size_t in_plane = (size_t)p->h * p->w;
    int c, k, oy, ox;
    if (p->eltwise == KF_ELT_NONE) {
        for (k = 0; k < p->operands; k++) {
            for (c = 0; c < src_channels[k]; c++) {
                for (oy = 0; oy < p->ph; oy++) {
                    for (ox = 0; ox < p->pw; ox++) {
                        *dst++ = (int8_t)kf_window(p, &src[k], 1, (size_t)c * in_plane, oy, ox);
                    }
                }
            }
        }
        return;
    }
    for (c = 0; c < p->channels; c++) {
        const size_t off = (size_t)c * in_plane;
        for (oy = 0; oy < p->ph; oy++) {
            for (ox = 0; ox < p->pw; ox++) {
                int32_t v;
                if (p->pool_first) {
                    v = kf_window(p, &src[0], 1, off, oy, ox);
                    for (k = 1; k < p->operands; k++) {
                        v = kf_fold(p->eltwise, v, kf_window(p, &src[k], 1, off, oy, ox));
                    }
                    v = kf_clamp8(v);
                } else {
                    v = kf_window(p, src, p->operands, off, oy, ox);
                }
                *dst++ = (int8_t)v;
            }
        }
    }
}
#endif

#if KF_NEED_SCALE
/*
 * Dot products, the hot loop of convolutions and linear layers. On a core
 * with the DSP extension (Cortex-M4/M7/M33), four int8 pairs per step:
 * SXTB16 sign-extends bytes 0 and 2 of a word into two int16 lanes (with
 * ROR #8, bytes 1 and 3), and SMLAD adds both lane products to a 32-bit
 * accumulator. Both operands are split the same way, so the lanes pair
 * up whatever the byte order. SMLAD wraps instead of saturating, and the
 * sums of every legal layer fit int32 (spec §3.6), so the result is the
 * exact sum. KF_EMULATE_DSP runs the same path on any host, with the
 * instructions written out in C, so that host tests cover it.
 */
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#include <string.h>
#define KF_DSP 1
static int32_t kf_sxtb16(int32_t x)
{
    return __sxtb16(x);
}
static int32_t kf_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static int32_t kf_smlad(int32_t a, int32_t b, int32_t acc)
{
    return __smlad(a, b, acc);
}
#elif defined(KF_EMULATE_DSP)
#include <string.h>
#define KF_DSP 1
static int32_t kf_lane(uint32_t v)
{
    return (int32_t)((v & 0xffffu) ^ 0x8000u) - 0x8000;
}
static int32_t kf_sxtb16(int32_t x)
{
    const uint32_t u = (uint32_t)x;
    const uint32_t lo = (uint32_t)((int32_t)((u & 0xffu) ^ 0x80u) - 0x80) & 0xffffu;
    const uint32_t hi = (uint32_t)((int32_t)(((u >> 16) & 0xffu) ^ 0x80u) - 0x80) & 0xffffu;
    return (int32_t)(lo | (hi << 16));
}
static int32_t kf_sxtb16_ror8(int32_t x)
{
    const uint32_t u = (uint32_t)x;
    return kf_sxtb16((int32_t)((u >> 8) | (u << 24)));
}
static int32_t kf_smlad(int32_t a, int32_t b, int32_t acc)
{
    const uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
    return acc + kf_lane(ua) * kf_lane(ub) + kf_lane(ua >> 16) * kf_lane(ub >> 16);
}
#else
#define KF_DSP 0
#endif

/* Σ a[i]·b[i] for two rows `a0`, `a1` against one `b`, which is loaded
 * once for both. */
static void kf_dot2(const int8_t *a0, const int8_t *a1, const int8_t *b, int n, int32_t *acc0, int32_t *acc1)
{
    int32_t s0 = *acc0, s1 = *acc1;
    int i = 0;
#if KF_DSP
    for (; i + 4 <= n; i += 4) {
        int32_t wa, wb, x;
        /* memcpy: the rows need not be word-aligned; the M4 loads them
         * with one LDR. */
        memcpy(&x, b + i, 4);
        memcpy(&wa, a0 + i, 4);
        memcpy(&wb, a1 + i, 4);
        {
            const int32_t xe = kf_sxtb16(x), xo = kf_sxtb16_ror8(x);
            s0 = kf_smlad(kf_sxtb16(wa), xe, s0);
            s0 = kf_smlad(kf_sxtb16_ror8(wa), xo, s0);
            s1 = kf_smlad(kf_sxtb16(wb), xe, s1);
            s1 = kf_smlad(kf_sxtb16_ror8(wb), xo, s1);
        }
    }
#endif
    for (; i < n; i++) {
        s0 += (int32_t)a0[i] * b[i];
        s1 += (int32_t)a1[i] * b[i];
    }
    *acc0 = s0;
    *acc1 = s1;
}

/* Every output channel's dot product with one input vector, two rows at
 * a time; out[o·stride] receives output channel o. */
static KF_NOINLINE void kf_rows(const int8_t *w, int n, int rows, const int8_t *x, const int32_t *bias, void *out, size_t at,
                    size_t stride, int shift_n, int act, int wide)
{
    int o;
    for (o = 0; o < rows; o += 2) {
        /* An odd last row pairs with itself; its second sum is dropped. */
        const int o1 = o + 1 < rows ? o + 1 : o;
        int32_t acc0 = bias ? bias[o] : 0, acc1 = bias ? bias[o1] : 0;
        kf_dot2(w + (size_t)o * n, w + (size_t)o1 * n, x, n, &acc0, &acc1);
        kf_store(out, at + (size_t)o * stride, acc0, shift_n, act, wide);
        if (o1 != o) {
            kf_store(out, at + (size_t)o1 * stride, acc1, shift_n, act, wide);
        }
    }
}
#endif

#if KF_NEED_CONV && KF_DSP
/* A receptive field read by many output channels is sign-extended once:
 * each group of four int8 values becomes the two words SXTB16 would give,
 * (x0, x2) and (x1, x3), so the inner loop extends only the weights. */
static void kf_widen(const int8_t *col, int n, int32_t *q)
{
    int i;
    for (i = 0; i + 4 <= n; i += 4) {
        int32_t x;
        memcpy(&x, col + i, 4);
        *q++ = kf_sxtb16(x);
        *q++ = kf_sxtb16_ror8(x);
    }
}

/* kf_rows against a field widened by kf_widen (`q`), its last n mod 4
 * values read from `col`. */
static KF_NOINLINE void kf_rows_wide(const int8_t *w, int n, int rows, const int32_t *q, const int8_t *col, const int32_t *bias,
                                     void *out, size_t at, size_t stride, int shift_n, int act, int wide)
{
    const int n4 = n & ~3;
    int o, i;
    for (o = 0; o < rows; o += 2) {
        const int o1 = o + 1 < rows ? o + 1 : o;
        const int8_t *a0 = w + (size_t)o * n, *a1 = w + (size_t)o1 * n;
        const int32_t *x = q;
        int32_t s0 = bias ? bias[o] : 0, s1 = bias ? bias[o1] : 0;
        for (i = 0; i < n4; i += 4, x += 2) {
            int32_t wa, wb;
            memcpy(&wa, a0 + i, 4);
            memcpy(&wb, a1 + i, 4);
            s0 = kf_smlad(kf_sxtb16(wa), x[0], s0);
            s0 = kf_smlad(kf_sxtb16_ror8(wa), x[1], s0);
            s1 = kf_smlad(kf_sxtb16(wb), x[0], s1);
            s1 = kf_smlad(kf_sxtb16_ror8(wb), x[1], s1);
        }
        for (; i < n; i++) {
            s0 += (int32_t)a0[i] * col[i];
            s1 += (int32_t)a1[i] * col[i];
        }
        kf_store(out, at + (size_t)o * stride, s0, shift_n, act, wide);
        if (o1 != o) {
            kf_store(out, at + (size_t)o1 * stride, s1, shift_n, act, wide);
        }
    }
}
#endif

#if KF_NEED_CONV
/* A stride-1 convolution over an implicitly zero-padded input; with
 * step 2, over convtranspose2d's zero-stuffed input (spec §2.4). */
typedef struct {
    uint16_t in_c, in_h, in_w;
    uint16_t out_c, out_h, out_w;
    uint8_t kh, kw, pad_top, pad_left, step, depthwise;
    int8_t shift_n;
    uint8_t act, wide;
} kf_conv_t;

/* The input index of padded coordinate v (output position + tap − pad),
 * or −1 where it falls on padding or on a stuffed zero. */
static int kf_tap(int v, int step, int len)
{
    if (v < 0 || (v & (step - 1)) != 0) {
        return -1;
    }
    v /= step;
    return v < len ? v : -1;
}

/* The receptive field of output pixel (y, x) over channels [c0, c0+n)
 * as one vector, zeros included, in the weights' [c][ky][kx] order. */
static void kf_gather(const kf_conv_t *g, const int8_t *x, int c0, int n, int y, int xo, int8_t *col)
{
    const size_t in_plane = (size_t)g->in_h * g->in_w;
    const int left = xo - g->pad_left;
    const int inside = g->step == 1 && left >= 0 && left + g->kw <= g->in_w;
    int c, ky, kx;
    for (c = c0; c < c0 + n; c++) {
        const int8_t *plane = x + (size_t)c * in_plane;
        for (ky = 0; ky < g->kh; ky++) {
            const int iy = kf_tap(y + ky - g->pad_top, g->step, g->in_h);
            if (iy < 0) {
                for (kx = 0; kx < g->kw; kx++) {
                    *col++ = 0;
                }
            } else if (inside) {
                const int8_t *row = plane + (size_t)iy * g->in_w + (size_t)left;
                for (kx = 0; kx < g->kw; kx++) {
                    *col++ = row[kx];
                }
            } else {
                const int8_t *row = plane + (size_t)iy * g->in_w;
                for (kx = 0; kx < g->kw; kx++) {
                    const int ix = kf_tap(left + kx, g->step, g->in_w);
                    *col++ = ix < 0 ? 0 : row[ix];
                }
            }
        }
    }
}

/* Per output pixel: gather its receptive field into `col` once, then one
 * dot product per output channel (a depthwise channel reads only its own
 * input channel, so it gathers per channel). `col` holds the field's n =
 * in_c·kh·kw bytes, rounded up to a word, then the 2·n bytes of its
 * widened form (word-aligned, in the arena). */
static void kf_conv(const kf_conv_t *g, const int8_t *x, const int8_t *w, const int32_t *bias, void *out,
                    int8_t *col)
{
    const int taps = g->kh * g->kw;
    const int n = g->in_c * taps;
    const size_t plane = (size_t)g->out_h * g->out_w;
    size_t at = 0;
    int y, xo, o;
    for (y = 0; y < g->out_h; y++) {
        for (xo = 0; xo < g->out_w; xo++, at++) {
            if (!g->depthwise) {
                kf_gather(g, x, 0, g->in_c, y, xo, col);
#if KF_DSP
                {
                    int32_t *q = (int32_t *)(void *)(col + ((n + 3) & ~3));
                    kf_widen(col, n, q);
                    kf_rows_wide(w, n, g->out_c, q, col, bias, out, at, plane, g->shift_n, g->act, g->wide);
                }
#else
                kf_rows(w, n, g->out_c, col, bias, out, at, plane, g->shift_n, g->act, g->wide);
#endif
                continue;
            }
            for (o = 0; o < g->out_c; o++) {
                kf_gather(g, x, o, 1, y, xo, col);
                kf_rows(w + (size_t)o * taps, taps, 1, col, bias ? bias + o : NULL, out, at + (size_t)o * plane, 0,
                        g->shift_n, g->act, g->wide);
            }
        }
    }
}
#endif

#if KF_NEED_LINEAR
typedef struct {
    uint16_t in_len, out_c;
    int8_t shift_n;
    uint8_t act, wide;
} kf_linear_t;

static void kf_linear(const kf_linear_t *g, const int8_t *x, const int8_t *w, const int32_t *bias, void *out)
{
    kf_rows(w, g->in_len, g->out_c, x, bias, out, 0, 1, g->shift_n, g->act, g->wide);
}
#endif
