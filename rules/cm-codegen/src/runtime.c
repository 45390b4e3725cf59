/*
 * kflow's integer kernels: the arithmetic of the MAX78000/MAX78002
 * accelerator as kflow-ai8x-sim defines it (spec/max78002.md §2, §3),
 * in portable C99. Signed right shifts and left shifts of negative values
 * are implementation-defined or undefined in C99 (6.5.7), so shifts of
 * signed values go through kf_asr and multiplications.
 */

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

static void kf_conv(const kf_conv_t *g, const int8_t *x, const int8_t *w, const int32_t *bias, void *out)
{
    const int per_out = g->depthwise ? 1 : g->in_c;
    const int taps = g->kh * g->kw;
    const size_t in_plane = (size_t)g->in_h * g->in_w;
    size_t at = 0;
    int o, y, xo, c, ky, kx;
    for (o = 0; o < g->out_c; o++) {
        const int8_t *wo = w + (size_t)o * per_out * taps;
        const int8_t *xs = x + (g->depthwise ? (size_t)o * in_plane : 0);
        const int32_t b = bias ? bias[o] : 0;
        for (y = 0; y < g->out_h; y++) {
            for (xo = 0; xo < g->out_w; xo++) {
                int32_t acc = b;
                for (c = 0; c < per_out; c++) {
                    const int8_t *plane = xs + (size_t)c * in_plane;
                    const int8_t *wc = wo + (size_t)c * taps;
                    for (ky = 0; ky < g->kh; ky++) {
                        int vy = y + ky - g->pad_top;
                        if (vy < 0 || vy % g->step != 0 || (vy /= g->step) >= g->in_h) {
                            continue;
                        }
                        for (kx = 0; kx < g->kw; kx++) {
                            int vx = xo + kx - g->pad_left;
                            if (vx < 0 || vx % g->step != 0 || (vx /= g->step) >= g->in_w) {
                                continue;
                            }
                            acc += (int32_t)wc[ky * g->kw + kx] * plane[(size_t)vy * g->in_w + (size_t)vx];
                        }
                    }
                }
                kf_store(out, at++, acc, g->shift_n, g->act, g->wide);
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
    int o, i;
    for (o = 0; o < g->out_c; o++) {
        const int8_t *row = w + (size_t)o * g->in_len;
        int32_t acc = bias ? bias[o] : 0;
        for (i = 0; i < g->in_len; i++) {
            acc += (int32_t)row[i] * x[i];
        }
        kf_store(out, (size_t)o, acc, g->shift_n, g->act, g->wide);
    }
}
#endif
