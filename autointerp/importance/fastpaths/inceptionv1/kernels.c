/* Native loops of the InceptionV1 importance path (see native.py, which compiles this file once per
 * machine with the C compiler and calls it through ctypes).
 *
 * They do the same multiply-adds as the PyTorch code they replace without writing its intermediates
 * to memory: rank_one_pooled blocks each pair's small product in registers (4 positions × 16 outputs),
 * rank_one_fit reads each pair's change twice instead of forming the residual, and rank_one_fit_pre
 * forms that change itself, one pair at a time, from the pre-activations. Sums run in a fixed
 * order; a compiler may fuse a multiply and an add (one rounding instead of two), which the callers'
 * rounding bounds allow.
 *
 * GCC / Clang vector extensions (8 floats), so the same source builds for AVX2, AVX-512 or NEON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
#ifdef __AVX__
#include <immintrin.h>
static inline v8 relu8(v8 x) { return (v8)_mm256_max_ps((__m256)x, _mm256_setzero_ps()); }
#else
static inline v8 relu8(v8 x) { v8 zero = {0}; return (v8)((vi8)x & (vi8)(x > zero)); }
#endif
static inline v8 abs8(v8 x) { return (v8)((vi8)x & (vi8){0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff,
                                                         0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff}); }
static inline float relu1(float x) { return x > 0.0f ? x : 0.0f; }

/* The k×k windows of a (h, w) map with zero padding `pad`: out[pos·T + t] = map[pos shifted by tap t]. */
static void windows(const float *map, int64_t h, int64_t w, int64_t k, int64_t pad, float *out)
{
    int64_t T = k * k;
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++)
            for (int64_t dy = 0; dy < k; dy++)
                for (int64_t dx = 0; dx < k; dx++) {
                    int64_t yy = y + dy - pad, xx = x + dx - pad;
                    int inside = yy >= 0 && yy < h && xx >= 0 && xx < w;
                    out[(y * w + x) * T + dy * k + dx] = inside ? map[yy * w + xx] : 0.0f;
                }
}

#define MAX_TAPS 49 /* kernels up to 7×7 */

/* relu(b + d) - relu(b) */
static inline v8 relu_change(v8 b, v8 d) { return relu8(b + d) - relu8(b); }

/* One pair of rank_one_pooled, as a small matrix product: Δr (HW, O) = windows (HW, T) @ taps (T, O),
 * 4 positions × 16 outputs at a time (8 accumulators in registers, each tap vector loaded once per 4
 * positions), the ReLU change summed over positions as it goes. Inlined with T a compile-time constant
 * where the caller passes a literal. */
static inline __attribute__((always_inline)) void rank_one_pair(const float *tp, const float *win, const float *rb,
                                                                int64_t T, int64_t O, int64_t HW, float *pooled,
                                                                float *tap_abs)
{
    float scale = 1.0f / (float)HW;
    int64_t o = 0;
    for (; o + 16 <= O; o += 16) {
        v8 abs_a = {0}, abs_b = {0};
        for (int64_t t = 0; t < T; t++) {
            abs_a += abs8(load8(tp + t * O + o));
            abs_b += abs8(load8(tp + t * O + o + 8));
        }
        store8(tap_abs + o, abs_a);
        store8(tap_abs + o + 8, abs_b);
        v8 sum_a = {0}, sum_b = {0};
        int64_t pos = 0;
        for (; pos + 4 <= HW; pos += 4) {
            const float *w0 = win + pos * T;
            v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
            for (int64_t t = 0; t < T; t++) {
                v8 ka = load8(tp + t * O + o), kb = load8(tp + t * O + o + 8);
                float x0 = w0[t], x1 = w0[T + t], x2 = w0[2 * T + t], x3 = w0[3 * T + t];
                a0 += ka * x0; b0 += kb * x0;
                a1 += ka * x1; b1 += kb * x1;
                a2 += ka * x2; b2 += kb * x2;
                a3 += ka * x3; b3 += kb * x3;
            }
            const float *bp = rb + pos * O + o;
            sum_a += (relu_change(load8(bp), a0) + relu_change(load8(bp + O), a1))
                   + (relu_change(load8(bp + 2 * O), a2) + relu_change(load8(bp + 3 * O), a3));
            sum_b += (relu_change(load8(bp + 8), b0) + relu_change(load8(bp + O + 8), b1))
                   + (relu_change(load8(bp + 2 * O + 8), b2) + relu_change(load8(bp + 3 * O + 8), b3));
        }
        for (; pos < HW; pos++) {
            const float *wv = win + pos * T;
            v8 a = {0}, b = {0};
            for (int64_t t = 0; t < T; t++) {
                a += load8(tp + t * O + o) * wv[t];
                b += load8(tp + t * O + o + 8) * wv[t];
            }
            sum_a += relu_change(load8(rb + pos * O + o), a);
            sum_b += relu_change(load8(rb + pos * O + o + 8), b);
        }
        store8(pooled + o, sum_a * scale);
        store8(pooled + o + 8, sum_b * scale);
    }
    for (; o < O; o++) { /* outputs beyond a multiple of 16 */
        float a = 0.0f, acc = 0.0f;
        for (int64_t t = 0; t < T; t++)
            a += tp[t * O + o] < 0 ? -tp[t * O + o] : tp[t * O + o];
        tap_abs[o] = a;
        for (int64_t pos = 0; pos < HW; pos++) {
            float dr = 0.0f;
            for (int64_t t = 0; t < T; t++)
                dr += tp[t * O + o] * win[pos * T + t];
            float base = rb[pos * O + o];
            acc += relu1(base + dr) - relu1(base);
        }
        pooled[o] = acc * scale;
    }
}

/* Rank-one tier (lowrank.py, _pooled): for P pairs,
 *   pooled[p, o]  = mean_pos relu(r[b, pos, o] + Σ_t taps[p, t, o]·δ_p[pos + t]) - relu(r[b, pos, o])
 *   tap_abs[p, o] = Σ_t |taps[p, t, o]|
 * taps (P, k², O); delta (N, h, w), pair p's map its row rows[p]; r (B, h·w, O), pair p's image bidx[p].
 * Returns 0; 1 when out of memory, 2 for kernels larger than 7×7. */
int rank_one_pooled(const float *taps, const float *delta, const int64_t *rows, const float *r,
                    const int64_t *bidx, int64_t P, int64_t k, int64_t pad, int64_t O, int64_t h, int64_t w,
                    float *pooled, float *tap_abs)
{
    int64_t T = k * k, HW = h * w;
    if (T > MAX_TAPS)
        return 2;
    float *win = malloc(sizeof(float) * (size_t)(T * HW));
    if (!win)
        return 1;
    for (int64_t p = 0; p < P; p++) {
        windows(delta + rows[p] * HW, h, w, k, pad, win);
        const float *tp = taps + p * T * O, *rb = r + bidx[p] * HW * O;
        if (T == 9)
            rank_one_pair(tp, win, rb, 9, O, HW, pooled + p * O, tap_abs + p * O);
        else if (T == 25)
            rank_one_pair(tp, win, rb, 25, O, HW, pooled + p * O, tap_abs + p * O);
        else
            rank_one_pair(tp, win, rb, T, O, HW, pooled + p * O, tap_abs + p * O);
    }
    free(win);
    return 0;
}

/* One pair of the rank-one fit: q (HW, C) the bottleneck change, d (HW) the spatial change, a (C) scratch.
 * Writes α in the network's channel order (alpha[ord[c]]) and the pair's four norms. */
static void fit_pair(const float *q, const float *d, const int64_t *ord, int64_t HW, int64_t C, float *a,
                     float *alpha, float *s_sq, float *alpha_norm, float *delta_max, float *delta_norm)
{
    float dd = 0.0f, dmax = 0.0f;
    for (int64_t pos = 0; pos < HW; pos++) {
        dd += d[pos] * d[pos];
        float m = d[pos] < 0 ? -d[pos] : d[pos];
        dmax = m > dmax ? m : dmax;
    }
    float denom = dd > 1e-30f ? dd : 1e-30f;
    for (int64_t c = 0; c < C; c++)
        a[c] = 0.0f;
    for (int64_t pos = 0; pos < HW; pos++) {
        const float *qp = q + pos * C;
        float dp = d[pos];
        for (int64_t c = 0; c < C; c++)
            a[c] += dp * qp[c];
    }
    float an = 0.0f;
    for (int64_t c = 0; c < C; c++) {
        a[c] = a[c] / denom;
        an += a[c] * a[c];
    }
    v8 acc = {0};
    float tail = 0.0f;
    for (int64_t pos = 0; pos < HW; pos++) {
        const float *qp = q + pos * C;
        float dp = d[pos];
        int64_t c = 0;
        for (; c + 8 <= C; c += 8) {
            v8 s = load8(qp + c) - load8(a + c) * dp;
            acc += s * s;
        }
        for (; c < C; c++) {
            float s = qp[c] - a[c] * dp;
            tail += s * s;
        }
    }
    float sq = tail;
    for (int i = 0; i < 8; i++)
        sq += acc[i];
    for (int64_t c = 0; c < C; c++)
        alpha[ord[c]] = a[c];
    *s_sq = sq;
    *alpha_norm = __builtin_sqrtf(an);
    *delta_max = dmax;
    *delta_norm = __builtin_sqrtf(dd);
}

/* Rank-one tier (lowrank.py, _fit): for P pairs, the least-squares fit Δq ≈ α ⊗ δ of a bottleneck change
 * dq (N, HW, C) row rows[p] (channels in image bidx[p]'s order: dq[..., j] is channel order[b, j]) to its
 * spatial change delta (N, HW):
 *   alpha[p, order[b, j]] = Σ_pos δ[pos]·dq[pos, j] / max(Σ δ², 1e-30)   (the network's channel order)
 *   s_sq[p] = Σ (dq - α ⊗ δ)²,  alpha_norm[p] = ||α||,  delta_max[p] = max |δ|,  delta_norm[p] = ||δ||.
 * Returns 0, or 1 when out of memory. */
int rank_one_fit(const float *dq, const float *delta, const int64_t *rows, const int64_t *order,
                 const int64_t *bidx, int64_t P, int64_t HW, int64_t C, float *alpha, float *s_sq,
                 float *alpha_norm, float *delta_max, float *delta_norm)
{
    float *a = malloc(sizeof(float) * (size_t)(C + 8));
    if (!a)
        return 1;
    for (int64_t p = 0; p < P; p++)
        fit_pair(dq + rows[p] * HW * C, delta + rows[p] * HW, order + bidx[p] * C, HW, C, a, alpha + p * C,
                 s_sq + p, alpha_norm + p, delta_max + p, delta_norm + p);
    free(a);
    return 0;
}

/* The same fit with the bottleneck change formed here, one pair at a time, instead of read from memory:
 * dq[pos, c] = relu(pre[b, pos, c] + w[row, c]·δ[pos]) - relu(pre[b, pos, c]) (the path's _rank1_core
 * formula), pre (B, HW, C) each image's pre-activations and w (N, C) each pair's ablated channel's
 * weights, both in the image's channel order. Returns 0, or 1 when out of memory. */
int rank_one_fit_pre(const float *pre, const float *w, const float *delta, const int64_t *rows,
                     const int64_t *order, const int64_t *bidx, int64_t P, int64_t HW, int64_t C, float *alpha,
                     float *s_sq, float *alpha_norm, float *delta_max, float *delta_norm)
{
    float *a = malloc(sizeof(float) * (size_t)(C + 8));
    float *q = malloc(sizeof(float) * (size_t)(HW * C + 8));
    if (!a || !q) {
        free(a);
        free(q);
        return 1;
    }
    for (int64_t p = 0; p < P; p++) {
        const float *pb = pre + bidx[p] * HW * C, *wr = w + rows[p] * C, *d = delta + rows[p] * HW;
        for (int64_t pos = 0; pos < HW; pos++) {
            const float *pp = pb + pos * C;
            float *qp = q + pos * C;
            float dp = d[pos];
            int64_t c = 0;
            for (; c + 8 <= C; c += 8) {
                v8 base = load8(pp + c);
                store8(qp + c, relu_change(base, load8(wr + c) * dp));
            }
            for (; c < C; c++)
                qp[c] = relu1(pp[c] + wr[c] * dp) - relu1(pp[c]);
        }
        fit_pair(q, d, order + bidx[p] * C, HW, C, a, alpha + p * C, s_sq + p, alpha_norm + p, delta_max + p,
                 delta_norm + p);
    }
    free(a);
    free(q);
    return 0;
}
