/* tests/fuzz_instance.c — libFuzzer target for the instance parser and the solver.
 *
 * Every input goes through solve_parse_instance, which must either succeed or fail with a
 * "line N: ..." message, never crash, read out of bounds or leak (ASan/LSan watch that). What
 * parses and is small (<= 8 devices, <= 64 layers, so one input stays fast) is solved; the
 * plan must be feasible and carry the T that solve_plan_latency gives it. Tiny instances
 * (<= 3 devices, <= 8 layers) are also brute-forced here, so the fuzzer's odd numbers (zeros,
 * 1e15, exact memory boundaries) check optimality too, not just memory safety.
 *
 * Build and run (clang):
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined tests/fuzz_instance.c -lm -o fuzz_instance
 *   ./fuzz_instance -max_total_time=600 -max_len=4096 corpus/ ../shared/halda/instances/ */
#define HALDA_NO_MAIN
#include "../halda.c"

static void fuzz_brute(const solve_instance *in, solve_plan *p, int m, int left, double *best)
{
    if (m == in->n_device) {
        if (left == 0) {
            double T = solve_plan_latency(in, p);
            if (T < *best) *best = T;
        }
        return;
    }
    for (int w = 0; w <= left; w++) {
        p->w[m] = w;
        int nmax = in->device[m].gpu == SOLVE_GPU_NONE ? 0 : w;
        for (int n = 0; n <= nmax; n++) {
            p->n[m] = n;
            fuzz_brute(in, p, m + 1, left - w, best);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)cmd_solve; /* the CLI is not fuzzed here */
    static solve_instance in; /* large: keep it off the stack (the fuzzer is single-threaded) */
    char err[512];
    err[0] = '\0';
    int rc = solve_parse_instance((const char *)data, size, &in, err, sizeof err);
    if (rc != 0) {
        if (strncmp(err, "line ", 5) != 0) __builtin_trap(); /* every error names its line */
        return 0;
    }
    if (in.n_device > 8 || in.model.n_layer > 64) return 0;
    solve_plan plan;
    char why[1536];
    rc = solve_optimize(&in, &plan, NULL, why, sizeof why);
    if (rc == 0) {
        double T = solve_plan_latency(&in, &plan);
        if (!(T < INFINITY) || T != plan.latency_ms) __builtin_trap();
    } else if (rc != 1 || why[0] == '\0') {
        __builtin_trap();
    }
    if (in.n_device <= 3 && in.model.n_layer <= 8) {
        double best = INFINITY;
        int L = in.model.n_layer;
        for (int k = 1; k <= L; k++) {
            if (L % k) continue;
            solve_plan p;
            memset(&p, 0, sizeof p);
            p.k = k;
            fuzz_brute(&in, &p, 0, L / k, &best);
        }
        if (best == INFINITY ? rc != 1 : rc != 0 || plan.latency_ms > best + 1e-9 * best + 1e-9)
            __builtin_trap();
    }
    return 0;
}
