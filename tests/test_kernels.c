/* tests/test_kernels.c — every weight type in the table, against independent truths:
 *   1. round trips: quantize -> dequantize stays within the type's error bound, on random rows
 *      of awkward lengths and on edge cases (all zero, constant, one spike, huge range);
 *   2. dot products: vec_dot (and the repacked order vec_dot_r8) equal the float64 dot product
 *      of the dequantized weights and the dequantized activations to 1e-5 relative — the
 *      integer parts are exact, so only F32 rounding separates them;
 *   3. hand-made blocks: bytes written from the format description in halda.c (not with its
 *      quantizers), dequantized values checked exactly, including literal values worked out
 *      by hand for the packed scales of Q3_K and Q4_K/Q5_K;
 *   4. SIMD twins: every AVX2, AVX-512 or NEON dot product equals its scalar specification bit for bit,
 *      on random and extreme blocks at awkward lengths; the hardware half conversions equal
 *      the _ref ones. */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

static uint64_t rng = 12345;

/* A roughly normal value (sum of uniforms), so rows have a bulk and a tail like real weights. */
static float normalish(void)
{
    float s = 0;
    for (int k = 0; k < 4; k++) s += 2 * rand_unit(&rng) - 1;
    return s * 0.8660254f; /* unit variance */
}

/* IQ1 weights that no quantizer chose: random bytes (every bit pattern is a valid block but for
 * d, which is set to a random finite F16), with group g of the row given grid index g mod 2048,
 * so that a row of 64 super-blocks or more meets every grid entry; the scales (IQ1_M: one per
 * 16 weights) and δ signs (IQ1_M: one per group of 8) stay random, all values of them.  A
 * quantizer only writes what its search finds, which need not cover the format.  Returns
 * false (and writes nothing) for the other types. */
static bool iq1_random_blocks(int type, uint8_t *wq, int64_t n)
{
    if (type != TYPE_IQ1_S && type != TYPE_IQ1_M) return false;
    for (size_t i = 0; i < type_row_bytes(type, n); i++) wq[i] = (uint8_t)splitmix64(&rng);
    for (int64_t b = 0; b < n / QK_K; b++) {
        f16_t d = f32_to_f16(ldexpf(1 + rand_unit(&rng), -(int)(splitmix64(&rng) % 12)));
        block_iq1_s *xs = (block_iq1_s *)wq + b;
        block_iq1_m *xm = (block_iq1_m *)wq + b;
        for (int ib = 0; ib < QK_K / 32; ib++)
            for (int l = 0; l < 4; l++) {
                int k = (int)((QK_K / 8 * b + 4 * ib + l) % 2048);
                if (type == TYPE_IQ1_S) {
                    xs->qs[4 * ib + l] = (uint8_t)k;
                    xs->qh[ib] = (uint16_t)((xs->qh[ib] & ~(7 << (3 * l))) | (k >> 8) << (3 * l));
                } else {
                    xm->qs[4 * ib + l] = (uint8_t)k;
                    uint8_t *qh = &xm->qh[2 * ib + l / 2];
                    *qh = (uint8_t)((*qh & ~(7 << (4 * (l % 2)))) | (k >> 8) << (4 * (l % 2)));
                }
            }
        if (type == TYPE_IQ1_S) xs->d = d;
        else /* d's nibble k in the top of the scale word k */
            for (int k = 0; k < 4; k++) xm->scales[2 * k + 1] = (uint8_t)((xm->scales[2 * k + 1] & 0x0f) | (d >> (4 * k) & 15) << 4);
    }
    return true;
}

/* Types with the full set of kernels. */
static bool has_kernels(const type_traits *t) { return t && t->quantize && t->dequantize && t->vec_dot; }

/* Round-trip bounds: the RMS error relative to the RMS of the data (normal-ish data), and the
 * largest error of one element relative to the largest |x| of its block.  Measured values for
 * normal data are about 0.27/0.14/0.072/0.036/0.019 (Q2_K..Q6_K), 0.075 (IQ4_NL), 0.086 (Q4_0),
 * 0.46 (IQ1_S) and 0.42 (IQ1_M);
 * the bounds leave room for short rows, where the RMS is noisier. */
static void rt_bounds(int type, double *rel_rms, double *rel_max)
{
    switch (type) {
    case TYPE_F32: *rel_rms = 0, *rel_max = 0; break;
    case TYPE_F16: *rel_rms = 1e-3, *rel_max = 1e-3; break;
    case TYPE_BF16: *rel_rms = 8e-3, *rel_max = 8e-3; break;
    case TYPE_Q8_0: *rel_rms = 0.012, *rel_max = 0.01; break;
    case TYPE_Q6_K: *rel_rms = 0.03, *rel_max = 0.06; break;
    case TYPE_Q5_0: case TYPE_Q5_1: case TYPE_Q5_K: *rel_rms = 0.06, *rel_max = 0.1; break;
    case TYPE_Q4_0: case TYPE_Q4_1: case TYPE_Q4_K: case TYPE_IQ4_NL: *rel_rms = 0.12, *rel_max = 0.2; break;
    case TYPE_Q3_K: *rel_rms = 0.2, *rel_max = 0.4; break;
    case TYPE_Q2_K: *rel_rms = 0.36, *rel_max = 0.6; break;
    case TYPE_IQ1_M: case TYPE_IQ1_S: *rel_rms = 0.6, *rel_max = 1.0; break; /* measured 0.42 and 0.46 */
    default: *rel_rms = 0, *rel_max = 0;
    }
}

/* Lengths to test: block counts for block types, awkward element counts for plain floats. */
static int test_lengths(const type_traits *t, int64_t *n)
{
    static const int blocks[] = {1, 2, 3, 5, 7, 8, 13};
    static const int elems[] = {1, 2, 3, 5, 7, 8, 9, 31, 1023};
    int k = 0;
    if (t->block_elems == 1)
        for (size_t i = 0; i < sizeof elems / sizeof *elems; i++) n[k++] = elems[i];
    else
        for (size_t i = 0; i < sizeof blocks / sizeof *blocks; i++) n[k++] = (int64_t)blocks[i] * t->block_elems;
    return k;
}

/* ---- 1. Round trips ------------------------------------------------------------------------ */

static void check_round_trip(int type, const float *x, int64_t n, const char *what)
{
    const type_traits *t = type_info(type);
    uint8_t *q = malloc(type_row_bytes(type, n) + 64);
    float *y = malloc((size_t)n * sizeof *y);
    t->quantize(x, q, n);
    t->dequantize(q, y, n);
    double rel_rms, rel_max, ee = 0, xx = 0, worst = 0;
    rt_bounds(type, &rel_rms, &rel_max);
    /* a plain float type's "block" is the whole row: its error is relative to the row's largest value */
    int64_t be = t->block_elems == 1 ? n : t->block_elems;
    bool finite = true;
    for (int64_t b = 0; b < n / be; b++) {
        double bmax = 0;
        for (int64_t j = 0; j < be; j++) bmax = fmax(bmax, fabs(x[b * be + j]));
        for (int64_t j = 0; j < be; j++) {
            int64_t i = b * be + j;
            finite &= isfinite(y[i]);
            double e = fabs((double)x[i] - y[i]);
            ee += e * e, xx += (double)x[i] * x[i];
            if (e > rel_max * bmax) worst = fmax(worst, bmax > 0 ? e / bmax : INFINITY);
        }
    }
    CHECK(finite, "%s %s n=%lld: dequantized values are not finite", t->name, what, (long long)n);
    CHECK(worst == 0, "%s %s n=%lld: an element is off by %.3g of its block's max (bound %.3g)", t->name, what,
          (long long)n, worst, rel_max);
    CHECK(xx == 0 ? ee == 0 : sqrt(ee / xx) <= rel_rms, "%s %s n=%lld: relative RMS error %.4g > %.4g", t->name, what,
          (long long)n, xx ? sqrt(ee / xx) : ee, rel_rms);
    free(q), free(y);
}

static void test_round_trips(void)
{
    for (int type = 0; type < TYPE_COUNT; type++) {
        const type_traits *t = type_info(type);
        if (!has_kernels(t)) continue;
        int64_t lens[16];
        int nl = test_lengths(t, lens);
        for (int li = 0; li < nl; li++) {
            int64_t n = lens[li];
            float *x = malloc((size_t)n * sizeof *x);
            /* the RMS bound is statistical: check it over a few rows of the same length */
            for (int rep = 0; rep < 3; rep++) {
                for (int64_t i = 0; i < n; i++) x[i] = normalish() * (rep == 2 ? 1e-3f : 1.0f);
                check_round_trip(type, x, n, rep == 2 ? "small" : "normal");
            }
            for (int64_t i = 0; i < n; i++) x[i] = 0;
            check_round_trip(type, x, n, "zeros");
            for (int64_t i = 0; i < n; i++) x[i] = -0.75f;
            check_round_trip(type, x, n, "constant");
            for (int64_t i = 0; i < n; i++) x[i] = i % 37 == 5 ? 3.0f : 0.0f;
            check_round_trip(type, x, n, "spikes");
            for (int64_t i = 0; i < n; i++) x[i] = 2 * rand_unit(&rng) - 1 + (i % 16 == 0 ? 100.0f : 0.0f);
            check_round_trip(type, x, n, "outliers");
            free(x);
        }
    }
}

/* ---- 2. Dot products ----------------------------------------------------------------------- */

/* Dequantized activations, and for Q8_1 the per-block s = d·Σq as stored (an F16 rounding of a
 * product with the unrounded d, which the Q4_1/Q5_1 dot products use for their offset term). */
static void dequantize_act(int act_type, const void *a, float *out, int64_t n, float *s_out)
{
    if (act_type == TYPE_Q8_1) {
        const block_q8_1 *b = a;
        for (int64_t k = 0; k < n / QK; k++) {
            for (int j = 0; j < QK; j++) out[k * QK + j] = f16_to_f32(b[k].d) * b[k].qs[j];
            s_out[k] = f16_to_f32(b[k].s);
        }
        return;
    }
    type_info(act_type)->dequantize(a, out, n);
}

static void check_dot(int type, int64_t n, bool r8, bool random_blocks)
{
    const type_traits *t = type_info(type), *at = type_info(t->act_type);
    vec_dot_fn dot = r8 ? t->vec_dot_r8 : t->vec_dot;
    if (!dot) return;
    float *w = calloc((size_t)n, 4), *a = calloc((size_t)n, 4), *wd = calloc((size_t)n, 4), *ad = calloc((size_t)n, 4);
    uint8_t *wq = malloc(type_row_bytes(type, n) + 64), *aq = malloc(type_row_bytes(t->act_type, n) + 64);
    float s[1024];
    for (int64_t i = 0; i < n; i++) w[i] = normalish(), a[i] = normalish() * 3;
    if (!random_blocks || !iq1_random_blocks(type, wq, n)) t->quantize(w, wq, n);
    t->dequantize(wq, wd, n);
    at->quantize(a, aq, n);
    dequantize_act(t->act_type, aq, ad, n, s);
    double ref = 0, mag = 0, slack = 0;
    if (t->act_type == TYPE_Q8_1) {
        /* w = d·q + m: the m·Σa part comes through s, which is rounded to F16 (±2^-11, plus
         * 2^-11 from the F16 rounding of d in the dequantized activations) */
        size_t off = type == TYPE_Q4_1 ? offsetof(block_q4_1, m) : offsetof(block_q5_1, m);
        for (int64_t k = 0; k < n / QK; k++) {
            f16_t m16;
            memcpy(&m16, wq + (size_t)k * (size_t)t->block_bytes + off, 2);
            double m = f16_to_f32(m16), sa = 0;
            for (int j = 0; j < QK; j++) {
                int64_t i = k * QK + j;
                ref += ((double)wd[i] - m) * ad[i], mag += fabs(((double)wd[i] - m) * ad[i]);
                sa += ad[i];
            }
            ref += m * sa, mag += fabs(m * sa), slack += fabs(m * s[k]) * 0x1p-10;
        }
    } else {
        for (int64_t i = 0; i < n; i++) ref += (double)wd[i] * ad[i], mag += fabs((double)wd[i] * ad[i]);
    }
    double got = dot(n, wq, aq), tol = 1e-5 * mag + slack + 1e-30;
    CHECK(fabs(got - ref) <= tol, "%s%s n=%lld: vec_dot %.9g, float64 of dequantized %.9g (diff %.3g > tol %.3g)", t->name,
          r8 ? " (r8)" : "", (long long)n, got, ref, fabs(got - ref), tol);
    free(w), free(a), free(wd), free(ad), free(wq), free(aq);
}

static void test_dots(void)
{
    for (int type = 0; type < TYPE_COUNT; type++) {
        const type_traits *t = type_info(type);
        if (!has_kernels(t)) continue;
        int64_t lens[16];
        int nl = test_lengths(t, lens);
        for (int li = 0; li < nl; li++)
            for (int rep = 0; rep < 4; rep++) check_dot(type, lens[li], false, rep == 3), check_dot(type, lens[li], true, rep == 3);
    check_dot(TYPE_IQ1_S, 64 * QK_K, false, true); /* every grid entry */
    check_dot(TYPE_IQ1_M, 64 * QK_K, false, true);
    }
    /* the picker: repacked order exactly for row counts that are multiples of 8 */
    const type_traits *q4 = type_info(TYPE_Q4_0);
    CHECK(type_vec_dot(q4, 8) == q4->vec_dot_r8 && type_vec_dot(q4, 4096) == q4->vec_dot_r8, "q4_0: r8 order for rows %% 8 == 0");
    CHECK(type_vec_dot(q4, 172) == q4->vec_dot && type_vec_dot(q4, 1) == q4->vec_dot, "q4_0: lane order otherwise");
    const type_traits *q6 = type_info(TYPE_Q6_K);
    CHECK(type_vec_dot(q6, 1024) == q6->vec_dot && type_vec_dot(q6, 172) == q6->vec_dot, "q6_k: no repacked order, always vec_dot");
}

/* ---- 3. Hand-made blocks ------------------------------------------------------------------- */

static const f16_t F16_0_125 = 0x3000, F16_0_25 = 0x3400, F16_0_5 = 0x3800, F16_1 = 0x3c00, F16_2 = 0x4000;

/* Compare a dequantized block with expected values; report the first mismatch. */
static void expect_block(const char *name, const float *got, const float *want, int n)
{
    int bad = -1;
    for (int i = 0; i < n && bad < 0; i++)
        if (got[i] != want[i]) bad = i;
    CHECK(bad < 0, "%s: element %d dequantizes to %.9g, the format says %.9g", name, bad, bad < 0 ? 0.0 : got[bad],
          bad < 0 ? 0.0 : want[bad]);
}

static void test_hand_q2_K(void)
{
    block_q2_K b;
    memset(&b, 0, sizeof b);
    b.d = F16_1, b.dmin = F16_0_25;
    for (int g = 0; g < 16; g++) b.scales[g] = (uint8_t)((g % 4 + 1) | (g % 3) << 4); /* sc 1..4, m 0..2 */
    for (int k = 0; k < 64; k++) b.qs[k] = (uint8_t)(k * 37 + 11);
    float got[QK_K], want[QK_K];
    dequantize_q2_K(&b, got, QK_K);
    /* element 128h + 32s + l: bits 2s..2s+1 of qs[32h + l]; group i/16 */
    for (int i = 0; i < QK_K; i++) {
        int h = i / 128, s = i % 128 / 32, l = i % 32, g = i / 16;
        int q = (b.qs[32 * h + l] >> (2 * s)) & 3;
        want[i] = 1.0f * (float)(g % 4 + 1) * (float)q - 0.25f * (float)(g % 3);
    }
    expect_block("q2_k", got, want, QK_K);
    /* by hand: qs[0] = 11 = 0b00'00'10'11 gives q = 3, 2, 0, 0 to elements 0, 32, 64, 96 */
    /* (groups 0, 2, 4, 6: sc 1, 3, 1, 3 and m 0, 2, 1, 0) */
    CHECK(got[0] == 3.0f && got[32] == 5.5f && got[64] == -0.25f && got[96] == 0.0f,
          "q2_k by hand: %g %g %g %g (want 3 5.5 -0.25 0)", got[0], got[32], got[64], got[96]);
}

static void test_hand_q3_K(void)
{
    /* the packed scales, decoded by hand: s[0] = 0x5a gives the low nibbles of scales 0 (0xa)
     * and 8 (0x5); s[4] = 0x3c those of scales 4 (0xc) and 12 (0x3); s[8] = 0b11'10'01'00 gives
     * the high 2 bits of scales 0, 4, 8, 12 (0, 1, 2, 3).  Biased by 32: 10, 28, 37, 51 ->
     * -22, -4, 5, 19. */
    uint8_t s[12] = {0x5a, 0, 0, 0, 0x3c, 0, 0, 0, 0xe4, 0, 0, 0};
    CHECK(q3_K_scale(s, 0) == -22 && q3_K_scale(s, 4) == -4 && q3_K_scale(s, 8) == 5 && q3_K_scale(s, 12) == 19,
          "q3_k scales by hand: %d %d %d %d (want -22 -4 5 19)", q3_K_scale(s, 0), q3_K_scale(s, 4), q3_K_scale(s, 8),
          q3_K_scale(s, 12));
    CHECK(q3_K_scale(s, 1) == -32 && q3_K_scale(s, 13) == -32, "q3_k: an all-zero field is -32");

    block_q3_K b;
    memset(&b, 0, sizeof b);
    b.d = F16_0_5;
    int raw[16];
    for (int g = 0; g < 16; g++) { /* raw 6-bit scale 32 + (g - 8): scale g - 8 */
        raw[g] = 32 + g - 8;
        b.scales[g % 8] |= (uint8_t)((raw[g] & 15) << (g < 8 ? 0 : 4));
        b.scales[8 + g % 4] |= (uint8_t)((raw[g] >> 4) << (2 * (g / 4)));
    }
    for (int k = 0; k < 64; k++) b.qs[k] = (uint8_t)(k * 53 + 7);
    for (int k = 0; k < 32; k++) b.hmask[k] = (uint8_t)(k * 41 + 3);
    float got[QK_K], want[QK_K];
    dequantize_q3_K(&b, got, QK_K);
    for (int i = 0; i < QK_K; i++) {
        int h = i / 128, sl = i % 128 / 32, l = i % 32;
        int low = (b.qs[32 * h + l] >> (2 * sl)) & 3, high = (b.hmask[l] >> (4 * h + sl)) & 1;
        want[i] = 0.5f * (float)(i / 16 - 8) * (float)(high ? low : low - 4);
    }
    expect_block("q3_k", got, want, QK_K);
    /* by hand: qs[0] = 7 = 0b00'00'01'11, hmask[0] = 3 = bits 0, 1 set: elements 0, 32, 64, 96
     * get q = 3, 1, 0-4, 0-4 in groups 0, 2, 4, 6 (scales -8, -6, -4, -2) */
    CHECK(got[0] == -12.0f && got[32] == -3.0f && got[64] == 8.0f && got[96] == 4.0f,
          "q3_k by hand: %g %g %g %g (want -12 -3 8 4)", got[0], got[32], got[64], got[96]);
}

/* Q4_K/Q5_K scales {1, 2, 3, 63, 17, 33, 48, 5} and minimums {0, 7, 63, 1, 16, 40, 2, 61},
 * packed by hand: bytes 0..3 = scale | (scale[j+4] >> 4) << 6, bytes 4..7 = min |
 * (min[j+4] >> 4) << 6, bytes 8..11 = (scale[j+4] & 15) | (min[j+4] & 15) << 4. */
static const uint8_t k_scales_by_hand[12] = {0x41, 0x82, 0xc3, 0x3f, 0x40, 0x87, 0x3f, 0xc1, 0x01, 0x81, 0x20, 0xd5};
static const int k_sc[8] = {1, 2, 3, 63, 17, 33, 48, 5}, k_m[8] = {0, 7, 63, 1, 16, 40, 2, 61};

static void test_hand_q4_K_q5_K(void)
{
    int bad = 0;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        k_scale_min(k_scales_by_hand, j, &sc, &m);
        bad += sc != k_sc[j] || m != k_m[j];
        uint8_t packed[12] = {0};
        for (int k = 0; k < 8; k++) k_scale_min_pack(packed, k, k_sc[k], k_m[k]);
        bad += memcmp(packed, k_scales_by_hand, 12) != 0;
    }
    CHECK(bad == 0, "k_scale_min / k_scale_min_pack disagree with the hand-packed bytes");

    block_q4_K b4;
    b4.d = F16_0_5, b4.dmin = F16_0_125;
    memcpy(b4.scales, k_scales_by_hand, 12);
    for (int k = 0; k < 128; k++) b4.qs[k] = (uint8_t)(k * 7 + 3);
    float got[QK_K], want[QK_K];
    dequantize_q4_K(&b4, got, QK_K);
    for (int i = 0; i < QK_K; i++) { /* element 64c + 32t + l: nibble t of qs[32c + l] */
        int c = i / 64, t = i % 64 / 32, l = i % 32, j = i / 32;
        int q = (b4.qs[32 * c + l] >> (4 * t)) & 15;
        want[i] = 0.5f * (float)k_sc[j] * (float)q - 0.125f * (float)k_m[j];
    }
    expect_block("q4_k", got, want, QK_K);
    /* by hand: qs[0] = 0x03 (elements 0, 32: q = 3, 0), qs[32] = 0xe3 (elements 64, 96: q = 3, 14) */
    CHECK(got[0] == 1.5f && got[32] == -0.875f && got[64] == -3.375f && got[96] == 440.875f,
          "q4_k by hand: %g %g %g %g (want 1.5 -0.875 -3.375 440.875)", got[0], got[32], got[64], got[96]);

    block_q5_K b5;
    b5.d = F16_0_5, b5.dmin = F16_0_125;
    memcpy(b5.scales, k_scales_by_hand, 12);
    memcpy(b5.qs, b4.qs, sizeof b5.qs);
    for (int k = 0; k < 32; k++) b5.qh[k] = (uint8_t)(k * 29 + 5);
    dequantize_q5_K(&b5, got, QK_K);
    for (int i = 0; i < QK_K; i++) { /* plus bit i/32 of qh[i % 32] as the fifth bit */
        int c = i / 64, t = i % 64 / 32, l = i % 32, j = i / 32;
        int q = ((b5.qs[32 * c + l] >> (4 * t)) & 15) | ((b5.qh[l] >> j) & 1) << 4;
        want[i] = 0.5f * (float)k_sc[j] * (float)q - 0.125f * (float)k_m[j];
    }
    expect_block("q5_k", got, want, QK_K);
    /* by hand: qh[0] = 5 = 0b101: elements 0 and 64 get the fifth bit, element 32 not */
    CHECK(got[0] == 9.5f && got[32] == -0.875f && got[64] == 20.625f, "q5_k by hand: %g %g %g (want 9.5 -0.875 20.625)",
          got[0], got[32], got[64]);
}

static void test_hand_iq4_nl(void)
{
    block_iq4_nl b;
    b.d = F16_2;
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float got[QK];
    dequantize_iq4_nl(&b, got, QK);
    static const int values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    float want[QK];
    for (int j = 0; j < 16; j++) want[j] = 2.0f * (float)values[j], want[j + 16] = 2.0f * (float)values[15 - j];
    expect_block("iq4_nl", got, want, QK);
    CHECK(got[0] == -254.0f && got[16] == 226.0f && got[8] == 2.0f, "iq4_nl by hand: %g %g %g", got[0], got[16], got[8]);
}

static void test_hand_legacy(void)
{
    /* Q4_0: element j low nibble of qs[j], element j+16 its high nibble, w = d·(q − 8) */
    block_q4_0 b;
    b.d = F16_0_25;
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float got[QK], want[QK];
    dequantize_q4_0(&b, got, QK);
    for (int j = 0; j < 16; j++) want[j] = 0.25f * (float)(j - 8), want[j + 16] = 0.25f * (float)(7 - j);
    expect_block("q4_0", got, want, QK);
    /* Q6_K: element l of the first quarter is the low nibble of ql[l] with bits 0-1 of qh[l] */
    block_q6_K b6;
    memset(&b6, 0, sizeof b6);
    b6.d = F16_1;
    for (int g = 0; g < 16; g++) b6.scales[g] = (int8_t)(g - 8);
    b6.ql[0] = 0x5a, b6.qh[0] = 0xe4; /* element 0: 0xa | 0 << 4; 32: ql[32]; 64: 0x5 | 2 << 4; 96: ... | 3 << 4 */
    float g6[QK_K];
    dequantize_q6_K(&b6, g6, QK_K);
    CHECK(g6[0] == -8.0f * (10 - 32) && g6[64] == -4.0f * (37 - 32) && g6[96] == -2.0f * (48 - 32) && g6[32] == -6.0f * (16 - 32),
          "q6_k by hand: %g %g %g %g", g6[0], g6[32], g6[64], g6[96]);
}

/* The dot product of a hand-made block against hand-made activations, worked out in integers. */
static void test_hand_dot(void)
{
    block_q4_K b4;
    b4.d = F16_0_5, b4.dmin = F16_0_125;
    memcpy(b4.scales, k_scales_by_hand, 12);
    for (int k = 0; k < 128; k++) b4.qs[k] = (uint8_t)(k * 7 + 3);
    block_q8_K a;
    a.d = 0.25f;
    for (int i = 0; i < QK_K; i++) a.qs[i] = (int8_t)((i * 13) % 255 - 127);
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += a.qs[16 * g + j];
        a.bsums[g] = (int16_t)s;
    }
    int8_t q[QK_K];
    q4_K_unpack(&b4, q);
    int64_t sum_sc = 0, sum_m = 0;
    for (int i = 0; i < QK_K; i++) sum_sc += (int64_t)k_sc[i / 32] * q[i] * a.qs[i], sum_m += (int64_t)k_m[i / 32] * a.qs[i];
    double want = 0.5 * 0.25 * (double)sum_sc - 0.125 * 0.25 * (double)sum_m; /* exact in double */
    CHECK(vec_dot_q4_K(QK_K, &b4, &a) == (float)want, "q4_k dot by hand: %.9g vs %.9g", vec_dot_q4_K(QK_K, &b4, &a), want);
    CHECK(vec_dot_q4_K_r8(QK_K, &b4, &a) == (float)want, "q4_k r8 dot by hand: %.9g vs %.9g", vec_dot_q4_K_r8(QK_K, &b4, &a), want);
}

/* IQ1: the grid expanded from halda's bitmap must be llama.cpp's iq1s_grid.  The checksum is
 * FNV-1a (64-bit) over its 2048×8 values as bytes, in order, computed from llama.cpp's
 * ggml-common.h; the samples are entries of that table as written there (value j in byte j). */
static const struct {
    int index;
    uint64_t bytes;
} iq1_samples[] = {{0, 0xffffffffffffffffull}, {1, 0xffffffffffffff01ull}, {2, 0xffffffffffff0000ull},
                   {1000, 0x00000000ffff00ffull}, {2047, 0x0101010101010101ull}};

static void iq1_sample_values(int k, int8_t v[8])
{
    for (size_t i = 0; i < sizeof iq1_samples / sizeof *iq1_samples; i++)
        if (iq1_samples[i].index == k)
            for (int j = 0; j < 8; j++) v[j] = (int8_t)(iq1_samples[i].bytes >> (8 * j));
}

static void test_iq1_grid(void)
{
    const int8_t(*grid)[8] = iq1_grid_get();
    uint64_t h = 0xcbf29ce484222325ull;
    for (int k = 0; k < 2048; k++)
        for (int j = 0; j < 8; j++) h = (h ^ (uint8_t)grid[k][j]) * 0x100000001b3ull;
    CHECK(h == 0x6703ed863501ae2eull, "iq1 grid checksum %016llx differs from llama.cpp's table", (unsigned long long)h);
    for (size_t i = 0; i < sizeof iq1_samples / sizeof *iq1_samples; i++) {
        int8_t v[8];
        iq1_sample_values(iq1_samples[i].index, v);
        CHECK(!memcmp(v, grid[iq1_samples[i].index], 8), "iq1 grid entry %d", iq1_samples[i].index);
    }
}

/* IQ1 blocks built from the sample entries only, so the expected values do not depend on the
 * bitmap expansion.  Also an exact round trip: the values of a block are exactly representable,
 * so quantizing them must find a block that dequantizes to the very same values. */
static void test_hand_iq1(void)
{
    static const int use[5] = {0, 1, 2, 1000, 2047};
    float got[QK_K], want[QK_K], again[QK_K];
    int8_t v[8];
    /* IQ1_S: sub-block ib has scale s = ib (2s+1 = 1..15), δ = −1/8 for odd ib */
    block_iq1_s b;
    b.d = F16_0_5;
    for (int ib = 0; ib < 8; ib++) {
        int qh = ib << 12 | (ib & 1) << 15;
        for (int l = 0; l < 4; l++) {
            int k = use[(ib + l) % 5];
            b.qs[4 * ib + l] = (uint8_t)k, qh |= (k >> 8) << (3 * l);
            iq1_sample_values(k, v);
            for (int j = 0; j < 8; j++) want[32 * ib + 8 * l + j] = 0.5f * (float)(2 * ib + 1) * ((float)v[j] + (ib & 1 ? -0.125f : 0.125f));
        }
        b.qh[ib] = (uint16_t)qh;
    }
    dequantize_iq1_s(&b, got, QK_K);
    expect_block("iq1_s", got, want, QK_K);
    /* by hand: sub-block 1 (2s+1 = 3, δ = −1/8), group 0 is entry 1 = {+1, −1 ×7} */
    CHECK(got[32] == 0.5f * 3 * 0.875f && got[33] == 0.5f * 3 * -1.125f, "iq1_s by hand: %g %g", got[32], got[33]);
    block_iq1_s bq;
    quantize_iq1_s(got, &bq, QK_K);
    dequantize_iq1_s(&bq, again, QK_K);
    expect_block("iq1_s exact round trip", again, got, QK_K);

    /* IQ1_M: d = 0.25 (F16 0x3400: nibbles 0, 0, 4, 3 in the top of sc[0..3]); half h of the
     * super-block has scale s = h % 8; group l has δ = −1/8 when l is odd */
    block_iq1_m m;
    memset(&m, 0, sizeof m);
    int sc[4] = {0, 0, 4 << 12, 3 << 12};
    for (int ib = 0; ib < 8; ib++) {
        for (int l = 0; l < 4; l++) {
            int k = use[(2 * ib + l) % 5], h = 2 * ib + l / 2;
            m.qs[4 * ib + l] = (uint8_t)k;
            m.qh[2 * ib + l / 2] |= (uint8_t)(((k >> 8) | (l & 1) << 3) << (4 * (l % 2)));
            iq1_sample_values(k, v);
            for (int j = 0; j < 8; j++) want[32 * ib + 8 * l + j] = 0.25f * (float)(2 * (h % 8) + 1) * ((float)v[j] + (l & 1 ? -0.125f : 0.125f));
        }
        sc[ib / 2] |= ((2 * ib) % 8) << (6 * (ib % 2)) | ((2 * ib + 1) % 8) << (6 * (ib % 2) + 3);
    }
    for (int k = 0; k < 4; k++) m.scales[2 * k] = (uint8_t)sc[k], m.scales[2 * k + 1] = (uint8_t)(sc[k] >> 8);
    CHECK(iq1_m_d(&m) == F16_0_25, "iq1_m: d gathered from the scale nibbles: %04x", iq1_m_d(&m));
    dequantize_iq1_m(&m, got, QK_K);
    expect_block("iq1_m", got, want, QK_K);
    block_iq1_m mq;
    quantize_iq1_m(got, &mq, QK_K);
    dequantize_iq1_m(&mq, again, QK_K);
    expect_block("iq1_m exact round trip", again, got, QK_K);
}

/* ---- 4. SIMD twins ------------------------------------------------------------------------- */

/* The hardware half conversions (F16C, NEON) against the _ref functions: every half, and a
 * sweep of floats through every exponent (NaN payloads may differ and are not compared). */
static void test_f16_conversions(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float a = f16_to_f32((f16_t)h), b = f16_to_f32_ref((f16_t)h);
        if (!isnan(b) && memcmp(&a, &b, 4)) bad++;
    }
    CHECK(bad == 0, "f16_to_f32 differs from f16_to_f32_ref on %d halves", bad);
    bad = 0;
    for (uint64_t u = 0; u < 0x100000000ull; u += 65521) { /* a prime step: every exponent, varied mantissas */
        for (uint32_t k = 0; k < 2; k++) {
            float f = f32_from_bits((uint32_t)u + k * 0x1000u); /* also a round-half case in every step */
            if (!isnan(f) && f32_to_f16(f) != f32_to_f16_ref(f)) bad++;
        }
    }
    CHECK(bad == 0, "f32_to_f16 differs from f32_to_f16_ref on %d floats", bad);
    /* the table's F16 dequantizer (8 at a time with F16C) against the scalar loop: every half,
     * starting at every offset mod 8 with a ragged tail */
    static f16_t all[65536 + 8];
    static float got[65536 + 8], spec[65536 + 8];
    for (uint32_t h = 0; h < 65536 + 8; h++) all[h] = (f16_t)h;
    for (int off = 0; off < 8; off++) {
        type_info(TYPE_F16)->dequantize(all + off, got, 65536 - off + 3);
        dequantize_f16(all + off, spec, 65536 - off + 3);
        CHECK(!memcmp(got, spec, (size_t)(65536 - off + 3) * 4), "the table's F16 dequantizer differs from dequantize_f16 (offset %d)", off);
    }
}

/* Attention's weighted sum of F16 value rows: the table build's kernel equals the scalar one
 * (and the dequantize-then-accumulate loop it replaced), for head sizes that are and are not
 * multiples of 64 and 8, rows a stride apart. */
static void test_weighted_sum(void)
{
    static const int hds[] = {1, 7, 8, 24, 64, 72, 128, 200};
    for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++)
        for (int n = 1; n <= 40; n += 13) {
            int hd = hds[hi];
            size_t stride = (size_t)hd * 2 + 6;
            uint8_t *rows = malloc(stride * (size_t)n);
            float *a = malloc((size_t)n * 4), *got = malloc((size_t)hd * 4), *spec = malloc((size_t)hd * 4), *old = calloc((size_t)hd, 4);
            float *tmp = malloc((size_t)hd * 4), *x = malloc((size_t)hd * 4);
            for (int p = 0; p < n; p++) {
                for (int i = 0; i < hd; i++) x[i] = normalish() * (p % 3 ? 1.0f : 100.0f);
                quantize_f16(x, rows + (size_t)p * stride, hd);
                a[p] = rand_unit(&rng) / (float)n;
            }
            F16_ROWS_WEIGHTED_SUM(rows, stride, a, n, got, hd);
            f16_rows_weighted_sum(rows, stride, a, n, spec, hd);
            for (int p = 0; p < n; p++) {
                dequantize_f16(rows + (size_t)p * stride, tmp, hd);
                for (int i = 0; i < hd; i++) {
                    float prod = a[p] * tmp[i];
                    old[i] += prod;
                }
            }
            CHECK(!memcmp(got, spec, (size_t)hd * 4) && !memcmp(spec, old, (size_t)hd * 4), "f16 weighted sum hd=%d n=%d differs from its scalar twin", hd, n);
            free(rows), free(a), free(got), free(spec), free(old), free(tmp), free(x);
        }
}

#if HALDA_AVX2 || HALDA_NEON
typedef struct {
    const char *name;
    int type;
    vec_dot_fn scalar, simd;
} simd_twin;

/* Every SIMD dot product of this build with its scalar specification. */
static const simd_twin twins[] = {
#if HALDA_AVX2
    {"f32", TYPE_F32, vec_dot_f32, vec_dot_f32_avx2},
#if HALDA_F16C
    {"f16", TYPE_F16, vec_dot_f16, vec_dot_f16_avx2},
#endif
    {"bf16", TYPE_BF16, vec_dot_bf16, vec_dot_bf16_avx2},
    {"q8_0", TYPE_Q8_0, vec_dot_q8_0, vec_dot_q8_0_avx2},
    {"q4_0", TYPE_Q4_0, vec_dot_q4_0, vec_dot_q4_0_avx2},
    {"q4_0 r8", TYPE_Q4_0, vec_dot_q4_0_r8, vec_dot_q4_0_r8_avx2},
    {"q4_1", TYPE_Q4_1, vec_dot_q4_1, vec_dot_q4_1_avx2},
    {"q5_0", TYPE_Q5_0, vec_dot_q5_0, vec_dot_q5_0_avx2},
    {"q5_1", TYPE_Q5_1, vec_dot_q5_1, vec_dot_q5_1_avx2},
    {"iq4_nl", TYPE_IQ4_NL, vec_dot_iq4_nl, vec_dot_iq4_nl_avx2},
    {"iq4_nl r8", TYPE_IQ4_NL, vec_dot_iq4_nl_r8, vec_dot_iq4_nl_r8_avx2},
    {"q2_k", TYPE_Q2_K, vec_dot_q2_K, vec_dot_q2_K_avx2},
    {"q2_k r8", TYPE_Q2_K, vec_dot_q2_K_r8, vec_dot_q2_K_r8_avx2},
    {"q3_k", TYPE_Q3_K, vec_dot_q3_K, vec_dot_q3_K_avx2},
    {"q4_k", TYPE_Q4_K, vec_dot_q4_K, vec_dot_q4_K_avx2},
    {"q4_k r8", TYPE_Q4_K, vec_dot_q4_K_r8, vec_dot_q4_K_r8_avx2},
    {"q5_k", TYPE_Q5_K, vec_dot_q5_K, vec_dot_q5_K_avx2},
    {"q6_k", TYPE_Q6_K, vec_dot_q6_K, vec_dot_q6_K_avx2},
    {"iq1_s", TYPE_IQ1_S, vec_dot_iq1_s, vec_dot_iq1_s_avx2},
    {"iq1_m", TYPE_IQ1_M, vec_dot_iq1_m, vec_dot_iq1_m_avx2},
#if HALDA_AVX512
    {"q4_k avx512", TYPE_Q4_K, vec_dot_q4_K, vec_dot_q4_K_avx512},
    {"q4_k r8 avx512", TYPE_Q4_K, vec_dot_q4_K_r8, vec_dot_q4_K_r8_avx512},
    {"q6_k avx512", TYPE_Q6_K, vec_dot_q6_K, vec_dot_q6_K_avx512},
    {"q5_k avx512", TYPE_Q5_K, vec_dot_q5_K, vec_dot_q5_K_avx512},
    {"q3_k avx512", TYPE_Q3_K, vec_dot_q3_K, vec_dot_q3_K_avx512},
    {"q2_k avx512", TYPE_Q2_K, vec_dot_q2_K, vec_dot_q2_K_avx512},
    {"q2_k r8 avx512", TYPE_Q2_K, vec_dot_q2_K_r8, vec_dot_q2_K_r8_avx512},
    {"iq1_m avx512", TYPE_IQ1_M, vec_dot_iq1_m, vec_dot_iq1_m_avx512},
#endif
#else
    {"f32", TYPE_F32, vec_dot_f32, vec_dot_f32_neon},
    {"f16", TYPE_F16, vec_dot_f16, vec_dot_f16_neon},
    {"bf16", TYPE_BF16, vec_dot_bf16, vec_dot_bf16_neon},
    {"q8_0", TYPE_Q8_0, vec_dot_q8_0, vec_dot_q8_0_neon},
    {"q4_0", TYPE_Q4_0, vec_dot_q4_0, vec_dot_q4_0_neon},
    {"q4_0 r8", TYPE_Q4_0, vec_dot_q4_0_r8, vec_dot_q4_0_r8_neon},
    {"q4_k", TYPE_Q4_K, vec_dot_q4_K, vec_dot_q4_K_neon},
    {"q4_k r8", TYPE_Q4_K, vec_dot_q4_K_r8, vec_dot_q4_K_r8_neon},
    {"q6_k", TYPE_Q6_K, vec_dot_q6_K, vec_dot_q6_K_neon},
    {"q4_1", TYPE_Q4_1, vec_dot_q4_1, vec_dot_q4_1_neon},
    {"q5_0", TYPE_Q5_0, vec_dot_q5_0, vec_dot_q5_0_neon},
    {"q5_1", TYPE_Q5_1, vec_dot_q5_1, vec_dot_q5_1_neon},
    {"iq4_nl", TYPE_IQ4_NL, vec_dot_iq4_nl, vec_dot_iq4_nl_neon},
    {"iq4_nl r8", TYPE_IQ4_NL, vec_dot_iq4_nl_r8, vec_dot_iq4_nl_r8_neon},
    {"q2_k", TYPE_Q2_K, vec_dot_q2_K, vec_dot_q2_K_neon},
    {"q2_k r8", TYPE_Q2_K, vec_dot_q2_K_r8, vec_dot_q2_K_r8_neon},
    {"q3_k", TYPE_Q3_K, vec_dot_q3_K, vec_dot_q3_K_neon},
    {"q5_k", TYPE_Q5_K, vec_dot_q5_K, vec_dot_q5_K_neon},
    {"iq1_s", TYPE_IQ1_S, vec_dot_iq1_s, vec_dot_iq1_s_neon},
    {"iq1_m", TYPE_IQ1_M, vec_dot_iq1_m, vec_dot_iq1_m_neon},
#endif
};

/* Modes: 0 normal data, 1 every byte at ±127, 2 outliers; for IQ1, 3 and 4 are 0 and 1 with
 * iq1_random_blocks for the weights. */
static void check_twin(const simd_twin *tw, int64_t n, int mode)
{
    const type_traits *t = type_info(tw->type);
    float *w = malloc((size_t)n * 4), *a = malloc((size_t)n * 4);
    uint8_t *wq = malloc(type_row_bytes(tw->type, n) + 64), *aq = malloc(type_row_bytes(t->act_type, n) + 64);
    for (int64_t i = 0; i < n; i++) {
        w[i] = normalish(), a[i] = normalish();
        if (mode % 3 == 1) w[i] = i % 2 ? 1e4f : -1e4f, a[i] = i % 3 ? -1e4f : 1e4f; /* every byte at ±127 */
        if (mode == 2 && i % 64 == 0) w[i] *= 1e3f, a[i] *= 1e3f;                 /* outliers: skewed scales */
    }
    bool have = mode < 3 || iq1_random_blocks(tw->type, wq, n);
    if (mode < 3) t->quantize(w, wq, n);
    type_info(t->act_type)->quantize(a, aq, n);
    if (have) {
        float s1 = tw->scalar(n, wq, aq), s2 = tw->simd(n, wq, aq);
        CHECK(!memcmp(&s1, &s2, sizeof s1), "%s n=%lld mode %d: SIMD %.9g != scalar %.9g", tw->name, (long long)n, mode, s2, s1);
    }
    free(w), free(a), free(wq), free(aq);
}

/* The 8-row kernels: each of the 8 results must be its row's scalar vec_dot_r8, bit for bit.
 * The rows sit a stride apart that is more than a row (a matrix view would have it equal). */
typedef struct {
    const char *name;
    int type;
    vec_dot_8rows_fn scalar, simd;
} rows8_twin;

static const rows8_twin rows8_twins[] = {
#if HALDA_AVX2
    {"q4_0", TYPE_Q4_0, vec_dot_q4_0_r8_8rows, vec_dot_q4_0_r8_8rows_avx2},
    {"iq4_nl", TYPE_IQ4_NL, vec_dot_iq4_nl_r8_8rows, vec_dot_iq4_nl_r8_8rows_avx2},
#if HALDA_AVX512
    {"q4_k", TYPE_Q4_K, vec_dot_q4_K_r8_8rows, vec_dot_q4_K_r8_8rows_avx512},
    {"q6_k", TYPE_Q6_K, vec_dot_q6_K_8rows, vec_dot_q6_K_8rows_avx512},
    {"q8_0", TYPE_Q8_0, vec_dot_q8_0_8rows, vec_dot_q8_0_8rows_avx512},
    {"q4_1", TYPE_Q4_1, vec_dot_q4_1_8rows, vec_dot_q4_1_8rows_avx512},
    {"q5_0", TYPE_Q5_0, vec_dot_q5_0_8rows, vec_dot_q5_0_8rows_avx512},
    {"q5_1", TYPE_Q5_1, vec_dot_q5_1_8rows, vec_dot_q5_1_8rows_avx512},
    {"f16", TYPE_F16, vec_dot_f16_8rows, vec_dot_f16_8rows_avx512},
    {"bf16", TYPE_BF16, vec_dot_bf16_8rows, vec_dot_bf16_8rows_avx512},
#endif
#if HALDA_AVX512VNNI
    {"iq4_nl vnni", TYPE_IQ4_NL, vec_dot_iq4_nl_r8_8rows, vec_dot_iq4_nl_r8_8rows_avx512},
#endif
#elif HALDA_NEON
    {"q4_0", TYPE_Q4_0, vec_dot_q4_0_r8_8rows, vec_dot_q4_0_r8_8rows_neon},
    {"iq4_nl", TYPE_IQ4_NL, vec_dot_iq4_nl_r8_8rows, vec_dot_iq4_nl_r8_8rows_neon},
#endif
    {NULL, 0, NULL, NULL},
};

static void test_rows8_twins(void)
{
    static const int blocks[] = {1, 2, 3, 5, 7, 8, 13, 33};
    for (const rows8_twin *tw = rows8_twins; tw->name; tw++) {
        const type_traits *t = type_info(tw->type);
        bool superseded = false; /* by a later twin of the same type (AVX2 by AVX-512) */
        for (const rows8_twin *later = tw + 1; later->name; later++) superseded |= later->type == tw->type;
        CHECK(superseded || (type_vec_dot_8rows(t, 64) == tw->simd && type_vec_dot_8rows(t, 60) == NULL),
              "%s: the table uses the 8-row kernel for rows %% 8 == 0 only", tw->name);
        for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++)
            for (int mode = 0; mode < 3; mode++) {
                int64_t n = (int64_t)blocks[bi] * t->block_elems;
                size_t row = type_row_bytes(tw->type, n), stride = row + (size_t)t->block_bytes * 3;
                float *x = malloc((size_t)n * 4);
                uint8_t *w = calloc(8, stride), *aq = malloc(type_row_bytes(t->act_type, n));
                for (int r = 0; r < 8; r++) {
                    for (int64_t i = 0; i < n; i++) {
                        x[i] = normalish() * (float)(r + 1);
                        if (mode == 1) x[i] = i % 2 ? 1e4f : -1e4f;
                        if (mode == 2 && i % 64 == r) x[i] *= 1e3f;
                    }
                    t->quantize(x, w + (size_t)r * stride, n);
                }
                for (int64_t i = 0; i < n; i++) x[i] = mode == 1 ? (i % 3 ? -1e4f : 1e4f) : normalish();
                type_info(t->act_type)->quantize(x, aq, n);
                float got[8], spec[8];
                tw->simd(n, w, stride, aq, got);
                tw->scalar(n, w, stride, aq, spec);
                int bad = -1;
                for (int r = 0; r < 8 && bad < 0; r++) {
                    float one = t->vec_dot_r8(n, w + (size_t)r * stride, aq);
                    if (memcmp(&got[r], &spec[r], 4) || memcmp(&got[r], &one, 4)) bad = r;
                }
                CHECK(bad < 0, "%s 8 rows n=%lld mode %d: row %d gives %.9g, its vec_dot_r8 %.9g", tw->name, (long long)n, mode, bad,
                      bad < 0 ? 0.0 : got[bad], bad < 0 ? 0.0 : spec[bad]);
                free(x), free(w), free(aq);
            }
    }
}

/* An activation quantizer and its SIMD twin: the same bytes. */
typedef struct {
    const char *name;
    int type;
    quantize_fn scalar, simd;
} quant_twin;

static const quant_twin quant_twins[] = {
#if HALDA_AVX2
    {"q8_0", TYPE_Q8_0, quantize_q8_0, quantize_q8_0_avx2},
    {"q8_1", TYPE_Q8_1, quantize_q8_1, quantize_q8_1_avx2},
    {"q8_k", TYPE_Q8_K, quantize_q8_K, quantize_q8_K_avx2},
#if HALDA_AVX512
    {"q8_k avx512", TYPE_Q8_K, quantize_q8_K, quantize_q8_K_avx512},
#endif
#elif HALDA_NEON
    {"q8_0", TYPE_Q8_0, quantize_q8_0, quantize_q8_0_neon},
    {"q8_1", TYPE_Q8_1, quantize_q8_1, quantize_q8_1_neon},
    {"q8_k", TYPE_Q8_K, quantize_q8_K, quantize_q8_K_neon},
#endif
    {NULL, 0, NULL, NULL},
};

/* Rows that probe the quantizers' corners, by mode: 0 normal; 1 exact ties (x·127/max|x| lands
 * on k + 1/2, which rounds to even); 2 the largest magnitude twice with both signs (the first
 * one sets the sign of Q8_K's scale); 3 some blocks all zero, others a lone value; 4 a huge
 * dynamic range; 5 tiny values (near the bottom of the normal range); 6 large, with outliers. */
static void quant_row(float *x, int64_t n, int block, int mode)
{
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i % block, b = i / block;
        float v = normalish();
        switch (mode) {
        case 1: v = j == 0 ? 127.0f : (float)((int)(i * 7 % 255) - 127) + (i % 2 ? 0.5f : -0.5f); break;
        case 2: v = j == 3 ? -5.0f : j == 5 || j == 20 ? 5.0f : v; if (b % 2) v = -v; break;
        case 3: v = b % 3 == 0 ? 0.0f : b % 3 == 1 ? (j == block - 1 ? -2.5f : 0.0f) : v; break;
        case 4: v *= powf(10.0f, (float)(i % 61 - 30)); break;
        case 5: v *= 1e-36f; break;
        case 6: v = v * 1e4f * (i % 97 == 0 ? 1e3f : 1.0f); break;
        }
        x[i] = v;
    }
}

static void test_quant_twins(void)
{
    static const int blocks[] = {1, 2, 3, 5, 7, 8, 13, 33};
    for (const quant_twin *qt = quant_twins; qt->name; qt++) {
        const type_traits *t = type_info(qt->type);
        bool superseded = false; /* by a later twin of the same type (AVX2 by AVX-512) */
        for (const quant_twin *later = qt + 1; later->name; later++) superseded |= later->type == qt->type;
        CHECK(superseded || t->quantize == qt->simd, "%s: the table uses the SIMD quantizer", qt->name);
        for (size_t b = 0; b < sizeof blocks / sizeof *blocks; b++)
            for (int mode = 0; mode < 7; mode++)
                for (int rep = 0; rep < 2; rep++) {
                    int64_t n = (int64_t)blocks[b] * t->block_elems;
                    size_t bytes = type_row_bytes(qt->type, n);
                    float *x = malloc((size_t)n * 4);
                    uint8_t *q1 = malloc(bytes), *q2 = malloc(bytes);
                    quant_row(x, n, t->block_elems, mode);
                    memset(q1, 0xa5, bytes), memset(q2, 0x5a, bytes); /* every byte must be written */
                    qt->scalar(x, q1, n);
                    qt->simd(x, q2, n);
                    size_t k = 0;
                    while (k < bytes && q1[k] == q2[k]) k++;
                    CHECK(k == bytes, "%s n=%lld mode %d: SIMD quantizer differs from scalar at byte %zu (block %zu)", qt->name,
                          (long long)n, mode, k, k / (size_t)t->block_bytes);
                    free(x), free(q1), free(q2);
                }
    }
}

#if HALDA_AVX2
/* The SIMD decoders of the packed k-quant scales against the scalar ones, on random bytes (the
 * quantizers never produce some of the patterns, e.g. the top bits of bytes 0..7 of Q4_K). */
static void test_simd_scales(void)
{
    int bad = 0;
    for (int rep = 0; rep < 20000; rep++) {
        uint8_t s[16];
        for (int i = 0; i < 16; i++) s[i] = (uint8_t)(splitmix64(&rng) >> 11);
        uint8_t out[16];
        _mm_storeu_si128((__m128i *)out, k_scale_min_unpack(s));
        for (int j = 0; j < 8; j++) {
            int sc, m;
            k_scale_min(s, j, &sc, &m);
            bad += out[j] != sc || out[8 + j] != m;
        }
        int8_t q3[16];
        _mm_storeu_si128((__m128i *)q3, avx2_q3_K_scales(s));
        for (int g = 0; g < 16; g++) bad += q3[g] != q3_K_scale(s, g);
    }
    CHECK(bad == 0, "SIMD scale decoding differs from k_scale_min / q3_K_scale in %d fields", bad);
}
#endif

static void test_simd_twins(void)
{
#if HALDA_AVX2
    test_simd_scales();
#endif
    static const int blocks[] = {1, 2, 3, 5, 7, 8, 13, 33, 128};
    static const int elems[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 1023, 4096};
    size_t n_twins = sizeof twins / sizeof *twins;
    for (size_t k = 0; k < n_twins; k++) {
        const type_traits *t = type_info(twins[k].type);
        bool r8 = strstr(twins[k].name, "r8") != NULL, superseded = false; /* by a later twin (AVX2 by AVX-512) */
        for (size_t j = k + 1; j < n_twins; j++) superseded |= twins[j].type == twins[k].type && (strstr(twins[j].name, "r8") != NULL) == r8;
        CHECK(superseded || type_vec_dot(t, r8 ? 8 : 7) == twins[k].simd, "%s: the table uses the SIMD twin", twins[k].name);
        bool plain = t->block_elems == 1; /* F32, F16, BF16: any length, with a tail */
        size_t nl = plain ? sizeof elems / sizeof *elems : sizeof blocks / sizeof *blocks;
        for (size_t b = 0; b < nl; b++)
            for (int mode = 0; mode < 5; mode++)
                for (int rep = 0; rep < 3; rep++) check_twin(&twins[k], plain ? elems[b] : (int64_t)blocks[b] * t->block_elems, mode);
    }
    test_quant_twins();
    test_rows8_twins();
}
#else
static void test_simd_twins(void) { SKIP("no SIMD kernels in this build (%s): SIMD twins not compared", HALDA_SIMD_NAME); }
#endif

/* The matrix-matrix kernels: every (row, token) value bit for bit the one its row's dot product
 * gives (gemm_by_rows, the specification), for matrices whose rows and tokens are and are not
 * whole tiles, at several lengths and for the extreme blocks of check_twin; and nothing written
 * outside the n_rows × n_tok corner of the output. */
static void check_gemm(const char *name, int type, const gemm_tile *gemm, vec_dot_fn dot, int64_t n, int64_t n_rows, int64_t n_tok, int mode)
{
    const type_traits *t = type_info(type);
    size_t row = type_row_bytes(type, n), act = type_row_bytes(t->act_type, n), stride = (size_t)n_rows + 3;
    float *x = malloc((size_t)n * 4), *got = malloc(stride * (size_t)n_tok * 4), *spec = malloc(stride * (size_t)n_tok * 4);
    uint8_t *w = malloc(row * (size_t)n_rows), *aq = malloc(act * (size_t)n_tok);
    for (int64_t r = 0; r < n_rows + n_tok; r++) {
        for (int64_t i = 0; i < n; i++) {
            x[i] = normalish() * (float)(r % 5 + 1);
            if (mode == 1) x[i] = (i + r) % 2 ? 1e4f : -1e4f; /* every byte at ±127 */
            if (mode == 2 && i % 64 == r % 64) x[i] *= 1e3f;  /* outliers: skewed scales */
        }
        if (r < n_rows) { /* IQ1: random blocks, which cover the format (iq1_random_blocks) */
            if (!iq1_random_blocks(type, w + (size_t)r * row, n)) t->quantize(x, w + (size_t)r * row, n);
        }
        else type_info(t->act_type)->quantize(x, aq + (size_t)(r - n_rows) * act, n);
    }
    for (size_t i = 0; i < stride * (size_t)n_tok; i++) got[i] = spec[i] = -12345.0f;
    gemm_tiles(gemm, n, w, row, n_rows, aq, act, n_tok, got, stride);
    gemm_by_rows(dot, n, w, row, n_rows, aq, act, n_tok, spec, stride);
    size_t bad = 0;
    while (bad < stride * (size_t)n_tok && !memcmp(&got[bad], &spec[bad], 4)) bad++;
    CHECK(bad == stride * (size_t)n_tok, "%s gemm n=%lld %lld rows x %lld tokens mode %d: row %zu token %zu gives %.9g, its dot product %.9g",
          name, (long long)n, (long long)n_rows, (long long)n_tok, mode, bad % stride, bad / stride,
          bad < stride * (size_t)n_tok ? got[bad] : 0.0, bad < stride * (size_t)n_tok ? spec[bad] : 0.0);
    free(x), free(got), free(spec), free(w), free(aq);
}

static void test_gemm(void)
{
    static const int blocks[] = {1, 2, 3, 8, 13}; /* 13: a whole group of 8 blocks and a partial one */
    static const int rows[] = {1, 3, 4, 5, 8, 13, 16};
    int kernels = 0;
    for (int type = 0; type < TYPE_COUNT; type++) {
        const type_traits *t = type_info(type);
        if (!has_kernels(t)) continue;
        for (int order = 0; order < 2; order++) {
            const gemm_tile *gemm = order ? t->gemm_r8 : t->gemm;
            vec_dot_fn dot = order ? t->vec_dot_r8 : t->vec_dot;
            if (!gemm || !dot) continue; /* (a one-order type's gemm_r8 is reached only where it has a vec_dot_r8) */
            char name[32];
            snprintf(name, sizeof name, "%s%s", t->name, order ? " r8" : "");
            CHECK(type_gemm(t, order ? 8 : 7) == gemm, "%s: type_gemm picks the kernel of the order type_vec_dot picks", name);
            kernels++;
            int elems = t->block_elems > 1 ? t->block_elems : 19; /* floats: 19 to 247 elements, with and without a tail of n % 8 */
            for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++)
                for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++)
                    for (int n_tok = 1; n_tok <= 9; n_tok++)
                        for (int mode = 0; mode < 3; mode++)
                            check_gemm(name, type, gemm, dot, (int64_t)blocks[bi] * elems, rows[ri], n_tok, mode);
            /* more tokens than one block of GEMM_ACT_BYTES of activations holds */
            int64_t n = 8 * t->block_elems, n_tok = (int64_t)(300 << 10) / (int64_t)type_row_bytes(t->act_type, n) + 5;
            check_gemm(name, type, gemm, dot, n, 5, n_tok, 0);
        }
    }
#if HALDA_AVX2 || HALDA_NEON
    CHECK(kernels > 0, "this build has gemm kernels");
#endif
    if (!kernels) SKIP("no gemm kernels in this build (%s)", HALDA_SIMD_NAME);
}

int main(void)
{
    test_round_trips();
    test_dots();
    test_hand_q2_K();
    test_hand_q3_K();
    test_hand_q4_K_q5_K();
    test_hand_iq4_nl();
    test_hand_legacy();
    test_hand_dot();
    test_iq1_grid();
    test_hand_iq1();
    test_f16_conversions();
    test_simd_twins();
    test_weighted_sum();
    test_gemm();
    return test_summary("kernels");
}
