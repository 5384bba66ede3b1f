/* tests/test_solve.c — the Halda solver against independent truths.
 *
 * 1. The shared instances (../shared/halda/instances) against optima.txt, found by an
 *    independent exact MILP solver: every optimum to 1e-6 relative, infeasible ones detected.
 * 2. A reference evaluator written here from MODEL.md, separately from solve_plan_latency,
 *    compared with it on random plans (feasible and not).
 * 3. Brute force: thousands of random tiny instances (M <= 4, L <= 12, every os/gpu pairing,
 *    slow disks, exact memory boundaries, kmax, infeasible ones), every plan enumerated with
 *    the reference evaluator; the branch and bound must find the same minimum T. A second,
 *    smaller batch of up to 6 devices makes several prefetching devices bind at once.
 * 4. Parser errors, each with the line number the message must name; valid variants.
 * 5. The CLI's exit statuses and output format.
 *
 * Run from the repository root (or set HALDA_SHARED): tests/test_solve */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

#include <unistd.h>

/* ---- a reference evaluator, straight from MODEL.md ------------------------------------------ */

/* The memory side of MODEL.md for device d holding w layers per cycle (n of them on its GPU) at
 * k cycles: INFINITY when its GPU memory or a too-slow disk forbids the plan, 0 when what it
 * holds fits in its RAM, otherwise the disk time D (ms) of what does not fit, with *prefetch set
 * when two windows fit in RAM (the device loads its next window while the others compute). */
static double ref_disk_ms(const solve_instance *in, const solve_device *d, int k, int w, int n, int *prefetch)
{
    double b = in->model.layer_bytes, bp = b + in->model.kv_bytes;
    int cuda = d->gpu == SOLVE_GPU_CUDA, metal = d->gpu == SOLVE_GPU_METAL;
    *prefetch = 0;
    if ((cuda || metal) && (double)k * n * bp + d->fixed_vram_bytes > d->vram_bytes) return INFINITY;
    double fixed = d->fixed_ram_bytes + (metal ? d->fixed_vram_bytes : 0);
    int resident = w - (cuda ? n : 0);
    double R = (double)k * resident * bp + fixed;
    if (R <= d->ram_bytes) return 0;
    if (d->disk_bytes_per_s < 0.1e9) return INFINITY;
    double B = d->os == SOLVE_OS_MACOS && metal ? (double)k * w * b : R - d->ram_bytes;
    *prefetch = 2.0 * resident * bp + fixed <= d->ram_bytes;
    return 1000 * B / d->disk_bytes_per_s;
}

/* T of (k, w, n) or INFINITY when the plan is not allowed. Written from the text of MODEL.md
 * without looking at solve_device_eval, so the two can check each other. */
static double ref_latency(const solve_instance *in, int k, const int *w, const int *n)
{
    int L = in->model.n_layer, M = in->n_device;
    int kmax = in->kmax > 0 ? in->kmax : L;
    if (k < 1 || k > kmax || L % k != 0 || w[0] < 1) return INFINITY;
    int sum = 0;
    for (int m = 0; m < M; m++) sum += w[m];
    if (sum != L / k) return INFINITY;
    double own[SOLVE_MAX_DEVICES], C = 0;
    for (int m = 0; m < M; m++) {
        const solve_device *d = &in->device[m];
        if (n[m] < 0 || n[m] > w[m]) return INFINITY;
        if (d->gpu == SOLVE_GPU_NONE && n[m] != 0) return INFINITY;
        own[m] = w[m] ? (w[m] - n[m]) * d->t_cpu_ms + n[m] * d->t_gpu_ms + d->t_comm_ms : 0;
        C += own[m];
    }
    double T = in->model.kappa_ms + k * C;
    for (int m = 0; m < M; m++) {
        if (w[m] == 0) continue;
        int prefetch;
        double D = ref_disk_ms(in, &in->device[m], k, w[m], n[m], &prefetch);
        if (D == INFINITY) return INFINITY;
        double X = prefetch ? D - k * (C - own[m]) : D;
        T += X > 0 ? X : 0;
    }
    return T;
}

/* ---- brute force -------------------------------------------------------------------------- */

typedef struct {
    const solve_instance *in;
    int k, w[SOLVE_MAX_DEVICES], n[SOLVE_MAX_DEVICES];
    double best;
    int best_k, best_w[SOLVE_MAX_DEVICES], best_n[SOLVE_MAX_DEVICES];
    long long plans;
    int prune;   /* 0: every plan; 1: skip prefixes whose trivial bound already exceeds best */
} brute;

/* A trivially valid lower bound on the part of T that devices 0..m-1 contribute: k*own plus
 * the disk time of an overloaded device whose window does not fit (nothing can hide it); a
 * prefetching device's X >= 0 is left out. INFINITY when a device breaks a hard constraint.
 * Written from MODEL.md like ref_latency, and independent of the solver's bounds. */
static double brute_prefix_cost(const solve_instance *in, int k, const int *w, const int *n, int m_end)
{
    double sum = 0;
    for (int m = 0; m < m_end; m++) {
        const solve_device *d = &in->device[m];
        if (w[m] == 0) continue;
        sum += k * ((w[m] - n[m]) * d->t_cpu_ms + n[m] * d->t_gpu_ms + d->t_comm_ms);
        int prefetch;
        double D = ref_disk_ms(in, d, k, w[m], n[m], &prefetch);
        if (D == INFINITY) return INFINITY;
        if (!prefetch) sum += D; /* a prefetching device's X >= 0 is left out */
    }
    return sum;
}

static void brute_rec(brute *bf, int m, int left)
{
    const solve_instance *in = bf->in;
    if (bf->prune && m > 0 &&
        !(in->model.kappa_ms + brute_prefix_cost(in, bf->k, bf->w, bf->n, m) < bf->best))
        return;
    if (m == in->n_device - 1) { /* the last device takes what is left */
        bf->w[m] = left;
        int nmax = in->device[m].gpu == SOLVE_GPU_NONE ? 0 : left;
        for (int n = 0; n <= nmax; n++) {
            bf->n[m] = n;
            bf->plans++;
            double T = ref_latency(in, bf->k, bf->w, bf->n);
            if (T < bf->best) {
                bf->best = T;
                bf->best_k = bf->k;
                memcpy(bf->best_w, bf->w, sizeof bf->w);
                memcpy(bf->best_n, bf->n, sizeof bf->n);
            }
        }
        return;
    }
    for (int w = 0; w <= left; w++) {
        bf->w[m] = w;
        int nmax = in->device[m].gpu == SOLVE_GPU_NONE ? 0 : w;
        for (int n = 0; n <= nmax; n++) {
            bf->n[m] = n;
            brute_rec(bf, m + 1, left - w);
        }
    }
    bf->w[m] = bf->n[m] = 0;
}

/* The minimum T over every plan (INFINITY if none is feasible). With prune, prefixes whose
 * trivial bound (brute_prefix_cost) is already no better than the best plan so far are
 * skipped: still exhaustive, and still independent of the solver's bounding. */
static double brute_force(const solve_instance *in, int prune, brute *bf)
{
    memset(bf, 0, sizeof *bf);
    bf->in = in;
    bf->best = INFINITY;
    bf->prune = prune;
    int L = in->model.n_layer, kmax = in->kmax > 0 && in->kmax < L ? in->kmax : L;
    for (int k = 1; k <= kmax; k++) {
        if (L % k) continue;
        bf->k = k;
        brute_rec(bf, 0, L / k);
    }
    return bf->best;
}

/* ---- random tiny instances ---------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int rng_int(uint64_t *s, int lo, int hi) { return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1)); }

/* Byte counts are whole multiples of 1e6 (every product below stays an exact double, so memory
 * boundaries are hit exactly, and sometimes on purpose); times are multiples of 0.25 ms, with
 * ties and a GPU slower than the CPU now and then. coupled = 1 makes fast disks and RAM for only
 * a few layers the rule, so prefetching devices (k >= 3) appear and bind together. */
static void random_instance(uint64_t *s, int max_dev, int max_layers, int coupled,
                            solve_instance *in)
{
    static const double disks[] = {0.05e9, 0.099e9, 0.1e9, 0.5e9, 2e9, 7e9};
    static const int layer_choices[] = {1, 2, 3, 4, 5, 6, 6, 8, 8, 9, 10, 12, 12, 12};
    static const int coupled_layers[] = {3, 4, 6, 6, 8, 9, 12, 12, 15, 16, 16};
    memset(in, 0, sizeof *in);
    int L;
    do L = coupled ? coupled_layers[rng_int(s, 0, 10)] : layer_choices[rng_int(s, 0, 13)];
    while (L > max_layers);
    in->model.n_layer = L;
    in->model.layer_bytes = 1e6 * rng_int(s, 0, 9) * 100 + 1e6 * rng_int(s, 1, 99);
    in->model.kv_bytes = rng_int(s, 0, 3) == 0 ? 0 : 1e6 * rng_int(s, 1, 80);
    in->model.kappa_ms = 0.25 * rng_int(s, 0, 80);
    in->kmax = rng_int(s, 0, 5) == 0 ? rng_int(s, 1, L) : 0;
    double bp = in->model.layer_bytes + in->model.kv_bytes;
    in->n_device = rng_int(s, 1, max_dev);
    for (int m = 0; m < in->n_device; m++) {
        solve_device *d = &in->device[m];
        snprintf(d->name, sizeof d->name, "dev%d", m);
        d->os = (solve_os)rng_int(s, 0, 2);
        d->gpu = (solve_gpu)rng_int(s, 0, 2); /* odd pairings (linux+metal) too: the model allows them */
        d->t_cpu_ms = 0.25 * rng_int(s, 0, 40);
        d->t_gpu_ms = d->gpu ? 0.25 * rng_int(s, 0, 20) : 0;
        d->t_comm_ms = 0.25 * rng_int(s, 0, 20);
        d->fixed_ram_bytes = 1e6 * 50 * rng_int(s, 0, 10);
        d->fixed_vram_bytes = d->gpu ? 1e6 * 50 * rng_int(s, 0, 6) : 0;
        double fixed = d->fixed_ram_bytes + (d->gpu == SOLVE_GPU_METAL ? d->fixed_vram_bytes : 0);
        int r = rng_int(s, 0, 9);
        if (coupled && r < 8) /* two windows of one layer fit, three do not: prefetching */
            d->ram_bytes = fixed + 1e6 * rng_int(s, (int)(bp / 1e6) * 2, (int)(bp / 1e6) * 16 / 5);
        else if (r < 3) /* exactly on a boundary: R == ram for some whole number of layers */
            d->ram_bytes = fixed + bp * rng_int(s, 0, 6);
        else if (r < 4) /* less than the fixed buffers */
            d->ram_bytes = 1e6 * rng_int(s, 0, 400);
        else
            d->ram_bytes = fixed + 1e6 * rng_int(s, 0, (int)(bp / 1e6) * 8);
        if (coupled) { /* compute comparable to disk time, so hiding it is a real trade */
            d->t_cpu_ms *= 8;
            d->t_gpu_ms *= 8;
            d->t_comm_ms *= 4;
        }
        d->vram_bytes = d->gpu ? d->fixed_vram_bytes + bp * rng_int(s, 0, 4) +
                                 1e6 * rng_int(s, -100, 400)
                               : 0;
        if (d->vram_bytes < 0) d->vram_bytes = 0;
        d->disk_bytes_per_s = coupled && rng_int(s, 0, 4) ? disks[rng_int(s, 4, 5)]
                                                         : disks[rng_int(s, 0, 5)];
    }
}

/* Regime counts of a plan, for the coverage report. */
static void plan_coverage(const solve_instance *in, const solve_plan *p, int *fits, int *binding)
{
    solve_device_use u[SOLVE_MAX_DEVICES];
    double C = 0;
    for (int m = 0; m < in->n_device; m++) {
        solve_device_eval(in, m, p->k, p->w[m], p->n[m], &u[m]);
        C += u[m].own_ms;
    }
    *fits = *binding = 0;
    for (int m = 0; m < in->n_device; m++) {
        if (u[m].regime != SOLVE_WINDOW_FITS) continue;
        (*fits)++;
        if (solve_exposed_ms(&u[m], p->k, p->k * C) > 0) (*binding)++;
    }
}

static void test_brute_force(int count, int max_dev, int max_layers, int all_coupled,
                             int prune, uint64_t seed, const char *label)
{
    uint64_t s = seed;
    int agree = 0, infeasible = 0, k3 = 0, with_fits = 0, two_binding = 0, shown = 0;
    long long plans = 0, split = 0;
    solve_instance *in = malloc(sizeof *in);
    brute *bf = malloc(sizeof *bf);
    if (!in || !bf) { CHECK(0, "out of memory"); free(in); free(bf); return; }
    for (int i = 0; i < count; i++) {
        random_instance(&s, max_dev, max_layers, all_coupled || i % 2, in);
        double T_bf = brute_force(in, prune, bf);
        plans += bf->plans;
        solve_plan plan;
        solve_stats st;
        char why[1536];
        /* every third case with a budget of a few nodes, so that the search splits its
         * sigma intervals (on instances this small it otherwise never needs to) */
        long long budget = i % 3 == 2 ? 1 + i % 2 : 0;
        int rc = solve_optimize_budget(in, &plan, &st, budget, why, sizeof why);
        split += st.intervals > st.k_searched;
        int ok;
        if (T_bf == INFINITY) {
            ok = rc == 1 && why[0] != '\0';
            infeasible++;
        } else {
            double T_ref = rc == 0 ? ref_latency(in, plan.k, plan.w, plan.n) : INFINITY;
            ok = rc == 0 && fabs(plan.latency_ms - T_bf) <= 1e-9 * T_bf + 1e-9 &&
                 fabs(T_ref - plan.latency_ms) <= 1e-9 * T_bf + 1e-9;
            if (rc == 0) {
                int f, bnd;
                plan_coverage(in, &plan, &f, &bnd);
                k3 += plan.k >= 3;
                with_fits += f > 0;
                two_binding += bnd >= 2;
            }
        }
        agree += ok;
        if (!ok && shown++ < 5)
            CHECK(0, "%s case %d: brute force T=%.9f (k=%d), branch and bound rc=%d T=%.9f k=%d",
                  label, i, T_bf, bf->best_k, rc, rc == 0 ? plan.latency_ms : NAN, plan.k);
    }
    CHECK(agree == count, "%s: %d of %d random instances agree with brute force", label, agree,
          count);
    fprintf(stderr, "  %s: %d instances (%lld plans enumerated): %d infeasible, optimum with "
                    "k >= 3 in %d, a window-fits device in %d, two or more binding in %d; "
                    "sigma intervals split in %lld\n",
            label, count, plans, infeasible, k3, with_fits, two_binding, split);
    CHECK(count < 1000 || split > 0, "%s: some searches split their sigma interval", label);
    free(in);
    free(bf);
}

/* ---- the reference evaluator against solve_plan_latency ------------------------------------ */

static void test_latency_matches_reference(void)
{
    uint64_t s = 12345;
    solve_instance *in = malloc(sizeof *in);
    if (!in) return;
    int agree = 0, count = 0, feasible = 0;
    for (int i = 0; i < 20000; i++) {
        random_instance(&s, 6, 12, i % 2, in);
        solve_plan p;
        memset(&p, 0, sizeof p);
        p.k = rng_int(&s, 0, in->model.n_layer + 1);
        while (rng_int(&s, 0, 9) && p.k >= 1 && in->model.n_layer % p.k) p.k--; /* mostly divisors */
        int left = p.k > 0 ? in->model.n_layer / p.k : 0;
        for (int m = 0; m < in->n_device; m++) { /* random, sometimes wrong, plans */
            p.w[m] = m == in->n_device - 1 && rng_int(&s, 0, 5) ? left : rng_int(&s, 0, left);
            left -= p.w[m];
            p.n[m] = rng_int(&s, -1, p.w[m] + 1) * (rng_int(&s, 0, 9) > 0);
        }
        double a = solve_plan_latency(in, &p), b = ref_latency(in, p.k, p.w, p.n);
        count++;
        feasible += a < INFINITY;
        agree += (a == INFINITY && b == INFINITY) || fabs(a - b) <= 1e-12 * fabs(b) + 1e-12;
    }
    CHECK(agree == count, "solve_plan_latency agrees with the reference on %d of %d plans",
          agree, count);
    CHECK(feasible > 500, "enough feasible random plans (%d)", feasible);
    free(in);
}

/* A plan worked by hand. Two linux CPU devices, b = 100 MB, kv = 0, L = 6, k = 3 (W = 2),
 * d0: t_cpu=1, t_comm=0.5, ram = 150 MB + fixed 0 -> w=1: R = 3*1*100 = 300 > 150 overloaded,
 *     window 2*100 = 200 > 150: does not fit, B = R - ram = 150 MB, disk 1e9 -> D = 150 ms.
 * d1: t_cpu=2, t_comm=1, ram = 250 MB -> w=1: R = 300 > 250, window 200 <= 250: fits,
 *     B = 50 MB, disk 0.5e9 -> D = 100 ms.
 * own0 = 1.5, own1 = 3, C = 4.5, k*C = 13.5; X0 = 150; X1 = max(0, 100 - 3*1.5) = 95.5;
 * T = kappa 10 + 13.5 + 150 + 95.5 = 269. */
static void test_latency_by_hand(void)
{
    const char *text =
        "model layers=6 layer_bytes=100e6 kv_bytes=0 kappa_ms=10\n"
        "device name=d0 os=linux gpu=none t_cpu=1 t_comm=0.5 ram=150e6 disk=1e9\n"
        "device name=d1 os=linux gpu=none t_cpu=2 t_comm=1 ram=250e6 disk=0.5e9\n";
    solve_instance in;
    char err[512];
    CHECK(solve_parse_instance(text, strlen(text), &in, err, sizeof err) == 0, "parse: %s", err);
    solve_plan p;
    memset(&p, 0, sizeof p);
    p.k = 3;
    p.w[0] = 1;
    p.w[1] = 1;
    double T = solve_plan_latency(&in, &p);
    CHECK(fabs(T - 269.0) < 1e-9, "hand-computed T = 269, got %.9f", T);
    p.w[1] = 0; /* sum w != W */
    CHECK(solve_plan_latency(&in, &p) == INFINITY, "a plan with sum w != L/k is infeasible");
    p.w[0] = 0;
    p.w[1] = 2;
    CHECK(solve_plan_latency(&in, &p) == INFINITY, "a plan without the head is infeasible");
    p.k = 4;
    p.w[0] = 1;
    p.w[1] = 0;
    CHECK(solve_plan_latency(&in, &p) == INFINITY, "k must divide L");
    p.k = 1;
    p.w[0] = 6;
    p.n[0] = 1;
    CHECK(solve_plan_latency(&in, &p) == INFINITY, "GPU layers on a device without a GPU");
}

/* ---- the shared instances ----------------------------------------------------------------- */

static void test_shared_instances(void)
{
    const char *shared = test_shared_dir();
    if (!shared) {
        SKIP("shared instances: ../shared (or $HALDA_SHARED) not found");
        return;
    }
    char dir[4200], path[4400 + 256];
    snprintf(dir, sizeof dir, "%s/halda/instances", shared);
    snprintf(path, sizeof path, "%s/optima.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        SKIP("shared instances: %s not found", path);
        return;
    }
    char line[512];
    int n = 0, infeasible = 0;
    solve_instance *in = malloc(sizeof *in);
    while (in && fgets(line, sizeof line, f)) {
        char name[256], what[256];
        if (sscanf(line, "%255s %255s", name, what) != 2) continue;
        snprintf(path, sizeof path, "%.4000s/%.255s", dir, name);
        char err[1536];
        if (solve_instance_read_file(path, in, err, sizeof err) != 0) {
            CHECK(0, "%s: %s", name, err);
            continue;
        }
        solve_plan plan;
        int rc = solve_optimize(in, &plan, NULL, err, sizeof err);
        n++;
        if (strcmp(what, "infeasible") == 0) {
            infeasible++;
            CHECK(rc == 1, "%s: expected infeasible, got rc=%d", name, rc);
            CHECK(strstr(err, "short by") || strstr(err, "cannot"), "%s: reason: %s", name, err);
            continue;
        }
        int k = 0;
        double T = 0;
        if (sscanf(line, "%*s k=%d latency_ms=%lf", &k, &T) != 2) {
            CHECK(0, "optima.txt: cannot read '%s'", line);
            continue;
        }
        CHECK(rc == 0, "%s: rc=%d (%s)", name, rc, err);
        if (rc != 0) continue;
        CHECK(fabs(plan.latency_ms - T) <= 1e-6 * T, "%s: T=%.6f, optimum %.6f", name,
              plan.latency_ms, T);
        CHECK(plan.latency_ms == solve_plan_latency(in, &plan), "%s: reported T is the model's",
              name);
        double r = ref_latency(in, plan.k, plan.w, plan.n);
        CHECK(fabs(r - plan.latency_ms) <= 1e-9 * T, "%s: reference evaluator agrees", name);
    }
    fclose(f);
    free(in);
    CHECK(n >= 60 && infeasible >= 2, "read %d shared instances (%d infeasible)", n, infeasible);
}

/* ---- the parser --------------------------------------------------------------------------- */

static const char *good_model = "model layers=8 layer_bytes=1e8 kv_bytes=0 kappa_ms=1\n";
static const char *good_device =
    "device name=a os=linux gpu=none t_cpu=1 t_gpu=0 t_comm=1 ram=1e9 vram=0 disk=1e9 "
    "fixed_ram=0 fixed_vram=0\n";

/* Parses text and checks that it fails with "line N:" and a fragment of the reason. */
static void expect_error(const char *text, int line, const char *fragment)
{
    solve_instance in;
    char err[512] = "";
    int rc = solve_parse_instance(text, strlen(text), &in, err, sizeof err);
    char want[32];
    snprintf(want, sizeof want, "line %d:", line);
    CHECK(rc == -1 && strncmp(err, want, strlen(want)) == 0 && strstr(err, fragment),
          "expected '%s ... %s', got rc=%d '%s'", want, fragment, rc, err);
}

static void test_parser_errors(void)
{
    char buf[8192];
    snprintf(buf, sizeof buf, "%sdevice name=a os=linux gpu=none t_cpu=-1 t_comm=1 ram=1 disk=1\n",
             good_model);
    expect_error(buf, 2, "negative");
    snprintf(buf, sizeof buf, "%s%sdevice name=b os=linux gpu=none t_cpu=1 t_comm=nan ram=1 disk=1\n",
             good_model, good_device);
    expect_error(buf, 3, "not a number");
    snprintf(buf, sizeof buf, "%sdevice name=a os=linux gpu=none t_cpu=1 t_comm=1 ram=1e999 disk=1\n",
             good_model);
    expect_error(buf, 2, "not a finite number");
    snprintf(buf, sizeof buf, "%sdevice name=a os=linux gpu=none t_cpu=inf t_comm=1 ram=1 disk=1\n",
             good_model);
    expect_error(buf, 2, "not a number");
    snprintf(buf, sizeof buf, "%sdevice name=a os=linux gpu=none t_cpu=1 t_comm=1 ram=1 disk=1 speed=3\n",
             good_model);
    expect_error(buf, 2, "unknown key 'speed'");
    snprintf(buf, sizeof buf, "# comment\n\n%s%s", good_model, "devices name=a\n");
    expect_error(buf, 4, "unknown record");
    snprintf(buf, sizeof buf, "%s%s", good_model, "device name=a os=linux gpu=none t_cpu\n");
    expect_error(buf, 2, "not key=value");
    snprintf(buf, sizeof buf, "%s%s", good_model, "device name=a os=linux gpu=none t_cpu=1\n");
    expect_error(buf, 2, "lacks t_comm=");
    snprintf(buf, sizeof buf, "%s%s", good_model,
             "device name=a os=windows gpu=none t_cpu=1 t_comm=1 ram=1 disk=1\n");
    expect_error(buf, 2, "os=windows");
    snprintf(buf, sizeof buf, "%s%s", good_model,
             "device name=a os=linux gpu=rocm t_cpu=1 t_comm=1 ram=1 disk=1\n");
    expect_error(buf, 2, "gpu=rocm");
    snprintf(buf, sizeof buf, "%s%s", good_model,
             "device name=a os=linux gpu=cuda t_cpu=1 t_comm=1 ram=1 disk=1\n");
    expect_error(buf, 2, "needs t_gpu= and vram=");
    snprintf(buf, sizeof buf, "%s%s%s", good_model, good_device, good_device);
    expect_error(buf, 3, "used twice");
    snprintf(buf, sizeof buf, "%s%s", good_model,
             "device name=a os=linux os=linux gpu=none t_cpu=1 t_comm=1 ram=1 disk=1\n");
    expect_error(buf, 2, "given twice");
    expect_error("model layers=8.5 layer_bytes=1 kv_bytes=0 kappa_ms=1\n", 1, "whole number");
    expect_error("model layers=0 layer_bytes=1 kv_bytes=0 kappa_ms=1\n", 1, "whole number");
    expect_error("model layers=513 layer_bytes=1 kv_bytes=0 kappa_ms=1\n", 1, "whole number");
    expect_error("model layers=8 layer_bytes=1 kv_bytes=0\n", 1, "lacks kappa_ms=");
    expect_error("model layers=8 layer_bytes=2e15 kv_bytes=0 kappa_ms=1\n", 1, "too large");
    expect_error("model layers=8 layer_bytes=0x10 kv_bytes=0 kappa_ms=1\n", 1, "not a number");
    expect_error("model layers=8 layer_bytes= kv_bytes=0 kappa_ms=1\n", 1, "empty value");
    snprintf(buf, sizeof buf, "%s%s", good_model, good_model);
    expect_error(buf, 2, "second model");
    snprintf(buf, sizeof buf, "%soptions kmax=0\n", good_model);
    expect_error(buf, 2, "kmax=0");
    snprintf(buf, sizeof buf, "%soptions kmax=2\noptions kmax=2\n", good_model);
    expect_error(buf, 3, "second options");
    snprintf(buf, sizeof buf, "%soptions kmin=2\n", good_model);
    expect_error(buf, 2, "unknown key 'kmin'");
    /* missing records are reported at the end of the input */
    snprintf(buf, sizeof buf, "# only a comment\n%s# no device\n", good_model);
    expect_error(buf, 3, "head device");
    snprintf(buf, sizeof buf, "%s", good_device);
    expect_error(buf, 1, "without a model record");
    expect_error("", 1, "without a model record");
    snprintf(buf, sizeof buf, "%sdevice name=a=b os=linux gpu=none t_cpu=1 t_comm=1 ram=1 disk=1\n",
             good_model);
    expect_error(buf, 2, "name=a=b");
    /* 65 devices */
    size_t used = (size_t)snprintf(buf, sizeof buf, "%s", good_model);
    static char big[65 * 128 + 256];
    memcpy(big, buf, used);
    for (int m = 0; m < 65; m++)
        used += (size_t)snprintf(big + used, sizeof big - used,
                                 "device name=d%d os=linux gpu=none t_cpu=1 t_comm=1 ram=1 disk=1\n", m);
    expect_error(big, 66, "more than 64 devices");
    /* a NUL byte inside a line, and an over-long line */
    char nul[] = "model layers=8 layer_bytes=1\0 kv_bytes=0 kappa_ms=1\n";
    {
        solve_instance in;
        char err[256] = "";
        int rc = solve_parse_instance(nul, sizeof nul - 1, &in, err, sizeof err);
        CHECK(rc == -1 && strstr(err, "line 1:") && strstr(err, "NUL"), "NUL byte: '%s'", err);
    }
    static char longline[SOLVE_LINE_MAX + 64];
    memset(longline, ' ', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    snprintf(buf, sizeof buf, "%s", good_model);
    {
        static char text[SOLVE_LINE_MAX + 512];
        snprintf(text, sizeof text, "%s%s\n", good_model, longline);
        expect_error(text, 2, "longer than");
    }
}

static void test_parser_valid(void)
{
    /* comments anywhere, CRLF, tabs, no final newline, defaults for optional keys */
    const char *text =
        "# halda instance v1\r\n"
        "model layers=80 layer_bytes=500000000 kv_bytes=4194304 kappa_ms=12.5   # trailing\r\n"
        "options kmax=16\r\n"
        "device name=mac os=macos gpu=metal t_cpu=40 t_gpu=9 t_comm=3 ram=2.6e9 vram=1.8e9 "
        "disk=0.72e9 fixed_ram=3e8 fixed_vram=3e8\r\n"
        "\tdevice\tname=phone os=android gpu=none t_cpu=30 t_comm=2.5 ram=4.4e9 disk=2.98e9";
    solve_instance in;
    char err[512] = "";
    int rc = solve_parse_instance(text, strlen(text), &in, err, sizeof err);
    CHECK(rc == 0, "valid instance parses: %s", err);
    if (rc != 0) return;
    CHECK(in.model.n_layer == 80 && in.model.kv_bytes == 4194304 && in.model.kappa_ms == 12.5,
          "model fields");
    CHECK(in.kmax == 16 && in.n_device == 2, "kmax and device count");
    CHECK(strcmp(in.device[0].name, "mac") == 0 && in.device[0].os == SOLVE_OS_MACOS &&
              in.device[0].gpu == SOLVE_GPU_METAL && in.device[0].ram_bytes == 2.6e9,
          "device 0 fields");
    CHECK(in.device[1].vram_bytes == 0 && in.device[1].fixed_ram_bytes == 0 &&
              in.device[1].t_gpu_ms == 0, "defaults of optional keys");
    /* the example of MODEL.md solves */
    solve_plan plan;
    rc = solve_optimize(&in, &plan, NULL, err, sizeof err);
    CHECK(rc == 0 && plan.latency_ms == solve_plan_latency(&in, &plan), "MODEL.md example solves");
    /* a bad in-memory instance is refused by the solver, not crashed on */
    in.device[1].ram_bytes = NAN;
    CHECK(solve_optimize(&in, &plan, NULL, err, sizeof err) == -1, "NaN in memory refused");
    in.device[1].ram_bytes = 1e9;
    in.n_device = 65;
    CHECK(solve_optimize(&in, &plan, NULL, err, sizeof err) == -1, "65 devices refused");
}

/* ---- the CLI ---------------------------------------------------------------------------- */

/* Runs cmd_solve with stdout captured into out (stderr silenced); returns its status. */
static int run_cli(int argc, char **argv, char *out, size_t out_len)
{
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    FILE *cap = tmpfile();
    FILE *null = fopen("/dev/null", "w");
    if (saved_out < 0 || saved_err < 0 || !cap || !null) return -100;
    dup2(fileno(cap), 1);
    dup2(fileno(null), 2);
    int rc = cmd_solve(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    rewind(cap);
    size_t n = fread(out, 1, out_len - 1, cap);
    out[n] = '\0';
    fclose(cap);
    fclose(null);
    return rc;
}

static void test_cli(void)
{
    static char out[1 << 16];
    char *help[] = {"solve", "--help"};
    CHECK(run_cli(2, help, out, sizeof out) == 0 && strstr(out, "usage:"), "--help");
    char *none[] = {"solve"};
    CHECK(run_cli(1, none, out, sizeof out) == 2, "missing FILE is a usage error");
    char *bad[] = {"solve", "x.txt", "--frobnicate"};
    CHECK(run_cli(3, bad, out, sizeof out) == 2, "unknown option is a usage error");
    char *two[] = {"solve", "a.txt", "b.txt"};
    CHECK(run_cli(3, two, out, sizeof out) == 2, "two FILEs is a usage error");
    char *missing[] = {"solve", "/nonexistent/instance.txt"};
    CHECK(run_cli(2, missing, out, sizeof out) == 1, "unreadable FILE fails with 1");

    char path[] = "/tmp/halda_test_solve_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { SKIP("cannot create a temporary file"); return; }
    FILE *f = fdopen(fd, "w");
    fputs("model layers=6 layer_bytes=100e6 kv_bytes=0 kappa_ms=10\n"
          "device name=head os=linux gpu=none t_cpu=1 t_comm=0.5 ram=150e6 disk=1e9\n"
          "device name=other os=linux gpu=cuda t_cpu=2 t_gpu=1 t_comm=1 ram=250e6 vram=1e9 "
          "disk=0.5e9\n", f);
    fclose(f);
    char *plain[] = {"solve", path};
    CHECK(run_cli(2, plain, out, sizeof out) == 0, "solve succeeds");
    /* plan lines, then k= last, with the T of the plan */
    char name0[64], name1[64];
    int w0, n0, w1, n1, k;
    double T;
    int got = sscanf(out, "%63s w=%d n=%d\n%63s w=%d n=%d\nk=%d latency_ms=%lf", name0, &w0, &n0,
                     name1, &w1, &n1, &k, &T);
    CHECK(got == 8 && strcmp(name0, "head") == 0 && strcmp(name1, "other") == 0,
          "output format: '%s'", out);
    char *explain[] = {"solve", "--explain", path};
    CHECK(run_cli(3, explain, out, sizeof out) == 0, "solve --explain succeeds");
    CHECK(out[0] == '#' && strstr(out, "share of T") && strstr(out, "\nhead w=") &&
              strstr(out, "\nk="), "--explain adds # lines before the plan: '%s'", out);
    const char *last = strstr(out, "\nk=");
    CHECK(last && strchr(last + 1, '\n') == out + strlen(out) - 1, "the k= line is last");

    f = fopen(path, "w");
    fputs("model layers=40 layer_bytes=400000000 kv_bytes=8388608 kappa_ms=8\n"
          "device name=mac os=macos gpu=metal t_cpu=30 t_gpu=6 t_comm=0 ram=10e9 vram=8e9 "
          "disk=0.06e9 fixed_ram=3e8 fixed_vram=3e8\n", f);
    fclose(f);
    CHECK(run_cli(2, plain, out, sizeof out) == 1 && out[0] == '\0',
          "infeasible: status 1 and no plan on stdout");
    f = fopen(path, "w");
    fputs("model layers=4 layer_bytes=1 kv_bytes=0 kappa_ms=1\nbogus\n", f);
    fclose(f);
    CHECK(run_cli(2, plain, out, sizeof out) == 1, "malformed FILE fails with 1");
    unlink(path);
}

/* The reasons for infeasibility name the binding constraint and the shortfall. */
static void test_infeasible_reasons(void)
{
    const char *slow =
        "model layers=32 layer_bytes=1000000000 kv_bytes=16777216 kappa_ms=20\n"
        "device name=head os=linux gpu=none t_cpu=50 t_comm=2 ram=8e9 disk=0.08e9 fixed_ram=5e8\n"
        "device name=phone os=android gpu=none t_cpu=90 t_comm=6 ram=6e9 disk=0.05e9 fixed_ram=3e8\n";
    solve_instance in;
    char err[1536];
    solve_plan plan;
    CHECK(solve_parse_instance(slow, strlen(slow), &in, err, sizeof err) == 0, "parse");
    CHECK(solve_optimize(&in, &plan, NULL, err, sizeof err) == 1 && strstr(err, "short by 20 layers"),
          "slow disks: '%s'", err);
    const char *head =
        "model layers=8 layer_bytes=1e9 kv_bytes=0 kappa_ms=1\n"
        "device name=h os=linux gpu=cuda t_cpu=1 t_gpu=1 t_comm=0 ram=8e9 vram=1e8 disk=1e9 "
        "fixed_vram=2e8\n"
        "device name=x os=linux gpu=none t_cpu=1 t_comm=0 ram=8e9 disk=1e9\n";
    CHECK(solve_parse_instance(head, strlen(head), &in, err, sizeof err) == 0, "parse");
    CHECK(solve_optimize(&in, &plan, NULL, err, sizeof err) == 1 && strstr(err, "head device 'h'") &&
              strstr(err, "fixed_vram"), "head cannot join: '%s'", err);
}

int main(void)
{
    /* TEST_SOLVE_SCALE=N multiplies the brute-force counts, TEST_SOLVE_SEED=S changes the
     * random cases: for long soak runs; the defaults keep `make test` at a few seconds. */
    const char *scale_env = getenv("TEST_SOLVE_SCALE"), *seed_env = getenv("TEST_SOLVE_SEED");
    int scale = scale_env ? atoi(scale_env) : 1;
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : 0;
    if (scale < 1) scale = 1;
    test_parser_errors();
    test_parser_valid();
    test_latency_by_hand();
    test_latency_matches_reference();
    test_shared_instances();
    test_infeasible_reasons();
    test_brute_force(20000 * scale, 4, 12, 0, 0, seed * 10 + 1, "tiny (M<=4, L<=12)");
    test_brute_force(20000 * scale, 4, 12, 1, 0, seed * 10 + 3, "tiny, prefetch-heavy");
    test_brute_force(2000 * scale, 6, 9, 1, 0, seed * 10 + 7, "small (M<=6, L<=9), prefetch-heavy");
    test_brute_force(300 * scale, 8, 16, 1, 1, seed * 10 + 9, "medium (M<=8, L<=16), pruned exhaustive");
    test_cli();
    return test_summary("solve");
}
