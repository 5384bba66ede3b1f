/* halda.c — run large language models on one machine or across a home cluster, in one C file.
 *
 * WHAT THIS FILE IS
 *   A complete, dependency-free LLM inference engine for GGUF models of the llama and qwen2
 *   families (Llama 1/2/3, Mistral, TinyStories, Qwen 2/2.5, QwQ, DeepSeek-R1 distills):
 *   a GGUF loader on mmap, quantized CPU kernels, tokenizers, sampling, and the pieces that
 *   spread one model across several small devices (the Halda layer-assignment solver, and in
 *   later sections the profiler, the piped-ring runtime and an HTTP server).  It is meant to be
 *   read: every section opens with the ideas a reader needs, and every fast path sits beside the
 *   plain scalar code that specifies it.
 *
 * WHAT IT DELIBERATELY IS NOT
 *   Not a training framework, not a general tensor library: the forward pass is written out by
 *   hand for the model families above.  Weights are never copied: they stay in the read-only
 *   file mapping and the OS page cache decides what is resident.
 *
 * BUILD
 *   cc -O2 -pthread halda.c -lm -o halda                     portable, any POSIX system
 *   cc -O3 -march=native -pthread halda.c -lm -o halda       what `make` does
 *   make CUDA=1                                              with kernels_cuda.cu (later)
 *
 * SECTIONS, in reading order
 *   1. Configuration          compile-time switches
 *   2. Platform & utilities   errors, allocation, checked arithmetic, timers, file mapping
 *   3. Numeric formats        f16/bf16, quantized block layouts
 *   4. Kernels                the weight-type table: dequantize, quantize, dot products
 *   5. Thread pool            rows of a matrix product split across persistent threads
 *   6. GGUF                   reading (untrusted bytes, all checked) and writing
 *   7. Model & forward pass   hyper-parameters, weights, KV cache, the windowed forward pass
 *   8. Tokenizer              SentencePiece-style (SPM) tokenizer and detokenizer
 *   9. Sampler                greedy, temperature, top-k, top-p, min-p, repetition penalty
 *  10. Synthetic models       deterministic random llama/qwen2 GGUFs for tests and the demo
 *  11. Profiler               t_cpu, kappa, memory, disk of a device; model sizes; profile records
 *  12. Halda solver           (see its section)
 *  13. CLI                    `halda run | eval | tokenize | gen-model | bench | profile | solve`, and main()
 */

/* =============================================================================================
 * 1. Configuration
 *
 * Every compile-time switch has a default here, so a plain `cc halda.c` needs no -D flag.
 * ============================================================================================= */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* MAP_POPULATE, madvise flags and friends where the libc hides them */
#endif

/* HALDA_NO_MAIN: build the library without main() (tests #include this file). */
/* HALDA_NO_SIMD: 1 forces the scalar reference kernels even where SIMD is available. */
#ifndef HALDA_NO_SIMD
#define HALDA_NO_SIMD 0
#endif
/* HALDA_MAX_THREADS: upper bound on the thread pool size. */
#ifndef HALDA_MAX_THREADS
#define HALDA_MAX_THREADS 256
#endif

#include "halda.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#if !HALDA_NO_SIMD && defined(__AVX2__) && defined(__FMA__)
#define HALDA_AVX2 1
#include <immintrin.h>
#else
#define HALDA_AVX2 0
#endif
#if !HALDA_NO_SIMD && defined(__F16C__)
#define HALDA_F16C 1
#include <immintrin.h>
#else
#define HALDA_F16C 0
#endif

/* =============================================================================================
 * 2. Platform & utilities
 *
 * Errors: library functions return a status and write a one-line reason into a caller-owned
 * buffer (`herr`), never exit().  Allocation goes through one pair of functions so a test can
 * make the Nth allocation fail.  Sizes derived from untrusted input are multiplied and added
 * only through the overflow-checked helpers below.
 * ============================================================================================= */

/* An error message buffer: a fixed array so it can live inside any struct. */
typedef struct {
    char msg[256];
} herr;

static void herr_set(herr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void herr_set(herr *e, const char *fmt, ...)
{
    if (!e) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

/* Allocation.  `halda_alloc_fail_at` lets a test make the Nth allocation return NULL. */
static long halda_alloc_count;
static long halda_alloc_fail_at = -1;

static void *xmalloc(size_t n)
{
    if (halda_alloc_fail_at >= 0 && halda_alloc_count++ == halda_alloc_fail_at) return NULL;
    return malloc(n ? n : 1);
}
static void *xcalloc(size_t count, size_t size)
{
    if (halda_alloc_fail_at >= 0 && halda_alloc_count++ == halda_alloc_fail_at) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}
static void xfree(void *p) { free(p); }

/* Overflow-checked arithmetic on sizes: return false when the true result does not fit. */
static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}
static bool add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b > UINT64_MAX - a) return false;
    *out = a + b;
    return true;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Number of physical cores, the default thread count: SMT siblings share the same execution
 * units and memory bus, so decode (memory-bound) gains nothing from them.  Linux exposes the
 * core ids in sysfs; elsewhere we fall back to the online CPU count. */
static int platform_physical_cores(void)
{
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (n_cpu < 1) n_cpu = 1;
    int seen = 0;
    char ids[4096] = {0}; /* "package:core" pairs seen so far, a tiny set */
    for (long c = 0; c < n_cpu && c < 1024; c++) {
        char path[128], buf[64];
        int pkg = 0, core = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/core_id", c);
        FILE *f = fopen(path, "r");
        if (!f) return (int)n_cpu;
        if (fgets(buf, sizeof buf, f)) core = atoi(buf);
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/physical_package_id", c);
        if ((f = fopen(path, "r"))) {
            if (fgets(buf, sizeof buf, f)) pkg = atoi(buf);
            fclose(f);
        }
        char key[32];
        snprintf(key, sizeof key, "|%d:%d|", pkg, core);
        if (!strstr(ids, key) && strlen(ids) + strlen(key) < sizeof ids) {
            strcat(ids, key);
            seen++;
        }
    }
    return seen > 0 ? seen : (int)n_cpu;
}

/* A read-only mapping of a whole file.  MAP_SHARED + PROT_READ: the pages belong to the page
 * cache, so weights cost no anonymous memory and the OS may drop and re-read them. */
typedef struct {
    const uint8_t *data; /* the file's bytes, [0, size) */
    uint64_t size;
    int fd;
} file_map;

static int file_map_open(file_map *m, const char *path, herr *e)
{
    memset(m, 0, sizeof *m);
    m->fd = -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        herr_set(e, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        herr_set(e, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        herr_set(e, "%s is empty", path);
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        herr_set(e, "cannot map %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    m->data = p;
    m->size = (uint64_t)st.st_size;
    m->fd = fd;
    return 0;
}

static void file_map_close(file_map *m)
{
    if (m->data) munmap((void *)m->data, (size_t)m->size);
    if (m->fd >= 0) close(m->fd);
    memset(m, 0, sizeof *m);
    m->fd = -1;
}

/* Resident set split into anonymous and file-backed pages (Linux; -1 elsewhere).  Used to check
 * that weights stay in the page cache rather than in our own memory. */
static int64_t platform_rss_anon_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int64_t kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %" SCNd64, &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* ---- What the profiler asks of the OS ----------------------------------------------------------- *
 * The profiler (section 11) needs facts every OS spells differently: how much memory this
 * process may still use, the OS class, the CPU's features, the last-level cache size, and file
 * reads that do not come from the page cache.  They live here, behind small functions, so that
 * nothing else in the file asks which OS it runs on. */

#include <dirent.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#if defined(__linux__) && (defined(__aarch64__) || defined(__arm__))
#include <sys/auxv.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* OS classes, as the Halda cost model names them (they differ in how memory pressure treats
 * mapped weights).  The numbers travel in profile records: append only. */
enum { PLATFORM_OS_LINUX = 0, PLATFORM_OS_ANDROID = 1, PLATFORM_OS_MACOS = 2, PLATFORM_OS_COUNT = 3 };
static const char *const platform_os_name[PLATFORM_OS_COUNT] = {"linux", "android", "macos"};

/* Other POSIX systems (the BSDs) keep file pages in a page cache much as Linux does, so they are
 * counted as linux. */
static int platform_os_class(void)
{
#if defined(__ANDROID__)
    return PLATFORM_OS_ANDROID;
#elif defined(__APPLE__)
    return PLATFORM_OS_MACOS;
#else
    /* A glibc build run inside Termux (under proot, say) is still on a phone: no swap, and a
     * low-memory killer instead of an OOM killer that waits. */
    const char *prefix = getenv("PREFIX");
    if (getenv("TERMUX_VERSION") || (prefix && strstr(prefix, "com.termux"))) return PLATFORM_OS_ANDROID;
    return PLATFORM_OS_LINUX;
#endif
}

/* CPU features worth knowing when choosing kernels.  The bit numbers travel in profile records:
 * append only. */
enum {
    CPU_AVX = 1u << 0, CPU_AVX2 = 1u << 1, CPU_FMA = 1u << 2, CPU_F16C = 1u << 3, CPU_AVX512F = 1u << 4,
    CPU_AVX512BW = 1u << 5, CPU_AVX512VNNI = 1u << 6, CPU_AVXVNNI = 1u << 7, CPU_NEON = 1u << 8,
    CPU_DOTPROD = 1u << 9, CPU_FP16 = 1u << 10, CPU_I8MM = 1u << 11, CPU_SVE = 1u << 12
};
#define CPU_FEATURE_COUNT 13
static const char *const platform_cpu_feature_name[CPU_FEATURE_COUNT] = {
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni", "avxvnni", "neon", "dotprod", "fp16", "i8mm", "sve"};

#if defined(__APPLE__)
/* An integer sysctl of 4 or 8 bytes. */
static bool platform_sysctl_u64(const char *name, uint64_t *out)
{
    uint8_t buf[8] = {0};
    size_t len = sizeof buf;
    if (sysctlbyname(name, buf, &len, NULL, 0) != 0) return false;
    if (len == 4) {
        uint32_t v;
        memcpy(&v, buf, 4);
        *out = v;
        return true;
    }
    if (len != 8) return false;
    memcpy(out, buf, 8);
    return true;
}
#endif

/* The features this CPU has *and* the OS enables (AVX state must be saved by the kernel, which
 * XGETBV reports), as CPU_* bits. */
static uint32_t platform_cpu_features(void)
{
    uint32_t f = 0;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    uint64_t xcr0 = 0;
    if (c >> 27 & 1) { /* OSXSAVE: XGETBV is allowed */
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = (uint64_t)hi << 32 | lo;
    }
    bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6; /* SSE+AVX state; + opmask, ZMM */
    if (ymm && (c >> 28 & 1)) f |= CPU_AVX;
    if (ymm && (c >> 12 & 1)) f |= CPU_FMA;
    if (ymm && (c >> 29 & 1)) f |= CPU_F16C;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        if (ymm && (b >> 5 & 1)) f |= CPU_AVX2;
        if (zmm && (b >> 16 & 1)) f |= CPU_AVX512F;
        if (zmm && (b >> 30 & 1)) f |= CPU_AVX512BW;
        if (zmm && (c >> 11 & 1)) f |= CPU_AVX512VNNI;
        __cpuid_count(7, 1, a, b, c, d);
        if (ymm && (a >> 4 & 1)) f |= CPU_AVXVNNI;
    }
#elif defined(__aarch64__) && defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP);
    if (hw & (1ul << 1)) f |= CPU_NEON;     /* HWCAP_ASIMD */
    if (hw & (1ul << 10)) f |= CPU_FP16;    /* HWCAP_ASIMDHP */
    if (hw & (1ul << 20)) f |= CPU_DOTPROD; /* HWCAP_ASIMDDP */
    if (hw & (1ul << 22)) f |= CPU_SVE;     /* HWCAP_SVE */
#if defined(AT_HWCAP2)
    if (getauxval(AT_HWCAP2) & (1ul << 13)) f |= CPU_I8MM; /* HWCAP2_I8MM */
#endif
#elif defined(__arm__) && defined(__linux__)
    if (getauxval(AT_HWCAP) & (1ul << 12)) f |= CPU_NEON; /* HWCAP_NEON */
#elif defined(__APPLE__) && defined(__aarch64__)
    uint64_t v = 0;
    f |= CPU_NEON;
    if (platform_sysctl_u64("hw.optional.arm.FEAT_FP16", &v) && v) f |= CPU_FP16;
    if (platform_sysctl_u64("hw.optional.arm.FEAT_DotProd", &v) && v) f |= CPU_DOTPROD;
    if (platform_sysctl_u64("hw.optional.arm.FEAT_I8MM", &v) && v) f |= CPU_I8MM;
#endif
    return f;
}

static int platform_logical_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Size of the largest CPU cache in bytes (the last level, which decides whether a working set
 * streams from DRAM); 8 MiB when the OS will not say. */
static uint64_t platform_llc_bytes(void)
{
    uint64_t best = 0;
    for (int i = 0; i < 16; i++) {
        char path[96], buf[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        char *end = NULL;
        unsigned long long v = fgets(buf, sizeof buf, f) ? strtoull(buf, &end, 10) : 0;
        fclose(f);
        if (end && (*end == 'K' || *end == 'k')) v <<= 10;
        else if (end && *end == 'M') v <<= 20;
        if (v > best) best = v;
    }
#if defined(__APPLE__)
    uint64_t v = 0;
    if (!best && platform_sysctl_u64("hw.l3cachesize", &v) && v) best = v;
    if (!best && platform_sysctl_u64("hw.l2cachesize", &v) && v) best = v;
#endif
#if defined(_SC_LEVEL3_CACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    if (!best && sysconf(_SC_LEVEL3_CACHE_SIZE) > 0) best = (uint64_t)sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (!best && sysconf(_SC_LEVEL2_CACHE_SIZE) > 0) best = (uint64_t)sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return best ? best : (uint64_t)8 << 20;
}

/* This machine's name for profiles and instances: the host name, with anything outside
 * [A-Za-z0-9._-] replaced by '-', at most len-1 characters, "device" when there is none. */
static void platform_device_name(char *out, size_t len)
{
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = 0;
    size_t n = 0;
    for (size_t i = 0; host[i] && n + 1 < len; i++) {
        char ch = host[i];
        out[n++] = isalnum((unsigned char)ch) || ch == '.' || ch == '_' || ch == '-' ? ch : '-';
    }
    out[n] = 0;
    if (n == 0) snprintf(out, len, "device");
}

/* Keep [p, p + len) in small pages: memory standing in for weights should meet the TLB as the
 * real weights do, and those are file pages, which the page cache holds 4 KiB at a time (where
 * transparent huge pages are "always", anonymous memory would otherwise get 2 MiB pages). */
static void platform_small_pages(void *p, size_t len)
{
#if defined(MADV_NOHUGEPAGE)
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), begin = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(page - 1);
    if (end > begin) madvise((void *)begin, end - begin, MADV_NOHUGEPAGE);
#else
    (void)p, (void)len;
#endif
}

/* ---- Memory this process may use ---- */

typedef struct {
    uint64_t total_bytes;        /* physical memory */
    uint64_t available_bytes;    /* what the OS can hand out without swapping (MemAvailable) */
    uint64_t swap_total_bytes, swap_free_bytes;
    uint64_t cgroup_limit_bytes; /* the memory cgroup limit that binds, 0 when none does */
    uint64_t cgroup_usage_bytes; /* that cgroup's usage now */
    uint64_t ram_bytes;          /* the answer: min(available, cgroup limit − usage) */
} platform_memory;

/* One number from a small file; cgroup v2's "max" (no limit) reads as UINT64_MAX. */
static bool platform_read_u64(const char *path, uint64_t *out)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char buf[64] = {0};
    bool ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok) return false;
    if (!strncmp(buf, "max", 3)) return *out = UINT64_MAX, true;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf || errno) return false;
    *out = v;
    return true;
}

/* Is `item` one of the comma-separated words of `list`? */
static bool platform_list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, item, n) && (p[n] == ',' || p[n] == 0 || p[n] == '\n')) return true;
    return false;
}

/* The directory of this process's memory cgroup (v1: the hierarchy with the memory controller;
 * v2: the unified one) and its hierarchy's mount point.  /proc/self/cgroup names the cgroup
 * relative to the hierarchy's root; /proc/self/mountinfo says where that hierarchy is mounted and
 * which part of it the mount shows (field 4: "/" unless a container mounted only its subtree). */
static bool platform_memory_cgroup_dir(char *dir, size_t dir_len, char *mnt, size_t mnt_len, int *version)
{
    char line[1024], path[512] = "", v2path[512] = "";
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return false;
    while (fgets(line, sizeof line, f)) { /* "id:controllers:path" */
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = 0;
        if (platform_list_has(c1 + 1, "memory")) snprintf(path, sizeof path, "%s", c2 + 1);
        else if (!strcmp(line, "0") && !c1[1]) snprintf(v2path, sizeof v2path, "%s", c2 + 1);
    }
    fclose(f);
    *version = path[0] ? 1 : v2path[0] ? 2 : 0;
    if (!*version) return false;
    const char *cg = *version == 1 ? path : v2path;
    if (!(f = fopen("/proc/self/mountinfo", "r"))) return false;
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        /* id parent major:minor root mount-point options [optional...] - fstype source super-options */
        char root[512], point[512];
        const char *dash = strstr(line, " - ");
        char fstype[32], source[64], super[512] = "";
        if (!dash || sscanf(line, "%*s %*s %*s %511s %511s", root, point) != 2 ||
            sscanf(dash + 3, "%31s %63s %511s", fstype, source, super) < 2)
            continue;
        if (*version == 1 ? !strcmp(fstype, "cgroup") && platform_list_has(super, "memory") : !strcmp(fstype, "cgroup2")) {
            size_t rl = strlen(root);
            const char *rel = strcmp(root, "/") && !strncmp(cg, root, rl) ? cg + rl : cg;
            snprintf(mnt, mnt_len, "%s", point);
            snprintf(dir, dir_len, "%s%s", point, strcmp(rel, "/") ? rel : "");
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* The tightest memory cgroup limit over this process's cgroup and its ancestors (limits nest):
 * the one with the least room left, limit − usage.  Usage counts the page cache the cgroup has
 * touched too, which is what the limit applies to.  Leaves zeros when no limit binds. */
static void platform_cgroup_memory(uint64_t *limit, uint64_t *usage)
{
    char dir[1100], mnt[512], p[1200];
    int version;
    *limit = *usage = 0;
    if (!platform_memory_cgroup_dir(dir, sizeof dir, mnt, sizeof mnt, &version)) return;
    uint64_t best_room = UINT64_MAX;
    size_t mlen = strlen(mnt);
    for (;;) {
        uint64_t lim, use;
        snprintf(p, sizeof p, "%s/%s", dir, version == 1 ? "memory.limit_in_bytes" : "memory.max");
        bool ok = platform_read_u64(p, &lim);
        snprintf(p, sizeof p, "%s/%s", dir, version == 1 ? "memory.usage_in_bytes" : "memory.current");
        ok = ok && platform_read_u64(p, &use);
        if (ok && lim < (1ull << 62)) { /* v1 writes "no limit" as a huge number */
            uint64_t room = lim > use ? lim - use : 0;
            if (room < best_room) best_room = room, *limit = lim, *usage = use;
        }
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < mlen) break;
        *slash = 0;
    }
}

static void platform_memory_info(platform_memory *m)
{
    memset(m, 0, sizeof *m);
#if defined(__APPLE__)
    /* Available: free pages, plus those the kernel gives back at once under pressure —
     * speculative read-ahead, purgeable, and file-backed (external) pageable pages. */
    uint64_t page = 0, free_p = 0, spec = 0, purge = 0, ext = 0;
    platform_sysctl_u64("hw.memsize", &m->total_bytes);
    platform_sysctl_u64("hw.pagesize", &page);
    platform_sysctl_u64("vm.page_free_count", &free_p);
    platform_sysctl_u64("vm.page_speculative_count", &spec);
    platform_sysctl_u64("vm.page_purgeable_count", &purge);
    platform_sysctl_u64("vm.page_pageable_external_count", &ext);
    m->available_bytes = (free_p + spec + purge + ext) * page;
    struct xsw_usage sw;
    size_t len = sizeof sw;
    if (sysctlbyname("vm.swapusage", &sw, &len, NULL, 0) == 0)
        m->swap_total_bytes = sw.xsu_total, m->swap_free_bytes = sw.xsu_avail;
#else
    FILE *f = fopen("/proc/meminfo", "r");
    uint64_t mem_free = 0, cached = 0;
    bool have_available = false;
    if (f) {
        char line[256], key[64];
        unsigned long long kb;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "%63[^:]: %llu", key, &kb) != 2) continue;
            uint64_t b = (uint64_t)kb * 1024;
            if (!strcmp(key, "MemTotal")) m->total_bytes = b;
            else if (!strcmp(key, "MemAvailable")) m->available_bytes = b, have_available = true;
            else if (!strcmp(key, "MemFree")) mem_free = b;
            else if (!strcmp(key, "Cached")) cached = b;
            else if (!strcmp(key, "SwapTotal")) m->swap_total_bytes = b;
            else if (!strcmp(key, "SwapFree")) m->swap_free_bytes = b;
        }
        fclose(f);
        if (!have_available) m->available_bytes = mem_free + cached; /* kernels before 3.14 */
    } else {
        long page = sysconf(_SC_PAGESIZE), pages = sysconf(_SC_PHYS_PAGES);
        if (page > 0 && pages > 0) m->total_bytes = m->available_bytes = (uint64_t)page * (uint64_t)pages;
#if defined(_SC_AVPHYS_PAGES)
        long avail = sysconf(_SC_AVPHYS_PAGES);
        if (page > 0 && avail > 0) m->available_bytes = (uint64_t)page * (uint64_t)avail;
#endif
    }
    platform_cgroup_memory(&m->cgroup_limit_bytes, &m->cgroup_usage_bytes);
#endif
    m->ram_bytes = m->available_bytes;
    if (m->cgroup_limit_bytes) {
        uint64_t room = m->cgroup_limit_bytes > m->cgroup_usage_bytes ? m->cgroup_limit_bytes - m->cgroup_usage_bytes : 0;
        if (room < m->ram_bytes) m->ram_bytes = room;
    }
}

/* ---- Reading a file around the page cache ---- */

/* Open a file for reads that do not come from the page cache.  *how says how: "O_DIRECT"
 * (Linux: reads go to the device; buffers, offsets and lengths must be multiples of the logical
 * block size, and 4096 covers every disk we know of), "F_NOCACHE" (macOS), or "drop" when
 * neither is allowed (tmpfs and some FUSE or overlay file systems refuse O_DIRECT): then the
 * caller drops the file's cached pages first with platform_drop_file_cache.  allow_direct =
 * false skips O_DIRECT (for a file system that accepts the flag but fails the reads). */
static int platform_open_uncached(const char *path, bool allow_direct, const char **how)
{
#if defined(O_DIRECT)
    if (allow_direct) {
        int fd = open(path, O_RDONLY | O_DIRECT);
        if (fd >= 0) return *how = "O_DIRECT", fd;
    }
#else
    (void)allow_direct;
#endif
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
#if defined(F_NOCACHE)
    if (fcntl(fd, F_NOCACHE, 1) == 0) return *how = "F_NOCACHE", fd;
#endif
    *how = "drop";
    return fd;
}

/* Ask the OS to forget the clean cached pages of a file (pages someone maps stay), and say
 * whether the next reads will be sequential or random (read-ahead on or off).  False where
 * the OS has no such call. */
static bool platform_drop_file_cache(int fd, bool random_reads)
{
#if defined(POSIX_FADV_DONTNEED)
    posix_fadvise(fd, 0, 0, random_reads ? POSIX_FADV_RANDOM : POSIX_FADV_SEQUENTIAL);
    return posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
#else
    (void)fd, (void)random_reads;
    return false;
#endif
}

/* Fraction of the first `len` bytes of a file that sit in the page cache, or -1 when the OS
 * cannot tell (mincore on a temporary mapping). */
static double platform_cached_fraction(int fd, uint64_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    if (len == 0 || page <= 0 || len > (uint64_t)SIZE_MAX / 2) return -1;
    size_t n_pages = (size_t)((len + (uint64_t)page - 1) / (uint64_t)page);
#if defined(__APPLE__)
    typedef char mincore_vec; /* the BSD signature */
#else
    typedef unsigned char mincore_vec;
#endif
    mincore_vec *vec = xmalloc(n_pages);
    void *p = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, 0);
    double frac = -1;
    if (vec && p != MAP_FAILED && mincore(p, (size_t)len, vec) == 0) {
        size_t resident = 0;
        for (size_t i = 0; i < n_pages; i++) resident += vec[i] & 1;
        frac = (double)resident / (double)n_pages;
    }
    if (p != MAP_FAILED) munmap(p, (size_t)len);
    xfree(vec);
    return frac;
}

/* The per-user cache directory, created if missing: $XDG_CACHE_HOME/halda, else
 * ~/.cache/halda (~/Library/Caches/halda on macOS).  False when there is nowhere to put it. */
static bool platform_cache_dir(char *out, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
#if defined(__APPLE__)
    const char *sub = "Library/Caches";
#else
    const char *sub = ".cache";
#endif
    int n;
    if (xdg && xdg[0] == '/') n = snprintf(out, len, "%s/halda", xdg);
    else if (home && home[0] == '/') n = snprintf(out, len, "%s/%s/halda", home, sub);
    else return false;
    if (n < 0 || (size_t)n >= len) return false;
    for (char *s = strchr(out + 1, '/');; s = strchr(s + 1, '/')) { /* mkdir -p */
        if (s) *s = 0;
        bool ok = mkdir(out, 0700) == 0 || errno == EEXIST;
        if (s) *s = '/';
        if (!ok) return false;
        if (!s) return true;
    }
}

/* =============================================================================================
 * 3. Numeric formats
 *
 * Weights come in many encodings.  F16 and BF16 are 16-bit floats; the quantized formats store
 * blocks of 32 (or 256, the "k-quants") values as small integers plus per-block scales.  Each
 * block layout is described once, next to its struct; `static_assert` pins its size because the
 * structs overlay bytes of the file directly.
 * ============================================================================================= */

typedef uint16_t f16_t;  /* IEEE 754 half: 1 sign, 5 exponent, 10 mantissa bits */
typedef uint16_t bf16_t; /* bfloat16: the top 16 bits of an F32 */

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Half -> float, exact.  Subnormal halves are renormalised by hand. */
static inline float f16_to_f32_ref(f16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return f32_from_bits(sign);
        float v = (float)man * (1.0f / 16777216.0f); /* man · 2^-24 */
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* Float -> half, rounding to nearest even; overflow gives inf, NaN stays NaN. */
static inline f16_t f32_to_f16_ref(float f)
{
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) return (f16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (f16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (absx < 0x38800000u) {
        /* result is subnormal (or zero): value / 2^-24, rounded to nearest even */
        float v = f32_from_bits(absx) * 16777216.0f;
        return (f16_t)(sign | (uint32_t)nearbyintf(v));
    }
    uint32_t mant_odd = (absx >> 13) & 1;
    absx += 0xfffu + mant_odd; /* round to nearest even on the 13 dropped bits */
    return (f16_t)(sign | ((absx - 0x38000000u) >> 13));
}

#if HALDA_F16C
static inline float f16_to_f32(f16_t h) { return _cvtsh_ss(h); }
static inline f16_t f32_to_f16(float f) { return (f16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
#else
static inline float f16_to_f32(f16_t h) { return f16_to_f32_ref(h); }
static inline f16_t f32_to_f16(float f) { return f32_to_f16_ref(f); }
#endif

static inline float bf16_to_f32(bf16_t h) { return f32_from_bits((uint32_t)h << 16); }
/* Float -> bfloat16, nearest even; NaN is kept quiet. */
static inline bf16_t f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000u) return (bf16_t)((x >> 16) | 64);
    return (bf16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

/* Round to the nearest integer, ties to even (the default FP rounding mode), as the
 * activation quantizers of llama.cpp's SIMD paths do. */
static inline int round_even(float x) { return (int)nearbyintf(x); }

/* GGUF tensor type ids (ggml's numbering; the file stores these numbers). */
enum {
    TYPE_F32 = 0, TYPE_F16 = 1, TYPE_Q4_0 = 2, TYPE_Q4_1 = 3, TYPE_Q5_0 = 6, TYPE_Q5_1 = 7,
    TYPE_Q8_0 = 8, TYPE_Q8_1 = 9, TYPE_Q2_K = 10, TYPE_Q3_K = 11, TYPE_Q4_K = 12, TYPE_Q5_K = 13,
    TYPE_Q6_K = 14, TYPE_Q8_K = 15, TYPE_IQ2_XXS = 16, TYPE_IQ2_XS = 17, TYPE_IQ3_XXS = 18,
    TYPE_IQ1_S = 19, TYPE_IQ4_NL = 20, TYPE_IQ3_S = 21, TYPE_IQ2_S = 22, TYPE_IQ4_XS = 23,
    TYPE_I8 = 24, TYPE_I16 = 25, TYPE_I32 = 26, TYPE_I64 = 27, TYPE_F64 = 28, TYPE_IQ1_M = 29,
    TYPE_BF16 = 30, TYPE_COUNT = 31
};

#define QK 32   /* elements per block of the "legacy" quant formats */
#define QK_K 256 /* elements per super-block of the k-quants */

/* Q4_0: 32 weights as 4-bit unsigned q in [0,15]; w = d·(q − 8).  4.5 bits per weight.
 * qs[j] holds element j in its low nibble and element j+16 in its high nibble. */
typedef struct {
    f16_t d;
    uint8_t qs[QK / 2];
} block_q4_0;
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");

/* Q4_1: w = d·q + m with q in [0,15].  5 bits per weight.  Nibble order as Q4_0. */
typedef struct {
    f16_t d, m;
    uint8_t qs[QK / 2];
} block_q4_1;
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");

/* Q5_0: 5-bit q in [0,31], w = d·(q − 16).  5.5 bits per weight.  The low 4 bits are packed as
 * in Q4_0; bit j of qh (little-endian u32) is the 5th bit of element j. */
typedef struct {
    f16_t d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_0;
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");

/* Q5_1: w = d·q + m with 5-bit q.  6 bits per weight. */
typedef struct {
    f16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_1;
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");

/* Q8_0: w = d·q with q a signed byte.  8.5 bits per weight; also the activation format that
 * Q4_0/Q5_0/Q8_0/IQ4_NL weights are multiplied with. */
typedef struct {
    f16_t d;
    int8_t qs[QK];
} block_q8_0;
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");

/* Q8_1: Q8_0 plus s = d·Σq, which lets a Q4_1/Q5_1 dot product apply the weight's offset m
 * once per block: Σ (d_w·q_w + m)·d_a·q_a = d_w·d_a·Σ q_w·q_a + m·s.  Activations only. */
typedef struct {
    f16_t d, s;
    int8_t qs[QK];
} block_q8_1;
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");

/* Q6_K: 256 weights in 16 groups of 16; 6-bit q in [0,63], w = d·scale[g]·(q − 32) with an
 * 8-bit signed scale per group.  6.5625 bits per weight.  The low 4 bits live in ql, the high 2
 * in qh.  Within each half of 128 elements, for l in [0,32):
 *   element l      : low nibble of ql[l],      bits 0-1 of qh[l]
 *   element l + 32 : low nibble of ql[l + 32], bits 2-3 of qh[l]
 *   element l + 64 : high nibble of ql[l],     bits 4-5 of qh[l]
 *   element l + 96 : high nibble of ql[l + 32], bits 6-7 of qh[l]
 * (ql advances by 64 and qh by 32 for the second half). */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    f16_t d;
} block_q6_K;
static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");

/* Q8_K: the activation format of the k-quant dot products: 256 signed bytes, an F32 scale, and
 * the sums of each group of 16 (which let Q2_K/Q4_K/Q5_K apply their per-group minimums). */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");

/* =============================================================================================
 * 4. Kernels
 *
 * One table row per weight type (`type_traits`): its block geometry, how to dequantize a row to
 * F32, how to quantize an F32 row into it, and a dot product of one weight row with one
 * activation row.  The activations are first converted to the type named by `act_type` (Q8_0
 * for Q4_0, Q8_K for the k-quants, F16 for F16 ...): that is what makes integer dot products
 * possible, and it is also exactly how llama.cpp rounds, which is what lets our logits match
 * its reference outputs.  A matrix product converts its activations once and shares them
 * across all rows and threads.  SIMD variants replace `vec_dot` entries only; the scalar
 * functions are the specification.
 * ============================================================================================= */

typedef void (*dequantize_fn)(const void *src, float *dst, int64_t n);
typedef void (*quantize_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n elements: weight row w (of the weight type) with activation row a (of the
 * weight type's act_type). */
typedef float (*vec_dot_fn)(int64_t n, const void *w, const void *a);

typedef struct {
    const char *name;
    int block_elems;  /* elements per block (1 for plain floats) */
    int block_bytes;  /* bytes per block */
    int act_type;     /* the activation type vec_dot takes */
    dequantize_fn dequantize; /* NULL: type known to GGUF but not supported by halda */
    quantize_fn quantize;     /* NULL: halda cannot write this type */
    vec_dot_fn vec_dot;
} type_traits;

static const type_traits *type_info(int type); /* defined after the kernels, below */

/* Bytes of a row of n elements of `type` (n a multiple of the block size). */
static size_t type_row_bytes(int type, int64_t n)
{
    const type_traits *t = type_info(type);
    return (size_t)(n / t->block_elems) * (size_t)t->block_bytes;
}

/* ---- F32, F16, BF16 ------------------------------------------------------------------------ */

static void dequantize_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }
static void quantize_f32(const float *src, void *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }

static void dequantize_f16(const void *src, float *dst, int64_t n)
{
    const f16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
}
static void quantize_f16(const float *src, void *dst, int64_t n)
{
    f16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
}
static void dequantize_bf16(const void *src, float *dst, int64_t n)
{
    const bf16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
}
static void quantize_bf16(const float *src, void *dst, int64_t n)
{
    bf16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
}

/* Float dot products accumulate in F32 over 8 interleaved partial sums (so compilers can keep
 * them in one vector register), then add the partial sums pairwise. */
static float vec_dot_f32(int64_t n, const void *w, const void *a)
{
    const float *x = w, *y = a;
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j] * y[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

static float vec_dot_f16(int64_t n, const void *w, const void *a)
{
    const f16_t *x = w, *y = a;
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += f16_to_f32(x[i + j]) * f16_to_f32(y[i + j]);
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += f16_to_f32(x[i]) * f16_to_f32(y[i]);
    return s;
}

static float vec_dot_bf16(int64_t n, const void *w, const void *a)
{
    const bf16_t *x = w, *y = a;
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += bf16_to_f32(x[i + j]) * bf16_to_f32(y[i + j]);
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += bf16_to_f32(x[i]) * bf16_to_f32(y[i]);
    return s;
}

/* ---- The summation order of the 32-element block products ------------------------------------ *
 * A block's integer dot product is exact, but how the per-block results are added up in F32 is
 * not, and llama.cpp's references carry its order: on x86 it keeps 8 F32 lanes, lane l holding
 * the integer sum of elements 4l..4l+3 of each block, accumulates each lane with a fused
 * multiply-add by the block's scale, and adds the lanes at the end as ((l0+l4)+(l2+l6)) +
 * ((l1+l5)+(l3+l7)).  Following the same order keeps our activations bit-identical to its
 * in most places, which matters because the next quantization step amplifies any difference
 * that happens to cross a rounding boundary.  The SIMD kernels use this order natively. */
typedef struct {
    float lane[8];
} lane_acc;

/* acc.lane[l] += scale · Σ_{i in 4l..4l+3} qa[i]·qb[i] */
static inline void lane_acc_block(lane_acc *acc, float scale, const int *qw, const int8_t *qa)
{
    for (int l = 0; l < 8; l++) {
        int s = 0;
        for (int i = 4 * l; i < 4 * l + 4; i++) s += qw[i] * qa[i];
        acc->lane[l] = fmaf(scale, (float)s, acc->lane[l]);
    }
}
static inline float lane_acc_sum(const lane_acc *acc)
{
    const float *v = acc->lane;
    float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
    return (a0 + a2) + (a1 + a3);
}

/* ---- Q8_0 and Q8_1 (weights and activations) ------------------------------------------------ */

/* d = max|x| / 127, q = round(x · 127 / max|x|), ties to even. */
static void quantize_q8_0(const float *src, void *dst, int64_t n)
{
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(src[j]));
        float id = amax != 0 ? 127.0f / amax : 0.0f;
        y[b].d = f32_to_f16(amax / 127.0f);
        for (int j = 0; j < QK; j++) y[b].qs[j] = (int8_t)round_even(src[j] * id);
    }
}
static void dequantize_q8_0(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *x = src;
    for (int64_t b = 0; b < n / QK; b++) {
        float d = f16_to_f32(x[b].d);
        for (int j = 0; j < QK; j++) dst[b * QK + j] = d * x[b].qs[j];
    }
}
static float vec_dot_q8_0(int64_t n, const void *w, const void *a)
{
    const block_q8_0 *x = w, *y = a;
    lane_acc acc = {{0}};
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++) {
        for (int j = 0; j < QK; j++) q[j] = x[b].qs[j];
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc);
}

static void quantize_q8_1(const float *src, void *dst, int64_t n)
{
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(src[j]));
        float d = amax / 127.0f, id = amax != 0 ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            y[b].qs[j] = (int8_t)round_even(src[j] * id);
            sum += y[b].qs[j];
        }
        y[b].d = f32_to_f16(d);
        y[b].s = f32_to_f16(d * (float)sum);
    }
}

/* ---- Q4_0, Q4_1, Q5_0, Q5_1 ----------------------------------------------------------------- */

/* The canonical quantizers: the scale maps the element of largest magnitude to the end of the
 * integer range (−8 for Q4_0, −16 for Q5_0; min..max for the _1 variants). */
static void quantize_q4_0(const float *src, void *dst, int64_t n)
{
    block_q4_0 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK; j++)
            if (fabsf(src[j]) > amax) amax = fabsf(src[j]), max = src[j];
        float d = max / -8, id = d ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (int)(src[j] * id + 8.5f), q1 = (int)(src[j + QK / 2] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0, q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}
static void dequantize_q4_0(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *x = src;
    for (int64_t b = 0; b < n / QK; b++, dst += QK) {
        float d = f16_to_f32(x[b].d);
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = d * ((x[b].qs[j] & 15) - 8);
            dst[j + QK / 2] = d * ((x[b].qs[j] >> 4) - 8);
        }
    }
}
static float vec_dot_q4_0(int64_t n, const void *w, const void *a)
{
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    lane_acc acc = {{0}};
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++) {
        for (int j = 0; j < QK / 2; j++) q[j] = (x[b].qs[j] & 15) - 8, q[j + QK / 2] = (x[b].qs[j] >> 4) - 8;
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc);
}

static void quantize_q4_1(const float *src, void *dst, int64_t n)
{
    block_q4_1 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK; j++) min = fminf(min, src[j]), max = fmaxf(max, src[j]);
        float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        y[b].m = f32_to_f16(min);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (int)((src[j] - min) * id + 0.5f), q1 = (int)((src[j + QK / 2] - min) * id + 0.5f);
            q0 = q0 > 15 ? 15 : q0, q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}
static void dequantize_q4_1(const void *src, float *dst, int64_t n)
{
    const block_q4_1 *x = src;
    for (int64_t b = 0; b < n / QK; b++, dst += QK) {
        float d = f16_to_f32(x[b].d), m = f16_to_f32(x[b].m);
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = d * (x[b].qs[j] & 15) + m;
            dst[j + QK / 2] = d * (x[b].qs[j] >> 4) + m;
        }
    }
}
static float vec_dot_q4_1(int64_t n, const void *w, const void *a)
{
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    lane_acc acc = {{0}};
    float mins = 0; /* Σ m·s, added after the lanes */
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++) {
        for (int j = 0; j < QK / 2; j++) q[j] = x[b].qs[j] & 15, q[j + QK / 2] = x[b].qs[j] >> 4;
        mins += f16_to_f32(x[b].m) * f16_to_f32(y[b].s);
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc) + mins;
}

/* The 5th bit of element j (j < 16) and of element j + 16, from a Q5 block's qh. */
static inline uint32_t q5_high_bits(const uint8_t qh[4]) { return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24; }

static void quantize_q5_0(const float *src, void *dst, int64_t n)
{
    block_q5_0 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK; j++)
            if (fabsf(src[j]) > amax) amax = fabsf(src[j]), max = src[j];
        float d = max / -16, id = d ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (int)(src[j] * id + 16.5f), q1 = (int)(src[j + QK / 2] * id + 16.5f);
            q0 = q0 > 31 ? 31 : q0, q1 = q1 > 31 ? 31 : q1;
            y[b].qs[j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + QK / 2);
        }
        for (int k = 0; k < 4; k++) y[b].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}
static void dequantize_q5_0(const void *src, float *dst, int64_t n)
{
    const block_q5_0 *x = src;
    for (int64_t b = 0; b < n / QK; b++, dst += QK) {
        float d = f16_to_f32(x[b].d);
        uint32_t qh = q5_high_bits(x[b].qh);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (x[b].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int q1 = (x[b].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (q0 - 16);
            dst[j + QK / 2] = d * (q1 - 16);
        }
    }
}
static float vec_dot_q5_0(int64_t n, const void *w, const void *a)
{
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    lane_acc acc = {{0}};
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++) {
        uint32_t qh = q5_high_bits(x[b].qh);
        for (int j = 0; j < QK / 2; j++) {
            q[j] = ((x[b].qs[j] & 15) | (int)((qh >> j) & 1) << 4) - 16;
            q[j + QK / 2] = ((x[b].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16;
        }
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc);
}

static void quantize_q5_1(const float *src, void *dst, int64_t n)
{
    block_q5_1 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK; j++) min = fminf(min, src[j]), max = fmaxf(max, src[j]);
        float d = (max - min) / 31, id = d ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        y[b].m = f32_to_f16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (int)((src[j] - min) * id + 0.5f), q1 = (int)((src[j + QK / 2] - min) * id + 0.5f);
            q0 = q0 > 31 ? 31 : q0, q1 = q1 > 31 ? 31 : q1;
            y[b].qs[j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + QK / 2);
        }
        for (int k = 0; k < 4; k++) y[b].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}
static void dequantize_q5_1(const void *src, float *dst, int64_t n)
{
    const block_q5_1 *x = src;
    for (int64_t b = 0; b < n / QK; b++, dst += QK) {
        float d = f16_to_f32(x[b].d), m = f16_to_f32(x[b].m);
        uint32_t qh = q5_high_bits(x[b].qh);
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = d * (float)((x[b].qs[j] & 15) | (int)((qh >> j) & 1) << 4) + m;
            dst[j + QK / 2] = d * (float)((x[b].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) + m;
        }
    }
}
static float vec_dot_q5_1(int64_t n, const void *w, const void *a)
{
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    lane_acc acc = {{0}};
    float mins = 0;
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++) {
        uint32_t qh = q5_high_bits(x[b].qh);
        for (int j = 0; j < QK / 2; j++) {
            q[j] = (x[b].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            q[j + QK / 2] = (x[b].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        }
        mins += f16_to_f32(x[b].m) * f16_to_f32(y[b].s);
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc) + mins;
}

/* ---- Q8_K (activations of the k-quants) and Q6_K --------------------------------------------- */

/* iscale = −127 / x_max with x_max the element of largest magnitude (its sign kept), q clamped
 * to 127 (the element x_max itself maps to −127), d = 1 / iscale; bsums are the per-16 sums. */
static void quantize_q8_K(const float *src, void *dst, int64_t n)
{
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(src[j]) > amax) amax = fabsf(src[j]), max = src[j];
        if (amax == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = round_even(iscale * src[j]);
            y[b].qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[g * 16 + j];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}
static void dequantize_q8_K(const void *src, float *dst, int64_t n)
{
    const block_q8_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++)
        for (int j = 0; j < QK_K; j++) dst[b * QK_K + j] = x[b].d * x[b].qs[j];
}

/* The 6-bit value of element i (0..255) of a Q6_K block, in [0,63], per the layout above. */
static inline int q6_K_value(const block_q6_K *x, int i)
{
    int half = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
    const uint8_t *ql = x->ql + 64 * half, *qh = x->qh + 32 * half;
    int low = quarter & 1 ? ql[l + 32] : ql[l];
    low = quarter >= 2 ? low >> 4 : low & 15;
    return low | ((qh[l] >> (2 * quarter)) & 3) << 4;
}

static void dequantize_q6_K(const void *src, float *dst, int64_t n)
{
    const block_q6_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        float d = f16_to_f32(x[b].d);
        for (int i = 0; i < QK_K; i++) dst[i] = d * x[b].scales[i / 16] * (q6_K_value(&x[b], i) - 32);
    }
}

/* Q6_K quantizer for the GGUF writer: a per-group scale from the group's largest magnitude,
 * the 16 group scales themselves quantized to signed bytes against the block's largest. */
static void quantize_q6_K(const float *src, void *dst, int64_t n)
{
    block_q6_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float gscale[16], max_scale = 0, max_abs_scale = 0;
        for (int g = 0; g < 16; g++) {
            float amax = 0, max = 0;
            for (int j = 0; j < 16; j++)
                if (fabsf(src[16 * g + j]) > amax) amax = fabsf(src[16 * g + j]), max = src[16 * g + j];
            gscale[g] = max / -32.0f;
            if (fabsf(gscale[g]) > max_abs_scale) max_abs_scale = fabsf(gscale[g]), max_scale = gscale[g];
        }
        memset(&y[b], 0, sizeof y[b]);
        if (max_abs_scale == 0) continue;
        float iscale = -128.0f / max_scale;
        y[b].d = f32_to_f16(1.0f / iscale);
        float d = f16_to_f32(y[b].d);
        for (int g = 0; g < 16; g++) {
            int s = round_even(iscale * gscale[g]);
            y[b].scales[g] = (int8_t)(s > 127 ? 127 : s < -128 ? -128 : s);
        }
        for (int i = 0; i < QK_K; i++) {
            float gd = d * y[b].scales[i / 16];
            int q = gd ? round_even(src[i] / gd) + 32 : 32;
            q = q < 0 ? 0 : q > 63 ? 63 : q;
            int half = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
            uint8_t *ql = y[b].ql + 64 * half, *qh = y[b].qh + 32 * half;
            uint8_t *lowp = quarter & 1 ? &ql[l + 32] : &ql[l];
            *lowp |= (uint8_t)(quarter >= 2 ? (q & 15) << 4 : (q & 15));
            qh[l] |= (uint8_t)((q >> 4) << (2 * quarter));
        }
    }
}

static float vec_dot_q6_K(int64_t n, const void *w, const void *a)
{
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sumi = 0;
        for (int g = 0; g < 16; g++) {
            int gs = 0;
            for (int j = 0; j < 16; j++) gs += (q6_K_value(&x[b], 16 * g + j) - 32) * y[b].qs[16 * g + j];
            sumi += x[b].scales[g] * gs;
        }
        s += f16_to_f32(x[b].d) * y[b].d * (float)sumi;
    }
    return s;
}

/* ---- The table ------------------------------------------------------------------------------ */

static const type_traits type_table[TYPE_COUNT] = {
    [TYPE_F32] = {"f32", 1, 4, TYPE_F32, dequantize_f32, quantize_f32, vec_dot_f32},
    [TYPE_F16] = {"f16", 1, 2, TYPE_F16, dequantize_f16, quantize_f16, vec_dot_f16},
    [TYPE_BF16] = {"bf16", 1, 2, TYPE_BF16, dequantize_bf16, quantize_bf16, vec_dot_bf16},
    [TYPE_Q4_0] = {"q4_0", QK, sizeof(block_q4_0), TYPE_Q8_0, dequantize_q4_0, quantize_q4_0, vec_dot_q4_0},
    [TYPE_Q4_1] = {"q4_1", QK, sizeof(block_q4_1), TYPE_Q8_1, dequantize_q4_1, quantize_q4_1, vec_dot_q4_1},
    [TYPE_Q5_0] = {"q5_0", QK, sizeof(block_q5_0), TYPE_Q8_0, dequantize_q5_0, quantize_q5_0, vec_dot_q5_0},
    [TYPE_Q5_1] = {"q5_1", QK, sizeof(block_q5_1), TYPE_Q8_1, dequantize_q5_1, quantize_q5_1, vec_dot_q5_1},
    [TYPE_Q8_0] = {"q8_0", QK, sizeof(block_q8_0), TYPE_Q8_0, dequantize_q8_0, quantize_q8_0, vec_dot_q8_0},
    [TYPE_Q8_1] = {"q8_1", QK, sizeof(block_q8_1), TYPE_Q8_1, NULL, quantize_q8_1, NULL},
    [TYPE_Q8_K] = {"q8_k", QK_K, sizeof(block_q8_K), TYPE_Q8_K, dequantize_q8_K, quantize_q8_K, NULL},
    [TYPE_Q6_K] = {"q6_k", QK_K, sizeof(block_q6_K), TYPE_Q8_K, dequantize_q6_K, quantize_q6_K, vec_dot_q6_K},
    /* Known to GGUF; geometry recorded so files parse and are refused by name, not garbled. */
    [TYPE_Q2_K] = {"q2_k", QK_K, 84, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_Q3_K] = {"q3_k", QK_K, 110, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_Q4_K] = {"q4_k", QK_K, 144, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_Q5_K] = {"q5_k", QK_K, 176, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_IQ2_XXS] = {"iq2_xxs", QK_K, 66, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_IQ2_XS] = {"iq2_xs", QK_K, 74, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_IQ3_XXS] = {"iq3_xxs", QK_K, 98, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_IQ1_S] = {"iq1_s", QK_K, 50, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_IQ4_NL] = {"iq4_nl", QK, 18, TYPE_Q8_0, NULL, NULL, NULL},
    [TYPE_IQ3_S] = {"iq3_s", QK_K, 110, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_IQ2_S] = {"iq2_s", QK_K, 82, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_IQ4_XS] = {"iq4_xs", QK_K, 136, TYPE_Q8_K, NULL, NULL, NULL},
    [TYPE_I8] = {"i8", 1, 1, TYPE_I8, NULL, NULL, NULL},
    [TYPE_I16] = {"i16", 1, 2, TYPE_I16, NULL, NULL, NULL},
    [TYPE_I32] = {"i32", 1, 4, TYPE_I32, NULL, NULL, NULL},
    [TYPE_I64] = {"i64", 1, 8, TYPE_I64, NULL, NULL, NULL},
    [TYPE_F64] = {"f64", 1, 8, TYPE_F64, NULL, NULL, NULL},
    [TYPE_IQ1_M] = {"iq1_m", QK_K, 56, TYPE_Q8_K, NULL, NULL, NULL},
};

/* The table row of a type id, or NULL for ids that are unknown (gaps 4, 5 and beyond). */
static const type_traits *type_info(int type)
{
    if (type < 0 || type >= TYPE_COUNT || !type_table[type].name) return NULL;
    return &type_table[type];
}

/* Can halda compute with weights of this type (dequantize and dot product)? */
static bool type_supported(int type)
{
    const type_traits *t = type_info(type);
    return t && t->dequantize && t->vec_dot;
}

/* Type id by name ("q4_0", "Q4_0" ...), or -1. */
static int type_by_name(const char *name)
{
    for (int i = 0; i < TYPE_COUNT; i++)
        if (type_table[i].name && !strcasecmp(type_table[i].name, name)) return i;
    return -1;
}

/* HALDA_SECTION_END kernels: the thread pool follows. */

/* =============================================================================================
 * 5. Thread pool
 *
 * Matrix products are split by output rows across a fixed set of threads created once per
 * context; no thread is created per call.  A job is published by bumping a generation counter;
 * workers spin on it briefly (a token's matrix products come microseconds apart, and sleeping
 * costs more than the work) and then sleep on a condition variable.  Each output element is
 * computed by exactly one thread in a fixed order, so results do not depend on the thread count.
 * ============================================================================================= */

#include <stdatomic.h>

typedef void (*pool_task_fn)(void *arg, int ith, int nth);

typedef struct thread_pool thread_pool;
typedef struct {
    thread_pool *pool;
    int ith; /* this worker's index, 1..n_threads-1 (the caller is 0) */
} pool_worker;

struct thread_pool {
    int n_threads;              /* including the calling thread */
    pthread_t threads[HALDA_MAX_THREADS];
    pool_worker workers[HALDA_MAX_THREADS];
    pthread_mutex_t mutex;
    pthread_cond_t wake;        /* signalled when a new job (or quit) is published */
    atomic_uint_fast64_t generation; /* bumped once per job */
    atomic_int pending;         /* workers still running the current job */
    atomic_bool quit;
    pool_task_fn fn;            /* the current job */
    void *arg;
};

static void *pool_worker_main(void *p)
{
    pool_worker *w = p;
    thread_pool *pool = w->pool;
    uint64_t seen = 0;
    for (;;) {
        /* Spin a little, then sleep until the generation moves. */
        int spins = 0;
        while (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
               !atomic_load(&pool->quit)) {
            if (++spins < 2000) continue;
            if (spins < 20000) { /* give the core away if someone else wants it */
                sched_yield();
                continue;
            }
            pthread_mutex_lock(&pool->mutex);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->quit))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->quit)) return NULL;
        seen = atomic_load(&pool->generation);
        pool->fn(pool->arg, w->ith, pool->n_threads);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
    }
}

/* Create a pool of n_threads (the caller counts as one).  Returns NULL on failure. */
static thread_pool *pool_new(int n_threads)
{
    if (n_threads < 1) n_threads = 1;
    if (n_threads > HALDA_MAX_THREADS) n_threads = HALDA_MAX_THREADS;
    thread_pool *pool = xcalloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    for (int i = 1; i < n_threads; i++) {
        pool->workers[i] = (pool_worker){pool, i};
        if (pthread_create(&pool->threads[i], NULL, pool_worker_main, &pool->workers[i]) != 0) {
            pool->n_threads = i; /* run with the threads we got */
            break;
        }
    }
    return pool;
}

static void pool_free(thread_pool *pool)
{
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->quit, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->wake);
    xfree(pool);
}

/* Run fn(arg, ith, nth) on every thread (ith = 0 on the caller) and wait for all of them. */
static void pool_run(thread_pool *pool, pool_task_fn fn, void *arg)
{
    if (!pool || pool->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store(&pool->pending, pool->n_threads - 1);
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    fn(arg, 0, pool->n_threads);
    for (int spins = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++)
        if (spins > 1000) sched_yield(); /* a worker was descheduled: let it run */
}

/* The slice [begin, end) of n items that thread ith of nth handles. */
static void pool_split(int64_t n, int ith, int nth, int64_t *begin, int64_t *end)
{
    int64_t per = (n + nth - 1) / nth;
    *begin = per * ith < n ? per * ith : n;
    *end = *begin + per < n ? *begin + per : n;
}

/* Dynamic split: threads take chunks of `chunk` items from a shared counter until none are
 * left.  A thread that was descheduled (another program wants the core) simply takes fewer
 * chunks instead of holding everyone up, and since every item is still computed whole by one
 * thread, results are the same for any thread count or timing. */
typedef struct {
    atomic_int_fast64_t next;
    int64_t n, chunk;
} work_counter;

static void work_counter_init(work_counter *w, int64_t n, int nth)
{
    atomic_store(&w->next, 0);
    w->n = n;
    w->chunk = n / ((int64_t)nth * 8);
    if (w->chunk < 1) w->chunk = 1;
}
/* The next [begin, end) to do; false when the work is exhausted. */
static bool work_counter_take(work_counter *w, int64_t *begin, int64_t *end)
{
    int64_t b = atomic_fetch_add(&w->next, w->chunk);
    if (b >= w->n) return false;
    *begin = b;
    *end = b + w->chunk < w->n ? b + w->chunk : w->n;
    return true;
}

/* Memory bandwidth, STREAM "copy" style: each thread copies its slice of a buffer far larger
 * than the caches; bytes moved = read + write.  Decode streams every weight once per token, so
 * this is the ceiling a memory-bound generation can approach. */
typedef struct {
    uint8_t *src, *dst;
    size_t bytes;
} membw_job;

static void membw_task(void *arg, int ith, int nth)
{
    const membw_job *j = arg;
    int64_t b, e;
    pool_split((int64_t)(j->bytes / 4096), ith, nth, &b, &e);
    memcpy(j->dst + b * 4096, j->src + b * 4096, (size_t)(e - b) * 4096);
}

/* Best-of-5 copy bandwidth in bytes per second over `bytes`-sized buffers, or 0 on failure. */
static double platform_copy_bandwidth(thread_pool *pool, size_t bytes)
{
    membw_job j = {xmalloc(bytes), xmalloc(bytes), bytes};
    double best = 0;
    if (j.src && j.dst) {
        memset(j.src, 1, bytes), memset(j.dst, 2, bytes); /* fault the pages in first */
        for (int r = 0; r < 5; r++) {
            double t0 = now_ms();
            pool_run(pool, membw_task, &j);
            double ms = now_ms() - t0;
            if (ms > 0 && 2.0 * (double)bytes / (ms / 1e3) > best) best = 2.0 * (double)bytes / (ms / 1e3);
        }
    }
    xfree(j.src), xfree(j.dst);
    return best;
}

/* =============================================================================================
 * 6. GGUF
 *
 * A GGUF file is: the magic "GGUF", a version (2 or 3), the tensor count and key-value count,
 * the key-value metadata, a table of tensor descriptions (name, dimensions, type, offset), then
 * padding to `general.alignment` (default 32) and the tensor data.  All integers are
 * little-endian; strings are a u64 length followed by that many bytes (no terminator).
 *
 * TRUST BOUNDARY: these bytes are untrusted.  Every length, count, offset, dimension and type
 * read here is checked against the bytes that remain before it is used, and every product of
 * sizes goes through the overflow-checked helpers.  A bad file gets a one-line reason; nothing
 * outside [0, file size) is ever read.  The tensor data itself stays in the mapping.
 * ============================================================================================= */

enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
    GGUF_TYPE_COUNT = 13
};
static const int gguf_scalar_size[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const gguf_type_name[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 256        /* longest tensor name or key we accept */
#define GGUF_MAX_ARRAY_DEPTH 8   /* arrays of arrays of ... */
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    const char *key;      /* NUL-terminated copy */
    int type;             /* GGUF_* */
    const uint8_t *value; /* the value's bytes in the mapping (for arrays: after type and count) */
    int arr_type;         /* element type when type == GGUF_ARRAY */
    uint64_t arr_n;       /* element count when type == GGUF_ARRAY */
} gguf_kv;

typedef struct {
    const char *name;        /* NUL-terminated copy */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length (contiguous), unused dims are 1 */
    int type;                /* TYPE_* */
    uint64_t offset;         /* from the start of the data section */
    uint64_t bytes;
    const uint8_t *data;     /* in the mapping */
} gguf_tensor;

typedef struct {
    file_map map;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    char *strings;           /* one allocation holding every key and tensor name */
    uint64_t alignment;
    uint64_t data_offset;    /* where tensor data starts in the file */
} gguf_file;

/* A read cursor over the mapping that refuses to move past the end. */
typedef struct {
    const uint8_t *p, *end;
    herr *e;
    bool bad;
    const uint8_t *base; /* start of the file, for offsets in messages */
} gguf_cursor;

static bool cursor_need(gguf_cursor *c, uint64_t n, const char *what)
{
    if (c->bad) return false;
    if ((uint64_t)(c->end - c->p) < n) {
        herr_set(c->e, "truncated file: %s needs %" PRIu64 " bytes at offset %" PRIu64 ", %" PRIu64 " remain", what,
                 n, (uint64_t)(c->p - c->base), (uint64_t)(c->end - c->p));
        c->bad = true;
        return false;
    }
    return true;
}
static uint64_t read_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint32_t cursor_u32(gguf_cursor *c, const char *what)
{
    if (!cursor_need(c, 4, what)) return 0;
    uint32_t v = (uint32_t)read_le(c->p, 4);
    c->p += 4;
    return v;
}
static uint64_t cursor_u64(gguf_cursor *c, const char *what)
{
    if (!cursor_need(c, 8, what)) return 0;
    uint64_t v = read_le(c->p, 8);
    c->p += 8;
    return v;
}
/* A string: returns its bytes in the mapping and its length. */
static const uint8_t *cursor_str(gguf_cursor *c, uint64_t *len, const char *what)
{
    *len = cursor_u64(c, what);
    if (!cursor_need(c, *len, what)) return NULL;
    const uint8_t *s = c->p;
    c->p += *len;
    return s;
}

/* Skip one value of `type`, checking that it lies inside the file; arrays recurse (bounded). */
static bool gguf_skip_value(gguf_cursor *c, int type, int depth)
{
    if (type < 0 || type >= GGUF_TYPE_COUNT) {
        herr_set(c->e, "unknown metadata value type %d", type);
        return c->bad = true, false;
    }
    if (type == GGUF_STRING) {
        uint64_t len;
        return cursor_str(c, &len, "string value") != NULL || !c->bad;
    }
    if (type != GGUF_ARRAY) return cursor_need(c, (uint64_t)gguf_scalar_size[type], "value") && (c->p += gguf_scalar_size[type], true);
    if (depth >= GGUF_MAX_ARRAY_DEPTH) {
        herr_set(c->e, "metadata arrays nested deeper than %d", GGUF_MAX_ARRAY_DEPTH);
        return c->bad = true, false;
    }
    int elem = (int)cursor_u32(c, "array type");
    uint64_t n = cursor_u64(c, "array length");
    if (c->bad) return false;
    if (elem < 0 || elem >= GGUF_TYPE_COUNT) {
        herr_set(c->e, "unknown array element type %d", elem);
        return c->bad = true, false;
    }
    if (elem != GGUF_STRING && elem != GGUF_ARRAY) {
        uint64_t bytes;
        if (!mul_u64(n, (uint64_t)gguf_scalar_size[elem], &bytes) || !cursor_need(c, bytes, "array data")) {
            if (!c->bad) herr_set(c->e, "array of %" PRIu64 " elements overflows", n);
            return c->bad = true, false;
        }
        c->p += bytes;
        return true;
    }
    /* each string or nested array takes at least 8 bytes: a cheap check against huge counts */
    if (n > (uint64_t)(c->end - c->p) / 8) {
        herr_set(c->e, "array claims %" PRIu64 " elements but the file is too short", n);
        return c->bad = true, false;
    }
    for (uint64_t i = 0; i < n; i++)
        if (!gguf_skip_value(c, elem, depth + 1)) return false;
    return true;
}

static void gguf_close(gguf_file *f)
{
    xfree(f->kv);
    xfree(f->tensors);
    xfree(f->strings);
    file_map_close(&f->map);
    memset(f, 0, sizeof *f);
}

/* Parse an already mapped GGUF image (used directly by the fuzzer).  On failure the reason is
 * in e and f holds nothing to free beyond gguf_close. */
static int gguf_parse(gguf_file *f, herr *e)
{
    gguf_cursor c = {f->map.data, f->map.data + f->map.size, e, false, f->map.data};
    if (f->map.size < 4 || memcmp(c.p, "GGUF", 4) != 0) {
        herr_set(e, "not a GGUF file (bad magic)");
        return -1;
    }
    c.p += 4;
    f->version = cursor_u32(&c, "version");
    if (c.bad) return -1;
    if (f->version == 1) {
        herr_set(e, "GGUF version 1 is not supported (convert the file again with a recent llama.cpp)");
        return -1;
    }
    if (f->version != 2 && f->version != 3) {
        herr_set(e, "unknown GGUF version %u", f->version);
        return -1;
    }
    f->n_tensors = cursor_u64(&c, "tensor count");
    f->n_kv = cursor_u64(&c, "metadata count");
    if (c.bad) return -1;
    /* every key-value takes >= 12 bytes, every tensor description >= 24 */
    uint64_t left = (uint64_t)(c.end - c.p);
    if (f->n_kv > left / 12 || f->n_tensors > left / 24) {
        herr_set(e, "header claims %" PRIu64 " metadata entries and %" PRIu64 " tensors, more than the file holds", f->n_kv,
                 f->n_tensors);
        return -1;
    }
    /* Pass 1: walk the metadata and tensor table to size the string arena. */
    const uint8_t *kv_start = c.p;
    uint64_t str_bytes = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        uint64_t klen;
        if (!cursor_str(&c, &klen, "metadata key") && c.bad) return -1;
        if (klen == 0 || klen > GGUF_MAX_NAME) {
            herr_set(e, "metadata key %" PRIu64 " has length %" PRIu64 " (1..%d allowed)", i, klen, GGUF_MAX_NAME);
            return -1;
        }
        str_bytes += klen + 1;
        int type = (int)cursor_u32(&c, "metadata type");
        if (c.bad || !gguf_skip_value(&c, type, 0)) return -1;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        uint64_t nlen;
        if (!cursor_str(&c, &nlen, "tensor name") && c.bad) return -1;
        if (nlen == 0 || nlen > GGUF_MAX_NAME) {
            herr_set(e, "tensor %" PRIu64 " has a name of length %" PRIu64 " (1..%d allowed)", i, nlen, GGUF_MAX_NAME);
            return -1;
        }
        str_bytes += nlen + 1;
        uint32_t n_dims = cursor_u32(&c, "tensor dimension count");
        if (c.bad) return -1;
        if (n_dims == 0 || n_dims > GGUF_MAX_DIMS) {
            herr_set(e, "tensor %" PRIu64 " has %u dimensions (1..%d allowed)", i, n_dims, GGUF_MAX_DIMS);
            return -1;
        }
        if (!cursor_need(&c, 8ull * n_dims + 4 + 8, "tensor description")) return -1;
        c.p += 8ull * n_dims + 4 + 8;
    }
    /* Pass 2: fill the tables. */
    f->kv = xcalloc((size_t)f->n_kv, sizeof *f->kv);
    f->tensors = xcalloc((size_t)f->n_tensors, sizeof *f->tensors);
    f->strings = xmalloc((size_t)str_bytes);
    if (!f->kv || !f->tensors || !f->strings) {
        herr_set(e, "out of memory reading the GGUF header");
        return -1;
    }
    char *sp = f->strings;
    c.p = kv_start;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint64_t klen;
        const uint8_t *k = cursor_str(&c, &klen, "metadata key");
        memcpy(sp, k, klen);
        sp[klen] = 0;
        if (strlen(sp) != klen) {
            herr_set(e, "metadata key %" PRIu64 " contains a NUL byte", i);
            return -1;
        }
        kv->key = sp;
        sp += klen + 1;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(f->kv[j].key, kv->key)) {
                herr_set(e, "duplicate metadata key '%s'", kv->key);
                return -1;
            }
        kv->type = (int)cursor_u32(&c, "metadata type");
        kv->value = c.p;
        if (kv->type == GGUF_ARRAY) {
            kv->arr_type = (int)read_le(c.p, 4);
            kv->arr_n = read_le(c.p + 4, 8);
            kv->value = c.p + 12;
        }
        gguf_skip_value(&c, kv->type, 0); /* validated in pass 1 */
        if (!strcmp(kv->key, "general.alignment")) {
            if (kv->type != GGUF_U32 && kv->type != GGUF_U64 && kv->type != GGUF_I32) {
                herr_set(e, "general.alignment has type %s, expected an integer", gguf_type_name[kv->type]);
                return -1;
            }
            uint64_t a = read_le(kv->value, gguf_scalar_size[kv->type]);
            if (a == 0 || (a & (a - 1)) || a > (1u << 20)) {
                herr_set(e, "general.alignment is %" PRIu64 ", not a power of two up to 1 MiB", a);
                return -1;
            }
            f->alignment = a;
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t nlen;
        const uint8_t *nm = cursor_str(&c, &nlen, "tensor name");
        memcpy(sp, nm, nlen);
        sp[nlen] = 0;
        if (strlen(sp) != nlen) {
            herr_set(e, "tensor %" PRIu64 " name contains a NUL byte", i);
            return -1;
        }
        t->name = sp;
        sp += nlen + 1;
        t->n_dims = (int)cursor_u32(&c, "tensor dimension count");
        uint64_t n_elems = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (int d = 0; d < t->n_dims; d++) {
            uint64_t ne = cursor_u64(&c, "tensor dimension");
            if (ne == 0 || ne > (1ull << 40) || !mul_u64(n_elems, ne, &n_elems) || n_elems > (1ull << 46)) {
                herr_set(e, "tensor '%s' has an impossible shape (dimension %d is %" PRIu64 ")", t->name, d, ne);
                return -1;
            }
            t->ne[d] = (int64_t)ne;
        }
        t->type = (int)cursor_u32(&c, "tensor type");
        t->offset = cursor_u64(&c, "tensor offset");
        const type_traits *tt = type_info(t->type);
        if (!tt) {
            herr_set(e, "tensor '%s' has unknown type id %d", t->name, t->type);
            return -1;
        }
        if (t->ne[0] % tt->block_elems != 0) {
            herr_set(e, "tensor '%s': row length %" PRId64 " is not a multiple of the %s block size %d", t->name,
                     t->ne[0], tt->name, tt->block_elems);
            return -1;
        }
        t->bytes = n_elems / (uint64_t)tt->block_elems * (uint64_t)tt->block_bytes;
        if (t->offset % f->alignment != 0) {
            herr_set(e, "tensor '%s' data offset %" PRIu64 " is not aligned to %" PRIu64, t->name, t->offset, f->alignment);
            return -1;
        }
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(f->tensors[j].name, t->name)) {
                herr_set(e, "duplicate tensor name '%s'", t->name);
                return -1;
            }
    }
    /* The data section starts at the next multiple of the alignment. */
    uint64_t header_end = (uint64_t)(c.p - f->map.data);
    f->data_offset = (header_end + f->alignment - 1) / f->alignment * f->alignment;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t start, end;
        if (!add_u64(f->data_offset, t->offset, &start) || !add_u64(start, t->bytes, &end) || end > f->map.size) {
            herr_set(e, "tensor '%s' (%" PRIu64 " bytes at data offset %" PRIu64 ") extends past the end of the file (%" PRIu64 " bytes)",
                     t->name, t->bytes, t->offset, f->map.size);
            return -1;
        }
        t->data = f->map.data + start;
    }
    return 0;
}

/* Map and parse a GGUF file. */
static int gguf_open(gguf_file *f, const char *path, herr *e)
{
    memset(f, 0, sizeof *f);
    if (file_map_open(&f->map, path, e) != 0) return -1;
    if (gguf_parse(f, e) != 0) {
        char reason[sizeof e->msg];
        snprintf(reason, sizeof reason, "%s", e->msg);
        herr_set(e, "%s: %s", path, reason);
        gguf_close(f);
        return -1;
    }
    return 0;
}

/* ---- Metadata access ------------------------------------------------------------------------ */

static const gguf_kv *gguf_find(const gguf_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (!strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

static const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* An integer value of any integer type, or bool.  Returns false if absent or not an integer. */
static bool gguf_get_int(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return false;
    const uint8_t *p = kv->value;
    switch (kv->type) {
    case GGUF_U8: case GGUF_BOOL: *out = p[0]; return true;
    case GGUF_I8: *out = (int8_t)p[0]; return true;
    case GGUF_U16: *out = (uint16_t)read_le(p, 2); return true;
    case GGUF_I16: *out = (int16_t)read_le(p, 2); return true;
    case GGUF_U32: *out = (uint32_t)read_le(p, 4); return true;
    case GGUF_I32: *out = (int32_t)read_le(p, 4); return true;
    case GGUF_U64: {
        uint64_t v = read_le(p, 8);
        *out = v > INT64_MAX ? INT64_MAX : (int64_t)v;
        return true;
    }
    case GGUF_I64: *out = (int64_t)read_le(p, 8); return true;
    default: return false;
    }
}

static bool gguf_get_float(const gguf_file *f, const char *key, double *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return false;
    if (kv->type == GGUF_F32) {
        *out = f32_from_bits((uint32_t)read_le(kv->value, 4));
        return true;
    }
    if (kv->type == GGUF_F64) {
        uint64_t u = read_le(kv->value, 8);
        double d;
        memcpy(&d, &u, 8);
        *out = d;
        return true;
    }
    int64_t i;
    if (gguf_get_int(f, key, &i)) {
        *out = (double)i;
        return true;
    }
    return false;
}

/* A string value: pointer into the mapping (not NUL-terminated) and its length. */
static const char *gguf_get_str(const gguf_file *f, const char *key, uint64_t *len)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_STRING) return NULL;
    *len = read_le(kv->value, 8);
    return (const char *)kv->value + 8;
}

/* HALDA_SECTION_END gguf-reader */

/* ---- Writing GGUF --------------------------------------------------------------------------- *
 * A small writer for the synthetic models of tests, benchmarks and `make demo`: metadata is
 * serialised into a growing buffer as it is added, tensors are quantized into owned buffers,
 * and gguf_writer_save lays out header, metadata, tensor table, padding and data. */

typedef struct {
    char name[GGUF_MAX_NAME + 1];
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    int type;
    uint8_t *data; /* owned, `bytes` long */
    uint64_t bytes;
} gguf_writer_tensor;

typedef struct {
    uint8_t *kv;   /* serialised metadata */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    gguf_writer_tensor *tensors;
    uint64_t n_tensors, cap_tensors;
    bool oom;      /* an allocation failed: save refuses */
} gguf_writer;

static void gw_bytes(gguf_writer *w, const void *p, size_t n)
{
    if (w->oom) return;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap * 2 : 4096;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *nk = realloc(w->kv, cap);
        if (!nk) {
            w->oom = true;
            return;
        }
        w->kv = nk, w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}
static void gw_le(gguf_writer *w, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
    gw_bytes(w, b, (size_t)n);
}
static void gw_str(gguf_writer *w, const char *s)
{
    gw_le(w, strlen(s), 8);
    gw_bytes(w, s, strlen(s));
}
static void gw_key(gguf_writer *w, const char *key, int type)
{
    gw_str(w, key);
    gw_le(w, (uint64_t)type, 4);
    w->n_kv++;
}
static void gguf_writer_u32(gguf_writer *w, const char *key, uint32_t v) { gw_key(w, key, GGUF_U32), gw_le(w, v, 4); }
static void gguf_writer_bool(gguf_writer *w, const char *key, bool v) { gw_key(w, key, GGUF_BOOL), gw_le(w, v, 1); }
static void gguf_writer_f32(gguf_writer *w, const char *key, float v) { gw_key(w, key, GGUF_F32), gw_le(w, f32_bits(v), 4); }
static void gguf_writer_str(gguf_writer *w, const char *key, const char *v) { gw_key(w, key, GGUF_STRING), gw_str(w, v); }
static void gguf_writer_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    gw_key(w, key, GGUF_ARRAY);
    gw_le(w, GGUF_STRING, 4);
    gw_le(w, n, 8);
    for (uint64_t i = 0; i < n; i++) gw_str(w, v[i]);
}
static void gguf_writer_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n)
{
    gw_key(w, key, GGUF_ARRAY);
    gw_le(w, GGUF_F32, 4);
    gw_le(w, n, 8);
    for (uint64_t i = 0; i < n; i++) gw_le(w, f32_bits(v[i]), 4);
}
static void gguf_writer_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
    gw_key(w, key, GGUF_ARRAY);
    gw_le(w, GGUF_I32, 4);
    gw_le(w, n, 8);
    for (uint64_t i = 0; i < n; i++) gw_le(w, (uint32_t)v[i], 4);
}

/* Add a tensor from F32 values (ne[0] is the row length), stored as `type`. */
static int gguf_writer_tensor_f32(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                                  const float *values, herr *e)
{
    const type_traits *tt = type_info(type);
    if (!tt || !tt->quantize) {
        herr_set(e, "cannot write tensors of type %s", tt ? tt->name : "?");
        return -1;
    }
    if (ne[0] % tt->block_elems) {
        herr_set(e, "tensor %s: row length %" PRId64 " is not a multiple of %d", name, ne[0], tt->block_elems);
        return -1;
    }
    if (w->n_tensors == w->cap_tensors) {
        uint64_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        gguf_writer_tensor *nt = realloc(w->tensors, cap * sizeof *nt);
        if (!nt) return herr_set(e, "out of memory"), -1;
        w->tensors = nt, w->cap_tensors = cap;
    }
    gguf_writer_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    int64_t rows = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    for (int d = 1; d < n_dims; d++) rows *= ne[d];
    t->type = type;
    size_t row_bytes = type_row_bytes(type, ne[0]);
    t->bytes = (uint64_t)row_bytes * (uint64_t)rows;
    t->data = xmalloc((size_t)t->bytes);
    if (!t->data) return herr_set(e, "out of memory for tensor %s", name), -1;
    for (int64_t r = 0; r < rows; r++) tt->quantize(values + r * ne[0], t->data + r * row_bytes, ne[0]);
    w->n_tensors++;
    return 0;
}

static void gguf_writer_free(gguf_writer *w)
{
    for (uint64_t i = 0; i < w->n_tensors; i++) xfree(w->tensors[i].data);
    xfree(w->tensors);
    xfree(w->kv);
    memset(w, 0, sizeof *w);
}

static int gguf_writer_save(gguf_writer *w, const char *path, herr *e)
{
    const uint64_t align = GGUF_DEFAULT_ALIGNMENT;
    if (w->oom) return herr_set(e, "out of memory building %s", path), -1;
    FILE *f = fopen(path, "wb");
    if (!f) return herr_set(e, "cannot create %s: %s", path, strerror(errno)), -1;
    gguf_writer hdr = {0}; /* header and tensor table, built with the same helpers */
    gw_bytes(&hdr, "GGUF", 4);
    gw_le(&hdr, 3, 4);
    gw_le(&hdr, w->n_tensors, 8);
    gw_le(&hdr, w->n_kv, 8);
    gw_bytes(&hdr, w->kv, w->kv_len);
    uint64_t offset = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        gguf_writer_tensor *t = &w->tensors[i];
        gw_str(&hdr, t->name);
        gw_le(&hdr, (uint64_t)t->n_dims, 4);
        for (int d = 0; d < t->n_dims; d++) gw_le(&hdr, (uint64_t)t->ne[d], 8);
        gw_le(&hdr, (uint64_t)t->type, 4);
        gw_le(&hdr, offset, 8);
        offset = (offset + t->bytes + align - 1) / align * align;
    }
    static const uint8_t zeros[64];
    bool ok = !hdr.oom && fwrite(hdr.kv, 1, hdr.kv_len, f) == hdr.kv_len;
    size_t pad = (size_t)((align - hdr.kv_len % align) % align);
    ok = ok && fwrite(zeros, 1, pad, f) == pad;
    for (uint64_t i = 0; ok && i < w->n_tensors; i++) {
        gguf_writer_tensor *t = &w->tensors[i];
        ok = fwrite(t->data, 1, (size_t)t->bytes, f) == t->bytes;
        pad = (size_t)((align - t->bytes % align) % align);
        ok = ok && fwrite(zeros, 1, pad, f) == pad;
    }
    xfree(hdr.kv);
    if (fclose(f) != 0) ok = false;
    if (!ok) return herr_set(e, "error writing %s", path), -1;
    return 0;
}

/* =============================================================================================
 * 7. Model & forward pass
 *
 * The transformer, written out for the llama and qwen2 families.  One layer is
 *
 *     h   = x + Wo · attention(RoPE(Wq·norm(x) [+bq]), RoPE(Wk·norm(x) [+bk]), Wv·norm(x) [+bv])
 *     out = h + Wdown · (silu(Wgate·norm(h)) ⊙ (Wup·norm(h)))
 *
 * with RMSNorm `norm(x) = x / sqrt(mean(x²) + eps) ⊙ w`, grouped-query attention (n_head query
 * heads share n_head_kv key/value heads), and the q/k/v biases only in qwen2.
 *
 * Everything above this line was about bytes; here the seams of the design live:
 *   embed(tokens) -> x;  forward_window(x, n_tok, pos[], seq[], layer_begin, layer_end) -> x;
 *   output(x) -> logits.
 * A single device runs embed -> forward_window(0, L) -> output; a ring device runs only its
 * window on the activations that arrive.  x is n_tok × n_embd F32, row i at position pos[i] of
 * sequence seq[i].  The KV cache covers the layers of the window and is indexed by
 * (layer, sequence slot, position).
 * ============================================================================================= */

enum { ARCH_LLAMA, ARCH_QWEN2 };

typedef struct {
    int arch;
    int n_vocab;
    int n_ctx_train;
    int n_embd;     /* width of the residual stream */
    int n_layer;
    int n_ff;       /* hidden width of the feed-forward block */
    int n_head;     /* query heads */
    int n_head_kv;  /* key/value heads (GQA: n_head is a multiple) */
    int head_dim;   /* width of one head */
    int n_rot;      /* leading dimensions of each head that RoPE rotates */
    float rms_eps;
    float rope_base;       /* theta base, 10000 for Llama 2, 500000 for Llama 3, 1e6 for Qwen */
    float rope_freq_scale; /* linear rope scaling: positions are multiplied by this */
    bool rope_neox;        /* rotate (i, i + n_rot/2) pairs instead of (2i, 2i+1) */
} model_hparams;

/* A weight tensor: its bytes stay in the file mapping. */
typedef struct {
    const void *data; /* NULL when the tensor is absent (optional tensors) */
    int type;
    int64_t ne[2];    /* ne[0] = row length (input width), ne[1] = rows (output width) */
    size_t row_bytes;
    const char *name;
} tensor;

typedef struct {
    tensor attn_norm, wq, wk, wv, wo, bq, bk, bv; /* norms and biases are F32 vectors */
    tensor ffn_norm, w_gate, w_up, w_down;
    uint64_t file_begin, file_end; /* byte extent of this layer's tensors in the file */
} layer_weights;

typedef struct tok_vocab tok_vocab; /* section 8 */

struct halda_model {
    gguf_file file;
    model_hparams hp;
    tensor tok_embd;    /* n_vocab rows of n_embd */
    tensor output_norm; /* F32 [n_embd] */
    tensor output;      /* n_vocab rows of n_embd; == tok_embd when the embeddings are tied */
    const float *rope_freqs; /* per-frequency divisors (Llama 3.1 scaling) or NULL */
    layer_weights *layers;
    tok_vocab *vocab;
    uint64_t weight_bytes;
};

static tok_vocab *tok_vocab_load(const gguf_file *f, herr *e);
static void tok_vocab_free(tok_vocab *v);

/* Look up a tensor and check its shape and type.  rows == 0 means a 1-D tensor of length cols. */
static int model_tensor(halda_model *m, tensor *t, const char *name, int64_t cols, int64_t rows, bool required,
                        herr *e)
{
    memset(t, 0, sizeof *t);
    const gguf_tensor *g = gguf_find_tensor(&m->file, name);
    if (!g) {
        if (required) herr_set(e, "tensor '%s' is missing", name);
        return required ? -1 : 0;
    }
    int64_t want_rows = rows ? rows : 1;
    if (g->ne[0] != cols || g->ne[1] != want_rows || g->ne[2] != 1 || g->ne[3] != 1) {
        herr_set(e, "tensor '%s' has shape [%" PRId64 ", %" PRId64 "], expected [%" PRId64 ", %" PRId64 "]", name, g->ne[0],
                 g->ne[1], cols, want_rows);
        return -1;
    }
    if (rows == 0 && g->type != TYPE_F32) {
        herr_set(e, "tensor '%s' has type %s; norm and bias vectors must be f32", name, type_info(g->type)->name);
        return -1;
    }
    if (!type_supported(g->type)) {
        herr_set(e, "tensor '%s' has type %s, which halda does not support yet", name, type_info(g->type)->name);
        return -1;
    }
    t->data = g->data;
    t->type = g->type;
    t->ne[0] = cols;
    t->ne[1] = want_rows;
    t->row_bytes = type_row_bytes(g->type, cols);
    t->name = g->name;
    return 0;
}

/* Read one hyper-parameter "<arch>.<key>" as an integer in [lo, hi]. */
static int hp_int(const gguf_file *f, const char *arch, const char *key, int64_t lo, int64_t hi, int64_t dflt,
                  bool required, int *out, herr *e)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v;
    if (!gguf_get_int(f, full, &v)) {
        const gguf_kv *kv = gguf_find(f, full);
        if (kv) return herr_set(e, "metadata %s has type %s, expected an integer", full, gguf_type_name[kv->type]), -1;
        if (required) return herr_set(e, "metadata %s is missing", full), -1;
        v = dflt;
    }
    if (v < lo || v > hi) return herr_set(e, "metadata %s = %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]", full, v, lo, hi), -1;
    *out = (int)v;
    return 0;
}
static int hp_float(const gguf_file *f, const char *arch, const char *key, double lo, double hi, double dflt,
                    float *out, herr *e)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    double v;
    if (!gguf_get_float(f, full, &v)) v = dflt;
    if (!(v >= lo && v <= hi)) return herr_set(e, "metadata %s = %g is out of range [%g, %g]", full, v, lo, hi), -1;
    *out = (float)v;
    return 0;
}

static int model_read_hparams(halda_model *m, herr *e)
{
    const gguf_file *f = &m->file;
    model_hparams *hp = &m->hp;
    uint64_t len;
    const char *arch = gguf_get_str(f, "general.architecture", &len);
    if (!arch) return herr_set(e, "metadata general.architecture is missing"), -1;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), arch);
    if (!strcmp(name, "llama")) hp->arch = ARCH_LLAMA;
    else if (!strcmp(name, "qwen2")) hp->arch = ARCH_QWEN2;
    else return herr_set(e, "architecture '%s' is not supported (halda runs llama and qwen2)", name), -1;
    const int big = 1 << 20;
    if (hp_int(f, name, "embedding_length", 1, big, 0, true, &hp->n_embd, e) ||
        hp_int(f, name, "block_count", 1, 4096, 0, true, &hp->n_layer, e) ||
        hp_int(f, name, "feed_forward_length", 1, big, 0, true, &hp->n_ff, e) ||
        hp_int(f, name, "attention.head_count", 1, 4096, 0, true, &hp->n_head, e) ||
        hp_int(f, name, "attention.head_count_kv", 1, 4096, hp->n_head, false, &hp->n_head_kv, e) ||
        hp_int(f, name, "context_length", 1, 1 << 24, 4096, false, &hp->n_ctx_train, e))
        return -1;
    if (hp->n_head % hp->n_head_kv) return herr_set(e, "head_count %d is not a multiple of head_count_kv %d", hp->n_head, hp->n_head_kv), -1;
    if (hp_int(f, name, "attention.key_length", 1, 65536, hp->n_embd / hp->n_head, false, &hp->head_dim, e) ||
        hp_int(f, name, "rope.dimension_count", 2, hp->head_dim, hp->head_dim, false, &hp->n_rot, e))
        return -1;
    if (hp->head_dim % 2 || hp->n_rot % 2) return herr_set(e, "head dimension %d and rope dimension %d must be even", hp->head_dim, hp->n_rot), -1;
    if (hp_float(f, name, "attention.layer_norm_rms_epsilon", 0, 1, 1e-5, &hp->rms_eps, e) ||
        hp_float(f, name, "rope.freq_base", 1, 1e12, 10000, &hp->rope_base, e))
        return -1;
    hp->rope_freq_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", name);
    const char *stype = gguf_get_str(f, key, &len);
    if (stype && !(len == 4 && !memcmp(stype, "none", 4))) {
        float factor = 1;
        if (hp_float(f, name, "rope.scaling.factor", 1e-6, 1e6, 1, &factor, e)) return -1;
        if (len == 6 && !memcmp(stype, "linear", 6)) hp->rope_freq_scale = 1.0f / factor;
        else if (!(len == 6 && !memcmp(stype, "llama3", 6)) && factor != 1.0f)
            return herr_set(e, "rope scaling type '%.*s' is not supported", (int)(len < 32 ? len : 32), stype), -1;
    }
    hp->rope_neox = hp->arch == ARCH_QWEN2;
    return 0;
}

/* Find and check every tensor; record each layer's byte extent in the file. */
static int model_bind_tensors(halda_model *m, herr *e)
{
    model_hparams *hp = &m->hp;
    const gguf_tensor *te = gguf_find_tensor(&m->file, "token_embd.weight");
    if (!te) return herr_set(e, "tensor 'token_embd.weight' is missing"), -1;
    hp->n_vocab = (int)te->ne[1];
    if (te->ne[1] < 1 || te->ne[1] > (1 << 24)) return herr_set(e, "vocabulary of %" PRId64 " tokens is out of range", te->ne[1]), -1;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    if (model_tensor(m, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, true, e) ||
        model_tensor(m, &m->output_norm, "output_norm.weight", hp->n_embd, 0, true, e) ||
        model_tensor(m, &m->output, "output.weight", hp->n_embd, hp->n_vocab, false, e))
        return -1;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    tensor rf;
    if (model_tensor(m, &rf, "rope_freqs.weight", hp->n_rot / 2, 0, false, e)) return -1;
    m->rope_freqs = rf.data;
    m->layers = xcalloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return herr_set(e, "out of memory"), -1;
    m->weight_bytes = 0;
    for (uint64_t i = 0; i < m->file.n_tensors; i++) m->weight_bytes += m->file.tensors[i].bytes;
    for (int l = 0; l < hp->n_layer; l++) {
        layer_weights *L = &m->layers[l];
        char n[96];
        bool bias = hp->arch == ARCH_QWEN2;
#define T(field, suffix, cols, rows, req) (snprintf(n, sizeof n, "blk.%d.%s", l, suffix), model_tensor(m, &L->field, n, cols, rows, req, e))
        if (T(attn_norm, "attn_norm.weight", hp->n_embd, 0, true) || T(wq, "attn_q.weight", hp->n_embd, q_dim, true) ||
            T(wk, "attn_k.weight", hp->n_embd, kv_dim, true) || T(wv, "attn_v.weight", hp->n_embd, kv_dim, true) ||
            T(wo, "attn_output.weight", q_dim, hp->n_embd, true) || T(bq, "attn_q.bias", q_dim, 0, bias) ||
            T(bk, "attn_k.bias", kv_dim, 0, bias) || T(bv, "attn_v.bias", kv_dim, 0, bias) ||
            T(ffn_norm, "ffn_norm.weight", hp->n_embd, 0, true) || T(w_gate, "ffn_gate.weight", hp->n_embd, hp->n_ff, true) ||
            T(w_up, "ffn_up.weight", hp->n_embd, hp->n_ff, true) || T(w_down, "ffn_down.weight", hp->n_ff, hp->n_embd, true))
            return -1;
#undef T
        /* the layer's extent: the span of every tensor named blk.<l>.* */
        char prefix[32];
        int plen = snprintf(prefix, sizeof prefix, "blk.%d.", l);
        L->file_begin = UINT64_MAX;
        for (uint64_t i = 0; i < m->file.n_tensors; i++) {
            const gguf_tensor *g = &m->file.tensors[i];
            if (strncmp(g->name, prefix, (size_t)plen)) continue;
            uint64_t b = (uint64_t)(g->data - m->file.map.data);
            if (b < L->file_begin) L->file_begin = b;
            if (b + g->bytes > L->file_end) L->file_end = b + g->bytes;
        }
    }
    return 0;
}

halda_model *halda_model_load(const char *path, char *err, size_t err_len)
{
    herr e = {{0}};
    halda_model *m = xcalloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (gguf_open(&m->file, path, &e) != 0) goto fail;
    if (model_read_hparams(m, &e) || model_bind_tensors(m, &e)) goto fail_named;
    if (!(m->vocab = tok_vocab_load(&m->file, &e))) goto fail_named;
    return m;
fail_named: {
    char reason[sizeof e.msg];
    snprintf(reason, sizeof reason, "%s", e.msg);
    herr_set(&e, "%s: %s", path, reason);
}
fail:
    if (err && err_len) snprintf(err, err_len, "%s", e.msg);
    halda_model_free(m);
    return NULL;
}

void halda_model_free(halda_model *m)
{
    if (!m) return;
    tok_vocab_free(m->vocab);
    xfree(m->layers);
    gguf_close(&m->file);
    xfree(m);
}

int halda_model_n_layer(const halda_model *m) { return m->hp.n_layer; }
int halda_model_n_embd(const halda_model *m) { return m->hp.n_embd; }
int halda_model_n_vocab(const halda_model *m) { return m->hp.n_vocab; }
int halda_model_n_ctx_train(const halda_model *m) { return m->hp.n_ctx_train; }
uint64_t halda_model_size_bytes(const halda_model *m) { return m->weight_bytes; }
const char *halda_model_arch(const halda_model *m) { return m->hp.arch == ARCH_QWEN2 ? "qwen2" : "llama"; }

/* ---- KV cache ------------------------------------------------------------------------------- *
 * For layers [layer_begin, layer_end), n_seq sequence slots and n_ctx positions, the keys and
 * values of every kv head, F32 or F16.  Layout of each: [layer][seq][pos][kv_dim], so one
 * head's keys for consecutive positions are kv_dim elements apart. */

typedef struct {
    int layer_begin, layer_end, n_seq, n_ctx, kv_dim;
    int type;        /* HALDA_KV_F32 or HALDA_KV_F16 */
    size_t elem;     /* bytes per element */
    uint8_t *k, *v;  /* owned */
    int *n_pos;      /* [n_seq] positions currently stored per sequence */
} kv_cache;

static size_t kv_cache_bytes(int n_layers, int n_seq, int n_ctx, int kv_dim, int type)
{
    return 2 * (size_t)n_layers * (size_t)n_seq * (size_t)n_ctx * (size_t)kv_dim * (type == HALDA_KV_F32 ? 4 : 2);
}

static int kv_cache_init(kv_cache *c, int layer_begin, int layer_end, int n_seq, int n_ctx, int kv_dim, int type, herr *e)
{
    memset(c, 0, sizeof *c);
    *c = (kv_cache){layer_begin, layer_end, n_seq, n_ctx, kv_dim, type, type == HALDA_KV_F32 ? 4 : 2, NULL, NULL, NULL};
    size_t half = kv_cache_bytes(layer_end - layer_begin, n_seq, n_ctx, kv_dim, type) / 2;
    c->k = xcalloc(1, half);
    c->v = xcalloc(1, half);
    c->n_pos = xcalloc((size_t)n_seq, sizeof *c->n_pos);
    if (!c->k || !c->v || !c->n_pos) {
        xfree(c->k), xfree(c->v), xfree(c->n_pos);
        memset(c, 0, sizeof *c);
        return herr_set(e, "out of memory for a %zu MiB KV cache", 2 * half >> 20), -1;
    }
    return 0;
}
static void kv_cache_free(kv_cache *c)
{
    xfree(c->k), xfree(c->v), xfree(c->n_pos);
    memset(c, 0, sizeof *c);
}
/* Address of the key (or value) vector of (layer, seq, pos). */
static inline uint8_t *kv_at(const kv_cache *c, uint8_t *base, int layer, int seq, int pos)
{
    size_t idx = (((size_t)(layer - c->layer_begin) * (size_t)c->n_seq + (size_t)seq) * (size_t)c->n_ctx + (size_t)pos);
    return base + idx * (size_t)c->kv_dim * c->elem;
}
/* Keep only the first n positions of a sequence (n = 0 clears it). */
static void kv_cache_keep(kv_cache *c, int seq, int n)
{
    if (seq >= 0 && seq < c->n_seq && n < c->n_pos[seq]) c->n_pos[seq] = n < 0 ? 0 : n;
}

/* ---- Context ---------------------------------------------------------------------------------- */

struct halda_context {
    halda_model *model;
    herr err;
    int n_ctx, n_batch;
    thread_pool *pool;
    kv_cache kv;
    /* scratch, carved from one allocation at creation: all [n_batch × width] */
    float *x, *xb, *q, *k, *v, *att, *ffn_gate, *ffn_up;
    float *rope_cs;  /* [n_batch][n_rot] cos, sin pairs for each row's position */
    float *scores;   /* [n_threads][n_ctx] attention weights, one row per thread */
    float *logits;   /* [n_vocab] */
    int *pos, *seq;  /* [n_batch] positions and sequence slots of the rows of a batch */
    void *act;       /* activations converted for a matrix product: n_batch rows of the widest type */
    uint8_t *arena;
    size_t arena_bytes;
};

halda_context_params halda_context_default_params(void)
{
    return (halda_context_params){0, 0, HALDA_KV_F16, 0};
}

const char *halda_last_error(const halda_context *ctx) { return ctx->err.msg; }

/* Widest bytes any activation row of n elements can need (F32 is the widest per element). */
static size_t act_row_bytes_max(int64_t n) { return (size_t)n * 4 + (size_t)(n / QK + 1) * 8; }

halda_context *halda_context_new(halda_model *m, const halda_context_params *p, char *err, size_t err_len)
{
    herr e = {{0}};
    const model_hparams *hp = &m->hp;
    halda_context_params dp = halda_context_default_params();
    if (!p) p = &dp;
    halda_context *c = xcalloc(1, sizeof *c);
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->model = m;
    c->n_ctx = p->n_ctx > 0 ? p->n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    c->n_batch = p->n_batch > 0 ? p->n_batch : 512;
    if (c->n_batch > c->n_ctx) c->n_batch = c->n_ctx;
    int n_threads = p->n_threads > 0 ? p->n_threads : platform_physical_cores();
    if (p->kv_type != HALDA_KV_F32 && p->kv_type != HALDA_KV_F16) {
        herr_set(&e, "unknown KV cache type %d", p->kv_type);
        goto fail;
    }
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    if (kv_cache_init(&c->kv, 0, hp->n_layer, 1, c->n_ctx, (int)kv_dim, p->kv_type, &e)) goto fail;
    if (!(c->pool = pool_new(n_threads))) {
        herr_set(&e, "cannot start threads");
        goto fail;
    }
    int64_t B = c->n_batch, widest = hp->n_embd > hp->n_ff ? hp->n_embd : hp->n_ff;
    if (q_dim > widest) widest = q_dim;
    size_t floats = (size_t)(B * hp->n_embd * 2 + B * q_dim * 2 + B * kv_dim * 2 + B * hp->n_ff * 2 + B * hp->n_rot +
                             (int64_t)c->pool->n_threads * c->n_ctx + hp->n_vocab + 2 * B);
    size_t act_bytes = (size_t)B * act_row_bytes_max(widest);
    c->arena_bytes = floats * sizeof(float) + act_bytes + 64;
    c->arena = xmalloc(c->arena_bytes);
    if (!c->arena) {
        herr_set(&e, "out of memory for scratch buffers");
        goto fail;
    }
    float *f = (float *)c->arena;
    c->x = f, f += B * hp->n_embd;
    c->xb = f, f += B * hp->n_embd;
    c->q = f, f += B * q_dim;
    c->att = f, f += B * q_dim;
    c->k = f, f += B * kv_dim;
    c->v = f, f += B * kv_dim;
    c->ffn_gate = f, f += B * hp->n_ff;
    c->ffn_up = f, f += B * hp->n_ff;
    c->rope_cs = f, f += B * hp->n_rot;
    c->scores = f, f += (int64_t)c->pool->n_threads * c->n_ctx;
    c->logits = f, f += hp->n_vocab;
    static_assert(sizeof(int) == sizeof(float), "int rows are carved from the float arena");
    c->pos = (int *)f, f += B;
    c->seq = (int *)f, f += B;
    c->act = (void *)(((uintptr_t)f + 63) & ~(uintptr_t)63);
    return c;
fail:
    if (err && err_len) snprintf(err, err_len, "%s", e.msg);
    halda_context_free(c);
    return NULL;
}

void halda_context_free(halda_context *c)
{
    if (!c) return;
    pool_free(c->pool);
    kv_cache_free(&c->kv);
    xfree(c->arena);
    xfree(c);
}

void halda_kv_truncate(halda_context *c, int pos) { kv_cache_keep(&c->kv, 0, pos); }

/* ---- Building blocks -------------------------------------------------------------------------- */

/* RMSNorm of n_tok rows of n: out = x / sqrt(mean(x²) + eps) · w.  The sum of squares is
 * accumulated in double, as llama.cpp does (ggml_float), which keeps long rows exact. */
static void rmsnorm(float *out, const float *x, const float *w, int n_tok, int n, float eps)
{
    for (int t = 0; t < n_tok; t++, x += n, out += n) {
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)(x[i] * x[i]);
        float scale = 1.0f / sqrtf((float)(ss / n) + eps);
        for (int i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
    }
}

/* Matrix product out[t][r] = W[r] · x[t] for n_tok rows of x.  The activations are converted
 * once to W's activation type, then threads split W's rows; each thread reads a weight row once
 * and multiplies it with every activation row (the batched-prefill reuse). */
typedef struct {
    const tensor *w;
    const void *act; /* n_tok rows of act_row bytes */
    size_t act_row;
    float *out;      /* [n_tok][w->ne[1]] */
    int n_tok;
    work_counter rows;
} matmul_job;

static void matmul_task(void *arg, int ith, int nth)
{
    matmul_job *j = arg;
    const tensor *w = j->w;
    vec_dot_fn dot = type_info(w->type)->vec_dot;
    int64_t r0, r1, rows = w->ne[1];
    (void)ith, (void)nth;
    while (work_counter_take(&j->rows, &r0, &r1))
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
            for (int t = 0; t < j->n_tok; t++)
                j->out[(size_t)t * (size_t)rows + (size_t)r] = dot(w->ne[0], wr, (const uint8_t *)j->act + (size_t)t * j->act_row);
        }
}

/* Convert n_tok rows of x (width n) into the activation type `type` in ctx->act. */
static size_t act_convert(halda_context *c, const float *x, int n_tok, int64_t n, int type)
{
    const type_traits *at = type_info(type);
    size_t row = type_row_bytes(type, n);
    for (int t = 0; t < n_tok; t++) at->quantize(x + (size_t)t * (size_t)n, (uint8_t *)c->act + (size_t)t * row, n);
    return row;
}

static void matmul(halda_context *c, float *out, const tensor *w, const float *x, int n_tok)
{
    int act_type = type_info(w->type)->act_type;
    matmul_job j = {w, x, (size_t)w->ne[0] * 4, out, n_tok, {0}};
    work_counter_init(&j.rows, w->ne[1], c->pool->n_threads);
    if (act_type != TYPE_F32) {
        j.act_row = act_convert(c, x, n_tok, w->ne[0], act_type);
        j.act = c->act;
    }
    pool_run(c->pool, matmul_task, &j);
}

/* RoPE: rotate each pair of dimensions of a head by an angle proportional to the position,
 *     (a, b) -> (a·cos θ − b·sin θ, a·sin θ + b·cos θ),  θ_i = pos · base^(−2i/n_rot) / f_i,
 * so that the dot product of a rotated query and key depends only on their distance.  The
 * angles are built by repeated multiplication with base^(−2/n_rot), in F32, exactly as
 * llama.cpp does (its references carry the rounding of that recurrence).  The pairs are
 * (2i, 2i+1) for llama ("normal") and (i, i + n_rot/2) for qwen2 ("neox"). */
static void rope_cache(const halda_model *m, int pos, float *cs)
{
    const model_hparams *hp = &m->hp;
    float theta_scale = powf(hp->rope_base, -2.0f / (float)hp->n_rot);
    float theta = (float)pos;
    for (int i = 0; i < hp->n_rot / 2; i++) {
        float ff = m->rope_freqs ? m->rope_freqs[i] : 1.0f;
        float angle = hp->rope_freq_scale * (theta / ff);
        cs[2 * i] = cosf(angle);
        cs[2 * i + 1] = sinf(angle);
        theta *= theta_scale;
    }
}

static void rope_apply(const model_hparams *hp, float *head, const float *cs)
{
    int half = hp->n_rot / 2;
    for (int i = 0; i < half; i++) {
        int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
        float x0 = head[a], x1 = head[b], cos_t = cs[2 * i], sin_t = cs[2 * i + 1];
        head[a] = x0 * cos_t - x1 * sin_t;
        head[b] = x0 * sin_t + x1 * cos_t;
    }
}

/* Attention for every (row, query head) pair, split across threads.  Row t (position pos[t],
 * sequence seq[t]) attends to positions 0..pos[t] of its sequence, whose keys and values are
 * already in the cache (the rows of this batch were written before this runs). */
typedef struct {
    halda_context *c;
    int layer, n_tok;
    const int *pos, *seq;
    work_counter tasks; /* (row, head) pairs */
} attention_job;

static float kv_get(const kv_cache *kv, const uint8_t *p, int i)
{
    return kv->type == HALDA_KV_F32 ? ((const float *)p)[i] : f16_to_f32(((const f16_t *)p)[i]);
}

static void attention_task(void *arg, int ith, int nth)
{
    attention_job *j = arg;
    halda_context *c = j->c;
    const model_hparams *hp = &c->model->hp;
    const kv_cache *kv = &c->kv;
    int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    float scale = 1.0f / sqrtf((float)hd);
    float *w = c->scores + (size_t)ith * (size_t)c->n_ctx;
    int64_t b, e;
    (void)nth;
    while (work_counter_take(&j->tasks, &b, &e))
    for (int64_t task = b; task < e; task++) {
        int t = (int)(task / hp->n_head), h = (int)(task % hp->n_head), kvh = h / group;
        const float *q = c->q + (size_t)t * (size_t)(hp->n_head * hd) + (size_t)h * (size_t)hd;
        int n = j->pos[t] + 1;
        float max = -INFINITY;
        for (int p = 0; p < n; p++) {
            const uint8_t *kp = kv_at(kv, kv->k, j->layer, j->seq[t], p) + (size_t)kvh * (size_t)hd * kv->elem;
            float s = 0;
            for (int i = 0; i < hd; i++) s += q[i] * kv_get(kv, kp, i);
            w[p] = s * scale;
            if (w[p] > max) max = w[p];
        }
        double sum = 0;
        for (int p = 0; p < n; p++) {
            w[p] = expf(w[p] - max);
            sum += w[p];
        }
        float inv = (float)(1.0 / sum);
        float *out = c->att + (size_t)t * (size_t)(hp->n_head * hd) + (size_t)h * (size_t)hd;
        memset(out, 0, (size_t)hd * sizeof *out);
        for (int p = 0; p < n; p++) {
            const uint8_t *vp = kv_at(kv, kv->v, j->layer, j->seq[t], p) + (size_t)kvh * (size_t)hd * kv->elem;
            float a = w[p] * inv;
            for (int i = 0; i < hd; i++) out[i] += a * kv_get(kv, vp, i);
        }
    }
}

static void kv_store(kv_cache *kv, uint8_t *base, int layer, int seq, int pos, const float *src)
{
    uint8_t *dst = kv_at(kv, base, layer, seq, pos);
    if (kv->type == HALDA_KV_F32) memcpy(dst, src, (size_t)kv->kv_dim * 4);
    else quantize_f16(src, dst, kv->kv_dim);
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

/* ---- The three seams ---------------------------------------------------------------------------- */

/* x[i] = embedding row of tokens[i] (dequantized to F32). */
static int model_embed(halda_context *c, const int32_t *tokens, int n_tok, float *x)
{
    const halda_model *m = c->model;
    for (int i = 0; i < n_tok; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab) return herr_set(&c->err, "token id %d is out of range", tokens[i]), -1;
        const uint8_t *row = (const uint8_t *)m->tok_embd.data + (size_t)tokens[i] * m->tok_embd.row_bytes;
        type_info(m->tok_embd.type)->dequantize(row, x + (size_t)i * (size_t)m->hp.n_embd, m->hp.n_embd);
    }
    return 0;
}

/* Run layers [l0, l1) over the n_tok rows of x in place.  Row i sits at position pos[i] of
 * sequence seq[i]; its keys and values are written to the KV cache.  n_tok <= n_batch. */
static int model_forward_window(halda_context *c, float *x, int n_tok, const int *pos, const int *seq, int l0, int l1)
{
    const halda_model *m = c->model;
    const model_hparams *hp = &m->hp;
    kv_cache *kv = &c->kv;
    if (n_tok < 1 || n_tok > c->n_batch) return herr_set(&c->err, "batch of %d tokens (1..%d allowed)", n_tok, c->n_batch), -1;
    if (l0 < kv->layer_begin || l1 > kv->layer_end || l0 > l1) return herr_set(&c->err, "layers [%d, %d) are not held here", l0, l1), -1;
    for (int t = 0; t < n_tok; t++) {
        if (seq[t] < 0 || seq[t] >= kv->n_seq) return herr_set(&c->err, "sequence %d does not exist", seq[t]), -1;
        if (pos[t] < 0 || pos[t] >= c->n_ctx) return herr_set(&c->err, "position %d is outside the context of %d", pos[t], c->n_ctx), -1;
        if (pos[t] > kv->n_pos[seq[t]] && (t == 0 || pos[t] != pos[t - 1] + 1))
            return herr_set(&c->err, "position %d leaves a gap after %d cached positions", pos[t], kv->n_pos[seq[t]]), -1;
        rope_cache(m, pos[t], c->rope_cs + (size_t)t * (size_t)hp->n_rot);
    }
    int hd = hp->head_dim, q_dim = hp->n_head * hd, kv_dim = hp->n_head_kv * hd, E = hp->n_embd;
    for (int l = l0; l < l1; l++) {
        const layer_weights *L = &m->layers[l];
        /* attention block */
        rmsnorm(c->xb, x, L->attn_norm.data, n_tok, E, hp->rms_eps);
        matmul(c, c->q, &L->wq, c->xb, n_tok);
        matmul(c, c->k, &L->wk, c->xb, n_tok);
        matmul(c, c->v, &L->wv, c->xb, n_tok);
        for (int t = 0; t < n_tok; t++) {
            float *q = c->q + (size_t)t * q_dim, *k = c->k + (size_t)t * kv_dim, *v = c->v + (size_t)t * kv_dim;
            if (L->bq.data) {
                for (int i = 0; i < q_dim; i++) q[i] += ((const float *)L->bq.data)[i];
                for (int i = 0; i < kv_dim; i++) k[i] += ((const float *)L->bk.data)[i];
                for (int i = 0; i < kv_dim; i++) v[i] += ((const float *)L->bv.data)[i];
            }
            const float *cs = c->rope_cs + (size_t)t * (size_t)hp->n_rot;
            for (int h = 0; h < hp->n_head; h++) rope_apply(hp, q + h * hd, cs);
            for (int h = 0; h < hp->n_head_kv; h++) rope_apply(hp, k + h * hd, cs);
            kv_store(kv, kv->k, l, seq[t], pos[t], k);
            kv_store(kv, kv->v, l, seq[t], pos[t], v);
        }
        attention_job aj = {c, l, n_tok, pos, seq, {0}};
        work_counter_init(&aj.tasks, (int64_t)n_tok * hp->n_head, c->pool->n_threads);
        pool_run(c->pool, attention_task, &aj);
        matmul(c, c->xb, &L->wo, c->att, n_tok);
        for (size_t i = 0; i < (size_t)n_tok * E; i++) x[i] += c->xb[i];
        /* feed-forward block */
        rmsnorm(c->xb, x, L->ffn_norm.data, n_tok, E, hp->rms_eps);
        matmul(c, c->ffn_gate, &L->w_gate, c->xb, n_tok);
        matmul(c, c->ffn_up, &L->w_up, c->xb, n_tok);
        for (size_t i = 0; i < (size_t)n_tok * hp->n_ff; i++) c->ffn_gate[i] = silu(c->ffn_gate[i]) * c->ffn_up[i];
        matmul(c, c->xb, &L->w_down, c->ffn_gate, n_tok);
        for (size_t i = 0; i < (size_t)n_tok * E; i++) x[i] += c->xb[i];
    }
    for (int t = 0; t < n_tok; t++)
        if (pos[t] + 1 > kv->n_pos[seq[t]]) kv->n_pos[seq[t]] = pos[t] + 1;
    return 0;
}

/* logits = output · norm(x) for one row x (n_embd floats). */
static void model_output(halda_context *c, const float *x, float *logits)
{
    const halda_model *m = c->model;
    rmsnorm(c->xb, x, m->output_norm.data, 1, m->hp.n_embd, m->hp.rms_eps);
    matmul(c, logits, &m->output, c->xb, 1);
}

int halda_eval(halda_context *c, const int32_t *tokens, int n_tokens, int pos0, float *logits)
{
    const halda_model *m = c->model;
    if (n_tokens < 1) return herr_set(&c->err, "nothing to evaluate"), -1;
    if (pos0 < 0 || pos0 > c->n_ctx - n_tokens)
        return herr_set(&c->err, "context is full: %d positions needed, %d available", pos0 + n_tokens, c->n_ctx), -1;
    for (int done = 0; done < n_tokens;) {
        int n = n_tokens - done < c->n_batch ? n_tokens - done : c->n_batch;
        for (int i = 0; i < n; i++) c->pos[i] = pos0 + done + i, c->seq[i] = 0;
        if (model_embed(c, tokens + done, n, c->x) || model_forward_window(c, c->x, n, c->pos, c->seq, 0, m->hp.n_layer))
            return -1;
        done += n;
        if (logits && done == n_tokens) model_output(c, c->x + (size_t)(n - 1) * (size_t)m->hp.n_embd, logits);
    }
    return 0;
}

/* HALDA_SECTION_END model */

/* =============================================================================================
 * 8. Tokenizer
 *
 * The vocabulary comes from the GGUF metadata: tokenizer.ggml.tokens (the piece texts),
 * .scores, .token_type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) and
 * the special ids.  `tokenizer.ggml.model = llama` is SentencePiece with byte fallback (SPM):
 *
 *   1. spaces become "▁" (U+2581) and, if add_space_prefix, one "▁" is put in front;
 *   2. the text starts as one symbol per UTF-8 character;
 *   3. repeatedly, the adjacent pair whose concatenation is a vocabulary piece with the highest
 *      score is merged (ties: the leftmost pair) — a heap of candidate pairs makes this
 *      O(n log n);
 *   4. each final symbol is its piece's id, or, for a character missing from the vocabulary,
 *      the byte tokens <0xXX> of its UTF-8 bytes.
 *
 * Special tokens (control, user-defined, unknown) are cut out of the text first, longest first,
 * and emitted as themselves: user-defined ones always, control ones only when the caller asks
 * (parse_special).
 * ============================================================================================= */

enum { TOKT_NORMAL = 1, TOKT_UNKNOWN = 2, TOKT_CONTROL = 3, TOKT_USER = 4, TOKT_UNUSED = 5, TOKT_BYTE = 6 };
enum { TOK_SPM = 1 };

struct tok_vocab {
    int kind;          /* TOK_SPM */
    int n;             /* vocabulary size */
    const char **text; /* [n] NUL-terminated piece texts (in `arena`) */
    uint32_t *len;     /* [n] their lengths in bytes */
    float *score;      /* [n] merge priority (higher merges first) */
    uint8_t *type;     /* [n] TOKT_* */
    int32_t *hash;     /* open-addressing table of ids by text, hash_cap slots, -1 = empty */
    uint32_t hash_cap;
    int32_t byte_token[256]; /* id of <0xXX>, or -1 */
    int32_t *special;  /* ids of control / user-defined / unknown tokens, longest text first */
    int n_special;
    int32_t bos, eos, unk, eot;
    bool add_bos, add_eos, add_space_prefix;
    char *arena;
};

static uint32_t tok_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Id of the piece with exactly these bytes, or -1. */
static int32_t tok_find(const tok_vocab *v, const char *s, size_t n)
{
    for (uint32_t i = tok_hash(s, n) & (v->hash_cap - 1);; i = (i + 1) & (v->hash_cap - 1)) {
        int32_t id = v->hash[i];
        if (id < 0) return -1;
        if (v->len[id] == n && !memcmp(v->text[id], s, n)) return id;
    }
}

static void tok_vocab_free(tok_vocab *v)
{
    if (!v) return;
    xfree(v->text), xfree(v->len), xfree(v->score), xfree(v->type), xfree(v->hash), xfree(v->special), xfree(v->arena);
    xfree(v);
}

static int tok_special_cmp_len(const void *a, const void *b, void *vocab);
static const tok_vocab *tok_sort_vocab; /* qsort has no context argument in C11; set around the call */
static int tok_special_cmp(const void *a, const void *b) { return tok_special_cmp_len(a, b, (void *)tok_sort_vocab); }
static int tok_special_cmp_len(const void *a, const void *b, void *vocab)
{
    const tok_vocab *v = vocab;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (v->len[x] != v->len[y]) return v->len[x] < v->len[y] ? 1 : -1;
    return x < y ? -1 : x > y;
}

static pthread_mutex_t tok_sort_mutex = PTHREAD_MUTEX_INITIALIZER;

/* Read the vocabulary from the metadata.  TRUST BOUNDARY: the arrays were bounds-checked by the
 * GGUF parser; here their types, lengths and the special ids are checked. */
static tok_vocab *tok_vocab_load(const gguf_file *f, herr *e)
{
    uint64_t mlen;
    const char *model = gguf_get_str(f, "tokenizer.ggml.model", &mlen);
    if (!model) return herr_set(e, "metadata tokenizer.ggml.model is missing"), NULL;
    if (!(mlen == 5 && !memcmp(model, "llama", 5))) {
        herr_set(e, "tokenizer '%.*s' is not supported yet (halda reads SentencePiece 'llama' vocabularies; byte-level BPE 'gpt2' is coming)",
                 (int)(mlen < 32 ? mlen : 32), model);
        return NULL;
    }
    const gguf_kv *tk = gguf_find(f, "tokenizer.ggml.tokens");
    if (!tk || tk->type != GGUF_ARRAY || tk->arr_type != GGUF_STRING)
        return herr_set(e, "metadata tokenizer.ggml.tokens is missing or not an array of strings"), NULL;
    if (tk->arr_n < 4 || tk->arr_n > (1u << 24)) return herr_set(e, "vocabulary of %" PRIu64 " tokens is out of range", tk->arr_n), NULL;
    tok_vocab *v = xcalloc(1, sizeof *v);
    if (!v) return herr_set(e, "out of memory"), NULL;
    v->kind = TOK_SPM;
    v->n = (int)tk->arr_n;
    /* total text bytes */
    const uint8_t *p = tk->value;
    uint64_t bytes = 0;
    for (int i = 0; i < v->n; i++) {
        uint64_t l = read_le(p, 8);
        bytes += l + 1;
        p += 8 + l;
    }
    v->text = xcalloc((size_t)v->n, sizeof *v->text);
    v->len = xcalloc((size_t)v->n, sizeof *v->len);
    v->score = xcalloc((size_t)v->n, sizeof *v->score);
    v->type = xcalloc((size_t)v->n, 1);
    v->hash_cap = 1;
    while (v->hash_cap < 2u * (uint32_t)v->n) v->hash_cap <<= 1;
    v->hash = xmalloc(v->hash_cap * sizeof *v->hash);
    v->arena = xmalloc((size_t)bytes);
    v->special = xcalloc((size_t)v->n, sizeof *v->special);
    if (!v->text || !v->len || !v->score || !v->type || !v->hash || !v->arena || !v->special) {
        herr_set(e, "out of memory for the vocabulary");
        goto fail;
    }
    memset(v->hash, 0xff, v->hash_cap * sizeof *v->hash);
    char *a = v->arena;
    p = tk->value;
    for (int i = 0; i < v->n; i++) {
        uint64_t l = read_le(p, 8);
        memcpy(a, p + 8, (size_t)l);
        a[l] = 0;
        v->text[i] = a;
        v->len[i] = (uint32_t)l;
        a += l + 1;
        p += 8 + l;
        v->type[i] = TOKT_NORMAL;
    }
    const gguf_kv *sc = gguf_find(f, "tokenizer.ggml.scores");
    if (sc) {
        if (sc->type != GGUF_ARRAY || sc->arr_type != GGUF_F32 || sc->arr_n != (uint64_t)v->n) {
            herr_set(e, "tokenizer.ggml.scores must be %d f32 values", v->n);
            goto fail;
        }
        for (int i = 0; i < v->n; i++) v->score[i] = f32_from_bits((uint32_t)read_le(sc->value + 4 * i, 4));
    }
    const gguf_kv *ty = gguf_find(f, "tokenizer.ggml.token_type");
    if (ty) {
        if (ty->type != GGUF_ARRAY || (ty->arr_type != GGUF_I32 && ty->arr_type != GGUF_U32) || ty->arr_n != (uint64_t)v->n) {
            herr_set(e, "tokenizer.ggml.token_type must be %d i32 values", v->n);
            goto fail;
        }
        for (int i = 0; i < v->n; i++) {
            uint32_t t = (uint32_t)read_le(ty->value + 4 * i, 4);
            v->type[i] = (uint8_t)(t >= 1 && t <= 6 ? t : TOKT_NORMAL);
        }
    }
    /* hash table: later duplicates win, as in llama.cpp's text -> id map */
    for (int i = 0; i < v->n; i++) {
        uint32_t s = tok_hash(v->text[i], v->len[i]) & (v->hash_cap - 1);
        while (v->hash[s] >= 0 && !(v->len[v->hash[s]] == v->len[i] && !memcmp(v->text[v->hash[s]], v->text[i], v->len[i])))
            s = (s + 1) & (v->hash_cap - 1);
        v->hash[s] = i;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        v->byte_token[b] = tok_find(v, name, 6);
    }
    for (int i = 0; i < v->n; i++)
        if ((v->type[i] == TOKT_CONTROL || v->type[i] == TOKT_USER || v->type[i] == TOKT_UNKNOWN) && v->len[i] > 0)
            v->special[v->n_special++] = i;
    pthread_mutex_lock(&tok_sort_mutex);
    tok_sort_vocab = v;
    qsort(v->special, (size_t)v->n_special, sizeof *v->special, tok_special_cmp);
    pthread_mutex_unlock(&tok_sort_mutex);
    /* special ids and flags */
    struct { const char *key; int32_t *id; int32_t dflt; } ids[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos, 1}, {"tokenizer.ggml.eos_token_id", &v->eos, 2},
        {"tokenizer.ggml.unknown_token_id", &v->unk, 0}, {"tokenizer.ggml.eot_token_id", &v->eot, -1}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int64_t id;
        *ids[i].id = ids[i].dflt;
        if (gguf_get_int(f, ids[i].key, &id)) *ids[i].id = (int32_t)(id >= 0 && id < v->n ? id : -1);
        if (*ids[i].id >= v->n) *ids[i].id = -1;
    }
    int64_t flag;
    v->add_bos = gguf_get_int(f, "tokenizer.ggml.add_bos_token", &flag) ? flag != 0 : true;
    v->add_eos = gguf_get_int(f, "tokenizer.ggml.add_eos_token", &flag) ? flag != 0 : false;
    v->add_space_prefix = gguf_get_int(f, "tokenizer.ggml.add_space_prefix", &flag) ? flag != 0 : true;
    return v;
fail:
    tok_vocab_free(v);
    return NULL;
}

/* Bytes in the UTF-8 sequence that starts with byte c (1 for invalid lead bytes). */
static int utf8_len(uint8_t c)
{
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) return 2;
    if ((c & 0xf0) == 0xe0) return 3;
    if ((c & 0xf8) == 0xf0) return 4;
    return 1;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 if it is not valid:
 * overlong forms, surrogates, code points past U+10FFFF and truncated sequences are invalid. */
static int utf8_valid_len(const uint8_t *s, size_t n)
{
    int l = utf8_len(s[0]);
    if (s[0] >= 0x80 && l == 1) return 0; /* stray continuation or invalid lead byte */
    if ((size_t)l > n) return 0;
    uint32_t cp = l == 1 ? s[0] : l == 2 ? s[0] & 0x1fu : l == 3 ? s[0] & 0x0fu : s[0] & 0x07u;
    for (int i = 1; i < l; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[l] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return l;
}

/* A growable list of token ids that reports when it runs out of room. */
typedef struct {
    int32_t *ids;
    int n, cap;
    int needed; /* how many would have been written */
} tok_out;
static void tok_push(tok_out *o, int32_t id)
{
    if (o->n < o->cap) o->ids[o->n++] = id;
    o->needed++;
}

/* ---- SPM merging ------------------------------------------------------------------------------ */

typedef struct {
    int prev, next;   /* neighbours in the symbol list, -1 at the ends */
    const char *text; /* bytes of this symbol (in the escaped text) */
    size_t n;         /* 0 once merged into its left neighbour */
} spm_symbol;

typedef struct {
    int left, right;
    float score;
    size_t size;      /* bytes of the merged text, to detect stale entries */
} spm_bigram;

/* Max-heap order: higher score first, then the leftmost pair. */
static bool spm_before(const spm_bigram *a, const spm_bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    spm_bigram *a;
    int n, cap;
} spm_heap;

static bool spm_heap_push(spm_heap *h, spm_bigram b)
{
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 64;
        spm_bigram *na = realloc(h->a, (size_t)cap * sizeof *na);
        if (!na) return false;
        h->a = na, h->cap = cap;
    }
    int i = h->n++;
    while (i > 0 && spm_before(&b, &h->a[(i - 1) / 2])) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = b;
    return true;
}
static spm_bigram spm_heap_pop(spm_heap *h)
{
    spm_bigram top = h->a[0], last = h->a[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && spm_before(&h->a[c + 1], &h->a[c])) c++;
        if (!spm_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0) h->a[i] = last;
    return top;
}

static bool spm_try_pair(const tok_vocab *v, spm_symbol *sym, spm_heap *h, int left, int right)
{
    if (left < 0 || right < 0) return true;
    size_t n = sym[left].n + sym[right].n;
    int32_t id = tok_find(v, sym[left].text, n); /* the two symbols are adjacent in memory */
    if (id < 0) return true;
    return spm_heap_push(h, (spm_bigram){left, right, v->score[id], n});
}

/* Tokenize one fragment of plain text (already escaped: spaces are ▁). */
static int spm_tokenize(const tok_vocab *v, const char *text, size_t len, tok_out *out)
{
    if (len == 0) return 0;
    spm_symbol *sym = xmalloc(len * sizeof *sym);
    spm_heap heap = {0};
    if (!sym) return -1;
    int n = 0;
    for (size_t i = 0; i < len; n++) {
        size_t l = (size_t)utf8_len((uint8_t)text[i]);
        if (l > len - i) l = len - i;
        sym[n] = (spm_symbol){n - 1, -1, text + i, l};
        if (n > 0) sym[n - 1].next = n;
        i += l;
    }
    bool ok = true;
    for (int i = 1; i < n && ok; i++) ok = spm_try_pair(v, sym, &heap, i - 1, i);
    while (ok && heap.n > 0) {
        spm_bigram b = spm_heap_pop(&heap);
        spm_symbol *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        ok = spm_try_pair(v, sym, &heap, l->prev, b.left) && spm_try_pair(v, sym, &heap, b.left, l->next);
    }
    for (int i = 0; ok && i < n && i >= 0; i = sym[i].next) {
        int32_t id = tok_find(v, sym[i].text, sym[i].n);
        if (id >= 0) {
            tok_push(out, id);
            continue;
        }
        for (size_t k = 0; k < sym[i].n; k++) {
            int32_t bt = v->byte_token[(uint8_t)sym[i].text[k]];
            tok_push(out, bt >= 0 ? bt : v->unk);
        }
    }
    xfree(sym);
    free(heap.a);
    return ok ? 0 : -1;
}

/* Escape a fragment for SPM (optional leading ▁, every space -> ▁) into a new buffer. */
static char *spm_escape(const char *s, size_t n, bool prefix, size_t *out_len)
{
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    char *r = xmalloc(n + 2 * spaces + 3 * prefix + 1);
    if (!r) return NULL;
    size_t k = 0;
    if (prefix) memcpy(r + k, "\xe2\x96\x81", 3), k += 3;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') memcpy(r + k, "\xe2\x96\x81", 3), k += 3;
        else r[k++] = s[i];
    }
    r[k] = 0;
    *out_len = k;
    return r;
}

/* A piece of the input: raw text [begin, end), or a special token (id >= 0). */
typedef struct {
    size_t begin, end;
    int32_t id;
} tok_fragment;

/* Cut special tokens out of the text, longest first (each token splits every raw fragment at
 * each of its occurrences).  Returns the fragment count, or -1 when out of memory. */
static int tok_partition(const tok_vocab *v, const char *text, size_t len, bool parse_special, tok_fragment **frags)
{
    int n = 1, cap = 16;
    tok_fragment *f = xmalloc((size_t)cap * sizeof *f);
    if (!f) return -1;
    f[0] = (tok_fragment){0, len, -1};
    for (int s = 0; s < v->n_special; s++) {
        int32_t id = v->special[s];
        if (!parse_special && v->type[id] != TOKT_USER) continue;
        const char *st = v->text[id];
        size_t sl = v->len[id];
        for (int i = 0; i < n; i++) {
            if (f[i].id >= 0 || f[i].end - f[i].begin < sl) continue;
            const char *hit = memmem(text + f[i].begin, f[i].end - f[i].begin, st, sl);
            if (!hit) continue;
            size_t hb = (size_t)(hit - text);
            if (n + 2 > cap) {
                cap *= 2;
                tok_fragment *nf = realloc(f, (size_t)cap * sizeof *nf);
                if (!nf) return free(f), -1;
                f = nf;
            }
            /* [begin, hb) raw | special | [hb+sl, end) raw (examined next round of i) */
            tok_fragment rest = {hb + sl, f[i].end, -1};
            memmove(&f[i + 3], &f[i + 1], (size_t)(n - i - 1) * sizeof *f);
            f[i].end = hb;
            f[i + 1] = (tok_fragment){hb, hb + sl, id};
            f[i + 2] = rest;
            n += 2;
            if (f[i].begin == f[i].end) { /* drop the empty raw fragment */
                memmove(&f[i], &f[i + 1], (size_t)(n - i - 1) * sizeof *f);
                n--;
            }
        }
    }
    /* drop empty raw fragments at the end */
    int k = 0;
    for (int i = 0; i < n; i++)
        if (f[i].id >= 0 || f[i].end > f[i].begin) f[k++] = f[i];
    *frags = f;
    return k;
}

int halda_tokenize(const halda_model *m, const char *text, size_t len, int32_t *tokens, int max_tokens, int add_bos,
                   int parse_special)
{
    const tok_vocab *v = m->vocab;
    tok_out out = {tokens, 0, max_tokens, 0};
    if (add_bos && v->add_bos && v->bos >= 0) tok_push(&out, v->bos);
    tok_fragment *frags;
    int nf = tok_partition(v, text, len, parse_special != 0, &frags);
    if (nf < 0) return -1;
    bool prev_special = true; /* the first fragment gets the space prefix */
    for (int i = 0; i < nf; i++) {
        if (frags[i].id >= 0) {
            tok_push(&out, frags[i].id);
            prev_special = true;
            continue;
        }
        size_t elen;
        char *esc = spm_escape(text + frags[i].begin, frags[i].end - frags[i].begin, v->add_space_prefix && prev_special, &elen);
        if (!esc || spm_tokenize(v, esc, elen, &out) != 0) {
            xfree(esc), xfree(frags);
            return -1;
        }
        xfree(esc);
        prev_special = false;
    }
    xfree(frags);
    if (add_bos && v->add_eos && v->eos >= 0) tok_push(&out, v->eos);
    return out.needed <= max_tokens ? out.n : -out.needed - 1;
}

int halda_token_to_piece(const halda_model *m, int32_t token, char *out, size_t out_len, int special)
{
    const tok_vocab *v = m->vocab;
    if (token < 0 || token >= v->n) return -1;
    const char *t = v->text[token];
    size_t n = 0;
    char buf[8];
    switch (v->type[token]) {
    case TOKT_CONTROL:
        if (!special) return 0;
        break;
    case TOKT_UNUSED: return 0;
    case TOKT_UNKNOWN: t = "\xe2\x96\x85"; break; /* ▅, as llama.cpp renders <unk> */
    case TOKT_BYTE: {
        unsigned b;
        if (sscanf(t, "<0x%2X>", &b) == 1) {
            buf[0] = (char)b;
            buf[1] = 0;
            if (out_len < 1) return -1;
            out[0] = buf[0];
            return 1;
        }
        break;
    }
    default: break;
    }
    /* normal and user-defined pieces: ▁ back to spaces */
    size_t tl = strlen(t);
    for (size_t i = 0; i < tl;) {
        if (i + 3 <= tl && !memcmp(t + i, "\xe2\x96\x81", 3)) {
            if (n >= out_len) return -1;
            out[n++] = ' ';
            i += 3;
        } else {
            if (n >= out_len) return -1;
            out[n++] = t[i++];
        }
    }
    return (int)n;
}

int32_t halda_token_bos(const halda_model *m) { return m->vocab->bos; }
int32_t halda_token_eos(const halda_model *m) { return m->vocab->eos; }
int halda_token_is_eog(const halda_model *m, int32_t t) { return t >= 0 && (t == m->vocab->eos || t == m->vocab->eot); }

/* =============================================================================================
 * 9. Sampler
 *
 * From logits to the next token: the repetition penalty (divide positive logits of recently
 * seen tokens by the penalty, multiply negative ones), then, unless greedy, keep the top k,
 * the smallest set whose probability reaches top_p, and the tokens whose probability is at
 * least min_p times the best one's; divide by the temperature and draw from the softmax.
 * ============================================================================================= */

struct halda_sampler {
    halda_sampler_params p;
    int n_vocab;
    uint64_t rng;      /* splitmix64 state */
    int32_t *recent;   /* ring buffer of the last repeat_last_n tokens */
    int n_recent, head;
    int32_t *ids;      /* [n_vocab] candidate scratch */
    float *probs;      /* [n_vocab] */
};

halda_sampler_params halda_sampler_default_params(void)
{
    return (halda_sampler_params){0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0};
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* Uniform in [0, 1) with 24 bits. */
static float rand_unit(uint64_t *s) { return (float)(splitmix64(s) >> 40) / 16777216.0f; }

halda_sampler *halda_sampler_new(const halda_sampler_params *p, int n_vocab)
{
    halda_sampler *s = xcalloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    s->n_vocab = n_vocab;
    s->rng = p->seed;
    s->recent = xcalloc((size_t)s->p.repeat_last_n + 1, sizeof *s->recent);
    s->ids = xmalloc((size_t)n_vocab * sizeof *s->ids);
    s->probs = xmalloc((size_t)n_vocab * sizeof *s->probs);
    if (!s->recent || !s->ids || !s->probs) {
        halda_sampler_free(s);
        return NULL;
    }
    return s;
}

void halda_sampler_free(halda_sampler *s)
{
    if (!s) return;
    xfree(s->recent), xfree(s->ids), xfree(s->probs), xfree(s);
}

void halda_sampler_accept(halda_sampler *s, int32_t token)
{
    if (s->p.repeat_last_n == 0) return;
    s->recent[s->head] = token;
    s->head = (s->head + 1) % s->p.repeat_last_n;
    if (s->n_recent < s->p.repeat_last_n) s->n_recent++;
}

static const float *sort_logits; /* qsort context, guarded by sort_mutex */
static pthread_mutex_t sort_mutex = PTHREAD_MUTEX_INITIALIZER;
static int cmp_logit_desc(const void *a, const void *b)
{
    float x = sort_logits[*(const int32_t *)a], y = sort_logits[*(const int32_t *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

int32_t halda_sample(halda_sampler *s, float *logits)
{
    const halda_sampler_params *p = &s->p;
    int n = s->n_vocab;
    if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0) {
        for (int i = 0; i < s->n_recent; i++) {
            int32_t t = s->recent[i];
            bool first = true; /* penalise each distinct token once */
            for (int j = 0; j < i; j++) first &= s->recent[j] != t;
            if (!first || t < 0 || t >= n) continue;
            logits[t] = logits[t] > 0 ? logits[t] / p->repeat_penalty : logits[t] * p->repeat_penalty;
        }
    }
    if (p->temperature <= 0) { /* greedy: the first maximum */
        int32_t best = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < n; i++) s->ids[i] = i;
    pthread_mutex_lock(&sort_mutex);
    sort_logits = logits;
    qsort(s->ids, (size_t)n, sizeof *s->ids, cmp_logit_desc);
    pthread_mutex_unlock(&sort_mutex);
    int k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    /* probabilities of the survivors (before temperature, as llama.cpp's default chain) */
    float max = logits[s->ids[0]];
    double sum = 0;
    for (int i = 0; i < k; i++) sum += s->probs[i] = expf(logits[s->ids[i]] - max);
    if (p->top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < k; i++) {
            cum += s->probs[i] / sum;
            if (cum >= p->top_p) {
                k = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0)
        for (int i = 1; i < k; i++)
            if (s->probs[i] < p->min_p * s->probs[0]) {
                k = i;
                break;
            }
    sum = 0;
    for (int i = 0; i < k; i++) sum += s->probs[i] = expf((logits[s->ids[i]] - max) / p->temperature);
    double r = rand_unit(&s->rng) * sum;
    for (int i = 0; i < k; i++) {
        r -= s->probs[i];
        if (r < 0) return s->ids[i];
    }
    return s->ids[k - 1];
}

/* =============================================================================================
 * 10. Synthetic models
 *
 * Tests, benchmarks and `make demo` need models without downloading anything: this writes a
 * llama or qwen2 GGUF of any shape and weight type, with deterministic pseudo-random weights
 * (uniform, scaled by 1/sqrt(fan-in) so activations stay in a sane range) and a small
 * SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, then ASCII characters and a
 * few hundred common English pieces.  Its text is gibberish; its numerics are real.
 * ============================================================================================= */

typedef struct {
    int arch;       /* ARCH_LLAMA or ARCH_QWEN2 */
    int type;       /* type of the big matrices */
    int out_type;   /* type of the output matrix (-1: same as type) */
    int n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
    bool tied;      /* no output.weight: reuse token_embd */
    uint64_t seed;
} synth_params;

static const char *const synth_words[] = {
    "the", "and", "to", "of", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "I",
    "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but", "what", "some", "we",
    "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she",
    "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "would", "like", "so",
    "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come",
    "did", "my", "sound", "no", "most", "number", "who", "over", "know", "water", "than", "call", "first", "people",
    "may", "down", "side", "been", "now", "find", "Once", "upon", "little", "girl", "boy", "dog", "cat", "ball",
    "park", "happy", "play", "big", "red", "Lily", "Tom", "friend", "tree", "sun", "mom", "dad", "home", "went"};

/* Build the vocabulary arrays; returns the number of tokens written (<= cap). */
static int synth_vocab(char **text, float *score, int32_t *type, int cap)
{
    int n = 0;
    const char *fixed[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) text[n] = strdup(fixed[i]), score[n] = 0, type[n] = i == 0 ? TOKT_UNKNOWN : TOKT_CONTROL, n++;
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        text[n] = strdup(buf), score[n] = 0, type[n] = TOKT_BYTE, n++;
    }
    for (int c = 33; c < 127 && n < cap; c++) {
        char buf[2] = {(char)c, 0};
        text[n] = strdup(buf), score[n] = -1000.0f - (float)n, type[n] = TOKT_NORMAL, n++;
    }
    text[n] = strdup("\xe2\x96\x81"), score[n] = -1000.0f - (float)n, type[n] = TOKT_NORMAL, n++;
    for (size_t w = 0; w < sizeof synth_words / sizeof synth_words[0] && n + 2 <= cap; w++) {
        char buf[64];
        snprintf(buf, sizeof buf, "\xe2\x96\x81%s", synth_words[w]);
        text[n] = strdup(buf), score[n] = -(float)w, type[n] = TOKT_NORMAL, n++;
        text[n] = strdup(synth_words[w]), score[n] = -100.0f - (float)w, type[n] = TOKT_NORMAL, n++;
    }
    /* prefixes of the words, so that merging can build them pair by pair */
    for (size_t w = 0; w < sizeof synth_words / sizeof synth_words[0]; w++) {
        char buf[64];
        int wl = (int)strlen(synth_words[w]);
        for (int l = 1; l < wl; l++) {
            snprintf(buf, sizeof buf, "\xe2\x96\x81%.*s", l, synth_words[w]);
            bool dup = false;
            for (int i = 0; i < n && !dup; i++) dup = !strcmp(text[i], buf);
            if (dup || n >= cap) continue;
            text[n] = strdup(buf), score[n] = -200.0f - (float)n, type[n] = TOKT_NORMAL, n++;
        }
    }
    while (n < cap) { /* pad to the requested size with unused filler pieces */
        char buf[32];
        snprintf(buf, sizeof buf, "<unused%d>", n);
        text[n] = strdup(buf), score[n] = -1e9f, type[n] = TOKT_UNUSED, n++;
    }
    return n;
}

/* Fill n floats with uniform values in [-scale, scale), deterministically from *state. */
static void synth_fill(float *x, int64_t n, float scale, uint64_t *state)
{
    for (int64_t i = 0; i < n; i++) x[i] = (2.0f * rand_unit(state) - 1.0f) * scale;
}

static int synth_write(const char *path, const synth_params *sp, herr *e)
{
    gguf_writer w = {0};
    const char *arch = sp->arch == ARCH_QWEN2 ? "qwen2" : "llama";
    char key[128];
    int rc = -1;
    int n_vocab = sp->n_vocab;
    char **text = xcalloc((size_t)n_vocab, sizeof *text);
    float *score = xcalloc((size_t)n_vocab, sizeof *score);
    int32_t *ttype = xcalloc((size_t)n_vocab, sizeof *ttype);
    int64_t biggest = (int64_t)n_vocab * sp->n_embd;
    if ((int64_t)sp->n_ff * sp->n_embd > biggest) biggest = (int64_t)sp->n_ff * sp->n_embd;
    float *buf = xmalloc((size_t)biggest * sizeof *buf);
    if (!text || !score || !ttype || !buf) {
        herr_set(e, "out of memory");
        goto done;
    }
    if (n_vocab < 400) {
        herr_set(e, "synthetic vocabularies need at least 400 tokens");
        goto done;
    }
    synth_vocab(text, score, ttype, n_vocab);
    gguf_writer_str(&w, "general.architecture", arch);
    gguf_writer_str(&w, "general.name", "halda synthetic");
    gguf_writer_u32(&w, "general.alignment", GGUF_DEFAULT_ALIGNMENT);
#define HP(k, v) (snprintf(key, sizeof key, "%s." k, arch), gguf_writer_u32(&w, key, (uint32_t)(v)))
    HP("context_length", sp->n_ctx);
    HP("embedding_length", sp->n_embd);
    HP("block_count", sp->n_layer);
    HP("feed_forward_length", sp->n_ff);
    HP("attention.head_count", sp->n_head);
    HP("attention.head_count_kv", sp->n_head_kv);
    HP("rope.dimension_count", sp->n_embd / sp->n_head);
#undef HP
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    gguf_writer_f32(&w, key, sp->arch == ARCH_QWEN2 ? 1e-6f : 1e-5f);
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    gguf_writer_f32(&w, key, sp->arch == ARCH_QWEN2 ? 1e6f : 10000.0f);
    gguf_writer_str(&w, "tokenizer.ggml.model", "llama");
    gguf_writer_arr_str(&w, "tokenizer.ggml.tokens", (const char *const *)text, (uint64_t)n_vocab);
    gguf_writer_arr_f32(&w, "tokenizer.ggml.scores", score, (uint64_t)n_vocab);
    gguf_writer_arr_i32(&w, "tokenizer.ggml.token_type", ttype, (uint64_t)n_vocab);
    gguf_writer_u32(&w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_u32(&w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_u32(&w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_bool(&w, "tokenizer.ggml.add_bos_token", true);

    uint64_t rng = sp->seed;
    int E = sp->n_embd, hd = E / sp->n_head, kvd = sp->n_head_kv * hd, F = sp->n_ff;
    int out_type = sp->out_type >= 0 ? sp->out_type : sp->type;
    /* embeddings in the output type when tied (that is what llama-quantize does) */
    int64_t ne[2] = {E, n_vocab};
    synth_fill(buf, (int64_t)E * n_vocab, 1.0f, &rng);
    if (gguf_writer_tensor_f32(&w, "token_embd.weight", sp->tied ? out_type : sp->type, 2, ne, buf, e)) goto done;
    for (int i = 0; i < E; i++) buf[i] = 1.0f + 0.1f * (2.0f * rand_unit(&rng) - 1.0f);
    if (gguf_writer_tensor_f32(&w, "output_norm.weight", TYPE_F32, 1, ne, buf, e)) goto done;
    if (!sp->tied) {
        synth_fill(buf, (int64_t)E * n_vocab, 1.0f / sqrtf((float)E), &rng);
        if (gguf_writer_tensor_f32(&w, "output.weight", out_type, 2, ne, buf, e)) goto done;
    }
    for (int l = 0; l < sp->n_layer; l++) {
        struct { const char *name; int64_t cols, rows; bool vec; } t[] = {
            {"attn_norm.weight", E, 0, true}, {"attn_q.weight", E, E, false}, {"attn_k.weight", E, kvd, false},
            {"attn_v.weight", E, kvd, false}, {"attn_output.weight", E, E, false}, {"ffn_norm.weight", E, 0, true},
            {"ffn_gate.weight", E, F, false}, {"ffn_up.weight", E, F, false}, {"ffn_down.weight", F, E, false},
            {"attn_q.bias", E, 0, true}, {"attn_k.bias", kvd, 0, true}, {"attn_v.bias", kvd, 0, true}};
        int nt = sp->arch == ARCH_QWEN2 ? 12 : 9;
        for (int i = 0; i < nt; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", l, t[i].name);
            int64_t tne[2] = {t[i].cols, t[i].rows};
            bool norm = strstr(t[i].name, "norm") != NULL;
            if (t[i].vec && norm)
                for (int j = 0; j < t[i].cols; j++) buf[j] = 1.0f + 0.1f * (2.0f * rand_unit(&rng) - 1.0f);
            else
                synth_fill(buf, t[i].cols * (t[i].vec ? 1 : t[i].rows), t[i].vec ? 0.1f : 1.0f / sqrtf((float)t[i].cols), &rng);
            if (gguf_writer_tensor_f32(&w, name, t[i].vec ? TYPE_F32 : sp->type, t[i].vec ? 1 : 2, tne, buf, e)) goto done;
        }
    }
    rc = gguf_writer_save(&w, path, e);
done:
    for (int i = 0; text && i < n_vocab; i++) free(text[i]);
    xfree(text), xfree(score), xfree(ttype), xfree(buf);
    gguf_writer_free(&w);
    return rc;
}

/* =============================================================================================
 * 11. Profiler
 *
 * The Halda solver (../shared/halda/MODEL.md) needs a few numbers per device — how long one
 * layer of *this* model takes on its CPU (t_cpu) and GPU (t_gpu), how much memory it may use
 * (ram, vram), how fast it reads the model file (disk) — and per model: the layer count L, the
 * bytes of a layer, the KV bytes of a layer, what the head holds whatever the layer count, and
 * the head's fixed time per token kappa.  This section measures them.  Three ideas:
 *
 *   - Times are measured, not derived from FLOP counts.  The real forward pass
 *     (model_forward_window) runs on a *stand-in*: the model's own hyper-parameters and tensor
 *     types, made-up weights, and enough distinct copies of a layer that together they exceed
 *     the last-level cache — so each layer's weights stream from memory as in real decoding, and
 *     t_cpu includes memory bandwidth as well as arithmetic.  Warm-up, then the median of
 *     repeats within a time budget (the median shrugs off a repeat another program preempted).
 *   - Sizes come from the GGUF's tensor table alone, so a device can size a model whose weight
 *     types it cannot compute yet.
 *   - Profiles travel between devices and sit in a cache file as *records*: fixed-width,
 *     little-endian, versioned and length-checked, with one encoder and one decoder per struct.
 *     Never a raw struct: padding, alignment, sizeof(long) and byte order differ between a
 *     32-bit ARM phone and an x86-64 desktop.
 * ============================================================================================= */

enum { PROF_GPU_NONE = 0, PROF_GPU_CUDA = 1, PROF_GPU_METAL = 2, PROF_GPU_COUNT = 3 };
static const char *const prof_gpu_name[PROF_GPU_COUNT] = {"none", "cuda", "metal"};

#define PROF_NAME_BYTES 32          /* device names: [A-Za-z0-9._-]+, NUL-padded in records */
#define PROF_CTX 64                 /* positions of the stand-in's context (t_cpu is timed early in a context) */
#define PROF_CPU_BUDGET_MS 2500.0   /* default time for timing layers and the head */
#define PROF_DISK_BUDGET_MS 2000.0  /* default time for timing disk reads */

/* What one device is.  t_cpu_ms and t_gpu_ms belong to one model (model_id): a layer's time
 * depends on its shapes and weight types. */
typedef struct {
    char name[PROF_NAME_BYTES];   /* NUL-terminated, 1..31 characters of [A-Za-z0-9._-] */
    int os;                       /* PLATFORM_OS_* */
    int gpu;                      /* PROF_GPU_* */
    int n_cores;                  /* physical cores */
    int n_cpus;                   /* logical CPUs online */
    int n_threads;                /* threads the times were measured with */
    uint32_t cpu_features;        /* CPU_* bits */
    uint64_t model_id;            /* prof_model_id of the model timed; 0 when none was */
    int64_t measured_at;          /* Unix time of the measurement, seconds */
    double t_cpu_ms;              /* one layer, one token, on the CPU */
    double t_gpu_ms;              /* the same on the GPU; 0 without one */
    double copy_bytes_per_s;      /* memory copy bandwidth, bytes read + written per second */
    double disk_seq_bytes_per_s;  /* sequential reads of the model's file system, page cache bypassed */
    double disk_rand_bytes_per_s; /* 4 KiB random reads, the same way */
    uint64_t ram_bytes;           /* memory this process may use now */
    uint64_t swap_bytes;          /* free swap */
    uint64_t vram_bytes;          /* free GPU memory (metal: the working-set limit); 0 without a GPU */
    uint64_t fixed_vram_bytes;    /* GPU memory taken whatever the layers (a CUDA context) */
} device_profile;

/* What one model needs, for a context of n_ctx positions with a kv_type cache, and its head's
 * time per token (measured on the device that profiled it). */
typedef struct {
    uint64_t model_id;         /* prof_model_id: which GGUF this is */
    int n_layer, n_embd, n_vocab;
    int n_ctx;                 /* positions the KV and compute figures are for */
    int kv_type;               /* HALDA_KV_F32 or HALDA_KV_F16 */
    uint64_t layer_bytes;      /* weights of the largest layer: a memory bound that holds for any layers */
    uint64_t layers_bytes;     /* weights of all layers together */
    uint64_t head_bytes;       /* weights outside the layers: embeddings, output norm and matrix */
    uint64_t kv_bytes;         /* K and V of one layer for n_ctx positions */
    uint64_t compute_bytes;    /* a context's scratch buffers, on every device (activations, logits, scores) */
    uint64_t head_fixed_bytes; /* only on the head: output matrix and norm, one embedding row, sampler buffers */
    double kappa_ms;           /* the head's time per token: embedding row, output layer, sampling */
} model_profile;

/* The link from a device to the next one in the ring, as the runtime measures it on its real
 * connection: rtt_ms with a minimal message, throughput with activation-sized messages sent
 * back to back (so it includes per-message costs, but not the wait for a reply). */
typedef struct {
    double rtt_ms;       /* round trip of a minimal message */
    double bytes_per_s;  /* throughput of back-to-back messages of msg_bytes */
    uint32_t msg_bytes;  /* the message size the throughput was measured with */
} link_profile;

/* t_comm of the cost model: ms for a device to hand one token's activations (n_embd values of
 * act_type, TYPE_F32 or TYPE_F16) to the next device.  One way is half a round trip of
 * latency, plus the bytes at the link's throughput.  Returns -1 for an unmeasured link.
 * (The link functions are marked unused: the ring runtime, which measures links, calls them;
 * until it is merged only the tests and the fuzzer do.) */
__attribute__((unused)) static double prof_t_comm_ms(const link_profile *l, int n_embd, int act_type)
{
    if (!(l->bytes_per_s > 0) || !(l->rtt_ms >= 0) || n_embd < 0) return -1;
    double bytes = (double)n_embd * (act_type == TYPE_F16 ? 2 : 4);
    return l->rtt_ms / 2 + 1e3 * bytes / l->bytes_per_s;
}

/* ---- Profile records ----------------------------------------------------------------------------- *
 * Every record is a 12-byte header and a payload whose size the version fixes for each kind:
 *
 *     0  magic "HPRF"    4  u16 version (1)    6  u16 kind (1 device, 2 model, 3 link)
 *     8  u32 payload bytes (must be exactly the size below for this version and kind)
 *
 * All integers little-endian; f64 is the IEEE-754 double's bits as a u64.  Version 1 payloads:
 *
 *   device (136 bytes)                      model (88 bytes)              link (24 bytes)
 *     0 name[32], NUL-padded                  0 u64 model_id                0 f64 rtt_ms
 *    32 u8 os, u8 gpu, u16 n_cores            8 u32 n_layer                 8 f64 bytes_per_s
 *    36 u16 n_cpus, u16 n_threads            12 u32 n_embd                 16 u32 msg_bytes
 *    40 u32 cpu_features, u32 zero           16 u32 n_vocab                20 u32 zero
 *    48 u64 model_id                         20 u32 n_ctx
 *    56 i64 measured_at                      24 u32 kv_type (ggml id: 0 f32, 1 f16), u32 zero
 *    64 f64 t_cpu_ms, t_gpu_ms,              32 u64 layer_bytes, layers_bytes, head_bytes,
 *       copy_bytes_per_s, disk_seq_bytes_per_s,     kv_bytes, compute_bytes, head_fixed_bytes
 *       disk_rand_bytes_per_s                80 f64 kappa_ms
 *   104 u64 ram_bytes, swap_bytes,
 *       vram_bytes, fixed_vram_bytes
 *
 * A reader accepts only its own version (a newer format gets a new number and a new decoder
 * beside this one), and only canonical bytes: zero padding, a known kind, known feature bits,
 * finite non-negative figures within sane caps — so decode(encode(x)) == x and
 * encode(decode(bytes)) == bytes for every record it accepts. */

#define PROF_MAGIC "HPRF"
#define PROF_VERSION 1
#define PROF_HEADER_BYTES 12
enum { PROF_KIND_DEVICE = 1, PROF_KIND_MODEL = 2, PROF_KIND_LINK = 3 };
#define PROF_DEVICE_BYTES 136
#define PROF_MODEL_BYTES 88
#define PROF_LINK_BYTES 24
#define PROF_MAX_BYTES (1ull << 56)  /* 64 PiB: a cap on every byte count in a record */
#define PROF_MAX_MS 1e9              /* 11 days: a cap on every time */
#define PROF_MAX_SPEED 1e14          /* 100 TB/s: a cap on every speed */
static_assert(sizeof(double) == 8, "profile records carry IEEE-754 doubles");

/* A little-endian writer into a buffer the caller sized. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} prof_writer;

static void pw_u(prof_writer *w, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        if (w->n < w->cap) w->p[w->n++] = (uint8_t)(v >> (8 * i));
}
static void pw_f64(prof_writer *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    pw_u(w, u, 8);
}
static void pw_header(prof_writer *w, int kind, size_t payload)
{
    for (int i = 0; i < 4; i++) pw_u(w, (uint8_t)PROF_MAGIC[i], 1);
    pw_u(w, PROF_VERSION, 2);
    pw_u(w, (uint64_t)kind, 2);
    pw_u(w, payload, 4);
}

/* A reader over a payload whose length the header check already proved. */
typedef struct {
    const uint8_t *p;
} prof_reader;

static uint64_t pr_u(prof_reader *r, int bytes)
{
    uint64_t v = read_le(r->p, bytes);
    r->p += bytes;
    return v;
}
static double pr_f64(prof_reader *r)
{
    uint64_t u = pr_u(r, 8);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

static bool prof_ok_ms(double v) { return isfinite(v) && v >= 0 && v <= PROF_MAX_MS; }
static bool prof_ok_speed(double v) { return isfinite(v) && v >= 0 && v <= PROF_MAX_SPEED; }

/* TRUST BOUNDARY: record bytes come from other devices and from files; they are untrusted.
 * prof_record_open checks the header against the buffer, and each decoder checks every field
 * before it lands in a struct.  Returns the payload, or NULL with the reason in e; *used gets
 * the record's total bytes, so concatenated records can be walked. */
static const uint8_t *prof_record_open(const uint8_t *buf, size_t len, int kind, size_t payload, size_t *used, herr *e)
{
    static const char *const kind_name[] = {"?", "device", "model", "link"};
    if (len < PROF_HEADER_BYTES) return herr_set(e, "profile record truncated: %zu bytes, the header alone is %d", len, PROF_HEADER_BYTES), NULL;
    if (memcmp(buf, PROF_MAGIC, 4) != 0) return herr_set(e, "not a profile record (bad magic)"), NULL;
    unsigned version = (unsigned)read_le(buf + 4, 2), got_kind = (unsigned)read_le(buf + 6, 2);
    uint64_t n = read_le(buf + 8, 4);
    if (version != PROF_VERSION) return herr_set(e, "profile record version %u, this halda reads version %d", version, PROF_VERSION), NULL;
    if (got_kind != (unsigned)kind)
        return herr_set(e, "profile record of kind %u where a %s record (kind %d) was expected", got_kind, kind_name[kind], kind), NULL;
    if (n != payload) return herr_set(e, "%s record payload of %" PRIu64 " bytes, version %d has %zu", kind_name[kind], n, PROF_VERSION, payload), NULL;
    if (len - PROF_HEADER_BYTES < payload)
        return herr_set(e, "%s record truncated: %zu of %zu payload bytes", kind_name[kind], len - PROF_HEADER_BYTES, payload), NULL;
    *used = PROF_HEADER_BYTES + payload;
    return buf + PROF_HEADER_BYTES;
}

/* Is this a valid device name: 1..31 characters of [A-Za-z0-9._-]? */
static bool prof_name_ok(const char *s)
{
    size_t n = strnlen(s, PROF_NAME_BYTES);
    if (n == 0 || n >= PROF_NAME_BYTES) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') return false;
    return true;
}

/* Encode into buf (cap bytes).  Returns the record's size, or 0 when cap is too small. */
static size_t prof_device_encode(const device_profile *d, uint8_t *buf, size_t cap)
{
    if (cap < PROF_HEADER_BYTES + PROF_DEVICE_BYTES) return 0;
    prof_writer w = {buf, 0, cap};
    pw_header(&w, PROF_KIND_DEVICE, PROF_DEVICE_BYTES);
    size_t nl = strnlen(d->name, PROF_NAME_BYTES - 1);
    for (size_t i = 0; i < PROF_NAME_BYTES; i++) pw_u(&w, i < nl ? (uint8_t)d->name[i] : 0, 1);
    pw_u(&w, (uint64_t)d->os, 1), pw_u(&w, (uint64_t)d->gpu, 1);
    pw_u(&w, (uint64_t)d->n_cores, 2), pw_u(&w, (uint64_t)d->n_cpus, 2), pw_u(&w, (uint64_t)d->n_threads, 2);
    pw_u(&w, d->cpu_features, 4), pw_u(&w, 0, 4);
    pw_u(&w, d->model_id, 8), pw_u(&w, (uint64_t)d->measured_at, 8);
    pw_f64(&w, d->t_cpu_ms), pw_f64(&w, d->t_gpu_ms), pw_f64(&w, d->copy_bytes_per_s);
    pw_f64(&w, d->disk_seq_bytes_per_s), pw_f64(&w, d->disk_rand_bytes_per_s);
    pw_u(&w, d->ram_bytes, 8), pw_u(&w, d->swap_bytes, 8), pw_u(&w, d->vram_bytes, 8), pw_u(&w, d->fixed_vram_bytes, 8);
    assert(w.n == PROF_HEADER_BYTES + PROF_DEVICE_BYTES);
    return w.n;
}

static int prof_device_decode(device_profile *out, const uint8_t *buf, size_t len, size_t *used, herr *e)
{
    const uint8_t *p = prof_record_open(buf, len, PROF_KIND_DEVICE, PROF_DEVICE_BYTES, used, e);
    if (!p) return -1;
    device_profile d;
    memset(&d, 0, sizeof d);
    memcpy(d.name, p, PROF_NAME_BYTES);
    size_t nl = strnlen(d.name, PROF_NAME_BYTES);
    bool padded = nl < PROF_NAME_BYTES;
    for (size_t i = nl; i < PROF_NAME_BYTES; i++) padded &= d.name[i] == 0;
    if (!padded || !prof_name_ok(d.name)) return herr_set(e, "device record: the name is not 1..31 characters of [A-Za-z0-9._-], NUL-padded"), -1;
    prof_reader r = {p + PROF_NAME_BYTES};
    d.os = (int)pr_u(&r, 1), d.gpu = (int)pr_u(&r, 1);
    d.n_cores = (int)pr_u(&r, 2), d.n_cpus = (int)pr_u(&r, 2), d.n_threads = (int)pr_u(&r, 2);
    d.cpu_features = (uint32_t)pr_u(&r, 4);
    uint64_t zero = pr_u(&r, 4);
    d.model_id = pr_u(&r, 8), d.measured_at = (int64_t)pr_u(&r, 8);
    d.t_cpu_ms = pr_f64(&r), d.t_gpu_ms = pr_f64(&r), d.copy_bytes_per_s = pr_f64(&r);
    d.disk_seq_bytes_per_s = pr_f64(&r), d.disk_rand_bytes_per_s = pr_f64(&r);
    d.ram_bytes = pr_u(&r, 8), d.swap_bytes = pr_u(&r, 8), d.vram_bytes = pr_u(&r, 8), d.fixed_vram_bytes = pr_u(&r, 8);
    if (d.os < 0 || d.os >= PLATFORM_OS_COUNT) return herr_set(e, "device record: unknown os %d", d.os), -1;
    if (d.gpu < 0 || d.gpu >= PROF_GPU_COUNT) return herr_set(e, "device record: unknown gpu kind %d", d.gpu), -1;
    if (d.n_cores < 1 || d.n_cpus < 1 || d.n_threads < 1) return herr_set(e, "device record: core, cpu and thread counts must be at least 1"), -1;
    if (d.cpu_features >> CPU_FEATURE_COUNT || zero) return herr_set(e, "device record: unknown cpu feature bits or nonzero padding"), -1;
    if (d.measured_at < 0) return herr_set(e, "device record: negative measurement time"), -1;
    if (!prof_ok_ms(d.t_cpu_ms) || !prof_ok_ms(d.t_gpu_ms)) return herr_set(e, "device record: t_cpu or t_gpu is not a time in [0, %g] ms", PROF_MAX_MS), -1;
    if (!prof_ok_speed(d.copy_bytes_per_s) || !prof_ok_speed(d.disk_seq_bytes_per_s) || !prof_ok_speed(d.disk_rand_bytes_per_s))
        return herr_set(e, "device record: a speed is not in [0, %g] bytes/s", PROF_MAX_SPEED), -1;
    if (d.ram_bytes > PROF_MAX_BYTES || d.swap_bytes > PROF_MAX_BYTES || d.vram_bytes > PROF_MAX_BYTES || d.fixed_vram_bytes > PROF_MAX_BYTES)
        return herr_set(e, "device record: a memory size exceeds %llu bytes", (unsigned long long)PROF_MAX_BYTES), -1;
    if (d.gpu == PROF_GPU_NONE && (d.t_gpu_ms != 0 || d.vram_bytes || d.fixed_vram_bytes))
        return herr_set(e, "device record: GPU figures on a device without a GPU"), -1;
    *out = d;
    return 0;
}

/* KV cache types in records are ggml type ids, which do not depend on this build's enum. */
static int prof_kv_to_wire(int kv_type) { return kv_type == HALDA_KV_F32 ? TYPE_F32 : TYPE_F16; }
static int prof_kv_from_wire(uint64_t t) { return t == TYPE_F32 ? HALDA_KV_F32 : t == TYPE_F16 ? HALDA_KV_F16 : -1; }

static size_t prof_model_encode(const model_profile *m, uint8_t *buf, size_t cap)
{
    if (cap < PROF_HEADER_BYTES + PROF_MODEL_BYTES) return 0;
    prof_writer w = {buf, 0, cap};
    pw_header(&w, PROF_KIND_MODEL, PROF_MODEL_BYTES);
    pw_u(&w, m->model_id, 8);
    pw_u(&w, (uint64_t)m->n_layer, 4), pw_u(&w, (uint64_t)m->n_embd, 4), pw_u(&w, (uint64_t)m->n_vocab, 4);
    pw_u(&w, (uint64_t)m->n_ctx, 4), pw_u(&w, (uint64_t)prof_kv_to_wire(m->kv_type), 4), pw_u(&w, 0, 4);
    pw_u(&w, m->layer_bytes, 8), pw_u(&w, m->layers_bytes, 8), pw_u(&w, m->head_bytes, 8);
    pw_u(&w, m->kv_bytes, 8), pw_u(&w, m->compute_bytes, 8), pw_u(&w, m->head_fixed_bytes, 8);
    pw_f64(&w, m->kappa_ms);
    assert(w.n == PROF_HEADER_BYTES + PROF_MODEL_BYTES);
    return w.n;
}

static int prof_model_decode(model_profile *out, const uint8_t *buf, size_t len, size_t *used, herr *e)
{
    const uint8_t *p = prof_record_open(buf, len, PROF_KIND_MODEL, PROF_MODEL_BYTES, used, e);
    if (!p) return -1;
    prof_reader r = {p};
    model_profile m;
    memset(&m, 0, sizeof m);
    m.model_id = pr_u(&r, 8);
    uint64_t n_layer = pr_u(&r, 4), n_embd = pr_u(&r, 4), n_vocab = pr_u(&r, 4), n_ctx = pr_u(&r, 4);
    uint64_t kv_wire = pr_u(&r, 4), zero = pr_u(&r, 4);
    m.layer_bytes = pr_u(&r, 8), m.layers_bytes = pr_u(&r, 8), m.head_bytes = pr_u(&r, 8);
    m.kv_bytes = pr_u(&r, 8), m.compute_bytes = pr_u(&r, 8), m.head_fixed_bytes = pr_u(&r, 8);
    m.kappa_ms = pr_f64(&r);
    /* the same ranges the GGUF reader accepts */
    if (n_layer < 1 || n_layer > 4096 || n_embd < 1 || n_embd > (1u << 20) || n_vocab < 1 || n_vocab > (1u << 24) ||
        n_ctx < 1 || n_ctx > (1u << 24))
        return herr_set(e, "model record: layers, width, vocabulary or context out of range"), -1;
    m.n_layer = (int)n_layer, m.n_embd = (int)n_embd, m.n_vocab = (int)n_vocab, m.n_ctx = (int)n_ctx;
    if ((m.kv_type = prof_kv_from_wire(kv_wire)) < 0 || zero) return herr_set(e, "model record: unknown KV cache type or nonzero padding"), -1;
    uint64_t sizes[] = {m.layer_bytes, m.layers_bytes, m.head_bytes, m.kv_bytes, m.compute_bytes, m.head_fixed_bytes};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i] > PROF_MAX_BYTES) return herr_set(e, "model record: a size exceeds %llu bytes", (unsigned long long)PROF_MAX_BYTES), -1;
    /* the largest layer is at least the mean and at most the whole */
    if (m.layer_bytes > m.layers_bytes || m.layer_bytes * n_layer < m.layers_bytes)
        return herr_set(e, "model record: largest layer %" PRIu64 " bytes is inconsistent with %" PRIu64 " bytes in %d layers", m.layer_bytes,
                        m.layers_bytes, m.n_layer), -1;
    if (!prof_ok_ms(m.kappa_ms)) return herr_set(e, "model record: kappa_ms is not a time in [0, %g] ms", PROF_MAX_MS), -1;
    *out = m;
    return 0;
}

__attribute__((unused)) static size_t prof_link_encode(const link_profile *l, uint8_t *buf, size_t cap)
{
    if (cap < PROF_HEADER_BYTES + PROF_LINK_BYTES) return 0;
    prof_writer w = {buf, 0, cap};
    pw_header(&w, PROF_KIND_LINK, PROF_LINK_BYTES);
    pw_f64(&w, l->rtt_ms), pw_f64(&w, l->bytes_per_s);
    pw_u(&w, l->msg_bytes, 4), pw_u(&w, 0, 4);
    assert(w.n == PROF_HEADER_BYTES + PROF_LINK_BYTES);
    return w.n;
}

__attribute__((unused)) static int prof_link_decode(link_profile *out, const uint8_t *buf, size_t len, size_t *used, herr *e)
{
    const uint8_t *p = prof_record_open(buf, len, PROF_KIND_LINK, PROF_LINK_BYTES, used, e);
    if (!p) return -1;
    prof_reader r = {p};
    link_profile l;
    l.rtt_ms = pr_f64(&r), l.bytes_per_s = pr_f64(&r);
    l.msg_bytes = (uint32_t)pr_u(&r, 4);
    uint64_t zero = pr_u(&r, 4);
    if (!prof_ok_ms(l.rtt_ms)) return herr_set(e, "link record: rtt_ms is not a time in [0, %g] ms", PROF_MAX_MS), -1;
    if (!prof_ok_speed(l.bytes_per_s) || l.bytes_per_s == 0) return herr_set(e, "link record: throughput is not in (0, %g] bytes/s", PROF_MAX_SPEED), -1;
    if (l.msg_bytes == 0 || l.msg_bytes > (1u << 30) || zero) return herr_set(e, "link record: message size not in [1, 2^30] or nonzero padding"), -1;
    *out = l;
    return 0;
}

/* ---- The model, from its GGUF alone ------------------------------------------------------------ */

/* FNV-1a, 64-bit: a fast, stable hash for identities (not for security). */
static uint64_t prof_fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
#define PROF_FNV_BASIS 0xcbf29ce484222325ull

/* A model's identity: the hash of its header (metadata and tensor table, which name every
 * tensor's shape, type and offset) and of its size.  It survives renaming and copying the file
 * to another device, which is what lets two devices agree that they hold the same model. */
static uint64_t prof_model_id(const gguf_file *f)
{
    uint8_t size_le[8];
    for (int i = 0; i < 8; i++) size_le[i] = (uint8_t)(f->map.size >> (8 * i));
    uint64_t h = prof_fnv1a(PROF_FNV_BASIS, f->map.data, (size_t)f->data_offset);
    h = prof_fnv1a(h, size_le, 8);
    return h ? h : 1; /* 0 means "no model" */
}

/* Bytes of a context's scratch arena: the same sum halda_context_new allocates (a test checks
 * they agree).  n_batch is 512 capped at the context, as halda run uses. */
static uint64_t prof_compute_bytes(const model_hparams *hp, int n_ctx, int n_threads)
{
    int64_t B = n_ctx < 512 ? n_ctx : 512;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t widest = hp->n_embd > hp->n_ff ? hp->n_embd : hp->n_ff;
    if (q_dim > widest) widest = q_dim;
    uint64_t floats = (uint64_t)(B * hp->n_embd * 2 + B * q_dim * 2 + B * kv_dim * 2 + B * hp->n_ff * 2 + B * hp->n_rot +
                                 (int64_t)n_threads * n_ctx + hp->n_vocab + 2 * B);
    return floats * sizeof(float) + (uint64_t)B * act_row_bytes_max(widest) + 64;
}

/* The layer a tensor belongs to ("blk.<l>.…"), or -1 for the head's tensors. */
static int prof_tensor_layer(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0 || !isdigit((unsigned char)name[4])) return -1;
    char *end;
    long l = strtol(name + 4, &end, 10);
    return *end == '.' && l >= 0 && l < INT_MAX ? (int)l : -1;
}

/* The model profile's sizes, from the tensor table (kappa_ms is left 0: it is measured).
 * layer_bytes_out, when not NULL, receives n_layer per-layer byte counts (caller-owned). */
static int prof_model_sizes(const gguf_file *f, const model_hparams *hp, int n_vocab, int n_ctx, int kv_type, int n_threads,
                            model_profile *mp, uint64_t *layer_bytes_out, herr *e)
{
    memset(mp, 0, sizeof *mp);
    uint64_t *per_layer = layer_bytes_out ? layer_bytes_out : xcalloc((size_t)hp->n_layer, sizeof *per_layer);
    if (!per_layer) return herr_set(e, "out of memory"), -1;
    if (layer_bytes_out) memset(per_layer, 0, (size_t)hp->n_layer * sizeof *per_layer);
    int rc = -1;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int l = prof_tensor_layer(t->name);
        if (l >= hp->n_layer) {
            herr_set(e, "tensor '%s' belongs to layer %d but the model has %d layers", t->name, l, hp->n_layer);
            goto done;
        }
        uint64_t *sum = l >= 0 ? &per_layer[l] : &mp->head_bytes;
        if (!add_u64(*sum, t->bytes, sum)) {
            herr_set(e, "tensor sizes overflow");
            goto done;
        }
    }
    for (int l = 0; l < hp->n_layer; l++) {
        if (per_layer[l] == 0) {
            herr_set(e, "layer %d has no tensors", l);
            goto done;
        }
        if (per_layer[l] > mp->layer_bytes) mp->layer_bytes = per_layer[l];
        mp->layers_bytes += per_layer[l]; /* no overflow: each term is part of the file */
    }
    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight"), *out = gguf_find_tensor(f, "output.weight");
    const gguf_tensor *norm = gguf_find_tensor(f, "output_norm.weight");
    if (!embd) {
        herr_set(e, "tensor 'token_embd.weight' is missing");
        goto done;
    }
    /* the head holds the output matrix (the embeddings themselves when tied) and one embedding
     * row per token; logits live in the compute buffers; the sampler keeps two vocab-sized arrays */
    mp->head_fixed_bytes = (out ? out->bytes + type_row_bytes(embd->type, hp->n_embd) : embd->bytes) + (norm ? norm->bytes : 0) +
                           2 * sizeof(float) * (uint64_t)n_vocab;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    mp->n_layer = hp->n_layer, mp->n_embd = hp->n_embd, mp->n_vocab = n_vocab, mp->n_ctx = n_ctx, mp->kv_type = kv_type;
    mp->kv_bytes = kv_cache_bytes(1, 1, n_ctx, (int)kv_dim, kv_type);
    mp->compute_bytes = prof_compute_bytes(hp, n_ctx, n_threads);
    mp->model_id = prof_model_id(f);
    rc = 0;
done:
    if (!layer_bytes_out) xfree(per_layer);
    return rc;
}

/* ---- The stand-in: timing a layer and the head --------------------------------------------------- */

/* The seven matrices of a layer, in the order of layer_weights, with their GGUF names. */
#define PROF_N_MATRIX 7
static const char *const prof_matrix_name[PROF_N_MATRIX] = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                                                            "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};

static tensor *prof_matrix(layer_weights *L, int i)
{
    tensor *t[PROF_N_MATRIX] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return t[i];
}

/* Shape of matrix i: ne[0] = row length (input width), ne[1] = rows (output width). */
static void prof_matrix_shape(const model_hparams *hp, int i, int64_t ne[2])
{
    int64_t E = hp->n_embd, F = hp->n_ff, Q = (int64_t)hp->n_head * hp->head_dim, K = (int64_t)hp->n_head_kv * hp->head_dim;
    static const int in_is[PROF_N_MATRIX] = {0, 0, 0, 2, 0, 0, 1}, out_is[PROF_N_MATRIX] = {2, 3, 3, 0, 1, 1, 0};
    int64_t width[4] = {E, F, Q, K}; /* 0 embd, 1 ff, 2 q, 3 kv */
    ne[0] = width[in_is[i]], ne[1] = width[out_is[i]];
}

/* What decides a layer's speed: the types of its matrices, and whether it has q/k/v biases. */
typedef struct {
    int type[PROF_N_MATRIX];
    bool bias;
    int first_layer; /* a layer of the model with this signature */
    int count;       /* how many layers have it */
} prof_signature;

/* Read layer l's signature from the tensor table, checking every matrix's shape; and check
 * that halda can compute (and synthesize) its types. */
static int prof_layer_signature(const gguf_file *f, const model_hparams *hp, int l, prof_signature *s, herr *e)
{
    char name[96];
    memset(s, 0, sizeof *s);
    for (int i = 0; i < PROF_N_MATRIX; i++) {
        snprintf(name, sizeof name, "blk.%d.%s", l, prof_matrix_name[i]);
        const gguf_tensor *t = gguf_find_tensor(f, name);
        int64_t ne[2];
        prof_matrix_shape(hp, i, ne);
        if (!t) return herr_set(e, "tensor '%s' is missing", name), -1;
        if (t->ne[0] != ne[0] || t->ne[1] != ne[1] || t->ne[2] != 1 || t->ne[3] != 1)
            return herr_set(e, "tensor '%s' has shape [%" PRId64 ", %" PRId64 "], expected [%" PRId64 ", %" PRId64 "]", name, t->ne[0], t->ne[1], ne[0], ne[1]), -1;
        if (!type_supported(t->type) || !type_info(t->type)->quantize)
            return herr_set(e, "cannot time a layer: tensor '%s' has type %s, which halda cannot compute yet", name, type_info(t->type)->name), -1;
        s->type[i] = t->type;
    }
    snprintf(name, sizeof name, "blk.%d.attn_q.bias", l);
    s->bias = gguf_find_tensor(f, name) != NULL;
    s->first_layer = l;
    return 0;
}

/* Fill a tensor of `rows` rows with made-up weights of its type: a few distinct random rows
 * (scaled by 1/sqrt(fan-in), like the synthetic models), quantized once and tiled.  The bytes
 * are real encodings (sane scales, no NaN or subnormal traps), and the memory traffic of
 * reading them is exactly that of a real tensor. */
static void prof_fill_tensor(uint8_t *dst, int type, int64_t cols, int64_t rows, float *row, uint64_t *rng)
{
    size_t row_bytes = type_row_bytes(type, cols);
    int64_t distinct = rows < 8 ? rows : 8;
    for (int64_t r = 0; r < distinct; r++) {
        synth_fill(row, cols, 1.0f / sqrtf((float)cols), rng);
        type_info(type)->quantize(row, dst + (size_t)r * row_bytes, cols);
    }
    for (int64_t r = distinct; r < rows; r++) memcpy(dst + (size_t)r * row_bytes, dst + (size_t)(r % distinct) * row_bytes, row_bytes);
}

/* A stand-in model: the real hyper-parameters and tensor types, made-up weights in one owned
 * allocation, n_copies distinct layers of one signature, and the head's output layer. */
typedef struct {
    halda_model model;      /* hp (n_layer = n_copies), layers, output, output_norm */
    uint8_t *weights;       /* owned: every tensor points in here */
    uint8_t *embd_row;      /* one embedding row of the model's embedding type (in weights) */
    int embd_type;
    halda_context *ctx;     /* owned */
    halda_sampler *sampler; /* owned, default parameters, as halda run samples */
    float *x0, *x;          /* [n_embd] the input of every timed token, and its working copy */
} prof_standin;

static void prof_standin_free(prof_standin *s)
{
    halda_context_free(s->ctx);
    halda_sampler_free(s->sampler);
    xfree(s->model.layers), xfree(s->weights), xfree(s->x0), xfree(s->x);
    memset(s, 0, sizeof *s);
}

static size_t prof_align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Build a stand-in with n_copies layers of signature sig, plus the model's output layer (of
 * out_type, n_vocab rows) and an embedding row of embd_type. */
static int prof_standin_init(prof_standin *s, const model_hparams *hp, const prof_signature *sig, int n_copies, int n_vocab,
                             int out_type, int embd_type, int n_threads, int kv_type, herr *e)
{
    memset(s, 0, sizeof *s);
    s->model.hp = *hp;
    s->model.hp.n_layer = n_copies;
    s->model.hp.n_vocab = n_vocab;
    int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, K = (int64_t)hp->n_head_kv * hp->head_dim;
    /* one layer's bytes: seven matrices, two norms, three optional biases, each 64-aligned */
    uint64_t layer = 0, total, out_bytes = (uint64_t)n_vocab * type_row_bytes(out_type, E);
    for (int i = 0; i < PROF_N_MATRIX; i++) {
        int64_t ne[2];
        prof_matrix_shape(hp, i, ne);
        layer += prof_align64((size_t)ne[1] * type_row_bytes(sig->type[i], ne[0]));
    }
    layer += 2 * prof_align64((size_t)E * 4) + (sig->bias ? prof_align64((size_t)(Q + 2 * K) * 4) : 0);
    if (!mul_u64(layer, (uint64_t)n_copies, &total) || !add_u64(total, prof_align64((size_t)out_bytes) + prof_align64((size_t)E * 4) + 64 + prof_align64(type_row_bytes(embd_type, E)), &total) ||
        total > SIZE_MAX / 2)
        return herr_set(e, "a stand-in of %d layers does not fit in memory", n_copies), -1;
    int64_t widest = hp->n_ff > Q ? hp->n_ff : Q;
    if (E > widest) widest = E;
    float *row = xmalloc((size_t)widest * sizeof *row);
    s->weights = xmalloc((size_t)total);
    s->model.layers = xcalloc((size_t)n_copies, sizeof *s->model.layers);
    s->x0 = xmalloc((size_t)E * sizeof *s->x0);
    s->x = xmalloc((size_t)E * sizeof *s->x);
    halda_sampler_params sp = halda_sampler_default_params(); /* what halda run samples with */
    s->sampler = halda_sampler_new(&sp, n_vocab);
    if (!row || !s->weights || !s->model.layers || !s->x0 || !s->x || !s->sampler) {
        xfree(row);
        prof_standin_free(s);
        return herr_set(e, "out of memory for a stand-in of %" PRIu64 " MiB", total >> 20), -1;
    }
    platform_small_pages(s->weights, (size_t)total); /* before the first touch */
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    uint8_t *p = (uint8_t *)(((uintptr_t)s->weights + 63) & ~(uintptr_t)63);
    for (int c = 0; c < n_copies; c++) {
        layer_weights *L = &s->model.layers[c];
        uint8_t *start = p;
        for (int i = 0; i < PROF_N_MATRIX; i++) {
            int64_t ne[2];
            prof_matrix_shape(hp, i, ne);
            tensor *t = prof_matrix(L, i);
            *t = (tensor){p, sig->type[i], {ne[0], ne[1]}, type_row_bytes(sig->type[i], ne[0]), prof_matrix_name[i]};
            if (c == 0) prof_fill_tensor(p, t->type, ne[0], ne[1], row, &rng);
            p += prof_align64((size_t)ne[1] * t->row_bytes);
        }
        tensor *vec[5] = {&L->attn_norm, &L->ffn_norm, &L->bq, &L->bk, &L->bv};
        int64_t len[5] = {E, E, Q, K, K};
        for (int v = 0; v < (sig->bias ? 5 : 2); v++) {
            *vec[v] = (tensor){p, TYPE_F32, {len[v], 1}, (size_t)len[v] * 4, "vector"};
            if (c == 0)
                for (int64_t j = 0; j < len[v]; j++) ((float *)p)[j] = v < 2 ? 1.0f + 0.1f * (2.0f * rand_unit(&rng) - 1.0f) : 0.1f * (2.0f * rand_unit(&rng) - 1.0f);
            p += prof_align64((size_t)len[v] * 4);
        }
        if (c > 0) memcpy(start, s->model.layers[0].wq.data, (size_t)(p - start)); /* same bytes, distinct memory */
    }
    s->model.output = (tensor){p, out_type, {E, n_vocab}, type_row_bytes(out_type, E), "output.weight"};
    prof_fill_tensor(p, out_type, E, n_vocab, row, &rng);
    p += prof_align64((size_t)out_bytes);
    s->model.output_norm = (tensor){p, TYPE_F32, {E, 1}, (size_t)E * 4, "output_norm.weight"};
    for (int64_t j = 0; j < E; j++) ((float *)p)[j] = 1.0f;
    p += prof_align64((size_t)E * 4);
    s->embd_row = p, s->embd_type = embd_type;
    synth_fill(row, E, 1.0f, &rng);
    type_info(embd_type)->quantize(row, p, E);
    synth_fill(s->x0, E, 1.0f, &rng);
    xfree(row);
    halda_context_params cp = halda_context_default_params();
    cp.n_ctx = PROF_CTX, cp.n_threads = n_threads, cp.kv_type = kv_type, cp.n_batch = 1; /* one token at a time, as decoding */
    char err[256];
    if (!(s->ctx = halda_context_new(&s->model, &cp, err, sizeof err))) {
        prof_standin_free(s);
        return herr_set(e, "stand-in context: %s", err), -1;
    }
    return 0;
}

/* Median of n values (sorts them). */
static int prof_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double prof_median(double *v, int n)
{
    if (n < 1) return 0;
    qsort(v, (size_t)n, sizeof *v, prof_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Medians of what one token costs on a stand-in, and how they were obtained. */
typedef struct {
    double layer_ms;                        /* one layer (the window's time / n_copies) */
    double embed_ms, output_ms, sample_ms;  /* the head's parts; their sum is kappa */
    int reps;
} prof_token_times;

#define PROF_MAX_REPS 64

/* Time tokens on the stand-in the way a device decodes them: the layers, then the embedding
 * row, the output layer and sampling.  The layers run first in each repeat, so the output
 * matrix is as cold as it is after the last layer of a real token.  One untimed warm-up (two
 * when a repeat is short), then repeats until budget_ms is spent: at most 64, and at least 3
 * unless one repeat takes over a third of the budget (a big model on a slow device), where a
 * single one has to do to keep profiling within seconds. */
static int prof_time_tokens(prof_standin *s, double budget_ms, prof_token_times *t, herr *e)
{
    halda_context *c = s->ctx;
    const model_hparams *hp = &s->model.hp;
    double layer[PROF_MAX_REPS], embed[PROF_MAX_REPS], output[PROF_MAX_REPS], sample[PROF_MAX_REPS];
    float *emb = c->xb; /* scratch: the embedding row is timed, not used */
    int reps = 0, seq = 0, warm = 1, min_reps = 3;
    double start = now_ms();
    for (int i = 0; reps < PROF_MAX_REPS; i++) {
        int pos = i % (PROF_CTX - 1);
        if (pos == 0) halda_kv_truncate(c, 0);
        memcpy(s->x, s->x0, (size_t)hp->n_embd * sizeof *s->x);
        double t0 = now_ms();
        if (model_forward_window(c, s->x, 1, &pos, &seq, 0, hp->n_layer)) return herr_set(e, "stand-in: %s", c->err.msg), -1;
        double t1 = now_ms();
        type_info(s->embd_type)->dequantize(s->embd_row, emb, hp->n_embd);
        double t2 = now_ms();
        model_output(c, s->x, c->logits);
        double t3 = now_ms();
        halda_sample(s->sampler, c->logits);
        double t4 = now_ms();
        if (i == 0 && t4 - t0 < budget_ms / 40) warm = 2; /* short repeats: one more to settle clocks and caches */
        if (i == 0 && t4 - t0 > budget_ms / 3) min_reps = 1;
        if (i < warm) continue;
        layer[reps] = (t1 - t0) / hp->n_layer, embed[reps] = t2 - t1, output[reps] = t3 - t2, sample[reps] = t4 - t3;
        reps++;
        if (reps >= min_reps && now_ms() - start >= budget_ms) break;
    }
    t->layer_ms = prof_median(layer, reps), t->embed_ms = prof_median(embed, reps);
    t->output_ms = prof_median(output, reps), t->sample_ms = prof_median(sample, reps);
    t->reps = reps;
    return 0;
}

/* What prof_measure_cpu found, beyond the two figures. */
typedef struct {
    double t_cpu_ms, kappa_ms;
    double embed_ms, output_ms, sample_ms;
    int n_signatures;  /* distinct layer kinds timed */
    int n_copies;      /* layers in the (first) stand-in */
    int reps;          /* timed repeats, all stand-ins together */
    double copy_bytes_per_s;
} prof_cpu;

#define PROF_MAX_SIGNATURES 8

/* t_cpu and kappa for a model: group its layers by signature (a mixed-type file such as a
 * Q4_K_M has two or three kinds), time each kind on its own stand-in, and average by layer
 * count, so that L·t_cpu is the whole model's layer time.  The stand-in holds enough layer
 * copies to exceed 4× the last-level cache (within 64..512 MiB and a quarter of ram_bytes),
 * or all L layers when the whole model is smaller: the same working set as real decoding.
 * The machine's copy bandwidth is measured on the first stand-in's threads. */
static int prof_measure_cpu(const gguf_file *f, const model_hparams *hp, int n_vocab, int n_threads, int kv_type, uint64_t ram_bytes,
                            double budget_ms, prof_cpu *out, herr *e)
{
    memset(out, 0, sizeof *out);
    prof_signature sigs[PROF_MAX_SIGNATURES];
    int n_sig = 0, counted = 0;
    for (int l = 0; l < hp->n_layer; l++) {
        prof_signature s;
        if (prof_layer_signature(f, hp, l, &s, e)) return -1;
        int k = 0;
        while (k < n_sig && !(memcmp(sigs[k].type, s.type, sizeof s.type) == 0 && sigs[k].bias == s.bias)) k++;
        if (k == n_sig && n_sig == PROF_MAX_SIGNATURES) continue; /* a ninth kind: the eight timed stand for it */
        if (k == n_sig) sigs[n_sig++] = s;
        sigs[k].count++, counted++;
    }
    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight"), *outw = gguf_find_tensor(f, "output.weight");
    if (!outw) outw = embd;
    if (!embd || !type_info(embd->type)->dequantize || !type_info(embd->type)->quantize)
        return herr_set(e, "cannot time the head: the embeddings' type %s is not supported", embd ? type_info(embd->type)->name : "(missing)"), -1;
    if (!type_supported(outw->type) || !type_info(outw->type)->quantize)
        return herr_set(e, "cannot time the head: tensor '%s' has type %s, which halda cannot compute yet", outw->name, type_info(outw->type)->name), -1;
    uint64_t target = 4 * platform_llc_bytes();
    target = target < (64ull << 20) ? 64ull << 20 : target > (512ull << 20) ? 512ull << 20 : target;
    if (ram_bytes && target > ram_bytes / 4) target = ram_bytes / 4;
    model_profile sizes;
    uint64_t *per_layer = xcalloc((size_t)hp->n_layer, sizeof *per_layer);
    if (!per_layer || prof_model_sizes(f, hp, n_vocab, PROF_CTX, kv_type, 1, &sizes, per_layer, e)) return xfree(per_layer), -1;
    double sum_layer = 0, kappa_parts[3] = {0, 0, 0};
    for (int k = 0; k < n_sig; k++) {
        uint64_t b = per_layer[sigs[k].first_layer]; /* the bytes of a layer of this kind */
        int n_copies = (int)((target + b - 1) / b);
        if (n_copies > hp->n_layer) n_copies = hp->n_layer;
        if (n_copies < 1) n_copies = 1;
        prof_standin s;
        if (prof_standin_init(&s, hp, &sigs[k], n_copies, n_vocab, outw->type, embd->type, n_threads, kv_type, e)) return xfree(per_layer), -1;
        prof_token_times t;
        /* the budget is shared in proportion to how many layers each kind has */
        int rc = prof_time_tokens(&s, budget_ms * sigs[k].count / counted, &t, e);
        if (rc == 0 && k == 0) {
            out->n_copies = n_copies;
            size_t bw_bytes = ram_bytes && ram_bytes / 8 < (256u << 20) ? (size_t)(ram_bytes / 8) : (size_t)256 << 20;
            out->copy_bytes_per_s = platform_copy_bandwidth(s.ctx->pool, bw_bytes < (16u << 20) ? (size_t)16 << 20 : bw_bytes);
        }
        prof_standin_free(&s);
        if (rc) return xfree(per_layer), -1;
        sum_layer += t.layer_ms * sigs[k].count;
        kappa_parts[0] += t.embed_ms * sigs[k].count, kappa_parts[1] += t.output_ms * sigs[k].count, kappa_parts[2] += t.sample_ms * sigs[k].count;
        out->reps += t.reps;
    }
    xfree(per_layer);
    out->t_cpu_ms = sum_layer / counted;
    out->embed_ms = kappa_parts[0] / counted, out->output_ms = kappa_parts[1] / counted, out->sample_ms = kappa_parts[2] / counted;
    out->kappa_ms = out->embed_ms + out->output_ms + out->sample_ms;
    out->n_signatures = n_sig;
    return 0;
}

/* ---- Disk ----------------------------------------------------------------------------------------- */

typedef struct {
    double seq_bytes_per_s, rand_bytes_per_s;
    uint64_t seq_bytes;   /* bytes read sequentially */
    uint64_t rand_reads;  /* 4 KiB random reads done */
    const char *method;   /* "O_DIRECT", "F_NOCACHE" or "drop" (see platform_open_uncached) */
    double cached_after_drop; /* "drop" only: the fraction that stayed cached (-1: unknown) */
    char path[1024];      /* the file read */
} prof_disk;

#define PROF_DISK_CHUNK ((size_t)4 << 20)
#define PROF_DISK_MAX_SEQ ((uint64_t)1 << 30)

/* The file to read for a path: itself, or for a folder its largest regular file (the file
 * system is what is measured; any big file on it will do, and nothing needs to be written). */
static int prof_disk_target(const char *path, char *out, size_t out_len, uint64_t *size, herr *e)
{
    struct stat st;
    if (stat(path, &st) != 0) return herr_set(e, "cannot read %s: %s", path, strerror(errno)), -1;
    if (S_ISREG(st.st_mode)) {
        snprintf(out, out_len, "%s", path);
        *size = (uint64_t)st.st_size;
    } else if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return herr_set(e, "cannot list %s: %s", path, strerror(errno)), -1;
        *size = 0;
        for (struct dirent *de; (de = readdir(d));) {
            char p[1024];
            struct stat fs;
            if ((size_t)snprintf(p, sizeof p, "%s/%s", path, de->d_name) >= sizeof p || stat(p, &fs) != 0 || !S_ISREG(fs.st_mode)) continue;
            if ((uint64_t)fs.st_size > *size && access(p, R_OK) == 0) *size = (uint64_t)fs.st_size, snprintf(out, out_len, "%s", p);
        }
        closedir(d);
    } else {
        return herr_set(e, "%s is neither a file nor a folder", path), -1;
    }
    if (*size < 4096) return herr_set(e, "no file of at least 4 KiB to read in %s (give --disk a large file on that file system)", path), -1;
    return 0;
}

/* Read speed of the file system holding `path`, around the page cache: sequential reads of
 * 4 MiB for ~60% of budget_ms (up to 1 GiB, starting over at the end of a small file), then
 * 4 KiB reads at random aligned offsets for the rest.  Reads only.  allow_direct = false skips
 * O_DIRECT (the tests use it to exercise the fallback). */
static int prof_measure_disk(const char *path, double budget_ms, bool allow_direct, prof_disk *out, herr *e)
{
    memset(out, 0, sizeof *out);
    out->cached_after_drop = -1;
    uint64_t size;
    if (prof_disk_target(path, out->path, sizeof out->path, &size, e)) return -1;
    uint8_t *raw = xmalloc(PROF_DISK_CHUNK + 4096);
    if (!raw) return herr_set(e, "out of memory"), -1;
    uint8_t *buf = (uint8_t *)(((uintptr_t)raw + 4095) & ~(uintptr_t)4095); /* O_DIRECT wants aligned buffers */
    int rc = -1, fd = -1;
    for (int attempt = 0; attempt < 2 && rc != 0; attempt++) { /* a second time without O_DIRECT if reads refuse it */
        if (fd >= 0) close(fd);
        if ((fd = platform_open_uncached(out->path, allow_direct && attempt == 0, &out->method)) < 0) {
            herr_set(e, "cannot open %s: %s", out->path, strerror(errno));
            break;
        }
        bool drop = !strcmp(out->method, "drop");
        uint64_t span = size < PROF_DISK_MAX_SEQ ? size : PROF_DISK_MAX_SEQ;
        if (drop) {
            platform_drop_file_cache(fd, false);
            out->cached_after_drop = platform_cached_fraction(fd, span);
        }
        /* sequential */
        uint64_t off = 0, bytes = 0;
        double t0 = now_ms(), t = 0;
        bool failed = false;
        while (bytes < PROF_DISK_MAX_SEQ && (t = now_ms() - t0) < 0.6 * budget_ms) {
            ssize_t n = pread(fd, buf, PROF_DISK_CHUNK, (off_t)off);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                failed = true;
                break;
            }
            bytes += (uint64_t)n, off += (uint64_t)n;
            if (n == 0 || off >= size) { /* the end: start over, from disk again */
                off = 0;
                if (drop) platform_drop_file_cache(fd, false);
            }
        }
        if (failed || bytes == 0) {
            if (attempt == 0 && !strcmp(out->method, "O_DIRECT")) continue;
            herr_set(e, "reading %s: %s", out->path, failed ? strerror(errno) : "no bytes");
            break;
        }
        out->seq_bytes = bytes;
        out->seq_bytes_per_s = (double)bytes / ((now_ms() - t0) / 1e3);
        /* random 4 KiB */
        if (drop) platform_drop_file_cache(fd, true);
        /* offsets stay below 2 GiB where off_t has 32 bits (32-bit Android without large-file support) */
        uint64_t reach = sizeof(off_t) < 8 && size > (1ull << 31) ? 1ull << 31 : size;
        uint64_t blocks = reach / 4096, rng = 0x2545f4914f6cdd1dull, reads = 0;
        t0 = now_ms();
        while (reads < 100000 && (reads < 16 || now_ms() - t0 < 0.4 * budget_ms)) {
            ssize_t n = pread(fd, buf, 4096, (off_t)(splitmix64(&rng) % blocks * 4096));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            reads++;
        }
        out->rand_reads = reads;
        out->rand_bytes_per_s = reads ? 4096.0 * (double)reads / ((now_ms() - t0) / 1e3) : 0;
        rc = 0;
    }
    if (fd >= 0) close(fd);
    xfree(raw);
    return rc;
}

/* ---- Profiling this device, with a cache --------------------------------------------------------- */

typedef struct {
    const char *model_path; /* NULL: the device alone (no t_cpu, no model profile) */
    const char *disk_path;  /* a file, or a folder, on the file system to time; NULL: the model's file */
    int n_threads;          /* 0: the physical cores, as halda run uses */
    int n_ctx;              /* 0: the model's training context capped at 4096, as halda run uses */
    int kv_type;            /* HALDA_KV_F16 or HALDA_KV_F32 */
    bool reprofile;         /* measure even when the cache holds this profile */
    bool no_cache;          /* neither read nor write the cache */
    double cpu_budget_ms, disk_budget_ms; /* 0: the defaults */
} prof_options;

/* What the table shows beyond the two records. */
typedef struct {
    bool from_cache;          /* the times and disk speeds came from cache_path */
    bool cache_saved;
    char cache_path[600];     /* "" without a cache */
    platform_memory mem;      /* always read now: memory changes by the minute */
    bool disk_measured;       /* disk holds this run's disk measurement */
    prof_disk disk;
    bool cpu_measured;        /* cpu holds this run's layer and head timing */
    prof_cpu cpu;
    uint64_t llc_bytes;
    uint64_t layer_bytes_min; /* the smallest layer, beside the model profile's largest */
    const char *arch;
    double wall_ms;           /* how long profiling took */
} prof_report;

/* Where the profile of this (device, model, threads, context, KV type, disk) is cached:
 * <cache dir>/profile-<hash>.bin.  False when there is no cache directory. */
static bool prof_cache_path(const device_profile *d, const model_profile *mp, const char *disk_path, char *out, size_t len)
{
    char dir[512], key[1200], *real = disk_path ? realpath(disk_path, NULL) : NULL;
    if (!platform_cache_dir(dir, sizeof dir)) return free(real), false;
    snprintf(key, sizeof key, "halda-profile v%d|%s|%016" PRIx64 "|t%d|c%d|kv%d|%s", PROF_VERSION, d->name, mp->model_id, d->n_threads,
             mp->n_ctx, mp->kv_type, real ? real : "");
    free(real); /* realpath's own malloc */
    return (size_t)snprintf(out, len, "%s/profile-%016" PRIx64 ".bin", dir, prof_fnv1a(PROF_FNV_BASIS, key, strlen(key))) < len;
}

/* Load a cached profile: a device record then a model record, nothing after.  It is used only
 * when it describes the same device, model and settings as `d` and `mp` (fresh from this run),
 * whose measured fields it then fills in.  False on any mismatch or damage: measure again. */
static bool prof_cache_load(const char *path, device_profile *d, model_profile *mp)
{
    uint8_t buf[2 * (PROF_HEADER_BYTES + PROF_DEVICE_BYTES + PROF_MODEL_BYTES)];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t len = fread(buf, 1, sizeof buf, f), used_d, used_m;
    fclose(f);
    device_profile cd;
    model_profile cm;
    herr e;
    if (prof_device_decode(&cd, buf, len, &used_d, &e) || prof_model_decode(&cm, buf + used_d, len - used_d, &used_m, &e) ||
        used_d + used_m != len)
        return false;
    bool same_model = cm.model_id == mp->model_id && cm.n_layer == mp->n_layer && cm.n_embd == mp->n_embd && cm.n_vocab == mp->n_vocab &&
                      cm.n_ctx == mp->n_ctx && cm.kv_type == mp->kv_type && cm.layer_bytes == mp->layer_bytes &&
                      cm.layers_bytes == mp->layers_bytes && cm.head_bytes == mp->head_bytes && cm.kv_bytes == mp->kv_bytes &&
                      cm.compute_bytes == mp->compute_bytes && cm.head_fixed_bytes == mp->head_fixed_bytes;
    if (!same_model || strcmp(cd.name, d->name) || cd.os != d->os || cd.n_threads != d->n_threads || cd.cpu_features != d->cpu_features ||
        cd.model_id != mp->model_id)
        return false;
    d->t_cpu_ms = cd.t_cpu_ms, d->t_gpu_ms = cd.t_gpu_ms, d->copy_bytes_per_s = cd.copy_bytes_per_s;
    d->disk_seq_bytes_per_s = cd.disk_seq_bytes_per_s, d->disk_rand_bytes_per_s = cd.disk_rand_bytes_per_s;
    d->measured_at = cd.measured_at;
    mp->kappa_ms = cm.kappa_ms;
    return true;
}

/* Write the cache atomically: a temporary file, then rename over the old one. */
static bool prof_cache_save(const char *path, const device_profile *d, const model_profile *mp)
{
    uint8_t buf[PROF_HEADER_BYTES + PROF_DEVICE_BYTES + PROF_HEADER_BYTES + PROF_MODEL_BYTES];
    size_t n = prof_device_encode(d, buf, sizeof buf);
    n += prof_model_encode(mp, buf + n, sizeof buf - n);
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return false;
    bool ok = fwrite(buf, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0) return true;
    remove(tmp);
    return false;
}

/* Profile this device, and with o->model_path the model on it.  Cheap facts (name, OS, cores,
 * features, memory) are read every time; the measured ones (t_cpu, kappa, copy bandwidth, disk)
 * come from the cache when it holds them for this device, model and settings, unless
 * o->reprofile.  mp may be NULL without a model.  Returns 0, or -1 with the reason in e. */
static int prof_run(const prof_options *o, device_profile *d, model_profile *mp, prof_report *r, herr *e)
{
    double start = now_ms();
    memset(d, 0, sizeof *d), memset(r, 0, sizeof *r);
    platform_device_name(d->name, sizeof d->name);
    d->os = platform_os_class();
    d->gpu = PROF_GPU_NONE; /* TODO(cuda): t_gpu, vram and fixed_vram once kernels_cuda.cu is built in */
    d->n_cores = platform_physical_cores(), d->n_cpus = platform_logical_cpus();
    d->n_threads = o->n_threads > 0 ? o->n_threads : d->n_cores;
    d->cpu_features = platform_cpu_features();
    platform_memory_info(&r->mem);
    r->llc_bytes = platform_llc_bytes();
    double cpu_budget = o->cpu_budget_ms > 0 ? o->cpu_budget_ms : PROF_CPU_BUDGET_MS;
    double disk_budget = o->disk_budget_ms > 0 ? o->disk_budget_ms : PROF_DISK_BUDGET_MS;
    const char *disk_path = o->disk_path ? o->disk_path : o->model_path;
    gguf_file f;
    halda_model hm; /* only its hyper-parameters: the model is never loaded for profiling */
    memset(&f, 0, sizeof f), memset(&hm, 0, sizeof hm);
    int rc = -1;
    if (o->model_path) {
        if (!mp) return herr_set(e, "a model profile needs somewhere to go"), -1;
        if (gguf_open(&f, o->model_path, e)) return -1;
        hm.file = f;
        const gguf_tensor *embd = gguf_find_tensor(&f, "token_embd.weight");
        if (model_read_hparams(&hm, e)) goto done;
        if (!embd || embd->ne[1] < 1 || embd->ne[1] > (1 << 24) || embd->ne[0] != hm.hp.n_embd) {
            herr_set(e, "tensor 'token_embd.weight' is missing or not [%d, vocabulary]", hm.hp.n_embd);
            goto done;
        }
        int n_vocab = (int)embd->ne[1];
        hm.hp.n_vocab = n_vocab;
        int n_ctx = o->n_ctx > 0 ? o->n_ctx : hm.hp.n_ctx_train < 4096 ? hm.hp.n_ctx_train : 4096;
        uint64_t *per_layer = xcalloc((size_t)hm.hp.n_layer, sizeof *per_layer);
        if (!per_layer || prof_model_sizes(&f, &hm.hp, n_vocab, n_ctx, o->kv_type, d->n_threads, mp, per_layer, e)) {
            if (!per_layer) herr_set(e, "out of memory");
            xfree(per_layer);
            goto done;
        }
        r->layer_bytes_min = UINT64_MAX;
        for (int l = 0; l < hm.hp.n_layer; l++)
            if (per_layer[l] < r->layer_bytes_min) r->layer_bytes_min = per_layer[l];
        xfree(per_layer);
        r->arch = hm.hp.arch == ARCH_QWEN2 ? "qwen2" : "llama";
        d->model_id = mp->model_id;
        if (!o->no_cache && prof_cache_path(d, mp, disk_path, r->cache_path, sizeof r->cache_path) && !o->reprofile)
            r->from_cache = prof_cache_load(r->cache_path, d, mp);
    }
    if (!r->from_cache) {
        if (disk_path) {
            if (prof_measure_disk(disk_path, disk_budget, true, &r->disk, e)) goto done;
            r->disk_measured = true;
            d->disk_seq_bytes_per_s = r->disk.seq_bytes_per_s, d->disk_rand_bytes_per_s = r->disk.rand_bytes_per_s;
        }
        if (o->model_path) {
            if (prof_measure_cpu(&f, &hm.hp, hm.hp.n_vocab, d->n_threads, o->kv_type, r->mem.ram_bytes, cpu_budget, &r->cpu, e)) goto done;
            r->cpu_measured = true;
            d->t_cpu_ms = r->cpu.t_cpu_ms, mp->kappa_ms = r->cpu.kappa_ms, d->copy_bytes_per_s = r->cpu.copy_bytes_per_s;
        } else {
            thread_pool *pool = pool_new(d->n_threads);
            if (!pool) {
                herr_set(e, "cannot start threads");
                goto done;
            }
            size_t bw_bytes = r->mem.ram_bytes && r->mem.ram_bytes / 8 < (256u << 20) ? (size_t)(r->mem.ram_bytes / 8) : (size_t)256 << 20;
            d->copy_bytes_per_s = platform_copy_bandwidth(pool, bw_bytes < (16u << 20) ? (size_t)16 << 20 : bw_bytes);
            pool_free(pool);
        }
        d->measured_at = (int64_t)time(NULL);
        d->ram_bytes = r->mem.ram_bytes, d->swap_bytes = r->mem.swap_free_bytes;
        if (o->model_path && r->cache_path[0]) r->cache_saved = prof_cache_save(r->cache_path, d, mp);
    }
    d->ram_bytes = r->mem.ram_bytes, d->swap_bytes = r->mem.swap_free_bytes; /* fresh even from the cache */
    rc = 0;
done:
    if (o->model_path) gguf_close(&f);
    r->wall_ms = now_ms() - start;
    return rc;
}

/* ---- Reports and instance lines ------------------------------------------------------------------- */

/* The disk figure the cost model wants: sequential reads where the page cache reads ahead
 * (linux, android); random reads on macOS, whose unified buffer cache drops mapped pages
 * under pressure and faults them back one at a time. */
static double prof_disk_for_model(const device_profile *d)
{
    return d->os == PLATFORM_OS_MACOS ? d->disk_rand_bytes_per_s : d->disk_seq_bytes_per_s;
}

/* fixed_ram of the cost model: the compute buffers, plus the output layer and friends when the
 * device is the head. */
static uint64_t prof_fixed_ram(const model_profile *mp, bool head) { return mp->compute_bytes + (head ? mp->head_fixed_bytes : 0); }

/* The `model` line of a Halda instance (../shared/halda/MODEL.md), newline-terminated. */
static void prof_instance_model_line(char *out, size_t len, const model_profile *mp)
{
    snprintf(out, len, "model layers=%d layer_bytes=%" PRIu64 " kv_bytes=%" PRIu64 " kappa_ms=%.6g\n", mp->n_layer, mp->layer_bytes,
             mp->kv_bytes, mp->kappa_ms);
}

/* The `device` line for d running mp, as the head or not, with the given t_comm. */
static void prof_instance_device_line(char *out, size_t len, const device_profile *d, const model_profile *mp, bool head, double t_comm_ms)
{
    snprintf(out, len,
             "device name=%s os=%s gpu=%s t_cpu=%.6g t_gpu=%.6g t_comm=%.6g ram=%" PRIu64 " vram=%" PRIu64 " disk=%.6g fixed_ram=%" PRIu64
             " fixed_vram=%" PRIu64 "\n",
             d->name, platform_os_name[d->os], prof_gpu_name[d->gpu], d->t_cpu_ms, d->t_gpu_ms, t_comm_ms, d->ram_bytes, d->vram_bytes,
             prof_disk_for_model(d), prof_fixed_ram(mp, head), d->fixed_vram_bytes);
}

/* "1.23 GiB" style, into buf. */
static const char *prof_bytes_str(char *buf, size_t len, double bytes)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) bytes /= 1024, u++;
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}

/* The human-readable table, then with a model the instance lines for this device alone. */
static void prof_print_report(FILE *out, const device_profile *d, const model_profile *mp, const prof_report *r, const char *model_path)
{
    char a[32], b[32], c[32], g[32];
    const platform_memory *m = &r->mem;
    fprintf(out, "halda profile of device %s", d->name);
    if (r->from_cache) {
        time_t when = (time_t)d->measured_at;
        char date[64];
        strftime(date, sizeof date, "%Y-%m-%d %H:%M", localtime(&when));
        fprintf(out, " (times and disk from the cache, measured %s; --reprofile measures again)\n", date);
    } else {
        fprintf(out, " (measured in %.1f s)\n", r->wall_ms / 1e3);
    }
    fprintf(out, "  os           %s\n", platform_os_name[d->os]);
    fprintf(out, "  cpu          %d cores, %d logical CPUs, %d threads used; last-level cache %s\n", d->n_cores, d->n_cpus, d->n_threads,
            prof_bytes_str(a, sizeof a, (double)r->llc_bytes));
    fprintf(out, "  features    ");
    for (int i = 0; i < CPU_FEATURE_COUNT; i++)
        if (d->cpu_features & (1u << i)) fprintf(out, " %s", platform_cpu_feature_name[i]);
    fprintf(out, "%s; compiled with %s\n", d->cpu_features ? "" : " (none detected)",
            HALDA_AVX2 && HALDA_F16C ? "avx2 fma f16c" : HALDA_AVX2 ? "avx2 fma" : HALDA_F16C ? "f16c" : "no SIMD");
    fprintf(out, "  memory       %s usable now (available %s of %s", prof_bytes_str(a, sizeof a, (double)m->ram_bytes),
            prof_bytes_str(b, sizeof b, (double)m->available_bytes), prof_bytes_str(c, sizeof c, (double)m->total_bytes));
    if (m->cgroup_limit_bytes)
        fprintf(out, "; cgroup limit %s, %s used", prof_bytes_str(a, sizeof a, (double)m->cgroup_limit_bytes),
                prof_bytes_str(b, sizeof b, (double)m->cgroup_usage_bytes));
    fprintf(out, "); swap %s free of %s\n", prof_bytes_str(a, sizeof a, (double)m->swap_free_bytes), prof_bytes_str(b, sizeof b, (double)m->swap_total_bytes));
    if (d->copy_bytes_per_s > 0) fprintf(out, "  memory bw    %.2f GB/s copy (read + write)\n", d->copy_bytes_per_s / 1e9);
    fprintf(out, "  gpu          %s%s\n", prof_gpu_name[d->gpu], d->gpu == PROF_GPU_NONE ? " (this build has no CUDA: t_gpu = 0)" : "");
    if (r->disk_measured) {
        const prof_disk *k = &r->disk;
        fprintf(out, "  disk         %s: sequential %.1f MB/s (%s read), random 4 KiB %.2f MB/s (%" PRIu64 " reads), page cache bypassed with %s",
                k->path, k->seq_bytes_per_s / 1e6, prof_bytes_str(a, sizeof a, (double)k->seq_bytes), k->rand_bytes_per_s / 1e6, k->rand_reads,
                k->method);
        if (!strcmp(k->method, "drop") && k->cached_after_drop > 0.01)
            fprintf(out, " (%.0f%% stayed cached: the figures are optimistic)", 100 * k->cached_after_drop);
        fprintf(out, "\n");
    } else if (d->disk_seq_bytes_per_s > 0) {
        fprintf(out, "  disk         sequential %.1f MB/s, random 4 KiB %.2f MB/s\n", d->disk_seq_bytes_per_s / 1e6, d->disk_rand_bytes_per_s / 1e6);
    } else {
        fprintf(out, "  disk         not measured (give -m MODEL or --disk PATH)\n");
    }
    if (!mp) return;
    fprintf(out, "halda profile of model %s (%s, %d layers, %d wide, %d tokens; context %d, %s KV cache)\n", model_path, r->arch, mp->n_layer, mp->n_embd,
            mp->n_vocab, mp->n_ctx, mp->kv_type == HALDA_KV_F32 ? "f32" : "f16");
    fprintf(out, "  layers       %s largest, %s smallest, %s all together; %s outside the layers\n",
            prof_bytes_str(a, sizeof a, (double)mp->layer_bytes), prof_bytes_str(b, sizeof b, (double)r->layer_bytes_min),
            prof_bytes_str(c, sizeof c, (double)mp->layers_bytes), prof_bytes_str(g, sizeof g, (double)mp->head_bytes));
    fprintf(out, "  kv cache     %s per layer\n", prof_bytes_str(a, sizeof a, (double)mp->kv_bytes));
    fprintf(out, "  fixed memory %s compute buffers on every device; the head adds %s (output layer, an embedding row, sampler)\n",
            prof_bytes_str(a, sizeof a, (double)mp->compute_bytes), prof_bytes_str(b, sizeof b, (double)mp->head_fixed_bytes));
    if (r->cpu_measured)
        fprintf(out, "  t_cpu        %.3f ms per layer (median of %d repeats over %d distinct layers in memory; %d kind%s of layer)\n", d->t_cpu_ms,
                r->cpu.reps, r->cpu.n_copies, r->cpu.n_signatures, r->cpu.n_signatures == 1 ? "" : "s");
    else
        fprintf(out, "  t_cpu        %.3f ms per layer\n", d->t_cpu_ms);
    fprintf(out, "  kappa        %.3f ms per token", mp->kappa_ms);
    if (r->cpu_measured) fprintf(out, " = embedding row %.3f + output layer %.3f + sampling %.3f", r->cpu.embed_ms, r->cpu.output_ms, r->cpu.sample_ms);
    double per_token = mp->kappa_ms + mp->n_layer * d->t_cpu_ms;
    fprintf(out, "\n  predicted    %.1f ms per token on this device alone (kappa + L·t_cpu), %.2f tokens/s\n", per_token,
            per_token > 0 ? 1e3 / per_token : 0);
    if (r->cache_path[0]) fprintf(out, "  cache        %s%s\n", r->cache_path, r->from_cache || r->cache_saved ? "" : " (could not be written)");
    char line[512];
    fprintf(out, "# halda instance v1: this device alone, as the head (t_comm = 0: no link)\n");
    prof_instance_model_line(line, sizeof line, mp);
    fputs(line, out);
    prof_instance_device_line(line, sizeof line, d, mp, true, 0);
    fputs(line, out);
}

/* HALDA_SECTION_END profiler */

/* =============================================================================================
 * 13. CLI
 *
 * `halda SUBCOMMAND [flags]`.  Flags follow llama.cpp where one exists (-m, -p, -n, -t, -c,
 * --temp ...).  A usage error prints one line `halda: <what>` and exits 2; a runtime failure
 * prints one line and exits 1.
 * ============================================================================================= */
#ifndef HALDA_NO_MAIN

typedef struct {
    const char *model, *prompt, *prompt_file, *out;
    int n_predict, n_threads, n_ctx, top, kv_type, runs;
    bool no_bos, special, tied;
    const char *disk; /* profile: a file or folder on the file system to time */
    bool reprofile;   /* profile: measure again even when cached */
    halda_sampler_params sp;
    bool seed_set;
    /* gen-model */
    synth_params synth;
} cli_opts;

static void cli_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void cli_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("halda: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static long long cli_int(const char *flag, const char *v, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) cli_die("%s needs an integer in [%lld, %lld], got '%s'", flag, lo, hi, v ? v : "");
    return x;
}
static float cli_float(const char *flag, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || !*v || *end || errno || !isfinite(x) || x < lo || x > hi) cli_die("%s needs a number in [%g, %g], got '%s'", flag, lo, hi, v ? v : "");
    return (float)x;
}

static const char *const usage_run =
    "usage: halda run -m MODEL -p PROMPT [-n N] [-t THREADS] [-c CTX] [--temp T] [--top-k K] [--top-p P]\n"
    "                 [--min-p P] [--repeat-penalty R] [--seed S] [-f PROMPT_FILE] [--kv-type f16|f32] [--special]\n"
    "Generate text: the continuation streams to stdout, timings go to stderr.\n";
static const char *const usage_eval =
    "usage: halda eval -m MODEL -p PROMPT [-n N] [--top K] [-t THREADS]\n"
    "Print the prompt's token ids, the top K logits at every prompt position, and N greedy tokens,\n"
    "computed token by token with an F32 KV cache (the format of llama.cpp's reference files).\n";
static const char *const usage_tokenize =
    "usage: halda tokenize -m MODEL -p TEXT [--no-bos] [--special]\nPrint the token ids of TEXT on one line.\n";
static const char *const usage_gen =
    "usage: halda gen-model -o PATH [--arch llama|qwen2] [--type TYPE] [--out-type TYPE] [--layers N] [--embd N]\n"
    "                       [--ff N] [--heads N] [--kv-heads N] [--vocab N] [--ctx N] [--tied] [--seed S]\n"
    "Write a synthetic model with deterministic random weights (types: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q6_k).\n";

/* Parse flags for a subcommand; `allowed` lists the flags it takes, space-separated. */
static void cli_parse(int argc, char **argv, const char *cmd, const char *allowed, const char *usage, cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = -1, o->n_threads = 0, o->n_ctx = 0, o->top = 5, o->kv_type = HALDA_KV_F16;
    o->sp = halda_sampler_default_params();
    o->synth = (synth_params){ARCH_LLAMA, TYPE_Q8_0, -1, 2, 256, 512, 4, 2, 1024, 2048, false, 1};
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            fputs(usage, stdout);
            exit(0);
        }
        char token[64];
        snprintf(token, sizeof token, " %s ", f);
        char list[512];
        snprintf(list, sizeof list, " %s ", allowed);
        if (f[0] != '-' || !strstr(list, token)) cli_die("unknown argument '%s' for '%s' (see halda %s --help)", f, cmd, cmd);
        bool is_switch = !strcmp(f, "--no-bos") || !strcmp(f, "--special") || !strcmp(f, "--tied") || !strcmp(f, "--reprofile");
        const char *v = is_switch ? NULL : (i + 1 < argc ? argv[++i] : NULL);
        if (!is_switch && !v) cli_die("%s needs a value", f);
        if (!strcmp(f, "-m")) o->model = v;
        else if (!strcmp(f, "-p")) o->prompt = v;
        else if (!strcmp(f, "-f")) o->prompt_file = v;
        else if (!strcmp(f, "-o")) o->out = v;
        else if (!strcmp(f, "-n")) o->n_predict = (int)cli_int(f, v, 0, 1 << 24);
        else if (!strcmp(f, "-t")) o->n_threads = (int)cli_int(f, v, 1, HALDA_MAX_THREADS);
        else if (!strcmp(f, "-c")) o->n_ctx = (int)cli_int(f, v, 1, 1 << 24);
        else if (!strcmp(f, "--top")) o->top = (int)cli_int(f, v, 1, 1000);
        else if (!strcmp(f, "-r")) o->runs = (int)cli_int(f, v, 1, 64);
        else if (!strcmp(f, "--temp")) o->sp.temperature = cli_float(f, v, 0, 100);
        else if (!strcmp(f, "--top-k")) o->sp.top_k = (int)cli_int(f, v, 0, 1 << 24);
        else if (!strcmp(f, "--top-p")) o->sp.top_p = cli_float(f, v, 0, 1);
        else if (!strcmp(f, "--min-p")) o->sp.min_p = cli_float(f, v, 0, 1);
        else if (!strcmp(f, "--repeat-penalty")) o->sp.repeat_penalty = cli_float(f, v, 0.01, 100);
        else if (!strcmp(f, "--repeat-last-n")) o->sp.repeat_last_n = (int)cli_int(f, v, 0, 1 << 20);
        else if (!strcmp(f, "--seed")) o->sp.seed = (uint64_t)cli_int(f, v, 0, LLONG_MAX), o->seed_set = true;
        else if (!strcmp(f, "--kv-type")) {
            if (!strcmp(v, "f16")) o->kv_type = HALDA_KV_F16;
            else if (!strcmp(v, "f32")) o->kv_type = HALDA_KV_F32;
            else cli_die("--kv-type takes f16 or f32, got '%s'", v);
        } else if (!strcmp(f, "--no-bos")) o->no_bos = true;
        else if (!strcmp(f, "--special")) o->special = true;
        else if (!strcmp(f, "--tied")) o->synth.tied = true;
        else if (!strcmp(f, "--reprofile")) o->reprofile = true;
        else if (!strcmp(f, "--disk")) o->disk = v;
        else if (!strcmp(f, "--arch")) {
            if (!strcmp(v, "llama")) o->synth.arch = ARCH_LLAMA;
            else if (!strcmp(v, "qwen2")) o->synth.arch = ARCH_QWEN2;
            else cli_die("--arch takes llama or qwen2, got '%s'", v);
        } else if (!strcmp(f, "--type") || !strcmp(f, "--out-type")) {
            int t = type_by_name(v);
            if (t < 0 || !type_info(t)->quantize || !type_supported(t)) cli_die("%s: cannot write weights of type '%s'", f, v);
            *(!strcmp(f, "--type") ? &o->synth.type : &o->synth.out_type) = t;
        } else if (!strcmp(f, "--layers")) o->synth.n_layer = (int)cli_int(f, v, 1, 1024);
        else if (!strcmp(f, "--embd")) o->synth.n_embd = (int)cli_int(f, v, 32, 65536);
        else if (!strcmp(f, "--ff")) o->synth.n_ff = (int)cli_int(f, v, 32, 262144);
        else if (!strcmp(f, "--heads")) o->synth.n_head = (int)cli_int(f, v, 1, 1024);
        else if (!strcmp(f, "--kv-heads")) o->synth.n_head_kv = (int)cli_int(f, v, 1, 1024);
        else if (!strcmp(f, "--vocab")) o->synth.n_vocab = (int)cli_int(f, v, 400, 1 << 20);
        else if (!strcmp(f, "--ctx")) o->synth.n_ctx = (int)cli_int(f, v, 16, 1 << 24);
        else if (!strcmp(f, "--seed-weights")) o->synth.seed = (uint64_t)cli_int(f, v, 0, LLONG_MAX);
    }
}

/* Read the prompt from -p or -f; the caller frees the result. */
static char *cli_prompt(const cli_opts *o, size_t *len)
{
    if (o->prompt && o->prompt_file) cli_die("give either -p or -f, not both");
    if (o->prompt) {
        *len = strlen(o->prompt);
        return strdup(o->prompt);
    }
    if (!o->prompt_file) cli_die("a prompt is needed (-p TEXT or -f FILE)");
    FILE *f = fopen(o->prompt_file, "rb");
    if (!f) cli_die("cannot open prompt file %s: %s", o->prompt_file, strerror(errno));
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    for (size_t r; s && (r = fread(s + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) s = realloc(s, cap *= 2);
    }
    fclose(f);
    if (!s) cli_die("out of memory reading %s", o->prompt_file);
    *len = n;
    return s;
}

static halda_model *cli_load(const cli_opts *o)
{
    if (!o->model) cli_die("a model is needed (-m FILE.gguf)");
    if (access(o->model, R_OK) != 0) cli_die("cannot open model %s: %s", o->model, strerror(errno));
    char err[512];
    halda_model *m = halda_model_load(o->model, err, sizeof err);
    if (!m) {
        fprintf(stderr, "halda: %s\n", err);
        exit(1);
    }
    return m;
}

static halda_context *cli_context(halda_model *m, const cli_opts *o, int kv_type)
{
    halda_context_params cp = halda_context_default_params();
    cp.n_ctx = o->n_ctx, cp.n_threads = o->n_threads, cp.kv_type = kv_type;
    char err[512];
    halda_context *c = halda_context_new(m, &cp, err, sizeof err);
    if (!c) {
        fprintf(stderr, "halda: %s\n", err);
        exit(1);
    }
    return c;
}

/* Tokenize the prompt into a new array; exits on failure. */
static int32_t *cli_tokenize(halda_model *m, const char *text, size_t len, bool bos, bool special, int *n)
{
    int cap = (int)len + 8;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    int r = t ? halda_tokenize(m, text, len, t, cap, bos, special) : -1;
    if (r < -1) { /* more room needed */
        cap = -r - 1;
        t = realloc(t, (size_t)cap * sizeof *t);
        r = t ? halda_tokenize(m, text, len, t, cap, bos, special) : -1;
    }
    if (r < 0) {
        fprintf(stderr, "halda: tokenization failed\n");
        exit(1);
    }
    *n = r;
    return t;
}

static void cli_fail(halda_context *c)
{
    fprintf(stderr, "halda: %s\n", halda_last_error(c));
    exit(1);
}

static int cmd_tokenize(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "tokenize", "-m -p -f --no-bos --special", usage_tokenize, &o);
    size_t len;
    char *text = cli_prompt(&o, &len);
    halda_model *m = cli_load(&o);
    int n;
    int32_t *t = cli_tokenize(m, text, len, !o.no_bos, o.special, &n);
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", t[i]);
    printf("\n");
    free(t), free(text);
    halda_model_free(m);
    return 0;
}

/* Indices of the k largest logits, by value descending then id ascending. */
static void top_k_ids(const float *logits, int n, int k, int32_t *out)
{
    for (int j = 0; j < k; j++) out[j] = -1;
    for (int i = 0; i < n; i++) {
        int j = k;
        while (j > 0 && (out[j - 1] < 0 || logits[i] > logits[out[j - 1]])) j--;
        if (j >= k) continue;
        memmove(out + j + 1, out + j, (size_t)(k - j - 1) * sizeof *out);
        out[j] = i;
    }
}

static int cmd_eval(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "eval", "-m -p -f -n --top -t -c", usage_eval, &o);
    size_t len;
    char *text = cli_prompt(&o, &len);
    int n_gen = o.n_predict < 0 ? 32 : o.n_predict;
    halda_model *m = cli_load(&o);
    int n_prompt;
    int32_t *toks = cli_tokenize(m, text, len, true, false, &n_prompt);
    if (n_prompt == 0) cli_die("the prompt has no tokens");
    cli_opts oc = o;
    if (!oc.n_ctx) oc.n_ctx = n_prompt + n_gen + 1;
    halda_context *c = cli_context(m, &oc, HALDA_KV_F32);
    int nv = halda_model_n_vocab(m), k = o.top < nv ? o.top : nv;
    float *logits = malloc((size_t)nv * sizeof *logits);
    int32_t *top = malloc((size_t)k * sizeof *top);
    printf("tokens");
    for (int i = 0; i < n_prompt; i++) printf(" %d", toks[i]);
    printf("\n");
    for (int i = 0; i < n_prompt; i++) {
        if (halda_eval(c, &toks[i], 1, i, logits)) cli_fail(c);
        top_k_ids(logits, nv, k, top);
        printf("logits %d", i);
        for (int j = 0; j < k; j++) printf(" %d:%.6f", top[j], logits[top[j]]);
        printf("\n");
    }
    int32_t *gen = malloc((size_t)(n_gen + 1) * sizeof *gen);
    int n_done = 0;
    for (int i = 0; i < n_gen; i++) {
        top_k_ids(logits, nv, 1, top);
        gen[n_done++] = top[0];
        if (i + 1 < n_gen && halda_eval(c, &top[0], 1, n_prompt + i, logits)) cli_fail(c);
    }
    printf("generated");
    for (int i = 0; i < n_done; i++) printf(" %d", gen[i]);
    printf("\ntext ");
    /* the text of the continuation on one line: byte tokens may leave invalid UTF-8, shown as
     * U+FFFD, and line breaks become spaces */
    size_t tcap = (size_t)n_done * 64 + 1, tlen = 0;
    uint8_t *tbuf = malloc(tcap);
    for (int i = 0; tbuf && i < n_done; i++) {
        int pl = halda_token_to_piece(m, gen[i], (char *)tbuf + tlen, tcap - tlen, 0);
        if (pl > 0) tlen += (size_t)pl;
    }
    for (size_t i = 0; tbuf && i < tlen;) {
        int l = utf8_valid_len(tbuf + i, tlen - i);
        if (l == 0) fputs("\xef\xbf\xbd", stdout), i++;
        else if (tbuf[i] < 0x20) putchar(' '), i++;
        else fwrite(tbuf + i, 1, (size_t)l, stdout), i += (size_t)l;
    }
    free(tbuf);
    printf("\n");
    free(gen), free(top), free(logits), free(toks), free(text);
    halda_context_free(c);
    halda_model_free(m);
    return 0;
}

static volatile sig_atomic_t cli_interrupted;
static void cli_on_sigint(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

static int cmd_run(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "run",
              "-m -p -f -n -t -c --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n --seed --kv-type --special",
              usage_run, &o);
    size_t len;
    char *text = cli_prompt(&o, &len);
    int n_gen = o.n_predict < 0 ? 128 : o.n_predict;
    if (!o.seed_set) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    double t0 = now_ms();
    halda_model *m = cli_load(&o);
    int n_prompt;
    int32_t *toks = cli_tokenize(m, text, len, true, o.special, &n_prompt);
    if (n_prompt == 0) cli_die("the prompt has no tokens");
    halda_context *c = cli_context(m, &o, o.kv_type);
    double t_load = now_ms() - t0;
    int nv = halda_model_n_vocab(m);
    float *logits = malloc((size_t)nv * sizeof *logits);
    halda_sampler *s = halda_sampler_new(&o.sp, nv);
    if (!logits || !s) cli_die("out of memory");
    int n_ctx = o.n_ctx ? o.n_ctx : (halda_model_n_ctx_train(m) < 4096 ? halda_model_n_ctx_train(m) : 4096);
    if (n_prompt >= n_ctx) {
        fprintf(stderr, "halda: the prompt has %d tokens but the context holds %d (raise -c)\n", n_prompt, n_ctx);
        return 1;
    }
    signal(SIGINT, cli_on_sigint);
    double t1 = now_ms();
    if (halda_eval(c, toks, n_prompt, 0, logits)) cli_fail(c);
    double t_prompt = now_ms() - t1;
    for (int i = 0; i < n_prompt; i++) halda_sampler_accept(s, toks[i]);
    double t2 = now_ms();
    int n_done = 0, pos = n_prompt;
    for (; n_done < n_gen && pos < n_ctx && !cli_interrupted; n_done++) {
        int32_t t = halda_sample(s, logits);
        if (halda_token_is_eog(m, t)) break;
        halda_sampler_accept(s, t);
        char piece[256];
        int pl = halda_token_to_piece(m, t, piece, sizeof piece, o.special);
        if (pl > 0) fwrite(piece, 1, (size_t)pl, stdout);
        fflush(stdout);
        if (n_done + 1 < n_gen && halda_eval(c, &t, 1, pos++, logits)) cli_fail(c);
    }
    double t_gen = now_ms() - t2;
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "halda: load %.0f ms | prompt %d tokens, %.1f ms, %.2f tok/s | generation %d tokens, %.1f ms, %.2f tok/s\n",
            t_load, n_prompt, t_prompt, n_prompt / (t_prompt / 1e3), n_done, t_gen, n_done > 0 ? n_done / (t_gen / 1e3) : 0.0);
    /* Weights live in the page cache (file-backed pages); our own memory is the KV cache, the
     * scratch arena and the vocabulary.  Show both so a user can see what a device needs. */
    double mib = 1024.0 * 1024.0;
    fprintf(stderr, "halda: memory %.1f MiB anonymous (KV cache %.1f MiB, scratch %.1f MiB), weights %.1f MiB mapped from the file\n",
            platform_rss_anon_bytes() / mib, 2.0 * kv_cache_bytes(c->kv.layer_end - c->kv.layer_begin, c->kv.n_seq, c->kv.n_ctx, c->kv.kv_dim, c->kv.type) / 2 / mib,
            c->arena_bytes / mib, halda_model_size_bytes(m) / mib);
    halda_sampler_free(s);
    free(logits), free(toks), free(text);
    halda_context_free(c);
    halda_model_free(m);
    return 0;
}

static int cmd_gen_model(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "gen-model",
              "-o --arch --type --out-type --layers --embd --ff --heads --kv-heads --vocab --ctx --tied --seed-weights", usage_gen, &o);
    if (!o.out) cli_die("gen-model needs -o PATH");
    synth_params *sp = &o.synth;
    if (sp->n_embd % sp->n_head || sp->n_head % sp->n_head_kv || (sp->n_embd / sp->n_head) % 2)
        cli_die("--embd must be a multiple of --heads (even head size) and --heads a multiple of --kv-heads");
    int bt = type_info(sp->type)->block_elems;
    int ot = type_info(sp->out_type >= 0 ? sp->out_type : sp->type)->block_elems;
    if (sp->n_embd % bt || sp->n_ff % bt || sp->n_embd % ot)
        cli_die("--embd and --ff must be multiples of the %s block size %d", type_info(sp->type)->name, bt);
    herr e = {{0}};
    if (synth_write(o.out, sp, &e)) {
        fprintf(stderr, "halda: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static const char *const usage_bench =
    "usage: halda bench -m MODEL [-p 512] [-n 128] [-t THREADS] [-r RUNS] [--kv-type f16|f32]\n"
    "Measure prompt processing (-p tokens in batches) and generation (-n tokens one by one) speed,\n"
    "R runs each (mean ± stdev), the weight bandwidth generation achieves (model bytes × tok/s) and\n"
    "the machine's copy bandwidth measured in the same run.  The last line is machine-readable:\n"
    "bench pp=TOK_PER_S tg=TOK_PER_S bw=GB_PER_S membw=GB_PER_S\n";

static void mean_sd(const double *x, int n, double *mean, double *sd)
{
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

static int cmd_bench(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "bench", "-m -p -n -t -r --kv-type", usage_bench, &o);
    /* -p is a token count here, not a prompt */
    int n_pp = o.prompt ? (int)cli_int("-p", o.prompt, 0, 1 << 20) : 512;
    int n_tg = o.n_predict < 0 ? 128 : o.n_predict, runs = o.runs > 0 ? o.runs : 3;
    if (n_pp + n_tg < 1) cli_die("nothing to measure: -p and -n are both 0");
    halda_model *m = cli_load(&o);
    cli_opts oc = o;
    oc.n_ctx = n_pp + n_tg + 1;
    halda_context *c = cli_context(m, &oc, o.kv_type);
    int nv = halda_model_n_vocab(m);
    int32_t *toks = malloc((size_t)(n_pp + n_tg + 1) * sizeof *toks);
    float *logits = malloc((size_t)nv * sizeof *logits);
    uint64_t rng = 1234;
    for (int i = 0; i < n_pp + n_tg + 1; i++) toks[i] = (int32_t)(splitmix64(&rng) % (uint64_t)nv);
    double pp[64], tg[64];
    if (runs > 64) runs = 64;
    fprintf(stderr, "halda bench: %s, %.2f GiB of weights, %d layers, %d threads, pp %d, tg %d, %d runs\n", o.model,
            halda_model_size_bytes(m) / 1073741824.0, halda_model_n_layer(m), c->pool->n_threads, n_pp, n_tg, runs);
    /* one warm-up pass brings the weights into the page cache */
    if (halda_eval(c, toks, 1, 0, logits)) cli_fail(c);
    for (int r = 0; r < runs; r++) {
        halda_kv_truncate(c, 0);
        double t0 = now_ms();
        if (n_pp > 0 && halda_eval(c, toks, n_pp, 0, logits)) cli_fail(c);
        double t1 = now_ms();
        for (int i = 0; i < n_tg; i++)
            if (halda_eval(c, &toks[n_pp + i], 1, n_pp + i, logits)) cli_fail(c);
        double t2 = now_ms();
        pp[r] = n_pp > 0 ? n_pp / ((t1 - t0) / 1e3) : 0;
        tg[r] = n_tg > 0 ? n_tg / ((t2 - t1) / 1e3) : 0;
        fprintf(stderr, "  run %d: pp %.2f tok/s, tg %.2f tok/s\n", r + 1, pp[r], tg[r]);
    }
    double pp_m, pp_s, tg_m, tg_s;
    mean_sd(pp, runs, &pp_m, &pp_s);
    mean_sd(tg, runs, &tg_m, &tg_s);
    double membw = platform_copy_bandwidth(c->pool, (size_t)256 << 20) / 1e9;
    double bw = (double)halda_model_size_bytes(m) * tg_m / 1e9;
    printf("prompt processing  %9.2f ± %.2f tok/s\n", pp_m, pp_s);
    printf("generation         %9.2f ± %.2f tok/s\n", tg_m, tg_s);
    printf("weight bandwidth   %9.2f GB/s during generation (%.0f%% of the %.2f GB/s copy bandwidth)\n", bw,
           membw > 0 ? 100 * bw / membw : 0, membw);
    printf("bench pp=%.2f tg=%.2f bw=%.2f membw=%.2f\n", pp_m, tg_m, bw, membw);
    free(toks), free(logits);
    halda_context_free(c);
    halda_model_free(m);
    return 0;
}

static const char *const usage_profile =
    "usage: halda profile [-m MODEL] [-t THREADS] [-c CTX] [--kv-type f16|f32] [--disk PATH] [--reprofile]\n"
    "Measure this device: CPU time per layer of MODEL (its own tensor types and shapes), the head's time\n"
    "per token, usable memory (cgroup limits included), disk read speed (page cache bypassed; --disk times\n"
    "another file or folder's file system), OS, cores and CPU features.  Prints a table and, with -m, the\n"
    "`model` and `device` lines of a Halda instance.  Times are cached per device and model in\n"
    "$XDG_CACHE_HOME/halda (default ~/.cache/halda); --reprofile measures again.\n";

static int cmd_profile(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "profile", "-m -t -c --kv-type --disk --reprofile", usage_profile, &o);
    if (o.model && access(o.model, R_OK) != 0) cli_die("cannot open model %s: %s", o.model, strerror(errno));
    if (o.disk && access(o.disk, R_OK) != 0) cli_die("cannot read %s: %s", o.disk, strerror(errno));
    prof_options po = {o.model, o.disk, o.n_threads, o.n_ctx, o.kv_type, o.reprofile, false, 0, 0};
    device_profile d;
    model_profile mp;
    prof_report r;
    herr e = {{0}};
    if (prof_run(&po, &d, o.model ? &mp : NULL, &r, &e)) {
        fprintf(stderr, "halda: %s\n", e.msg);
        return 1;
    }
    prof_print_report(stdout, &d, o.model ? &mp : NULL, &r, o.model);
    return 0;
}

static const char *const usage_main =
    "usage: halda COMMAND [flags]      (halda COMMAND --help for its flags)\n"
    "  run        generate text from a prompt\n"
    "  eval       print token ids, top logits and a greedy continuation (for comparing with llama.cpp)\n"
    "  tokenize   print the token ids of a text\n"
    "  gen-model  write a synthetic model with random weights (tests, demos, benchmarks)\n"
    "  bench      measure prompt and generation speed against the machine's memory bandwidth\n"
    "  profile    measure this device (and a model on it) for the Halda solver\n";

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(usage_main, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run")) return cmd_run(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc, argv);
    if (!strcmp(cmd, "gen-model")) return cmd_gen_model(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "profile")) return cmd_profile(argc, argv);
    cli_die("unknown command '%s' (see halda --help)", cmd);
}
#endif /* HALDA_NO_MAIN */
