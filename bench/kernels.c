/* bench/kernels.c — single-thread speed of the dot products and the activation quantizers,
 * scalar specification vs the table's kernel (the AVX2 or NEON twin where this build has one).
 *
 *     make bench-kernels            (or: cc -O3 -march=native -pthread bench/kernels.c -lm)
 *
 * For each type: a matrix of ROWS rows of N weights times one activation row, the way a
 * token-by-token matrix-vector product calls vec_dot.  Reported: nanoseconds per row, weight
 * bytes per second, and the speed-up of the table's kernel over the scalar one.  Two sizes:
 * one that stays in the L2 cache (compute-bound) and one of ~64 MiB that streams from memory.
 * The activation quantizers (Q8_0, Q8_1, Q8_K) convert one row of 4096 floats, as a matrix
 * product does once per token.  Prefill: a matrix times 64 tokens through the table's gemm
 * kernel against a dot product per (row, token) pair (`build/bench-kernels gemm` runs just
 * that).  Another argument times only the types whose name starts with it
 * (build/bench-kernels q4_k).  Each figure is the best of several timed repetitions, to stay
 * robust on a shared machine. */
#define HALDA_NO_MAIN
#include "../halda.c"

/* The thread's CPU time, not the wall clock: on a shared machine, time the kernel spends waiting
 * for a core is not the kernel's. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile float sink;

/* Best seconds per full matrix-vector product. */
static double time_matvec(vec_dot_fn dot, const uint8_t *w, size_t row_bytes, int64_t rows, int64_t n, const void *act)
{
    double best = 1e30;
    for (int rep = 0; rep < 7; rep++) {
        int iters = 0;
        double t0 = now_s(), t;
        do {
            float s = 0;
            for (int64_t r = 0; r < rows; r++) s += dot(n, w + (size_t)r * row_bytes, act);
            sink = s;
            iters++;
        } while ((t = now_s() - t0) < 0.05);
        best = fmin(best, t / iters);
    }
    return best;
}

/* The same through an 8-row kernel (rows a multiple of 8). */
static double time_matvec8(vec_dot_8rows_fn dot8, const uint8_t *w, size_t row_bytes, int64_t rows, int64_t n, const void *act)
{
    double best = 1e30;
    float out[8];
    for (int rep = 0; rep < 7; rep++) {
        int iters = 0;
        double t0 = now_s(), t;
        do {
            float s = 0;
            for (int64_t r = 0; r + 8 <= rows; r += 8) dot8(n, w + (size_t)r * row_bytes, row_bytes, act, out), s += out[0];
            sink = s;
            iters++;
        } while ((t = now_s() - t0) < 0.05);
        best = fmin(best, t / iters);
    }
    return best;
}

typedef struct {
    int type;
    vec_dot_fn scalar; /* the specification */
    bool r8;           /* time the repacked order (vec_dot_r8) instead of vec_dot */
} bench_case;

/* Best seconds per call of a quantizer on one row of n floats. */
static double time_quantize(quantize_fn q, const float *x, void *dst, int64_t n)
{
    double best = 1e30;
    for (int rep = 0; rep < 7; rep++) {
        int iters = 0;
        double t0 = now_s(), t;
        do {
            q(x, dst, n);
            iters++;
        } while ((t = now_s() - t0) < 0.02);
        best = fmin(best, t / iters);
    }
    return best;
}

static void bench_quantizers(void)
{
    const struct {
        int type;
        quantize_fn scalar;
    } qs[] = {{TYPE_Q8_0, quantize_q8_0}, {TYPE_Q8_1, quantize_q8_1}, {TYPE_Q8_K, quantize_q8_K}};
    const int64_t n = 4096;
    uint64_t rng = 2;
    float *x = malloc((size_t)n * 4);
    void *dst = malloc(type_row_bytes(TYPE_Q8_K, n) + type_row_bytes(TYPE_Q8_1, n));
    synth_fill(x, n, 1.0f, &rng);
    printf("\nactivation quantizers, one row of %lld floats\n%-12s %12s %12s %8s\n", (long long)n, "type", "scalar ns", "table ns",
           "speed-up");
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++) {
        quantize_fn table = type_info(qs[i].type)->quantize;
        double ts = time_quantize(qs[i].scalar, x, dst, n), tt = table == qs[i].scalar ? ts : time_quantize(table, x, dst, n);
        printf("%-12s %12.1f %12.1f %7.2fx%s\n", type_info(qs[i].type)->name, 1e9 * ts, 1e9 * tt, ts / tt,
               table == qs[i].scalar ? "  (no SIMD twin)" : "");
    }
    free(x), free(dst);
}

/* CPU seconds this thread has run: unlike the wall clock, it does not count the time another
 * program holds the core, so figures taken on a busy machine stay comparable. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* What matmul does without a gemm kernel: the 8-row kernel where there is one, else a dot
 * product per pair. */
static void gemm_without(vec_dot_fn dot, vec_dot_8rows_fn dot8, int64_t n, const uint8_t *w, size_t row_bytes, int64_t rows,
                         const uint8_t *act, size_t act_bytes, int64_t n_tok, float *out)
{
    int64_t r = 0;
    for (; dot8 && r + 8 <= rows; r += 8)
        for (int64_t t = 0; t < n_tok; t++) dot8(n, w + (size_t)r * row_bytes, row_bytes, act + (size_t)t * act_bytes, out + t * rows + r);
    gemm_by_rows(dot, n, w + (size_t)r * row_bytes, row_bytes, rows - r, act, act_bytes, n_tok, out + r, (size_t)rows);
}

/* Best CPU seconds per matrix product of rows × n weights with n_tok activation rows: through
 * gemm, or (gemm NULL) as matmul does without a gemm kernel. */
static double time_gemm(const gemm_tile *gemm, vec_dot_fn dot, vec_dot_8rows_fn dot8, const uint8_t *w, size_t row_bytes, int64_t rows, int64_t n,
                        const uint8_t *act, size_t act_bytes, int64_t n_tok, float *out)
{
    double best = 1e30;
    for (int rep = 0; rep < 7; rep++) {
        int iters = 0;
        double t0 = cpu_s(), t;
        do {
            if (gemm) gemm_tiles(gemm, n, w, row_bytes, rows, act, act_bytes, n_tok, out, (size_t)rows);
            else gemm_without(dot, dot8, n, w, row_bytes, rows, act, act_bytes, n_tok, out);
            iters++;
        } while ((t = cpu_s() - t0) < 0.05);
        best = fmin(best, t / iters);
    }
    return best;
}

/* Prefill: a matrix of 256 × 2048 weights times 64 tokens, the table's gemm against the per-row
 * kernels (8 rows at a time where there is such a kernel, else a dot product per pair). */
static void bench_gemm(void)
{
    const int64_t rows = 256, n = 2048, n_tok = 64;
    uint64_t rng = 3;
    printf("\nprefill: %lld x %lld weights times %lld tokens, per-row kernels vs gemm\n%-12s %12s %12s %10s %10s %8s\n",
           (long long)rows, (long long)n, (long long)n_tok, "type", "per-row ns", "gemm ns", "rows GMAC/s", "gemm GMAC/s", "speed-up");
    for (int type = 0; type < TYPE_COUNT; type++) {
        const type_traits *t = type_info(type);
        if (!t || !t->vec_dot || !t->quantize || !t->dequantize) continue;
        for (int order = 0; order < 2; order++) {
            const gemm_tile *gemm = order ? t->gemm_r8 : t->gemm;
            vec_dot_fn dot = order ? t->vec_dot_r8 : t->vec_dot;
            if (!gemm || !dot) continue;
            size_t row_bytes = type_row_bytes(type, n), act_bytes = type_row_bytes(t->act_type, n);
            float *x = malloc((size_t)n * 4), *out = malloc((size_t)(rows * n_tok) * 4);
            uint8_t *w = malloc(row_bytes * (size_t)rows), *act = malloc(act_bytes * (size_t)n_tok);
            for (int64_t r = 0; r < rows; r++) synth_fill(x, n, 1.0f, &rng), t->quantize(x, w + (size_t)r * row_bytes, n);
            for (int64_t r = 0; r < n_tok; r++) synth_fill(x, n, 1.0f, &rng), type_info(t->act_type)->quantize(x, act + (size_t)r * act_bytes, n);
            vec_dot_8rows_fn dot8 = order ? t->vec_dot_r8_8rows : NULL;
            double tp = time_gemm(NULL, dot, dot8, w, row_bytes, rows, n, act, act_bytes, n_tok, out);
            double tg = time_gemm(gemm, dot, dot8, w, row_bytes, rows, n, act, act_bytes, n_tok, out);
            double macs = (double)rows * (double)n * (double)n_tok;
            char name[32];
            snprintf(name, sizeof name, "%s%s", t->name, order ? " r8" : "");
            printf("%-12s %12.0f %12.0f %10.2f %10.2f %7.2fx\n", name, 1e9 * tp, 1e9 * tg, macs / tp / 1e9, macs / tg / 1e9, tp / tg);
            free(x), free(out), free(w), free(act);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "gemm")) { /* just the prefill kernels */
        bench_gemm();
        return 0;
    }
    const char *only = argc > 1 ? argv[1] : NULL; /* optional: time only the types whose name starts so */
    const bench_case cases[] = { /* r8 true for a type with one order: its 8-row kernel, where the build has one */
        {TYPE_F32, vec_dot_f32, false},       {TYPE_F16, vec_dot_f16, false},          {TYPE_F16, vec_dot_f16, true},
        {TYPE_BF16, vec_dot_bf16, false},     {TYPE_BF16, vec_dot_bf16, true},         {TYPE_Q8_0, vec_dot_q8_0, false},
        {TYPE_Q8_0, vec_dot_q8_0, true},      {TYPE_Q4_0, vec_dot_q4_0, false},        {TYPE_Q4_0, vec_dot_q4_0_r8, true},
        {TYPE_Q4_1, vec_dot_q4_1, false},     {TYPE_Q4_1, vec_dot_q4_1, true},         {TYPE_Q5_0, vec_dot_q5_0, false},
        {TYPE_Q5_0, vec_dot_q5_0, true},      {TYPE_Q5_1, vec_dot_q5_1, false},        {TYPE_Q5_1, vec_dot_q5_1, true},
        {TYPE_IQ4_NL, vec_dot_iq4_nl, false}, {TYPE_IQ4_NL, vec_dot_iq4_nl_r8, true},  {TYPE_Q2_K, vec_dot_q2_K, false},
        {TYPE_Q2_K, vec_dot_q2_K_r8, true},   {TYPE_Q3_K, vec_dot_q3_K, false},        {TYPE_Q4_K, vec_dot_q4_K, false},
        {TYPE_Q4_K, vec_dot_q4_K_r8, true},   {TYPE_Q5_K, vec_dot_q5_K, false},        {TYPE_Q6_K, vec_dot_q6_K, false},
        {TYPE_Q6_K, vec_dot_q6_K, true},      {TYPE_IQ1_S, vec_dot_iq1_s, false},        {TYPE_IQ1_M, vec_dot_iq1_m, false},
    };
    const struct {
        const char *what;
        int64_t rows, n;
    } shapes[] = {{"in cache (256 x 4096)", 256, 4096}, {"from memory (~64 MiB of weights)", 0, 4096}};
    uint64_t rng = 1;
    printf("halda kernels, 1 thread, %s build\n", HALDA_SIMD_NAME);
    for (size_t si = 0; si < 2; si++) {
        printf("\n%s\n%-12s %12s %12s %10s %10s %8s\n", shapes[si].what, "type", "scalar ns/row", "table ns/row", "scalar GB/s",
               "table GB/s", "speed-up");
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
            const bench_case *bc = &cases[ci];
            const type_traits *t = type_info(bc->type);
            if (only && strncmp(t->name, only, strlen(only))) continue;
            if (bc->r8 && !t->vec_dot_r8) continue; /* no repacked order in this build */
            int64_t n = shapes[si].n;
            size_t row_bytes = type_row_bytes(bc->type, n);
            int64_t rows = shapes[si].rows ? shapes[si].rows : (int64_t)((64u << 20) / row_bytes) / 8 * 8;
            float *x = malloc((size_t)n * 4);
            uint8_t *w = malloc(row_bytes * (size_t)rows), *act = malloc(type_row_bytes(t->act_type, n));
            for (int64_t r = 0; r < rows; r++) {
                synth_fill(x, n, 1.0f, &rng);
                if (r < 64 || si == 0) t->quantize(x, w + (size_t)r * row_bytes, n);
                else memcpy(w + (size_t)r * row_bytes, w + (size_t)(r % 64) * row_bytes, row_bytes); /* fast setup */
            }
            synth_fill(x, n, 1.0f, &rng);
            type_info(t->act_type)->quantize(x, act, n);
            vec_dot_fn table = bc->r8 ? t->vec_dot_r8 : t->vec_dot;
            bool one_order = bc->r8 && t->vec_dot_r8 == t->vec_dot; /* timed as vec_dot already */
            double ts = time_matvec(bc->scalar, w, row_bytes, rows, n, act);
            double tt = table == bc->scalar || one_order ? ts : time_matvec(table, w, row_bytes, rows, n, act);
            double bytes = (double)row_bytes * (double)rows;
            char name[32];
            snprintf(name, sizeof name, "%s%s", t->name, bc->r8 ? " r8" : "");
            if (!one_order)
                printf("%-12s %12.1f %12.1f %10.2f %10.2f %7.2fx%s\n", name, 1e9 * ts / (double)rows, 1e9 * tt / (double)rows,
                       bytes / ts / 1e9, bytes / tt / 1e9, ts / tt, table == bc->scalar ? "  (no SIMD twin)" : "");
            if (bc->r8 && t->vec_dot_r8_8rows && rows % 8 == 0) { /* the matrix product's kernel for such matrices */
                double t8 = time_matvec8(t->vec_dot_r8_8rows, w, row_bytes, rows, n, act);
                snprintf(name, sizeof name, "%s%s x8", t->name, one_order ? "" : " r8");
                printf("%-12s %12.1f %12.1f %10.2f %10.2f %7.2fx\n", name, 1e9 * ts / (double)rows, 1e9 * t8 / (double)rows,
                       bytes / ts / 1e9, bytes / t8 / 1e9, ts / t8);
            }
            free(x), free(w), free(act);
        }
    }
    if (!only || !strncmp(only, "q8", 2)) bench_quantizers();
    if (!only) bench_gemm();
    return 0;
}
