/* bench_solve.c — how fast `halda solve` proves its plans optimal. A benchmark, not a test.
 *
 * 1. Every shared instance (../shared/halda/instances, or $HALDA_SHARED/halda/instances):
 *    time, search nodes, k of the plan, T.
 * 2. Random instances from a seeded generator shaped like the shared ones (a model of 4-80 GB,
 *    linux/android/macos devices with none/cuda/metal, disks from 0.05 to 7 GB/s), in two
 *    three families (see bench_generate): N instances of each at 16 devices x 80 layers
 *    (target: < 1 s), at 64 devices x 128 layers (target: < 30 s), and at 64 x 384.
 *
 * Build: cc -O2 -Wall -Wextra -Wshadow bench_solve.c -lm -o bench_solve
 * Run:   ./bench_solve [--seed S] [--count N] [--shared DIR] [--write DIR]
 *        (--write saves the generated instances as files, to replay one with `halda solve`). */
#define HALDA_NO_MAIN
#include "../halda.c"

#include <dirent.h>

/* Wall time, and this process's CPU time: on a shared machine the CPU time is the fair figure
 * (the solver is single-threaded, so on an idle machine the two agree). */
static double bench_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* splitmix64: a tiny, well-mixed, seedable generator. */
static uint64_t bench_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double bench_uniform(uint64_t *st, double lo, double hi)
{
    return lo + (hi - lo) * (double)(bench_next(st) >> 11) * (1.0 / 9007199254740992.0);
}

/* Values are rounded the way a profiler would report them (whole bytes, 1e-4 ms). */
static double bench_ms(double v) { return floor(v * 1e4 + 0.5) / 1e4; }

/* One random instance. family 0, "mixed": like the shared instances; every other instance is
 * memory-starved (RAM well below the device's fair share of the model), so paging is common.
 * family 1, "prefetch": fast disks and RAM for only 1.5 to 3.5 layers per device, with the
 * compute-to-disk ratio log-uniform over five decades, so that prefetching (k >= 3) and its
 * coupling through the cycle time dominate; this is the family that stresses the bound.
 * family 2, "identical": the prefetch family with every device a copy of the first (ties
 * everywhere) and compute from negligible (1e-4 of the usual; sigma ~ 0, nothing can hide
 * disk reads) to large. Without solve_choose_sigma_cap (tables assuming sigma may reach
 * best - kappa) its slowest 16x80 instance took 0.34 s instead of 1 ms, and hand-made ones
 * with t_cpu = t_comm = 0 (sigma = 0 exactly) took 46 s to over 120 s. */
static void bench_generate(uint64_t *st, int M, int L, int family, solve_instance *in)
{
    static const double disks[] = {0.05e9, 0.5e9, 1.2e9, 2.5e9, 3.2e9, 7e9};
    static const double kvs[] = {4194304, 8388608, 16777216, 33554432, 67108864};
    memset(in, 0, sizeof *in);
    in->model.n_layer = L;
    double total = bench_uniform(st, 4e9, 80e9);
    in->model.layer_bytes = floor(total / L);
    in->model.kv_bytes = kvs[bench_next(st) % 5];
    in->model.kappa_ms = bench_ms(bench_uniform(st, 2, 40));
    double bp = in->model.layer_bytes + in->model.kv_bytes;
    double share = (double)L * bp / M; /* a device's fair share of the model */
    double tight = bench_next(st) % 2 ? bench_uniform(st, 0.05, 0.6) : bench_uniform(st, 0.6, 2.5);
    double compute = family == 1 ? pow(10.0, bench_uniform(st, -3, 2))
                   : family == 2 ? pow(10.0, bench_uniform(st, -4, 1)) : 1.0;
    in->n_device = M;
    for (int m = 0; m < M; m++) {
        solve_device *d = &in->device[m];
        snprintf(d->name, sizeof d->name, "d%d", m);
        uint64_t r = bench_next(st) % 10;
        d->os = r < 5 ? SOLVE_OS_LINUX : r < 7 ? SOLVE_OS_ANDROID : SOLVE_OS_MACOS;
        if (m == 0) d->os = SOLVE_OS_LINUX; /* the head: a linux box that can always join */
        r = bench_next(st) % 10;
        if (d->os == SOLVE_OS_LINUX) d->gpu = r < 4 ? SOLVE_GPU_CUDA : SOLVE_GPU_NONE;
        else if (d->os == SOLVE_OS_MACOS) d->gpu = r < 6 ? SOLVE_GPU_METAL : SOLVE_GPU_NONE;
        else d->gpu = SOLVE_GPU_NONE;
        d->t_cpu_ms = bench_ms(compute * in->model.layer_bytes / 1e8 * bench_uniform(st, 0.3, 3));
        d->t_gpu_ms = d->gpu ? bench_ms(d->t_cpu_ms * bench_uniform(st, 0.03, 0.3)) : 0;
        d->t_comm_ms = bench_ms(compute * bench_uniform(st, 0.5, 12));
        d->fixed_ram_bytes = floor(bench_uniform(st, 0.05e9, 0.7e9));
        if (family == 2 && m > 1) { /* a copy of device 1 (device 0 stays the linux head) */
            *d = in->device[1];
            snprintf(d->name, sizeof d->name, "d%d", m);
            continue;
        }
        if (family >= 1) {
            d->disk_bytes_per_s = disks[3 + bench_next(st) % 3];
            d->ram_bytes = floor(d->fixed_ram_bytes + bp * bench_uniform(st, 1.5, 3.5));
        } else {
            d->disk_bytes_per_s = disks[bench_next(st) % 6];
            if (m == 0 && d->disk_bytes_per_s < 0.1e9) d->disk_bytes_per_s = 1.2e9;
            d->ram_bytes = floor(share * tight * bench_uniform(st, 0.3, 1.7));
        }
        if (d->gpu == SOLVE_GPU_CUDA) {
            d->vram_bytes = floor(share * bench_uniform(st, 0.3, 3) + 7.5e8);
            d->fixed_vram_bytes = 751619277;
        } else if (d->gpu == SOLVE_GPU_METAL) {
            d->fixed_vram_bytes = 322122547;
            if (family >= 1) d->ram_bytes += d->fixed_vram_bytes;
            d->vram_bytes = floor(0.7 * d->ram_bytes);
        }
    }
}

static void bench_write(const char *dir, const char *name, const solve_instance *in)
{
    static const char *os[] = {"linux", "android", "macos"}, *gpu[] = {"none", "cuda", "metal"};
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "# halda instance v1 (bench_solve)\nmodel layers=%d layer_bytes=%.0f kv_bytes=%.0f "
               "kappa_ms=%.4f\n", in->model.n_layer, in->model.layer_bytes, in->model.kv_bytes,
            in->model.kappa_ms);
    for (int m = 0; m < in->n_device; m++) {
        const solve_device *d = &in->device[m];
        fprintf(f, "device name=%s os=%s gpu=%s t_cpu=%.4f t_gpu=%.4f t_comm=%.4f ram=%.0f "
                   "vram=%.0f disk=%.0f fixed_ram=%.0f fixed_vram=%.0f\n", d->name, os[d->os],
                gpu[d->gpu], d->t_cpu_ms, d->t_gpu_ms, d->t_comm_ms, d->ram_bytes, d->vram_bytes,
                d->disk_bytes_per_s, d->fixed_ram_bytes, d->fixed_vram_bytes);
    }
    fclose(f);
}

/* Solves one instance and prints one line; returns the CPU seconds it took. */
static double bench_one(const char *label, const solve_instance *in)
{
    solve_plan plan;
    solve_stats st;
    char why[1536];
    double w0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
    int rc = solve_optimize(in, &plan, &st, why, sizeof why);
    double cpu = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
    double wall = bench_clock(CLOCK_MONOTONIC) - w0;
    printf("%-24s %3d dev %4d layers  cpu %8.4f s  wall %8.4f s  %8lld nodes  %7lld options  ",
           label, in->n_device, in->model.n_layer, cpu, wall, st.nodes, st.options);
    if (rc == 0) printf("k=%-3d T=%.6f\n", plan.k, plan.latency_ms);
    else printf("%s\n", rc == 1 ? "infeasible" : why);
    fflush(stdout);
    return cpu;
}

static int bench_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void bench_shared(const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp) {
        printf("shared instances: %s not found, skipped\n", dir);
        return;
    }
    char *names[1024];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && n < 1024) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".txt") == 0 && strcmp(e->d_name, "optima.txt"))
            names[n++] = strdup(e->d_name);
    }
    closedir(dp);
    qsort(names, (size_t)n, sizeof *names, bench_name_cmp);
    printf("== shared instances (%s)\n", dir);
    double total = 0, worst = 0;
    for (int i = 0; i < n; i++) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%.3800s/%.255s", dir, names[i]);
        solve_instance *in = malloc(sizeof *in);
        if (in && solve_instance_read_file(path, in, err, sizeof err) == 0) {
            double dt = bench_one(names[i], in);
            total += dt;
            if (dt > worst) worst = dt;
        } else {
            printf("%-24s unreadable: %s\n", names[i], in ? err : "out of memory");
        }
        free(in);
        free(names[i]);
    }
    printf("shared: %d instances, total cpu %.3f s, slowest %.4f s\n\n", n, total, worst);
}

int main(int argc, char **argv)
{
    (void)cmd_solve; /* the CLI is halda.c's; only the library is benchmarked */
    uint64_t seed = 1;
    int count = 10;
    const char *shared = NULL, *write_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) count = atoi(argv[++i]);
        else if (strcmp(argv[i], "--shared") == 0 && i + 1 < argc) shared = argv[++i];
        else if (strcmp(argv[i], "--write") == 0 && i + 1 < argc) write_dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_solve [--seed S] [--count N] [--shared DIR] [--write DIR]\n");
            return 2;
        }
    }
    char dir[4096];
    if (!shared) {
        const char *env = getenv("HALDA_SHARED");
        snprintf(dir, sizeof dir, "%s/halda/instances", env && *env ? env : "../shared");
        shared = dir;
    }
    bench_shared(shared);

    /* devices, layers, target seconds. 64 x 384 goes beyond the sizes on purpose: a
     * device whose window can fit (two windows in RAM) holds >= 2 layers resident at k = 1, so
     * 64 devices hold 128 layers and at 64 x 128 the optimum is nearly always k = 1, proven
     * at the root; with 384 layers prefetching (k >= 3) wins often and the search works. */
    static const int sizes[3][3] = {{16, 80, 1}, {64, 128, 30}, {64, 384, 30}};
    static const char *families[3] = {"mixed", "prefetch", "identical"};
    solve_instance *in = malloc(sizeof *in);
    if (!in) return 1;
    int over = 0;
    for (int z = 0; z < 3; z++) {
        for (int fam = 0; fam < 3; fam++) {
            int M = sizes[z][0], L = sizes[z][1];
            printf("== random %s, %d devices x %d layers, seed %llu (target < %d s each)\n",
                   families[fam], M, L, (unsigned long long)seed, sizes[z][2]);
            uint64_t st = seed * 1000003ull + (uint64_t)(z * 3 + fam);
            double total = 0, worst = 0;
            for (int i = 0; i < count; i++) {
                char label[64];
                snprintf(label, sizeof label, "%s-%dx%d-%02d", families[fam], M, L, i);
                bench_generate(&st, M, L, fam, in);
                if (write_dir) {
                    char name[80];
                    snprintf(name, sizeof name, "%s.txt", label);
                    bench_write(write_dir, name, in);
                }
                double dt = bench_one(label, in);
                total += dt;
                if (dt > worst) worst = dt;
                over += dt > sizes[z][2];
            }
            printf("%s %dx%d: %d instances, cpu mean %.4f s, slowest %.4f s\n\n", families[fam], M,
                   L, count, count ? total / count : 0.0, worst);
        }
    }
    printf("%d instances over their target time\n", over);
    free(in);
    return 0;
}
