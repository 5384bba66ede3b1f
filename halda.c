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
 *   2. Platform & utilities   errors, allocation, checked arithmetic, timers, file mapping, memory
 *   3. Numeric formats        f16/bf16, quantized block layouts
 *   4. Kernels                the weight-type table: dequantize, quantize, dot products (scalar + SIMD)
 *   5. Thread pool            rows of a matrix product split across persistent threads
 *   6. GGUF                   reading (untrusted bytes, all checked) and writing
 *   7. Model & forward pass   hyper-parameters, weights, KV cache, the windowed forward pass
 *   8. Tokenizer              SentencePiece and byte-level BPE, special tokens, chat templates
 *   9. Sampler                greedy, temperature, top-k, top-p, min-p, repetition penalty
 *  10. Synthetic models       deterministic random llama/qwen2 GGUFs for tests and the demo
 *  11. Profiler               t_cpu, kappa, memory, disk of a device; model sizes; profile records
 *  12. Halda solver           the exact layer assignment: k cycles, windows w, GPU layers n
 *  13. Crypto                 SHA-256 and HMAC-SHA256 for the cluster handshake
 *  14. Network & ring runtime frames, handshake, workers, the head, prefetch
 *  15. CLI                    `halda run | eval | tokenize | chat | gen-model | bench | profile | solve | worker`
 */

/* =============================================================================================
 * 1. Configuration
 *
 * Every compile-time switch has a default here, so a plain `cc halda.c` needs no -D flag.
 * ============================================================================================= */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* MAP_POPULATE, madvise flags and friends where the libc hides them */
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64 /* 64-bit off_t on 32-bit systems: model files are larger than 2 GiB */
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

/* AVX2 with FMA and F16C (x86-64-v3: Haswell, Zen and later; every processor with AVX2 has the
 * other two). */
#if !HALDA_NO_SIMD && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
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
/* AVX-512 (x86-64): the F, BW (byte and word) and VL (the same instructions on 256 and 128 bits)
 * subsets, which every AVX-512 processor since Skylake-SP has.  Its kernels are twins of the
 * AVX2 ones and use their helpers, so it needs AVX2.  VNNI adds the 4-byte dot product
 * vpdpbusd (u8 × s8, summed into 32 bits) and vpdpwssd (16 × 16 bits); AVX-VNNI (Alder Lake and
 * later, without AVX-512) has the same two on 256 bits, which is all the AVX2 kernels use. */
#if HALDA_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define HALDA_AVX512 1
#else
#define HALDA_AVX512 0
#endif
#if HALDA_AVX512 && defined(__AVX512VNNI__)
#define HALDA_AVX512VNNI 1
#else
#define HALDA_AVX512VNNI 0
#endif
#if HALDA_AVX2 && (HALDA_AVX512VNNI || defined(__AVXVNNI__))
#define HALDA_AVX_VNNI 1 /* the 256-bit byte and word dot products, from either extension */
#else
#define HALDA_AVX_VNNI 0
#endif
/* NEON on 64-bit ARM only: the kernels use A64 intrinsics (across-vector adds, vfmaq_f32)
 * that 32-bit ARM lacks, so 32-bit ARM runs the scalar kernels.  The dot product extension
 * (armv8.2-a+dotprod, __ARM_FEATURE_DOTPROD) gives the 4-byte dot product in one instruction;
 * without it the same integer sums come from widening multiplies. */
#if !HALDA_NO_SIMD && defined(__ARM_NEON) && defined(__aarch64__)
#define HALDA_NEON 1
#include <arm_neon.h>
#else
#define HALDA_NEON 0
#endif
#if HALDA_NEON && defined(__ARM_FEATURE_DOTPROD)
#define HALDA_NEON_DOTPROD 1
#else
#define HALDA_NEON_DOTPROD 0
#endif
/* What this build's kernels use, for reports. */
#define HALDA_SIMD_NAME                                                                                  \
    (HALDA_AVX512VNNI         ? "avx512 vnni"                                                            \
     : HALDA_AVX512           ? "avx512"                                                                 \
     : HALDA_AVX_VNNI         ? "avx2 fma avx-vnni"                                                      \
     : HALDA_AVX2 && HALDA_F16C ? "avx2 fma f16c"                                                        \
     : HALDA_AVX2             ? "avx2 fma"                                                               \
     : HALDA_F16C             ? "f16c"                                                                   \
     : HALDA_NEON_DOTPROD     ? "neon dotprod"                                                           \
     : HALDA_NEON             ? "neon"                                                                   \
                              : "no SIMD")

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

/* Read-only mappings of a model file.  MAP_SHARED + PROT_READ: the pages belong to the page
 * cache, so weights cost no anonymous memory and the OS may drop and re-read them.  A device
 * maps only what it uses — the header, and one region per window of layers it runs — so a
 * 32-bit phone can serve its share of a file far larger than its address space.
 *
 * file_map: the open file and a mapping of its first `size` bytes (the GGUF header; for small
 * files, or a parser fed a buffer, the whole file).  file_region: one more mapping of the same
 * file at a page-aligned offset, made and dropped while the file stays open. */
typedef struct {
    const uint8_t *data; /* the file's bytes [0, size) */
    uint64_t size;       /* mapped bytes, <= file_size */
    uint64_t file_size;  /* the whole file */
    int fd;
} file_map;

typedef struct {
    const uint8_t *data; /* the file's bytes [off, off + size); NULL when not mapped */
    uint64_t off, size;  /* off: a multiple of the page size */
} file_region;

static uint64_t platform_page_bytes(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (uint64_t)page : 4096;
}

/* Map [off, off + len) of fd read-only; off must be a multiple of the page size.  NULL with a
 * reason when the range does not fit this address space or the OS refuses. */
static const uint8_t *platform_map(int fd, uint64_t off, uint64_t len, herr *e)
{
    /* with 32-bit pointers a range of 4 GiB or more cannot be mapped (and (size_t) would
     * silently cut its size) */
    if (len == 0 || len >= (uint64_t)SIZE_MAX || off > (uint64_t)INT64_MAX) {
        herr_set(e, "%.1f GiB cannot be mapped in a %d-bit address space", (double)len / (1u << 30), (int)(8 * sizeof(void *)));
        return NULL;
    }
    void *p = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, (off_t)off);
    if (p == MAP_FAILED) {
        herr_set(e, "cannot map %.1f MiB at offset %" PRIu64 ": %s", (double)len / (1u << 20), off, strerror(errno));
        return NULL;
    }
    return p;
}

/* Open path and map its first min(max_bytes, file size) bytes. */
static int file_map_open(file_map *m, const char *path, uint64_t max_bytes, herr *e)
{
    memset(m, 0, sizeof *m);
    m->fd = -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        herr_set(e, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) { /* EOVERFLOW: a file over 2 GiB where off_t has 32 bits */
        herr_set(e, "cannot read the size of %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        herr_set(e, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        herr_set(e, "%s is empty", path);
        close(fd);
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size < max_bytes ? (uint64_t)st.st_size : max_bytes;
    herr me;
    const uint8_t *p = platform_map(fd, 0, size, &me);
    if (!p) {
        herr_set(e, "%s (%.1f GiB): %s", path, (double)st.st_size / (1u << 30), me.msg);
        close(fd);
        return -1;
    }
    m->data = p;
    m->size = size;
    m->file_size = (uint64_t)st.st_size;
    m->fd = fd;
    return 0;
}

/* Map the first `bytes` bytes instead (more or fewer); the old addresses become invalid. */
static int file_map_resize(file_map *m, uint64_t bytes, herr *e)
{
    if (bytes > m->file_size) bytes = m->file_size;
    const uint8_t *p = platform_map(m->fd, 0, bytes, e);
    if (!p) return -1;
    munmap((void *)m->data, (size_t)m->size);
    m->data = p, m->size = bytes;
    return 0;
}

static void file_map_close(file_map *m)
{
    if (m->data) munmap((void *)m->data, (size_t)m->size);
    if (m->fd >= 0) close(m->fd);
    memset(m, 0, sizeof *m);
    m->fd = -1;
}

/* Map [off, off + len) of the file: the mapping starts at the page holding off. */
static int file_region_map(const file_map *m, uint64_t off, uint64_t len, file_region *r, herr *e)
{
    uint64_t page = platform_page_bytes(), end;
    memset(r, 0, sizeof *r);
    if (!add_u64(off, len, &end) || end > m->file_size || len == 0) return herr_set(e, "bytes [%" PRIu64 ", +%" PRIu64 ") are not in the file", off, len), -1;
    r->off = off / page * page;
    r->size = end - r->off;
    if (!(r->data = platform_map(m->fd, r->off, r->size, e))) return -1;
    return 0;
}

static void file_region_unmap(file_region *r)
{
    if (r->data) munmap((void *)r->data, (size_t)r->size);
    memset(r, 0, sizeof *r);
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

/* Bring [off, off+len) of the file (clipped to the region r maps) into memory: ask the kernel
 * (MADV_WILLNEED), then touch one byte per page, because some kernels treat the advice as
 * optional. */
static void platform_prefetch(const file_region *r, uint64_t off, uint64_t len)
{
    uint64_t page = platform_page_bytes();
    if (!r->data || off >= r->off + r->size || off + len <= r->off) return;
    if (off < r->off) len -= r->off - off, off = r->off;
    if (off + len > r->off + r->size) len = r->off + r->size - off;
    uint64_t a = off / page * page; /* r->off is page-aligned, so a >= r->off */
    madvise((void *)(r->data + (a - r->off)), (size_t)(off + len - a), MADV_WILLNEED);
    volatile uint8_t sink = 0;
    for (uint64_t p = off; p < off + len; p += page) sink ^= r->data[p - r->off];
    (void)sink;
}

/* Give [off, off+len) of the file (clipped to the region r maps) back: drop our page-table
 * entries and tell the page cache the pages are not needed soon, so an overloaded device evicts
 * what it just used rather than what it is about to use. */
static void platform_release(const file_region *r, int fd, uint64_t off, uint64_t len)
{
    uint64_t page = platform_page_bytes();
    if (!r->data || off >= r->off + r->size || off + len <= r->off) return;
    if (off < r->off) len -= r->off - off, off = r->off;
    if (off + len > r->off + r->size) len = r->off + r->size - off;
    uint64_t a = (off + page - 1) / page * page, e = (off + len) / page * page;
    if (e > a) madvise((void *)(r->data + (a - r->off)), (size_t)(e - a), MADV_DONTNEED);
#ifdef POSIX_FADV_DONTNEED
    if (fd >= 0) posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
#else
    (void)fd;
#endif
}

/* Bytes this process can still use (what platform_memory_info calls ram_bytes), or -1. */
static int64_t platform_ram_available_bytes(void)
{
    platform_memory m;
    platform_memory_info(&m);
    return m.ram_bytes ? (int64_t)m.ram_bytes : -1;
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

/* Half -> float, exact.  Subnormal halves are renormalised by hand.  These two _ref functions
 * specify the conversions; builds with F16C or NEON convert in hardware (below) and leave them
 * to the tests. */
__attribute__((unused)) static inline float f16_to_f32_ref(f16_t h)
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
__attribute__((unused)) static inline f16_t f32_to_f16_ref(float f)
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

/* The hardware conversions give the same bits as the _ref functions for every value but NaN,
 * whose payload they keep (tests/test_kernels.c checks all halves and a sweep of floats). */
#if HALDA_F16C
static inline float f16_to_f32(f16_t h) { return _cvtsh_ss(h); }
static inline f16_t f32_to_f16(float f) { return (f16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
#elif HALDA_NEON
static inline float f16_to_f32(f16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }
static inline f16_t f32_to_f16(float f) { return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0); }
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

/* IQ4_NL: 32 weights as 4-bit indices into a fixed non-linear codebook; w = d·iq4nl_values[q].
 * 4.5 bits per weight, like Q4_0, but the 16 levels are spaced more tightly near zero, where
 * most weights of a trained matrix lie, so the same bits carry less error.  Nibble order as
 * Q4_0 (qs[j]: element j low, element j+16 high).  Its dot product takes Q8_0 activations. */
typedef struct {
    f16_t d;
    uint8_t qs[QK / 2];
} block_iq4_nl;
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl layout");

/* The codebook is part of the format (llama.cpp's kvalues_iq4nl): sorted, in [-127, 113]. */
static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ---- IQ1_S and IQ1_M: 1.56 and 1.75 bits per weight ----------------------------------------
 * Groups of 8 weights are not quantized element by element but picked whole from a fixed grid
 * of 2048 patterns of 8 values in {−1, 0, +1} (an 11-bit index per group: 1.375 bits per
 * weight), then scaled and shifted: w = d·(2s+1)·(g_j + δ) with a 3-bit scale s and a shift
 * δ = ±1/8.  The shift lets a group lean positive or negative; the grid keeps the patterns
 * that trained weights actually show. */

/* IQ1_S: 8 sub-blocks ib of 32 weights, each 4 groups l of 8.  qs[4·ib + l] holds the low 8
 * bits of group l's grid index; qh[ib] (a little-endian u16) holds its high 3 bits in bits
 * 3l..3l+2, the sub-block's scale s in bits 12..14 and the sign of δ in bit 15 (set: δ = −1/8).
 * 1.5625 bits per weight. */
typedef struct {
    f16_t d;
    uint8_t qs[QK_K / 8];
    uint16_t qh[QK_K / 32];
} block_iq1_s;
static_assert(sizeof(block_iq1_s) == 50, "block_iq1_s layout");

/* IQ1_M: the same groups, with a scale per 16 weights and a shift per group of 8, and no F16
 * field: d's 16 bits ride in the top nibbles of the scales.  qs as IQ1_S; qh[2·ib + l/2] holds
 * group l's high 3 index bits and then its δ sign (set: −1/8) in its low nibble for even l, its
 * high nibble for odd l.  Read scales as four little-endian u16 sc[0..3]: bits 6·(ib%2)..+2 of
 * sc[ib/2] are the scale s of the first 16 weights of sub-block ib, the next 3 bits that of the
 * second 16; bits 12..15 of sc[k] are bits 4k..4k+3 of d.  1.75 bits per weight. */
typedef struct {
    uint8_t qs[QK_K / 8];
    uint8_t qh[QK_K / 16];
    uint8_t scales[QK_K / 32];
} block_iq1_m;
static_assert(sizeof(block_iq1_m) == 56, "block_iq1_m layout");

/* The grid is llama.cpp's iq1s_grid (ggml-common.h); it defines the format, so its values are
 * taken as they are.  That table lists its 2048 patterns in increasing order of the base-3
 * number p = Σ_j (g_j + 1)·3^j, so the grid is fully described by which of the 3^8 = 6561
 * patterns belong to it: bit p%32 of word p/32 below is set for a member.  iq1_grid_get()
 * expands it once into index -> 8 values; tests/test_kernels.c checks the expansion against
 * a checksum and sample entries of llama.cpp's table. */
static const uint32_t iq1_grid_bitmap[206] = {
    0x85142555, 0x514202a0, 0xa8314508, 0xa28a2086, 0x202a081a, 0x14508514, 0x45442082, 0xa0051525,
    0x88208202, 0x82080018, 0xa02a03a0, 0x0aaabb88, 0x000baa90, 0xaa0a0022, 0x08a0828c, 0x45085140,
    0x50808821, 0x08514214, 0x9808308a, 0x2a8008a0, 0x14214508, 0x42482085, 0x01450855, 0x20a0c22c,
    0x2a00268a, 0xa2aaa824, 0x08afe208, 0x00282808, 0x284202a0, 0xa82028aa, 0x9b0a2080, 0xa8bab908,
    0x89aeca20, 0x3aaaaea2, 0xbaeaeb7c, 0xb80e82bb, 0xd3caba22, 0x2202920e, 0xa8202200, 0x820aba8a,
    0x2a000802, 0x3ba2e04a, 0xa22b2022, 0x81408100, 0x08288aaa, 0x85140122, 0x20821550, 0x54214509,
    0x0208a085, 0x203aa823, 0x54208284, 0xa2085142, 0x50950820, 0x082a0214, 0x8082a8b8, 0x200248a0,
    0x68a28208, 0xab2802a2, 0x2085082a, 0x08308208, 0x45004045, 0xa0851421, 0x00514200, 0x82290145,
    0x2a828a00, 0x1430a108, 0x82145005, 0x21450828, 0x02208514, 0x2aaa2002, 0xb1122000, 0xa828ae8a,
    0xa8aaa1ba, 0x0a820070, 0x22280208, 0x82008402, 0xa0804800, 0xaa2ab0ea, 0xba8b20c2, 0xa7daea22,
    0xa86e8b8b, 0xaa2ab092, 0x448a8b72, 0x48202a0c, 0x8a284084, 0x20aa082a, 0x22a2ccc8, 0xa09aafa2,
    0x0002a8e8, 0xa82a0002, 0x80200088, 0xa2a28ba0, 0x80a0ba28, 0xba0a3282, 0xfebab8be, 0x2ba0a2eb,
    0x0a8a08a2, 0x00a2ea28, 0x0c0232a1, 0xdeeaa4fa, 0x2ea82bef, 0xeb7ebe8d, 0xbf7ff7fa, 0xdeba7de6,
    0xff27fb69, 0x12fa26bf, 0x228ae1e9, 0x0ebeaa10, 0xb208aa84, 0xae820ba8, 0xe924baff, 0x62048083,
    0xa8f2682c, 0x002ba40a, 0x08082a02, 0x0012aae2, 0x0a2a8202, 0x82c920a6, 0x28829089, 0x8c00a200,
    0x82001380, 0x6c000808, 0xbbaaaa8a, 0x8abea602, 0x8002caa0, 0xd02e976b, 0x8210e9b2, 0xdeaa2e10,
    0xa5d11528, 0x820a0004, 0x20828a00, 0x20a10108, 0xba39aa82, 0xa0843222, 0x00188009, 0x0262a28a,
    0x51441481, 0xac214500, 0x42145082, 0x20aa0851, 0x0a87aa28, 0x45082a12, 0xa0051421, 0x08514208,
    0x02200145, 0x22a240a0, 0x08008800, 0x8a6a08a2, 0xaaaab86e, 0x0a200080, 0x22c8e282, 0x50440821,
    0x09514214, 0x8515208a, 0x0a861450, 0x2a2aaa08, 0x420a0080, 0x21450851, 0x145000a8, 0xe2085142,
    0x0a828820, 0x082a8218, 0x8aaaa2aa, 0x0a028bb0, 0x2820aa2a, 0x0aaa8082, 0x00280828, 0x220288a9,
    0x280bbea0, 0xba8a08b8, 0xffaeb24b, 0xaef8a4ba, 0x285220aa, 0x30a0b668, 0x020a80e6, 0x6a220828,
    0x0a208062, 0x2baaaa02, 0xa9a2eaaa, 0x0808a2a0, 0x8aa02010, 0x0e820022, 0x14214500, 0x400aa085,
    0x21450851, 0x4a0006a9, 0xa50802aa, 0x440d1000, 0x08288214, 0x05142145, 0x82820800, 0x0020f2ac,
    0x0aaa0000, 0x20ba0a28, 0x0002a2ea, 0x28094882, 0x110014e9, 0x0051454b, 0x02a80145, 0x51421450,
    0x08248808, 0x400a2888, 0x01450008, 0x02a00514, 0x45085140, 0x00000001,
};

static int8_t iq1_grid[2048][8];  /* grid index -> its 8 values */
static int16_t iq1_grid_index[6561]; /* pattern p -> grid index, −1 for non-members (quantizer) */

static void iq1_grid_build(void)
{
    int k = 0;
    for (int p = 0; p < 6561; p++) {
        iq1_grid_index[p] = -1;
        if (!(iq1_grid_bitmap[p / 32] >> (p % 32) & 1) || k == 2048) continue;
        for (int j = 0, r = p; j < 8; j++, r /= 3) iq1_grid[k][j] = (int8_t)(r % 3 - 1);
        iq1_grid_index[p] = (int16_t)k++;
    }
}
static pthread_once_t iq1_grid_once = PTHREAD_ONCE_INIT;
static const int8_t (*iq1_grid_get(void))[8]
{
    pthread_once(&iq1_grid_once, iq1_grid_build);
    return (const int8_t (*)[8])iq1_grid;
}

#define IQ1_DELTA 0.125f /* |δ| */

/* ---- The k-quants ----------------------------------------------------------------------------
 * A super-block of 256 weights carries one or two F16 scales (d, and dmin where there is an
 * offset) and small integer scales per group of 16 or 32 weights, so a weight is
 *     w = d·sc[g]·q − dmin·m[g]          (Q2_K, Q4_K, Q5_K: unsigned q, a per-group minimum)
 *     w = d·sc[g]·q                      (Q3_K, Q6_K: signed q, signed scales)
 * The two-level scales cost a fraction of a bit per weight and let each group adapt.
 *
 * The 2-bit "planes" of Q2_K and Q3_K (and the 4+2-bit split of Q6_K) pack each half of 128
 * elements into 32 bytes: element i = 128h + 32s + l (half h, slice s in 0..3, l in 0..31) is
 * bits 2s..2s+1 of byte 32h + l.  A SIMD kernel loads 32 bytes and peels off 4 slices of 32
 * consecutive elements with one shift and mask each.  Q4_K and Q5_K do the same with nibbles:
 * element i = 64c + 32t + l is nibble t (0 low, 1 high) of byte 32c + l. */

/* Q2_K: 16 groups of 16; 2-bit q in [0,3]; w = d·sc[g]·q − dmin·m[g] with 4-bit sc (low nibble
 * of scales[g]) and 4-bit m (high nibble).  Element i is plane i%128/32 of qs[32·(i/128) + i%32];
 * its group is i/16.  2.625 bits per weight. */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    f16_t d, dmin;
} block_q2_K;
static_assert(sizeof(block_q2_K) == 84, "block_q2_K layout");

/* Q3_K: 16 groups of 16; 3-bit q in [-4,3]; w = d·sc[g]·q with a 6-bit scale sc in [-32,31]
 * (packed, see q3_K_scale).  The low 2 bits of element i = 128h + 32s + l are plane s of
 * qs[32h + l] as in Q2_K; its third bit is bit 4h + s of hmask[l], and a CLEAR bit means
 * q = low − 4 (a set bit: q = low).  3.4375 bits per weight. */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    f16_t d;
} block_q3_K;
static_assert(sizeof(block_q3_K) == 110, "block_q3_K layout");

/* Q3_K's 16 scales of 6 bits in 12 bytes: the low 4 bits of scale g are the low nibble of
 * scales[g] for g < 8 and the high nibble of scales[g − 8] for g >= 8; the high 2 bits are bits
 * 2·(g/4)..2·(g/4)+1 of scales[8 + g%4].  The stored value is biased by 32. */
static inline int q3_K_scale(const uint8_t s[12], int g)
{
    int low = g < 8 ? s[g] & 15 : s[g - 8] >> 4;
    int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    return (low | high << 4) - 32;
}

/* Q4_K: 8 sub-blocks of 32; 4-bit q in [0,15]; w = d·sc[j]·q − dmin·m[j] with 6-bit sc and m
 * (packed, see k_scale_min).  Element i = 64c + 32t + l is nibble t of qs[32c + l]; its
 * sub-block is i/32 = 2c + t.  4.5 bits per weight. */
typedef struct {
    f16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
} block_q4_K;
static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");

/* Q5_K: Q4_K plus a fifth bit: q in [0,31], its high bit is bit i/32 of qh[i%32].  5.5 bits
 * per weight. */
typedef struct {
    f16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");

/* Q4_K's and Q5_K's 8 scales and 8 minimums of 6 bits in 12 bytes.  Sub-blocks 0..3 keep their
 * scale in the low 6 bits of bytes 0..3 and their minimum in the low 6 bits of bytes 4..7.
 * Sub-blocks 4..7 keep the low 4 bits of the scale in the low nibble of bytes 8..11 and of the
 * minimum in their high nibble; their top 2 bits ride in the otherwise unused top 2 bits of
 * bytes 0..3 (scales) and 4..7 (minimums):
 *     byte  0..3 : mm ssssss    (s: scale j, mm: top bits of scale j+4)
 *     byte  4..7 : mm mmmmmm    (minimum j, top bits of minimum j+4)
 *     byte 8..11 : MMMM SSSS    (low bits of minimum and scale j+4) */
static inline void k_scale_min(const uint8_t s[12], int j, int *scale, int *min)
{
    if (j < 4) {
        *scale = s[j] & 63;
        *min = s[j + 4] & 63;
    } else {
        *scale = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *min = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

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
 * across all rows and threads; for a batch of tokens (a prompt) it hands whole tiles of rows ×
 * tokens to the type's `gemm` kernel (see "Matrix-matrix products" below).  SIMD variants
 * replace the dot products, the activation quantizers (Q8_0, Q8_1, Q8_K) and F16's row
 * conversion; the scalar functions are the specification.  Each build uses the widest set it
 * was compiled for: AVX-512 (with VNNI where the compiler targets it), else AVX2 (with
 * AVX-VNNI's byte products where available), NEON on 64-bit ARM, or the scalar code.
 *
 * Two summation orders per type, where llama.cpp has two.  An integer dot product is exact but
 * the F32 arithmetic around it is not, and llama.cpp's x86 backend adds up differently
 * depending on the matrix: one whose row count is a multiple of 8 (nearly every real one) is
 * "repacked" at load for some types (Q4_0, IQ4_NL, Q4_K, and Q2_K on AVX-512) and
 * computed 8 rows at a time, one F32 accumulator per row; any other goes through its plain
 * dot product, which keeps 8 F32 lanes per row (see lane_acc).  `vec_dot_r8` is the first
 * order and `type_vec_dot` picks it by row count.  `vec_dot_r8_8rows` computes that order for
 * 8 consecutive rows at once, as llama.cpp does: the rows' 8 accumulators are the 8 lanes of one
 * register, the activations are read once for all 8, and no row pays for a horizontal sum and a
 * dependent fused multiply-add per block on its own.  That matters for the 32-element blocks
 * (Q4_0, IQ4_NL: 1.5-1.8x); a 256-element k-quant block has enough work per row to hide them
 * on AVX2 (an 8-row Q4_K kernel measured 15% slower than the row-by-row one there), but not on
 * AVX-512, whose row-by-row Q4_K kernel spends a third of its time on them.  Each
 * row's result is bit for bit its vec_dot_r8.  Types with one order only (Q8_0, Q4_1, Q5_0,
 * Q5_1, Q6_K) name vec_dot itself as vec_dot_r8 on AVX-512 builds, to reach an 8-row kernel
 * that keeps each row's 8 lanes: with 32-element blocks one row alone waits on its chain of
 * fused multiply-adds, and 8 rows share the activations' work and the prefetch of the next 8
 * (the rows' results are their vec_dot's; which rows are grouped changes nothing).
 * Matching llama.cpp bit for bit is what makes
 * its reference logits a usable test at all: the activations are re-quantized before every
 * matrix product, so a one-ulp difference that crosses a rounding boundary moves the logits by
 * ~1e-2, and the references' greedy tokens are compared strictly.
 * ============================================================================================= */

typedef void (*dequantize_fn)(const void *src, float *dst, int64_t n);
typedef void (*quantize_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n elements: weight row w (of the weight type) with activation row a (of the
 * weight type's act_type). */
typedef float (*vec_dot_fn)(int64_t n, const void *w, const void *a);
/* The repacked order for 8 consecutive weight rows (row r at w + r·row_bytes) with one
 * activation row: out[r] = vec_dot_r8(n, row r, a). */
typedef void (*vec_dot_8rows_fn)(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8]);
/* A matrix-matrix kernel for a batch of tokens works on a tile of a few weight rows × a few
 * tokens: out[r·toks + t] = the dot product of weight row w[r] with activation row a[t], for
 * r < rows and t < toks, each value bit for bit the one the row's dot product gives.
 * gemm_tiles() walks a whole matrix with it (see "Matrix-matrix products" below). */
typedef void (*gemm_tile_fn)(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out);
typedef struct {
    gemm_tile_fn fn;
    int rows, toks; /* the tile's shape (toks is 4 or 8 for every kernel: a group of 8 pairs is
                       then whole rows of the tile) */
} gemm_tile;
#define GEMM_TILE_MAX 16 /* pairs in the largest tile */

typedef struct {
    const char *name;
    int block_elems;  /* elements per block (1 for plain floats) */
    int block_bytes;  /* bytes per block */
    int act_type;     /* the activation type vec_dot takes */
    dequantize_fn dequantize; /* NULL: type known to GGUF but not supported by halda */
    quantize_fn quantize;     /* NULL: halda cannot write this type */
    vec_dot_fn vec_dot;
    vec_dot_fn vec_dot_r8;    /* the same product in the order of llama.cpp's "repacked" kernels,
                                 for matrices with a multiple of 8 rows (NULL, or vec_dot itself
                                 for a type with one order: as vec_dot) */
    vec_dot_8rows_fn vec_dot_r8_8rows; /* vec_dot_r8 of 8 rows at once (NULL: row by row) */
    const gemm_tile *gemm;    /* many rows times many tokens, each pair as vec_dot gives it
                                 (NULL: a vec_dot per pair) */
    const gemm_tile *gemm_r8; /* the same in vec_dot_r8's order (NULL: a vec_dot_r8 per pair) */
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

__attribute__((unused)) static void dequantize_f16(const void *src, float *dst, int64_t n)
{
    const f16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
}
#if HALDA_F16C
/* 8 halves per instruction, the same bits as f16_to_f32 (F16C converts them).  Attention reads
 * every cached value row of an F16 KV cache through this, once per query. */
static void dequantize_f16_f16c(const void *src, float *dst, int64_t n)
{
    const f16_t *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) dst[i] = f16_to_f32(s[i]);
}
#endif

/* out[i] = Σ_p a[p]·row_p[i] over n rows of hd F16 values, `stride` bytes apart: attention's
 * weighted sum of an F16 cache's value rows.  Each product is rounded before it is added, and
 * the rows are added in order p = 0, 1, ..., element by element. */
__attribute__((unused)) static void f16_rows_weighted_sum(const uint8_t *rows, size_t stride, const float *a, int n, float *out, int hd)
{
    for (int i = 0; i < hd; i++) out[i] = 0;
    for (int p = 0; p < n; p++) {
        const f16_t *v = (const f16_t *)(rows + (size_t)p * stride);
        for (int i = 0; i < hd; i++) {
            float prod = a[p] * f16_to_f32(v[i]);
            out[i] += prod;
        }
    }
}
#if HALDA_F16C
/* 64 outputs at a time stay in eight registers while the rows stream past (a sum in memory
 * would wait on its own store at every row); each element sees the same operations in the same
 * order as in the scalar function. */
static void f16_rows_weighted_sum_f16c(const uint8_t *rows, size_t stride, const float *a, int n, float *out, int hd)
{
    int i0 = 0;
    for (; i0 + 64 <= hd; i0 += 64) {
        __m256 acc[8];
        for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
        for (int p = 0; p < n; p++) {
            const f16_t *v = (const f16_t *)(rows + (size_t)p * stride) + i0;
            __m256 ap = _mm256_set1_ps(a[p]);
            for (int k = 0; k < 8; k++) acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(ap, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + 8 * k)))));
        }
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(out + i0 + 8 * k, acc[k]);
    }
    for (; i0 + 8 <= hd; i0 += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int p = 0; p < n; p++) {
            const f16_t *v = (const f16_t *)(rows + (size_t)p * stride) + i0;
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(a[p]), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)v))));
        }
        _mm256_storeu_ps(out + i0, acc);
    }
    for (; i0 < hd; i0++) {
        float s = 0;
        for (int p = 0; p < n; p++) {
            float prod = a[p] * f16_to_f32(((const f16_t *)(rows + (size_t)p * stride))[i0]);
            s += prod;
        }
        out[i0] = s;
    }
}
#define F16_ROWS_WEIGHTED_SUM f16_rows_weighted_sum_f16c
#else
#define F16_ROWS_WEIGHTED_SUM f16_rows_weighted_sum
#endif
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
 * them in one vector register), then add the partial sums pairwise.  Every product is rounded
 * to F32 before it is added: it is a statement of its own, so that no compiler fuses the two
 * into one FMA (clang does within an expression, even in ISO C mode), which keeps the SIMD twins
 * — a multiply, then an add — bit-identical on every compiler. */
static inline float f32_pair_sum(const float acc[8])
{
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}
__attribute__((unused)) static float vec_dot_f32(int64_t n, const void *w, const void *a)
{
    const float *x = w, *y = a;
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float p = x[i + j] * y[i + j];
            acc[j] += p;
        }
    float s = f32_pair_sum(acc);
    for (; i < n; i++) {
        float p = x[i] * y[i];
        s += p;
    }
    return s;
}

__attribute__((unused)) static float vec_dot_f16(int64_t n, const void *w, const void *a)
{
    const f16_t *x = w, *y = a;
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float p = f16_to_f32(x[i + j]) * f16_to_f32(y[i + j]);
            acc[j] += p;
        }
    float s = f32_pair_sum(acc);
    for (; i < n; i++) {
        float p = f16_to_f32(x[i]) * f16_to_f32(y[i]);
        s += p;
    }
    return s;
}

__attribute__((unused)) static float vec_dot_bf16(int64_t n, const void *w, const void *a)
{
    const bf16_t *x = w, *y = a;
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float p = bf16_to_f32(x[i + j]) * bf16_to_f32(y[i + j]);
            acc[j] += p;
        }
    float s = f32_pair_sum(acc);
    for (; i < n; i++) {
        float p = bf16_to_f32(x[i]) * bf16_to_f32(y[i]);
        s += p;
    }
    return s;
}
__attribute__((unused)) static void vec_dot_f16_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_f16(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
__attribute__((unused)) static void vec_dot_bf16_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_bf16(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}

#if HALDA_AVX2
/* The 8 partial sums are the 8 lanes of one register; the tail and the final additions are the
 * scalar function's. */
static inline float avx2_f32_pair_sum(__m256 acc)
{
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    return f32_pair_sum(lanes);
}
/* Software prefetch for the 8-row kernels: while 8 rows are computed, the next 8 (which the
 * matrix product asks for next) are fetched as one sequential stream, `bytes` of them per
 * step.  Without it the 8 rows read side by side, a block at a time, ran at half the memory
 * bandwidth that one row read straight through gets: the hardware prefetchers do not follow 8
 * short interleaved streams.  The lines go to L2, not L1: the 8 rows of a k-quant (18 KiB for
 * 4096 columns of Q4_K) would crowd L1 out, which cost the 8-row Q4_K kernel 40% (Q4_0 and
 * IQ4_NL run the same either way).  (A prefetch past the end of the matrix is harmless: it never
 * faults.) */
static inline void avx2_prefetch_next_8rows(const void *w, size_t row_bytes, size_t offset, size_t bytes)
{
    const char *next = (const char *)w + 8 * row_bytes + offset;
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(next + off, _MM_HINT_T1);
}
static float vec_dot_f32_avx2(int64_t n, const void *w, const void *a)
{
    const float *x = w, *y = a;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    float s = avx2_f32_pair_sum(acc);
    for (; i < n; i++) {
        float p = x[i] * y[i];
        s += p;
    }
    return s;
}
/* 8 bfloat16 to 8 floats: the 16 bits become the top half. */
static inline __m256 avx2_bf16x8(const bf16_t *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
static float vec_dot_bf16_avx2(int64_t n, const void *w, const void *a)
{
    const bf16_t *x = w, *y = a;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(avx2_bf16x8(x + i), avx2_bf16x8(y + i)));
    float s = avx2_f32_pair_sum(acc);
    for (; i < n; i++) {
        float p = bf16_to_f32(x[i]) * bf16_to_f32(y[i]);
        s += p;
    }
    return s;
}
#endif
#if HALDA_AVX2 && HALDA_F16C
static float vec_dot_f16_avx2(int64_t n, const void *w, const void *a)
{
    const f16_t *x = w, *y = a;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        __m256 yf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i)));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(xf, yf));
    }
    float s = avx2_f32_pair_sum(acc);
    for (; i < n; i++) {
        float p = f16_to_f32(x[i]) * f16_to_f32(y[i]);
        s += p;
    }
    return s;
}
#endif
#if HALDA_NEON
/* The scalar functions' 8 partial sums as two registers, lanes 0..3 and 4..7, each product
 * rounded before it is added (a multiply, then an add, never a fused one); the tail and the
 * final additions are the scalar function's. */
static inline float neon_f32_pair_sum(float32x4_t lo, float32x4_t hi)
{
    float lanes[8];
    vst1q_f32(lanes, lo), vst1q_f32(lanes + 4, hi);
    return f32_pair_sum(lanes);
}
static float vec_dot_f32_neon(int64_t n, const void *w, const void *a)
{
    const float *x = w, *y = a;
    float32x4_t lo = vdupq_n_f32(0), hi = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        lo = vaddq_f32(lo, vmulq_f32(vld1q_f32(x + i), vld1q_f32(y + i)));
        hi = vaddq_f32(hi, vmulq_f32(vld1q_f32(x + i + 4), vld1q_f32(y + i + 4)));
    }
    float s = neon_f32_pair_sum(lo, hi);
    for (; i < n; i++) {
        float p = x[i] * y[i];
        s += p;
    }
    return s;
}
/* 4 halves to 4 floats (exact, like f16_to_f32). */
static inline float32x4_t neon_f16x4_to_f32(const f16_t *h) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)h))); }
/* 4 bfloat16 to 4 floats: the 16 bits become the top half. */
static inline float32x4_t neon_bf16x4_to_f32(const bf16_t *h) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)h), 16)); }
/* F16 and BF16 take vec_dot_f32_neon's sums, their values widened to F32 (exactly) on the way
 * in: load4 widens 4 of them, to_f32 one (the inlined pointers are constants). */
static inline float neon_dot_16bit(int64_t n, const uint16_t *x, const uint16_t *y, float32x4_t (*load4)(const uint16_t *),
                                   float (*to_f32)(uint16_t))
{
    float32x4_t lo = vdupq_n_f32(0), hi = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        lo = vaddq_f32(lo, vmulq_f32(load4(x + i), load4(y + i)));
        hi = vaddq_f32(hi, vmulq_f32(load4(x + i + 4), load4(y + i + 4)));
    }
    float s = neon_f32_pair_sum(lo, hi);
    for (; i < n; i++) {
        float p = to_f32(x[i]) * to_f32(y[i]);
        s += p;
    }
    return s;
}
static float vec_dot_f16_neon(int64_t n, const void *w, const void *a) { return neon_dot_16bit(n, w, a, neon_f16x4_to_f32, f16_to_f32); }
static float vec_dot_bf16_neon(int64_t n, const void *w, const void *a) { return neon_dot_16bit(n, w, a, neon_bf16x4_to_f32, bf16_to_f32); }
#endif
#if HALDA_AVX512
/* 8 rows of vec_dot_f16 / vec_dot_bf16 side by side (one order; see the one-order 8-row kernels
 * in the section's head): one row waits on its 8 lanes' chain of additions, 8 rows are 8
 * chains, and the activations are converted once.  Each row ends as the scalar function does:
 * f32_pair_sum, then the tail in order. */
static void vec_dot_f16_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const f16_t *y = a;
    __m256 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)i * 8 * sizeof(f16_t), 8 * 8 * sizeof(f16_t));
        __m256 yf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i)));
        for (int r = 0; r < 8; r++) {
            const f16_t *x = (const f16_t *)((const uint8_t *)w + (size_t)r * row_bytes);
            acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))), yf));
        }
    }
    for (int r = 0; r < 8; r++) {
        const f16_t *x = (const f16_t *)((const uint8_t *)w + (size_t)r * row_bytes);
        float s8 = avx2_f32_pair_sum(acc[r]);
        for (int64_t k = i; k < n; k++) {
            float p = f16_to_f32(x[k]) * f16_to_f32(y[k]);
            s8 += p;
        }
        out[r] = s8;
    }
}
static void vec_dot_bf16_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const bf16_t *y = a;
    __m256 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)i * 8 * sizeof(bf16_t), 8 * 8 * sizeof(bf16_t));
        __m256 yf = avx2_bf16x8(y + i);
        for (int r = 0; r < 8; r++) {
            const bf16_t *x = (const bf16_t *)((const uint8_t *)w + (size_t)r * row_bytes);
            acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(avx2_bf16x8(x + i), yf));
        }
    }
    for (int r = 0; r < 8; r++) {
        const bf16_t *x = (const bf16_t *)((const uint8_t *)w + (size_t)r * row_bytes);
        float s8 = avx2_f32_pair_sum(acc[r]);
        for (int64_t k = i; k < n; k++) {
            float p = bf16_to_f32(x[k]) * bf16_to_f32(y[k]);
            s8 += p;
        }
        out[r] = s8;
    }
}
#endif

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

/* The same lanes over a k-quant super-block: lane l holds the integer sum, over the 8 runs of
 * 32 elements, of elements 4l..4l+3 of each run, every product weighted by its group's integer
 * scale gscale[i/16].  The sums are exact; only their conversion to F32 and what follows
 * rounds. */
static inline void k_lane_sums(const int8_t *qw, const int *gscale, const int8_t *qa, int32_t lane[8])
{
    for (int l = 0; l < 8; l++) {
        int32_t s = 0;
        for (int run = 0; run < QK_K / 32; run++)
            for (int i = 32 * run + 4 * l; i < 32 * run + 4 * l + 4; i++) s += gscale[i / 16] * qw[i] * qa[i];
        lane[l] = s;
    }
}
static inline int32_t k_dot(const int8_t *qw, const int *gscale, const int8_t *qa)
{
    int32_t lane[8], s = 0;
    k_lane_sums(qw, gscale, qa, lane);
    for (int l = 0; l < 8; l++) s += lane[l];
    return s;
}

/* ---- AVX2 ------------------------------------------------------------------------------------
 * The AVX2 kernels — the dot products of every type, and the activation quantizers Q8_0, Q8_1
 * and Q8_K — sit right below their scalar twins and replace them in the
 * table on builds with AVX2 and FMA (F16 also needs F16C).  They compute the same exact integer
 * lane sums and the same F32 operations in the same order, so they are bit-identical to the
 * scalar functions (tests/test_kernels.c checks it).  The one caveat is the byte product:
 * maddubs adds two products into 16 bits, which cannot saturate while the signed bytes stay in
 * [−127, 127] — every quantizer here and in llama.cpp keeps them there, and llama.cpp's own
 * kernels make the same assumption.  The scalar twins stay compiled as the specification
 * (marked unused where the table no longer names them).
 *
 * With VNNI (AVX512-VNNI or AVX-VNNI) the two steps after maddubs — madd into 32 bits, then add
 * to a sum — are one instruction: vpdpbusd does all of it for a plain byte dot product, and
 * vpdpwssd the madd and the add of a scaled one.  vpdpbusd sums its four products in 32 bits, so
 * it gives maddubs' integers wherever maddubs does not saturate, which is everywhere here: a
 * pair of products is at most 2·128·127 = 32512 for the signed bytes and, with unsigned weights
 * (the k-quants, Q4_1, Q5_1), 2·63·127 = 16002 (Q6_K's six bits).  So the results stay bit for
 * bit the scalar ones. */
#if HALDA_AVX2
/* acc + lane l = Σ_{i=4l..4l+3} x_i·y_i over 32 unsigned bytes x and signed bytes y; and
 * acc + lane l = a_2l·b_2l + a_2l+1·b_2l+1 over 16-bit a and b. */
#if HALDA_AVX512VNNI
static inline __m256i avx2_dot_u8_acc(__m256i acc, __m256i x, __m256i y) { return _mm256_dpbusd_epi32(acc, x, y); }
static inline __m256i avx2_madd_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
#elif HALDA_AVX_VNNI
static inline __m256i avx2_dot_u8_acc(__m256i acc, __m256i x, __m256i y) { return _mm256_dpbusd_avx_epi32(acc, x, y); }
static inline __m256i avx2_madd_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_avx_epi32(acc, a, b); }
#else
static inline __m256i avx2_dot_u8_acc(__m256i acc, __m256i x, __m256i y)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1)));
}
static inline __m256i avx2_madd_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
#endif
/* lane l = Σ_{i=4l..4l+3} x_i·y_i over 32 signed bytes: |x| times y with x's sign. */
static inline __m256i avx2_dot_i8_lanes(__m256i x, __m256i y)
{
    return avx2_dot_u8_acc(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}
/* acc + the lanes of unsigned x (k-quant weights) and signed y, each 16-element half weighted by
 * its own 16-bit scale. */
static inline __m256i avx2_dot_u8_scaled(__m256i acc, __m256i x, __m256i y, int scale_lo, int scale_hi)
{
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16((int16_t)scale_hi), _mm_set1_epi16((int16_t)scale_lo));
    return avx2_madd_acc(acc, _mm256_maddubs_epi16(x, y), sc);
}
/* lane_acc_sum's order, on a vector of 8 lanes */
static inline float avx2_lane_sum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline int32_t avx2_sum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_extracti128_si256(v, 1), _mm256_castsi256_si128(v));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}
/* The totals of 8 vectors of 8 integers, as one vector: lane r = Σ v[r].  Three rounds of
 * pairwise adds leave lanes 0..3 of each 128-bit half with rows 0..3 (and 4..7) of the two
 * halves' partial sums; the halves are then added. */
static inline __m256i avx2_sum8_i32(const __m256i v[8])
{
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}
/* The same for signed x (Q3_K's signed q). */
static inline __m256i avx2_dot_i8_scaled(__m256i acc, __m256i x, __m256i y, int scale_lo, int scale_hi)
{
    return avx2_dot_u8_scaled(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x), scale_lo, scale_hi);
}
/* 32 bytes from 32 bits: byte i is 0xff where bit i is set, 0 where not (Q5's fifth bits).
 * Each byte gets a copy of the bit's byte, ORed with a mask that has every bit but bit i%8 set;
 * the result is all ones exactly when that bit was. */
static inline __m256i avx2_bytes_from_bits(uint32_t bits)
{
    const __m256i which_byte = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), which_byte);
    b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}
/* The largest lane (for maxima of |x|: order does not matter, and no lane is NaN). */
static inline float avx2_max_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
/* Eight 32-bit integers each from four registers (elements 0..31 in order), saturated to
 * bytes.  The packs work within 128-bit halves, so the 4-byte groups come out as
 * q0[0..3] q1[0..3] q2[0..3] q3[0..3] q0[4..7] ... and a permutation restores the order. */
static inline __m256i avx2_pack_i8(__m256i q0, __m256i q1, __m256i q2, __m256i q3)
{
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
/* The 32 unsigned nibbles of a 32-element block (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) in element
 * order: qs[j] holds element j in its low nibble and element j+16 in its high one. */
static inline __m256i avx2_nibbles(const uint8_t qs[16])
{
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(15));
}
/* The 8 scales and 8 minimums of a Q4_K/Q5_K block (k_scale_min's layout) at once, as bytes:
 * scales 0..7 in bytes 0..7, minimums 0..7 in bytes 8..15.  Four fields at a time, in the 32-bit
 * words w0 = bytes 0..3, w1 = 4..7, w2 = 8..11 of the packed scales:
 *     scales 0..3 = w0 & 0x3f…,   scales 4..7 = (w2 & 0x0f…) | (w0 >> 2 & 0x30…),
 *     mins 0..3   = w1 & 0x3f…,   mins 4..7   = (w2 >> 4 & 0x0f…) | (w1 >> 2 & 0x30…).
 * It reads 16 bytes from s: the 12 and the first 4 of the qs (Q4_K) or qh (Q5_K) after them. */
static inline __m128i k_scale_min_unpack(const uint8_t *s)
{
    __m128i w = _mm_loadu_si128((const __m128i *)s);
    __m128i low = _mm_srlv_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4)); /* w0 w2 w1 w2>>4 */
    low = _mm_and_si128(low, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i high = _mm_srli_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(1, 1, 0, 0)), 2); /* w0>>2 w0>>2 w1>>2 w1>>2 */
    return _mm_or_si128(low, _mm_and_si128(high, _mm_setr_epi32(0, 0x30303030, 0, 0x30303030)));
}
/* |x| for 8 floats (clears the sign bits) */
static inline __m256 avx2_abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
#endif

/* ---- AVX-512 ---------------------------------------------------------------------------------
 * 512-bit twins of the AVX2 kernels, for the types where they pay.  A 512-bit register holds two
 * runs of 32 elements, so its 16 integer lanes are two sets of the 8 lanes of lane_acc: lanes
 * 0..7 for the first run and 8..15 for the second.  The two halves are added (exact integers)
 * before any F32 arithmetic, so the F32 operations and their order are the AVX2 kernel's, that
 * is the scalar function's, and the results are bit for bit the same (tests/test_kernels.c).
 * Without VNNI the same integer sums come from maddubs and madd as on AVX2.
 *
 * Where the width pays is measured, not assumed: AMD's Zen 4, where these were tuned, runs a
 * 512-bit instruction as two 256-bit halves, so the gain is in what AVX-512 adds — VNNI, the
 * variable shifts and rotations that unpack two runs from one load, vpermw for per-run scales,
 * ternary logic, 16 lanes to reduce 8 rows into — and in fewer instructions, not in doubled
 * arithmetic.  The 8-row kernels of the 32-element types are 256-bit for that reason.  The
 * 32-element lane-order kernels stay the AVX2 ones: one row is bound by its chain of fused
 * multiply-adds, one per block, which no width shortens. */
#if HALDA_AVX512
/* acc + lane l = a_2l·b_2l + a_2l+1·b_2l+1 over 16-bit a and b */
#if HALDA_AVX512VNNI
static inline __m512i avx512_madd_acc(__m512i acc, __m512i a, __m512i b) { return _mm512_dpwssd_epi32(acc, a, b); }
#else
static inline __m512i avx512_madd_acc(__m512i acc, __m512i a, __m512i b) { return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b)); }
#endif
/* The 16 lanes of two runs folded into the 8 of lane_acc: lane l + lane l+8. */
static inline __m256i avx512_fold_i32(__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); }
/* 64 bytes: the 32 at p twice, the second copy shifted right by 4 bits in every byte's 64-bit
 * word, so the nibble planes of 32 bytes (low nibbles, then high) come out as 64 elements after
 * one mask. */
static inline __m512i avx512_nibble_planes(const uint8_t *p)
{
    __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_and_si512(_mm512_srlv_epi64(raw, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)), _mm512_set1_epi8(15));
}
/* For the 8-row kernels that read their rows one after the other: while row r's `bytes` at x
 * are computed, the same bytes of row r of the next 8 (8·row_bytes on) go to L2, so the next
 * group's stream is fetched in the order it will be read.  (Into L2, not L1, as in
 * avx2_prefetch_next_8rows.) */
static inline void avx512_prefetch_8rows_on(const void *x, size_t row_bytes, size_t bytes)
{
    const char *next = (const char *)x + 8 * row_bytes;
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(next + off, _MM_HINT_T1);
}
/* Lanes 2r − 2r+1 of 16 floats, r = 0..7: the (acc, acc_min) pairs of 8 rows to 8 results. */
static inline __m256 avx512_pair_differences(__m512 v)
{
    __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm256_sub_ps(_mm512_castps512_ps256(_mm512_permutexvar_ps(even, v)), _mm512_castps512_ps256(_mm512_permutexvar_ps(odd, v)));
}
/* 32 16-bit words: word lo of v in the low 16, word hi in the high 16 (one scale per run). */
static inline __m512i avx512_two_words(__m128i v, int lo, int hi)
{
    const uint64_t ones = 0x0001000100010001ull;
    long long l = (long long)(ones * (uint64_t)lo), h = (long long)(ones * (uint64_t)hi);
    return _mm512_permutexvar_epi16(_mm512_set_epi64(h, h, h, h, l, l, l, l), _mm512_castsi128_si512(v));
}
#endif

/* ---- NEON (64-bit ARM) -----------------------------------------------------------------------
 * The same lanes in two 4-lane registers: lanes 0..3 (elements 0..15 of a 32-element run) and
 * lanes 4..7 (elements 16..31).  A NEON kernel computes the same exact integer lane sums, the
 * same fused multiply-adds (vfmaq_f32 rounds once, as fmaf does) and lane_acc_sum's final
 * order, so it too is bit-identical to its scalar twin.  The products are widened to 32 bits
 * before any sum, so unlike maddubs nothing here can saturate. */
#if HALDA_NEON
/* acc + lane i = Σ_{j=4i..4i+3} x_j·y_j, for 16 signed bytes: one SDOT instruction ... */
#if HALDA_NEON_DOTPROD
static inline int32x4_t neon_dot_i8(int32x4_t acc, int8x16_t x, int8x16_t y) { return vdotq_s32(acc, x, y); }
#else
/* ... or, on plain ARMv8, 16-bit products added pairwise twice. */
static inline int32x4_t neon_dot_i8(int32x4_t acc, int8x16_t x, int8x16_t y)
{
    int32x4_t p_lo = vpaddlq_s16(vmull_s8(vget_low_s8(x), vget_low_s8(y)));
    int32x4_t p_hi = vpaddlq_s16(vmull_high_s8(x, y));
    return vaddq_s32(acc, vpaddq_s32(p_lo, p_hi));
}
#endif
/* lane_acc_sum's order on lanes lo = 0..3, hi = 4..7: (l0+l4)+(l2+l6) + (l1+l5)+(l3+l7) */
static inline float neon_lane_sum(float32x4_t lo, float32x4_t hi)
{
    float32x4_t s = vaddq_f32(lo, hi);
    float32x2_t t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
    return vget_lane_f32(t, 0) + vget_lane_f32(t, 1);
}
/* 16 bytes from 16 bits: byte i is 0xff where bit i is set (Q5's fifth bits). */
static inline uint8x16_t neon_bytes_from_bits(uint32_t bits16)
{
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)bits16), vdup_n_u8((uint8_t)(bits16 >> 8)));
    return vtstq_u8(v, vld1q_u8(bit));
}
/* The lanes of a 32-element block given as two 16-byte halves (elements 0..15, 16..31). */
static inline void neon_block_lanes(int8x16_t q_lo, int8x16_t q_hi, const int8_t *a, int32x4_t *lo, int32x4_t *hi)
{
    *lo = neon_dot_i8(vdupq_n_s32(0), q_lo, vld1q_s8(a));
    *hi = neon_dot_i8(vdupq_n_s32(0), q_hi, vld1q_s8(a + 16));
}
/* The totals of 4 pairs' lanes (pair k: lo[k] + hi[k]) as the 4 lanes of one vector. */
static inline int32x4_t neon_sum4_i32(const int32x4_t lo[4], const int32x4_t hi[4])
{
    int32x4_t t[4];
    for (int k = 0; k < 4; k++) t[k] = vaddq_s32(lo[k], hi[k]);
    return vpaddq_s32(vpaddq_s32(t[0], t[1]), vpaddq_s32(t[2], t[3]));
}
/* 32 integers (eight vectors of 4, elements in order) saturated to 32 bytes at dst. */
static inline void neon_store_i8(int8_t *dst, const int32x4_t q[8])
{
    for (int h = 0; h < 2; h++) {
        int16x8_t a = vcombine_s16(vqmovn_s32(q[4 * h]), vqmovn_s32(q[4 * h + 1]));
        int16x8_t b = vcombine_s16(vqmovn_s32(q[4 * h + 2]), vqmovn_s32(q[4 * h + 3]));
        vst1q_s8(dst + 16 * h, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
    }
}
/* lo/hi += scale · lanes, the F32 step of every block product */
static inline void neon_fma_lanes(float32x4_t *lo, float32x4_t *hi, float scale, int32x4_t lanes_lo, int32x4_t lanes_hi)
{
    float32x4_t s = vdupq_n_f32(scale);
    *lo = vfmaq_f32(*lo, vcvtq_f32_s32(lanes_lo), s);
    *hi = vfmaq_f32(*hi, vcvtq_f32_s32(lanes_hi), s);
}

/* Tiles.  The NEON kernels of the types that have matrix-matrix kernels (Q8_0, Q4_0, Q5_0,
 * IQ4_NL, Q6_K and Q4_K's repacked order) are written once each, as a tile: R weight rows (row
 * r at w[r]) times T activation rows (token t at a[t]), out[r·T + t] the pair's dot product,
 * each pair's arithmetic exactly that of one row with one token.  The dot products are the
 * 1 × 1 tile (the 8-row kernels of the repacked Q4_0 and IQ4_NL the 8 × 1 tile); the
 * matrix-matrix kernels ("Matrix-matrix products", at the end of this section) take larger
 * ones, which decode each weight block once for T tokens and load each activation block once
 * for R rows.  R and T are constants at every call (the tile functions are always inlined), so
 * each shape compiles to its own unrolled code. */

/* acc + x · lane i of v, in one fused multiply-add.  vfmaq_laneq_f32 takes its lane as a
 * constant; i is one at every call once a tile is unrolled, and the switch folds away. */
static inline __attribute__((always_inline)) float32x4_t neon_fma_lane(float32x4_t acc, float32x4_t x, float32x4_t v, int i)
{
    switch (i) {
    case 0: return vfmaq_laneq_f32(acc, x, v, 0);
    case 1: return vfmaq_laneq_f32(acc, x, v, 1);
    case 2: return vfmaq_laneq_f32(acc, x, v, 2);
    default: return vfmaq_laneq_f32(acc, x, v, 3);
    }
}

/* The F16s at p[t] + offset, t < T (T = 1 or 4), as the lanes of an F32 vector (the scales of
 * T tokens' blocks, converted together; with T = 1, every lane that one). */
static inline __attribute__((always_inline)) float32x4_t neon_f16_lanes(const uint8_t *const *p, int T, size_t offset)
{
    float16x4_t h = vld1_dup_f16((const float16_t *)(const void *)(p[0] + offset));
    if (T == 4) {
        h = vld1_lane_f16((const float16_t *)(const void *)(p[1] + offset), h, 1);
        h = vld1_lane_f16((const float16_t *)(const void *)(p[2] + offset), h, 2);
        h = vld1_lane_f16((const float16_t *)(const void *)(p[3] + offset), h, 3);
    }
    return vcvt_f32_f16(h);
}

/* The 32-element blocks whose weights decode to signed bytes — Q8_0, Q4_0, Q5_0 and IQ4_NL, all
 * with their F16 scale d first and Q8_0 activations — differ only in that decoding: each type
 * gives it as its `bytes` function (elements 0..15 in q[0], 16..31 in q[1]), and the tiles
 * below serve all four.  `bytes` is a constant at every call, so each type still gets its own
 * compiled copy. */
typedef void (*neon_bytes_fn)(const uint8_t *block, int8x16_t q[2]);
static_assert(offsetof(block_q8_0, d) == 0 && offsetof(block_q4_0, d) == 0 && offsetof(block_q5_0, d) == 0 && offsetof(block_iq4_nl, d) == 0,
              "the 32-element blocks start with their scale d");
/* The scale d that starts such a block, as F32. */
static inline float neon_block_d(const uint8_t *block)
{
    f16_t d;
    memcpy(&d, block, 2);
    return f16_to_f32(d);
}

/* Those types in vec_dot_q8_0's order: per pair 8 F32 lanes, each block adding (d_w·d_a) times
 * its integer lanes in one fused multiply-add; neon_lane_sum at the end.  R·T <= 8 (two
 * accumulators a pair) and T = 1 or 4: the T tokens' scales are converted together, and the
 * pairs of row r take theirs from the lanes of one vector. */
static inline __attribute__((always_inline)) void neon_i8_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out, int R,
                                                               int T, size_t bb, neon_bytes_fn bytes)
{
    float32x4_t acc_lo[8], acc_hi[8];
    for (int p = 0; p < R * T; p++) acc_lo[p] = acc_hi[p] = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / QK; b++) {
        int8x16_t q[8][2];
        float32x4_t scale[8]; /* lane t of scale[r]: d_w·d_a of pair (r, t) */
        float32x4_t dy = neon_f16_lanes(a, T, (size_t)b * sizeof(block_q8_0));
        for (int r = 0; r < R; r++) bytes(w[r] + (size_t)b * bb, q[r]), scale[r] = vmulq_n_f32(dy, neon_block_d(w[r] + (size_t)b * bb));
        for (int t = 0; t < T; t++) {
            const block_q8_0 *y = (const block_q8_0 *)a[t] + b;
            for (int r = 0; r < R; r++) {
                int32x4_t lo, hi;
                neon_block_lanes(q[r][0], q[r][1], y->qs, &lo, &hi);
                acc_lo[r * T + t] = neon_fma_lane(acc_lo[r * T + t], vcvtq_f32_s32(lo), scale[r], t);
                acc_hi[r * T + t] = neon_fma_lane(acc_hi[r * T + t], vcvtq_f32_s32(hi), scale[r], t);
            }
        }
    }
    for (int p = 0; p < R * T; p++) out[p] = neon_lane_sum(acc_lo[p], acc_hi[p]);
}
static inline __attribute__((always_inline)) float neon_i8_dot(int64_t n, const void *w, const void *a, size_t bb, neon_bytes_fn bytes)
{
    const uint8_t *wr = w, *at = a;
    float out;
    neon_i8_tile(n, &wr, &at, &out, 1, 1, bb, bytes);
    return out;
}

/* The same blocks in the repacked order (vec_dot_q4_0_r8): per pair and block the exact total
 * of the 8 lanes, then one fused multiply-add by the pair's scale product into its one F32
 * accumulator.  Rows go 4 to a register — lane k of acc[g·T + t] is pair (4g + k, t) — so 4
 * pairs share each reduction and multiply-add (R = 4 or 8, R·T <= 16).  The row kernel,
 * one accumulator alone, is neon_i8_dot_r8. */
static inline __attribute__((always_inline)) void neon_i8_r8_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out,
                                                                  int R, int T, size_t bb, neon_bytes_fn bytes)
{
    float32x4_t acc[4];
    for (int g = 0; g < R / 4 * T; g++) acc[g] = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / QK; b++) {
        int8x16_t q[8][2];
        float32x4_t dw[2]; /* lane k of dw[g]: d of row 4g + k */
        for (int r = 0; r < R; r++) bytes(w[r] + (size_t)b * bb, q[r]);
        for (int g = 0; g < R / 4; g++) dw[g] = neon_f16_lanes(w + 4 * g, 4, (size_t)b * bb);
        for (int t = 0; t < T; t++) {
            const block_q8_0 *y = (const block_q8_0 *)a[t] + b;
            float dy = f16_to_f32(y->d);
            for (int g = 0; g < R / 4; g++) {
                int32x4_t lo[4], hi[4];
                for (int k = 0; k < 4; k++) neon_block_lanes(q[4 * g + k][0], q[4 * g + k][1], y->qs, &lo[k], &hi[k]);
                acc[g * T + t] = vfmaq_f32(acc[g * T + t], vcvtq_f32_s32(neon_sum4_i32(lo, hi)), vmulq_n_f32(dw[g], dy));
            }
        }
    }
    for (int g = 0; g < R / 4; g++)
        for (int t = 0; t < T; t++) {
            float v[4];
            vst1q_f32(v, acc[g * T + t]);
            for (int k = 0; k < 4; k++) out[(4 * g + k) * T + t] = v[k];
        }
}
static inline __attribute__((always_inline)) float neon_i8_dot_r8(int64_t n, const void *w, const void *a, size_t bb, neon_bytes_fn bytes)
{
    const uint8_t *x = w;
    const block_q8_0 *y = a;
    float acc = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        int8x16_t q[2];
        int32x4_t lo, hi;
        bytes(x + (size_t)b * bb, q);
        neon_block_lanes(q[0], q[1], y[b].qs, &lo, &hi);
        acc = fmaf((float)vaddvq_s32(vaddq_s32(lo, hi)), neon_block_d(x + (size_t)b * bb) * f16_to_f32(y[b].d), acc);
    }
    return acc;
}
static inline __attribute__((always_inline)) void neon_i8_dot_r8_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8],
                                                                       size_t bb, neon_bytes_fn bytes)
{
    const uint8_t *wr[8], *at = a;
    for (int r = 0; r < 8; r++) wr[r] = (const uint8_t *)w + (size_t)r * row_bytes;
    neon_i8_r8_tile(n, wr, &at, out, 8, 1, bb, bytes);
}
#endif

/* ---- Q8_0 and Q8_1 (weights and activations) ------------------------------------------------ */

/* d = max|x| / 127, q = round(x · 127 / max|x|), ties to even.  (This and the other two
 * activation quantizers, Q8_1 and Q8_K, run once per matrix product over its activations.) */
__attribute__((unused)) static void quantize_q8_0(const float *src, void *dst, int64_t n)
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
#if HALDA_AVX2
/* One block of 32: max|x| (a NaN element is skipped, as fmaxf does: max_ps returns its second
 * operand when either is NaN), then x·id rounded to nearest even as round_even does; writes the
 * 32 quantized values as 32-bit integers in q[4]. */
static inline float avx2_q8_block(const float *src, __m256i q[4])
{
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(src + 8 * k), amax = _mm256_max_ps(avx2_abs_ps(v[k]), amax);
    float am = avx2_max_ps(amax);
    __m256 id = _mm256_set1_ps(am != 0 ? 127.0f / am : 0.0f);
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return am;
}
static void quantize_q8_0_avx2(const float *src, void *dst, int64_t n)
{
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        __m256i q[4];
        float amax = avx2_q8_block(src, q);
        y[b].d = f32_to_f16(amax / 127.0f);
        _mm256_storeu_si256((__m256i *)y[b].qs, avx2_pack_i8(q[0], q[1], q[2], q[3]));
    }
}
#endif
#if HALDA_NEON
/* One block of 32 as avx2_q8_block: vmaxnmq skips a NaN as fmaxf does, and vcvtnq rounds to
 * nearest even as round_even does in the default rounding mode. */
static inline float neon_q8_block(const float *src, int32x4_t q[8])
{
    float32x4_t v[8], amax = vdupq_n_f32(0);
    for (int k = 0; k < 8; k++) v[k] = vld1q_f32(src + 4 * k), amax = vmaxnmq_f32(amax, vabsq_f32(v[k]));
    float am = vmaxnmvq_f32(amax);
    float id = am != 0 ? 127.0f / am : 0.0f;
    for (int k = 0; k < 8; k++) q[k] = vcvtnq_s32_f32(vmulq_n_f32(v[k], id));
    return am;
}
static void quantize_q8_0_neon(const float *src, void *dst, int64_t n)
{
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        int32x4_t q[8];
        float amax = neon_q8_block(src, q);
        y[b].d = f32_to_f16(amax / 127.0f);
        neon_store_i8(y[b].qs, q);
    }
}
#endif

__attribute__((unused)) static float vec_dot_q8_0(int64_t n, const void *w, const void *a)
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
__attribute__((unused)) static void vec_dot_q8_0_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_q8_0(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
#if HALDA_AVX2
static float vec_dot_q8_0_avx2(int64_t n, const void *w, const void *a)
{
    const block_q8_0 *x = w, *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i lanes = avx2_dot_i8_lanes(_mm256_loadu_si256((const __m256i *)x[b].qs), _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x[b].d) * f16_to_f32(y[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc);
}
#endif
#if HALDA_AVX512
/* 8 rows of vec_dot_q8_0 side by side (Q8_0 has one order; the table names it as the
 * "repacked" one too, so that the matrix product uses this), each row with its own 8 lanes.
 * One row alone waits on its chain of fused multiply-adds, one per block of 32; 8 independent
 * chains keep the core busy, and the 8 rows' next blocks are prefetched (see the 8-row Q4_0
 * kernel).  The 256-bit VNNI byte product is the whole integer work here, which is why this
 * kernel does not need 512-bit registers. */
static void vec_dot_q8_0_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const block_q8_0 *y = a;
    __m256 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)b * 8 * sizeof(block_q8_0), 8 * sizeof(block_q8_0));
        __m256i ya = _mm256_loadu_si256((const __m256i *)y[b].qs);
        float yd = f16_to_f32(y[b].d);
        for (int r = 0; r < 8; r++) {
            const block_q8_0 *x = (const block_q8_0 *)((const uint8_t *)w + (size_t)r * row_bytes) + b;
            __m256i lanes = avx2_dot_i8_lanes(_mm256_loadu_si256((const __m256i *)x->qs), ya);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x->d) * yd), _mm256_cvtepi32_ps(lanes), acc[r]);
        }
    }
    for (int r = 0; r < 8; r++) out[r] = avx2_lane_sum(acc[r]);
}
#endif
#if HALDA_NEON
static inline void neon_q8_0_bytes(const uint8_t *block, int8x16_t q[2])
{
    const block_q8_0 *x = (const block_q8_0 *)block;
    q[0] = vld1q_s8(x->qs), q[1] = vld1q_s8(x->qs + 16);
}
static float vec_dot_q8_0_neon(int64_t n, const void *w, const void *a) { return neon_i8_dot(n, w, a, sizeof(block_q8_0), neon_q8_0_bytes); }
#endif

__attribute__((unused)) static void quantize_q8_1(const float *src, void *dst, int64_t n)
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
#if HALDA_AVX2
static void quantize_q8_1_avx2(const float *src, void *dst, int64_t n)
{
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        __m256i q[4];
        float d = avx2_q8_block(src, q) / 127.0f;
        int sum = avx2_sum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        _mm256_storeu_si256((__m256i *)y[b].qs, avx2_pack_i8(q[0], q[1], q[2], q[3]));
        y[b].d = f32_to_f16(d);
        y[b].s = f32_to_f16(d * (float)sum);
    }
}
#endif
#if HALDA_NEON
static void quantize_q8_1_neon(const float *src, void *dst, int64_t n)
{
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        int32x4_t q[8], sum = vdupq_n_s32(0);
        float d = neon_q8_block(src, q) / 127.0f;
        for (int k = 0; k < 8; k++) sum = vaddq_s32(sum, q[k]);
        neon_store_i8(y[b].qs, q);
        y[b].d = f32_to_f16(d);
        y[b].s = f32_to_f16(d * (float)vaddvq_s32(sum));
    }
}
#endif

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
__attribute__((unused)) static float vec_dot_q4_0(int64_t n, const void *w, const void *a)
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
/* The repacked order: one F32 accumulator, one fused multiply-add of the block's exact integer
 * sum per block (it took the tiny Q4_0 references from 4e-3 to 3e-7 worst logit error). */
__attribute__((unused)) static float vec_dot_q4_0_r8(int64_t n, const void *w, const void *a)
{
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float acc = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        int32_t s = 0;
        for (int j = 0; j < QK / 2; j++) s += ((x[b].qs[j] & 15) - 8) * y[b].qs[j] + ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + QK / 2];
        acc = fmaf((float)s, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), acc);
    }
    return acc;
}
__attribute__((unused)) static void vec_dot_q4_0_r8_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_q4_0_r8(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
#if HALDA_AVX2
/* The 32 weights of a Q4_0 block as signed bytes in element order (low nibbles, then high). */
static inline __m256i avx2_q4_0_bytes(const block_q4_0 *x) { return _mm256_sub_epi8(avx2_nibbles(x->qs), _mm256_set1_epi8(8)); }
static float vec_dot_q4_0_avx2(int64_t n, const void *w, const void *a)
{
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i lanes = avx2_dot_i8_lanes(avx2_q4_0_bytes(&x[b]), _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x[b].d) * f16_to_f32(y[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc);
}
/* The repacked order's one accumulator is a chain of scalar FMAs; SIMD finds each block's
 * exact integer sum. */
static float vec_dot_q4_0_r8_avx2(int64_t n, const void *w, const void *a)
{
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float acc = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        int32_t s = avx2_sum_i32(avx2_dot_i8_lanes(avx2_q4_0_bytes(&x[b]), _mm256_loadu_si256((const __m256i *)y[b].qs)));
        acc = fmaf((float)s, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), acc);
    }
    return acc;
}
/* 8 rows: lane r of acc is row r's accumulator, so the chain of fused multiply-adds is the
 * scalar one, 8 rows side by side.  The nibbles go in unsigned: Σ (q − 8)·a = Σ q·a − 8·Σ a,
 * and the second term, the same for the 8 rows, is found once. */
static void vec_dot_q4_0_r8_8rows_avx2(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)b * 8 * sizeof(block_q4_0), 8 * sizeof(block_q4_0));
        __m256i ya = _mm256_loadu_si256((const __m256i *)y[b].qs), lanes[8];
        __m256i offset = _mm256_set1_epi32(avx2_sum_i32(avx2_dot_u8_acc(_mm256_setzero_si256(), _mm256_set1_epi8(8), ya)));
        float dw[8];
        for (int r = 0; r < 8; r++) {
            const block_q4_0 *x = (const block_q4_0 *)((const uint8_t *)w + (size_t)r * row_bytes) + b;
            lanes[r] = avx2_dot_u8_acc(_mm256_setzero_si256(), avx2_nibbles(x->qs), ya);
            dw[r] = f16_to_f32(x->d);
        }
        __m256 d = _mm256_mul_ps(_mm256_loadu_ps(dw), _mm256_set1_ps(f16_to_f32(y[b].d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(avx2_sum8_i32(lanes), offset)), d, acc);
    }
    _mm256_storeu_ps(out, acc);
}
#endif
#if HALDA_NEON
/* A Q4_0 block as signed bytes: low nibbles are elements 0..15, high nibbles 16..31, each q − 8. */
static inline void neon_q4_0_bytes(const uint8_t *block, int8x16_t q[2])
{
    uint8x16_t raw = vld1q_u8(((const block_q4_0 *)block)->qs);
    q[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(15))), vdupq_n_s8(8));
    q[1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), vdupq_n_s8(8));
}
static float vec_dot_q4_0_neon(int64_t n, const void *w, const void *a) { return neon_i8_dot(n, w, a, sizeof(block_q4_0), neon_q4_0_bytes); }
static float vec_dot_q4_0_r8_neon(int64_t n, const void *w, const void *a) { return neon_i8_dot_r8(n, w, a, sizeof(block_q4_0), neon_q4_0_bytes); }
static void vec_dot_q4_0_r8_8rows_neon(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    neon_i8_dot_r8_8rows(n, w, row_bytes, a, out, sizeof(block_q4_0), neon_q4_0_bytes);
}
#endif

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
__attribute__((unused)) static float vec_dot_q4_1(int64_t n, const void *w, const void *a)
{
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    lane_acc acc = {{0}};
    float mins = 0; /* Σ m·s, added after the lanes; fused, as llama.cpp's build compiles it */
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++) {
        for (int j = 0; j < QK / 2; j++) q[j] = x[b].qs[j] & 15, q[j + QK / 2] = x[b].qs[j] >> 4;
        mins = fmaf(f16_to_f32(x[b].m), f16_to_f32(y[b].s), mins);
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc) + mins;
}
__attribute__((unused)) static void vec_dot_q4_1_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_q4_1(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
#if HALDA_AVX2
static float vec_dot_q4_1_avx2(int64_t n, const void *w, const void *a)
{
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        mins = fmaf(f16_to_f32(x[b].m), f16_to_f32(y[b].s), mins);
        __m256i lanes = avx2_dot_u8_acc(_mm256_setzero_si256(), avx2_nibbles(x[b].qs), _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x[b].d) * f16_to_f32(y[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc) + mins;
}
/* A block's 32 values as bytes, for the kernels that several types share (Q4_1 and Q5_1 here;
 * the matrix-matrix tiles of the 32-element types). */
typedef __m256i (*avx2_block_values_fn)(const void *block);
static inline __m256i avx2_q4_1_block_values(const void *block) { return avx2_nibbles(((const block_q4_1 *)block)->qs); }
#endif
#if HALDA_AVX512
/* 8 rows of vec_dot_q4_1 side by side, as vec_dot_q8_0_8rows_avx512: 8 independent chains of
 * fused multiply-adds (and of the minimums' scalar ones).  Q5_1 shares it: both blocks start
 * with d and m, and `values` gives a block's 32 unsigned values. */
static inline __attribute__((always_inline)) void avx512_min_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8],
                                                                   size_t block_bytes, avx2_block_values_fn values)
{
    const block_q8_1 *y = a;
    __m256 acc[8];
    float mins[8] = {0};
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)b * 8 * block_bytes, 8 * block_bytes);
        __m256i ya = _mm256_loadu_si256((const __m256i *)y[b].qs);
        float yd = f16_to_f32(y[b].d), ys = f16_to_f32(y[b].s);
        for (int r = 0; r < 8; r++) {
            const uint8_t *block = (const uint8_t *)w + (size_t)r * row_bytes + (size_t)b * block_bytes;
            const block_q4_1 *x = (const block_q4_1 *)block; /* d and m only */
            mins[r] = fmaf(f16_to_f32(x->m), ys, mins[r]);
            __m256i lanes = avx2_dot_u8_acc(_mm256_setzero_si256(), values(block), ya);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x->d) * yd), _mm256_cvtepi32_ps(lanes), acc[r]);
        }
    }
    for (int r = 0; r < 8; r++) out[r] = avx2_lane_sum(acc[r]) + mins[r];
}
static void vec_dot_q4_1_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    avx512_min_8rows(n, w, row_bytes, a, out, sizeof(block_q4_1), avx2_q4_1_block_values);
}
#endif
#if HALDA_NEON
static float vec_dot_q4_1_neon(int64_t n, const void *w, const void *a)
{
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0);
    float mins = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        mins = fmaf(f16_to_f32(x[b].m), f16_to_f32(y[b].s), mins);
        uint8x16_t raw = vld1q_u8(x[b].qs);
        int32x4_t lo, hi;
        neon_block_lanes(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(15))), vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), y[b].qs, &lo, &hi);
        neon_fma_lanes(&acc_lo, &acc_hi, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), lo, hi);
    }
    return neon_lane_sum(acc_lo, acc_hi) + mins;
}
#endif

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
__attribute__((unused)) static float vec_dot_q5_0(int64_t n, const void *w, const void *a)
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
__attribute__((unused)) static void vec_dot_q5_0_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_q5_0(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
#if HALDA_AVX2
/* The 32 unsigned 5-bit values of a Q5_0/Q5_1 block in element order: nibbles plus bit j of qh
 * as bit 4 of element j. */
static inline __m256i avx2_q5_values(const uint8_t qs[16], const uint8_t qh[4])
{
    return _mm256_or_si256(avx2_nibbles(qs), _mm256_and_si256(avx2_bytes_from_bits(q5_high_bits(qh)), _mm256_set1_epi8(16)));
}
static float vec_dot_q5_0_avx2(int64_t n, const void *w, const void *a)
{
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i q = _mm256_sub_epi8(avx2_q5_values(x[b].qs, x[b].qh), _mm256_set1_epi8(16));
        __m256i lanes = avx2_dot_i8_lanes(q, _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x[b].d) * f16_to_f32(y[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc);
}
#endif
#if HALDA_AVX512
/* 8 rows of vec_dot_q5_0 side by side, as vec_dot_q8_0_8rows_avx512.  The 5-bit values go in
 * unsigned: lane l is Σ q·a − 16·Σ a over its 4 elements, and the second term, the same for
 * the 8 rows, is found once per block. */
static void vec_dot_q5_0_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const block_q8_0 *y = a;
    __m256 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)b * 8 * sizeof(block_q5_0), 8 * sizeof(block_q5_0));
        __m256i ya = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i offset = avx2_dot_u8_acc(_mm256_setzero_si256(), _mm256_set1_epi8(16), ya);
        float yd = f16_to_f32(y[b].d);
        for (int r = 0; r < 8; r++) {
            const block_q5_0 *x = (const block_q5_0 *)((const uint8_t *)w + (size_t)r * row_bytes) + b;
            __m256i lanes = _mm256_sub_epi32(avx2_dot_u8_acc(_mm256_setzero_si256(), avx2_q5_values(x->qs, x->qh), ya), offset);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x->d) * yd), _mm256_cvtepi32_ps(lanes), acc[r]);
        }
    }
    for (int r = 0; r < 8; r++) out[r] = avx2_lane_sum(acc[r]);
}
#endif
#if HALDA_NEON
/* A Q5_0/Q5_1 block's unsigned 5-bit values, elements 0..15 in *lo and 16..31 in *hi. */
static inline void neon_q5_values(const uint8_t qs[16], const uint8_t qh[4], uint8x16_t *lo, uint8x16_t *hi)
{
    uint8x16_t raw = vld1q_u8(qs), b5 = vdupq_n_u8(16);
    uint32_t bits = q5_high_bits(qh);
    *lo = vorrq_u8(vandq_u8(raw, vdupq_n_u8(15)), vandq_u8(neon_bytes_from_bits(bits & 0xffff), b5));
    *hi = vorrq_u8(vshrq_n_u8(raw, 4), vandq_u8(neon_bytes_from_bits(bits >> 16), b5));
}
/* A Q5_0 block as signed bytes, q − 16. */
static inline void neon_q5_0_bytes(const uint8_t *block, int8x16_t q[2])
{
    const block_q5_0 *x = (const block_q5_0 *)block;
    uint8x16_t lo, hi;
    neon_q5_values(x->qs, x->qh, &lo, &hi);
    q[0] = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(16)), q[1] = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(16));
}
static float vec_dot_q5_0_neon(int64_t n, const void *w, const void *a) { return neon_i8_dot(n, w, a, sizeof(block_q5_0), neon_q5_0_bytes); }
#endif

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
__attribute__((unused)) static float vec_dot_q5_1(int64_t n, const void *w, const void *a)
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
        mins = fmaf(f16_to_f32(x[b].m), f16_to_f32(y[b].s), mins);
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc) + mins;
}
__attribute__((unused)) static void vec_dot_q5_1_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_q5_1(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
#if HALDA_AVX2
static float vec_dot_q5_1_avx2(int64_t n, const void *w, const void *a)
{
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        mins = fmaf(f16_to_f32(x[b].m), f16_to_f32(y[b].s), mins);
        __m256i lanes = avx2_dot_u8_acc(_mm256_setzero_si256(), avx2_q5_values(x[b].qs, x[b].qh), _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x[b].d) * f16_to_f32(y[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc) + mins;
}
static inline __m256i avx2_q5_1_block_values(const void *block)
{
    const block_q5_1 *x = block;
    return avx2_q5_values(x->qs, x->qh);
}
#endif
#if HALDA_AVX512
/* 8 rows of vec_dot_q5_1 side by side: vec_dot_q4_1_8rows_avx512's kernel with the fifth bits. */
static_assert(offsetof(block_q5_1, d) == offsetof(block_q4_1, d) && offsetof(block_q5_1, m) == offsetof(block_q4_1, m),
              "Q4_1 and Q5_1 blocks start with d and m");
static void vec_dot_q5_1_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    avx512_min_8rows(n, w, row_bytes, a, out, sizeof(block_q5_1), avx2_q5_1_block_values);
}
#endif
#if HALDA_NEON
static float vec_dot_q5_1_neon(int64_t n, const void *w, const void *a)
{
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0);
    float mins = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        mins = fmaf(f16_to_f32(x[b].m), f16_to_f32(y[b].s), mins);
        uint8x16_t ql, qh;
        neon_q5_values(x[b].qs, x[b].qh, &ql, &qh);
        int32x4_t lo, hi;
        neon_block_lanes(vreinterpretq_s8_u8(ql), vreinterpretq_s8_u8(qh), y[b].qs, &lo, &hi);
        neon_fma_lanes(&acc_lo, &acc_hi, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), lo, hi);
    }
    return neon_lane_sum(acc_lo, acc_hi) + mins;
}
#endif

/* ---- Fitting scales: the search behind the IQ4_NL and k-quant quantizers ---------------------
 * Rounding x/scale with the scale that maps the largest |x| exactly onto the end of the integer
 * range is the obvious quantizer, but rarely the best one: a slightly different scale can put
 * the bulk of a group nearer its grid points at the cost of the one extreme value.  So each
 * fitter tries 21 scales around the obvious one, and for the integers each produces solves for
 * the scale (and offset) with the least squared error — a closed-form least-squares fit — and
 * keeps the best.  These only write files; nothing at inference time depends on them. */

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* x ≈ scale·L with integers L in [qmin, qmax], qmin < 0 < qmax.  Writes L; returns the scale,
 * 0 for an all-zero group.  Candidates put the largest |x| near either end of the range. */
static float fit_scale(const float *x, int n, int qmin, int qmax, int8_t *L)
{
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    for (int i = 0; i < n; i++) L[i] = 0;
    if (amax == 0) return 0;
    double best_gain = -1;
    float best = 0;
    for (int end = 0; end < 2; end++) {
        float nend = end ? (float)qmax : (float)qmin;
        for (int t = -10; t <= 10; t++) {
            float iscale = (nend + (nend < 0 ? -0.1f : 0.1f) * (float)t) / max;
            double sxl = 0, sll = 0;
            for (int i = 0; i < n; i++) {
                int q = clampi(round_even(iscale * x[i]), qmin, qmax);
                sxl += (double)x[i] * q, sll += (double)q * q;
            }
            /* with the least-squares scale sxl/sll the error is Σx² − sxl²/sll */
            if (sll > 0 && sxl * sxl / sll > best_gain) best_gain = sxl * sxl / sll, best = (float)(sxl / sll);
        }
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)clampi(round_even(x[i] / best), qmin, qmax);
    return best;
}

/* x ≈ scale·L − min with integers L in [0, nmax] and min >= 0: the k-quants store an offset
 * that can only lower a group, so a group of positive values gets min = 0.  Writes L, *scale
 * and *min. */
static void fit_scale_min(const float *x, int n, int nmax, uint8_t *L, float *scale, float *min)
{
    float lo = 0, hi = -FLT_MAX;
    for (int i = 0; i < n; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    for (int i = 0; i < n; i++) L[i] = 0;
    *scale = 0, *min = -lo;
    if (!(hi > lo)) return; /* all values equal (and <= 0): the minimum alone represents them */
    double best_err = DBL_MAX;
    for (int t = -10; t <= 10; t++) {
        float iscale = ((float)nmax + 0.1f * (float)t) / (hi - lo);
        uint8_t q[32];
        double sl = 0, sll = 0, sx = 0, slx = 0;
        for (int i = 0; i < n; i++) {
            q[i] = (uint8_t)clampi(round_even(iscale * (x[i] - lo)), 0, nmax);
            sl += q[i], sll += (double)q[i] * q[i], sx += x[i], slx += (double)q[i] * x[i];
        }
        /* least squares for x ≈ a·q + b, then b clamped to <= 0 (a refit with b = 0) */
        double det = n * sll - sl * sl, a, b;
        if (det <= 0) continue;
        a = (n * slx - sl * sx) / det, b = (sll * sx - sl * slx) / det;
        if (b > 0) b = 0, a = slx / sll;
        if (a <= 0) continue;
        double err = 0;
        for (int i = 0; i < n; i++) err += (a * q[i] + b - x[i]) * (a * q[i] + b - x[i]);
        if (err < best_err) best_err = err, *scale = (float)a, *min = (float)-b, memcpy(L, q, (size_t)n);
    }
}

/* ---- IQ4_NL --------------------------------------------------------------------------------- */

/* The codebook index whose value is nearest to v (v in codebook units). */
static int iq4nl_nearest(float v)
{
    int best = 0;
    for (int k = 1; k < 16; k++)
        if (fabsf(v - iq4nl_values[k]) < fabsf(v - iq4nl_values[best])) best = k;
    return best;
}

/* Per block: candidate scales put the largest |x| near the codebook's end −127; each candidate's
 * indices get the least-squares scale Σx·v/Σv², and the best fit is kept. */
static void quantize_iq4_nl(const float *src, void *dst, int64_t n)
{
    block_iq4_nl *y = dst;
    for (int64_t b = 0; b < n / QK; b++, src += QK) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK; j++)
            if (fabsf(src[j]) > amax) amax = fabsf(src[j]), max = src[j];
        float d = 0;
        double best_gain = -1;
        for (int t = -10; amax > 0 && t <= 10; t++) {
            float id = (-127.0f + (float)t) / max;
            double sxv = 0, svv = 0;
            for (int j = 0; j < QK; j++) {
                int v = iq4nl_values[iq4nl_nearest(id * src[j])];
                sxv += (double)src[j] * v, svv += (double)v * v;
            }
            if (svv > 0 && sxv * sxv / svv > best_gain) best_gain = sxv * sxv / svv, d = (float)(sxv / svv);
        }
        y[b].d = f32_to_f16(d);
        float dq = f16_to_f32(y[b].d), id = dq != 0 ? 1.0f / dq : 0.0f;
        for (int j = 0; j < QK / 2; j++)
            y[b].qs[j] = (uint8_t)(iq4nl_nearest(src[j] * id) | iq4nl_nearest(src[j + QK / 2] * id) << 4);
    }
}
static void dequantize_iq4_nl(const void *src, float *dst, int64_t n)
{
    const block_iq4_nl *x = src;
    for (int64_t b = 0; b < n / QK; b++, dst += QK) {
        float d = f16_to_f32(x[b].d);
        for (int j = 0; j < QK / 2; j++) {
            dst[j] = d * iq4nl_values[x[b].qs[j] & 15];
            dst[j + QK / 2] = d * iq4nl_values[x[b].qs[j] >> 4];
        }
    }
}
/* Summation orders as Q4_0: the lanes (llama.cpp's tinyBLAS kernel, which takes unrepacked
 * IQ4_NL, Q4_0 and Q8_0 matrices on x86, keeps them too) and the repacked order. */
__attribute__((unused)) static float vec_dot_iq4_nl(int64_t n, const void *w, const void *a)
{
    const block_iq4_nl *x = w;
    const block_q8_0 *y = a;
    lane_acc acc = {{0}};
    int q[QK];
    for (int64_t b = 0; b < n / QK; b++) {
        for (int j = 0; j < QK / 2; j++) q[j] = iq4nl_values[x[b].qs[j] & 15], q[j + QK / 2] = iq4nl_values[x[b].qs[j] >> 4];
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc);
}
__attribute__((unused)) static float vec_dot_iq4_nl_r8(int64_t n, const void *w, const void *a)
{
    const block_iq4_nl *x = w;
    const block_q8_0 *y = a;
    float acc = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        int32_t s = 0;
        for (int j = 0; j < QK / 2; j++)
            s += iq4nl_values[x[b].qs[j] & 15] * y[b].qs[j] + iq4nl_values[x[b].qs[j] >> 4] * y[b].qs[j + QK / 2];
        acc = fmaf((float)s, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), acc);
    }
    return acc;
}
__attribute__((unused)) static void vec_dot_iq4_nl_r8_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_iq4_nl_r8(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
#if HALDA_AVX2
/* An IQ4_NL block's 32 codebook values in element order: one byte shuffle looks up 16 indices. */
static inline __m256i avx2_iq4_nl_values(const block_iq4_nl *x)
{
    const __m128i book = _mm_loadu_si128((const __m128i *)iq4nl_values);
    __m128i raw = _mm_loadu_si128((const __m128i *)x->qs), m4 = _mm_set1_epi8(15);
    __m128i lo = _mm_shuffle_epi8(book, _mm_and_si128(raw, m4)), hi = _mm_shuffle_epi8(book, _mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    return _mm256_set_m128i(hi, lo);
}
static float vec_dot_iq4_nl_avx2(int64_t n, const void *w, const void *a)
{
    const block_iq4_nl *x = w;
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i lanes = avx2_dot_i8_lanes(avx2_iq4_nl_values(&x[b]), _mm256_loadu_si256((const __m256i *)y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x[b].d) * f16_to_f32(y[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc);
}
static float vec_dot_iq4_nl_r8_avx2(int64_t n, const void *w, const void *a)
{
    const block_iq4_nl *x = w;
    const block_q8_0 *y = a;
    float acc = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        int32_t s = avx2_sum_i32(avx2_dot_i8_lanes(avx2_iq4_nl_values(&x[b]), _mm256_loadu_si256((const __m256i *)y[b].qs)));
        acc = fmaf((float)s, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), acc);
    }
    return acc;
}
/* 8 rows at once, as vec_dot_q4_0_r8_8rows_avx2 (AVX512-VNNI builds use their own twin) */
__attribute__((unused)) static void vec_dot_iq4_nl_r8_8rows_avx2(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)b * 8 * sizeof(block_iq4_nl), 8 * sizeof(block_iq4_nl));
        __m256i ya = _mm256_loadu_si256((const __m256i *)y[b].qs), lanes[8];
        float dw[8];
        for (int r = 0; r < 8; r++) {
            const block_iq4_nl *x = (const block_iq4_nl *)((const uint8_t *)w + (size_t)r * row_bytes) + b;
            lanes[r] = avx2_dot_i8_lanes(avx2_iq4_nl_values(x), ya);
            dw[r] = f16_to_f32(x->d);
        }
        __m256 d = _mm256_mul_ps(_mm256_loadu_ps(dw), _mm256_set1_ps(f16_to_f32(y[b].d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(avx2_sum8_i32(lanes)), d, acc);
    }
    _mm256_storeu_ps(out, acc);
}
#endif
#if HALDA_AVX512VNNI
/* 8 rows with the codebook shifted by 128 (iq4nl_values + 128, all in [1, 241]) as unsigned
 * bytes: vpdpbusd takes them whole, with no 16-bit pairs that could saturate as maddubs' would,
 * and Σ v·a = Σ (v + 128)·a − 128·Σ a, the second term found once for the 8 rows. */
static void vec_dot_iq4_nl_r8_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const block_q8_0 *y = a;
    const __m256i book = _mm256_broadcastsi128_si256(_mm_xor_si128(_mm_loadu_si128((const __m128i *)iq4nl_values), _mm_set1_epi8(-128)));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK; b++) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)b * 8 * sizeof(block_iq4_nl), 8 * sizeof(block_iq4_nl));
        __m256i ya = _mm256_loadu_si256((const __m256i *)y[b].qs), lanes[8];
        __m256i offset = _mm256_set1_epi32(avx2_sum_i32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), ya)));
        float dw[8];
        for (int r = 0; r < 8; r++) {
            const block_iq4_nl *x = (const block_iq4_nl *)((const uint8_t *)w + (size_t)r * row_bytes) + b;
            lanes[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_shuffle_epi8(book, avx2_nibbles(x->qs)), ya);
            dw[r] = f16_to_f32(x->d);
        }
        __m256 d = _mm256_mul_ps(_mm256_loadu_ps(dw), _mm256_set1_ps(f16_to_f32(y[b].d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(avx2_sum8_i32(lanes), offset)), d, acc);
    }
    _mm256_storeu_ps(out, acc);
}
#endif
#if HALDA_NEON
/* An IQ4_NL block as signed bytes: a table lookup (TBL) turns 16 indices into 16 codebook values. */
static inline void neon_iq4_nl_bytes(const uint8_t *block, int8x16_t q[2])
{
    int8x16_t book = vld1q_s8(iq4nl_values);
    uint8x16_t raw = vld1q_u8(((const block_iq4_nl *)block)->qs);
    q[0] = vqtbl1q_s8(book, vandq_u8(raw, vdupq_n_u8(15))), q[1] = vqtbl1q_s8(book, vshrq_n_u8(raw, 4));
}
static float vec_dot_iq4_nl_neon(int64_t n, const void *w, const void *a) { return neon_i8_dot(n, w, a, sizeof(block_iq4_nl), neon_iq4_nl_bytes); }
static float vec_dot_iq4_nl_r8_neon(int64_t n, const void *w, const void *a)
{
    return neon_i8_dot_r8(n, w, a, sizeof(block_iq4_nl), neon_iq4_nl_bytes);
}
static void vec_dot_iq4_nl_r8_8rows_neon(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    neon_i8_dot_r8_8rows(n, w, row_bytes, a, out, sizeof(block_iq4_nl), neon_iq4_nl_bytes);
}
#endif

/* ---- Q8_K (activations of the k-quants) and Q6_K --------------------------------------------- */

/* iscale = −127 / x_max with x_max the element of largest magnitude (its sign kept), q clamped
 * to 127 (the element x_max itself maps to −127), d = 1 / iscale; bsums are the per-16 sums.
 * q is the product iscale·x rounded to F32, then to the nearest integer (ties to even) by the
 * "add 1.5·2^23" trick, as llama.cpp's nearest_int(iscale·x) does.  The multiply and the add
 * are not fused: that function (quantize_row_q8_K_ref) lives in ggml-base, which llama.cpp
 * builds without -march=native, so there is no FMA instruction to contract them into (its
 * object code is mulps, addps).  A fused form rounds differently when the product lies within
 * half an F32 ulp of a .5; with everything before it bit-identical, that flip alone moved
 * tiny-qwen2-q3_k_m.lily's logits by 1.2e-2. */
__attribute__((unused)) static void quantize_q8_K(const float *src, void *dst, int64_t n)
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
            float prod = iscale * src[j];
            float f = prod + 12582912.0f; /* 1.5·2^23: the integer lands in the low bits */
            int v = (int)(f32_bits(f) & 0x007fffff) - 0x00400000;
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
#if HALDA_AVX2
/* The same steps 8 elements at a time.  The element of largest magnitude is found in two
 * passes — the largest |x|, then the first element that has it — which picks the same element
 * as the scalar loop (the first of equal magnitudes, its sign kept). */
__attribute__((unused)) static void quantize_q8_K_avx2(const float *src, void *dst, int64_t n)
{
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        __m256 amaxv = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) amaxv = _mm256_max_ps(avx2_abs_ps(_mm256_loadu_ps(src + j)), amaxv);
        float amax = avx2_max_ps(amaxv);
        if (amax == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int first = 0;
        for (int j = 0; j < QK_K; j += 8) {
            int hit = _mm256_movemask_ps(_mm256_cmp_ps(avx2_abs_ps(_mm256_loadu_ps(src + j)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (hit) {
                first = j + __builtin_ctz((unsigned)hit);
                break;
            }
        }
        float iscale = -127.0f / src[first];
        const __m256 vscale = _mm256_set1_ps(iscale), magic = _mm256_set1_ps(12582912.0f);
        for (int j = 0; j < QK_K; j += 32) { /* 32 values: two groups of 16 */
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                __m256 f = _mm256_add_ps(_mm256_mul_ps(vscale, _mm256_loadu_ps(src + j + 8 * k)), magic);
                __m256i v = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(f), _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
                q[k] = _mm256_min_epi32(v, _mm256_set1_epi32(127));
            }
            _mm256_storeu_si256((__m256i *)(y[b].qs + j), avx2_pack_i8(q[0], q[1], q[2], q[3]));
            y[b].bsums[j / 16] = (int16_t)avx2_sum_i32(_mm256_add_epi32(q[0], q[1]));
            y[b].bsums[j / 16 + 1] = (int16_t)avx2_sum_i32(_mm256_add_epi32(q[2], q[3]));
        }
        y[b].d = 1.0f / iscale;
    }
}
#endif
#if HALDA_AVX512
/* The 16 sums of 16 of a block's quantized bytes: the sums of 4 (maddubs and madd with ones),
 * then of 16 within each 128-bit lane, gathered one group per lane and narrowed to 16 bits. */
static inline void avx512_q8_K_bsums(const int8_t qs[QK_K], int16_t bsums[QK_K / 16])
{
    __m512i g[4];
    for (int k = 0; k < 4; k++) {
        __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_set1_epi8(1), _mm512_loadu_si512(qs + 64 * k)), _mm512_set1_epi16(1));
        p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_CDAB));
        g[k] = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC)); /* lane 4j..4j+3: group 4k + j */
    }
    const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    __m512i lo = _mm512_permutex2var_epi32(g[0], pick, g[1]), hi = _mm512_permutex2var_epi32(g[2], pick, g[3]);
    __m512i all = _mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1);
    _mm256_storeu_si256((__m256i *)bsums, _mm512_cvtepi32_epi16(all));
}
/* The AVX2 quantizer's steps 16 elements at a time (the same max_ps operand order, so a NaN is
 * skipped the same way; vpmovsdb saturates as the two packs do). */
static void quantize_q8_K_avx512(const float *src, void *dst, int64_t n)
{
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        __m512 amax2[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}; /* two chains of max, not one */
        for (int j = 0; j < QK_K; j += 16) amax2[j / 16 % 2] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(src + j)), amax2[j / 16 % 2]);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(amax2[0], amax2[1]));
        if (amax == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int first = 0;
        for (int j = 0; j < QK_K; j += 16) {
            __mmask16 hit = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(src + j)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (hit) {
                first = j + __builtin_ctz((unsigned)hit);
                break;
            }
        }
        float iscale = -127.0f / src[first];
        const __m512 vscale = _mm512_set1_ps(iscale), magic = _mm512_set1_ps(12582912.0f);
        for (int j = 0; j < QK_K; j += 16) {
            __m512 f = _mm512_add_ps(_mm512_mul_ps(vscale, _mm512_loadu_ps(src + j)), magic); /* not fused: see quantize_q8_K */
            __m512i v = _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(f), _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x00400000));
            __m512i q = _mm512_min_epi32(v, _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(y[b].qs + j), _mm512_cvtsepi32_epi8(q));
        }
        avx512_q8_K_bsums(y[b].qs, y[b].bsums);
        y[b].d = 1.0f / iscale;
    }
}
#endif
#if HALDA_NEON
static void quantize_q8_K_neon(const float *src, void *dst, int64_t n)
{
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float32x4_t amaxv = vdupq_n_f32(0);
        for (int j = 0; j < QK_K; j += 4) amaxv = vmaxnmq_f32(amaxv, vabsq_f32(vld1q_f32(src + j)));
        float amax = vmaxnmvq_f32(amaxv), max = 0;
        if (amax == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        for (int j = 0; j < QK_K; j++) /* the first element of largest magnitude, as the scalar loop picks */
            if (fabsf(src[j]) == amax) {
                max = src[j];
                break;
            }
        float iscale = -127.0f / max;
        const float32x4_t vscale = vdupq_n_f32(iscale), magic = vdupq_n_f32(12582912.0f);
        for (int j = 0; j < QK_K; j += 32) { /* 32 values: two groups of 16 */
            int32x4_t q[8];
            for (int k = 0; k < 8; k++) {
                float32x4_t f = vaddq_f32(vmulq_f32(vscale, vld1q_f32(src + j + 4 * k)), magic);
                int32x4_t v = vsubq_s32(vreinterpretq_s32_u32(vandq_u32(vreinterpretq_u32_f32(f), vdupq_n_u32(0x007fffff))), vdupq_n_s32(0x00400000));
                q[k] = vminq_s32(v, vdupq_n_s32(127));
            }
            neon_store_i8(y[b].qs + j, q);
            y[b].bsums[j / 16] = (int16_t)vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
            y[b].bsums[j / 16 + 1] = (int16_t)vaddvq_s32(vaddq_s32(vaddq_s32(q[4], q[5]), vaddq_s32(q[6], q[7])));
        }
        y[b].d = 1.0f / iscale;
    }
}
#endif
static void dequantize_q8_K(const void *src, float *dst, int64_t n)
{
    const block_q8_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++)
        for (int j = 0; j < QK_K; j++) dst[b * QK_K + j] = x[b].d * x[b].qs[j];
}

/* ---- Q2_K, Q3_K, Q4_K, Q5_K ------------------------------------------------------------------
 * Each type has an `unpack` that writes the 256 integers q of a super-block (the layouts of
 * section 3 in code), and the dot products work on those integers: the per-group integer sums
 * are exact, and only the final F32 steps need to follow llama.cpp's order (see each kernel).
 * The dequantizers compute (d·sc)·q − dmin·m as llama.cpp's do; both products are exact (an
 * F16 times small integers), so only the subtraction rounds, fused into an FMA or not. */

/* Byte and bit of element i in the 2-bit planes (Q2_K, Q3_K): plane i%128/32 of byte
 * 32·(i/128) + i%32; and in the nibble planes (Q4_K, Q5_K): nibble i%64/32 of byte 32·(i/64) + i%32. */
static inline int plane2_byte(int i) { return 32 * (i / 128) + i % 32; }
static inline int plane2_shift(int i) { return 2 * (i % 128 / 32); }
static inline int plane4_byte(int i) { return 32 * (i / 64) + i % 32; }
static inline int plane4_shift(int i) { return 4 * (i % 64 / 32); }

static void q2_K_unpack(const block_q2_K *x, int8_t q[QK_K])
{
    for (int i = 0; i < QK_K; i++) q[i] = (int8_t)((x->qs[plane2_byte(i)] >> plane2_shift(i)) & 3);
}
static void q3_K_unpack(const block_q3_K *x, int8_t q[QK_K])
{
    for (int i = 0; i < QK_K; i++) {
        int low = (x->qs[plane2_byte(i)] >> plane2_shift(i)) & 3;
        bool high = (x->hmask[i % 32] >> (4 * (i / 128) + i % 128 / 32)) & 1;
        q[i] = (int8_t)(high ? low : low - 4);
    }
}
static void q4_K_unpack(const block_q4_K *x, int8_t q[QK_K])
{
    for (int i = 0; i < QK_K; i++) q[i] = (int8_t)((x->qs[plane4_byte(i)] >> plane4_shift(i)) & 15);
}
static void q5_K_unpack(const block_q5_K *x, int8_t q[QK_K])
{
    for (int i = 0; i < QK_K; i++)
        q[i] = (int8_t)(((x->qs[plane4_byte(i)] >> plane4_shift(i)) & 15) | ((x->qh[i % 32] >> (i / 32)) & 1) << 4);
}

/* The inverse of k_scale_min: store scale and min (both 0..63) of sub-block j. */
static void k_scale_min_pack(uint8_t s[12], int j, int scale, int min)
{
    if (j < 4) {
        s[j] = (uint8_t)((s[j] & 0xc0) | scale);
        s[j + 4] = (uint8_t)((s[j + 4] & 0xc0) | min);
    } else {
        s[j + 4] = (uint8_t)((scale & 15) | (min & 15) << 4);
        s[j - 4] = (uint8_t)((s[j - 4] & 63) | (scale >> 4) << 6);
        s[j] = (uint8_t)((s[j] & 63) | (min >> 4) << 6);
    }
}

/* The super-block scales of the "scale and minimum" k-quants: the per-group scales and
 * minimums found by fit_scale_min are themselves quantized to nmax_scale levels of d and dmin
 * (as F16), and every weight is then re-rounded against the group's final scale and minimum —
 * which is what the dequantizer will use.  Returns the integer scales and minimums. */
static void k_quantize_scales(const float *scale, const float *min, int n_groups, int nmax_scale, f16_t *d, f16_t *dmin,
                              int *isc, int *imin)
{
    float max_scale = 0, max_min = 0;
    for (int g = 0; g < n_groups; g++) max_scale = fmaxf(max_scale, scale[g]), max_min = fmaxf(max_min, min[g]);
    *d = f32_to_f16(max_scale / (float)nmax_scale);
    *dmin = f32_to_f16(max_min / (float)nmax_scale);
    float df = f16_to_f32(*d), dminf = f16_to_f32(*dmin);
    for (int g = 0; g < n_groups; g++) {
        isc[g] = df > 0 ? clampi(round_even(scale[g] / df), 0, nmax_scale) : 0;
        imin[g] = dminf > 0 ? clampi(round_even(min[g] / dminf), 0, nmax_scale) : 0;
    }
}

/* The integer nearest to (x + m)/s in [0, nmax], for the final rounding against quantized scales. */
static inline int k_requantize(float x, float s, float m, int nmax) { return s > 0 ? clampi(round_even((x + m) / s), 0, nmax) : 0; }

static void quantize_q2_K(const float *src, void *dst, int64_t n)
{
    block_q2_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float scale[16], min[16];
        uint8_t L[16];
        int isc[16], imin[16];
        for (int g = 0; g < 16; g++) fit_scale_min(src + 16 * g, 16, 3, L, &scale[g], &min[g]);
        memset(&y[b], 0, sizeof y[b]);
        k_quantize_scales(scale, min, 16, 15, &y[b].d, &y[b].dmin, isc, imin);
        float d = f16_to_f32(y[b].d), dmin = f16_to_f32(y[b].dmin);
        for (int i = 0; i < QK_K; i++) {
            int g = i / 16;
            if (i % 16 == 0) y[b].scales[g] = (uint8_t)(isc[g] | imin[g] << 4);
            int q = k_requantize(src[i], d * (float)isc[g], dmin * (float)imin[g], 3);
            y[b].qs[plane2_byte(i)] |= (uint8_t)(q << plane2_shift(i));
        }
    }
}
static void dequantize_q2_K(const void *src, float *dst, int64_t n)
{
    const block_q2_K *x = src;
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
        q2_K_unpack(&x[b], q);
        for (int i = 0; i < QK_K; i++) {
            float dl = d * (float)(x[b].scales[i / 16] & 15), ml = dmin * (float)(x[b].scales[i / 16] >> 4);
            dst[i] = dl * (float)q[i] - ml;
        }
    }
}
/* Summation order of llama.cpp's x86 ggml_vec_dot_q2_K_q8_K: per super-block, first the
 * minimums into the 8 lanes (lane l gets m[2l]·bsums[2l] + m[2l+1]·bsums[2l+1], times
 * −d_act·dmin), then the scaled products (k_lane_sums, times d_act·d), each a fused
 * multiply-add; the lanes are added at the end as lane_acc_sum does. */
__attribute__((unused)) static float vec_dot_q2_K(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    lane_acc acc = {{0}};
    int8_t q[QK_K];
    int sc[16];
    int32_t lane[8];
    for (int64_t b = 0; b < n / QK_K; b++) {
        q2_K_unpack(&x[b], q);
        for (int g = 0; g < 16; g++) sc[g] = x[b].scales[g] & 15;
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        for (int l = 0; l < 8; l++) {
            int32_t m = (x[b].scales[2 * l] >> 4) * y[b].bsums[2 * l] + (x[b].scales[2 * l + 1] >> 4) * y[b].bsums[2 * l + 1];
            acc.lane[l] = fmaf(dmin, (float)m, acc.lane[l]);
        }
        k_lane_sums(q, sc, y[b].qs, lane);
        for (int l = 0; l < 8; l++) acc.lane[l] = fmaf(d, (float)lane[l], acc.lane[l]);
    }
    return lane_acc_sum(&acc);
}
/* The repacked order (llama.cpp repacks Q2_K on AVX-512 machines, where the references were
 * made): per super-block one exact integer sum for the scales and one for the minimums, each
 * accumulated with a fused multiply-add in its own F32 accumulator, the minimums subtracted at
 * the end. */
__attribute__((unused)) static float vec_dot_q2_K_r8(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    float acc = 0, acc_min = 0;
    int8_t q[QK_K];
    int sc[16];
    for (int64_t b = 0; b < n / QK_K; b++) {
        q2_K_unpack(&x[b], q);
        int32_t mins = 0;
        for (int g = 0; g < 16; g++) sc[g] = x[b].scales[g] & 15, mins += (x[b].scales[g] >> 4) * y[b].bsums[g];
        acc = fmaf((float)k_dot(q, sc, y[b].qs), f16_to_f32(x[b].d) * y[b].d, acc);
        acc_min = fmaf((float)mins, f16_to_f32(x[b].dmin) * y[b].d, acc_min);
    }
    return acc - acc_min;
}
#if HALDA_AVX2
/* Run r of a Q2_K super-block, elements 32r..32r+31 (groups 2r and 2r+1), as bytes: plane r%4
 * of qs[32·(r/4) ..].  (A 16-bit shift by at most 6 brings no bit across a byte into the mask.) */
static inline __m256i avx2_q2_K_run(const block_q2_K *x, int r)
{
    __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * (r / 4)));
    return _mm256_and_si256(_mm256_srli_epi16(raw, 2 * (r % 4)), _mm256_set1_epi8(3));
}
/* k_lane_sums of a Q2_K super-block, run by run. */
static inline __m256i avx2_q2_K_lanes(const block_q2_K *x, const block_q8_K *y)
{
    __m256i sum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}; /* two chains of accumulation, not one */
    for (int r = 0; r < 8; r++)
        sum[r & 1] = avx2_dot_u8_scaled(sum[r & 1], avx2_q2_K_run(x, r), _mm256_loadu_si256((const __m256i *)(y->qs + 32 * r)),
                                        x->scales[2 * r] & 15, x->scales[2 * r + 1] & 15);
    return _mm256_add_epi32(sum[0], sum[1]);
}
/* The 16 minimums of a Q2_K super-block (the scales' high nibbles) as 16-bit words. */
static inline __m256i avx2_q2_K_mins(const block_q2_K *x)
{
    __m128i sc = _mm_loadu_si128((const __m128i *)x->scales);
    return _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(15)));
}
/* Lane l of the minimums, m[2l]·bsums[2l] + m[2l+1]·bsums[2l+1]: one madd of the 16 minimums
 * with the 16 sums. */
static inline __m256i avx2_q2_K_min_lanes(const block_q2_K *x, const block_q8_K *y)
{
    return _mm256_madd_epi16(avx2_q2_K_mins(x), _mm256_loadu_si256((const __m256i *)y->bsums));
}
__attribute__((unused)) static float vec_dot_q2_K_avx2(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(avx2_q2_K_min_lanes(&x[b], &y[b])), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(avx2_q2_K_lanes(&x[b], &y[b])), acc);
    }
    return avx2_lane_sum(acc);
}
__attribute__((unused)) static float vec_dot_q2_K_r8_avx2(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    float acc = 0, acc_min = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t mins = avx2_sum_i32(avx2_q2_K_min_lanes(&x[b], &y[b]));
        acc = fmaf((float)avx2_sum_i32(avx2_q2_K_lanes(&x[b], &y[b])), f16_to_f32(x[b].d) * y[b].d, acc);
        acc_min = fmaf((float)mins, f16_to_f32(x[b].dmin) * y[b].d, acc_min);
    }
    return acc - acc_min;
}
#endif
#if HALDA_AVX512
/* k_lane_sums of a Q2_K super-block in two halves, 64 elements (runs 2c and 2c+1, planes 2c%4
 * and 2c%4 + 1 of the same 32 bytes of qs) at a time; word i of a chunk is in group 4c + i/8. */
static inline __m512i avx512_q2_K_sums(const block_q2_K *x, const block_q8_K *y)
{
    const __m512i m2 = _mm512_set1_epi8(3);
    const __m512i group = _mm512_set_epi64(0x0003000300030003ll, 0x0003000300030003ll, 0x0002000200020002ll, 0x0002000200020002ll,
                                           0x0001000100010001ll, 0x0001000100010001ll, 0, 0);
    __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_loadu_si128((const __m128i *)x->scales), _mm_set1_epi8(15))));
    __m512i sum[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int c = 0; c < 4; c++) {
        long long s_lo = 4 * (c % 2), s_hi = 4 * (c % 2) + 2;
        __m512i qs = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x->qs + 32 * (c / 2))));
        __m512i q = _mm512_and_si512(_mm512_srlv_epi64(qs, _mm512_set_epi64(s_hi, s_hi, s_hi, s_hi, s_lo, s_lo, s_lo, s_lo)), m2);
        __m512i sc = _mm512_permutexvar_epi16(_mm512_add_epi16(group, _mm512_set1_epi16((short)(4 * c))), sc16);
        sum[c & 1] = avx512_madd_acc(sum[c & 1], _mm512_maddubs_epi16(q, _mm512_loadu_si512(y->qs + 64 * c)), sc);
    }
    return _mm512_add_epi32(sum[0], sum[1]);
}
static float vec_dot_q2_K_avx512(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(avx2_q2_K_min_lanes(&x[b], &y[b])), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(avx512_fold_i32(avx512_q2_K_sums(&x[b], &y[b]))), acc);
    }
    return avx2_lane_sum(acc);
}
/* The repacked order: both totals from one reduction, both fused multiply-adds in lanes 0
 * (acc) and 1 (acc_min) of one register, as vec_dot_q4_K_r8_avx512. */
static float vec_dot_q2_K_r8_avx512(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    __m128 acc = _mm_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m256i s8 = avx512_fold_i32(avx512_q2_K_sums(&x[b], &y[b])), m8 = avx2_q2_K_min_lanes(&x[b], &y[b]);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        __m128i m4 = _mm_add_epi32(_mm256_castsi256_si128(m8), _mm256_extracti128_si256(m8, 1));
        __m128i t = _mm_hadd_epi32(s4, m4);
        t = _mm_hadd_epi32(t, t);
        uint32_t d_dmin;
        memcpy(&d_dmin, &x[b].d, 4);
        __m128 scale = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)d_dmin)), _mm_set1_ps(y[b].d));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(t), scale, acc);
    }
    return _mm_cvtss_f32(acc) - _mm_cvtss_f32(_mm_movehdup_ps(acc));
}
#endif
#if HALDA_NEON
/* k_lane_sums of a Q2_K super-block (lanes 0..3 in *lo, 4..7 in *hi): run r = 4h + s is plane
 * s of qs[32h ..]; its first 16 elements are group 2r, the next 16 group 2r+1. */
static inline void neon_q2_K_lanes(const block_q2_K *x, const block_q8_K *y, int32x4_t *lo, int32x4_t *hi)
{
    const uint8x16_t m2 = vdupq_n_u8(3);
    int32x4_t sum_lo = vdupq_n_s32(0), sum_hi = vdupq_n_s32(0);
    for (int h = 0; h < 2; h++) {
        uint8x16_t r0 = vld1q_u8(x->qs + 32 * h), r1 = vld1q_u8(x->qs + 32 * h + 16);
        for (int s = 0; s < 4; s++, r0 = vshrq_n_u8(r0, 2), r1 = vshrq_n_u8(r1, 2)) {
            int r = 4 * h + s;
            int32x4_t p_lo, p_hi;
            neon_block_lanes(vreinterpretq_s8_u8(vandq_u8(r0, m2)), vreinterpretq_s8_u8(vandq_u8(r1, m2)), y->qs + 32 * r, &p_lo, &p_hi);
            sum_lo = vmlaq_n_s32(sum_lo, p_lo, x->scales[2 * r] & 15);
            sum_hi = vmlaq_n_s32(sum_hi, p_hi, x->scales[2 * r + 1] & 15);
        }
    }
    *lo = sum_lo, *hi = sum_hi;
}
static float vec_dot_q2_K_neon(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        int32_t m[8]; /* the minimums' lanes, as the scalar function forms them */
        for (int l = 0; l < 8; l++) m[l] = (x[b].scales[2 * l] >> 4) * y[b].bsums[2 * l] + (x[b].scales[2 * l + 1] >> 4) * y[b].bsums[2 * l + 1];
        neon_fma_lanes(&acc_lo, &acc_hi, dmin, vld1q_s32(m), vld1q_s32(m + 4));
        int32x4_t lo, hi;
        neon_q2_K_lanes(&x[b], &y[b], &lo, &hi);
        neon_fma_lanes(&acc_lo, &acc_hi, d, lo, hi);
    }
    return neon_lane_sum(acc_lo, acc_hi);
}
static float vec_dot_q2_K_r8_neon(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    float acc = 0, acc_min = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t mins = 0;
        for (int g = 0; g < 16; g++) mins += (x[b].scales[g] >> 4) * y[b].bsums[g];
        int32x4_t lo, hi;
        neon_q2_K_lanes(&x[b], &y[b], &lo, &hi);
        acc = fmaf((float)vaddvq_s32(vaddq_s32(lo, hi)), f16_to_f32(x[b].d) * y[b].d, acc);
        acc_min = fmaf((float)mins, f16_to_f32(x[b].dmin) * y[b].d, acc_min);
    }
    return acc - acc_min;
}
#endif

static void quantize_q3_K(const float *src, void *dst, int64_t n)
{
    block_q3_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float scale[16];
        int8_t L[16], isc[16];
        for (int g = 0; g < 16; g++) scale[g] = fit_scale(src + 16 * g, 16, -4, 3, L);
        memset(&y[b], 0, sizeof y[b]);
        /* the 16 group scales, signed, fitted to 6 bits the same way */
        y[b].d = f32_to_f16(fit_scale(scale, 16, -32, 31, isc));
        float d = f16_to_f32(y[b].d);
        for (int g = 0; g < 16; g++) { /* the packing q3_K_scale() undoes */
            int v = isc[g] + 32;
            y[b].scales[g % 8] |= (uint8_t)((v & 15) << (g < 8 ? 0 : 4));
            y[b].scales[8 + g % 4] |= (uint8_t)((v >> 4) << (2 * (g / 4)));
        }
        for (int i = 0; i < QK_K; i++) {
            float s = d * (float)isc[i / 16];
            int u = (s != 0 ? clampi(round_even(src[i] / s), -4, 3) : 0) + 4; /* q + 4 in [0,7] */
            y[b].qs[plane2_byte(i)] |= (uint8_t)((u & 3) << plane2_shift(i));
            y[b].hmask[i % 32] |= (uint8_t)((u >> 2) << (4 * (i / 128) + i % 128 / 32));
        }
    }
}
static void dequantize_q3_K(const void *src, float *dst, int64_t n)
{
    const block_q3_K *x = src;
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        float d = f16_to_f32(x[b].d);
        q3_K_unpack(&x[b], q);
        for (int i = 0; i < QK_K; i++) dst[i] = d * (float)q3_K_scale(x[b].scales, i / 16) * (float)q[i];
    }
}
/* Summation order of llama.cpp's x86 ggml_vec_dot_q3_K_q8_K: the 8 lanes of k_lane_sums, each
 * accumulated with a fused multiply-add by d_act·d, added up at the end as lane_acc_sum does. */
__attribute__((unused)) static float vec_dot_q3_K(int64_t n, const void *w, const void *a)
{
    const block_q3_K *x = w;
    const block_q8_K *y = a;
    lane_acc acc = {{0}};
    int8_t q[QK_K];
    int sc[16];
    int32_t lane[8];
    for (int64_t b = 0; b < n / QK_K; b++) {
        q3_K_unpack(&x[b], q);
        for (int g = 0; g < 16; g++) sc[g] = q3_K_scale(x[b].scales, g);
        k_lane_sums(q, sc, y[b].qs, lane);
        float d = y[b].d * f16_to_f32(x[b].d);
        for (int l = 0; l < 8; l++) acc.lane[l] = fmaf(d, (float)lane[l], acc.lane[l]);
    }
    return lane_acc_sum(&acc);
}
#if HALDA_AVX2
/* Q3_K's 16 scales (q3_K_scale) at once, as signed bytes, four at a time in 32-bit words of the
 * packed bytes w0 = 0..3, w1 = 4..7, w2 = 8..11: scales 0..3 = (w0 & 0x0f…) | (w2 & 0x03…) << 4,
 * 4..7 = (w1 & 0x0f…) | (w2 >> 2 & 0x03…) << 4, 8..11 from w0 >> 4 and w2 >> 4, 12..15 from
 * w1 >> 4 and w2 >> 6; minus the bias 32. */
static inline __m128i avx2_q3_K_scales(const uint8_t s[12])
{
    uint32_t w2;
    memcpy(&w2, s + 8, 4);
    __m128i w = _mm_insert_epi32(_mm_loadl_epi64((const __m128i *)s), (int)w2, 2); /* the block ends 2 bytes after s */
    __m128i low = _mm_srlv_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(1, 0, 1, 0)), _mm_setr_epi32(0, 0, 4, 4));
    __m128i high = _mm_srlv_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(2, 2, 2, 2)), _mm_setr_epi32(0, 2, 4, 6));
    __m128i v = _mm_or_si128(_mm_and_si128(low, _mm_set1_epi8(15)), _mm_and_si128(_mm_slli_epi32(high, 4), _mm_set1_epi8(0x30)));
    return _mm_sub_epi8(v, _mm_set1_epi8(32));
}
/* Run r of a Q3_K super-block as q + 4 in [0, 7]: plane r%4 of qs[32·(r/4) ..] (as Q2_K), plus
 * 4 where bit r of hmask[0..31] is set — that bit moved onto bit 2 by a 16-bit shift of at most
 * 5, which brings no bit across a byte into the mask. */
static inline __m256i avx2_q3_K_run(const block_q3_K *x, int r)
{
    __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * (r / 4))), hm = _mm256_loadu_si256((const __m256i *)x->hmask);
    __m256i low = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * (r % 4)), _mm256_set1_epi8(3));
    return _mm256_or_si256(low, _mm256_and_si256(r < 2 ? _mm256_slli_epi16(hm, 2 - r) : _mm256_srli_epi16(hm, r - 2), _mm256_set1_epi8(4)));
}
/* k_lane_sums of a Q3_K super-block, run by run: q = (q + 4) − 4. */
static inline __m256i avx2_q3_K_lanes(const block_q3_K *x, const block_q8_K *y, const int sc[16])
{
    __m256i sum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}; /* two chains of accumulation, not one */
    for (int r = 0; r < 8; r++) {
        __m256i q = _mm256_sub_epi8(avx2_q3_K_run(x, r), _mm256_set1_epi8(4));
        sum[r & 1] = avx2_dot_i8_scaled(sum[r & 1], q, _mm256_loadu_si256((const __m256i *)(y->qs + 32 * r)), sc[2 * r], sc[2 * r + 1]);
    }
    return _mm256_add_epi32(sum[0], sum[1]);
}
__attribute__((unused)) static float vec_dot_q3_K_avx2(int64_t n, const void *w, const void *a)
{
    const block_q3_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sc[16];
        for (int g = 0; g < 16; g++) sc[g] = q3_K_scale(x[b].scales, g);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[b].d * f16_to_f32(x[b].d)), _mm256_cvtepi32_ps(avx2_q3_K_lanes(&x[b], &y[b], sc)), acc);
    }
    return avx2_lane_sum(acc);
}
#endif
#if HALDA_AVX512
/* k_lane_sums of a Q3_K super-block in two halves, 64 elements (runs r and r+1) at a time, as
 * q + 4 in [0, 7]: the low two bits from plane r%4 (and r%4 + 1) of qs, plus 4 where the bit r
 * (r+1) of hmask is set, rotated onto bit 2 of its byte; (q + 4)·a − 4·a in 16-bit pairs, as
 * Q6_K does with 32. */
static float vec_dot_q3_K_avx512(int64_t n, const void *w, const void *a)
{
    const block_q3_K *x = w;
    const block_q8_K *y = a;
    const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(4);
    const __m512i group = _mm512_set_epi64(0x0003000300030003ll, 0x0003000300030003ll, 0x0002000200020002ll, 0x0002000200020002ll,
                                           0x0001000100010001ll, 0x0001000100010001ll, 0, 0); /* word i of a chunk: group i/8 */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(avx2_q3_K_scales(x[b].scales)));
        __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)x[b].hmask));
        __m512i sum[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int c = 0; c < 4; c++) { /* elements 64c..64c+63: runs r = 2c and 2c+1, half c/2 */
            int r = 2 * c;
            long long s_lo = 2 * (r % 4), s_hi = 2 * (r % 4 + 1), k_lo = (2 - r) & 63, k_hi = (1 - r) & 63;
            __m512i qs = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * (c / 2))));
            __m512i low = _mm512_and_si512(_mm512_srlv_epi64(qs, _mm512_set_epi64(s_hi, s_hi, s_hi, s_hi, s_lo, s_lo, s_lo, s_lo)), m3);
            __m512i bit = _mm512_and_si512(_mm512_rolv_epi64(hm, _mm512_set_epi64(k_hi, k_hi, k_hi, k_hi, k_lo, k_lo, k_lo, k_lo)), m4);
            __m512i a8 = _mm512_loadu_si512(y[b].qs + 64 * c);
            __m512i p16 = _mm512_sub_epi16(_mm512_maddubs_epi16(_mm512_or_si512(low, bit), a8), _mm512_maddubs_epi16(m4, a8));
            __m512i sc = _mm512_permutexvar_epi16(_mm512_add_epi16(group, _mm512_set1_epi16((short)(4 * c))), sc16);
            sum[c & 1] = avx512_madd_acc(sum[c & 1], p16, sc);
        }
        __m256i lanes = avx512_fold_i32(_mm512_add_epi32(sum[0], sum[1]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[b].d * f16_to_f32(x[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc);
}
#endif
#if HALDA_NEON
static float vec_dot_q3_K_neon(int64_t n, const void *w, const void *a)
{
    const block_q3_K *x = w;
    const block_q8_K *y = a;
    const uint8x16_t m2 = vdupq_n_u8(3), four = vdupq_n_u8(4);
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sc[16];
        for (int g = 0; g < 16; g++) sc[g] = q3_K_scale(x[b].scales, g);
        uint8x16_t hm0 = vld1q_u8(x[b].hmask), hm1 = vld1q_u8(x[b].hmask + 16);
        int32x4_t sum_lo = vdupq_n_s32(0), sum_hi = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) { /* run r = 4h + s: plane s of qs[32h ..], third bits bit r of hmask */
            uint8x16_t r0 = vld1q_u8(x[b].qs + 32 * h), r1 = vld1q_u8(x[b].qs + 32 * h + 16);
            for (int s = 0; s < 4; s++, r0 = vshrq_n_u8(r0, 2), r1 = vshrq_n_u8(r1, 2)) {
                int r = 4 * h + s;
                uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << r));
                /* q = low − 4 where the bit is clear: subtract 4 & ~(bit set) */
                int8x16_t q0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(r0, m2)), vreinterpretq_s8_u8(vbicq_u8(four, vtstq_u8(hm0, bit))));
                int8x16_t q1 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(r1, m2)), vreinterpretq_s8_u8(vbicq_u8(four, vtstq_u8(hm1, bit))));
                int32x4_t p_lo, p_hi;
                neon_block_lanes(q0, q1, y[b].qs + 32 * r, &p_lo, &p_hi);
                sum_lo = vmlaq_n_s32(sum_lo, p_lo, sc[2 * r]);
                sum_hi = vmlaq_n_s32(sum_hi, p_hi, sc[2 * r + 1]);
            }
        }
        neon_fma_lanes(&acc_lo, &acc_hi, y[b].d * f16_to_f32(x[b].d), sum_lo, sum_hi);
    }
    return neon_lane_sum(acc_lo, acc_hi);
}
#endif

/* Q4_K and Q5_K share everything but the width of q. */
static void quantize_k_scale_min(const float *src, int nmax, f16_t *d, f16_t *dmin, uint8_t scales[12], uint8_t q[QK_K])
{
    float scale[8], min[8];
    int isc[8], imin[8];
    for (int j = 0; j < 8; j++) fit_scale_min(src + 32 * j, 32, nmax, q + 32 * j, &scale[j], &min[j]);
    k_quantize_scales(scale, min, 8, 63, d, dmin, isc, imin);
    memset(scales, 0, 12);
    float df = f16_to_f32(*d), dminf = f16_to_f32(*dmin);
    for (int j = 0; j < 8; j++) k_scale_min_pack(scales, j, isc[j], imin[j]);
    for (int i = 0; i < QK_K; i++) q[i] = (uint8_t)k_requantize(src[i], df * (float)isc[i / 32], dminf * (float)imin[i / 32], nmax);
}
static void dequantize_k_scale_min(float d, float dmin, const uint8_t scales[12], const int8_t *q, float *dst)
{
    for (int j = 0; j < 8; j++) {
        int sc, m;
        k_scale_min(scales, j, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        for (int i = 32 * j; i < 32 * j + 32; i++) dst[i] = dl * (float)q[i] - ml;
    }
}

static void quantize_q4_K(const float *src, void *dst, int64_t n)
{
    block_q4_K *y = dst;
    uint8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        quantize_k_scale_min(src, 15, &y[b].d, &y[b].dmin, y[b].scales, q);
        memset(y[b].qs, 0, sizeof y[b].qs);
        for (int i = 0; i < QK_K; i++) y[b].qs[plane4_byte(i)] |= (uint8_t)(q[i] << plane4_shift(i));
    }
}
static void dequantize_q4_K(const void *src, float *dst, int64_t n)
{
    const block_q4_K *x = src;
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        q4_K_unpack(&x[b], q);
        dequantize_k_scale_min(f16_to_f32(x[b].d), f16_to_f32(x[b].dmin), x[b].scales, q, dst);
    }
}
/* The repacked order of Q4_K, as for Q2_K above: exact integer sums per super-block,
 * a fused multiply-add into one F32 accumulator for the scales and one for the minimums,
 * subtracted at the end. */
static void k_scale_min_dot(const int8_t *q, const uint8_t scales[12], f16_t d, f16_t dmin, const block_q8_K *y, float *acc,
                            float *acc_min)
{
    int sc[16];
    int32_t mins = 0;
    for (int j = 0; j < 8; j++) {
        int s, m;
        k_scale_min(scales, j, &s, &m);
        sc[2 * j] = sc[2 * j + 1] = s;
        mins += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    *acc = fmaf((float)k_dot(q, sc, y->qs), f16_to_f32(d) * y->d, *acc);
    *acc_min = fmaf((float)mins, f16_to_f32(dmin) * y->d, *acc_min);
}
__attribute__((unused)) static float vec_dot_q4_K_r8(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    float acc = 0, acc_min = 0;
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++) {
        q4_K_unpack(&x[b], q);
        k_scale_min_dot(q, x[b].scales, x[b].d, x[b].dmin, &y[b], &acc, &acc_min);
    }
    return acc - acc_min;
}
__attribute__((unused)) static void vec_dot_q4_K_r8_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_q4_K_r8(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
/* Summation order of llama.cpp's x86 ggml_vec_dot_q4_K_q8_K: the scaled products in the 8 lanes
 * (times d_act·d); the minimums in 4 more F32 lanes, lane k getting the products of sub-blocks
 * 2k and 2k+1 (times −d_act·dmin); at the end the 8 lanes as lane_acc_sum, plus the 4 as
 * (m0 + m2) + (m1 + m3). */
__attribute__((unused)) static float vec_dot_q4_K(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    lane_acc acc = {{0}};
    float acc_m[4] = {0};
    int8_t q[QK_K];
    int sc[16];
    int32_t lane[8];
    for (int64_t b = 0; b < n / QK_K; b++) {
        q4_K_unpack(&x[b], q);
        int m[8];
        for (int j = 0; j < 8; j++) k_scale_min(x[b].scales, j, &sc[2 * j], &m[j]), sc[2 * j + 1] = sc[2 * j];
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        for (int k = 0; k < 4; k++) {
            int32_t mk = m[2 * k] * (y[b].bsums[4 * k] + y[b].bsums[4 * k + 1]) + m[2 * k + 1] * (y[b].bsums[4 * k + 2] + y[b].bsums[4 * k + 3]);
            acc_m[k] = fmaf(dmin, (float)mk, acc_m[k]);
        }
        k_lane_sums(q, sc, y[b].qs, lane);
        for (int l = 0; l < 8; l++) acc.lane[l] = fmaf(d, (float)lane[l], acc.lane[l]);
    }
    return lane_acc_sum(&acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
}
#if HALDA_AVX2
/* k_lane_sums of a Q4_K super-block: each 32-byte run of qs holds two sub-blocks, one per nibble. */
static inline __m256i avx2_q4_K_lanes(const block_q4_K *x, const block_q8_K *y, const int sc[8])
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i sum_lo = _mm256_setzero_si256(), sum_hi = _mm256_setzero_si256(); /* two chains of accumulation, not one */
    for (int c = 0; c < 4; c++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        sum_lo = avx2_dot_u8_scaled(sum_lo, lo, _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c)), sc[2 * c], sc[2 * c]);
        sum_hi = avx2_dot_u8_scaled(sum_hi, hi, _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c + 32)), sc[2 * c + 1], sc[2 * c + 1]);
    }
    return _mm256_add_epi32(sum_lo, sum_hi);
}
__attribute__((unused)) static float vec_dot_q4_K_avx2(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    float acc_m[4] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) k_scale_min(x[b].scales, j, &sc[j], &m[j]);
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        for (int k = 0; k < 4; k++) {
            int32_t mk = m[2 * k] * (y[b].bsums[4 * k] + y[b].bsums[4 * k + 1]) + m[2 * k + 1] * (y[b].bsums[4 * k + 2] + y[b].bsums[4 * k + 3]);
            acc_m[k] = fmaf(dmin, (float)mk, acc_m[k]);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(avx2_q4_K_lanes(&x[b], &y[b], sc)), acc);
    }
    return avx2_lane_sum(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
}
__attribute__((unused)) static float vec_dot_q4_K_r8_avx2(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    float acc = 0, acc_min = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sc[8], m[8];
        int32_t mins = 0;
        for (int j = 0; j < 8; j++) k_scale_min(x[b].scales, j, &sc[j], &m[j]), mins += m[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        acc = fmaf((float)avx2_sum_i32(avx2_q4_K_lanes(&x[b], &y[b], sc)), f16_to_f32(x[b].d) * y[b].d, acc);
        acc_min = fmaf((float)mins, f16_to_f32(x[b].dmin) * y[b].d, acc_min);
    }
    return acc - acc_min;
}
#endif
#if HALDA_AVX512
/* k_lane_sums of a Q4_K super-block in two halves (see avx512_fold_i32): 32 bytes of qs give
 * the 64 elements of sub-blocks 2c and 2c+1, against 64 activation bytes; sc16 holds the 8
 * scales as 16-bit words. */
static inline __m512i avx512_q4_K_sums(const block_q4_K *x, const block_q8_K *y, __m128i sc16)
{
    __m512i sum = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        __m512i p16 = _mm512_maddubs_epi16(avx512_nibble_planes(x->qs + 32 * c), _mm512_loadu_si512(y->qs + 64 * c));
        sum = avx512_madd_acc(sum, p16, avx512_two_words(sc16, 2 * c, 2 * c + 1));
    }
    return sum;
}
/* The activation sums of the 8 sub-blocks of 32, bsums[2j] + bsums[2j+1], as 16-bit words. */
static inline __m128i avx512_bsum_pairs(const block_q8_K *y)
{
    __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
    return _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
}
/* The 8-row kernel's form of avx512_q4_K_sums: qs read 64 bytes at a time, whose low nibbles
 * are sub-blocks 4h and 4h+2 and high nibbles 4h+1 and 4h+3, against the activations arranged
 * the same way once for the 8 rows by avx512_q4_K_act64.  The same integers land in different
 * lanes, which the repacked order's total does not see. */
static inline void avx512_q4_K_act64(const int8_t *a, __m512i act64[4])
{
    for (int h = 0; h < 2; h++) {
        const int8_t *p = a + 128 * h;
        act64[2 * h] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p)), _mm256_loadu_si256((const __m256i *)(p + 64)), 1);
        act64[2 * h + 1] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 32))), _mm256_loadu_si256((const __m256i *)(p + 96)), 1);
    }
}
static inline __m512i avx512_q4_K_sums64(const block_q4_K *x, const __m512i act64[4], __m128i sc16)
{
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512i sum = _mm512_setzero_si512();
    for (int h = 0; h < 2; h++) {
        __m512i raw = _mm512_loadu_si512(x->qs + 64 * h);
        __m512i lo = _mm512_and_si512(raw, m4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
        sum = avx512_madd_acc(sum, _mm512_maddubs_epi16(lo, act64[2 * h]), avx512_two_words(sc16, 4 * h, 4 * h + 2));
        sum = avx512_madd_acc(sum, _mm512_maddubs_epi16(hi, act64[2 * h + 1]), avx512_two_words(sc16, 4 * h + 1, 4 * h + 3));
    }
    return sum;
}
/* The minimums' integer terms of a Q4_K/Q5_K block, lane k = m[2k]·(bsums[4k] + bsums[4k+1]) +
 * m[2k+1]·(bsums[4k+2] + bsums[4k+3]): the sub-block sums times the 16-bit minimums. */
static inline __m128i avx512_k_min_lanes(__m128i scale_min, __m128i bsum_pairs)
{
    return _mm_madd_epi16(bsum_pairs, _mm_unpackhi_epi8(scale_min, _mm_setzero_si128()));
}
static float vec_dot_q4_K_avx512(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m128i scale_min = k_scale_min_unpack(x[b].scales);
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(avx512_k_min_lanes(scale_min, avx512_bsum_pairs(&y[b]))), acc_m);
        __m256i lanes = avx512_fold_i32(avx512_q4_K_sums(&x[b], &y[b], _mm_cvtepu8_epi16(scale_min)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
    }
    __m128 m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m)); /* (m0 + m2), (m1 + m3) */
    return avx2_lane_sum(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
}
/* The repacked order: both integer totals of a block (products and minimums) from one reduction,
 * and both fused multiply-adds in lanes 0 and 1 of one register (lane 0: acc, lane 1: acc_min). */
static float vec_dot_q4_K_r8_avx512(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    __m128 acc = _mm_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m128i scale_min = k_scale_min_unpack(x[b].scales);
        __m256i s8 = avx512_fold_i32(avx512_q4_K_sums(&x[b], &y[b], _mm_cvtepu8_epi16(scale_min)));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        __m128i t = _mm_hadd_epi32(s4, avx512_k_min_lanes(scale_min, avx512_bsum_pairs(&y[b])));
        t = _mm_hadd_epi32(t, t); /* lane 0: the products' total, lane 1: the minimums' */
        uint32_t d_dmin;           /* d and dmin, side by side at the start of the block */
        memcpy(&d_dmin, &x[b].d, 4);
        __m128 scale = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)d_dmin)), _mm_set1_ps(y[b].d));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(t), scale, acc);
    }
    return _mm_cvtss_f32(acc) - _mm_cvtss_f32(_mm_movehdup_ps(acc));
}
/* 8 rows: each row's two integer totals as in the one-row kernel, gathered into one register
 * as (products, minimums) pairs — row r in lanes 2r and 2r+1 — and the 8 blocks' (d, dmin)
 * pairs, converted in the same order, scale them: one fused multiply-add does the 16 scalar
 * ones, lane 2r being row r's acc and lane 2r+1 its acc_min.
 *
 * The rows are read one after the other, a slice of up to K_SLICE blocks of each (all of a
 * 2048-wide row), not block by block across the 8 rows: one sequential stream is what the
 * hardware prefetchers follow best, and it made generation 4-5% faster.  What the 8 rows share
 * — the activations arranged for 64-byte loads and their sub-block sums — is found once per
 * slice, and each row's block totals wait in t until the slice's blocks are added up in order.
 * The next 8 rows are prefetched in the same order. */
enum { K_SLICE = 8 }; /* blocks of each row per slice */
static void vec_dot_q4_K_r8_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const block_q8_K *y = a;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < n / QK_K; b0 += K_SLICE) {
        int nb = n / QK_K - b0 < K_SLICE ? (int)(n / QK_K - b0) : K_SLICE;
        __m512i act64[K_SLICE][4];
        __m128i pairs[K_SLICE], t[K_SLICE][8];
        uint32_t d_dmin[K_SLICE][8];
        for (int k = 0; k < nb; k++) avx512_q4_K_act64(y[b0 + k].qs, act64[k]), pairs[k] = avx512_bsum_pairs(&y[b0 + k]);
        for (int r = 0; r < 8; r++) {
            const block_q4_K *x = (const block_q4_K *)((const uint8_t *)w + (size_t)r * row_bytes) + b0;
            avx512_prefetch_8rows_on(x, row_bytes, (size_t)nb * sizeof(block_q4_K));
            for (int k = 0; k < nb; k++) {
                __m128i scale_min = k_scale_min_unpack(x[k].scales);
                __m256i s8 = avx512_fold_i32(avx512_q4_K_sums64(&x[k], act64[k], _mm_cvtepu8_epi16(scale_min)));
                __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
                t[k][r] = _mm_hadd_epi32(s4, avx512_k_min_lanes(scale_min, pairs[k]));
                memcpy(&d_dmin[k][r], &x[k].d, 4);
            }
        }
        for (int k = 0; k < nb; k++) {
            __m256i lo = _mm256_set_m128i(_mm_hadd_epi32(t[k][2], t[k][3]), _mm_hadd_epi32(t[k][0], t[k][1]));
            __m256i hi = _mm256_set_m128i(_mm_hadd_epi32(t[k][6], t[k][7]), _mm_hadd_epi32(t[k][4], t[k][5]));
            __m512i totals = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            __m512 scale = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)d_dmin[k])), _mm512_set1_ps(y[b0 + k].d));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(totals), scale, acc);
        }
    }
    _mm256_storeu_ps(out, avx512_pair_differences(acc));
}
#endif
#if HALDA_NEON
/* k_lane_sums of a Q4_K super-block, lanes 0..3 in *lo and 4..7 in *hi: 32 bytes of qs hold
 * sub-block 2c in their low nibbles and 2c+1 in their high nibbles. */
static inline void neon_q4_K_lanes(const block_q4_K *x, const block_q8_K *y, const int sc[8], int32x4_t *lo, int32x4_t *hi)
{
    const uint8x16_t m4 = vdupq_n_u8(15);
    int32x4_t sum_lo = vdupq_n_s32(0), sum_hi = vdupq_n_s32(0);
    for (int c = 0; c < 4; c++) {
        uint8x16_t r0 = vld1q_u8(x->qs + 32 * c), r1 = vld1q_u8(x->qs + 32 * c + 16);
        const int8_t *a = y->qs + 64 * c;
        int32x4_t p0 = neon_dot_i8(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(r0, m4)), vld1q_s8(a));
        int32x4_t p1 = neon_dot_i8(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(r1, m4)), vld1q_s8(a + 16));
        int32x4_t p2 = neon_dot_i8(vdupq_n_s32(0), vreinterpretq_s8_u8(vshrq_n_u8(r0, 4)), vld1q_s8(a + 32));
        int32x4_t p3 = neon_dot_i8(vdupq_n_s32(0), vreinterpretq_s8_u8(vshrq_n_u8(r1, 4)), vld1q_s8(a + 48));
        sum_lo = vmlaq_n_s32(vmlaq_n_s32(sum_lo, p0, sc[2 * c]), p2, sc[2 * c + 1]);
        sum_hi = vmlaq_n_s32(vmlaq_n_s32(sum_hi, p1, sc[2 * c]), p3, sc[2 * c + 1]);
    }
    *lo = sum_lo, *hi = sum_hi;
}
static float vec_dot_q4_K_neon(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0);
    float acc_m[4] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) k_scale_min(x[b].scales, j, &sc[j], &m[j]);
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        for (int k = 0; k < 4; k++) {
            int32_t mk = m[2 * k] * (y[b].bsums[4 * k] + y[b].bsums[4 * k + 1]) + m[2 * k + 1] * (y[b].bsums[4 * k + 2] + y[b].bsums[4 * k + 3]);
            acc_m[k] = fmaf(dmin, (float)mk, acc_m[k]);
        }
        int32x4_t lo, hi;
        neon_q4_K_lanes(&x[b], &y[b], sc, &lo, &hi);
        neon_fma_lanes(&acc_lo, &acc_hi, d, lo, hi);
    }
    return neon_lane_sum(acc_lo, acc_hi) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
}
/* All 8 scales and 8 minimums of a Q4_K super-block (k_scale_min for j = 0..7) by whole 32-bit
 * words, as llama.cpp unpacks them: bytes 0..3 and 4..7 give sub-blocks 0..3 their low
 * 6 bits, bytes 8..11 give 4..7 their low nibbles, and the top 2 bits of bytes 0..7 their high
 * bits. */
static inline void k_scales_mins(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8])
{
    uint32_t w[3], out[4];
    memcpy(w, s, 12);
    out[0] = w[0] & 0x3f3f3f3f;
    out[1] = (w[2] & 0x0f0f0f0f) | ((w[0] >> 6) & 0x03030303) << 4;
    out[2] = w[1] & 0x3f3f3f3f;
    out[3] = ((w[2] >> 4) & 0x0f0f0f0f) | ((w[1] >> 6) & 0x03030303) << 4;
    memcpy(sc, out, 8), memcpy(mn, out + 2, 8);
}
/* A tile (see "Tiles" at the NEON helpers) in vec_dot_q4_K_r8's order: per pair and
 * super-block an exact integer sum of the scaled products and one of the minimums, then one
 * fused multiply-add of each into the pair's two F32 accumulators, and their difference at the
 * end.  Only the totals count in this order, so the two halves of a sub-block go into one chain
 * of dot products.  R·T <= 8. */
static inline __attribute__((always_inline)) void neon_q4_K_r8_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out,
                                                                    int R, int T)
{
    const uint8x16_t m4 = vdupq_n_u8(15);
    float acc[8], acc_min[8];
    for (int p = 0; p < R * T; p++) acc[p] = acc_min[p] = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const block_q4_K *x[8];
        const block_q8_K *y[8];
        uint8_t sc[8][8];
        int16x8_t mins[8], bsum[8]; /* per sub-block j: row r's minimum, token t's sum */
        for (int r = 0; r < R; r++) {
            uint8_t mn[8];
            x[r] = (const block_q4_K *)w[r] + b;
            k_scales_mins(x[r]->scales, sc[r], mn);
            mins[r] = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
        }
        for (int t = 0; t < T; t++) {
            y[t] = (const block_q8_K *)a[t] + b;
            bsum[t] = vpaddq_s16(vld1q_s16(y[t]->bsums), vld1q_s16(y[t]->bsums + 8));
        }
        int32x4_t isum[8];
        for (int p = 0; p < R * T; p++) isum[p] = vdupq_n_s32(0);
        for (int c = 0; c < 4; c++) { /* sub-blocks 2c (low nibbles) and 2c+1 (high), 16 bytes at a time */
            int8x16_t q[8][4];
            for (int r = 0; r < R; r++) {
                uint8x16_t r0 = vld1q_u8(x[r]->qs + 32 * c), r1 = vld1q_u8(x[r]->qs + 32 * c + 16);
                q[r][0] = vreinterpretq_s8_u8(vandq_u8(r0, m4)), q[r][1] = vreinterpretq_s8_u8(vandq_u8(r1, m4));
                q[r][2] = vreinterpretq_s8_u8(vshrq_n_u8(r0, 4)), q[r][3] = vreinterpretq_s8_u8(vshrq_n_u8(r1, 4));
            }
            for (int t = 0; t < T; t++) {
                int8x16_t ya[4];
                for (int k = 0; k < 4; k++) ya[k] = vld1q_s8(y[t]->qs + 64 * c + 16 * k);
                for (int r = 0; r < R; r++) {
                    int32x4_t lo = neon_dot_i8(neon_dot_i8(vdupq_n_s32(0), q[r][0], ya[0]), q[r][1], ya[1]);
                    int32x4_t hi = neon_dot_i8(neon_dot_i8(vdupq_n_s32(0), q[r][2], ya[2]), q[r][3], ya[3]);
                    isum[r * T + t] = vmlaq_n_s32(vmlaq_n_s32(isum[r * T + t], lo, sc[r][2 * c]), hi, sc[r][2 * c + 1]);
                }
            }
        }
        for (int p = 0; p < R * T; p++) {
            int r = p / T, t = p % T;
            int32_t m = vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(mins[r]), vget_low_s16(bsum[t])), mins[r], bsum[t]));
            acc[p] = fmaf((float)vaddvq_s32(isum[p]), f16_to_f32(x[r]->d) * y[t]->d, acc[p]);
            acc_min[p] = fmaf((float)m, f16_to_f32(x[r]->dmin) * y[t]->d, acc_min[p]);
        }
    }
    for (int p = 0; p < R * T; p++) out[p] = acc[p] - acc_min[p];
}
static float vec_dot_q4_K_r8_neon(int64_t n, const void *w, const void *a)
{
    const uint8_t *wr = w, *at = a;
    float out;
    neon_q4_K_r8_tile(n, &wr, &at, &out, 1, 1);
    return out;
}
#endif

static void quantize_q5_K(const float *src, void *dst, int64_t n)
{
    block_q5_K *y = dst;
    uint8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        quantize_k_scale_min(src, 31, &y[b].d, &y[b].dmin, y[b].scales, q);
        memset(y[b].qs, 0, sizeof y[b].qs);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int i = 0; i < QK_K; i++) {
            y[b].qs[plane4_byte(i)] |= (uint8_t)((q[i] & 15) << plane4_shift(i));
            y[b].qh[i % 32] |= (uint8_t)((q[i] >> 4) << (i / 32));
        }
    }
}
static void dequantize_q5_K(const void *src, float *dst, int64_t n)
{
    const block_q5_K *x = src;
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        q5_K_unpack(&x[b], q);
        dequantize_k_scale_min(f16_to_f32(x[b].d), f16_to_f32(x[b].dmin), x[b].scales, q, dst);
    }
}
/* Summation order of llama.cpp's x86 ggml_vec_dot_q5_K_q8_K: the scaled products in the 8 lanes
 * (times d_act·d); the minimums' exact integer sum per super-block, times −d_act·dmin, added to
 * one F32 sum with a fused multiply-add (llama.cpp's build lets the compiler fuse that line),
 * which joins the lanes' total at the end. */
__attribute__((unused)) static float vec_dot_q5_K(int64_t n, const void *w, const void *a)
{
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    lane_acc acc = {{0}};
    float summs = 0;
    int8_t q[QK_K];
    int sc[16];
    int32_t lane[8];
    for (int64_t b = 0; b < n / QK_K; b++) {
        q5_K_unpack(&x[b], q);
        int32_t mins = 0;
        for (int j = 0; j < 8; j++) {
            int m;
            k_scale_min(x[b].scales, j, &sc[2 * j], &m);
            sc[2 * j + 1] = sc[2 * j];
            mins += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        summs = fmaf(dmin, (float)mins, summs);
        k_lane_sums(q, sc, y[b].qs, lane);
        for (int l = 0; l < 8; l++) acc.lane[l] = fmaf(d, (float)lane[l], acc.lane[l]);
    }
    return lane_acc_sum(&acc) + summs;
}
#if HALDA_AVX2
/* Sub-block j of a Q4_K or Q5_K super-block without its fifth bit: nibble j%2 of
 * qs[32·(j/2) ..]. */
static inline __m256i avx2_k_nibbles(const uint8_t *qs, int j)
{
    __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * (j / 2)));
    return _mm256_and_si256(j % 2 ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(15));
}
/* Sub-block j of a Q5_K super-block: the nibbles plus bit j of qh[0..31], moved onto bit 4 by a
 * 16-bit shift of at most 4, which brings no bit across a byte into the mask. */
static inline __m256i avx2_q5_K_run(const block_q5_K *x, int j)
{
    __m256i qh = _mm256_loadu_si256((const __m256i *)x->qh);
    __m256i bit4 = _mm256_and_si256(j < 4 ? _mm256_slli_epi16(qh, 4 - j) : _mm256_srli_epi16(qh, j - 4), _mm256_set1_epi8(16));
    return _mm256_or_si256(avx2_k_nibbles(x->qs, j), bit4);
}
/* k_lane_sums of a Q5_K super-block, sub-block by sub-block. */
static inline __m256i avx2_q5_K_lanes(const block_q5_K *x, const block_q8_K *y, const int sc[8])
{
    __m256i sum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}; /* two chains of accumulation, not one */
    for (int j = 0; j < 8; j++)
        sum[j & 1] = avx2_dot_u8_scaled(sum[j & 1], avx2_q5_K_run(x, j), _mm256_loadu_si256((const __m256i *)(y->qs + 32 * j)), sc[j], sc[j]);
    return _mm256_add_epi32(sum[0], sum[1]);
}
__attribute__((unused)) static float vec_dot_q5_K_avx2(int64_t n, const void *w, const void *a)
{
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sc[8], m[8];
        int32_t mins = 0;
        for (int j = 0; j < 8; j++) k_scale_min(x[b].scales, j, &sc[j], &m[j]), mins += m[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        summs = fmaf(dmin, (float)mins, summs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(avx2_q5_K_lanes(&x[b], &y[b], sc)), acc);
    }
    return avx2_lane_sum(acc) + summs;
}
#endif
#if HALDA_AVX512
/* k_lane_sums of a Q5_K super-block in two halves, as avx512_q4_K_sums, plus the fifth bits:
 * bit 2c of qh[l] (sub-block 2c) in the low half and bit 2c+1 in the high half, each rotated
 * within its 64-bit word onto bit 4 of its own byte (a rotation by less than 5 either way never
 * takes a bit across the byte boundary that matters). */
static inline __m512i avx512_q5_K_sums(const block_q5_K *x, const block_q8_K *y, __m128i sc16)
{
    __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)x->qh)), sum = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        long long r_lo = (4 - 2 * c) & 63, r_hi = (3 - 2 * c) & 63;
        __m512i bit4 = _mm512_and_si512(_mm512_rolv_epi64(qh, _mm512_set_epi64(r_hi, r_hi, r_hi, r_hi, r_lo, r_lo, r_lo, r_lo)), _mm512_set1_epi8(16));
        __m512i q = _mm512_or_si512(avx512_nibble_planes(x->qs + 32 * c), bit4);
        sum = avx512_madd_acc(sum, _mm512_maddubs_epi16(q, _mm512_loadu_si512(y->qs + 64 * c)), avx512_two_words(sc16, 2 * c, 2 * c + 1));
    }
    return sum;
}
static float vec_dot_q5_K_avx512(int64_t n, const void *w, const void *a)
{
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m128i scale_min = k_scale_min_unpack(x[b].scales);
        __m128i m4 = avx512_k_min_lanes(scale_min, avx512_bsum_pairs(&y[b]));
        m4 = _mm_hadd_epi32(m4, m4);
        int32_t mins = _mm_cvtsi128_si32(_mm_hadd_epi32(m4, m4));
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        summs = fmaf(dmin, (float)mins, summs);
        __m256i lanes = avx512_fold_i32(avx512_q5_K_sums(&x[b], &y[b], _mm_cvtepu8_epi16(scale_min)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc) + summs;
}
#endif
#if HALDA_NEON
/* k_lane_sums of a Q5_K super-block (lanes 0..3 in *lo, 4..7 in *hi): Q4_K's nibbles plus bit j
 * of qh[0..31] as bit 4 of sub-block j. */
static inline void neon_q5_K_lanes(const block_q5_K *x, const block_q8_K *y, const int sc[8], int32x4_t *lo, int32x4_t *hi)
{
    const uint8x16_t m4 = vdupq_n_u8(15), b5 = vdupq_n_u8(16);
    uint8x16_t qh0 = vld1q_u8(x->qh), qh1 = vld1q_u8(x->qh + 16);
    int32x4_t sum_lo = vdupq_n_s32(0), sum_hi = vdupq_n_s32(0);
    for (int c = 0; c < 4; c++) {
        uint8x16_t r0 = vld1q_u8(x->qs + 32 * c), r1 = vld1q_u8(x->qs + 32 * c + 16);
        for (int t = 0; t < 2; t++) { /* sub-block j = 2c + t: nibble t */
            int j = 2 * c + t;
            uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << j));
            uint8x16_t n0 = t ? vshrq_n_u8(r0, 4) : vandq_u8(r0, m4), n1 = t ? vshrq_n_u8(r1, 4) : vandq_u8(r1, m4);
            uint8x16_t q0 = vorrq_u8(n0, vandq_u8(vtstq_u8(qh0, bit), b5)), q1 = vorrq_u8(n1, vandq_u8(vtstq_u8(qh1, bit), b5));
            int32x4_t p_lo, p_hi;
            neon_block_lanes(vreinterpretq_s8_u8(q0), vreinterpretq_s8_u8(q1), y->qs + 32 * j, &p_lo, &p_hi);
            sum_lo = vmlaq_n_s32(sum_lo, p_lo, sc[j]);
            sum_hi = vmlaq_n_s32(sum_hi, p_hi, sc[j]);
        }
    }
    *lo = sum_lo, *hi = sum_hi;
}
static float vec_dot_q5_K_neon(int64_t n, const void *w, const void *a)
{
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0);
    float summs = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sc[8], m[8];
        int32_t mins = 0;
        for (int j = 0; j < 8; j++) k_scale_min(x[b].scales, j, &sc[j], &m[j]), mins += m[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        float d = y[b].d * f16_to_f32(x[b].d), dmin = -y[b].d * f16_to_f32(x[b].dmin);
        summs = fmaf(dmin, (float)mins, summs);
        int32x4_t lo, hi;
        neon_q5_K_lanes(&x[b], &y[b], sc, &lo, &hi);
        neon_fma_lanes(&acc_lo, &acc_hi, d, lo, hi);
    }
    return neon_lane_sum(acc_lo, acc_hi) + summs;
}
#endif

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

/* Summation order of llama.cpp's x86 ggml_vec_dot_q6_K_q8_K (Q6_K is not repacked): the 8
 * lanes of k_lane_sums with the signed group scales, fused multiply-add by d_act·d. */
__attribute__((unused)) static float vec_dot_q6_K(int64_t n, const void *w, const void *a)
{
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    lane_acc acc = {{0}};
    int8_t q[QK_K];
    int sc[16];
    int32_t lane[8];
    for (int64_t b = 0; b < n / QK_K; b++) {
        for (int i = 0; i < QK_K; i++) q[i] = (int8_t)(q6_K_value(&x[b], i) - 32);
        for (int g = 0; g < 16; g++) sc[g] = x[b].scales[g];
        k_lane_sums(q, sc, y[b].qs, lane);
        float d = y[b].d * f16_to_f32(x[b].d);
        for (int l = 0; l < 8; l++) acc.lane[l] = fmaf(d, (float)lane[l], acc.lane[l]);
    }
    return lane_acc_sum(&acc);
}
__attribute__((unused)) static void vec_dot_q6_K_8rows(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    for (int r = 0; r < 8; r++) out[r] = vec_dot_q6_K(n, (const uint8_t *)w + (size_t)r * row_bytes, a);
}
#if HALDA_AVX2
__attribute__((unused)) static float vec_dot_q6_K_avx2(int64_t n, const void *w, const void *a)
{
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), m32 = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m256i sum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) { /* the quarters of each half, as in the layout of section 3 */
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h));
            __m256i l2 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)(x[b].qh + 32 * h));
            __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4)),
                _mm256_or_si256(_mm256_and_si256(l2, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l2, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4)),
            };
            for (int k = 0; k < 4; k++) {
                __m256i a8 = _mm256_loadu_si256((const __m256i *)(y[b].qs + 128 * h + 32 * k));
                /* (q − 32)·a in 16-bit pairs: q·a − 32·a, each unsigned × signed */
                __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], a8), _mm256_maddubs_epi16(m32, a8));
                int g = 8 * h + 2 * k;
                __m256i sc = _mm256_set_m128i(_mm_set1_epi16(x[b].scales[g + 1]), _mm_set1_epi16(x[b].scales[g]));
                sum = avx2_madd_acc(sum, p16, sc);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[b].d * f16_to_f32(x[b].d)), _mm256_cvtepi32_ps(sum), acc);
    }
    return avx2_lane_sum(acc);
}
#endif
#if HALDA_AVX512
/* k_lane_sums of a Q6_K super-block in two halves (see avx512_fold_i32), 64 elements at a time
 * as 64 bytes of ql hold them: in each half, the low nibbles of ql are elements 0..63 (quarters
 * 0 and 1) and the high nibbles 64..127 (quarters 2 and 3).  Their high bits are bits 2k..2k+1 of
 * qh for quarter k: the 32 bytes of qh twice, each copy shifted so that its quarter's two bits
 * land on bits 4..5 of every byte.  (q − 32)·a is q·a − 32·a in 16-bit pairs; the 32·a pairs,
 * m32_a[c] for elements 64c..64c+63, depend on the activations only. */
static inline __m512i avx512_q6_K_sums(const block_q6_K *x, const int8_t *a, const __m512i m32_a[4])
{
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    const __m512i group = _mm512_set_epi64(0x0003000300030003ll, 0x0003000300030003ll, 0x0002000200020002ll, 0x0002000200020002ll,
                                           0x0001000100010001ll, 0x0001000100010001ll, 0, 0); /* word i of a chunk: group i/8 */
    __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales)));
    __m512i sum = _mm512_setzero_si512();
    for (int h = 0; h < 2; h++) {
        __m512i ql = _mm512_loadu_si512(x->ql + 64 * h);
        __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x->qh + 32 * h)));
        __m512i q[2] = {
            _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi64(qh, _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4)), m30)),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_and_si512(_mm512_srlv_epi64(qh, _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0)), m30)),
        };
        for (int k = 0; k < 2; k++) { /* elements 64k..64k+63 of the half: groups 8h+4k .. 8h+4k+3 */
            int c = 2 * h + k;
            __m512i p16 = _mm512_sub_epi16(_mm512_maddubs_epi16(q[k], _mm512_loadu_si512(a + 64 * c)), m32_a[c]);
            __m512i sc = _mm512_permutexvar_epi16(_mm512_add_epi16(group, _mm512_set1_epi16((short)(4 * c))), sc16);
            sum = avx512_madd_acc(sum, p16, sc);
        }
    }
    return sum;
}
/* 32·(a_2i + a_2i+1) for the 4 runs of 64 activations of a block */
static inline void avx512_q6_K_m32(const int8_t *a, __m512i m32_a[4])
{
    for (int c = 0; c < 4; c++) m32_a[c] = _mm512_maddubs_epi16(_mm512_set1_epi8(32), _mm512_loadu_si512(a + 64 * c));
}
static float vec_dot_q6_K_avx512(int64_t n, const void *w, const void *a)
{
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m512i m32_a[4];
        avx512_q6_K_m32(y[b].qs, m32_a);
        __m256i lanes = avx512_fold_i32(avx512_q6_K_sums(&x[b], y[b].qs, m32_a));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[b].d * f16_to_f32(x[b].d)), _mm256_cvtepi32_ps(lanes), acc);
    }
    return avx2_lane_sum(acc);
}
/* 8 rows of vec_dot_q6_K side by side (the table names vec_dot_q6_K as Q6_K's "repacked" order
 * too, so that the matrix product uses this): each row keeps its own 8 lanes, and the
 * activation terms and the prefetch of the next 8 rows are shared. */
static void vec_dot_q6_K_8rows_avx512(int64_t n, const void *w, size_t row_bytes, const void *a, float out[8])
{
    const block_q8_K *y = a;
    __m256 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        avx2_prefetch_next_8rows(w, row_bytes, (size_t)b * 8 * sizeof(block_q6_K), 8 * sizeof(block_q6_K));
        __m512i m32_a[4];
        avx512_q6_K_m32(y[b].qs, m32_a);
        for (int r = 0; r < 8; r++) {
            const block_q6_K *x = (const block_q6_K *)((const uint8_t *)w + (size_t)r * row_bytes) + b;
            __m256i lanes = avx512_fold_i32(avx512_q6_K_sums(x, y[b].qs, m32_a));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y[b].d * f16_to_f32(x->d)), _mm256_cvtepi32_ps(lanes), acc[r]);
        }
    }
    for (int r = 0; r < 8; r++) out[r] = avx2_lane_sum(acc[r]);
}
#endif
#if HALDA_NEON
/* Elements 16j..16j+15 of each quarter k of half h (the layout of section 3) as q − 32, in q[k]. */
static inline void neon_q6_K_quarters(const block_q6_K *x, int h, int j, int8x16_t q[4])
{
    const uint8x16_t m4 = vdupq_n_u8(15), m2 = vdupq_n_u8(3);
    uint8x16_t l1 = vld1q_u8(x->ql + 64 * h + 16 * j), l2 = vld1q_u8(x->ql + 64 * h + 32 + 16 * j);
    uint8x16_t hb = vld1q_u8(x->qh + 32 * h + 16 * j);
    uint8x16_t u[4] = {
        vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(hb, m2), 4)),
        vorrq_u8(vandq_u8(l2, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m2), 4)),
        vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m2), 4)),
        vorrq_u8(vshrq_n_u8(l2, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4)),
    };
    for (int k = 0; k < 4; k++) q[k] = vsubq_s8(vreinterpretq_s8_u8(u[k]), vdupq_n_s8(32));
}
/* A tile (see "Tiles" at the NEON helpers) in vec_dot_q6_K's order: per pair and super-block
 * the 8 integer lanes — lane group j (lanes 4j..4j+3) gathers elements 16j..16j+15 of every run
 * of 32, each group of 16 weighted by its scale — then one fused multiply-add of each lane group
 * by y.d·x.d into the pair's F32 lanes, and neon_lane_sum at the end.  The two lane groups are
 * independent, so a tile finishes group 0 before it starts group 1 and holds only one group's
 * integer sums at a time.  R·T <= 8. */
static inline __attribute__((always_inline)) void neon_q6_K_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out, int R,
                                                                 int T)
{
    float32x4_t acc[8][2]; /* pair p's lanes 0..3 and 4..7 */
    for (int p = 0; p < R * T; p++) acc[p][0] = acc[p][1] = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const block_q6_K *x[8];
        const block_q8_K *y[8];
        for (int r = 0; r < R; r++) x[r] = (const block_q6_K *)w[r] + b;
        for (int t = 0; t < T; t++) y[t] = (const block_q8_K *)a[t] + b;
        for (int j = 0; j < 2; j++) {
            int32x4_t sum[8];
            for (int p = 0; p < R * T; p++) sum[p] = vdupq_n_s32(0);
            for (int h = 0; h < 2; h++) {
                int8x16_t q[8][4];
                for (int r = 0; r < R; r++) neon_q6_K_quarters(x[r], h, j, q[r]);
                for (int k = 0; k < 4; k++)
                    for (int t = 0; t < T; t++) {
                        int8x16_t ya = vld1q_s8(y[t]->qs + 128 * h + 32 * k + 16 * j);
                        for (int r = 0; r < R; r++)
                            sum[r * T + t] = vmlaq_n_s32(sum[r * T + t], neon_dot_i8(vdupq_n_s32(0), q[r][k], ya), x[r]->scales[8 * h + 2 * k + j]);
                    }
            }
            for (int p = 0; p < R * T; p++)
                acc[p][j] = vfmaq_f32(acc[p][j], vcvtq_f32_s32(sum[p]), vdupq_n_f32(y[p % T]->d * f16_to_f32(x[p / T]->d)));
        }
    }
    for (int p = 0; p < R * T; p++) out[p] = neon_lane_sum(acc[p][0], acc[p][1]);
}
static float vec_dot_q6_K_neon(int64_t n, const void *w, const void *a)
{
    const uint8_t *wr = w, *at = a;
    float out;
    neon_q6_K_tile(n, &wr, &at, &out, 1, 1);
    return out;
}
#endif

/* ---- IQ1_S, IQ1_M --------------------------------------------------------------------------- */

/* One super-block of either type, unpacked: the grid value of every weight, the sign of its
 * shift δ, and the odd scale 2s+1 of every 16 weights (IQ1_S repeats its per-32 scale). */
typedef struct {
    int8_t g[QK_K];
    int8_t shift[QK_K]; /* +1: δ = +1/8, −1: δ = −1/8 */
    int scale[QK_K / 16];
} iq1_unpacked;

/* The fields of sub-block ib, read where they are packed (the SIMD kernels use these too): the
 * 11-bit grid index of its group l; its odd scale 2s+1 (IQ1_M: of its half h, 16 weights); its
 * δ's sign (IQ1_S: one for the sub-block; IQ1_M: one per group), true for −1/8. */
static inline int iq1_s_index(const block_iq1_s *x, int ib, int l) { return x->qs[4 * ib + l] | (x->qh[ib] >> (3 * l) & 7) << 8; }
static inline int iq1_s_scale(const block_iq1_s *x, int ib) { return 2 * (x->qh[ib] >> 12 & 7) + 1; }
static inline bool iq1_s_negative(const block_iq1_s *x, int ib) { return x->qh[ib] & 0x8000; }
static inline int iq1_m_sc(const block_iq1_m *x, int k) { return x->scales[2 * k] | x->scales[2 * k + 1] << 8; }
static inline int iq1_m_index(const block_iq1_m *x, int ib, int l) { return x->qs[4 * ib + l] | (x->qh[2 * ib + l / 2] >> (4 * (l % 2)) & 7) << 8; }
static inline int iq1_m_scale(const block_iq1_m *x, int ib, int h) { return 2 * (iq1_m_sc(x, ib / 2) >> (6 * (ib % 2) + 3 * h) & 7) + 1; }
static inline bool iq1_m_negative(const block_iq1_m *x, int ib, int l) { return x->qh[2 * ib + l / 2] >> (4 * (l % 2)) & 8; }

static void iq1_s_unpack(const block_iq1_s *x, iq1_unpacked *u)
{
    const int8_t(*grid)[8] = iq1_grid_get();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        u->scale[2 * ib] = u->scale[2 * ib + 1] = iq1_s_scale(x, ib);
        for (int l = 0; l < 4; l++) {
            const int8_t *g = grid[iq1_s_index(x, ib, l)];
            for (int j = 0; j < 8; j++) u->g[32 * ib + 8 * l + j] = g[j], u->shift[32 * ib + 8 * l + j] = iq1_s_negative(x, ib) ? -1 : 1;
        }
    }
}

/* d, gathered from the top nibbles of the four scale words */
static inline f16_t iq1_m_d(const block_iq1_m *x)
{
    return (f16_t)((iq1_m_sc(x, 0) >> 12) | (iq1_m_sc(x, 1) >> 8 & 0x00f0) | (iq1_m_sc(x, 2) >> 4 & 0x0f00) | (iq1_m_sc(x, 3) & 0xf000));
}
static void iq1_m_unpack(const block_iq1_m *x, iq1_unpacked *u)
{
    const int8_t(*grid)[8] = iq1_grid_get();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        u->scale[2 * ib] = iq1_m_scale(x, ib, 0), u->scale[2 * ib + 1] = iq1_m_scale(x, ib, 1);
        for (int l = 0; l < 4; l++) {
            const int8_t *g = grid[iq1_m_index(x, ib, l)];
            for (int j = 0; j < 8; j++) u->g[32 * ib + 8 * l + j] = g[j], u->shift[32 * ib + 8 * l + j] = iq1_m_negative(x, ib, l) ? -1 : 1;
        }
    }
}

/* w = (d·(2s+1))·(g + δ), as llama.cpp computes it */
static void iq1_dequantize(float d, const iq1_unpacked *u, float *dst)
{
    for (int i = 0; i < QK_K; i++) dst[i] = d * (float)u->scale[i / 16] * ((float)u->g[i] + IQ1_DELTA * (float)u->shift[i]);
}
static void dequantize_iq1_s(const void *src, float *dst, int64_t n)
{
    const block_iq1_s *x = src;
    iq1_unpacked u;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) iq1_s_unpack(&x[b], &u), iq1_dequantize(f16_to_f32(x[b].d), &u, dst);
}
static void dequantize_iq1_m(const void *src, float *dst, int64_t n)
{
    const block_iq1_m *x = src;
    iq1_unpacked u;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) iq1_m_unpack(&x[b], &u), iq1_dequantize(f16_to_f32(iq1_m_d(&x[b])), &u, dst);
}

/* Summation order of llama.cpp's x86 ggml_vec_dot_iq1_s_q8_K: the grid products (times 2s+1) in
 * the 8 lanes, fused multiply-add by d_act·d; the shifts' exact integer sum per super-block
 * (Σ over sub-blocks of ±(2s+1)·Σa, from bsums) into one F32 sum with a fused multiply-add;
 * at the end lanes + 1/8 · that sum. */
__attribute__((unused)) static float vec_dot_iq1_s(int64_t n, const void *w, const void *a)
{
    const block_iq1_s *x = w;
    const block_q8_K *y = a;
    lane_acc acc = {{0}};
    float acc_shift = 0;
    iq1_unpacked u;
    int32_t lane[8];
    for (int64_t b = 0; b < n / QK_K; b++) {
        iq1_s_unpack(&x[b], &u);
        k_lane_sums(u.g, u.scale, y[b].qs, lane);
        int32_t shifts = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) shifts += (y[b].bsums[2 * ib] + y[b].bsums[2 * ib + 1]) * u.shift[32 * ib] * u.scale[2 * ib];
        float d = y[b].d * f16_to_f32(x[b].d);
        for (int l = 0; l < 8; l++) acc.lane[l] = fmaf(d, (float)lane[l], acc.lane[l]);
        acc_shift = fmaf(d, (float)shifts, acc_shift);
    }
    return lane_acc_sum(&acc) + IQ1_DELTA * acc_shift;
}
/* Summation order of llama.cpp's x86 ggml_vec_dot_iq1_m_q8_K: the grid products and the shifts
 * (±1 per weight, times the scale of its 16) each in 8 lanes of their own, fused multiply-add
 * by d_act·d; at the end lanes + 1/8 · shift lanes. */
__attribute__((unused)) static float vec_dot_iq1_m(int64_t n, const void *w, const void *a)
{
    const block_iq1_m *x = w;
    const block_q8_K *y = a;
    lane_acc acc = {{0}}, acc_shift = {{0}};
    iq1_unpacked u;
    int32_t lane[8], lane_shift[8];
    for (int64_t b = 0; b < n / QK_K; b++) {
        iq1_m_unpack(&x[b], &u);
        k_lane_sums(u.g, u.scale, y[b].qs, lane);
        k_lane_sums(u.shift, u.scale, y[b].qs, lane_shift);
        float d = y[b].d * f16_to_f32(iq1_m_d(&x[b]));
        for (int l = 0; l < 8; l++) {
            acc.lane[l] = fmaf(d, (float)lane[l], acc.lane[l]);
            acc_shift.lane[l] = fmaf(d, (float)lane_shift[l], acc_shift.lane[l]);
        }
    }
    return lane_acc_sum(&acc) + IQ1_DELTA * lane_acc_sum(&acc_shift);
}
#if HALDA_AVX2
/* The grid indices of the 8 groups of sub-blocks ib and ib+1 (iq1_s_index, iq1_m_index), 8 at
 * a time: the low 8 bits from qs[4ib ..], the high 3 from `high`, the 32 bits that hold them
 * (IQ1_S: qh[ib] and qh[ib+1]; IQ1_M: qh[2ib .. 2ib+3]), group k's at bit shift[k]. */
static inline void avx2_iq1_indices(const uint8_t *qs, uint32_t high, __m256i shift, int32_t idx[8])
{
    __m256i low = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
    __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)high), shift), _mm256_set1_epi32(7));
    _mm256_storeu_si256((__m256i *)idx, _mm256_or_si256(low, _mm256_slli_epi32(hi, 8)));
}
static inline uint32_t iq1_s_high(const block_iq1_s *x, int ib) { return (uint32_t)x->qh[ib] | (uint32_t)x->qh[ib + 1] << 16; }
static inline uint32_t iq1_m_high(const block_iq1_m *x, int ib)
{
    uint32_t high;
    memcpy(&high, x->qh + 2 * ib, 4);
    return high;
}
/* The 32 grid values of a sub-block from its 4 group indices: four 8-byte rows of the grid.
 * (The lookups are most of an IQ1 kernel's time; a gather instruction measured no faster.) */
static inline __m256i avx2_iq1_grid_run(const int8_t (*grid)[8], const int32_t idx[4])
{
    __m128i lo = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)grid[idx[0]]), _mm_loadl_epi64((const __m128i *)grid[idx[1]]));
    __m128i hi = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)grid[idx[2]]), _mm_loadl_epi64((const __m128i *)grid[idx[3]]));
    return _mm256_set_m128i(hi, lo);
}
/* IQ1_S's 8 odd scales 2s+1 as 16-bit words (qh bits 12..14, doubled, plus one). */
static inline __m128i avx2_iq1_s_scales(const block_iq1_s *x)
{
    __m128i qh = _mm_loadu_si128((const __m128i *)x->qh);
    return _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
}
/* The shifts' integer sum of an IQ1_S super-block, Σ_ib ±(2s+1)·(bsums[2ib] + bsums[2ib+1]):
 * the 8 signed scales (negated where qh's bit 15 is set), each twice, in one madd with the 16
 * bsums. */
static inline int32_t avx2_iq1_s_shifts(const block_iq1_s *x, const block_q8_K *y)
{
    __m128i neg = _mm_srai_epi16(_mm_loadu_si128((const __m128i *)x->qh), 15); /* −1 where δ < 0 */
    __m128i s = _mm_sub_epi16(_mm_xor_si128(avx2_iq1_s_scales(x), neg), neg);
    __m256i s16 = _mm256_set_m128i(_mm_unpackhi_epi16(s, s), _mm_unpacklo_epi16(s, s));
    return avx2_sum_i32(_mm256_madd_epi16(s16, _mm256_loadu_si256((const __m256i *)y->bsums)));
}
/* The 8 lanes of each pair of R rows' IQ1_S super-blocks x[r] and T tokens' activation bytes
 * a[t] (sum[r·T + t]): grid bytes times a times 2s+1.  A row's grid runs are looked up once and
 * serve all T tokens — the lookups are most of an IQ1 kernel's time, and this sharing is what a
 * gemm tile gains.  The row kernel (R = T = 1) keeps two chains of sums, one per sub-block of a
 * pair, for the adder's latency; the integer sums are exact in any order.  R and T are constants
 * at every call, so the loops unroll and the arrays become registers. */
static inline __attribute__((always_inline)) void avx2_iq1_s_sums(int R, int T, const block_iq1_s *const *x, const int8_t *const *a,
                                                                  const int8_t (*grid)[8], __m256i *sum)
{
    const __m256i shift = _mm256_setr_epi32(0, 3, 6, 9, 16, 19, 22, 25);
    const int chains = R * T == 1 ? 2 : 1;
    __m256i part[2 * GEMM_TILE_MAX]; /* part[chains·p + chain] */
    for (int i = 0; i < chains * R * T; i++) part[i] = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib += 2) {
        int32_t idx[GEMM_TILE_MAX][8];
        for (int r = 0; r < R; r++) avx2_iq1_indices(x[r]->qs + 4 * ib, iq1_s_high(x[r], ib), shift, idx[r]);
        for (int k = 0; k < 2; k++) {
            __m256i g[GEMM_TILE_MAX];
            int s[GEMM_TILE_MAX];
            for (int r = 0; r < R; r++) g[r] = avx2_iq1_grid_run(grid, idx[r] + 4 * k), s[r] = iq1_s_scale(x[r], ib + k);
            for (int t = 0; t < T; t++) {
                __m256i a8 = _mm256_loadu_si256((const __m256i *)(a[t] + 32 * (ib + k)));
                for (int r = 0; r < R; r++) {
                    int i = chains * (r * T + t) + (chains == 2 ? k : 0);
                    part[i] = avx2_dot_i8_scaled(part[i], g[r], a8, s[r], s[r]);
                }
            }
        }
    }
    for (int p = 0; p < R * T; p++) sum[p] = chains == 2 ? _mm256_add_epi32(part[2 * p], part[2 * p + 1]) : part[p];
}
/* The vec_dot_iq1_s order for each pair of an R × T tile (out[r·T + t], as gemm_tile_fn): one
 * fused multiply-add of a super-block's 8 lanes; the shifts' exact integer sum into its own F32
 * sum, the same way.  The row kernel is its 1 × 1 tile. */
static inline __attribute__((always_inline)) void avx2_iq1_s_tile(int R, int T, int64_t n, const uint8_t *const *w, const uint8_t *const *a,
                                                                  float *out)
{
    const int8_t(*grid)[8] = iq1_grid_get();
    __m256 acc[GEMM_TILE_MAX];
    float acc_shift[GEMM_TILE_MAX];
    for (int p = 0; p < R * T; p++) acc[p] = _mm256_setzero_ps(), acc_shift[p] = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const block_iq1_s *x[GEMM_TILE_MAX];
        const block_q8_K *y[GEMM_TILE_MAX];
        const int8_t *qs[GEMM_TILE_MAX];
        for (int r = 0; r < R; r++) x[r] = (const block_iq1_s *)w[r] + b;
        for (int t = 0; t < T; t++) y[t] = (const block_q8_K *)a[t] + b, qs[t] = y[t]->qs;
        __m256i sum[GEMM_TILE_MAX];
        avx2_iq1_s_sums(R, T, x, qs, grid, sum);
        for (int p = 0; p < R * T; p++) {
            const block_iq1_s *xr = x[p / T];
            const block_q8_K *yt = y[p % T];
            float d = yt->d * f16_to_f32(xr->d);
            acc[p] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum[p]), acc[p]);
            acc_shift[p] = fmaf(d, (float)avx2_iq1_s_shifts(xr, yt), acc_shift[p]);
        }
    }
    for (int p = 0; p < R * T; p++) out[p] = avx2_lane_sum(acc[p]) + IQ1_DELTA * acc_shift[p];
}
static float vec_dot_iq1_s_avx2(int64_t n, const void *w, const void *a)
{
    const uint8_t *wr = w, *ar = a;
    float out;
    avx2_iq1_s_tile(1, 1, n, &wr, &ar, &out);
    return out;
}
/* IQ1_M's δ signs of sub-block ib as 32 bytes, +1 or −1 per weight: the sign bits are bits 3
 * and 7 of qh[2ib] (groups 0, 1) and of qh[2ib+1] (groups 2, 3).  Each 8-byte group gets a copy
 * of its qh byte, is masked to its bit, and becomes 0xff (−1) where that bit is set, 1 where not. */
static inline __m256i avx2_iq1_m_signs(const block_iq1_m *x, int ib)
{
    const __m256i bit = _mm256_set_epi64x((long long)0x8080808080808080ull, 0x0808080808080808, (long long)0x8080808080808080ull, 0x0808080808080808);
    __m256i h = _mm256_set1_epi16((short)(x->qh[2 * ib] | x->qh[2 * ib + 1] << 8));
    h = _mm256_and_si256(_mm256_shuffle_epi8(h, _mm256_set_m128i(_mm_set1_epi8(1), _mm_setzero_si128())), bit);
    return _mm256_or_si256(_mm256_cmpeq_epi8(h, bit), _mm256_set1_epi8(1));
}
/* The lanes of each pair of R rows' IQ1_M super-blocks and T tokens' activation bytes (sum,
 * sum_shift[r·T + t]): of the grid bytes times a, and of the signs times a, every 16 weights
 * times their own 2s+1.  As avx2_iq1_s_sums, a row's grid runs and signs serve all T tokens. */
static inline __attribute__((always_inline)) void avx2_iq1_m_sums(int R, int T, const block_iq1_m *const *x, const int8_t *const *a,
                                                                  const int8_t (*grid)[8], __m256i *sum, __m256i *sum_shift)
{
    const __m256i shift = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    for (int p = 0; p < R * T; p++) sum[p] = sum_shift[p] = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib += 2) {
        int32_t idx[GEMM_TILE_MAX][8];
        for (int r = 0; r < R; r++) avx2_iq1_indices(x[r]->qs + 4 * ib, iq1_m_high(x[r], ib), shift, idx[r]);
        for (int k = 0; k < 2; k++) {
            __m256i g[GEMM_TILE_MAX], signs[GEMM_TILE_MAX];
            int s_lo[GEMM_TILE_MAX], s_hi[GEMM_TILE_MAX];
            for (int r = 0; r < R; r++) {
                g[r] = avx2_iq1_grid_run(grid, idx[r] + 4 * k), signs[r] = avx2_iq1_m_signs(x[r], ib + k);
                s_lo[r] = iq1_m_scale(x[r], ib + k, 0), s_hi[r] = iq1_m_scale(x[r], ib + k, 1);
            }
            for (int t = 0; t < T; t++) {
                __m256i a8 = _mm256_loadu_si256((const __m256i *)(a[t] + 32 * (ib + k)));
                for (int r = 0; r < R; r++) {
                    int p = r * T + t;
                    sum[p] = avx2_dot_i8_scaled(sum[p], g[r], a8, s_lo[r], s_hi[r]);
                    sum_shift[p] = avx2_dot_i8_scaled(sum_shift[p], signs[r], a8, s_lo[r], s_hi[r]);
                }
            }
        }
    }
}
/* The vec_dot_iq1_m order for each pair of an R × T tile, given a function for the tile's two
 * sets of lanes (the AVX2 and the AVX-512 one): per super-block a fused multiply-add of each
 * into the pair's 8 F32 lanes.  The row kernels are its 1 × 1 tiles. */
typedef void (*avx2_iq1_m_sums_fn)(int R, int T, const block_iq1_m *const *x, const int8_t *const *a, const int8_t (*grid)[8], __m256i *sum,
                                   __m256i *sum_shift);
static inline __attribute__((always_inline)) void avx2_iq1_m_tile(int R, int T, int64_t n, const uint8_t *const *w, const uint8_t *const *a,
                                                                  float *out, avx2_iq1_m_sums_fn sums)
{
    const int8_t(*grid)[8] = iq1_grid_get();
    __m256 acc[GEMM_TILE_MAX], acc_shift[GEMM_TILE_MAX];
    for (int p = 0; p < R * T; p++) acc[p] = acc_shift[p] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const block_iq1_m *x[GEMM_TILE_MAX];
        const block_q8_K *y[GEMM_TILE_MAX];
        const int8_t *qs[GEMM_TILE_MAX];
        for (int r = 0; r < R; r++) x[r] = (const block_iq1_m *)w[r] + b;
        for (int t = 0; t < T; t++) y[t] = (const block_q8_K *)a[t] + b, qs[t] = y[t]->qs;
        __m256i sum[GEMM_TILE_MAX], sum_shift[GEMM_TILE_MAX];
        sums(R, T, x, qs, grid, sum, sum_shift);
        for (int p = 0; p < R * T; p++) {
            __m256 d = _mm256_set1_ps(y[p % T]->d * f16_to_f32(iq1_m_d(x[p / T])));
            acc[p] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum[p]), acc[p]);
            acc_shift[p] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum_shift[p]), acc_shift[p]);
        }
    }
    for (int p = 0; p < R * T; p++) out[p] = avx2_lane_sum(acc[p]) + IQ1_DELTA * avx2_lane_sum(acc_shift[p]);
}
__attribute__((unused)) static float vec_dot_iq1_m_avx2(int64_t n, const void *w, const void *a)
{
    const uint8_t *wr = w, *ar = a;
    float out;
    avx2_iq1_m_tile(1, 1, n, &wr, &ar, &out, avx2_iq1_m_sums);
    return out;
}
#endif
#if HALDA_AVX512
/* IQ1_M: two sub-blocks (ib, ib+1) per 512-bit register, their 16 lanes folded into 8 before
 * the F32 step, which is the AVX2 kernel's.  What the width buys here is AVX-512's byte masks:
 * AVX-512 has no psignb, but a value in {−1, 0, +1} times a is |value|·a with a negated under
 * the mask of the negative bytes, and IQ1_M's δ signs become such a mask in three
 * instructions.  Measured on Zen 4: 13% faster than the AVX2 kernel.  IQ1_S, which has no
 * per-group signs, gained nothing from the same form (its AVX2 kernel was 3% faster), so it
 * stays AVX2. */
static inline __m512i avx512_iq1_grid_pair(const int8_t (*grid)[8], const int32_t idx[8])
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(avx2_iq1_grid_run(grid, idx)), avx2_iq1_grid_run(grid, idx + 4), 1);
}
/* acc + the lanes of v·a, v in {−1, 0, +1} given as |v| and the mask of its negative bytes,
 * each 16-bit pair sum times its word of `scale` */
static inline __m512i avx512_dot_sign_acc(__m512i acc, __m512i abs_v, __mmask64 neg, __m512i a, __m512i scale)
{
    __m512i a_signed = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
    return avx512_madd_acc(acc, _mm512_maddubs_epi16(abs_v, a_signed), scale);
}
/* acc + the lanes of 64 grid values times a */
static inline __m512i avx512_iq1_grid_acc(__m512i acc, __m512i g, __m512i a, __m512i scale)
{
    return avx512_dot_sign_acc(acc, _mm512_and_si512(g, _mm512_set1_epi8(1)), _mm512_movepi8_mask(g), a, scale);
}
/* IQ1_M's 16 odd scales 2s+1 as 16-bit words in the low half: word j = sc[j/4] >> 3·(j%4). */
static inline __m512i avx512_iq1_m_scales(const block_iq1_m *x)
{
    uint64_t sc;
    memcpy(&sc, x->scales, 8);
    __m256i v = _mm256_permutexvar_epi16(_mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), _mm256_set1_epi64x((long long)sc));
    v = _mm256_and_si256(_mm256_srlv_epi16(v, _mm256_setr_epi16(0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9)), _mm256_set1_epi16(7));
    return _mm512_castsi256_si512(_mm256_or_si256(_mm256_slli_epi16(v, 1), _mm256_set1_epi16(1)));
}
/* The δ signs of sub-blocks ib and ib+1 as a mask of 64 bytes, set where δ < 0: bytes 8k..8k+7
 * test bit 3 (k even) or 7 (k odd) of byte k/2 of qh[2ib ..]. */
static inline __mmask64 avx512_iq1_m_negative(uint32_t high)
{
    const __m512i which = _mm512_set_epi64(0x0303030303030303ll, 0x0303030303030303ll, 0x0202020202020202ll, 0x0202020202020202ll,
                                           0x0101010101010101ll, 0x0101010101010101ll, 0, 0);
    const __m512i bit = _mm512_set4_epi64((long long)0x8080808080808080ull, 0x0808080808080808ll, (long long)0x8080808080808080ull, 0x0808080808080808ll);
    return _mm512_test_epi8_mask(_mm512_shuffle_epi8(_mm512_set1_epi32((int)high), which), bit);
}
/* avx2_iq1_m_sums' sums, two sub-blocks at a time: the scale of word i of the pair's 32 pair
 * sums is that of its 16 weights, i/8 of the four (as Q2_K's avx512_q2_K_sums).  A row's grid
 * values, sign mask and scales serve all T tokens. */
static inline __attribute__((always_inline)) void avx512_iq1_m_sums(int R, int T, const block_iq1_m *const *x, const int8_t *const *a,
                                                                    const int8_t (*grid)[8], __m256i *lanes, __m256i *lanes_shift)
{
    const __m256i shift = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m512i group = _mm512_set_epi64(0x0003000300030003ll, 0x0003000300030003ll, 0x0002000200020002ll, 0x0002000200020002ll,
                                           0x0001000100010001ll, 0x0001000100010001ll, 0, 0); /* word i of 64 elements: group i/8 */
    __m512i sc16[GEMM_TILE_MAX], sum[GEMM_TILE_MAX], sum_shift[GEMM_TILE_MAX];
    for (int r = 0; r < R; r++) sc16[r] = avx512_iq1_m_scales(x[r]);
    for (int p = 0; p < R * T; p++) sum[p] = sum_shift[p] = _mm512_setzero_si512();
    for (int ib = 0; ib < QK_K / 32; ib += 2) {
        __m512i g[GEMM_TILE_MAX], sc[GEMM_TILE_MAX];
        __mmask64 neg[GEMM_TILE_MAX];
        for (int r = 0; r < R; r++) {
            int32_t idx[8];
            uint32_t high = iq1_m_high(x[r], ib);
            avx2_iq1_indices(x[r]->qs + 4 * ib, high, shift, idx);
            g[r] = avx512_iq1_grid_pair(grid, idx), neg[r] = avx512_iq1_m_negative(high);
            sc[r] = _mm512_permutexvar_epi16(_mm512_add_epi16(group, _mm512_set1_epi16((short)(2 * ib))), sc16[r]);
        }
        for (int t = 0; t < T; t++) {
            __m512i a8 = _mm512_loadu_si512(a[t] + 32 * ib);
            for (int r = 0; r < R; r++) {
                int p = r * T + t;
                sum[p] = avx512_iq1_grid_acc(sum[p], g[r], a8, sc[r]);
                sum_shift[p] = avx512_dot_sign_acc(sum_shift[p], _mm512_set1_epi8(1), neg[r], a8, sc[r]);
            }
        }
    }
    for (int p = 0; p < R * T; p++) lanes[p] = avx512_fold_i32(sum[p]), lanes_shift[p] = avx512_fold_i32(sum_shift[p]);
}
static float vec_dot_iq1_m_avx512(int64_t n, const void *w, const void *a)
{
    const uint8_t *wr = w, *ar = a;
    float out;
    avx2_iq1_m_tile(1, 1, n, &wr, &ar, &out, avx512_iq1_m_sums);
    return out;
}
#endif
#if HALDA_NEON
/* The 32 grid values of sub-block ib as two 16-byte halves (elements 0..15, 16..31). */
static inline void neon_iq1_grid_run(const int8_t (*grid)[8], int i0, int i1, int i2, int i3, int8x16_t *lo, int8x16_t *hi)
{
    *lo = vcombine_s8(vld1_s8(grid[i0]), vld1_s8(grid[i1]));
    *hi = vcombine_s8(vld1_s8(grid[i2]), vld1_s8(grid[i3]));
}
/* The vec_dot_iq1_s order: each sub-block's lanes (neon_block_lanes) times 2s+1 into exact
 * integer sums, per super-block a fused multiply-add of the 8 lanes; the shifts' integer sum
 * from bsums into its own F32 sum, as the scalar function forms them. */
static float vec_dot_iq1_s_neon(int64_t n, const void *w, const void *a)
{
    const block_iq1_s *x = w;
    const block_q8_K *y = a;
    const int8_t(*grid)[8] = iq1_grid_get();
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0);
    float acc_shift = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const block_iq1_s *xb = &x[b];
        int32x4_t sum_lo = vdupq_n_s32(0), sum_hi = vdupq_n_s32(0);
        int32_t shifts = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int s = iq1_s_scale(xb, ib);
            int8x16_t g_lo, g_hi;
            int32x4_t p_lo, p_hi;
            neon_iq1_grid_run(grid, iq1_s_index(xb, ib, 0), iq1_s_index(xb, ib, 1), iq1_s_index(xb, ib, 2), iq1_s_index(xb, ib, 3), &g_lo, &g_hi);
            neon_block_lanes(g_lo, g_hi, y[b].qs + 32 * ib, &p_lo, &p_hi);
            sum_lo = vmlaq_n_s32(sum_lo, p_lo, s);
            sum_hi = vmlaq_n_s32(sum_hi, p_hi, s);
            shifts += (y[b].bsums[2 * ib] + y[b].bsums[2 * ib + 1]) * (iq1_s_negative(xb, ib) ? -s : s);
        }
        float d = y[b].d * f16_to_f32(xb->d);
        neon_fma_lanes(&acc_lo, &acc_hi, d, sum_lo, sum_hi);
        acc_shift = fmaf(d, (float)shifts, acc_shift);
    }
    return neon_lane_sum(acc_lo, acc_hi) + IQ1_DELTA * acc_shift;
}
/* IQ1_M's δ signs of two groups (the 16 bytes of a half sub-block) from their qh byte: bytes
 * 0..7 −1 where its bit 3 is set, bytes 8..15 where bit 7 is, +1 elsewhere. */
static inline int8x16_t neon_iq1_m_signs(uint8_t qh)
{
    const uint8x16_t bit = vcombine_u8(vdup_n_u8(0x08), vdup_n_u8(0x80));
    return vreinterpretq_s8_u8(vorrq_u8(vtstq_u8(vdupq_n_u8(qh), bit), vdupq_n_u8(1)));
}
/* The vec_dot_iq1_m order: the lanes of the grid bytes times a and of the signs times a, each
 * half sub-block times its own 2s+1, in two integer sums; per super-block a fused multiply-add
 * of each into its 8 F32 lanes. */
static float vec_dot_iq1_m_neon(int64_t n, const void *w, const void *a)
{
    const block_iq1_m *x = w;
    const block_q8_K *y = a;
    const int8_t(*grid)[8] = iq1_grid_get();
    float32x4_t acc_lo = vdupq_n_f32(0), acc_hi = vdupq_n_f32(0), shift_lo = vdupq_n_f32(0), shift_hi = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const block_iq1_m *xb = &x[b];
        int32x4_t sum_lo = vdupq_n_s32(0), sum_hi = vdupq_n_s32(0), sum_shift_lo = vdupq_n_s32(0), sum_shift_hi = vdupq_n_s32(0);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int s_lo = iq1_m_scale(xb, ib, 0), s_hi = iq1_m_scale(xb, ib, 1);
            int8x16_t g_lo, g_hi;
            int32x4_t p_lo, p_hi;
            neon_iq1_grid_run(grid, iq1_m_index(xb, ib, 0), iq1_m_index(xb, ib, 1), iq1_m_index(xb, ib, 2), iq1_m_index(xb, ib, 3), &g_lo, &g_hi);
            neon_block_lanes(g_lo, g_hi, y[b].qs + 32 * ib, &p_lo, &p_hi);
            sum_lo = vmlaq_n_s32(sum_lo, p_lo, s_lo);
            sum_hi = vmlaq_n_s32(sum_hi, p_hi, s_hi);
            neon_block_lanes(neon_iq1_m_signs(xb->qh[2 * ib]), neon_iq1_m_signs(xb->qh[2 * ib + 1]), y[b].qs + 32 * ib, &p_lo, &p_hi);
            sum_shift_lo = vmlaq_n_s32(sum_shift_lo, p_lo, s_lo);
            sum_shift_hi = vmlaq_n_s32(sum_shift_hi, p_hi, s_hi);
        }
        float d = y[b].d * f16_to_f32(iq1_m_d(xb));
        neon_fma_lanes(&acc_lo, &acc_hi, d, sum_lo, sum_hi);
        neon_fma_lanes(&shift_lo, &shift_hi, d, sum_shift_lo, sum_shift_hi);
    }
    return neon_lane_sum(acc_lo, acc_hi) + IQ1_DELTA * neon_lane_sum(shift_lo, shift_hi);
}
#endif

/* The IQ1 quantizer.  For a given scale and shift, each group of 8 wants the grid pattern
 * nearest to its targets t = x/scale − δ.  The nearest pattern of {−1,0,+1}^8 is often not in
 * the grid (2048 of 6561 are), so iq1_nearest looks among the patterns that give each element
 * its nearest or its second-nearest value: first those that differ from the nearest in at most
 * two elements (the grid is dense enough that one of them nearly always is a member), and
 * only if none is, all 256 of them.  Returns the grid index and writes the squared error. */
static int iq1_nearest(const float *t, double *err)
{
    static const int pow3[8] = {1, 3, 9, 27, 81, 243, 729, 2187};
    int p1 = 0, step[8];
    double c1 = 0, dc[8]; /* the nearest pattern's error, and what switching element j adds */
    for (int j = 0; j < 8; j++) {
        float tj = fminf(fmaxf(t[j], -2.0f), 2.0f);
        int v1 = tj < -0.5f ? -1 : tj > 0.5f ? 1 : 0;
        int v2 = tj > (float)v1 ? (v1 < 1 ? v1 + 1 : 0) : (v1 > -1 ? v1 - 1 : 0);
        p1 += (v1 + 1) * pow3[j], step[j] = (v2 - v1) * pow3[j];
        c1 += ((double)t[j] - v1) * ((double)t[j] - v1);
        dc[j] = ((double)t[j] - v2) * ((double)t[j] - v2) - ((double)t[j] - v1) * ((double)t[j] - v1);
    }
    int best = iq1_grid_index[p1];
    *err = c1;
    if (best >= 0) return best;
    *err = DBL_MAX;
    for (int a = 0; a < 8; a++)
        for (int b = a; b < 8; b++) { /* b == a: one element switched */
            int p = p1 + step[a] + (b != a ? step[b] : 0);
            double e = c1 + dc[a] + (b != a ? dc[b] : 0);
            if (e < *err && iq1_grid_index[p] >= 0) *err = e, best = iq1_grid_index[p];
        }
    for (int mask = 0; best < 0 && mask < 256; mask++) {
        int p = p1;
        double e = c1;
        for (int j = 0; j < 8; j++)
            if (mask >> j & 1) p += step[j], e += dc[j];
        if (e < *err && iq1_grid_index[p] >= 0) *err = e, best = iq1_grid_index[p];
    }
    if (best >= 0) return best;
    for (int k = 0; k < 2048; k++) { /* no such member at all: every grid entry */
        double e = 0;
        for (int j = 0; j < 8; j++) e += ((double)t[j] - iq1_grid[k][j]) * ((double)t[j] - iq1_grid[k][j]);
        if (e < *err) *err = e, best = k;
    }
    return best;
}

/* Grid entries and shifts for n_groups groups of 8 weights x with one scale dl: the shift
 * chosen per group, or (shared) one for all of them as IQ1_S has it.  Returns the squared
 * error. */
static double iq1_assign(const float *x, int n_groups, bool shared, float dl, int *idx, int *shift)
{
    double err_total[2] = {0, 0}, err_best = 0;
    int idx_s[2][4];
    for (int l = 0; l < n_groups; l++) {
        double e[2];
        for (int si = 0; si < 2; si++) {
            float t[8], delta = si ? -IQ1_DELTA : IQ1_DELTA;
            for (int j = 0; j < 8; j++) t[j] = dl > 0 ? x[8 * l + j] / dl - delta : 0;
            idx_s[si][l] = iq1_nearest(t, &e[si]);
            e[si] *= (double)dl * dl;
            err_total[si] += e[si];
        }
        if (!shared) idx[l] = idx_s[e[1] < e[0]][l], shift[l] = e[1] < e[0] ? -1 : 1, err_best += fmin(e[0], e[1]);
    }
    if (shared) {
        int si = err_total[1] < err_total[0];
        for (int l = 0; l < n_groups; l++) idx[l] = idx_s[si][l], shift[l] = si ? -1 : 1;
        err_best = err_total[si];
    }
    return err_best;
}

/* The best scale for such a run: scales that put max|x| exactly on each magnitude a weight can
 * have (1 ± 1/8, 1/8) and a sweep between, each refined by least squares for the entries it
 * chose.  Writes the entries and shifts of the best.  Candidates go from small scales to large
 * and only a strictly better one replaces the best: a run of equal values is represented
 * exactly both as ±1 + δ and as 0 + δ with a scale 9 times larger, and the smaller scale is
 * the one that leaves the super-block's shared d fine enough for the other runs. */
static float iq1_fit(const float *x, int n_groups, bool shared, int *idx, int *shift)
{
    float amax = 0;
    for (int i = 0; i < 8 * n_groups; i++) amax = fmaxf(amax, fabsf(x[i]));
    for (int l = 0; l < n_groups; l++) idx[l] = 0, shift[l] = 1;
    if (amax == 0) return 0;
    const int8_t(*grid)[8] = iq1_grid_get();
    double best_err = DBL_MAX;
    float best = 0;
    for (int c = 0; c < 12; c++) {
        float dl = amax / (c == 0 ? 1.125f : c == 10 ? 0.875f : c == 11 ? 0.125f : 1.45f - 0.1f * (float)(c - 1));
        int ci[4], cs[4];
        iq1_assign(x, n_groups, shared, dl, ci, cs);
        double sxv = 0, svv = 0;
        for (int l = 0; l < n_groups; l++)
            for (int j = 0; j < 8; j++) {
                double v = grid[ci[l]][j] + IQ1_DELTA * cs[l];
                sxv += x[8 * l + j] * v, svv += v * v;
            }
        if (svv <= 0 || sxv <= 0) continue;
        double fit = sxv / svv, err = 0;
        for (int l = 0; l < n_groups; l++)
            for (int j = 0; j < 8; j++) {
                double e = x[8 * l + j] - fit * (grid[ci[l]][j] + IQ1_DELTA * cs[l]);
                err += e * e;
            }
        if (err < best_err) {
            best_err = err, best = (float)fit;
            memcpy(idx, ci, (size_t)n_groups * sizeof *ci), memcpy(shift, cs, (size_t)n_groups * sizeof *cs);
        }
    }
    return best;
}

/* The odd scales 2s+1 of n runs against one d = max(fit)/15, as F16; returns d and writes s. */
static f16_t iq1_super_scale(const float *fit, int n, int *s)
{
    float max = 0;
    for (int k = 0; k < n; k++) max = fmaxf(max, fit[k]);
    f16_t d16 = f32_to_f16(max / 15.0f);
    float d = f16_to_f32(d16);
    for (int k = 0; k < n; k++) s[k] = d > 0 ? clampi(round_even((fit[k] / d - 1.0f) / 2.0f), 0, 7) : 0;
    return d16;
}

static void quantize_iq1_s(const float *src, void *dst, int64_t n)
{
    block_iq1_s *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float fit[8];
        int s[8], idx[4], shift[4];
        for (int ib = 0; ib < 8; ib++) fit[ib] = iq1_fit(src + 32 * ib, 4, true, idx, shift);
        y[b].d = iq1_super_scale(fit, 8, s);
        float d = f16_to_f32(y[b].d);
        for (int ib = 0; ib < 8; ib++) { /* the entries again, for the scale as stored */
            iq1_assign(src + 32 * ib, 4, true, d * (float)(2 * s[ib] + 1), idx, shift);
            int qh = s[ib] << 12 | (shift[0] < 0) << 15;
            for (int l = 0; l < 4; l++) y[b].qs[4 * ib + l] = (uint8_t)idx[l], qh |= (idx[l] >> 8) << (3 * l);
            y[b].qh[ib] = (uint16_t)qh;
        }
    }
}
static void quantize_iq1_m(const float *src, void *dst, int64_t n)
{
    block_iq1_m *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float fit[16];
        int s[16], idx[2], shift[2];
        for (int h = 0; h < 16; h++) fit[h] = iq1_fit(src + 16 * h, 2, false, idx, shift);
        f16_t d16 = iq1_super_scale(fit, 16, s);
        float d = f16_to_f32(d16);
        memset(&y[b], 0, sizeof y[b]);
        int sc[4] = {0};
        for (int h = 0; h < 16; h++) {
            int ib = h / 2;
            iq1_assign(src + 16 * h, 2, false, d * (float)(2 * s[h] + 1), idx, shift);
            for (int l2 = 0; l2 < 2; l2++) {
                int l = 2 * (h % 2) + l2; /* group within the sub-block */
                y[b].qs[4 * ib + l] = (uint8_t)idx[l2];
                y[b].qh[2 * ib + l / 2] |= (uint8_t)(((idx[l2] >> 8) | (shift[l2] < 0) << 3) << (4 * (l % 2)));
            }
            sc[ib / 2] |= s[h] << (6 * (ib % 2) + 3 * (h % 2));
        }
        for (int k = 0; k < 4; k++) {
            sc[k] |= (d16 >> (4 * k) & 15) << 12;
            y[b].scales[2 * k] = (uint8_t)sc[k], y[b].scales[2 * k + 1] = (uint8_t)(sc[k] >> 8);
        }
    }
}

/* ---- Matrix-matrix products: many tokens at once (prefill) ------------------------------------
 * A prompt goes through the layers as a batch of tokens, so each weight matrix meets many
 * activation rows at once.  Taking every (row, token) pair through vec_dot on its own decodes
 * the weight block — nibbles unpacked, 6-bit scales unpacked, F16 scales converted — once per
 * token, and pays a horizontal sum per pair and block.  A `gemm` kernel computes a tile of a
 * few weight rows × a few tokens together instead: each weight block is decoded once into
 * registers and multiplied with the same block of every token of the tile, each activation block
 * is loaded once for all the rows, and the per-pair sums are reduced 8 pairs at a time.  On an
 * AVX-512 core that is about 3x the per-row kernels' speed for Q4_K, 2.3-2.7x for Q6_K,
 * Q8_0, Q4_0, Q5_0 and IQ4_NL, 1.5-2.2x for Q2_K, Q3_K and Q5_K, and 1.8x over the 8-row
 * kernels of Q4_0/IQ4_NL (make bench-kernels).  Measured on a shared AMD Zen 4 core: Q4_1 and
 * Q5_1 1.8x and 2.0-2.5x the per-row kernels, 1.35x and 1.7x their 8-row ones; F16 and BF16
 * 3.3x and 2.8x, 1.35x and 1.5x; F32 1.5x (its 4-byte weights stream from memory); IQ1_S and
 * IQ1_M 2.6x and 2.3x (their grid lookups, most of a row's time, done once per tile).  Types
 * without a gemm kernel (on ARM IQ1, Q2_K, Q3_K, Q5_K, Q4_1, Q5_1 and the floats) take their
 * pairs one by one, as before.
 *
 * On 64-bit ARM the NEON kernels of Q8_0, Q4_0, Q5_0, IQ4_NL, Q6_K and Q4_K's repacked order
 * are written as tiles in the first place (see "Tiles" at the NEON helpers): their dot products
 * are the 1 × 1 tile and their gemm kernels (at the end of this subsection) larger ones, so
 * the two cannot drift apart.  Their speed on ARM hardware is not measured here (the tests run
 * under qemu); instructions executed per pair and 32 elements (counted under qemu, gcc -O3),
 * what matmul did before → gemm, with the dot product extension: Q8_0 22 → 14, Q4_0 25 → 16,
 * Q5_0 42 → 21, Q6_K 27 → 15, Q4_K repacked 18 → 11, Q4_0/IQ4_NL repacked 13 (the 8-row
 * kernel) → 8; without it, where each 16-byte product takes 6 instructions instead of 1:
 * Q8_0 28 → 22, Q4_0 31 → 23, Q5_0 48 → 28, Q6_K 35 → 23, Q4_K 25 → 19, repacked Q4_0 22 → 17.
 * Besides the count, a tile keeps 4 to 16 independent chains of multiply-adds in flight where
 * one row waits on its own.
 *
 * Tile shapes.  A tile's accumulators live in registers, one 256-bit register per pair, next to
 * a register per decoded weight row and one for the activation block at hand.  AVX-512VL gives
 * 32 registers: 16 pairs, 4 rows × 4 tokens, or 2 × 8 for the k-quants, whose per-row scale
 * unpacking is the costlier side.  Plain AVX2 has 16: 8 pairs, 2 × 4 or 1 × 8 (make test runs
 * the kernel tests in both forms).  gemm_tiles() walks a chunk of rows tile by tile; at a
 * ragged edge (rows or tokens not a multiple of the tile) the missing rows or tokens repeat the
 * last real one and only the real pairs are stored.  Tokens are taken in blocks of about
 * GEMM_ACT_BYTES of activations, which stay in the L2 cache while every row tile of the chunk
 * passes over them.  (On this file's development machine, an AVX-512 core where vpdpbusd,
 * vpmaddubsw, vpdpwssd and the F32 multiply-adds share two pipes, the byte products themselves
 * are about half of a tile's time; the rest is unpacking and the per-pair F32 steps, which the
 * tile shapes amortise.)
 *
 * Bit-identical results.  Every value a gemm kernel writes is bit for bit the one its row's dot
 * product gives — vec_dot for `gemm`, vec_dot_r8 for `gemm_r8` — so a batched prompt gives the
 * same logits as token-by-token evaluation and the llama.cpp references keep holding.  The
 * integer sums are exact whichever instructions form them (vpdpbusd and vpdpwssd add in 32
 * bits and never saturate; maddubs stays within 16 bits for each type's value ranges, as the
 * per-row kernels already rely on), and the F32 steps are the per-row kernel's, in its order,
 * pair by pair: the same lanes, the same fused multiply-adds by the same scale products, the
 * same final sums.  The specification is gemm_by_rows below, which is literally the per-pair
 * loop; tests/test_kernels.c compares every kernel with it by memcmp. */

/* The specification: every (row, token) pair through the dot product `dot` (the type's
 * vec_dot or vec_dot_r8).  Also what matmul does for types without a gemm kernel. */
static void gemm_by_rows(vec_dot_fn dot, int64_t n, const void *w, size_t row_bytes, int64_t n_rows, const void *a, size_t act_bytes,
                         int64_t n_tok, float *out, size_t out_stride)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * row_bytes;
        for (int64_t t = 0; t < n_tok; t++) out[(size_t)t * out_stride + (size_t)r] = dot(n, wr, (const uint8_t *)a + (size_t)t * act_bytes);
    }
}

/* The same product through a tile kernel (the table's gemm or gemm_r8), tile by tile; what
 * matmul does for types that have one. */
#define GEMM_ACT_BYTES (256u << 10)
static void gemm_tiles(const gemm_tile *tile, int64_t n, const void *w, size_t row_bytes, int64_t n_rows, const void *a, size_t act_bytes,
                       int64_t n_tok, float *out, size_t out_stride)
{
    int64_t tok_block = (int64_t)(GEMM_ACT_BYTES / act_bytes) / tile->toks * tile->toks;
    if (tok_block < tile->toks) tok_block = tile->toks;
    for (int64_t t0 = 0; t0 < n_tok; t0 += tok_block) {
        int64_t t_end = t0 + tok_block < n_tok ? t0 + tok_block : n_tok;
        for (int64_t r0 = 0; r0 < n_rows; r0 += tile->rows)
            for (int64_t t1 = t0; t1 < t_end; t1 += tile->toks) {
                const uint8_t *wr[GEMM_TILE_MAX], *at[GEMM_TILE_MAX];
                for (int r = 0; r < tile->rows; r++) /* past the edge: the last row again */
                    wr[r] = (const uint8_t *)w + (size_t)(r0 + r < n_rows ? r0 + r : n_rows - 1) * row_bytes;
                for (int t = 0; t < tile->toks; t++) at[t] = (const uint8_t *)a + (size_t)(t1 + t < t_end ? t1 + t : t_end - 1) * act_bytes;
                float v[GEMM_TILE_MAX];
                tile->fn(n, wr, at, v);
                for (int r = 0; r < tile->rows && r0 + r < n_rows; r++)
                    for (int t = 0; t < tile->toks && t1 + t < t_end; t++) out[(size_t)(t1 + t) * out_stride + (size_t)(r0 + r)] = v[r * tile->toks + t];
            }
    }
}

#if HALDA_AVX2
/* acc + Σ over pairs of 16-bit lanes p·s, into 32-bit lanes: one vpdpwssd, or madd and add.
 * Both exact (the products of our 16-bit values are far from overflowing 32 bits). */
#if HALDA_AVX512VNNI
static inline __m256i gemm_madd_acc(__m256i acc, __m256i p, __m256i s) { return _mm256_dpwssd_epi32(acc, p, s); }
#else
static inline __m256i gemm_madd_acc(__m256i acc, __m256i p, __m256i s) { return _mm256_add_epi32(acc, _mm256_madd_epi16(p, s)); }
#endif

/* Signed bytes times signed bytes, 4 products per 32-bit lane (the decoded weights of the
 * 32-element types times Q8_0 activations).  vpdpbusd takes its first operand unsigned, so the
 * weights are offset by 128 (x ^ 0x80 is x + 128 as an unsigned byte) and the accumulator starts
 * at −128·Σy over the lane's 4 activation bytes, which gemm_i8_bias computes once per
 * activation block:
 *     Σ (x + 128)·y − 128·Σ y = Σ x·y, exactly, for every x and y.
 * Without VNNI, avx2_dot_i8_lanes' sign trick (exact for bytes in [−127, 127]). */
#if HALDA_AVX512VNNI
static inline __m256i gemm_i8_weights(__m256i x) { return _mm256_xor_si256(x, _mm256_set1_epi8((char)0x80)); }
static inline __m256i gemm_i8_bias(__m256i y)
{
    return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), y));
}
static inline __m256i gemm_i8_lanes(__m256i xw, __m256i y, __m256i bias) { return _mm256_dpbusd_epi32(bias, xw, y); }
#else
static inline __m256i gemm_i8_weights(__m256i x) { return x; }
static inline __m256i gemm_i8_bias(__m256i y) { return (void)y, _mm256_setzero_si256(); }
static inline __m256i gemm_i8_lanes(__m256i xw, __m256i y, __m256i bias) { return (void)bias, avx2_dot_i8_lanes(xw, y); }
#endif

/* The F16 at p, as bits. */
static inline short f16_bits_at(const uint8_t *p)
{
    f16_t h;
    memcpy(&h, p, 2);
    return (short)h;
}
/* 8 F16 scales `stride` bytes apart (the d of 8 consecutive blocks), converted together. */
static inline __m256 avx2_f16x8_strided(const uint8_t *p, size_t stride)
{
    return _mm256_cvtph_ps(_mm_setr_epi16(f16_bits_at(p), f16_bits_at(p + stride), f16_bits_at(p + 2 * stride), f16_bits_at(p + 3 * stride),
                                          f16_bits_at(p + 4 * stride), f16_bits_at(p + 5 * stride), f16_bits_at(p + 6 * stride),
                                          f16_bits_at(p + 7 * stride)));
}

/* ---- The k-quant tile.  Every k-quant super-block is 8 runs of 32 elements, each run two groups
 * of 16 with their own integer scales (Q4_K's and Q5_K's sub-blocks of 32: one scale, twice).
 * A row's run decodes to 32 unsigned bytes q + bias (Q3_K's signed q plus 4, Q6_K's plus 32, the
 * others' q as it is); maddubs forms their 16-bit pair sums with the activation bytes, minus
 * bias·a (both stay within 16 bits: at most 2·63·127), and the scales of the run's two groups
 * weight them into 32 bits — lane l of a pair's sum is then k_lane_sums' lane l, whatever the
 * per-row kernel's instructions (the integers are exact).  What the types differ in is the
 * row's side (gemm_k_row: scales, minimums, d and dmin, once per row and super-block), how a
 * run decodes, and the F32 steps of their dot products, which gemm_k_order names. */
typedef struct {
    __m256i scales; /* the 16 group scales as 16-bit words */
    __m256i mins;   /* the 16 group minimums as 16-bit words (types without: unused) */
    float d, dmin;  /* the super-block's F16 scales */
} gemm_k_row;
typedef gemm_k_row (*gemm_k_row_fn)(const uint8_t *blk);
typedef __m256i (*gemm_k_run_fn)(const uint8_t *blk, int run);

/* The F32 steps per pair and super-block, as the row's dot product takes them (d_a: the
 * token's scale; lanes: the 8 integer lanes; mins: Σ m·bsums, by lanes or in total). */
enum gemm_k_order {
    GEMM_K_LANES,      /* Q3_K, Q6_K: acc += (d_a·d)·lanes; lane_acc_sum */
    GEMM_K_LANES_MINS, /* Q2_K: acc += −(d_a·dmin)·min lanes, then += (d_a·d)·lanes; lane_acc_sum */
    GEMM_K_LANES_SUMM, /* Q5_K: acc += (d_a·d)·lanes, summs += −(d_a·dmin)·mins; lane_acc_sum + summs */
    GEMM_K_TOTALS,     /* Q2_K, Q4_K repacked: acc += Σlanes·(d·d_a), acc_min += mins·(dmin·d_a); acc − acc_min */
};

/* The tile: GEMM_K_ROWS rows × 8 tokens — 2 × 8 on 32 registers, 1 × 8 on 16.  Unpacking a
 * row's scales costs more than loading a token's block, and in the totals order a row's 8 pairs
 * are reduced together.  (On the development machine 2 × 8 was as fast as 4 × 4 for Q6_K and
 * Q3_K, and 10-15% faster for Q2_K and Q5_K, whose F32 steps per pair cost more.) */
#define GEMM_K_ROWS (HALDA_AVX512VNNI ? 2 : 1)

/* A tile of a k-quant in `order`: per pair and super-block the 8 integer lanes, then the F32
 * steps — per pair, or for a row's 8 pairs in one register where they act on totals (summs;
 * acc and acc_min).  bias and order are constants at every call, so the branches fold. */
static inline __attribute__((always_inline)) void gemm_k_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out,
                                                              size_t bb, int bias, enum gemm_k_order order, gemm_k_row_fn row_of,
                                                              gemm_k_run_fn run_of)
{
    enum { R = GEMM_K_ROWS, T = 8 };
    /* bytes 0,1 (a 16-bit scale) repeated in the low half, bytes 2,3 in the high half */
    const __m256i scale_pair = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    __m256 acc[R * T], acc_min[R]; /* acc[r·T + t] per pair in the lanes orders, acc[r] per row in the totals order */
    for (int p = 0; p < R * T; p++) acc[p] = _mm256_setzero_ps();
    for (int r = 0; r < R; r++) acc_min[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *x[R];
        const block_q8_K *y[T];
        gemm_k_row row[R];
        __m256i sc[R][8]; /* sc[r][run]: the scales of groups 2·run (low half) and 2·run + 1 (high half) */
        for (int r = 0; r < R; r++) {
            x[r] = w[r] + (size_t)b * bb, row[r] = row_of(x[r]);
            for (int run = 0; run < 8; run++) /* 32-bit word `run` of the scales, split over the halves */
                sc[r][run] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(row[r].scales, _mm256_set1_epi32(run)), scale_pair);
        }
        for (int t = 0; t < T; t++) y[t] = (const block_q8_K *)a[t] + b;
        __m256 da = _mm256_setr_ps(y[0]->d, y[1]->d, y[2]->d, y[3]->d, y[4]->d, y[5]->d, y[6]->d, y[7]->d);
        __m256i isum[R * T];
        for (int p = 0; p < R * T; p++) isum[p] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int run = 0; run < 8; run++) {
            __m256i q[R];
            for (int r = 0; r < R; r++) q[r] = run_of(x[r], run);
            for (int t = 0; t < T; t++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(y[t]->qs + 32 * run));
                __m256i a_bias = bias ? _mm256_maddubs_epi16(_mm256_set1_epi8((char)bias), av) : _mm256_setzero_si256();
                for (int r = 0; r < R; r++) {
                    __m256i p16 = _mm256_maddubs_epi16(q[r], av);
                    if (bias) p16 = _mm256_sub_epi16(p16, a_bias);
                    isum[r * T + t] = gemm_madd_acc(isum[r * T + t], p16, sc[r][run]);
                }
            }
        }
        __m256i min_lanes[R * T]; /* lane l: m[2l]·bsums[2l] + m[2l+1]·bsums[2l+1] */
        for (int p = 0; p < R * T && order != GEMM_K_LANES; p++)
            min_lanes[p] = _mm256_madd_epi16(row[p / T].mins, _mm256_loadu_si256((const __m256i *)y[p % T]->bsums));
        for (int r = 0; r < R && (order == GEMM_K_TOTALS || order == GEMM_K_LANES_SUMM); r++) {
            __m256 m = _mm256_cvtepi32_ps(avx2_sum8_i32(min_lanes + T * r)); /* lane t: pair (r, t)'s Σ m·bsums */
            if (order == GEMM_K_LANES_SUMM) { /* −(d_a·dmin) as −dmin·d_a: the same bits */
                acc_min[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(-row[r].dmin), da), m, acc_min[r]);
                continue;
            }
            __m256 s = _mm256_cvtepi32_ps(avx2_sum8_i32(isum + T * r));
            acc[r] = _mm256_fmadd_ps(s, _mm256_mul_ps(_mm256_set1_ps(row[r].d), da), acc[r]);
            acc_min[r] = _mm256_fmadd_ps(m, _mm256_mul_ps(_mm256_set1_ps(row[r].dmin), da), acc_min[r]);
        }
        for (int p = 0; p < R * T && order != GEMM_K_TOTALS; p++) {
            float d_a = y[p % T]->d;
            if (order == GEMM_K_LANES_MINS)
                acc[p] = _mm256_fmadd_ps(_mm256_set1_ps(-(d_a * row[p / T].dmin)), _mm256_cvtepi32_ps(min_lanes[p]), acc[p]);
            acc[p] = _mm256_fmadd_ps(_mm256_set1_ps(d_a * row[p / T].d), _mm256_cvtepi32_ps(isum[p]), acc[p]);
        }
    }
    for (int r = 0; r < R && order == GEMM_K_TOTALS; r++) _mm256_storeu_ps(out + T * r, _mm256_sub_ps(acc[r], acc_min[r]));
    for (int r = 0; r < R && order != GEMM_K_TOTALS; r++) {
        float summs[T];
        _mm256_storeu_ps(summs, acc_min[r]);
        for (int t = 0; t < T; t++) /* (no "+ 0" where there is no summs: −0 + 0 is +0) */
            out[T * r + t] = order == GEMM_K_LANES_SUMM ? avx2_lane_sum(acc[T * r + t]) + summs[t] : avx2_lane_sum(acc[T * r + t]);
    }
}

/* The rows' side of each type. */
static inline gemm_k_row gemm_q2_K_row(const uint8_t *blk)
{
    const block_q2_K *x = (const block_q2_K *)blk;
    __m256i sc = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_loadu_si128((const __m128i *)x->scales), _mm_set1_epi8(15)));
    return (gemm_k_row){sc, avx2_q2_K_mins(x), f16_to_f32(x->d), f16_to_f32(x->dmin)};
}
static inline gemm_k_row gemm_q3_K_row(const uint8_t *blk)
{
    const block_q3_K *x = (const block_q3_K *)blk;
    return (gemm_k_row){_mm256_cvtepi8_epi16(avx2_q3_K_scales(x->scales)), _mm256_setzero_si256(), f16_to_f32(x->d), 0};
}
/* Q4_K's and Q5_K's: their blocks open alike (d, dmin, the 12 packed bytes); each of the 8
 * scales and minimums serves two groups of 16. */
static inline gemm_k_row gemm_q4_K_row(const uint8_t *blk)
{
    const block_q4_K *x = (const block_q4_K *)blk;
    __m128i scale_min = k_scale_min_unpack(x->scales);
    return (gemm_k_row){_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(scale_min, scale_min)), _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scale_min, scale_min)),
                        f16_to_f32(x->d), f16_to_f32(x->dmin)};
}
static inline gemm_k_row gemm_q6_K_row(const uint8_t *blk)
{
    const block_q6_K *x = (const block_q6_K *)blk;
    return (gemm_k_row){_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales)), _mm256_setzero_si256(), f16_to_f32(x->d), 0};
}
/* Their runs (Q3_K's as q + 4, Q6_K's as q + 32). */
static inline __m256i gemm_q2_K_run(const uint8_t *blk, int run) { return avx2_q2_K_run((const block_q2_K *)blk, run); }
static inline __m256i gemm_q3_K_run(const uint8_t *blk, int run) { return avx2_q3_K_run((const block_q3_K *)blk, run); }
static inline __m256i gemm_q4_K_run(const uint8_t *blk, int run) { return avx2_k_nibbles(((const block_q4_K *)blk)->qs, run); }
static inline __m256i gemm_q5_K_run(const uint8_t *blk, int run) { return avx2_q5_K_run((const block_q5_K *)blk, run); }
/* Q6_K: run = 4h + k is quarter k of half h (the layout of section 3), its high 2 bits bits 2k,
 * 2k+1 of qh[32h ..] moved onto bits 4, 5 (16-bit shifts: the mask drops what crosses from the
 * neighbouring byte). */
static inline __m256i gemm_q6_K_run(const uint8_t *blk, int run)
{
    const block_q6_K *x = (const block_q6_K *)blk;
    int h = run / 4, k = run % 4;
    __m256i low = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32 * (k % 2)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
    __m256i high = k < 2 ? _mm256_slli_epi16(qh, 4 - 2 * k) : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
    if (k >= 2) low = _mm256_srli_epi16(low, 4);
    return _mm256_or_si256(_mm256_and_si256(low, _mm256_set1_epi8(15)), _mm256_and_si256(high, _mm256_set1_epi8(0x30)));
}

static void gemm_q2_K_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_k_tile(n, w, a, out, sizeof(block_q2_K), 0, GEMM_K_LANES_MINS, gemm_q2_K_row, gemm_q2_K_run);
}
static void gemm_q2_K_r8_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_k_tile(n, w, a, out, sizeof(block_q2_K), 0, GEMM_K_TOTALS, gemm_q2_K_row, gemm_q2_K_run);
}
static void gemm_q3_K_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_k_tile(n, w, a, out, sizeof(block_q3_K), 4, GEMM_K_LANES, gemm_q3_K_row, gemm_q3_K_run);
}
static void gemm_q4_K_r8_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_k_tile(n, w, a, out, sizeof(block_q4_K), 0, GEMM_K_TOTALS, gemm_q4_K_row, gemm_q4_K_run);
}
static void gemm_q5_K_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_k_tile(n, w, a, out, sizeof(block_q5_K), 0, GEMM_K_LANES_SUMM, gemm_q4_K_row, gemm_q5_K_run);
}
static void gemm_q6_K_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_k_tile(n, w, a, out, sizeof(block_q6_K), 32, GEMM_K_LANES, gemm_q6_K_row, gemm_q6_K_run);
}
/* The tiles the table names: a kernel and its shape. */
static const gemm_tile gemm_q2_K_avx2 = {gemm_q2_K_tile_avx2, GEMM_K_ROWS, 8};
static const gemm_tile gemm_q2_K_r8_avx2 = {gemm_q2_K_r8_tile_avx2, GEMM_K_ROWS, 8};
static const gemm_tile gemm_q3_K_avx2 = {gemm_q3_K_tile_avx2, GEMM_K_ROWS, 8};
static const gemm_tile gemm_q4_K_r8_avx2 = {gemm_q4_K_r8_tile_avx2, GEMM_K_ROWS, 8};
static const gemm_tile gemm_q5_K_avx2 = {gemm_q5_K_tile_avx2, GEMM_K_ROWS, 8};
static const gemm_tile gemm_q6_K_avx2 = {gemm_q6_K_tile_avx2, GEMM_K_ROWS, 8};

/* The 32-element blocks: Q8_0, Q4_0, Q5_0 and IQ4_NL, whose weights decode to signed bytes and
 * meet Q8_0 activations, and Q4_1 and Q5_1 ("with a minimum": w = d·q + m, q unsigned), which
 * meet Q8_1 activations.  Every block starts with its F16 scale d, then Q4_1's and Q5_1's
 * minimum m and Q8_1's s; an activation block ends with its 32 bytes. */
static_assert(offsetof(block_q4_1, m) == 2 && offsetof(block_q5_1, m) == 2 && offsetof(block_q8_1, s) == 2, "d, then m or s");
static_assert(offsetof(block_q8_0, qs) == sizeof(block_q8_0) - QK && offsetof(block_q8_1, qs) == sizeof(block_q8_1) - QK, "bytes last");
/* The signed types' bytes, as the per-row kernels decode them. */
static inline __m256i gemm_q8_0_bytes(const void *blk) { return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)blk)->qs); }
static inline __m256i gemm_q4_0_bytes(const void *blk) { return avx2_q4_0_bytes((const block_q4_0 *)blk); }
static inline __m256i gemm_q5_0_bytes(const void *blk)
{
    const block_q5_0 *x = (const block_q5_0 *)blk;
    return _mm256_sub_epi8(avx2_q5_values(x->qs, x->qh), _mm256_set1_epi8(16));
}
static inline __m256i gemm_iq4_nl_bytes(const void *blk) { return avx2_iq4_nl_values((const block_iq4_nl *)blk); }
/* The 32 bytes of activation block b (ab bytes a block). */
static inline __m256i gemm_act_bytes(const uint8_t *a, size_t ab, int64_t b) { return _mm256_loadu_si256((const __m256i *)(a + (size_t)(b + 1) * ab - QK)); }

/* One F16 field of nb <= 8 consecutive blocks (at p, p + stride, ...), converted together; zeros
 * past nb, so that a last, partial group reads nothing past its row. */
static inline __m256 gemm_f16x8(const uint8_t *p, size_t stride, int nb)
{
    if (nb == 8) return avx2_f16x8_strided(p, stride);
    short h[8] = {0};
    for (int i = 0; i < nb; i++) h[i] = f16_bits_at(p + (size_t)i * stride);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}
/* The products of the pairs' two F16 scales for 8 blocks b0..b0+7 (nb <= 8 of them), as
 * scale[p][i]: pair p = r·T + t, block b0 + i (zero past nb).  Each row's and token's 8 scales
 * are converted in one instruction and each pair's 8 products formed in one multiply. */
static inline void gemm_scales_32(const uint8_t *const *w, const uint8_t *const *a, int R, int T, size_t bb, size_t ab, int64_t b0, int nb,
                                  float scale[GEMM_TILE_MAX][8])
{
    __m256 dw[GEMM_TILE_MAX], da[GEMM_TILE_MAX];
    for (int r = 0; r < R; r++) dw[r] = gemm_f16x8(w[r] + (size_t)b0 * bb, bb, nb);
    for (int t = 0; t < T; t++) da[t] = gemm_f16x8(a[t] + (size_t)b0 * ab, ab, nb);
    for (int p = 0; p < R * T; p++) _mm256_storeu_ps(scale[p], _mm256_mul_ps(dw[p / T], da[p % T]));
}

/* The 8×8 transpose of 8 float vectors: lane j of out[i] = lane i of v[j]. */
static inline void avx2_transpose8_ps(const __m256 v[8], __m256 out[8])
{
    __m256 t[8], u[8];
    for (int k = 0; k < 4; k++) t[2 * k] = _mm256_unpacklo_ps(v[2 * k], v[2 * k + 1]), t[2 * k + 1] = _mm256_unpackhi_ps(v[2 * k], v[2 * k + 1]);
    for (int k = 0; k < 2; k++)
        for (int h = 0; h < 2; h++) {
            __m256d x = _mm256_castps_pd(t[4 * k + h]), y = _mm256_castps_pd(t[4 * k + 2 + h]);
            u[4 * k + 2 * h] = _mm256_castpd_ps(_mm256_unpacklo_pd(x, y));
            u[4 * k + 2 * h + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(x, y));
        }
    /* u[m] holds, in each 128-bit half, rows 4k..4k+3 (k = m / 4) of column (m % 4) + 4·half */
    for (int i = 0; i < 4; i++) {
        out[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        out[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

/* The minimums' F16 fields for 8 blocks b0..b0+7 (nb <= 8 of them), pair by pair as the tiles
 * below take them: m_by_block[g][i] holds in lane j the weight's m of pair 8g + j (pair
 * p = r·T + t) for block b0 + i, s_by_block[i] the activation's s, the same for every group g
 * (T = 4 tokens, twice). */
static inline void gemm_mins_32(const uint8_t *const *w, const uint8_t *const *a, int R, size_t bb, size_t ab, int64_t b0, int nb,
                                __m256 m_by_block[GEMM_TILE_MAX / 8][8], __m256 s_by_block[8])
{
    enum { T = 4 };
    __m256 m[GEMM_TILE_MAX / T], s[T], v[8];
    for (int r = 0; r < R; r++) m[r] = gemm_f16x8(w[r] + (size_t)b0 * bb + 2, bb, nb);
    for (int t = 0; t < T; t++) s[t] = gemm_f16x8(a[t] + (size_t)b0 * ab + 2, ab, nb);
    for (int g = 0; g < R * T / 8; g++) {
        for (int j = 0; j < 8; j++) v[j] = m[(8 * g + j) / T];
        avx2_transpose8_ps(v, m_by_block[g]);
    }
    for (int j = 0; j < 8; j++) v[j] = s[j % T];
    avx2_transpose8_ps(v, s_by_block);
}

/* Those types in their vec_dot order (as vec_dot_q8_0 and vec_dot_q4_1): per pair, 8 F32 lanes,
 * each block adding its scale (the F32 product of the two F16 scales) times the block's 8
 * integer lane sums in one fused multiply-add; lane_acc_sum at the end.  A 32-element block has
 * little work per pair, so the scales are prepared apart, 8 blocks at a time (gemm_scales_32),
 * and the multiply-add takes each from memory as a broadcast operand at no extra cost.  With a
 * minimum (Q4_1, Q5_1), the unsigned weights go straight into the byte product, and each pair
 * also adds m·s per block in one fused multiply-add of its own, 8 pairs to a register, which it
 * adds after lane_acc_sum. */
#define GEMM_I8_ROWS (HALDA_AVX512VNNI ? 4 : 2)
static inline __attribute__((always_inline)) void gemm_i8_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out,
                                                               size_t bb, avx2_block_values_fn bytes, bool minimum)
{
    enum { R = GEMM_I8_ROWS, T = 4 };
    const size_t ab = minimum ? sizeof(block_q8_1) : sizeof(block_q8_0);
    __m256 acc[R * T], mins[R * T / 8];
    for (int p = 0; p < R * T; p++) acc[p] = _mm256_setzero_ps();
    for (int g = 0; g < R * T / 8; g++) mins[g] = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < n / QK; b0 += 8) {
        int nb = n / QK - b0 < 8 ? (int)(n / QK - b0) : 8;
        float scale[GEMM_TILE_MAX][8];
        gemm_scales_32(w, a, R, T, bb, ab, b0, nb, scale);
        __m256 m_by_block[GEMM_TILE_MAX / 8][8], s_by_block[8];
        if (minimum) gemm_mins_32(w, a, R, bb, ab, b0, nb, m_by_block, s_by_block);
        for (int i = 0; i < nb; i++) {
            __m256i xw[R];
            for (int r = 0; r < R; r++) {
                __m256i x = bytes(w[r] + (size_t)(b0 + i) * bb);
                xw[r] = minimum ? x : gemm_i8_weights(x);
            }
            for (int t = 0; t < T; t++) {
                __m256i ya = gemm_act_bytes(a[t], ab, b0 + i), bias = minimum ? _mm256_setzero_si256() : gemm_i8_bias(ya);
                for (int r = 0; r < R; r++) {
                    int p = r * T + t;
                    __m256i lanes = minimum ? avx2_dot_u8_acc(bias, xw[r], ya) : gemm_i8_lanes(xw[r], ya, bias);
                    acc[p] = _mm256_fmadd_ps(_mm256_set1_ps(scale[p][i]), _mm256_cvtepi32_ps(lanes), acc[p]);
                }
            }
            if (minimum)
                for (int g = 0; g < R * T / 8; g++) mins[g] = _mm256_fmadd_ps(m_by_block[g][i], s_by_block[i], mins[g]);
        }
    }
    float min_sum[R * T];
    for (int g = 0; g < R * T / 8; g++) _mm256_storeu_ps(min_sum + 8 * g, mins[g]);
    for (int p = 0; p < R * T; p++) out[p] = minimum ? avx2_lane_sum(acc[p]) + min_sum[p] : avx2_lane_sum(acc[p]);
}

/* Q4_0 and IQ4_NL in the repacked order (vec_dot_q4_0_r8): per pair and block the exact total of
 * the 8 lanes — 8 pairs reduced together, as the 8-row kernels do — then one fused multiply-add
 * by the block's scale product into the pair's F32 accumulator, 8 pairs to a register. */
static inline __attribute__((always_inline)) void gemm_i8_r8_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out,
                                                                  size_t bb, avx2_block_values_fn bytes)
{
    enum { R = GEMM_I8_ROWS, T = 4 };
    __m256 acc[R * T / 8];
    for (int g = 0; g < R * T / 8; g++) acc[g] = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < n / QK; b0 += 8) {
        int nb = n / QK - b0 < 8 ? (int)(n / QK - b0) : 8;
        float scale[GEMM_TILE_MAX][8];
        gemm_scales_32(w, a, R, T, bb, sizeof(block_q8_0), b0, nb, scale);
        __m256 by_block[R * T / 8][8]; /* by_block[g][i]: the scales of pairs 8g..8g+7 for block b0 + i */
        for (int g = 0; g < R * T / 8; g++) {
            __m256 v[8];
            for (int k = 0; k < 8; k++) v[k] = _mm256_loadu_ps(scale[8 * g + k]);
            avx2_transpose8_ps(v, by_block[g]);
        }
        for (int i = 0; i < nb; i++) {
            __m256i xw[R], lanes[R * T];
            for (int r = 0; r < R; r++) xw[r] = gemm_i8_weights(bytes(w[r] + (size_t)(b0 + i) * bb));
            for (int t = 0; t < T; t++) {
                __m256i ya = gemm_act_bytes(a[t], sizeof(block_q8_0), b0 + i), bias = gemm_i8_bias(ya);
                for (int r = 0; r < R; r++) lanes[r * T + t] = gemm_i8_lanes(xw[r], ya, bias);
            }
            for (int g = 0; g < R * T / 8; g++)
                acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(avx2_sum8_i32(lanes + 8 * g)), by_block[g][i], acc[g]);
        }
    }
    for (int g = 0; g < R * T / 8; g++) _mm256_storeu_ps(out + 8 * g, acc[g]);
}

static void gemm_q8_0_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_tile(n, w, a, out, sizeof(block_q8_0), gemm_q8_0_bytes, false);
}
static void gemm_q4_0_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_tile(n, w, a, out, sizeof(block_q4_0), gemm_q4_0_bytes, false);
}
static void gemm_q5_0_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_tile(n, w, a, out, sizeof(block_q5_0), gemm_q5_0_bytes, false);
}
static void gemm_iq4_nl_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_tile(n, w, a, out, sizeof(block_iq4_nl), gemm_iq4_nl_bytes, false);
}
static void gemm_q4_1_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_tile(n, w, a, out, sizeof(block_q4_1), avx2_q4_1_block_values, true);
}
static void gemm_q5_1_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_tile(n, w, a, out, sizeof(block_q5_1), avx2_q5_1_block_values, true);
}
static void gemm_q4_0_r8_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_r8_tile(n, w, a, out, sizeof(block_q4_0), gemm_q4_0_bytes);
}
static void gemm_iq4_nl_r8_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_i8_r8_tile(n, w, a, out, sizeof(block_iq4_nl), gemm_iq4_nl_bytes);
}
/* ---- The float tiles: F32, F16 and BF16 weights times activations of their own type, in their
 * dot products' order (vec_dot_f16_avx2 and its twins): per pair, 8 F32 lanes, each step of 8
 * elements adding their products — a multiply, then an add, never fused — then f32_pair_sum,
 * then the tail's products one at a time.  Each row's 8 elements are converted once for all the
 * tile's tokens, and each token's once for all its rows. */
typedef __m256 (*gemm_floats_fn)(const uint8_t *p); /* 8 elements at p as F32 */
static inline __m256 gemm_f32_floats(const uint8_t *p) { return _mm256_loadu_ps((const float *)p); }
static inline __m256 gemm_f16_floats(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 gemm_bf16_floats(const uint8_t *p) { return avx2_bf16x8((const bf16_t *)p); }
/* The n_tail < 8 elements (eb bytes each) at p, then zeros, as F32. */
static inline __m256 gemm_tail_floats(const uint8_t *p, int n_tail, size_t eb, gemm_floats_fn floats)
{
    uint8_t buf[8 * sizeof(float)] = {0};
    memcpy(buf, p, (size_t)n_tail * eb);
    return floats(buf);
}
#define GEMM_FLOAT_ROWS (HALDA_AVX512 ? 4 : 2)
static inline __attribute__((always_inline)) void gemm_float_tile(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out,
                                                                  size_t eb, gemm_floats_fn floats)
{
    enum { R = GEMM_FLOAT_ROWS, T = 4 };
    __m256 acc[R * T];
    for (int p = 0; p < R * T; p++) acc[p] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x[R];
        for (int r = 0; r < R; r++) x[r] = floats(w[r] + (size_t)i * eb);
        for (int t = 0; t < T; t++) {
            __m256 y = floats(a[t] + (size_t)i * eb);
            for (int r = 0; r < R; r++) acc[r * T + t] = _mm256_add_ps(acc[r * T + t], _mm256_mul_ps(x[r], y));
        }
    }
    int n_tail = (int)(n - i);
    __m256 x_tail[R], y_tail[T];
    for (int r = 0; r < R; r++) x_tail[r] = gemm_tail_floats(w[r] + (size_t)i * eb, n_tail, eb, floats);
    for (int t = 0; t < T; t++) y_tail[t] = gemm_tail_floats(a[t] + (size_t)i * eb, n_tail, eb, floats);
    for (int p = 0; p < R * T; p++) {
        float s = avx2_f32_pair_sum(acc[p]), prod[8];
        _mm256_storeu_ps(prod, _mm256_mul_ps(x_tail[p / T], y_tail[p % T]));
        for (int k = 0; k < n_tail; k++) s += prod[k];
        out[p] = s;
    }
}
static void gemm_f32_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_float_tile(n, w, a, out, sizeof(float), gemm_f32_floats);
}
static void gemm_f16_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_float_tile(n, w, a, out, sizeof(f16_t), gemm_f16_floats);
}
static void gemm_bf16_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    gemm_float_tile(n, w, a, out, sizeof(bf16_t), gemm_bf16_floats);
}

/* The tiles the table names. */
static const gemm_tile gemm_q8_0_avx2 = {gemm_q8_0_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_q4_0_avx2 = {gemm_q4_0_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_q5_0_avx2 = {gemm_q5_0_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_iq4_nl_avx2 = {gemm_iq4_nl_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_q4_1_avx2 = {gemm_q4_1_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_q5_1_avx2 = {gemm_q5_1_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_q4_0_r8_avx2 = {gemm_q4_0_r8_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_iq4_nl_r8_avx2 = {gemm_iq4_nl_r8_tile_avx2, GEMM_I8_ROWS, 4};
static const gemm_tile gemm_f32_avx2 = {gemm_f32_tile_avx2, GEMM_FLOAT_ROWS, 4};
static const gemm_tile gemm_f16_avx2 = {gemm_f16_tile_avx2, GEMM_FLOAT_ROWS, 4};
static const gemm_tile gemm_bf16_avx2 = {gemm_bf16_tile_avx2, GEMM_FLOAT_ROWS, 4};

/* ---- The IQ1 tiles are their row kernels' (avx2_iq1_s_tile, avx2_iq1_m_tile) at more rows and
 * tokens: each row's 32 grid lookups per super-block then serve every token of the tile.  IQ1_S
 * keeps one 256-bit sum per pair: 2 rows × 8 tokens on 32 registers, 1 × 8 on 16.  IQ1_M keeps
 * two: 1 × 4 with AVX2, and 1 × 8 in the AVX-512 form, whose two 512-bit sums per pair fill 16
 * of its 32 registers.  (On the development machine, 256 × 2048 weights times 64 tokens against
 * the row kernels: IQ1_S 2.6x, 2.5x with AVX2 alone; IQ1_M 2.3x, 2.1x.  4 × 4 for IQ1_S and
 * 2 × 4 or 2 × 8 for IQ1_M were slower.) */
#define GEMM_IQ1_ROWS (HALDA_AVX512VNNI ? 2 : 1)
static void gemm_iq1_s_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    avx2_iq1_s_tile(GEMM_IQ1_ROWS, 8, n, w, a, out);
}
__attribute__((unused)) static void gemm_iq1_m_tile_avx2(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    avx2_iq1_m_tile(1, 4, n, w, a, out, avx2_iq1_m_sums);
}
static const gemm_tile gemm_iq1_s_avx2 = {gemm_iq1_s_tile_avx2, GEMM_IQ1_ROWS, 8};
__attribute__((unused)) static const gemm_tile gemm_iq1_m_avx2 = {gemm_iq1_m_tile_avx2, 1, 4};
#if HALDA_AVX512
static void gemm_iq1_m_tile_avx512(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    avx2_iq1_m_tile(1, 8, n, w, a, out, avx512_iq1_m_sums);
}
static const gemm_tile gemm_iq1_m_avx512 = {gemm_iq1_m_tile_avx512, 1, 8};
#endif
#endif

#if HALDA_NEON
/* NEON: the tiles the row kernels are written as (see "Tiles" at the NEON helpers), in shapes
 * that fill the 32 registers of 128 bits.  Two F32 accumulators a pair in the plain orders of
 * the 32-element types and of Q6_K, so 2 rows × 4 tokens (16 registers of accumulators, 4 of
 * decoded weights, 2 of scale products, a token's block, the products) — for the 32-element
 * types 1 × 4 without the dot product extension, whose widening products need 3 more
 * registers each (counted: 22-24 instructions per pair and block at 1 × 4, 31-32 at 2 × 4,
 * where the accumulators spill); one accumulator lane a pair in the repacked order of Q4_0 and
 * IQ4_NL, so 4 × 4 there.  Q4_K's repacked tile holds 2 × 4 pairs' integer
 * sums while 2 rows' nibbles of 64 elements (8 registers) meet a token's 4 registers of
 * activations.  Tokens are the wider side: decoding a weight block (nibbles, 5th or 6th bits,
 * Q4_K's packed scales) costs more than loading an activation block.  Where the registers run
 * short (Q6_K's 16 F32 accumulators), those are the ones to wait in memory: each is touched
 * once per lane group and super-block, against 16 dot products. */
enum { NEON_GEMM_ROWS = 2, NEON_GEMM_TOKS = 4, NEON_GEMM_R8_ROWS = 4, NEON_GEMM_I8_ROWS = HALDA_NEON_DOTPROD ? 2 : 1 };
static void gemm_q8_0_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_i8_tile(n, w, a, out, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS, sizeof(block_q8_0), neon_q8_0_bytes);
}
static void gemm_q4_0_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_i8_tile(n, w, a, out, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS, sizeof(block_q4_0), neon_q4_0_bytes);
}
static void gemm_q5_0_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_i8_tile(n, w, a, out, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS, sizeof(block_q5_0), neon_q5_0_bytes);
}
static void gemm_iq4_nl_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_i8_tile(n, w, a, out, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS, sizeof(block_iq4_nl), neon_iq4_nl_bytes);
}
static void gemm_q4_0_r8_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_i8_r8_tile(n, w, a, out, NEON_GEMM_R8_ROWS, NEON_GEMM_TOKS, sizeof(block_q4_0), neon_q4_0_bytes);
}
static void gemm_iq4_nl_r8_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_i8_r8_tile(n, w, a, out, NEON_GEMM_R8_ROWS, NEON_GEMM_TOKS, sizeof(block_iq4_nl), neon_iq4_nl_bytes);
}
static void gemm_q4_K_r8_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_q4_K_r8_tile(n, w, a, out, NEON_GEMM_ROWS, NEON_GEMM_TOKS);
}
static void gemm_q6_K_tile_neon(int64_t n, const uint8_t *const *w, const uint8_t *const *a, float *out)
{
    neon_q6_K_tile(n, w, a, out, NEON_GEMM_ROWS, NEON_GEMM_TOKS);
}
static const gemm_tile gemm_q8_0_neon = {gemm_q8_0_tile_neon, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS};
static const gemm_tile gemm_q4_0_neon = {gemm_q4_0_tile_neon, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS};
static const gemm_tile gemm_q5_0_neon = {gemm_q5_0_tile_neon, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS};
static const gemm_tile gemm_iq4_nl_neon = {gemm_iq4_nl_tile_neon, NEON_GEMM_I8_ROWS, NEON_GEMM_TOKS};
static const gemm_tile gemm_q4_0_r8_neon = {gemm_q4_0_r8_tile_neon, NEON_GEMM_R8_ROWS, NEON_GEMM_TOKS};
static const gemm_tile gemm_iq4_nl_r8_neon = {gemm_iq4_nl_r8_tile_neon, NEON_GEMM_R8_ROWS, NEON_GEMM_TOKS};
static const gemm_tile gemm_q4_K_r8_neon = {gemm_q4_K_r8_tile_neon, NEON_GEMM_ROWS, NEON_GEMM_TOKS};
static const gemm_tile gemm_q6_K_neon = {gemm_q6_K_tile_neon, NEON_GEMM_ROWS, NEON_GEMM_TOKS};
#endif

/* ---- The table ------------------------------------------------------------------------------ */

/* The kernels the table names: the SIMD twin where this build has one, chosen once at compile
 * time; the scalar function otherwise.  Q8_0, Q8_1 and Q8_K are the activation quantizers. */
#if HALDA_AVX2
#define VEC_DOT_F32 vec_dot_f32_avx2
#define VEC_DOT_BF16 vec_dot_bf16_avx2
#define VEC_DOT_Q8_0 vec_dot_q8_0_avx2
#define VEC_DOT_Q4_0 vec_dot_q4_0_avx2
#define VEC_DOT_Q4_0_R8 vec_dot_q4_0_r8_avx2
#define VEC_DOT_Q4_0_R8_8ROWS vec_dot_q4_0_r8_8rows_avx2
#define VEC_DOT_Q4_1 vec_dot_q4_1_avx2
#define VEC_DOT_Q5_0 vec_dot_q5_0_avx2
#define VEC_DOT_Q5_1 vec_dot_q5_1_avx2
#define VEC_DOT_IQ4_NL vec_dot_iq4_nl_avx2
#define VEC_DOT_IQ4_NL_R8 vec_dot_iq4_nl_r8_avx2
#define VEC_DOT_IQ4_NL_R8_8ROWS vec_dot_iq4_nl_r8_8rows_avx2
#define VEC_DOT_Q2_K vec_dot_q2_K_avx2
#define VEC_DOT_Q2_K_R8 vec_dot_q2_K_r8_avx2
#define VEC_DOT_Q3_K vec_dot_q3_K_avx2
#define VEC_DOT_Q4_K vec_dot_q4_K_avx2
#define VEC_DOT_Q4_K_R8 vec_dot_q4_K_r8_avx2
#define VEC_DOT_Q5_K vec_dot_q5_K_avx2
#define VEC_DOT_Q6_K vec_dot_q6_K_avx2
#define VEC_DOT_IQ1_S vec_dot_iq1_s_avx2
#define VEC_DOT_IQ1_M vec_dot_iq1_m_avx2
#define QUANTIZE_Q8_0 quantize_q8_0_avx2
#define QUANTIZE_Q8_1 quantize_q8_1_avx2
#define QUANTIZE_Q8_K quantize_q8_K_avx2
#define GEMM_F32 (&gemm_f32_avx2)
#define GEMM_F16 (&gemm_f16_avx2)
#define GEMM_BF16 (&gemm_bf16_avx2)
#define GEMM_Q2_K (&gemm_q2_K_avx2)
#define GEMM_Q2_K_R8 (&gemm_q2_K_r8_avx2)
#define GEMM_Q3_K (&gemm_q3_K_avx2)
#define GEMM_Q4_K_R8 (&gemm_q4_K_r8_avx2)
#define GEMM_Q5_K (&gemm_q5_K_avx2)
#define GEMM_Q6_K (&gemm_q6_K_avx2)
#define GEMM_Q8_0 (&gemm_q8_0_avx2)
#define GEMM_IQ1_S (&gemm_iq1_s_avx2)
#define GEMM_IQ1_M (&gemm_iq1_m_avx2)
#define GEMM_Q4_0 (&gemm_q4_0_avx2)
#define GEMM_Q4_0_R8 (&gemm_q4_0_r8_avx2)
#define GEMM_Q5_0 (&gemm_q5_0_avx2)
#define GEMM_Q4_1 (&gemm_q4_1_avx2)
#define GEMM_Q5_1 (&gemm_q5_1_avx2)
#define GEMM_IQ4_NL (&gemm_iq4_nl_avx2)
#define GEMM_IQ4_NL_R8 (&gemm_iq4_nl_r8_avx2)
#if HALDA_F16C
#define VEC_DOT_F16 vec_dot_f16_avx2
#else
#define VEC_DOT_F16 vec_dot_f16
#endif
#elif HALDA_NEON
#define VEC_DOT_F32 vec_dot_f32_neon
#define VEC_DOT_F16 vec_dot_f16_neon
#define VEC_DOT_BF16 vec_dot_bf16_neon
#define VEC_DOT_Q8_0 vec_dot_q8_0_neon
#define VEC_DOT_Q4_0 vec_dot_q4_0_neon
#define VEC_DOT_Q4_0_R8 vec_dot_q4_0_r8_neon
#define VEC_DOT_Q4_0_R8_8ROWS vec_dot_q4_0_r8_8rows_neon
#define VEC_DOT_Q4_1 vec_dot_q4_1_neon
#define VEC_DOT_Q5_0 vec_dot_q5_0_neon
#define VEC_DOT_Q5_1 vec_dot_q5_1_neon
#define VEC_DOT_IQ4_NL vec_dot_iq4_nl_neon
#define VEC_DOT_IQ4_NL_R8 vec_dot_iq4_nl_r8_neon
#define VEC_DOT_IQ4_NL_R8_8ROWS vec_dot_iq4_nl_r8_8rows_neon
#define VEC_DOT_Q2_K vec_dot_q2_K_neon
#define VEC_DOT_Q2_K_R8 vec_dot_q2_K_r8_neon
#define VEC_DOT_Q3_K vec_dot_q3_K_neon
#define VEC_DOT_Q4_K vec_dot_q4_K_neon
#define VEC_DOT_Q4_K_R8 vec_dot_q4_K_r8_neon
#define VEC_DOT_Q5_K vec_dot_q5_K_neon
#define VEC_DOT_Q6_K vec_dot_q6_K_neon
#define VEC_DOT_IQ1_S vec_dot_iq1_s_neon
#define VEC_DOT_IQ1_M vec_dot_iq1_m_neon
#define QUANTIZE_Q8_0 quantize_q8_0_neon
#define QUANTIZE_Q8_1 quantize_q8_1_neon
#define QUANTIZE_Q8_K quantize_q8_K_neon
#define GEMM_F32 NULL
#define GEMM_F16 NULL
#define GEMM_BF16 NULL
#define GEMM_Q2_K NULL
#define GEMM_Q2_K_R8 NULL
#define GEMM_Q3_K NULL
#define GEMM_Q4_K_R8 (&gemm_q4_K_r8_neon)
#define GEMM_Q5_K NULL
#define GEMM_Q6_K (&gemm_q6_K_neon)
#define GEMM_Q8_0 (&gemm_q8_0_neon)
#define GEMM_Q4_0 (&gemm_q4_0_neon)
#define GEMM_Q4_0_R8 (&gemm_q4_0_r8_neon)
#define GEMM_Q5_0 (&gemm_q5_0_neon)
#define GEMM_Q4_1 NULL
#define GEMM_Q5_1 NULL
#define GEMM_IQ4_NL (&gemm_iq4_nl_neon)
#define GEMM_IQ4_NL_R8 (&gemm_iq4_nl_r8_neon)
#define GEMM_IQ1_S NULL
#define GEMM_IQ1_M NULL
#else
#define VEC_DOT_F32 vec_dot_f32
#define VEC_DOT_F16 vec_dot_f16
#define VEC_DOT_BF16 vec_dot_bf16
#define VEC_DOT_Q8_0 vec_dot_q8_0
#define VEC_DOT_Q4_0 vec_dot_q4_0
#define VEC_DOT_Q4_0_R8 vec_dot_q4_0_r8
#define VEC_DOT_Q4_0_R8_8ROWS NULL
#define VEC_DOT_Q4_1 vec_dot_q4_1
#define VEC_DOT_Q5_0 vec_dot_q5_0
#define VEC_DOT_Q5_1 vec_dot_q5_1
#define VEC_DOT_IQ4_NL vec_dot_iq4_nl
#define VEC_DOT_IQ4_NL_R8 vec_dot_iq4_nl_r8
#define VEC_DOT_IQ4_NL_R8_8ROWS NULL
#define VEC_DOT_Q2_K vec_dot_q2_K
#define VEC_DOT_Q2_K_R8 vec_dot_q2_K_r8
#define VEC_DOT_Q3_K vec_dot_q3_K
#define VEC_DOT_Q4_K vec_dot_q4_K
#define VEC_DOT_Q4_K_R8 vec_dot_q4_K_r8
#define VEC_DOT_Q5_K vec_dot_q5_K
#define VEC_DOT_Q6_K vec_dot_q6_K
#define VEC_DOT_IQ1_S vec_dot_iq1_s
#define VEC_DOT_IQ1_M vec_dot_iq1_m
#define QUANTIZE_Q8_0 quantize_q8_0
#define QUANTIZE_Q8_1 quantize_q8_1
#define QUANTIZE_Q8_K quantize_q8_K
#define GEMM_F32 NULL
#define GEMM_F16 NULL
#define GEMM_BF16 NULL
#define GEMM_Q2_K NULL
#define GEMM_Q2_K_R8 NULL
#define GEMM_Q3_K NULL
#define GEMM_Q4_K_R8 NULL
#define GEMM_Q5_K NULL
#define GEMM_Q6_K NULL
#define GEMM_Q8_0 NULL
#define GEMM_Q4_0 NULL
#define GEMM_Q4_0_R8 NULL
#define GEMM_Q5_0 NULL
#define GEMM_Q4_1 NULL
#define GEMM_Q5_1 NULL
#define GEMM_IQ4_NL NULL
#define GEMM_IQ4_NL_R8 NULL
#define GEMM_IQ1_S NULL
#define GEMM_IQ1_M NULL
#endif

#if HALDA_F16C
#define DEQUANTIZE_F16 dequantize_f16_f16c
#else
#define DEQUANTIZE_F16 dequantize_f16
#endif
/* AVX-512 builds replace the AVX2 kernels that have a 512-bit twin. */
#if HALDA_AVX512
#undef VEC_DOT_Q4_K
#define VEC_DOT_Q4_K vec_dot_q4_K_avx512
#undef VEC_DOT_Q4_K_R8
#define VEC_DOT_Q4_K_R8 vec_dot_q4_K_r8_avx512
#undef VEC_DOT_Q6_K
#define VEC_DOT_Q6_K vec_dot_q6_K_avx512
#undef QUANTIZE_Q8_K
#define QUANTIZE_Q8_K quantize_q8_K_avx512
#define VEC_DOT_Q4_K_R8_8ROWS vec_dot_q4_K_r8_8rows_avx512
#undef VEC_DOT_Q2_K
#define VEC_DOT_Q2_K vec_dot_q2_K_avx512
#undef VEC_DOT_Q2_K_R8
#define VEC_DOT_Q2_K_R8 vec_dot_q2_K_r8_avx512
#undef VEC_DOT_Q3_K
#define VEC_DOT_Q3_K vec_dot_q3_K_avx512
#undef VEC_DOT_Q5_K
#define VEC_DOT_Q5_K vec_dot_q5_K_avx512
#undef VEC_DOT_IQ1_M
#define VEC_DOT_IQ1_M vec_dot_iq1_m_avx512
#undef GEMM_IQ1_M
#define GEMM_IQ1_M (&gemm_iq1_m_avx512)
#define VEC_DOT_Q6_K_R8 vec_dot_q6_K_avx512 /* Q6_K has one order: "repacked" only to reach the 8-row kernel */
#define VEC_DOT_Q6_K_R8_8ROWS vec_dot_q6_K_8rows_avx512
#if HALDA_AVX512VNNI
#undef VEC_DOT_IQ4_NL_R8_8ROWS
#define VEC_DOT_IQ4_NL_R8_8ROWS vec_dot_iq4_nl_r8_8rows_avx512
#endif
#define VEC_DOT_Q8_0_R8 vec_dot_q8_0_avx2 /* so do Q8_0, Q4_1, Q5_0, Q5_1, F16 and BF16 */
#define VEC_DOT_F16_R8 vec_dot_f16_avx2
#define VEC_DOT_F16_R8_8ROWS vec_dot_f16_8rows_avx512
#define VEC_DOT_BF16_R8 vec_dot_bf16_avx2
#define VEC_DOT_BF16_R8_8ROWS vec_dot_bf16_8rows_avx512
#define VEC_DOT_Q8_0_R8_8ROWS vec_dot_q8_0_8rows_avx512
#define VEC_DOT_Q4_1_R8 vec_dot_q4_1_avx2
#define VEC_DOT_Q4_1_R8_8ROWS vec_dot_q4_1_8rows_avx512
#define VEC_DOT_Q5_0_R8 vec_dot_q5_0_avx2
#define VEC_DOT_Q5_0_R8_8ROWS vec_dot_q5_0_8rows_avx512
#define VEC_DOT_Q5_1_R8 vec_dot_q5_1_avx2
#define VEC_DOT_Q5_1_R8_8ROWS vec_dot_q5_1_8rows_avx512
#else
#define VEC_DOT_Q8_0_R8 NULL
#define VEC_DOT_Q8_0_R8_8ROWS NULL
#define VEC_DOT_F16_R8 NULL
#define VEC_DOT_F16_R8_8ROWS NULL
#define VEC_DOT_BF16_R8 NULL
#define VEC_DOT_BF16_R8_8ROWS NULL
#define VEC_DOT_Q4_1_R8 NULL
#define VEC_DOT_Q4_1_R8_8ROWS NULL
#define VEC_DOT_Q5_0_R8 NULL
#define VEC_DOT_Q5_0_R8_8ROWS NULL
#define VEC_DOT_Q5_1_R8 NULL
#define VEC_DOT_Q5_1_R8_8ROWS NULL
#define VEC_DOT_Q4_K_R8_8ROWS NULL
#define VEC_DOT_Q6_K_R8 NULL
#define VEC_DOT_Q6_K_R8_8ROWS NULL
#endif

static const type_traits type_table[TYPE_COUNT] = {
    [TYPE_F32] = {"f32", 1, 4, TYPE_F32, dequantize_f32, quantize_f32, VEC_DOT_F32, NULL, NULL, GEMM_F32, NULL},
    [TYPE_F16] = {"f16", 1, 2, TYPE_F16, DEQUANTIZE_F16, quantize_f16, VEC_DOT_F16, VEC_DOT_F16_R8, VEC_DOT_F16_R8_8ROWS, GEMM_F16, GEMM_F16},
    [TYPE_BF16] = {"bf16", 1, 2, TYPE_BF16, dequantize_bf16, quantize_bf16, VEC_DOT_BF16, VEC_DOT_BF16_R8, VEC_DOT_BF16_R8_8ROWS, GEMM_BF16, GEMM_BF16},
    [TYPE_Q4_0] = {"q4_0", QK, sizeof(block_q4_0), TYPE_Q8_0, dequantize_q4_0, quantize_q4_0, VEC_DOT_Q4_0, VEC_DOT_Q4_0_R8,
                   VEC_DOT_Q4_0_R8_8ROWS, GEMM_Q4_0, GEMM_Q4_0_R8},
    [TYPE_Q4_1] = {"q4_1", QK, sizeof(block_q4_1), TYPE_Q8_1, dequantize_q4_1, quantize_q4_1, VEC_DOT_Q4_1, VEC_DOT_Q4_1_R8,
                   VEC_DOT_Q4_1_R8_8ROWS, GEMM_Q4_1, GEMM_Q4_1},
    [TYPE_Q5_0] = {"q5_0", QK, sizeof(block_q5_0), TYPE_Q8_0, dequantize_q5_0, quantize_q5_0, VEC_DOT_Q5_0, VEC_DOT_Q5_0_R8,
                   VEC_DOT_Q5_0_R8_8ROWS, GEMM_Q5_0, GEMM_Q5_0},
    [TYPE_Q5_1] = {"q5_1", QK, sizeof(block_q5_1), TYPE_Q8_1, dequantize_q5_1, quantize_q5_1, VEC_DOT_Q5_1, VEC_DOT_Q5_1_R8,
                   VEC_DOT_Q5_1_R8_8ROWS, GEMM_Q5_1, GEMM_Q5_1},
    [TYPE_Q8_0] = {"q8_0", QK, sizeof(block_q8_0), TYPE_Q8_0, dequantize_q8_0, QUANTIZE_Q8_0, VEC_DOT_Q8_0, VEC_DOT_Q8_0_R8,
                   VEC_DOT_Q8_0_R8_8ROWS, GEMM_Q8_0, GEMM_Q8_0},
    [TYPE_Q8_1] = {"q8_1", QK, sizeof(block_q8_1), TYPE_Q8_1, NULL, QUANTIZE_Q8_1, NULL, NULL, NULL, NULL, NULL},
    [TYPE_Q8_K] = {"q8_k", QK_K, sizeof(block_q8_K), TYPE_Q8_K, dequantize_q8_K, QUANTIZE_Q8_K, NULL, NULL, NULL, NULL, NULL},
    [TYPE_Q2_K] = {"q2_k", QK_K, sizeof(block_q2_K), TYPE_Q8_K, dequantize_q2_K, quantize_q2_K, VEC_DOT_Q2_K, VEC_DOT_Q2_K_R8, NULL, GEMM_Q2_K,
                   GEMM_Q2_K_R8},
    [TYPE_Q3_K] = {"q3_k", QK_K, sizeof(block_q3_K), TYPE_Q8_K, dequantize_q3_K, quantize_q3_K, VEC_DOT_Q3_K, NULL, NULL, GEMM_Q3_K, NULL},
    [TYPE_Q4_K] = {"q4_k", QK_K, sizeof(block_q4_K), TYPE_Q8_K, dequantize_q4_K, quantize_q4_K, VEC_DOT_Q4_K, VEC_DOT_Q4_K_R8,
                   VEC_DOT_Q4_K_R8_8ROWS, NULL, GEMM_Q4_K_R8},
    /* No repacked order for Q5_K: llama.cpp repacks it only on ARM, never on x86 where the
     * references were made; the plain order matches them bit for bit (tiny-qwen2-q5_k_m). */
    [TYPE_Q5_K] = {"q5_k", QK_K, sizeof(block_q5_K), TYPE_Q8_K, dequantize_q5_K, quantize_q5_K, VEC_DOT_Q5_K, NULL, NULL, GEMM_Q5_K, NULL},
    [TYPE_Q6_K] = {"q6_k", QK_K, sizeof(block_q6_K), TYPE_Q8_K, dequantize_q6_K, quantize_q6_K, VEC_DOT_Q6_K, VEC_DOT_Q6_K_R8,
                   VEC_DOT_Q6_K_R8_8ROWS, GEMM_Q6_K, GEMM_Q6_K},
    [TYPE_IQ1_S] = {"iq1_s", QK_K, sizeof(block_iq1_s), TYPE_Q8_K, dequantize_iq1_s, quantize_iq1_s, VEC_DOT_IQ1_S, NULL, NULL, GEMM_IQ1_S, NULL},
    [TYPE_IQ1_M] = {"iq1_m", QK_K, sizeof(block_iq1_m), TYPE_Q8_K, dequantize_iq1_m, quantize_iq1_m, VEC_DOT_IQ1_M, NULL, NULL, GEMM_IQ1_M, NULL},
    [TYPE_IQ4_NL] = {"iq4_nl", QK, sizeof(block_iq4_nl), TYPE_Q8_0, dequantize_iq4_nl, quantize_iq4_nl, VEC_DOT_IQ4_NL, VEC_DOT_IQ4_NL_R8,
                     VEC_DOT_IQ4_NL_R8_8ROWS, GEMM_IQ4_NL, GEMM_IQ4_NL_R8},
    /* Known to GGUF; geometry recorded so files parse and are refused by name, not garbled. */
    [TYPE_IQ2_XXS] = {"iq2_xxs", QK_K, 66, TYPE_Q8_K, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_IQ2_XS] = {"iq2_xs", QK_K, 74, TYPE_Q8_K, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_IQ3_XXS] = {"iq3_xxs", QK_K, 98, TYPE_Q8_K, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_IQ3_S] = {"iq3_s", QK_K, 110, TYPE_Q8_K, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_IQ2_S] = {"iq2_s", QK_K, 82, TYPE_Q8_K, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_IQ4_XS] = {"iq4_xs", QK_K, 136, TYPE_Q8_K, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_I8] = {"i8", 1, 1, TYPE_I8, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_I16] = {"i16", 1, 2, TYPE_I16, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_I32] = {"i32", 1, 4, TYPE_I32, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_I64] = {"i64", 1, 8, TYPE_I64, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    [TYPE_F64] = {"f64", 1, 8, TYPE_F64, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
};

/* The table row of a type id, or NULL for ids that are unknown (gaps 4, 5 and beyond). */
static const type_traits *type_info(int type)
{
    if (type < 0 || type >= TYPE_COUNT || !type_table[type].name) return NULL;
    return &type_table[type];
}

/* The dot product for a weight matrix of `rows` rows (see vec_dot_r8 and the section's head). */
static vec_dot_fn type_vec_dot(const type_traits *t, int64_t rows)
{
    return rows % 8 == 0 && t->vec_dot_r8 ? t->vec_dot_r8 : t->vec_dot;
}
/* The 8-row kernel where type_vec_dot picks the repacked order and this build has one, else NULL. */
static vec_dot_8rows_fn type_vec_dot_8rows(const type_traits *t, int64_t rows)
{
    return rows % 8 == 0 && t->vec_dot_r8 ? t->vec_dot_r8_8rows : NULL;
}

/* The matrix-matrix tile in the order type_vec_dot picks for `rows` rows, or NULL where this
 * build has none (matmul then takes the pairs one by one). */
static const gemm_tile *type_gemm(const type_traits *t, int64_t rows)
{
    return rows % 8 == 0 && t->vec_dot_r8 ? t->gemm_r8 : t->gemm;
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
 * outside [0, file size) is ever read.  Only the header is mapped here; tensor data is mapped by
 * the model (section 7), window by window, and never copied.
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
    uint64_t file_offset;    /* where its bytes start in the file (data_offset + offset) */
} gguf_tensor;

/* The header is parsed in place in the mapping; the tensor data is not mapped here (a model
 * maps the parts it uses, section 7). */
typedef struct {
    file_map map;            /* the open file; map.data holds at least [0, data_offset) */
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    char *strings;           /* one allocation holding every key and tensor name */
    uint64_t alignment;
    uint64_t data_offset;    /* where tensor data starts in the file */
} gguf_file;

/* A read cursor over the mapping that refuses to move past its end.  The mapping may hold only
 * the start of the file: a read that needs bytes the file has but the mapping lacks sets
 * short_map, and the caller maps more and parses again. */
typedef struct {
    const uint8_t *p, *end;  /* end: the end of the mapped bytes */
    herr *e;
    bool bad;
    bool short_map;          /* stopped at the end of the mapping, not of the file */
    const uint8_t *base;     /* start of the file, for offsets in messages */
    uint64_t file_size;
} gguf_cursor;

/* Bytes of the file (not just of the mapping) after the cursor: the bound for sanity checks on
 * counts, which must not depend on how much happens to be mapped. */
static uint64_t cursor_file_left(const gguf_cursor *c) { return c->file_size - (uint64_t)(c->p - c->base); }

static bool cursor_need(gguf_cursor *c, uint64_t n, const char *what)
{
    if (c->bad) return false;
    if ((uint64_t)(c->end - c->p) < n) {
        if (cursor_file_left(c) >= n) {
            c->short_map = true;
            herr_set(c->e, "the header is longer than its mapping");
        } else
            herr_set(c->e, "truncated file: %s needs %" PRIu64 " bytes at offset %" PRIu64 ", %" PRIu64 " remain", what, n,
                     (uint64_t)(c->p - c->base), cursor_file_left(c));
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
    if (n > cursor_file_left(c) / 8) {
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

/* A failed read: -2 when it ran off the mapping but not off the file (map more), else -1. */
static int gguf_fail(const gguf_cursor *c) { return c->short_map ? -2 : -1; }

/* Parse an already mapped GGUF image (the fuzzer calls this directly, with map.size ==
 * map.file_size).  Returns 0; -1 with the reason in e; or -2 when the mapping ends before the
 * header and its padding to the data section do: map more and call again.  On failure f holds
 * nothing to free beyond gguf_close. */
static int gguf_parse(gguf_file *f, herr *e)
{
    xfree(f->kv), xfree(f->tensors), xfree(f->strings); /* from a parse of a shorter mapping */
    f->kv = NULL, f->tensors = NULL, f->strings = NULL;
    gguf_cursor c = {f->map.data, f->map.data + f->map.size, e, false, false, f->map.data, f->map.file_size};
    if (f->map.size < 4 && f->map.file_size > f->map.size) return -2;
    if (f->map.size < 4 || memcmp(c.p, "GGUF", 4) != 0) {
        herr_set(e, "not a GGUF file (bad magic)");
        return -1;
    }
    c.p += 4;
    f->version = cursor_u32(&c, "version");
    if (c.bad) return gguf_fail(&c);
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
    if (c.bad) return gguf_fail(&c);
    /* every key-value takes >= 12 bytes, every tensor description >= 24 */
    uint64_t left = cursor_file_left(&c);
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
        if (!cursor_str(&c, &klen, "metadata key") && c.bad) return gguf_fail(&c);
        if (klen == 0 || klen > GGUF_MAX_NAME) {
            herr_set(e, "metadata key %" PRIu64 " has length %" PRIu64 " (1..%d allowed)", i, klen, GGUF_MAX_NAME);
            return -1;
        }
        str_bytes += klen + 1;
        int type = (int)cursor_u32(&c, "metadata type");
        if (c.bad || !gguf_skip_value(&c, type, 0)) return gguf_fail(&c);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        uint64_t nlen;
        if (!cursor_str(&c, &nlen, "tensor name") && c.bad) return gguf_fail(&c);
        if (nlen == 0 || nlen > GGUF_MAX_NAME) {
            herr_set(e, "tensor %" PRIu64 " has a name of length %" PRIu64 " (1..%d allowed)", i, nlen, GGUF_MAX_NAME);
            return -1;
        }
        str_bytes += nlen + 1;
        uint32_t n_dims = cursor_u32(&c, "tensor dimension count");
        if (c.bad) return gguf_fail(&c);
        if (n_dims == 0 || n_dims > GGUF_MAX_DIMS) {
            herr_set(e, "tensor %" PRIu64 " has %u dimensions (1..%d allowed)", i, n_dims, GGUF_MAX_DIMS);
            return -1;
        }
        if (!cursor_need(&c, 8ull * n_dims + 4 + 8, "tensor description")) return gguf_fail(&c);
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
    /* The data section starts at the next multiple of the alignment.  The model's identity
     * hashes [0, data_offset), so the mapping must hold it (a file with no tensors may end
     * before). */
    uint64_t header_end = (uint64_t)(c.p - f->map.data);
    f->data_offset = (header_end + f->alignment - 1) / f->alignment * f->alignment;
    if (f->data_offset > f->map.size && f->map.size < f->map.file_size) return -2;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t start, end;
        if (!add_u64(f->data_offset, t->offset, &start) || !add_u64(start, t->bytes, &end) || end > f->map.file_size) {
            herr_set(e, "tensor '%s' (%" PRIu64 " bytes at data offset %" PRIu64 ") extends past the end of the file (%" PRIu64 " bytes)",
                     t->name, t->bytes, t->offset, f->map.file_size);
            return -1;
        }
        t->file_offset = start;
    }
    return 0;
}

/* Bytes of the header a model's identity covers: [0, data_offset), or the whole file when it
 * ends first (a file without tensors).  Always mapped (see gguf_parse). */
static uint64_t gguf_header_bytes(const gguf_file *f) { return f->data_offset < f->map.size ? f->data_offset : f->map.size; }

/* Open a GGUF file and parse its header.  Only the header stays mapped: the first MiB is
 * mapped, and four times more while the header goes on (a vocabulary of 150k tokens takes a
 * few MiB); at the end the mapping is cut back to the pages of [0, data_offset). */
static int gguf_open(gguf_file *f, const char *path, herr *e)
{
    memset(f, 0, sizeof *f);
    if (file_map_open(&f->map, path, 1u << 20, e) != 0) return -1;
    int rc;
    while ((rc = gguf_parse(f, e)) == -2) /* ends: the mapping grows to the whole file at most */
        if (file_map_resize(&f->map, f->map.size * 4, e)) break;
    uint64_t page = platform_page_bytes(), keep = (gguf_header_bytes(f) + page - 1) / page * page;
    if (rc == 0 && keep < f->map.size) { /* give back the data pages mapped while looking for the header's end */
        munmap((void *)(f->map.data + keep), (size_t)(f->map.size - keep));
        f->map.size = keep;
    }
    if (rc != 0) {
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

/* A weight tensor: its bytes stay in the file, mapped read-only (model_map). */
typedef struct {
    const void *data; /* in a mapping; NULL when the tensor is absent (optional tensors) or this
                         device does not map it (a layer another device runs) */
    int type;
    int64_t ne[2];    /* ne[0] = row length (input width), ne[1] = rows (output width) */
    size_t row_bytes;
    const char *name; /* NULL when absent */
    uint64_t file_offset, bytes; /* where its bytes are in the file */
} tensor;

typedef struct {
    tensor attn_norm, wq, wk, wv, wo, bq, bk, bv; /* norms and biases are F32 vectors */
    tensor ffn_norm, w_gate, w_up, w_down;
    uint64_t file_begin, file_end; /* byte extent of this layer's tensors in the file */
} layer_weights;

typedef struct tok_vocab tok_vocab; /* section 8 */

/* Which parts of the file a model maps.  The header is always mapped (metadata, vocabulary,
 * the tensor table).  Each run of consecutive held layers — a window — gets one mapping of its
 * extent in the file; the head's tensors (token embedding, output norm, output matrix) get one
 * mapping each on the device that embeds and samples.  Tensors of everything else keep
 * data == NULL, so a layer used where it is not held fails loudly instead of paging in weights
 * the plan gave to another device. */
typedef struct {
    file_region *regions;   /* [n_regions] the mappings of tensor data */
    int n_regions;
    bool head;              /* token embedding, output norm and output matrix are mapped */
    int n_held;             /* layers mapped */
} model_maps;

struct halda_model {
    gguf_file file;
    model_hparams hp;
    tensor tok_embd;    /* n_vocab rows of n_embd */
    tensor output_norm; /* F32 [n_embd] */
    tensor output;      /* n_vocab rows of n_embd; == tok_embd when the embeddings are tied */
    tensor rope_freqs_t; /* F32 [n_rot/2], optional; every device maps it */
    const float *rope_freqs; /* rope_freqs_t.data: per-frequency divisors (Llama 3.1 scaling) or NULL */
    layer_weights *layers;
    tok_vocab *vocab;
    uint64_t weight_bytes;
    model_maps maps;
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
    t->type = g->type;
    t->ne[0] = cols;
    t->ne[1] = want_rows;
    t->row_bytes = type_row_bytes(g->type, cols);
    t->name = g->name;
    t->file_offset = g->file_offset, t->bytes = g->bytes;
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

/* Find and check every tensor; record each layer's byte extent in the file.  Nothing is mapped
 * yet (model_map does that). */
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
    if (!m->output.name) m->output = m->tok_embd; /* tied embeddings */
    if (model_tensor(m, &m->rope_freqs_t, "rope_freqs.weight", hp->n_rot / 2, 0, false, e)) return -1;
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
            uint64_t b = g->file_offset;
            if (b < L->file_begin) L->file_begin = b;
            if (b + g->bytes > L->file_end) L->file_end = b + g->bytes;
        }
    }
    return 0;
}

/* ---- Mapping the parts a device uses --------------------------------------------------------- */

/* The tensors of one layer, into out[16]; returns their count. */
static int model_layer_tensors(layer_weights *L, tensor **out)
{
    tensor *t[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq, &L->bk, &L->bv, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
    int n = (int)(sizeof t / sizeof t[0]);
    for (int i = 0; i < n; i++) out[i] = t[i];
    return n;
}

/* Point t into the mapping r (which must cover it), or leave it unmapped. */
static void model_bind(tensor *t, const file_region *r)
{
    t->data = t->name && r ? r->data + (t->file_offset - r->off) : NULL;
}

/* Drop every mapping of tensor data; every tensor's data becomes NULL.  The header stays. */
static void model_unmap(halda_model *m)
{
    model_maps *mm = &m->maps;
    for (int i = 0; i < mm->n_regions; i++) file_region_unmap(&mm->regions[i]);
    xfree(mm->regions);
    memset(mm, 0, sizeof *mm);
    for (int l = 0; m->layers && l < m->hp.n_layer; l++) {
        tensor *t[16];
        int n = model_layer_tensors(&m->layers[l], t);
        for (int i = 0; i < n; i++) t[i]->data = NULL;
    }
    m->tok_embd.data = m->output_norm.data = m->output.data = m->rope_freqs_t.data = NULL;
    m->rope_freqs = NULL;
}

/* Map one tensor on its own (the head's tensors, rope_freqs) and bind it. */
static int model_map_tensor(halda_model *m, tensor *t, herr *e)
{
    if (!t->name) return 0;
    file_region *r = &m->maps.regions[m->maps.n_regions];
    if (file_region_map(&m->file.map, t->file_offset, t->bytes, r, e)) return -1;
    m->maps.n_regions++;
    model_bind(t, r);
    return 0;
}

/* Map what this device uses: the layers marked in held (NULL: all), one mapping per run of
 * consecutive held layers, and with head the token embedding, output norm and output matrix.
 * rope_freqs, when present, is mapped on every device (each one rotates its own layers'
 * queries and keys).  Earlier mappings are dropped first.  On failure nothing stays mapped. */
static int model_map(halda_model *m, const bool *held, bool head, herr *e)
{
    model_unmap(m);
    int L = m->hp.n_layer;
    model_maps *mm = &m->maps;
    mm->regions = xcalloc((size_t)L + 4, sizeof *mm->regions); /* at most L runs, and 4 lone tensors */
    if (!mm->regions) return herr_set(e, "out of memory"), -1;
    for (int a = 0; a < L;) {
        if (held && !held[a]) {
            a++;
            continue;
        }
        int b = a;
        uint64_t begin = UINT64_MAX, end = 0;
        for (; b < L && (!held || held[b]); b++) {
            if (m->layers[b].file_begin < begin) begin = m->layers[b].file_begin;
            if (m->layers[b].file_end > end) end = m->layers[b].file_end;
        }
        file_region *r = &mm->regions[mm->n_regions];
        herr me;
        if (file_region_map(&m->file.map, begin, end - begin, r, &me)) {
            herr_set(e, "layers %d..%d: %s", a, b - 1, me.msg);
            goto fail;
        }
        mm->n_regions++;
        for (int l = a; l < b; l++) {
            tensor *t[16];
            int n = model_layer_tensors(&m->layers[l], t);
            for (int i = 0; i < n; i++) model_bind(t[i], r);
        }
        mm->n_held += b - a;
        a = b;
    }
    if (model_map_tensor(m, &m->rope_freqs_t, e)) goto fail;
    m->rope_freqs = m->rope_freqs_t.data;
    if (head) {
        bool tied = m->output.name == m->tok_embd.name;
        if (model_map_tensor(m, &m->tok_embd, e) || model_map_tensor(m, &m->output_norm, e)) goto fail;
        if (tied) m->output.data = m->tok_embd.data;
        else if (model_map_tensor(m, &m->output, e)) goto fail;
        mm->head = true;
    }
    return 0;
fail:
    model_unmap(m);
    return -1;
}

/* Bytes of the file this device has mapped: the header and every region. */
static uint64_t model_mapped_bytes(const halda_model *m)
{
    uint64_t n = m->file.map.size;
    for (int i = 0; i < m->maps.n_regions; i++) n += m->maps.regions[i].size;
    return n;
}

/* The mapping that holds [off, off + len) of the file, or NULL. */
static const file_region *model_region_of(const halda_model *m, uint64_t off, uint64_t len)
{
    for (int i = 0; i < m->maps.n_regions; i++) {
        const file_region *r = &m->maps.regions[i];
        if (off >= r->off && off + len <= r->off + r->size) return r;
    }
    return NULL;
}

/* Open a model without mapping any tensor data: the header, hyper-parameters, tensor table and
 * vocabulary.  A ring device maps its windows once it knows them (model_map). */
static halda_model *model_open(const char *path, herr *e)
{
    halda_model *m = xcalloc(1, sizeof *m);
    if (!m) return herr_set(e, "out of memory"), NULL;
    if (gguf_open(&m->file, path, e) != 0) goto fail;
    if (model_read_hparams(m, e) || model_bind_tensors(m, e)) goto fail_named;
    if (!(m->vocab = tok_vocab_load(&m->file, e))) goto fail_named;
    return m;
fail_named: {
    char reason[sizeof e->msg];
    snprintf(reason, sizeof reason, "%s", e->msg);
    herr_set(e, "%s: %s", path, reason);
}
fail:
    halda_model_free(m);
    return NULL;
}

/* A model for one device that runs it all: every layer and the head's tensors mapped. */
halda_model *halda_model_load(const char *path, char *err, size_t err_len)
{
    herr e = {{0}};
    halda_model *m = model_open(path, &e);
    if (m && model_map(m, NULL, true, &e)) {
        char reason[sizeof e.msg];
        snprintf(reason, sizeof reason, "%s", e.msg);
        herr_set(&e, "%s: %s", path, reason);
        halda_model_free(m);
        m = NULL;
    }
    if (!m && err && err_len) snprintf(err, err_len, "%s", e.msg);
    return m;
}

void halda_model_free(halda_model *m)
{
    if (!m) return;
    model_unmap(m);
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
 * For the layers this device holds, n_seq sequence slots and n_ctx positions, the keys and
 * values of every kv head, F32 or F16.  A ring device holds k windows of layers (one per cycle
 * around the ring), so layers map to cache slots through `slot`; a single device holds all of
 * them.  Layout of k and v: [slot][seq][pos][kv_dim], so one head's keys for consecutive
 * positions are kv_dim elements apart. */

typedef struct {
    int n_layer;     /* layers of the model */
    int *slot;       /* [n_layer] cache slot of each layer, -1 when this device does not hold it */
    int n_slots;     /* layers held */
    int n_seq, n_ctx, kv_dim;
    int type;        /* HALDA_KV_F32, HALDA_KV_F16 or HALDA_KV_Q8_0 */
    int gtype;       /* the same as a weight type: TYPE_F32, TYPE_F16 or TYPE_Q8_0 */
    size_t row;      /* bytes of one position's kv_dim values */
    uint8_t *k, *v;  /* owned */
    int *n_pos;      /* [n_seq] positions currently stored per sequence */
} kv_cache;

static int kv_gtype(int kv_type) { return kv_type == HALDA_KV_F32 ? TYPE_F32 : kv_type == HALDA_KV_Q8_0 ? TYPE_Q8_0 : TYPE_F16; }

/* In 64 bits: on a 32-bit machine a long context's cache can exceed size_t (see kv_cache_init). */
static uint64_t kv_cache_bytes(int n_layers, int n_seq, int n_ctx, int kv_dim, int type)
{
    return 2 * (uint64_t)n_layers * (uint64_t)n_seq * (uint64_t)n_ctx * (uint64_t)type_row_bytes(kv_gtype(type), kv_dim);
}

static void kv_cache_free(kv_cache *c)
{
    xfree(c->k), xfree(c->v), xfree(c->n_pos), xfree(c->slot);
    memset(c, 0, sizeof *c);
}

/* held[l] says whether this device holds layer l (NULL: all layers). */
static int kv_cache_init(kv_cache *c, int n_layer, const bool *held, int n_seq, int n_ctx, int kv_dim, int type, herr *e)
{
    memset(c, 0, sizeof *c);
    c->n_layer = n_layer, c->n_seq = n_seq, c->n_ctx = n_ctx, c->kv_dim = kv_dim, c->type = type;
    c->gtype = kv_gtype(type);
    c->row = type_row_bytes(c->gtype, kv_dim);
    c->slot = xmalloc((size_t)n_layer * sizeof *c->slot);
    if (!c->slot) return herr_set(e, "out of memory"), -1;
    for (int l = 0; l < n_layer; l++) c->slot[l] = !held || held[l] ? c->n_slots++ : -1;
    uint64_t half = kv_cache_bytes(c->n_slots, n_seq, n_ctx, kv_dim, type) / 2;
    if (half >= SIZE_MAX / 2) {
        kv_cache_free(c);
        return herr_set(e, "a %.1f GiB KV cache does not fit in this machine's address space (use a shorter context)",
                        (double)half / (1u << 29)), -1;
    }
    c->k = xcalloc(1, (size_t)half);
    c->v = xcalloc(1, (size_t)half);
    c->n_pos = xcalloc((size_t)n_seq, sizeof *c->n_pos);
    if (!c->k || !c->v || !c->n_pos) {
        kv_cache_free(c);
        return herr_set(e, "out of memory for a %" PRIu64 " MiB KV cache", 2 * half >> 20), -1;
    }
    return 0;
}
/* Address of the key (or value) vector of (layer, seq, pos); the layer must be held. */
static inline uint8_t *kv_at(const kv_cache *c, uint8_t *base, int layer, int seq, int pos)
{
    size_t idx = (((size_t)c->slot[layer] * (size_t)c->n_seq + (size_t)seq) * (size_t)c->n_ctx + (size_t)pos);
    return base + idx * c->row;
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
    float *att_tmp;  /* [n_threads][att_tmp_floats(head_dim)] a converted query, a value row, value-sum slots */
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
static uint64_t act_row_bytes_max(int64_t n) { return (uint64_t)n * 4 + (uint64_t)(n / QK + 1) * 8; }

/* Per-thread attention scratch, in floats: a converted query (hd + 16), a dequantized value row
 * (hd) and the 64 slots of the F32 cache's value sum (64 · hd). */
static int64_t att_tmp_floats(int hd) { return 66 * (int64_t)hd + 16; }

/* Bytes of a context's scratch arena: every [n_batch × width] buffer of the forward pass, the
 * per-thread attention rows, the logits and the converted activations.  The profiler reports
 * this as the compute buffer a device needs, so both call this one function. */
static uint64_t context_arena_bytes(const model_hparams *hp, int n_ctx, int n_batch, int n_threads)
{
    int64_t B = n_batch, q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t widest = hp->n_embd > hp->n_ff ? hp->n_embd : hp->n_ff;
    if (q_dim > widest) widest = q_dim;
    uint64_t floats = (uint64_t)(B * hp->n_embd * 2 + B * q_dim * 2 + B * kv_dim * 2 + B * hp->n_ff * 2 + B * hp->n_rot +
                                 (int64_t)n_threads * n_ctx + hp->n_vocab + 2 * B + (int64_t)n_threads * att_tmp_floats(hp->head_dim));
    return floats * sizeof(float) + (uint64_t)B * act_row_bytes_max(widest) + 64;
}

/* A context for the layers marked in held (NULL: every layer).  A ring device holds only its
 * windows; its KV cache and forward passes cover just those layers. */
static halda_context *context_new(halda_model *m, const halda_context_params *p, const bool *held, char *err, size_t err_len)
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
    if (p->kv_type != HALDA_KV_F32 && p->kv_type != HALDA_KV_F16 && p->kv_type != HALDA_KV_Q8_0) {
        herr_set(&e, "unknown KV cache type %d", p->kv_type);
        goto fail;
    }
    if (p->kv_type == HALDA_KV_Q8_0 && hp->head_dim % QK) {
        herr_set(&e, "a Q8_0 KV cache needs a head size that is a multiple of %d (this model's is %d)", QK, hp->head_dim);
        goto fail;
    }
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    if (kv_cache_init(&c->kv, hp->n_layer, held, 1, c->n_ctx, (int)kv_dim, p->kv_type, &e)) goto fail;
    if (!(c->pool = pool_new(n_threads))) {
        herr_set(&e, "cannot start threads");
        goto fail;
    }
    int64_t B = c->n_batch;
    uint64_t arena_bytes = context_arena_bytes(hp, c->n_ctx, c->n_batch, c->pool->n_threads);
    if (arena_bytes >= SIZE_MAX / 2) {
        herr_set(&e, "%.1f GiB of scratch buffers do not fit in this machine's address space (use a shorter context)",
                 (double)arena_bytes / (1u << 30));
        goto fail;
    }
    c->arena_bytes = (size_t)arena_bytes;
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
    c->att_tmp = f, f += (int64_t)c->pool->n_threads * att_tmp_floats(hp->head_dim);
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

halda_context *halda_context_new(halda_model *m, const halda_context_params *p, char *err, size_t err_len)
{
    return context_new(m, p, NULL, err, err_len);
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

/* ---- llama.cpp's rounding between two quantizations ------------------------------------------ *
 * The activations are rounded to 8 bits before most matrix products, and that rounding turns a
 * one-ulp difference in what came before into a whole quantization step now and then (about one
 * value in 1e5): tiny-llama-q4_1.lily moved a logit by 3e-2 and a greedy token whose reference
 * margin is 0.038 that way.  So the F32 steps in between — RoPE, attention and SiLU — compute
 * exactly what ggml's CPU backend computes on the AVX-512 machine that made the references:
 *   - RoPE fuses one product of each rotated pair (GCC contracts ggml's a·b − c·d);
 *   - e^x in softmax and SiLU is ggml's polynomial (ggml_v_expf), not libm's expf;
 *   - F32 dot products (attention's q·k and weights·v) add in ggml_vec_dot_f32's order.
 * Each is written out below from what the arithmetic is, as scalar C.  fmaf is one instruction
 * wherever the build targets FMA hardware (x86-64-v3 and later, every AArch64); a baseline
 * x86-64 build calls libm's exact software fmaf, which makes its attention over an F32 cache
 * about 1.7x slower — the price of the same numbers on every build. */

/* e^x as ggml's vectorised expf computes it (ggml_v_expf; within about 1.5 ulp of e^x, and
 * different from libm's expf in about half of the values).  Write x = n·ln2 + b with n an
 * integer, so e^x = 2^n · e^b with |b| <= ln2/2, and e^b is a degree-5 polynomial fitted on that
 * interval (its coefficients are close to 1/k!).  Each step rounds as ggml's does:
 *   n = x·log2(e) rounded to an integer, by adding and subtracting 1.5·2^23 (the FPU rounds);
 *   b = x − n·ln2, with ln2 split in a short head and a tail so that n·ln2_head is exact;
 *   e^b = 1 + c1·b + b²·((c2 + c3·b) + b²·(c4 + c5·b)), each bracket a fused multiply-add;
 * and 2^n · e^b saturates to 0 or infinity beyond |n| > 192 (e^-inf = 0 for masked scores). */
/* 2^n as a float, for n in [-126, 127]: the exponent field alone. */
static inline float pow2_normal(int n)
{
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
/* ldexpf(p, n) for p in [0.5, 2) and |n| <= 192, without the library call (it was 1.5% of a
 * small model's generation): one rounded multiplication, like ldexpf's single rounding.  Out of
 * the normal range the power is split so that the first product is exact and only the second
 * rounds (to a subnormal, or to infinity). */
static inline float scale_pow2(float p, int n)
{
    if (n > 127) return (p * pow2_normal(127)) * pow2_normal(n - 127);
    if (n < -126) return (p * pow2_normal(n + 126)) * pow2_normal(-126);
    return p * pow2_normal(n);
}

static float expf_ggml(float x)
{
    const float shift = 0x1.8p23f, log2e = 0x1.715476p+0f, ln2_hi = 0x1.62e4p-1f, ln2_lo = 0x1.7f7d1cp-20f;
    const float c1 = 0x1.ffffecp-1f, c2 = 0x1.fffdb6p-2f, c3 = 0x1.555e66p-3f, c4 = 0x1.573e2ep-5f, c5 = 0x1.0e4020p-7f;
    float n = fmaf(x, log2e, shift) - shift;
    float b = fmaf(-n, ln2_lo, fmaf(-n, ln2_hi, x));
    float b2 = b * b;
    float p = fmaf(fmaf(fmaf(c5, b, c4), b2, fmaf(c3, b, c2)), b2, fmaf(c1, b, 1.0f));
    if (isnan(n)) return n;
    if (fabsf(n) > 192.0f) return n > 0 ? INFINITY : 0.0f;
    return scale_pow2(p, (int)n);
}

/* The sum of 16 floats as _mm512_reduce_add_ps adds them: halves, then quarters, then pairs. */
static float sum16_tree(const float *s)
{
    float h[8], q[4];
    for (int l = 0; l < 8; l++) h[l] = s[l] + s[l + 8];
    for (int l = 0; l < 4; l++) q[l] = h[l] + h[l + 4];
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* The sum of 64 accumulators, slot s = 16·j + l being ggml_vec_dot_f32's register j, lane l:
 * registers (0 + 2) + (1 + 3), then the 16 lanes as above.  acc[s] is at acc[s * stride]. */
static float sum64_tree(const float *acc, size_t stride)
{
    float lane[16];
    for (int l = 0; l < 16; l++)
        lane[l] = (acc[(size_t)l * stride] + acc[(size_t)(l + 32) * stride]) + (acc[(size_t)(l + 16) * stride] + acc[(size_t)(l + 48) * stride]);
    return sum16_tree(lane);
}

/* x · y over n floats in ggml_vec_dot_f32's order (AVX-512): element i of each whole run of 64
 * is fused-multiply-added into slot i % 64, the slots are added as sum64_tree; the leftover
 * n % 64 elements are then added one at a time, the products rounded — except the last n % 8,
 * which GCC left fused (its vectorised tail works on 16 and 8 at a time, the scalar rest fuses). */
static float dot_f32_ggml(int n, const float *x, const float *y)
{
    float acc[64] = {0};
    int n64 = n / 64 * 64, n8 = n / 8 * 8;
    for (int i = 0; i < n64; i += 64)
        for (int s = 0; s < 64; s++) acc[s] = fmaf(x[i + s], y[i + s], acc[s]);
    float sum = sum64_tree(acc, 1);
    for (int i = n64; i < n8; i++) {
        float prod = x[i] * y[i]; /* its own statement, so that no compiler fuses it into the add */
        sum += prod;
    }
    for (int i = n8; i < n; i++) sum = fmaf(x[i], y[i], sum);
    return sum;
}

/* Matrix product out[t][r] = W[r] · x[t] for n_tok rows of x.  The activations are converted
 * once to W's activation type, then threads split W's rows; each thread reads a weight row once
 * and multiplies it with every activation row (the batched-prefill reuse).
 *
 * matmul_gemm: the matrix-matrix tile for a batch of n_tok rows, or NULL: one token goes
 * through the per-row kernels, which stream the weights once at full memory speed (decode). */
static const gemm_tile *matmul_gemm(const tensor *w, int n_tok) { return n_tok > 1 ? type_gemm(type_info(w->type), w->ne[1]) : NULL; }

/* One matrix of a matmul job: out[t][r] = w[r] · act[t], its rows handed out by `rows`. */
typedef struct {
    const tensor *w;
    float *out; /* [n_tok][w->ne[1]] */
    work_counter rows;
} matmul_part;

/* A job of up to 3 matrices that take the same activations (q, k, v; gate, up): the threads
 * drain the parts' row counters in order, so one barrier ends them all and a thread that
 * finishes its share of q goes straight on to k instead of waiting for the others. */
#define MATMUL_MAX_PARTS 3
typedef struct {
    matmul_part part[MATMUL_MAX_PARTS];
    int n_part;
    const void *act; /* n_tok rows of act_row bytes */
    size_t act_row;
    int n_tok;
} matmul_job;

static void matmul_rows(const matmul_job *j, const tensor *w, float *out, int64_t r0, int64_t r1)
{
    vec_dot_fn dot = type_vec_dot(type_info(w->type), w->ne[1]);
    vec_dot_8rows_fn dot8 = type_vec_dot_8rows(type_info(w->type), w->ne[1]);
    const gemm_tile *tile = matmul_gemm(w, j->n_tok);
    int64_t rows = w->ne[1];
    if (tile) { /* a batch: tiles of rows × tokens, each weight block decoded once per tile */
        gemm_tiles(tile, w->ne[0], (const uint8_t *)w->data + (size_t)r0 * w->row_bytes, w->row_bytes, r1 - r0, j->act, j->act_row,
                   j->n_tok, out + r0, (size_t)rows);
        return;
    }
    int64_t r = r0;
    /* 8 rows at a time where the build has such a kernel (matmul makes the chunks whole groups
     * of 8); out[t][r..r+7] are adjacent, so the kernel writes them in place.  Each value is
     * still its row's vec_dot_r8, so nothing depends on how rows are grouped. */
    for (; dot8 && r + 8 <= r1; r += 8) {
        const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        for (int t = 0; t < j->n_tok; t++)
            dot8(w->ne[0], wr, w->row_bytes, (const uint8_t *)j->act + (size_t)t * j->act_row, &out[(size_t)t * (size_t)rows + (size_t)r]);
    }
    gemm_by_rows(dot, w->ne[0], (const uint8_t *)w->data + (size_t)r * w->row_bytes, w->row_bytes, r1 - r, j->act, j->act_row, j->n_tok,
                 out + r, (size_t)rows);
}

static void matmul_task(void *arg, int ith, int nth)
{
    matmul_job *j = arg;
    (void)ith, (void)nth;
    for (int p = 0; p < j->n_part; p++) {
        int64_t r0, r1;
        while (work_counter_take(&j->part[p].rows, &r0, &r1)) matmul_rows(j, j->part[p].w, j->part[p].out, r0, r1);
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

/* out[i] = w[i] · x for n matrices (n <= MATMUL_MAX_PARTS) of the same width, in one pool job
 * where their activation types agree (Q4_K_M's Q4_K and Q6_K both take Q8_K): the activations
 * are converted once and shared by every part and thread. */
static void matmul_n(halda_context *c, int n, float *const *out, const tensor *const *w, const float *x, int n_tok)
{
    for (int i = 0; i < n;) {
        int act_type = type_info(w[i]->type)->act_type;
        matmul_job j = {.n_part = 0, .act = x, .act_row = (size_t)w[i]->ne[0] * 4, .n_tok = n_tok};
        for (; i < n && j.n_part < MATMUL_MAX_PARTS && type_info(w[i]->type)->act_type == act_type; i++) {
            matmul_part *p = &j.part[j.n_part++];
            *p = (matmul_part){w[i], out[i], {0}};
            work_counter_init(&p->rows, w[i]->ne[1], c->pool->n_threads);
            if (type_vec_dot_8rows(type_info(w[i]->type), w[i]->ne[1]) || matmul_gemm(w[i], n_tok))
                p->rows.chunk = (p->rows.chunk + 7) / 8 * 8; /* whole groups of 8 rows (and whole gemm tiles) */
        }
        if (act_type != TYPE_F32) {
            j.act_row = act_convert(c, x, n_tok, j.part[0].w->ne[0], act_type);
            j.act = c->act;
        }
        pool_run(c->pool, matmul_task, &j);
    }
}

static void matmul(halda_context *c, float *out, const tensor *w, const float *x, int n_tok) { matmul_n(c, 1, &out, &w, x, n_tok); }

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

/* The rotation rounds as ggml's does: GCC compiles its a·cos − b·sin and a·sin + b·cos with
 * the first product fused (C++ contracts by default), so each new value is one fused
 * multiply-add of a with the rounded product of b.  GCC 12 at -O3 once turned the unfused
 * expressions here into vfmaddsub, fusing the other product, even with -ffp-contract=off (its
 * vectorizer's addsub pattern ignores the flag); the loop stays out of vectorization so that
 * only the fused operations written here happen. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void rope_apply(const model_hparams *hp, float *head, const float *cs)
{
    int half = hp->n_rot / 2;
    for (int i = 0; i < half; i++) {
        int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
        float x0 = head[a], x1 = head[b], cos_t = cs[2 * i], sin_t = cs[2 * i + 1];
        head[a] = fmaf(x0, cos_t, -(x1 * sin_t));
        head[b] = fmaf(x0, sin_t, x1 * cos_t);
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

/* One head's query · one cached key.  The F32 cache (what `halda eval` uses) is summed in
 * ggml_vec_dot_f32's order, as llama.cpp's references are; F16 and Q8_0 caches go through the
 * weight-type table with the query converted once per head (q_conv). */
static float kv_dot(const kv_cache *kv, const uint8_t *k, const float *q, const void *q_conv, int hd)
{
    if (kv->type == HALDA_KV_F32) return dot_f32_ggml(hd, (const float *)k, q);
    return type_info(kv->gtype)->vec_dot(hd, k, q_conv);
}

/* Softmax of w[0..n) in place, as ggml's soft_max computes it: e^(w − max) by expf_ggml, the
 * values summed 16 at a time (each group as sum16_tree in F32, the groups in double; positions
 * past n are masked, e^-inf = 0), then multiplied by the F32 reciprocal of the sum. */
static void softmax_ggml(float *w, int n)
{
    float max = -INFINITY;
    for (int p = 0; p < n; p++)
        if (w[p] > max) max = w[p];
    double sum = 0;
    for (int p0 = 0; p0 < n; p0 += 16) {
        float group[16] = {0};
        for (int p = p0; p < n && p < p0 + 16; p++) group[p - p0] = w[p] = expf_ggml(w[p] - max);
        sum += sum16_tree(group);
    }
    float inv = (float)(1.0 / sum);
    for (int p = 0; p < n; p++) w[p] *= inv;
}

/* out = Σ_p w[p] · v_p over positions 0..n-1 of one head's cached values, row p at
 * v + p · kv->row.  For the F32 cache this is llama.cpp's product of the softmax row with its
 * transposed V cache, a ggml_vec_dot_f32 over positions padded with zeros to whole runs of 64:
 * position p is fused-multiply-added into slot p % 64 (slots: 64 × hd floats of scratch) and
 * each output element is the sum64_tree of its slots.  F16 and Q8_0 rows are dequantized into
 * tmp (hd floats) and added in plain order. */
static void kv_weighted_sum(const kv_cache *kv, const uint8_t *v, const float *w, int n, float *out, float *tmp,
                            float *slots, int hd)
{
    if (kv->type == HALDA_KV_F32) {
        memset(slots, 0, 64 * (size_t)hd * sizeof *slots);
        for (int p = 0; p < n; p++) {
            const float *vf = (const float *)(v + (size_t)p * kv->row);
            float *acc = slots + (size_t)(p % 64) * (size_t)hd;
            for (int i = 0; i < hd; i++) acc[i] = fmaf(vf[i], w[p], acc[i]);
        }
        for (int i = 0; i < hd; i++) out[i] = sum64_tree(slots + i, (size_t)hd);
        return;
    }
    if (kv->type == HALDA_KV_F16) { /* the sums below, with the rows streamed through registers */
        F16_ROWS_WEIGHTED_SUM(v, kv->row, w, n, out, hd);
        return;
    }
    memset(out, 0, (size_t)hd * sizeof *out);
    for (int p = 0; p < n; p++) {
        type_info(kv->gtype)->dequantize(v + (size_t)p * kv->row, tmp, hd);
        for (int i = 0; i < hd; i++) out[i] += w[p] * tmp[i];
    }
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
    float *q_conv = c->att_tmp + (size_t)ith * (size_t)att_tmp_floats(hd), *tmp = q_conv + hd + 16, *slots = tmp + hd;
    const type_traits *kt = type_info(kv->gtype), *qt = type_info(kt->act_type);
    vec_dot_8rows_fn dot8 = kv->type != HALDA_KV_F32 && kt->vec_dot_r8 == kt->vec_dot ? kt->vec_dot_r8_8rows : NULL;
    int64_t b, e;
    (void)nth;
    while (work_counter_take(&j->tasks, &b, &e)) {
        for (int64_t task = b; task < e; task++) {
            int t = (int)(task / hp->n_head), h = (int)(task % hp->n_head), kvh = h / group;
            const float *q = c->q + (size_t)t * (size_t)(hp->n_head * hd) + (size_t)h * (size_t)hd;
            size_t head_off = type_row_bytes(kv->gtype, (int64_t)kvh * hd);
            if (kv->type != HALDA_KV_F32) qt->quantize(q, q_conv, hd);
            int n = j->pos[t] + 1, p = 0;
            const uint8_t *k0 = kv_at(kv, kv->k, j->layer, j->seq[t], 0) + head_off;
            /* Keys 8 at a time through the type's 8-row kernel where it has one and it sums in
             * vec_dot's own order (F16 and Q8_0), so each score is still kv_dot's. */
            if (dot8)
                for (; p + 8 <= n; p += 8) {
                    dot8(hd, k0 + (size_t)p * kv->row, kv->row, q_conv, w + p);
                    for (int i = p; i < p + 8; i++) w[i] *= scale;
                }
            for (; p < n; p++) w[p] = kv_dot(kv, k0 + (size_t)p * kv->row, q, q_conv, hd) * scale;
            softmax_ggml(w, n);
            float *out = c->att + (size_t)t * (size_t)(hp->n_head * hd) + (size_t)h * (size_t)hd;
            kv_weighted_sum(kv, kv_at(kv, kv->v, j->layer, j->seq[t], 0) + head_off, w, n, out, tmp, slots, hd);
        }
    }
}

static void kv_store(kv_cache *kv, uint8_t *base, int layer, int seq, int pos, const float *src)
{
    type_info(kv->gtype)->quantize(src, kv_at(kv, base, layer, seq, pos), kv->kv_dim);
}

/* gate[i] = silu(gate[i]) · up[i] over one row of n, silu(x) = x / (1 + e^-x), as ggml's
 * swiglu computes it: e^-x by expf_ggml on each whole group of 16 values (its AVX-512 loop) and by
 * libm's expf on the last n % 16 (its scalar tail). */
static void swiglu_row(float *gate, const float *up, int n)
{
    int n16 = n / 16 * 16;
    for (int i = 0; i < n16; i++) gate[i] = gate[i] / (1.0f + expf_ggml(-gate[i])) * up[i];
    for (int i = n16; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* ---- The three seams ---------------------------------------------------------------------------- */

/* x[i] = embedding row of tokens[i] (dequantized to F32). */
static int model_embed(halda_context *c, const int32_t *tokens, int n_tok, float *x)
{
    const halda_model *m = c->model;
    if (!m->tok_embd.data || !m->output.data) return herr_set(&c->err, "the token embeddings and output are not mapped on this device"), -1;
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
    if (l0 < 0 || l1 > kv->n_layer || l0 > l1) return herr_set(&c->err, "layers [%d, %d) do not exist", l0, l1), -1;
    for (int l = l0; l < l1; l++) {
        if (kv->slot[l] < 0) return herr_set(&c->err, "layer %d is not held on this device", l), -1;
        if (!m->layers[l].wq.data) return herr_set(&c->err, "layer %d's weights are not mapped on this device", l), -1;
    }
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
        matmul_n(c, 3, (float *const[]){c->q, c->k, c->v}, (const tensor *const[]){&L->wq, &L->wk, &L->wv}, c->xb, n_tok);
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
        matmul_n(c, 2, (float *const[]){c->ffn_gate, c->ffn_up}, (const tensor *const[]){&L->w_gate, &L->w_up}, c->xb, n_tok);
        for (int t = 0; t < n_tok; t++) swiglu_row(c->ffn_gate + (size_t)t * hp->n_ff, c->ffn_up + (size_t)t * hp->n_ff, hp->n_ff);
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
 * the special ids.  Two algorithms turn text into ids, chosen by tokenizer.ggml.model:
 *
 * `llama` — SentencePiece with byte fallback (SPM), Llama 1/2, Mistral, TinyStories:
 *   1. spaces become "▁" (U+2581) and, if add_space_prefix, one "▁" is put in front;
 *   2. the text starts as one symbol per UTF-8 character;
 *   3. repeatedly, the adjacent pair whose concatenation is a vocabulary piece with the highest
 *      score is merged (ties: the leftmost pair) — a heap of candidate pairs makes this
 *      O(n log n);
 *   4. each final symbol is its piece's id, or, for a character missing from the vocabulary,
 *      the byte tokens <0xXX> of its UTF-8 bytes.
 *
 * `gpt2` — byte-level BPE, Llama 3, Qwen 2/2.5, DeepSeek:
 *   1. a pre-tokenizer (tokenizer.ggml.pre names it) cuts the text into words with a regular
 *      expression published with the model; halda matches each of those expressions with a
 *      hand-written function over Unicode character classes (tables at the end of this
 *      section), so no regex engine is needed;
 *   2. every byte of a word is one symbol: the piece of the byte's GPT-2 character (GPT-2 gave
 *      each of the 256 bytes a printable character, so that " " is stored as "Ġ" and "\n" as
 *      "Ċ"; pieces are strings of those characters);
 *   3. repeatedly, the adjacent pair with the lowest rank in tokenizer.ggml.merges ("A B" lines,
 *      rank = line number) is replaced by the piece AB (ties: the leftmost pair), again with a
 *      heap;
 *   4. the symbols left are the ids.  Decoding maps every character of a piece back to its byte,
 *      so any byte string, valid UTF-8 or not, comes back exactly.
 *
 * Special tokens (control, user-defined, unknown) are cut out of the text first, longest first,
 * and emitted as themselves: user-defined ones always, control ones only when the caller asks
 * (parse_special).  Both algorithms then run on each stretch of plain text between them.
 *
 * Where this follows llama.cpp (the reference for the test vectors) and where it does not:
 * byte-level pre-tokenization follows the published regular expressions exactly, as Hugging
 * Face's tokenizers run them; invalid UTF-8 (which those tokenizers never see, and llama.cpp
 * replaces by U+FFFD) is classified like U+FFFD but kept as its own bytes, so it round-trips.
 * ============================================================================================= */

enum { TOKT_NORMAL = 1, TOKT_UNKNOWN = 2, TOKT_CONTROL = 3, TOKT_USER = 4, TOKT_UNUSED = 5, TOKT_BYTE = 6 };
enum { TOK_SPM = 1, TOK_BPE = 2 };
/* Byte-level BPE pre-tokenizers, by tokenizer.ggml.pre (see tok_pre_names). */
enum { TOK_PRE_NONE, TOK_PRE_LLAMA3, TOK_PRE_QWEN2, TOK_PRE_DEEPSEEK_LLM };
/* Chat template families (section 8's last part). */
enum { CHAT_NONE, CHAT_LLAMA2, CHAT_LLAMA3, CHAT_CHATML, CHAT_DEEPSEEK_R1 };

#define TOK_MAX_EOG 16        /* end-of-generation ids kept per vocabulary */
#define TOK_MAX_PIECE 4096    /* longest token text accepted (the GGUF reader caps nothing) */

/* One BPE merge in the open-addressing table of merges, keyed by the pair of ids. */
typedef struct {
    int32_t left, right; /* the pair's ids; left = -1 marks an empty slot */
    int32_t rank;        /* line number in tokenizer.ggml.merges: lower merges first */
    int32_t merged;      /* id of the concatenated piece */
} bpe_merge;

struct tok_vocab {
    int kind;          /* TOK_SPM or TOK_BPE */
    int pre;           /* TOK_PRE_* (byte-level BPE only) */
    int n;             /* vocabulary size */
    const char **text; /* [n] NUL-terminated piece texts (in `arena`) */
    uint32_t *len;     /* [n] their lengths in bytes */
    float *score;      /* [n] merge priority (higher merges first; SPM only) */
    uint8_t *type;     /* [n] TOKT_* */
    int32_t *hash;     /* open-addressing table of ids by text, hash_cap slots, -1 = empty */
    uint32_t hash_cap;
    int32_t byte_token[256]; /* SPM: id of <0xXX>; BPE: id of the byte's GPT-2 character; or -1 */
    bpe_merge *merge;  /* BPE merges by pair, merge_cap slots (a power of two) */
    uint32_t merge_cap;
    int n_merge;
    int32_t *special;  /* ids of control / user-defined / unknown tokens, longest text first */
    int n_special;
    /* Special tokens by first byte: the distinct lengths of the special texts that start with
     * byte b are special_len[special_len_at[b] .. special_len_at[b + 1]). */
    uint32_t *special_len;
    uint32_t special_len_at[257];
    int32_t bos, eos, unk, eot, eom; /* -1 when absent */
    int32_t eog[TOK_MAX_EOG];        /* every id that ends generation (eos, eot, <|im_end|>, ...) */
    int n_eog;
    bool add_bos, add_eos, add_space_prefix;
    bool ignore_merges; /* a word that is a whole piece is emitted as is (Llama 3) */
    bool clean_spaces;  /* detokenizing removes the space before , . ! ? (Llama 3) */
    int chat;           /* CHAT_* family of tokenizer.chat_template */
    bool chat_think;    /* the template opens assistant turns with <think> (QwQ, DeepSeek-R1) */
    char *chat_system;  /* ChatML: the system prompt used when none is given, or NULL */
    char *chat_date;    /* Llama 3.1+: the "Today Date" of the system header ("": today), or NULL */
    char *arena;
};

static uint32_t tok_hash_more(uint32_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u; /* FNV-1a */
    return h;
}
static uint32_t tok_hash(const char *s, size_t n) { return tok_hash_more(2166136261u, s, n); }

/* Id of the piece whose text is a followed by b, or -1 (two parts, so merges need no copy). */
static int32_t tok_find2(const tok_vocab *v, const char *a, size_t na, const char *b, size_t nb)
{
    uint32_t h = tok_hash_more(tok_hash(a, na), b, nb);
    for (uint32_t i = h & (v->hash_cap - 1);; i = (i + 1) & (v->hash_cap - 1)) {
        int32_t id = v->hash[i];
        if (id < 0) return -1;
        if (v->len[id] == na + nb && !memcmp(v->text[id], a, na) && !memcmp(v->text[id] + na, b, nb)) return id;
    }
}
/* Id of the piece with exactly these bytes, or -1. */
static int32_t tok_find(const tok_vocab *v, const char *s, size_t n) { return tok_find2(v, s, n, "", 0); }

static void tok_vocab_free(tok_vocab *v)
{
    if (!v) return;
    xfree(v->text), xfree(v->len), xfree(v->score), xfree(v->type), xfree(v->hash), xfree(v->merge);
    xfree(v->special), xfree(v->special_len), xfree(v->arena), xfree(v->chat_system), xfree(v->chat_date);
    xfree(v);
}

/* ---- UTF-8 --------------------------------------------------------------------------------- */

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

/* How many bytes at the end of s[0..n) start a UTF-8 character whose last bytes are missing:
 * a lead byte and fewer continuation bytes than it announces.  A stream printed token by token
 * holds these back, since a token can end inside a character.  Invalid bytes are not held. */
static size_t utf8_partial_tail(const char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t b = (uint8_t)s[n - k];
        if ((b & 0xc0) == 0x80) continue; /* a continuation byte: its lead byte is further back */
        return b >= 0xc0 && (size_t)utf8_len(b) > k ? k : 0;
    }
    return 0;
}

/* The code point of the valid sequence of l bytes at s (l from utf8_valid_len). */
static uint32_t utf8_decode(const uint8_t *s, int l)
{
    uint32_t cp = l == 1 ? s[0] : l == 2 ? s[0] & 0x1fu : l == 3 ? s[0] & 0x0fu : s[0] & 0x07u;
    for (int i = 1; i < l; i++) cp = cp << 6 | (s[i] & 0x3fu);
    return cp;
}

/* Write code point cp (<= U+10FFFF) as UTF-8 into out (4 bytes of room); returns its length. */
static int utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12), out[1] = (char)(0x80 | (cp >> 6 & 0x3f)), out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18), out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f)), out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- GPT-2's bytes as characters -------------------------------------------------------------
 * Byte-level vocabularies store byte b as the character with code point b when that character
 * is printable (! .. ~, ¡ .. ¬, ® .. ÿ: 188 bytes), and the 68 other bytes (controls, space,
 * DEL, the C1 block, NBSP, soft hyphen) as U+0100, U+0101, ... in increasing byte order. */

static bool gpt2_printable(uint32_t c) { return (c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff); }

static uint32_t gpt2_char_of_byte(uint8_t b)
{
    if (gpt2_printable(b)) return b;
    if (b <= 0x20) return 0x100u + b;                /* 33 bytes: 0x00 .. 0x20 */
    if (b >= 0x7f && b <= 0xa0) return 0x121u + (b - 0x7fu); /* 34 bytes: 0x7f .. 0xa0 */
    return 0x143;                                    /* 0xad, the last one */
}

/* The byte a GPT-2 character stands for, or -1 for any other character. */
static int gpt2_byte_of_char(uint32_t c)
{
    if (gpt2_printable(c)) return (int)c;
    if (c < 0x100 || c > 0x143) return -1;
    uint32_t k = c - 0x100;
    return k < 33 ? (int)k : k < 67 ? (int)(0x7f + k - 33) : 0xad;
}

/* ---- Loading ----------------------------------------------------------------------------------
 * TRUST BOUNDARY: the metadata arrays were bounds-checked by the GGUF parser (every string lies
 * inside the file); here their types, counts, lengths and every id are checked before use. */

/* The token texts, copied into one arena (the file may be closed after loading). */
static int tok_load_texts(tok_vocab *v, const gguf_file *f, herr *e)
{
    const gguf_kv *tk = gguf_find(f, "tokenizer.ggml.tokens");
    if (!tk || tk->type != GGUF_ARRAY || tk->arr_type != GGUF_STRING)
        return herr_set(e, "metadata tokenizer.ggml.tokens is missing or not an array of strings"), -1;
    if (tk->arr_n < 4 || tk->arr_n > (1u << 24)) return herr_set(e, "vocabulary of %" PRIu64 " tokens is out of range", tk->arr_n), -1;
    v->n = (int)tk->arr_n;
    const uint8_t *p = tk->value;
    uint64_t bytes = 0;
    for (int i = 0; i < v->n; i++) {
        uint64_t l = read_le(p, 8);
        if (l > TOK_MAX_PIECE) return herr_set(e, "token %d is %" PRIu64 " bytes long (at most %d)", i, l, TOK_MAX_PIECE), -1;
        bytes += l + 1;
        p += 8 + l;
    }
    v->text = xcalloc((size_t)v->n, sizeof *v->text);
    v->len = xcalloc((size_t)v->n, sizeof *v->len);
    v->score = xcalloc((size_t)v->n, sizeof *v->score);
    v->type = xcalloc((size_t)v->n, 1);
    v->arena = xmalloc((size_t)bytes);
    v->special = xcalloc((size_t)v->n, sizeof *v->special);
    if (!v->text || !v->len || !v->score || !v->type || !v->arena || !v->special) return herr_set(e, "out of memory for the vocabulary"), -1;
    char *a = v->arena;
    p = tk->value;
    for (int i = 0; i < v->n; i++) {
        uint64_t l = read_le(p, 8);
        memcpy(a, p + 8, (size_t)l);
        a[l] = 0;
        v->text[i] = a, v->len[i] = (uint32_t)l, v->type[i] = TOKT_NORMAL;
        a += l + 1;
        p += 8 + l;
    }
    return 0;
}

/* tokenizer.ggml.scores and .token_type, both optional (an unknown type counts as normal). */
static int tok_load_attrs(tok_vocab *v, const gguf_file *f, herr *e)
{
    const gguf_kv *sc = gguf_find(f, "tokenizer.ggml.scores");
    if (sc) {
        if (sc->type != GGUF_ARRAY || sc->arr_type != GGUF_F32 || sc->arr_n != (uint64_t)v->n)
            return herr_set(e, "tokenizer.ggml.scores must be %d f32 values", v->n), -1;
        for (int i = 0; i < v->n; i++) v->score[i] = f32_from_bits((uint32_t)read_le(sc->value + 4 * i, 4));
    }
    const gguf_kv *ty = gguf_find(f, "tokenizer.ggml.token_type");
    if (ty) {
        if (ty->type != GGUF_ARRAY || (ty->arr_type != GGUF_I32 && ty->arr_type != GGUF_U32) || ty->arr_n != (uint64_t)v->n)
            return herr_set(e, "tokenizer.ggml.token_type must be %d i32 values", v->n), -1;
        for (int i = 0; i < v->n; i++) {
            uint32_t t = (uint32_t)read_le(ty->value + 4 * i, 4);
            v->type[i] = (uint8_t)(t >= 1 && t <= 6 ? t : TOKT_NORMAL);
        }
    }
    return 0;
}

/* The text -> id hash table: later duplicates win, as in llama.cpp's text -> id map. */
static int tok_index_texts(tok_vocab *v, herr *e)
{
    v->hash_cap = 1;
    while (v->hash_cap < 2u * (uint32_t)v->n) v->hash_cap <<= 1;
    if (!(v->hash = xmalloc(v->hash_cap * sizeof *v->hash))) return herr_set(e, "out of memory for the vocabulary"), -1;
    memset(v->hash, 0xff, v->hash_cap * sizeof *v->hash);
    for (int i = 0; i < v->n; i++) {
        uint32_t s = tok_hash(v->text[i], v->len[i]) & (v->hash_cap - 1);
        while (v->hash[s] >= 0 && !(v->len[v->hash[s]] == v->len[i] && !memcmp(v->text[v->hash[s]], v->text[i], v->len[i])))
            s = (s + 1) & (v->hash_cap - 1);
        v->hash[s] = i;
    }
    return 0;
}

static uint32_t bpe_pair_hash(int32_t a, int32_t b) { return ((uint32_t)a * 0x9e3779b1u) ^ ((uint32_t)b * 0x85ebca77u); }

/* The merge of the pair (a, b), or NULL. */
static const bpe_merge *bpe_find(const tok_vocab *v, int32_t a, int32_t b)
{
    if (a < 0 || b < 0 || v->n_merge == 0) return NULL;
    for (uint32_t i = bpe_pair_hash(a, b) & (v->merge_cap - 1);; i = (i + 1) & (v->merge_cap - 1)) {
        const bpe_merge *m = &v->merge[i];
        if (m->left < 0) return NULL;
        if (m->left == a && m->right == b) return m;
    }
}

/* tokenizer.ggml.merges: "A B" per line, split at the first space after the first byte (A may
 * itself be a space in vocabularies that are not byte-level).  A merge whose parts or result are
 * not pieces of the vocabulary can never apply to symbols that are pieces, so it is dropped
 * (Hugging Face refuses such vocabularies); a repeated pair keeps its first, lowest rank. */
static int tok_load_merges(tok_vocab *v, const gguf_file *f, herr *e)
{
    const gguf_kv *mk = gguf_find(f, "tokenizer.ggml.merges");
    if (!mk || mk->type != GGUF_ARRAY || mk->arr_type != GGUF_STRING)
        return herr_set(e, "metadata tokenizer.ggml.merges is missing or not an array of strings"), -1;
    if (mk->arr_n > (1u << 24)) return herr_set(e, "%" PRIu64 " merges is too many", mk->arr_n), -1;
    v->merge_cap = 1;
    while (v->merge_cap < 2 * mk->arr_n) v->merge_cap <<= 1;
    v->merge = xmalloc(v->merge_cap * sizeof *v->merge);
    if (!v->merge) return herr_set(e, "out of memory for %" PRIu64 " merges", mk->arr_n), -1;
    memset(v->merge, 0xff, v->merge_cap * sizeof *v->merge);
    const uint8_t *p = mk->value;
    for (uint64_t r = 0; r < mk->arr_n; r++) {
        uint64_t l = read_le(p, 8);
        const char *s = (const char *)p + 8;
        p += 8 + l;
        const char *sp = l > 1 ? memchr(s + 1, ' ', (size_t)l - 1) : NULL;
        if (!sp) continue;
        size_t na = (size_t)(sp - s), nb = (size_t)l - na - 1;
        int32_t a = tok_find(v, s, na), b = tok_find(v, sp + 1, nb), ab = tok_find2(v, s, na, sp + 1, nb);
        if (a < 0 || b < 0 || ab < 0 || bpe_find(v, a, b)) continue;
        uint32_t i = bpe_pair_hash(a, b) & (v->merge_cap - 1);
        while (v->merge[i].left >= 0) i = (i + 1) & (v->merge_cap - 1);
        v->merge[i] = (bpe_merge){a, b, (int32_t)r, ab};
        v->n_merge++;
    }
    return 0;
}

/* What tokenizer.ggml.pre names are understood, and the settings each implies (as llama.cpp). */
static const struct {
    const char *name;
    int pre;
    bool ignore_merges, clean_spaces, add_bos;
} tok_pre_names[] = {
    {"llama-bpe", TOK_PRE_LLAMA3, true, true, true},  {"llama3", TOK_PRE_LLAMA3, true, true, true},
    {"llama-v3", TOK_PRE_LLAMA3, true, true, true},   {"qwen2", TOK_PRE_QWEN2, false, false, false},
    {"deepseek-r1-qwen", TOK_PRE_QWEN2, false, false, false},
    {"deepseek-llm", TOK_PRE_DEEPSEEK_LLM, false, false, false},
};

/* tokenizer.ggml.model and .pre: which algorithm, and the defaults that depend on it. */
static int tok_load_kind(tok_vocab *v, const gguf_file *f, herr *e)
{
    uint64_t mlen, plen = 0;
    const char *model = gguf_get_str(f, "tokenizer.ggml.model", &mlen);
    if (!model) return herr_set(e, "metadata tokenizer.ggml.model is missing"), -1;
    int ml = (int)(mlen < 32 ? mlen : 32);
    if (mlen == 5 && !memcmp(model, "llama", 5)) {
        v->kind = TOK_SPM;
        v->bos = 1, v->eos = 2, v->unk = 0;
        v->add_bos = true, v->add_space_prefix = true;
        return 0;
    }
    if (!(mlen == 4 && !memcmp(model, "gpt2", 4)))
        return herr_set(e, "tokenizer '%.*s' is not supported (halda reads SentencePiece 'llama' and byte-level BPE 'gpt2' vocabularies)", ml, model), -1;
    v->kind = TOK_BPE;
    v->bos = v->eos = v->unk = -1; /* llama.cpp falls back to id 11, a GPT-NeoX leftover: none is safer */
    const char *pre = gguf_get_str(f, "tokenizer.ggml.pre", &plen);
    for (size_t i = 0; pre && i < sizeof tok_pre_names / sizeof tok_pre_names[0]; i++) {
        if (strlen(tok_pre_names[i].name) != plen || memcmp(tok_pre_names[i].name, pre, (size_t)plen)) continue;
        v->pre = tok_pre_names[i].pre;
        v->ignore_merges = tok_pre_names[i].ignore_merges;
        v->clean_spaces = tok_pre_names[i].clean_spaces;
        v->add_bos = tok_pre_names[i].add_bos;
        return 0;
    }
    return herr_set(e, "BPE pre-tokenizer '%.*s' is not supported (halda knows llama-bpe, qwen2, deepseek-r1-qwen, deepseek-llm)",
                    pre ? (int)(plen < 48 ? plen : 48) : 6, pre ? pre : "(none)"),
           -1;
}

/* Special ids from the metadata: an id out of range is ignored (the default stays), as llama.cpp
 * does; add_bos_token and friends override the per-model defaults. */
static void tok_load_ids(tok_vocab *v, const gguf_file *f)
{
    struct { const char *key; int32_t *id; } ids[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos}, {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.unknown_token_id", &v->unk}, {"tokenizer.ggml.eot_token_id", &v->eot},
        {"tokenizer.ggml.eom_token_id", &v->eom}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int64_t id;
        if (*ids[i].id >= v->n) *ids[i].id = -1;
        if (gguf_get_int(f, ids[i].key, &id) && id >= 0 && id < v->n) *ids[i].id = (int32_t)id;
    }
    int64_t flag;
    if (gguf_get_int(f, "tokenizer.ggml.add_bos_token", &flag)) v->add_bos = flag != 0;
    if (gguf_get_int(f, "tokenizer.ggml.add_eos_token", &flag)) v->add_eos = flag != 0;
    if (gguf_get_int(f, "tokenizer.ggml.add_space_prefix", &flag)) v->add_space_prefix = flag != 0;
    if (v->bos < 0) v->add_bos = false;
    if (v->eos < 0) v->add_eos = false;
}

/* End of generation.  GGUF files name eos and sometimes eot/eom; chat models end their turns
 * with other tokens too (<|eot_id|>, <|im_end|>, ...), which llama.cpp recognises by their text
 * (its issue 9606).  These texts are the ones its list shares with the families halda runs.
 * In a byte-level vocabulary such a token is made a control token if the file did not say so,
 * which hides it from output (SPM vocabularies are left as halda always read them). */
static const char *const tok_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>", /* <｜end▁of▁sentence｜>, DeepSeek */
};
static const char *const tok_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "<|end_of_text|>", "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", /* Qwen's fill-in-the-middle separators */
};

static void tok_add_eog(tok_vocab *v, int32_t id)
{
    if (id < 0 || v->n_eog == TOK_MAX_EOG) return;
    for (int i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return;
    v->eog[v->n_eog++] = id;
}

static void tok_find_eog(tok_vocab *v)
{
    size_t n_eot = sizeof tok_eot_texts / sizeof tok_eot_texts[0], n_eog = sizeof tok_eog_texts / sizeof tok_eog_texts[0];
    for (size_t i = 0; v->eot < 0 && i < n_eot; i++) v->eot = tok_find(v, tok_eot_texts[i], strlen(tok_eot_texts[i]));
    if (v->eom < 0) v->eom = tok_find(v, "<|eom_id|>", 10);
    tok_add_eog(v, v->eos), tok_add_eog(v, v->eot), tok_add_eog(v, v->eom);
    for (size_t i = 0; i < n_eog; i++) tok_add_eog(v, tok_find(v, tok_eog_texts[i], strlen(tok_eog_texts[i])));
    for (int i = 0; i < v->n_eog; i++)
        if (v->type[v->eog[i]] != TOKT_CONTROL && v->kind == TOK_BPE) v->type[v->eog[i]] = TOKT_CONTROL;
}

typedef struct {
    uint32_t len;
    int32_t id;
} tok_len_id;
static int tok_len_id_cmp(const void *a, const void *b) /* longer first, then lower id */
{
    const tok_len_id *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}
static int tok_byte_len_cmp(const void *a, const void *b) /* by first byte, then length */
{
    const tok_len_id *x = a, *y = b; /* here id holds the first byte */
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->len > y->len) - (x->len < y->len);
}

/* The special tokens, longest first (the order they are cut out of text), and for each first
 * byte the distinct lengths of the special texts that start with it (to find them quickly). */
static int tok_index_specials(tok_vocab *v, herr *e)
{
    tok_len_id *s = xmalloc((size_t)v->n * sizeof *s);
    if (!s) return herr_set(e, "out of memory for the special tokens"), -1;
    int n = 0;
    for (int i = 0; i < v->n; i++)
        if ((v->type[i] == TOKT_CONTROL || v->type[i] == TOKT_USER || v->type[i] == TOKT_UNKNOWN) && v->len[i] > 0)
            s[n++] = (tok_len_id){v->len[i], i};
    qsort(s, (size_t)n, sizeof *s, tok_len_id_cmp);
    for (int i = 0; i < n; i++) v->special[i] = s[i].id;
    v->n_special = n;
    for (int i = 0; i < n; i++) s[i].id = (uint8_t)v->text[s[i].id][0];
    qsort(s, (size_t)n, sizeof *s, tok_byte_len_cmp);
    v->special_len = xmalloc((size_t)(n ? n : 1) * sizeof *v->special_len);
    if (!v->special_len) return xfree(s), herr_set(e, "out of memory for the special tokens"), -1;
    int k = 0;
    for (int b = 0, i = 0; b < 256; b++) {
        v->special_len_at[b] = (uint32_t)k;
        for (; i < n && s[i].id == b; i++)
            if (k == (int)v->special_len_at[b] || v->special_len[k - 1] != s[i].len) v->special_len[k++] = s[i].len;
    }
    v->special_len_at[256] = (uint32_t)k;
    xfree(s);
    return 0;
}

/* The byte symbols: SPM's <0xXX> pieces, or BPE's GPT-2 characters. */
static void tok_index_bytes(tok_vocab *v)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        if (v->kind == TOK_SPM) {
            snprintf(name, sizeof name, "<0x%02X>", b);
            v->byte_token[b] = tok_find(v, name, 6);
        } else {
            v->byte_token[b] = tok_find(v, name, (size_t)utf8_encode(gpt2_char_of_byte((uint8_t)b), name));
        }
    }
}

static int chat_load(tok_vocab *v, const gguf_file *f, herr *e);

/* Read the vocabulary from the metadata (see the trust-boundary note above). */
static tok_vocab *tok_vocab_load(const gguf_file *f, herr *e)
{
    tok_vocab *v = xcalloc(1, sizeof *v);
    if (!v) return herr_set(e, "out of memory"), NULL;
    v->bos = v->eos = v->unk = v->eot = v->eom = -1;
    if (tok_load_kind(v, f, e) || tok_load_texts(v, f, e) || tok_load_attrs(v, f, e) || tok_index_texts(v, e)) goto fail;
    if (v->kind == TOK_BPE && tok_load_merges(v, f, e)) goto fail;
    tok_load_ids(v, f);
    tok_find_eog(v);
    tok_index_bytes(v);
    if (tok_index_specials(v, e) || chat_load(v, f, e)) goto fail;
    return v;
fail:
    tok_vocab_free(v);
    return NULL;
}

/* Only the vocabulary of a GGUF file (vocabulary-only files have no tensors); the file is closed
 * again.  The caller frees the result with tok_vocab_free. */
static tok_vocab *tok_vocab_open(const char *path, herr *e)
{
    gguf_file f;
    if (gguf_open(&f, path, e) != 0) return NULL;
    tok_vocab *v = tok_vocab_load(&f, e);
    if (!v) {
        char reason[sizeof e->msg];
        snprintf(reason, sizeof reason, "%s", e->msg);
        herr_set(e, "%s: %s", path, reason);
    }
    gguf_close(&f);
    return v;
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

/* Make *p hold at least `need` elements of `size` bytes (growing by doubling); false when out of
 * memory.  Scratch buffers of one tokenize call grow through this. */
static bool tok_grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = xmalloc(c * size);
    if (!q) return false;
    if (*p) memcpy(q, *p, *cap * size);
    xfree(*p);
    *p = q, *cap = c;
    return true;
}

/* ---- Unicode character classes ----------------------------------------------------------------
 * The pre-tokenizers' regular expressions use \p{L} (letters), \p{N} (numbers) and \s (white
 * space) — the general categories and the White_Space property of the Unicode standard.  The
 * tables that answer them are generated (see "Unicode tables" at the end of this section). */

enum { UC_C, UC_L, UC_M, UC_N, UC_P, UC_S, UC_Z }; /* other, letter, mark, number, punct., symbol, separator */
#define TOK_CP_INVALID 0x110000u /* a byte that does not start valid UTF-8 */

static int unicode_class(uint32_t cp);
static bool unicode_is_space(uint32_t cp);
static const uint8_t unicode_ascii_class[128];
static bool ds_is_letter(uint32_t cp); /* deepseek-llm's classes */
static bool ds_is_punct(uint32_t cp);
static bool ds_is_cjk(uint32_t cp);

/* One character of the text: its code point, length in bytes and class.  A byte that is not the
 * start of valid UTF-8 is one character by itself, of the class of U+FFFD (a symbol), which is
 * what llama.cpp turns it into; its byte is kept. */
typedef struct {
    uint32_t cp;
    int len;
    int cls;    /* UC_* */
    bool space; /* \s */
} tok_char;

static tok_char tok_char_at(const uint8_t *s, size_t end, size_t i)
{
    tok_char c;
    if (s[i] < 0x80) {
        uint8_t b = s[i];
        return (tok_char){b, 1, unicode_ascii_class[b], b == ' ' || (b >= 0x09 && b <= 0x0d)};
    } else {
        c.len = utf8_valid_len(s + i, end - i);
        if (c.len == 0) return (tok_char){TOK_CP_INVALID, 1, UC_S, false};
        c.cp = utf8_decode(s + i, c.len);
    }
    c.cls = unicode_class(c.cp);
    c.space = (c.cls == UC_Z || c.cls == UC_C) && unicode_is_space(c.cp);
    return c;
}

/* [^\s\p{L}\p{N}]: the class of punctuation runs in GPT-4-style expressions. */
static bool tok_char_other(tok_char c) { return !c.space && c.cls != UC_L && c.cls != UC_N; }

/* End of the run of characters of class cls that starts at i. */
static size_t tok_run_class(const uint8_t *s, size_t end, size_t i, int cls)
{
    while (i < end) {
        tok_char c = tok_char_at(s, end, i);
        if (c.cls != cls) break;
        i += (size_t)c.len;
    }
    return i;
}

/* ---- Pre-tokenizers -------------------------------------------------------------------------
 * A pre-tokenizer is a list of stages; each stage is one regular expression, applied as Hugging
 * Face's Split(behavior = Isolated) does: its leftmost matches and the stretches between them
 * all become pieces, and the next stage splits each piece again.  A stage is a function that
 * says whether its expression matches at byte i of the piece [.., end): it returns the end of
 * the match, or 0 when there is none (and may set *skip to a later position where the next try
 * can start, when it can prove that none in between can match).  Like the regex engines the
 * expressions were written for, alternatives are tried in order and quantifiers are greedy
 * with backtracking; each function below says how it settles the backtracking. */

typedef size_t (*pre_stage)(const uint8_t *s, size_t end, size_t i, size_t *skip);

/* (?i:'s|'t|'re|'ve|'m|'ll|'d): the end of an English contraction at i, or 0.  Case-insensitive
 * matching also folds U+017F (ſ, long s) to s, as Oniguruma does; llama.cpp's hand-written
 * version of this expression does not. */
static size_t pre_contraction(const uint8_t *s, size_t end, size_t i)
{
    if (s[i] != '\'' || i + 1 >= end) return 0;
    int a = s[i + 1] | 0x20; /* ASCII lower case; only letters can equal the letters below */
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 >= end) return 0;
    int b = s[i + 2] | 0x20;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    if (s[i + 1] == 0xc5 && s[i + 2] == 0xbf) return i + 3; /* 'ſ */
    return 0;
}

/* The white-space alternatives \s*[\r\n]+ | \s+(?!\S) | \s+ at i, where s[i] is white space.
 * The first takes the run up to its last line break (backtracking gives back what follows);
 * the second takes the run but leaves its last character to the word after it (that character
 * then starts [^\r\n\p{L}\p{N}]?\p{L}+ or ` ?[^\s\p{L}\p{N}]+`); a lone space before a word
 * falls through to the third. */
static size_t pre_space_run(const uint8_t *s, size_t end, size_t i)
{
    size_t j = i, last_nl = 0, last_start = i;
    while (j < end) {
        tok_char w = tok_char_at(s, end, j);
        if (!w.space) break;
        if (w.cp == '\r' || w.cp == '\n') last_nl = j + 1;
        last_start = j;
        j += (size_t)w.len;
    }
    if (last_nl) return last_nl;
    if (j < end && last_start > i) return last_start;
    return j;
}

/* The expression of Llama 3 (max_digits 3) and of Qwen 2 (max_digits 1).  (Qwen's tokenizer also
 * normalises text to NFC first; llama.cpp does not, and neither does halda: text that is
 * already NFC, which is nearly all text, is unaffected.)
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+
 * Every character starts a match of one alternative, so this never returns 0. */
static size_t pre_gpt4(const uint8_t *s, size_t end, size_t i, int max_digits)
{
    size_t m = pre_contraction(s, end, i);
    if (m) return m;
    tok_char c = tok_char_at(s, end, i);
    /* [^\r\n\p{L}\p{N}]?\p{L}+: a letter run, maybe after one character that is not a line
     * break, letter or number (backtracking: if that character is not followed by a letter,
     * the optional part matches nothing, and then a letter must come first) */
    if (c.cls == UC_L) return tok_run_class(s, end, i, UC_L);
    size_t next = i + (size_t)c.len;
    if (c.cp != '\r' && c.cp != '\n' && c.cls != UC_N && next < end && tok_char_at(s, end, next).cls == UC_L)
        return tok_run_class(s, end, next, UC_L);
    if (c.cls == UC_N) { /* \p{N}{1,max_digits} */
        size_t j = i;
        for (int k = 0; k < max_digits && j < end; k++) {
            tok_char d = tok_char_at(s, end, j);
            if (d.cls != UC_N) break;
            j += (size_t)d.len;
        }
        return j;
    }
    /* ` ?[^\s\p{L}\p{N}]+[\r\n]*` (the space is taken only if such a character follows) */
    size_t j = i;
    if (c.cp == ' ' && next < end && tok_char_other(tok_char_at(s, end, next))) j = next;
    else if (!tok_char_other(c)) return pre_space_run(s, end, i);
    while (j < end) {
        tok_char d = tok_char_at(s, end, j);
        if (!tok_char_other(d)) break;
        j += (size_t)d.len;
    }
    while (j < end && (s[j] == '\r' || s[j] == '\n')) j++;
    return j;
}
static size_t pre_llama3(const uint8_t *s, size_t end, size_t i, size_t *skip) { return (void)skip, pre_gpt4(s, end, i, 3); }
static size_t pre_qwen2(const uint8_t *s, size_t end, size_t i, size_t *skip) { return (void)skip, pre_gpt4(s, end, i, 1); }

/* DeepSeek LLM: six stages.
 *   [\r\n]   \s?[<cased letters>]+   \s?[!-/:-~！-／：-～‘-‟　-。]+   \s+$   [一-龥ࠀ-一가-퟿]+   \p{N}+
 * The letter and CJK classes are spelled out as code point ranges in the published expressions
 * (ds_*_ranges at the end of the section).  Because each stage re-splits the pieces of the previous one, a later
 * class may cut an earlier piece: the punctuation class contains A-Z and a-z (':' to '~'), so
 * "café" becomes "caf" + "é". */
static size_t ds_newline(const uint8_t *s, size_t end, size_t i, size_t *skip)
{
    (void)end, (void)skip;
    return s[i] == '\r' || s[i] == '\n' ? i + 1 : 0;
}

/* \s?[ranges]+ : one white-space character is taken only when a class character follows;
 * otherwise the optional part matches nothing and the class must match at i (U+3000 is both
 * white space and in the punctuation class, which this order handles). */
static size_t ds_optional_space_run(const uint8_t *s, size_t end, size_t i, bool (*in_class)(uint32_t))
{
    tok_char c = tok_char_at(s, end, i);
    size_t j = i;
    if (c.space && i + (size_t)c.len < end && in_class(tok_char_at(s, end, i + (size_t)c.len).cp)) j = i + (size_t)c.len;
    else if (!in_class(c.cp)) return 0;
    while (j < end) {
        tok_char d = tok_char_at(s, end, j);
        if (!in_class(d.cp)) break;
        j += (size_t)d.len;
    }
    return j;
}
static size_t ds_letters(const uint8_t *s, size_t end, size_t i, size_t *skip) { return (void)skip, ds_optional_space_run(s, end, i, ds_is_letter); }
static size_t ds_punct(const uint8_t *s, size_t end, size_t i, size_t *skip) { return (void)skip, ds_optional_space_run(s, end, i, ds_is_punct); }

/* \s+$ : a white-space run that reaches the end of the piece.  When the run stops short, no
 * start inside it can match either, so the search skips past it (this keeps long runs of
 * spaces linear). */
static size_t ds_trailing_space(const uint8_t *s, size_t end, size_t i, size_t *skip)
{
    size_t j = i;
    while (j < end) {
        tok_char c = tok_char_at(s, end, j);
        if (!c.space) break;
        j += (size_t)c.len;
    }
    if (j == end && j > i) return j;
    *skip = j;
    return 0;
}

static size_t ds_cjk(const uint8_t *s, size_t end, size_t i, size_t *skip)
{
    (void)skip;
    size_t j = i;
    while (j < end) {
        tok_char c = tok_char_at(s, end, j);
        if (!ds_is_cjk(c.cp)) break;
        j += (size_t)c.len;
    }
    return j > i ? j : 0;
}

static size_t ds_digits(const uint8_t *s, size_t end, size_t i, size_t *skip)
{
    (void)skip;
    size_t j = tok_run_class(s, end, i, UC_N);
    return j > i ? j : 0;
}

static const pre_stage pre_stages_llama3[] = {pre_llama3};
static const pre_stage pre_stages_qwen2[] = {pre_qwen2};
static const pre_stage pre_stages_deepseek_llm[] = {ds_newline, ds_letters, ds_punct, ds_trailing_space, ds_cjk, ds_digits};

/* ---- BPE merging ------------------------------------------------------------------------------ */

typedef struct {
    int32_t id;         /* piece id; -1: a byte whose character is not in the vocabulary */
    int32_t prev, next; /* neighbours in the word, -1 at the ends */
} bpe_symbol;

/* A candidate merge in the heap.  It is stale once either symbol has changed, which the ids
 * tell: a symbol only ever grows, so it never gets an id back that it had before. */
typedef struct {
    int32_t rank, left;        /* heap order: lower rank first, then the leftmost pair */
    int32_t left_id, right_id; /* the pair when it was queued */
    int32_t merged;            /* what it becomes */
} bpe_pair;

/* A cache of recent words and their ids.  Text repeats its words (Zipf), and a cached word
 * costs one lookup instead of a dozen merge-table probes.  Direct-mapped: a word goes to the
 * slot its hash picks, replacing what was there; short words with few ids only. */
#define BPE_CACHE_SLOTS 4096 /* 256 KiB: stays in the L2 cache */
#define BPE_CACHE_WORD 24
#define BPE_CACHE_IDS 8
typedef struct {
    uint8_t word_len, n_ids; /* word_len 0: empty */
    char word[BPE_CACHE_WORD];
    int32_t ids[BPE_CACHE_IDS];
} bpe_cache_slot;

/* Scratch memory of one tokenize call, grown to the longest word seen. */
typedef struct {
    bpe_symbol *sym;
    size_t sym_cap;
    bpe_pair *heap;
    size_t heap_cap, heap_n;
    char *enc; /* a word spelled in GPT-2 characters, for the whole-word lookup */
    size_t enc_cap;
    bpe_cache_slot *cache; /* [BPE_CACHE_SLOTS], or NULL for short texts */
} bpe_work;

static bool bpe_before(const bpe_pair *a, const bpe_pair *b) { return a->rank < b->rank || (a->rank == b->rank && a->left < b->left); }

/* The caller has made room: a word of n bytes queues at most 3n pairs (n - 1 at first and two
 * per merge). */
static void bpe_heap_push(bpe_work *w, bpe_pair p)
{
    size_t i = w->heap_n++;
    while (i > 0 && bpe_before(&p, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = p;
}
static bpe_pair bpe_heap_pop(bpe_work *w)
{
    bpe_pair top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bpe_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bpe_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

/* Queue the pair (left, its right neighbour) if the merges know it. */
static void bpe_queue(const tok_vocab *v, bpe_work *w, int32_t left)
{
    if (left < 0 || w->sym[left].next < 0) return;
    const bpe_merge *m = bpe_find(v, w->sym[left].id, w->sym[w->sym[left].next].id);
    if (m) bpe_heap_push(w, (bpe_pair){m->rank, left, m->left, m->right, m->merged});
}

/* With ignore_merges (Llama 3), a word that is itself a piece is that piece, whatever the
 * merges would build (Hugging Face's BPE option of that name).  Returns its id or -1. */
static int32_t bpe_whole_word(const tok_vocab *v, const uint8_t *s, size_t n, bpe_work *w)
{
    if (!tok_grow((void **)&w->enc, &w->enc_cap, 2 * n, 1)) return -2;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)utf8_encode(gpt2_char_of_byte(s[i]), w->enc + k);
    return tok_find(v, w->enc, k);
}

/* Tokenize one word (the bytes s[0, n)): one symbol per byte, then merges by rank. */
static int bpe_word(const tok_vocab *v, const uint8_t *s, size_t n, bpe_work *w, tok_out *out)
{
    if (v->ignore_merges && n > 1) {
        int32_t id = bpe_whole_word(v, s, n, w);
        if (id == -2) return -1;
        if (id >= 0) return tok_push(out, id), 0;
    }
    if (!tok_grow((void **)&w->sym, &w->sym_cap, n, sizeof *w->sym) ||
        !tok_grow((void **)&w->heap, &w->heap_cap, 3 * n, sizeof *w->heap))
        return -1;
    bpe_symbol *sym = w->sym;
    for (size_t i = 0; i < n; i++) sym[i] = (bpe_symbol){v->byte_token[s[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) bpe_queue(v, w, (int32_t)i);
    while (w->heap_n > 0) {
        bpe_pair p = bpe_heap_pop(w);
        bpe_symbol *l = &sym[p.left];
        if (l->id != p.left_id || l->next < 0 || sym[l->next].id != p.right_id) continue; /* stale */
        bpe_symbol *r = &sym[l->next];
        l->id = p.merged;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        r->id = -1, r->next = -1; /* unlinked: no queued pair can name it as a left symbol */
        bpe_queue(v, w, l->prev);
        bpe_queue(v, w, p.left);
    }
    /* A byte missing from the vocabulary (never, in the vocabularies halda knows) becomes the
     * unknown token if there is one; llama.cpp drops it. */
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) tok_push(out, sym[i].id);
        else if (v->unk >= 0) tok_push(out, v->unk);
    }
    return 0;
}

/* Bytes in the character at s[i] as tok_char_at counts them. */
static size_t tok_char_len(const uint8_t *s, size_t end, size_t i)
{
    int l = s[i] < 0x80 ? 1 : utf8_valid_len(s + i, end - i);
    return l ? (size_t)l : 1;
}

/* What happens to each word the pre-tokenizer cuts: returns 0, or -1 to stop with an error. */
typedef int (*pre_word_fn)(void *ctx, const uint8_t *s, size_t n);

typedef struct {
    const pre_stage *stage;
    int n_stage;
    pre_word_fn word;
    void *ctx;
} pre_run;

/* Split the piece s[begin, end) with stage k (matches and the gaps between them), then pass
 * each part to stage k + 1; after the last stage the parts are words. */
static int pre_split(const pre_run *r, int k, const uint8_t *s, size_t begin, size_t end)
{
    if (k == r->n_stage) return r->word(r->ctx, s + begin, end - begin);
    size_t gap = begin, i = begin;
    while (i < end) {
        size_t skip = 0, m = r->stage[k](s, end, i, &skip);
        if (m > i) {
            if (gap < i && pre_split(r, k + 1, s, gap, i)) return -1;
            if (pre_split(r, k + 1, s, i, m)) return -1;
            gap = i = m;
        } else {
            size_t next = i + tok_char_len(s, end, i);
            i = skip > next ? skip : next;
        }
    }
    return gap < end ? pre_split(r, k + 1, s, gap, end) : 0;
}

/* Cut plain text into words with the vocabulary's pre-tokenizer, calling word() on each. */
static int tok_pretokenize(const tok_vocab *v, const char *text, size_t len, pre_word_fn word, void *ctx)
{
    pre_run r = {pre_stages_llama3, 1, word, ctx};
    if (v->pre == TOK_PRE_QWEN2) r.stage = pre_stages_qwen2;
    if (v->pre == TOK_PRE_DEEPSEEK_LLM) r.stage = pre_stages_deepseek_llm, r.n_stage = 6;
    return pre_split(&r, 0, (const uint8_t *)text, 0, len);
}

typedef struct {
    const tok_vocab *v;
    bpe_work *w;
    tok_out *out;
} bpe_ctx;

/* One word, through the cache when there is one.  A word is cached only if all its ids fit in
 * the output (otherwise they were counted but not stored). */
static int bpe_word_cb(void *ctx, const uint8_t *s, size_t n)
{
    bpe_ctx *c = ctx;
    bpe_cache_slot *slot = NULL;
    if (c->w->cache && n <= BPE_CACHE_WORD) {
        slot = &c->w->cache[tok_hash((const char *)s, n) & (BPE_CACHE_SLOTS - 1)];
        if (slot->word_len == n && !memcmp(slot->word, s, n)) {
            for (int i = 0; i < slot->n_ids; i++) tok_push(c->out, slot->ids[i]);
            return 0;
        }
    }
    int n0 = c->out->n, needed0 = c->out->needed;
    if (bpe_word(c->v, s, n, c->w, c->out)) return -1;
    int k = c->out->n - n0;
    if (slot && k == c->out->needed - needed0 && k <= BPE_CACHE_IDS) {
        slot->word_len = (uint8_t)n, slot->n_ids = (uint8_t)k;
        memcpy(slot->word, s, n);
        memcpy(slot->ids, c->out->ids + n0, (size_t)k * sizeof *slot->ids);
    }
    return 0;
}

/* Tokenize one stretch of plain text: pre-tokenize, then merge each word. */
static int bpe_tokenize(const tok_vocab *v, const char *text, size_t len, bpe_work *w, tok_out *out)
{
    bpe_ctx c = {v, w, out};
    return tok_pretokenize(v, text, len, bpe_word_cb, &c);
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
        /* a character per symbol; a byte that is not valid UTF-8 is a symbol by itself (llama.cpp
         * trusts the lead byte, and a truncated sequence then swallows the next ▁'s bytes) */
        size_t l = tok_char_len((const uint8_t *)text, len, i);
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

/* ---- Special tokens ---------------------------------------------------------------------------
 * llama.cpp cuts special tokens out of the text one token at a time, longest first, each at
 * every place it occurs in what is still plain text.  Scanning the text once per special token
 * is slow for vocabularies with thousands of them (DeepSeek has 2400 user-defined tokens), so
 * this finds all occurrences in one pass and then replays that order: an occurrence is kept if
 * none of its bytes belongs to an occurrence kept before it, taking them by token (longest
 * first, then lower id) and, for one token, left to right.  That is exactly what the one-by-one
 * search keeps, including for tokens that overlap themselves ("aa" in "aaa"). */

/* A piece of the input: raw text [begin, end), or a special token (id >= 0). */
typedef struct {
    size_t begin, end;
    int32_t id;
} tok_fragment;

typedef struct {
    size_t pos;
    uint32_t len;
    int32_t id;
} tok_hit;

static int tok_hit_order(const void *a, const void *b)
{
    const tok_hit *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}
static int tok_hit_pos(const void *a, const void *b)
{
    const tok_hit *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static bool tok_special_enabled(const tok_vocab *v, int32_t id, bool parse_special)
{
    uint8_t t = v->type[id];
    return t == TOKT_USER || (parse_special && (t == TOKT_CONTROL || t == TOKT_UNKNOWN));
}

/* Every occurrence of an enabled special token: at each byte that starts some special text,
 * look up the substrings of the lengths such texts have.  (A special text that is also the text
 * of a normal token is found only if the special one has the higher id: the hash table keeps
 * the later of two equal texts.)  Returns the count, or -1 when out of memory. */
static long tok_find_hits(const tok_vocab *v, const char *text, size_t len, bool parse_special, tok_hit **hits, size_t *cap)
{
    long n = 0;
    for (size_t p = 0; p < len; p++) {
        uint8_t b = (uint8_t)text[p];
        for (uint32_t k = v->special_len_at[b]; k < v->special_len_at[b + 1]; k++) {
            uint32_t l = v->special_len[k];
            if (l > len - p) break; /* lengths ascend */
            int32_t id = tok_find(v, text + p, l);
            if (id < 0 || v->len[id] != l || !tok_special_enabled(v, id, parse_special)) continue;
            if (!tok_grow((void **)hits, cap, (size_t)n + 1, sizeof **hits)) return -1;
            (*hits)[n++] = (tok_hit){p, l, id};
        }
    }
    return n;
}

/* Cut the special tokens out of the text.  Returns the fragment count (no fragment is empty),
 * or -1 when out of memory; the caller frees *frags. */
static int tok_partition(const tok_vocab *v, const char *text, size_t len, bool parse_special, tok_fragment **frags)
{
    tok_hit *h = NULL;
    size_t hcap = 0, kept = 0;
    bool any = parse_special ? v->n_special > 0 : false;
    for (int i = 0; !any && i < v->n_special; i++) any = v->type[v->special[i]] == TOKT_USER;
    long nh = any ? tok_find_hits(v, text, len, parse_special, &h, &hcap) : 0;
    uint8_t *covered = nh > 0 ? xcalloc(len, 1) : NULL;
    if (nh < 0 || (nh > 0 && !covered)) return xfree(h), -1;
    if (nh > 0) qsort(h, (size_t)nh, sizeof *h, tok_hit_order);
    for (long i = 0; i < nh; i++) {
        bool free_bytes = !memchr(covered + h[i].pos, 1, h[i].len);
        if (!free_bytes) continue;
        memset(covered + h[i].pos, 1, h[i].len);
        h[kept++] = h[i];
    }
    xfree(covered);
    if (kept > 0) qsort(h, kept, sizeof *h, tok_hit_pos);
    tok_fragment *f = xmalloc((2 * kept + 1) * sizeof *f);
    if (!f) return xfree(h), -1;
    int n = 0;
    size_t at = 0;
    for (size_t i = 0; i < kept; i++) {
        if (h[i].pos > at) f[n++] = (tok_fragment){at, h[i].pos, -1};
        f[n++] = (tok_fragment){h[i].pos, h[i].pos + h[i].len, h[i].id};
        at = h[i].pos + h[i].len;
    }
    if (at < len) f[n++] = (tok_fragment){at, len, -1};
    xfree(h);
    *frags = f;
    return n;
}

/* ---- Text to tokens --------------------------------------------------------------------------- */

#define TOK_MAX_TEXT ((size_t)INT_MAX / 2 - 16) /* so token and fragment counts fit in an int */

/* SPM over the fragments: a space prefix goes before the first plain fragment and before each
 * one that follows a special token. */
static int spm_fragments(const tok_vocab *v, const char *text, const tok_fragment *frags, int nf, tok_out *out)
{
    bool prev_special = true;
    for (int i = 0; i < nf; i++) {
        if (frags[i].id >= 0) {
            tok_push(out, frags[i].id);
            prev_special = true;
            continue;
        }
        size_t elen;
        char *esc = spm_escape(text + frags[i].begin, frags[i].end - frags[i].begin, v->add_space_prefix && prev_special, &elen);
        int rc = esc ? spm_tokenize(v, esc, elen, out) : -1;
        xfree(esc);
        if (rc) return -1;
        prev_special = false;
    }
    return 0;
}

static int bpe_fragments(const tok_vocab *v, const char *text, const tok_fragment *frags, int nf, tok_out *out)
{
    bpe_work w = {0};
    int rc = 0;
    if (nf > 0 && frags[nf - 1].end >= 4096) w.cache = xcalloc(BPE_CACHE_SLOTS, sizeof *w.cache); /* NULL: no cache */
    for (int i = 0; i < nf && rc == 0; i++) {
        if (frags[i].id >= 0) tok_push(out, frags[i].id);
        else rc = bpe_tokenize(v, text + frags[i].begin, frags[i].end - frags[i].begin, &w, out);
    }
    xfree(w.sym), xfree(w.heap), xfree(w.enc), xfree(w.cache);
    return rc;
}

/* Tokenize text into at most max_tokens ids.  add_special: BOS (and EOS) as the vocabulary
 * wants them.  Returns the count, -1 on error, or -(needed) - 1 when max_tokens is too small. */
static int tok_tokenize(const tok_vocab *v, const char *text, size_t len, int32_t *tokens, int max_tokens, bool add_special,
                        bool parse_special)
{
    if (len > TOK_MAX_TEXT || max_tokens < 0 || (len && !text)) return -1;
    tok_out out = {tokens, 0, max_tokens, 0};
    if (add_special && v->add_bos) tok_push(&out, v->bos);
    tok_fragment *frags;
    int nf = tok_partition(v, text, len, parse_special, &frags);
    if (nf < 0) return -1;
    int rc = v->kind == TOK_SPM ? spm_fragments(v, text, frags, nf, &out) : bpe_fragments(v, text, frags, nf, &out);
    xfree(frags);
    if (rc) return -1;
    if (add_special && v->add_eos) tok_push(&out, v->eos);
    return out.needed <= max_tokens ? out.n : -out.needed - 1;
}

/* ---- Tokens to text --------------------------------------------------------------------------- */

/* Where piece bytes go: at most cap of them are stored, all are counted (like snprintf).
 * strip_space drops one leading space (the one SPM puts before the first word). */
typedef struct {
    char *out;
    size_t cap, n;
    bool strip_space;
} tok_sink;

static void tok_sink_put(tok_sink *k, const char *s, size_t n)
{
    if (k->strip_space && n > 0) {
        if (s[0] == ' ') s++, n--;
        k->strip_space = false;
    }
    for (size_t i = 0; i < n; i++, k->n++)
        if (k->n < k->cap) k->out[k->n] = s[i];
}

/* A BPE piece back to bytes: each character is the byte GPT-2 gave it.  A character that stands
 * for no byte cannot come from the merges; it is shown the way llama.cpp shows it. */
static void bpe_decode_piece(const char *t, size_t n, tok_sink *k)
{
    for (size_t i = 0; i < n;) {
        int l = utf8_valid_len((const uint8_t *)t + i, n - i);
        int b = l ? gpt2_byte_of_char(utf8_decode((const uint8_t *)t + i, l)) : -1;
        if (l == 0) l = 1;
        if (b >= 0) {
            char c = (char)b;
            tok_sink_put(k, &c, 1);
        } else {
            char hex[64];
            int hl = snprintf(hex, sizeof hex, "[UNK_BYTE_0x");
            for (int j = 0; j < l; j++) hl += snprintf(hex + hl, sizeof hex - (size_t)hl, "%02x", (uint8_t)t[i + j]);
            tok_sink_put(k, hex, (size_t)hl);
            tok_sink_put(k, t, n);
            tok_sink_put(k, "]", 1);
        }
        i += (size_t)l;
    }
}

/* The byte of a <0xXX> piece, or -1. */
static int tok_byte_piece(const char *t, size_t n)
{
    unsigned b;
    if (n != 6 || memcmp(t, "<0x", 3) || t[5] != '>' || !isxdigit((uint8_t)t[3]) || !isxdigit((uint8_t)t[4])) return -1;
    return sscanf(t + 3, "%2X", &b) == 1 ? (int)b : -1;
}

/* SPM pieces (kept as halda has always shown them): control tokens only when asked, <unk> as
 * ▅, byte tokens as their byte, everything else with ▁ back to spaces. */
static void spm_piece(const tok_vocab *v, int32_t token, bool special, tok_sink *k)
{
    const char *t = v->text[token];
    size_t n = v->len[token];
    switch (v->type[token]) {
    case TOKT_CONTROL:
        if (!special) return;
        break;
    case TOKT_UNUSED: return;
    case TOKT_UNKNOWN: t = "\xe2\x96\x85", n = 3; break;
    case TOKT_BYTE: {
        int b = tok_byte_piece(t, n);
        char c = (char)b;
        if (b >= 0) return tok_sink_put(k, &c, 1);
        break;
    }
    default: break;
    }
    for (size_t i = 0; i < n;) {
        size_t r = i;
        while (r < n && !(r + 3 <= n && !memcmp(t + r, "\xe2\x96\x81", 3))) r++;
        tok_sink_put(k, t + i, r - i);
        if (r < n) tok_sink_put(k, " ", 1), r += 3;
        i = r;
    }
}

/* BPE pieces, as llama.cpp shows them: control and unknown tokens only when asked and then as
 * their text, user-defined tokens as their text, normal ones decoded to bytes.  (DeepSeek LLM
 * has the characters of the bytes that never occur in UTF-8 — 0xc0, 0xc1, 0xf5..0xff — only
 * as user-defined tokens, "ø" and the like: such a byte in the input comes back as that
 * character.) */
static void bpe_piece(const tok_vocab *v, int32_t token, bool special, tok_sink *k)
{
    const char *t = v->text[token];
    size_t n = v->len[token];
    switch (v->type[token]) {
    case TOKT_CONTROL:
    case TOKT_UNKNOWN:
        if (special) tok_sink_put(k, t, n);
        return;
    case TOKT_USER: tok_sink_put(k, t, n); return;
    case TOKT_NORMAL: bpe_decode_piece(t, n, k); return;
    case TOKT_BYTE: {
        int b = tok_byte_piece(t, n);
        char c = (char)b;
        if (b >= 0) tok_sink_put(k, &c, 1);
        return;
    }
    default: return;
    }
}

/* The bytes of one token into out (at most cap stored).  Returns how many it has, or -1 for an
 * id outside the vocabulary. */
static long tok_piece(const tok_vocab *v, int32_t token, char *out, size_t cap, bool special, bool strip_space)
{
    if (token < 0 || token >= v->n) return -1;
    tok_sink k = {out, cap, 0, strip_space};
    if (v->kind == TOK_SPM) spm_piece(v, token, special, &k);
    else bpe_piece(v, token, special, &k);
    return (long)k.n;
}

/* llama.cpp's clean-up of detokenized Llama 3 text: no space before ? ! . , ; " ' " loses its
 * spaces; " 's", " 'm", " 're", " 've" lose theirs.  In place; returns the new length. */
static size_t tok_clean_spaces(char *t, size_t n)
{
    size_t k = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = t[i];
        if (t[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) k--;
        t[k++] = x;
    }
    n = k, k = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = t[i];
        if (x == '\'' && i + 1 < n && t[i - 1] == ' ' && t[i + 1] == ' ') k--, t[++i] = 0;
        t[k++] = x;
    }
    n = k, k = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = t[i];
        if (t[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = t[i + 1], x2 = i + 2 < n ? t[i + 2] : 0;
            if (x1 == 's' || x1 == 'm' || (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) k--;
        }
        t[k++] = x;
    }
    return k;
}

/* Tokens back to text, as llama.cpp's llama_detokenize (remove_special = false): SPM drops the
 * space it put before the first word, Llama 3 cleans spaces.  Returns the length (the text is
 * complete only if it is <= cap), or -1 for an id outside the vocabulary. */
static long tok_detokenize(const tok_vocab *v, const int32_t *tokens, int n_tokens, char *out, size_t cap, bool special)
{
    size_t total = 0;
    for (int i = 0; i < n_tokens; i++) {
        size_t at = total < cap ? total : cap;
        long n = tok_piece(v, tokens[i], out + at, cap - at, special, i == 0 && v->add_space_prefix);
        if (n < 0) return -1;
        total += (size_t)n;
    }
    if (total <= cap && v->clean_spaces) total = tok_clean_spaces(out, total);
    return (long)total;
}

/* ---- Public API -------------------------------------------------------------------------------- */

int halda_tokenize(const halda_model *m, const char *text, size_t len, int32_t *tokens, int max_tokens, int add_bos,
                   int parse_special)
{
    return tok_tokenize(m->vocab, text, len, tokens, max_tokens, add_bos != 0, parse_special != 0);
}

int halda_token_to_piece(const halda_model *m, int32_t token, char *out, size_t out_len, int special)
{
    long n = tok_piece(m->vocab, token, out, out_len, special != 0, false);
    return n < 0 || (size_t)n > out_len || n > INT_MAX ? -1 : (int)n;
}

int halda_detokenize(const halda_model *m, const int32_t *tokens, int n_tokens, char *out, size_t out_len, int special)
{
    long n = tok_detokenize(m->vocab, tokens, n_tokens, out, out_len, special != 0);
    if (n < 0 || n >= INT_MAX) return -1;
    return (size_t)n <= out_len ? (int)n : -(int)n - 1;
}

static bool tok_is_eog(const tok_vocab *v, int32_t t)
{
    for (int i = 0; i < v->n_eog; i++)
        if (v->eog[i] == t) return true;
    return false;
}

int32_t halda_token_bos(const halda_model *m) { return m->vocab->bos; }
int32_t halda_token_eos(const halda_model *m) { return m->vocab->eos; }
int halda_token_is_eog(const halda_model *m, int32_t t) { return t >= 0 && tok_is_eog(m->vocab, t); }

/* ---- Chat templates ---------------------------------------------------------------------------
 * Chat models are trained on conversations laid out by a Jinja template shipped in
 * tokenizer.chat_template.  Halda runs no Jinja: it recognises the family of the template by
 * its markers (as llama.cpp does) and has a renderer per family that produces exactly what the
 * family's published template produces for plain conversations (system, user and assistant
 * messages; no tools).  The output contains the special tokens as text (BOS included where the
 * template writes it), so it is tokenized with parse_special and without add_bos.
 *
 *   llama2       Llama 2 chat: "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] ..."
 *                (messages stripped; the system message joins the first user message)
 *   llama3       Llama 3 instruct: "<|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\n
 *                TEXT<|eot_id|>" per message (trimmed).  The 3.1 and 3.2 templates always open
 *                with a system message that starts "Cutting Knowledge Date: December 2023\n
 *                Today Date: DATE\n\n" (DATE: the template's default, or today's date where the
 *                template asks for strftime_now); that is rendered when the template has it.
 *   chatml       Qwen 2/2.5, QwQ: "<|im_start|>ROLE\nTEXT<|im_end|>\n" per message, a default
 *                system prompt when the template has one, and for QwQ the reasoning removed
 *                from past answers and "<think>\n" opening the new one.
 *   deepseek-r1  DeepSeek-R1 and its distills: "<｜begin▁of▁sentence｜>SYSTEM<｜User｜>U
 *                <｜Assistant｜>A<｜end▁of▁sentence｜>...", reasoning removed from past answers.
 * ============================================================================================= */

static const char *const chat_names[] = {"", "llama2", "llama3", "chatml", "deepseek-r1"};

static int chat_family_by_name(const char *name)
{
    for (int i = 1; i < (int)(sizeof chat_names / sizeof chat_names[0]); i++)
        if (!strcmp(name, chat_names[i])) return i;
    return CHAT_NONE;
}

static bool chat_has(const char *t, size_t n, const char *marker) { return memmem(t, n, marker, strlen(marker)) != NULL; }

/* The family of a template text (untrusted: only searched). */
static int chat_detect(const char *t, size_t n)
{
    if (chat_has(t, n, "<|im_start|>")) return CHAT_CHATML;
    if (chat_has(t, n, "<|start_header_id|>") && chat_has(t, n, "<|end_header_id|>")) return CHAT_LLAMA3;
    if (chat_has(t, n, "\357\275\234User\357\275\234") && chat_has(t, n, "\357\275\234Assistant\357\275\234")) return CHAT_DEEPSEEK_R1;
    if (chat_has(t, n, "[INST]") && chat_has(t, n, "<<SYS>>")) return CHAT_LLAMA2;
    return CHAT_NONE;
}

/* A ChatML template's default system prompt: the literal text of a string that starts with
 * "<|im_start|>system" and a line break (a real one or the two characters \n) and runs to
 * "<|im_end|>" with no template code inside.  Returns its length (0: none) and where it starts. */
static size_t chat_default_system(const char *t, size_t n, const char **start)
{
    static const char head[] = "<|im_start|>system";
    for (const char *p = t; (p = memmem(p, (size_t)(t + n - p), head, sizeof head - 1)) != NULL;) {
        p += sizeof head - 1;
        size_t left = (size_t)(t + n - p), skip = left >= 1 && p[0] == '\n' ? 1 : left >= 2 && !memcmp(p, "\\n", 2) ? 2 : 0;
        const char *end = skip ? memmem(p + skip, left - skip, "<|im_end|>", 10) : NULL;
        if (!end) continue;
        const char *s = p + skip;
        size_t len = (size_t)(end - s);
        if (len == 0 || memchr(s, '\'', len) || memchr(s, '"', len) || memchr(s, '{', len) || memchr(s, '\\', len)) continue;
        *start = s;
        return len;
    }
    return 0;
}

/* A Llama 3.1+ template's default date: the literal in `date_string = "..."`, or "" (today)
 * when the template asks for strftime_now.  Returns a new string. */
static char *chat_llama3_date(const char *t, size_t n)
{
    const char *d = "26 Jul 2024", *p = memmem(t, n, "date_string = \"", 15);
    size_t dl = strlen(d);
    if (p) {
        const char *q = memchr(p + 15, '"', (size_t)(t + n - (p + 15)));
        if (q && q - (p + 15) < 32) d = p + 15, dl = (size_t)(q - d);
    }
    if (chat_has(t, n, "strftime_now")) dl = 0;
    char *r = xmalloc(dl + 1);
    if (r) memcpy(r, d, dl), r[dl] = 0;
    return r;
}

/* tokenizer.chat_template: the family, and what varies inside it. */
static int chat_load(tok_vocab *v, const gguf_file *f, herr *e)
{
    uint64_t n = 0;
    const char *t = gguf_get_str(f, "tokenizer.chat_template", &n), *sys = NULL;
    if (!t) return 0;
    v->chat = chat_detect(t, (size_t)n);
    v->chat_think = (v->chat == CHAT_DEEPSEEK_R1 || v->chat == CHAT_CHATML) && chat_has(t, (size_t)n, "<think>");
    size_t len = v->chat == CHAT_CHATML ? chat_default_system(t, (size_t)n, &sys) : 0;
    if (len > 0) {
        if (!(v->chat_system = xmalloc(len + 1))) return herr_set(e, "out of memory for the chat template"), -1;
        memcpy(v->chat_system, sys, len);
        v->chat_system[len] = 0;
    }
    if (v->chat == CHAT_LLAMA3 && chat_has(t, (size_t)n, "Cutting Knowledge Date") && !(v->chat_date = chat_llama3_date(t, (size_t)n)))
        return herr_set(e, "out of memory for the chat template"), -1;
    return 0;
}

/* Python's str.strip() on ASCII white space, as the templates' |trim and .strip() do. */
static void chat_trim(const char **s, size_t *n)
{
    while (*n > 0 && isspace((uint8_t)(*s)[0])) (*s)++, (*n)--;
    while (*n > 0 && isspace((uint8_t)(*s)[*n - 1])) (*n)--;
}

static void chat_put(tok_sink *k, const char *s) { tok_sink_put(k, s, strlen(s)); }

/* An assistant message without its reasoning: what follows the last </think>. */
static const char *chat_after_think(const char *s)
{
    for (const char *p; (p = strstr(s, "</think>")) != NULL;) s = p + 8;
    return s;
}

static void chat_llama2(const tok_vocab *v, const halda_chat_message *m, int n, tok_sink *k)
{
    const char *bos = v->bos >= 0 ? v->text[v->bos] : "", *eos = v->eos >= 0 ? v->text[v->eos] : "";
    int i = 0;
    const char *sys = NULL;
    if (n > 0 && !strcmp(m[0].role, "system")) sys = m[0].content, i = 1;
    for (int first = 1; i < n; i++, first = 0) {
        const char *c = m[i].content;
        size_t cn = strlen(c);
        if (!strcmp(m[i].role, "user")) {
            chat_put(k, bos), chat_put(k, "[INST] ");
            if (first && sys) { /* '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content, then strip() */
                chat_put(k, "<<SYS>>\n"), chat_put(k, sys), chat_put(k, "\n<</SYS>>\n\n");
                size_t tail = cn;
                while (tail > 0 && isspace((uint8_t)c[tail - 1])) tail--;
                tok_sink_put(k, c, tail);
            } else {
                chat_trim(&c, &cn);
                tok_sink_put(k, c, cn);
            }
            chat_put(k, " [/INST]");
        } else if (!strcmp(m[i].role, "assistant")) {
            chat_trim(&c, &cn);
            chat_put(k, " "), tok_sink_put(k, c, cn), chat_put(k, " "), chat_put(k, eos);
        }
    }
}

/* Llama 3.1+'s system header: the dates, then the system message if the first one is. */
static int chat_llama31_system(const tok_vocab *v, const halda_chat_message *m, int n, tok_sink *k)
{
    char today[32] = "";
    const char *date = v->chat_date;
    if (!date[0]) {
        time_t now = time(NULL);
        struct tm tm;
        if (localtime_r(&now, &tm)) strftime(today, sizeof today, "%d %b %Y", &tm);
        date = today;
    }
    chat_put(k, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ");
    chat_put(k, date), chat_put(k, "\n\n");
    int used = n > 0 && !strcmp(m[0].role, "system");
    if (used) {
        const char *c = m[0].content;
        size_t cn = strlen(c);
        chat_trim(&c, &cn);
        tok_sink_put(k, c, cn);
    }
    chat_put(k, "<|eot_id|>");
    return used;
}

static void chat_llama3(const tok_vocab *v, const halda_chat_message *m, int n, bool add_assistant, tok_sink *k)
{
    bool v31 = v->chat == CHAT_LLAMA3 && v->chat_date;
    if (v->bos >= 0 && (n > 0 || v31)) chat_put(k, v->text[v->bos]); /* 3.0 writes it before the first message */
    int i = v31 ? chat_llama31_system(v, m, n, k) : 0;
    for (; i < n; i++) {
        const char *c = m[i].content;
        size_t cn = strlen(c);
        chat_trim(&c, &cn);
        chat_put(k, "<|start_header_id|>"), chat_put(k, m[i].role), chat_put(k, "<|end_header_id|>\n\n");
        tok_sink_put(k, c, cn), chat_put(k, "<|eot_id|>");
    }
    if (add_assistant) chat_put(k, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void chat_chatml(const tok_vocab *v, const halda_chat_message *m, int n, bool add_assistant, tok_sink *k)
{
    if ((n == 0 || strcmp(m[0].role, "system")) && v->chat_system)
        chat_put(k, "<|im_start|>system\n"), chat_put(k, v->chat_system), chat_put(k, "<|im_end|>\n");
    for (int i = 0; i < n; i++) {
        const char *c = m[i].content;
        if (v->chat_think && !strcmp(m[i].role, "assistant")) /* split('</think>')[-1].lstrip('\n') */
            for (c = chat_after_think(c); *c == '\n';) c++;
        chat_put(k, "<|im_start|>"), chat_put(k, m[i].role), chat_put(k, "\n"), chat_put(k, c), chat_put(k, "<|im_end|>\n");
    }
    if (add_assistant) chat_put(k, v->chat_think ? "<|im_start|>assistant\n<think>\n" : "<|im_start|>assistant\n");
}

static void chat_deepseek_r1(const tok_vocab *v, const halda_chat_message *m, int n, bool add_assistant, bool think, tok_sink *k)
{
    if (v->bos >= 0) chat_put(k, v->text[v->bos]);
    for (int i = 0, first = 1; i < n; i++) /* every system message, joined by blank lines */
        if (!strcmp(m[i].role, "system")) chat_put(k, first ? "" : "\n\n"), chat_put(k, m[i].content), first = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(m[i].role, "user")) chat_put(k, "<\357\275\234User\357\275\234>"), chat_put(k, m[i].content);
        if (!strcmp(m[i].role, "assistant"))
            chat_put(k, "<\357\275\234Assistant\357\275\234>"), chat_put(k, chat_after_think(m[i].content)),
                chat_put(k, "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>");
    }
    if (add_assistant) chat_put(k, think ? "<\357\275\234Assistant\357\275\234><think>\n" : "<\357\275\234Assistant\357\275\234>");
}

/* Render a conversation with the family `name` ("llama2", "llama3", "chatml", "deepseek-r1"),
 * or the vocabulary's own when name is NULL.  Returns the length (the text is complete if it is
 * < cap, and then NUL-terminated), or -1 when the family is unknown. */
static long chat_render(const tok_vocab *v, const char *name, const halda_chat_message *m, int n, bool add_assistant, char *out,
                        size_t cap)
{
    int family = name ? chat_family_by_name(name) : v->chat;
    tok_sink k = {out, cap, 0, false};
    for (int i = 0; i < n; i++)
        if (!m[i].role || !m[i].content) return -1;
    switch (family) {
    case CHAT_LLAMA2: chat_llama2(v, m, n, &k); break;
    case CHAT_LLAMA3: chat_llama3(v, m, n, add_assistant, &k); break;
    case CHAT_CHATML: chat_chatml(v, m, n, add_assistant, &k); break;
    case CHAT_DEEPSEEK_R1: /* without a template to ask, the current R1 template: it opens with <think> */
        chat_deepseek_r1(v, m, n, add_assistant, v->chat == CHAT_DEEPSEEK_R1 ? v->chat_think : true, &k);
        break;
    default: return -1;
    }
    if (k.n < cap) out[k.n] = 0;
    return (long)k.n;
}

int halda_chat_apply(const halda_model *m, const char *tmpl, const halda_chat_message *msgs, int n_msgs, int add_assistant,
                     char *out, size_t out_len)
{
    long n = n_msgs < 0 ? -1 : chat_render(m->vocab, tmpl, msgs, n_msgs, add_assistant != 0, out, out_len);
    if (n < 0 || n >= INT_MAX) return -1;
    return (size_t)n < out_len ? (int)n : -(int)n - 1;
}

const char *halda_chat_template(const halda_model *m) { return m->vocab->chat ? chat_names[m->vocab->chat] : NULL; }

/* ---- Unicode tables ---------------------------------------------------------------------------
 * Generated by tools/gen_unicode.py (its header says what each table holds); the functions
 * after them answer the questions the pre-tokenizers ask. */

/* BEGIN GENERATED UNICODE TABLES: tools/gen_unicode.py, Unicode 14.0.0 (Python 3.11.7).  Do not edit by
 * hand; regenerate with `python3 tools/gen_unicode.py halda.c`. */

/* 2213 runs: (first code point << 3) | UC_* class, ascending; a run ends where the next begins. */
static const uint32_t unicode_class_table[2213] = {
    0x00000000, 0x00000106, 0x0000010C, 0x00000125, 0x0000012C, 0x0000015D, 0x00000164, 0x00000183,
    0x000001D4, 0x000001E5, 0x000001FC, 0x00000209, 0x000002DC, 0x000002F5, 0x000002FC, 0x00000305,
    0x00000309, 0x000003DC, 0x000003E5, 0x000003EC, 0x000003F5, 0x000003F8, 0x00000506, 0x0000050C,
    0x00000515, 0x0000053C, 0x00000545, 0x00000551, 0x0000055C, 0x00000565, 0x00000568, 0x00000575,
    0x00000593, 0x000005A5, 0x000005A9, 0x000005B4, 0x000005C5, 0x000005CB, 0x000005D1, 0x000005DC,
    0x000005E3, 0x000005FC, 0x00000601, 0x000006BD, 0x000006C1, 0x000007BD, 0x000007C1, 0x00001615,
    0x00001631, 0x00001695, 0x00001701, 0x0000172D, 0x00001761, 0x0000176D, 0x00001771, 0x0000177D,
    0x00001802, 0x00001B81, 0x00001BAD, 0x00001BB1, 0x00001BC0, 0x00001BD1, 0x00001BF4, 0x00001BF9,
    0x00001C00, 0x00001C25, 0x00001C31, 0x00001C3C, 0x00001C41, 0x00001C58, 0x00001C61, 0x00001C68,
    0x00001C71, 0x00001D10, 0x00001D19, 0x00001FB5, 0x00001FB9, 0x00002415, 0x0000241A, 0x00002451,
    0x00002980, 0x00002989, 0x00002AB8, 0x00002AC9, 0x00002AD4, 0x00002B01, 0x00002C4C, 0x00002C58,
    0x00002C6D, 0x00002C80, 0x00002C8A, 0x00002DF4, 0x00002DFA, 0x00002E04, 0x00002E0A, 0x00002E1C,
    0x00002E22, 0x00002E34, 0x00002E3A, 0x00002E40, 0x00002E81, 0x00002F58, 0x00002F79, 0x00002F9C,
    0x00002FA8, 0x00003035, 0x0000304C, 0x0000305D, 0x00003064, 0x00003075, 0x00003082, 0x000030DC,
    0x000030E0, 0x000030EC, 0x00003101, 0x0000325A, 0x00003303, 0x00003354, 0x00003371, 0x00003382,
    0x00003389, 0x000036A4, 0x000036A9, 0x000036B2, 0x000036E8, 0x000036F5, 0x000036FA, 0x00003729,
    0x0000373A, 0x0000374D, 0x00003752, 0x00003771, 0x00003783, 0x000037D1, 0x000037ED, 0x000037F9,
    0x00003804, 0x00003870, 0x00003881, 0x0000388A, 0x00003891, 0x00003982, 0x00003A58, 0x00003A69,
    0x00003D32, 0x00003D89, 0x00003D90, 0x00003E03, 0x00003E51, 0x00003F5A, 0x00003FA1, 0x00003FB5,
    0x00003FBC, 0x00003FD1, 0x00003FD8, 0x00003FEA, 0x00003FF5, 0x00004001, 0x000040B2, 0x000040D1,
    0x000040DA, 0x00004121, 0x0000412A, 0x00004141, 0x0000414A, 0x00004170, 0x00004184, 0x000041F8,
    0x00004201, 0x000042CA, 0x000042E0, 0x000042F4, 0x000042F8, 0x00004301, 0x00004358, 0x00004381,
    0x00004445, 0x00004449, 0x00004478, 0x000044C2, 0x00004501, 0x00004652, 0x00004710, 0x0000471A,
    0x00004821, 0x000049D2, 0x000049E9, 0x000049F2, 0x00004A81, 0x00004A8A, 0x00004AC1, 0x00004B12,
    0x00004B24, 0x00004B33, 0x00004B84, 0x00004B89, 0x00004C0A, 0x00004C20, 0x00004C29, 0x00004C68,
    0x00004C79, 0x00004C88, 0x00004C99, 0x00004D48, 0x00004D51, 0x00004D88, 0x00004D91, 0x00004D98,
    0x00004DB1, 0x00004DD0, 0x00004DE2, 0x00004DE9, 0x00004DF2, 0x00004E28, 0x00004E3A, 0x00004E48,
    0x00004E5A, 0x00004E71, 0x00004E78, 0x00004EBA, 0x00004EC0, 0x00004EE1, 0x00004EF0, 0x00004EF9,
    0x00004F12, 0x00004F20, 0x00004F33, 0x00004F81, 0x00004F95, 0x00004FA3, 0x00004FD5, 0x00004FE1,
    0x00004FEC, 0x00004FF2, 0x00004FF8, 0x0000500A, 0x00005020, 0x00005029, 0x00005058, 0x00005079,
    0x00005088, 0x00005099, 0x00005148, 0x00005151, 0x00005188, 0x00005191, 0x000051A0, 0x000051A9,
    0x000051B8, 0x000051C1, 0x000051D0, 0x000051E2, 0x000051E8, 0x000051F2, 0x00005218, 0x0000523A,
    0x00005248, 0x0000525A, 0x00005270, 0x0000528A, 0x00005290, 0x000052C9, 0x000052E8, 0x000052F1,
    0x000052F8, 0x00005333, 0x00005382, 0x00005391, 0x000053AA, 0x000053B4, 0x000053B8, 0x0000540A,
    0x00005420, 0x00005429, 0x00005470, 0x00005479, 0x00005490, 0x00005499, 0x00005548, 0x00005551,
    0x00005588, 0x00005591, 0x000055A0, 0x000055A9, 0x000055D0, 0x000055E2, 0x000055E9, 0x000055F2,
    0x00005630, 0x0000563A, 0x00005650, 0x0000565A, 0x00005670, 0x00005681, 0x00005688, 0x00005701,
    0x00005712, 0x00005720, 0x00005733, 0x00005784, 0x0000578D, 0x00005790, 0x000057C9, 0x000057D2,
    0x00005800, 0x0000580A, 0x00005820, 0x00005829, 0x00005868, 0x00005879, 0x00005888, 0x00005899,
    0x00005948, 0x00005951, 0x00005988, 0x00005991, 0x000059A0, 0x000059A9, 0x000059D0, 0x000059E2,
    0x000059E9, 0x000059F2, 0x00005A28, 0x00005A3A, 0x00005A48, 0x00005A5A, 0x00005A70, 0x00005AAA,
    0x00005AC0, 0x00005AE1, 0x00005AF0, 0x00005AF9, 0x00005B12, 0x00005B20, 0x00005B33, 0x00005B85,
    0x00005B89, 0x00005B93, 0x00005BC0, 0x00005C12, 0x00005C19, 0x00005C20, 0x00005C29, 0x00005C58,
    0x00005C71, 0x00005C88, 0x00005C91, 0x00005CB0, 0x00005CC9, 0x00005CD8, 0x00005CE1, 0x00005CE8,
    0x00005CF1, 0x00005D00, 0x00005D19, 0x00005D28, 0x00005D41, 0x00005D58, 0x00005D71, 0x00005DD0,
    0x00005DF2, 0x00005E18, 0x00005E32, 0x00005E48, 0x00005E52, 0x00005E70, 0x00005E81, 0x00005E88,
    0x00005EBA, 0x00005EC0, 0x00005F33, 0x00005F9D, 0x00005FD8, 0x00006002, 0x00006029, 0x00006068,
    0x00006071, 0x00006088, 0x00006091, 0x00006148, 0x00006151, 0x000061D0, 0x000061E2, 0x000061E9,
    0x000061F2, 0x00006228, 0x00006232, 0x00006248, 0x00006252, 0x00006270, 0x000062AA, 0x000062B8,
    0x000062C1, 0x000062D8, 0x000062E9, 0x000062F0, 0x00006301, 0x00006312, 0x00006320, 0x00006333,
    0x00006380, 0x000063BC, 0x000063C3, 0x000063FD, 0x00006401, 0x0000640A, 0x00006424, 0x00006429,
    0x00006468, 0x00006471, 0x00006488, 0x00006491, 0x00006548, 0x00006551, 0x000065A0, 0x000065A9,
    0x000065D0, 0x000065E2, 0x000065E9, 0x000065F2, 0x00006628, 0x00006632, 0x00006648, 0x00006652,
    0x00006670, 0x000066AA, 0x000066B8, 0x000066E9, 0x000066F8, 0x00006701, 0x00006712, 0x00006720,
    0x00006733, 0x00006780, 0x00006789, 0x00006798, 0x00006802, 0x00006821, 0x00006868, 0x00006871,
    0x00006888, 0x00006891, 0x000069DA, 0x000069E9, 0x000069F2, 0x00006A28, 0x00006A32, 0x00006A48,
    0x00006A52, 0x00006A71, 0x00006A7D, 0x00006A80, 0x00006AA1, 0x00006ABA, 0x00006AC3, 0x00006AF9,
    0x00006B12, 0x00006B20, 0x00006B33, 0x00006BCD, 0x00006BD1, 0x00006C00, 0x00006C0A, 0x00006C20,
    0x00006C29, 0x00006CB8, 0x00006CD1, 0x00006D90, 0x00006D99, 0x00006DE0, 0x00006DE9, 0x00006DF0,
    0x00006E01, 0x00006E38, 0x00006E52, 0x00006E58, 0x00006E7A, 0x00006EA8, 0x00006EB2, 0x00006EB8,
    0x00006EC2, 0x00006F00, 0x00006F33, 0x00006F80, 0x00006F92, 0x00006FA4, 0x00006FA8, 0x00007009,
    0x0000718A, 0x00007191, 0x000071A2, 0x000071D8, 0x000071FD, 0x00007201, 0x0000723A, 0x0000727C,
    0x00007283, 0x000072D4, 0x000072E0, 0x00007409, 0x00007418, 0x00007421, 0x00007428, 0x00007431,
    0x00007458, 0x00007461, 0x00007520, 0x00007529, 0x00007530, 0x00007539, 0x0000758A, 0x00007591,
    0x000075A2, 0x000075E9, 0x000075F0, 0x00007601, 0x00007628, 0x00007631, 0x00007638, 0x00007642,
    0x00007670, 0x00007683, 0x000076D0, 0x000076E1, 0x00007700, 0x00007801, 0x0000780D, 0x00007824,
    0x0000789D, 0x000078A4, 0x000078AD, 0x000078C2, 0x000078D5, 0x00007903, 0x000079A5, 0x000079AA,
    0x000079B5, 0x000079BA, 0x000079C5, 0x000079CA, 0x000079D4, 0x000079F2, 0x00007A01, 0x00007A40,
    0x00007A49, 0x00007B68, 0x00007B8A, 0x00007C2C, 0x00007C32, 0x00007C41, 0x00007C6A, 0x00007CC0,
    0x00007CCA, 0x00007DE8, 0x00007DF5, 0x00007E32, 0x00007E3D, 0x00007E68, 0x00007E75, 0x00007E84,
    0x00007EAD, 0x00007ECC, 0x00007ED8, 0x00008001, 0x0000815A, 0x000081F9, 0x00008203, 0x00008254,
    0x00008281, 0x000082B2, 0x000082D1, 0x000082F2, 0x00008309, 0x00008312, 0x00008329, 0x0000833A,
    0x00008371, 0x0000838A, 0x000083A9, 0x00008412, 0x00008471, 0x0000847A, 0x00008483, 0x000084D2,
    0x000084F5, 0x00008501, 0x00008630, 0x00008639, 0x00008640, 0x00008669, 0x00008670, 0x00008681,
    0x000087DC, 0x000087E1, 0x00009248, 0x00009251, 0x00009270, 0x00009281, 0x000092B8, 0x000092C1,
    0x000092C8, 0x000092D1, 0x000092F0, 0x00009301, 0x00009448, 0x00009451, 0x00009470, 0x00009481,
    0x00009588, 0x00009591, 0x000095B0, 0x000095C1, 0x000095F8, 0x00009601, 0x00009608, 0x00009611,
    0x00009630, 0x00009641, 0x000096B8, 0x000096C1, 0x00009888, 0x00009891, 0x000098B0, 0x000098C1,
    0x00009AD8, 0x00009AEA, 0x00009B04, 0x00009B4B, 0x00009BE8, 0x00009C01, 0x00009C85, 0x00009CD0,
    0x00009D01, 0x00009FB0, 0x00009FC1, 0x00009FF0, 0x0000A004, 0x0000A009, 0x0000B36D, 0x0000B374,
    0x0000B379, 0x0000B406, 0x0000B409, 0x0000B4DC, 0x0000B4E8, 0x0000B501, 0x0000B75C, 0x0000B773,
    0x0000B789, 0x0000B7C8, 0x0000B801, 0x0000B892, 0x0000B8B0, 0x0000B8F9, 0x0000B992, 0x0000B9AC,
    0x0000B9B8, 0x0000BA01, 0x0000BA92, 0x0000BAA0, 0x0000BB01, 0x0000BB68, 0x0000BB71, 0x0000BB88,
    0x0000BB92, 0x0000BBA0, 0x0000BC01, 0x0000BDA2, 0x0000BEA4, 0x0000BEB9, 0x0000BEC4, 0x0000BEDD,
    0x0000BEE1, 0x0000BEEA, 0x0000BEF0, 0x0000BF03, 0x0000BF50, 0x0000BF83, 0x0000BFD0, 0x0000C004,
    0x0000C05A, 0x0000C070, 0x0000C07A, 0x0000C083, 0x0000C0D0, 0x0000C101, 0x0000C3C8, 0x0000C401,
    0x0000C42A, 0x0000C439, 0x0000C54A, 0x0000C551, 0x0000C558, 0x0000C581, 0x0000C7B0, 0x0000C801,
    0x0000C8F8, 0x0000C902, 0x0000C960, 0x0000C982, 0x0000C9E0, 0x0000CA05, 0x0000CA08, 0x0000CA24,
    0x0000CA33, 0x0000CA81, 0x0000CB70, 0x0000CB81, 0x0000CBA8, 0x0000CC01, 0x0000CD60, 0x0000CD81,
    0x0000CE50, 0x0000CE83, 0x0000CED8, 0x0000CEF5, 0x0000D001, 0x0000D0BA, 0x0000D0E0, 0x0000D0F4,
    0x0000D101, 0x0000D2AA, 0x0000D2F8, 0x0000D302, 0x0000D3E8, 0x0000D3FA, 0x0000D403, 0x0000D450,
    0x0000D483, 0x0000D4D0, 0x0000D504, 0x0000D539, 0x0000D544, 0x0000D570, 0x0000D582, 0x0000D678,
    0x0000D802, 0x0000D829, 0x0000D9A2, 0x0000DA29, 0x0000DA68, 0x0000DA83, 0x0000DAD4, 0x0000DB0D,
    0x0000DB5A, 0x0000DBA5, 0x0000DBEC, 0x0000DBF8, 0x0000DC02, 0x0000DC19, 0x0000DD0A, 0x0000DD71,
    0x0000DD83, 0x0000DDD1, 0x0000DF32, 0x0000DFA0, 0x0000DFE4, 0x0000E001, 0x0000E122, 0x0000E1C0,
    0x0000E1DC, 0x0000E203, 0x0000E250, 0x0000E269, 0x0000E283, 0x0000E2D1, 0x0000E3F4, 0x0000E401,
    0x0000E448, 0x0000E481, 0x0000E5D8, 0x0000E5E9, 0x0000E604, 0x0000E640, 0x0000E682, 0x0000E69C,
    0x0000E6A2, 0x0000E749, 0x0000E76A, 0x0000E771, 0x0000E7A2, 0x0000E7A9, 0x0000E7BA, 0x0000E7D1,
    0x0000E7D8, 0x0000E801, 0x0000EE02, 0x0000F001, 0x0000F8B0, 0x0000F8C1, 0x0000F8F0, 0x0000F901,
    0x0000FA30, 0x0000FA41, 0x0000FA70, 0x0000FA81, 0x0000FAC0, 0x0000FAC9, 0x0000FAD0, 0x0000FAD9,
    0x0000FAE0, 0x0000FAE9, 0x0000FAF0, 0x0000FAF9, 0x0000FBF0, 0x0000FC01, 0x0000FDA8, 0x0000FDB1,
    0x0000FDED, 0x0000FDF1, 0x0000FDFD, 0x0000FE11, 0x0000FE28, 0x0000FE31, 0x0000FE6D, 0x0000FE81,
    0x0000FEA0, 0x0000FEB1, 0x0000FEE0, 0x0000FEED, 0x0000FF01, 0x0000FF6D, 0x0000FF80, 0x0000FF91,
    0x0000FFA8, 0x0000FFB1, 0x0000FFED, 0x0000FFF8, 0x00010006, 0x00010058, 0x00010084, 0x00010146,
    0x00010150, 0x0001017E, 0x00010184, 0x00010225, 0x0001022C, 0x00010295, 0x0001029C, 0x000102FE,
    0x00010300, 0x00010383, 0x00010389, 0x00010390, 0x000103A3, 0x000103D5, 0x000103EC, 0x000103F9,
    0x00010403, 0x00010455, 0x0001046C, 0x00010478, 0x00010481, 0x000104E8, 0x00010505, 0x00010608,
    0x00010682, 0x00010788, 0x00010805, 0x00010811, 0x0001081D, 0x00010839, 0x00010845, 0x00010851,
    0x000108A5, 0x000108A9, 0x000108B5, 0x000108C9, 0x000108F5, 0x00010921, 0x0001092D, 0x00010931,
    0x0001093D, 0x00010941, 0x0001094D, 0x00010951, 0x00010975, 0x00010979, 0x000109D5, 0x000109E1,
    0x00010A05, 0x00010A29, 0x00010A55, 0x00010A71, 0x00010A7D, 0x00010A83, 0x00010C19, 0x00010C2B,
    0x00010C55, 0x00010C60, 0x00010C85, 0x00011844, 0x00011865, 0x0001194C, 0x0001195D, 0x00012138,
    0x00012205, 0x00012258, 0x00012303, 0x000124E5, 0x00012753, 0x00012805, 0x00013B44, 0x00013BB3,
    0x00013CA5, 0x00013E2C, 0x00013E3D, 0x00013F34, 0x00013F85, 0x00014C1C, 0x00014CCD, 0x00014EC4,
    0x00014EE5, 0x00014FE4, 0x00014FF5, 0x00015BA0, 0x00015BB5, 0x00015CB0, 0x00015CBD, 0x00016001,
    0x0001672D, 0x00016759, 0x0001677A, 0x00016791, 0x000167A0, 0x000167CC, 0x000167EB, 0x000167F4,
    0x00016801, 0x00016930, 0x00016939, 0x00016940, 0x00016969, 0x00016970, 0x00016981, 0x00016B40,
    0x00016B79, 0x00016B84, 0x00016B88, 0x00016BFA, 0x00016C01, 0x00016CB8, 0x00016D01, 0x00016D38,
    0x00016D41, 0x00016D78, 0x00016D81, 0x00016DB8, 0x00016DC1, 0x00016DF8, 0x00016E01, 0x00016E38,
    0x00016E41, 0x00016E78, 0x00016E81, 0x00016EB8, 0x00016EC1, 0x00016EF8, 0x00016F02, 0x00017004,
    0x00017179, 0x00017184, 0x00017285, 0x00017294, 0x000172F0, 0x00017405, 0x000174D0, 0x000174DD,
    0x000177A0, 0x00017805, 0x00017EB0, 0x00017F85, 0x00017FE0, 0x00018006, 0x0001800C, 0x00018025,
    0x00018029, 0x0001803B, 0x00018044, 0x00018095, 0x000180A4, 0x00018105, 0x0001810B, 0x00018152,
    0x00018184, 0x00018189, 0x000181B5, 0x000181C3, 0x000181D9, 0x000181EC, 0x000181F5, 0x00018200,
    0x00018209, 0x000184B8, 0x000184CA, 0x000184DD, 0x000184E9, 0x00018504, 0x00018509, 0x000187DC,
    0x000187E1, 0x00018800, 0x00018829, 0x00018980, 0x00018989, 0x00018C78, 0x00018C85, 0x00018C93,
    0x00018CB5, 0x00018D01, 0x00018E05, 0x00018F20, 0x00018F81, 0x00019005, 0x000190F8, 0x00019103,
    0x00019155, 0x00019243, 0x00019285, 0x0001928B, 0x00019305, 0x00019403, 0x00019455, 0x0001958B,
    0x00019605, 0x0001A001, 0x00026E05, 0x00027001, 0x00052468, 0x00052485, 0x00052638, 0x00052681,
    0x000527F4, 0x00052801, 0x0005306C, 0x00053081, 0x00053103, 0x00053151, 0x00053160, 0x00053201,
    0x0005337A, 0x0005339C, 0x000533A2, 0x000533F4, 0x000533F9, 0x000534F2, 0x00053501, 0x00053733,
    0x00053782, 0x00053794, 0x000537C0, 0x00053805, 0x000538B9, 0x00053905, 0x00053911, 0x00053C4D,
    0x00053C59, 0x00053E58, 0x00053E81, 0x00053E90, 0x00053E99, 0x00053EA0, 0x00053EA9, 0x00053ED0,
    0x00053F91, 0x00054012, 0x00054019, 0x00054032, 0x00054039, 0x0005405A, 0x00054061, 0x0005411A,
    0x00054145, 0x00054162, 0x00054168, 0x00054183, 0x000541B5, 0x000541D0, 0x00054201, 0x000543A4,
    0x000543C0, 0x00054402, 0x00054411, 0x000545A2, 0x00054630, 0x00054674, 0x00054683, 0x000546D0,
    0x00054702, 0x00054791, 0x000547C4, 0x000547D9, 0x000547E4, 0x000547E9, 0x000547FA, 0x00054803,
    0x00054851, 0x00054932, 0x00054974, 0x00054981, 0x00054A3A, 0x00054AA0, 0x00054AFC, 0x00054B01,
    0x00054BE8, 0x00054C02, 0x00054C21, 0x00054D9A, 0x00054E0C, 0x00054E70, 0x00054E79, 0x00054E83,
    0x00054ED0, 0x00054EF4, 0x00054F01, 0x00054F2A, 0x00054F31, 0x00054F83, 0x00054FD1, 0x00054FF8,
    0x00055001, 0x0005514A, 0x000551B8, 0x00055201, 0x0005521A, 0x00055221, 0x00055262, 0x00055270,
    0x00055283, 0x000552D0, 0x000552E4, 0x00055301, 0x000553BD, 0x000553D1, 0x000553DA, 0x000553F1,
    0x00055582, 0x00055589, 0x00055592, 0x000555A9, 0x000555BA, 0x000555C9, 0x000555F2, 0x00055601,
    0x0005560A, 0x00055611, 0x00055618, 0x000556D9, 0x000556F4, 0x00055701, 0x0005575A, 0x00055784,
    0x00055791, 0x000557AA, 0x000557B8, 0x00055809, 0x00055838, 0x00055849, 0x00055878, 0x00055889,
    0x000558B8, 0x00055901, 0x00055938, 0x00055941, 0x00055978, 0x00055981, 0x00055ADD, 0x00055AE1,
    0x00055B55, 0x00055B60, 0x00055B81, 0x00055F1A, 0x00055F5C, 0x00055F62, 0x00055F70, 0x00055F83,
    0x00055FD0, 0x00056001, 0x0006BD20, 0x0006BD81, 0x0006BE38, 0x0006BE59, 0x0006BFE0, 0x0007C801,
    0x0007D370, 0x0007D381, 0x0007D6D0, 0x0007D801, 0x0007D838, 0x0007D899, 0x0007D8C0, 0x0007D8E9,
    0x0007D8F2, 0x0007D8F9, 0x0007D94D, 0x0007D951, 0x0007D9B8, 0x0007D9C1, 0x0007D9E8, 0x0007D9F1,
    0x0007D9F8, 0x0007DA01, 0x0007DA10, 0x0007DA19, 0x0007DA28, 0x0007DA31, 0x0007DD95, 0x0007DE18,
    0x0007DE99, 0x0007E9F4, 0x0007EA05, 0x0007EA81, 0x0007EC80, 0x0007EC91, 0x0007EE40, 0x0007EE7D,
    0x0007EE80, 0x0007EF81, 0x0007EFE5, 0x0007F002, 0x0007F084, 0x0007F0D0, 0x0007F102, 0x0007F184,
    0x0007F298, 0x0007F2A4, 0x0007F315, 0x0007F31C, 0x0007F325, 0x0007F338, 0x0007F344, 0x0007F34D,
    0x0007F354, 0x0007F360, 0x0007F381, 0x0007F3A8, 0x0007F3B1, 0x0007F7E8, 0x0007F80C, 0x0007F825,
    0x0007F82C, 0x0007F85D, 0x0007F864, 0x0007F883, 0x0007F8D4, 0x0007F8E5, 0x0007F8FC, 0x0007F909,
    0x0007F9DC, 0x0007F9F5, 0x0007F9FC, 0x0007FA05, 0x0007FA09, 0x0007FADC, 0x0007FAE5, 0x0007FAEC,
    0x0007FAF5, 0x0007FAFC, 0x0007FB31, 0x0007FDF8, 0x0007FE11, 0x0007FE40, 0x0007FE51, 0x0007FE80,
    0x0007FE91, 0x0007FEC0, 0x0007FED1, 0x0007FEE8, 0x0007FF05, 0x0007FF38, 0x0007FF45, 0x0007FF78,
    0x0007FFE5, 0x0007FFF0, 0x00080001, 0x00080060, 0x00080069, 0x00080138, 0x00080141, 0x000801D8,
    0x000801E1, 0x000801F0, 0x000801F9, 0x00080270, 0x00080281, 0x000802F0, 0x00080401, 0x000807D8,
    0x00080804, 0x00080818, 0x0008083B, 0x000809A0, 0x000809BD, 0x00080A03, 0x00080BCD, 0x00080C53,
    0x00080C65, 0x00080C78, 0x00080C85, 0x00080CE8, 0x00080D05, 0x00080D08, 0x00080E85, 0x00080FEA,
    0x00080FF0, 0x00081401, 0x000814E8, 0x00081501, 0x00081688, 0x00081702, 0x0008170B, 0x000817E0,
    0x00081801, 0x00081903, 0x00081920, 0x00081969, 0x00081A0B, 0x00081A11, 0x00081A53, 0x00081A58,
    0x00081A81, 0x00081BB2, 0x00081BD8, 0x00081C01, 0x00081CF0, 0x00081CFC, 0x00081D01, 0x00081E20,
    0x00081E41, 0x00081E84, 0x00081E8B, 0x00081EB0, 0x00082001, 0x000824F0, 0x00082503, 0x00082550,
    0x00082581, 0x000826A0, 0x000826C1, 0x000827E0, 0x00082801, 0x00082940, 0x00082981, 0x00082B20,
    0x00082B7C, 0x00082B81, 0x00082BD8, 0x00082BE1, 0x00082C58, 0x00082C61, 0x00082C98, 0x00082CA1,
    0x00082CB0, 0x00082CB9, 0x00082D10, 0x00082D19, 0x00082D90, 0x00082D99, 0x00082DD0, 0x00082DD9,
    0x00082DE8, 0x00083001, 0x000839B8, 0x00083A01, 0x00083AB0, 0x00083B01, 0x00083B40, 0x00083C01,
    0x00083C30, 0x00083C39, 0x00083D88, 0x00083D91, 0x00083DD8, 0x00084001, 0x00084030, 0x00084041,
    0x00084048, 0x00084051, 0x000841B0, 0x000841B9, 0x000841C8, 0x000841E1, 0x000841E8, 0x000841F9,
    0x000842B0, 0x000842BC, 0x000842C3, 0x00084301, 0x000843BD, 0x000843CB, 0x00084401, 0x000844F8,
    0x0008453B, 0x00084580, 0x00084701, 0x00084798, 0x000847A1, 0x000847B0, 0x000847DB, 0x00084801,
    0x000848B3, 0x000848E0, 0x000848FC, 0x00084901, 0x000849D0, 0x000849FC, 0x00084A00, 0x00084C01,
    0x00084DC0, 0x00084DE3, 0x00084DF1, 0x00084E03, 0x00084E80, 0x00084E93, 0x00085001, 0x0008500A,
    0x00085020, 0x0008502A, 0x00085038, 0x00085062, 0x00085081, 0x000850A0, 0x000850A9, 0x000850C0,
    0x000850C9, 0x000851B0, 0x000851C2, 0x000851D8, 0x000851FA, 0x00085203, 0x00085248, 0x00085284,
    0x000852C8, 0x00085301, 0x000853EB, 0x000853FC, 0x00085401, 0x000854EB, 0x00085500, 0x00085601,
    0x00085645, 0x00085649, 0x0008572A, 0x00085738, 0x0008575B, 0x00085784, 0x000857B8, 0x00085801,
    0x000859B0, 0x000859CC, 0x00085A01, 0x00085AB0, 0x00085AC3, 0x00085B01, 0x00085B98, 0x00085BC3,
    0x00085C01, 0x00085C90, 0x00085CCC, 0x00085CE8, 0x00085D4B, 0x00085D80, 0x00086001, 0x00086248,
    0x00086401, 0x00086598, 0x00086601, 0x00086798, 0x000867D3, 0x00086801, 0x00086922, 0x00086940,
    0x00086983, 0x000869D0, 0x00087303, 0x000873F8, 0x00087401, 0x00087550, 0x0008755A, 0x0008756C,
    0x00087570, 0x00087581, 0x00087590, 0x00087801, 0x000878EB, 0x00087939, 0x00087940, 0x00087981,
    0x00087A32, 0x00087A8B, 0x00087AAC, 0x00087AD0, 0x00087B81, 0x00087C12, 0x00087C34, 0x00087C50,
    0x00087D81, 0x00087E2B, 0x00087E60, 0x00087F01, 0x00087FB8, 0x00088002, 0x00088019, 0x000881C2,
    0x0008823C, 0x00088270, 0x00088293, 0x00088382, 0x00088389, 0x0008839A, 0x000883A9, 0x000883B0,
    0x000883FA, 0x00088419, 0x00088582, 0x000885DC, 0x000885E8, 0x000885F4, 0x00088612, 0x00088618,
    0x00088681, 0x00088748, 0x00088783, 0x000887D0, 0x00088802, 0x00088819, 0x0008893A, 0x000889A8,
    0x000889B3, 0x00088A04, 0x00088A21, 0x00088A2A, 0x00088A39, 0x00088A40, 0x00088A81, 0x00088B9A,
    0x00088BA4, 0x00088BB1, 0x00088BB8, 0x00088C02, 0x00088C19, 0x00088D9A, 0x00088E09, 0x00088E2C,
    0x00088E4A, 0x00088E6C, 0x00088E72, 0x00088E83, 0x00088ED1, 0x00088EDC, 0x00088EE1, 0x00088EEC,
    0x00088F00, 0x00088F0B, 0x00088FA8, 0x00089001, 0x00089090, 0x00089099, 0x00089162, 0x000891C4,
    0x000891F2, 0x000891F8, 0x00089401, 0x00089438, 0x00089441, 0x00089448, 0x00089451, 0x00089470,
    0x00089479, 0x000894F0, 0x000894F9, 0x0008954C, 0x00089550, 0x00089581, 0x000896FA, 0x00089758,
    0x00089783, 0x000897D0, 0x00089802, 0x00089820, 0x00089829, 0x00089868, 0x00089879, 0x00089888,
    0x00089899, 0x00089948, 0x00089951, 0x00089988, 0x00089991, 0x000899A0, 0x000899A9, 0x000899D0,
    0x000899DA, 0x000899E9, 0x000899F2, 0x00089A28, 0x00089A3A, 0x00089A48, 0x00089A5A, 0x00089A70,
    0x00089A81, 0x00089A88, 0x00089ABA, 0x00089AC0, 0x00089AE9, 0x00089B12, 0x00089B20, 0x00089B32,
    0x00089B68, 0x00089B82, 0x00089BA8, 0x0008A001, 0x0008A1AA, 0x0008A239, 0x0008A25C, 0x0008A283,
    0x0008A2D4, 0x0008A2E0, 0x0008A2EC, 0x0008A2F2, 0x0008A2F9, 0x0008A310, 0x0008A401, 0x0008A582,
    0x0008A621, 0x0008A634, 0x0008A639, 0x0008A640, 0x0008A683, 0x0008A6D0, 0x0008AC01, 0x0008AD7A,
    0x0008ADB0, 0x0008ADC2, 0x0008AE0C, 0x0008AEC1, 0x0008AEE2, 0x0008AEF0, 0x0008B001, 0x0008B182,
    0x0008B20C, 0x0008B221, 0x0008B228, 0x0008B283, 0x0008B2D0, 0x0008B304, 0x0008B368, 0x0008B401,
    0x0008B55A, 0x0008B5C1, 0x0008B5CC, 0x0008B5D0, 0x0008B603, 0x0008B650, 0x0008B801, 0x0008B8D8,
    0x0008B8EA, 0x0008B960, 0x0008B983, 0x0008B9E4, 0x0008B9FD, 0x0008BA01, 0x0008BA38, 0x0008C001,
    0x0008C162, 0x0008C1DC, 0x0008C1E0, 0x0008C501, 0x0008C703, 0x0008C798, 0x0008C7F9, 0x0008C838,
    0x0008C849, 0x0008C850, 0x0008C861, 0x0008C8A0, 0x0008C8A9, 0x0008C8B8, 0x0008C8C1, 0x0008C982,
    0x0008C9B0, 0x0008C9BA, 0x0008C9C8, 0x0008C9DA, 0x0008C9F9, 0x0008CA02, 0x0008CA09, 0x0008CA12,
    0x0008CA24, 0x0008CA38, 0x0008CA83, 0x0008CAD0, 0x0008CD01, 0x0008CD40, 0x0008CD51, 0x0008CE8A,
    0x0008CEC0, 0x0008CED2, 0x0008CF09, 0x0008CF14, 0x0008CF19, 0x0008CF22, 0x0008CF28, 0x0008D001,
    0x0008D00A, 0x0008D059, 0x0008D19A, 0x0008D1D1, 0x0008D1DA, 0x0008D1FC, 0x0008D23A, 0x0008D240,
    0x0008D281, 0x0008D28A, 0x0008D2E1, 0x0008D452, 0x0008D4D4, 0x0008D4E9, 0x0008D4F4, 0x0008D518,
    0x0008D581, 0x0008D7C8, 0x0008E001, 0x0008E048, 0x0008E051, 0x0008E17A, 0x0008E1B8, 0x0008E1C2,
    0x0008E201, 0x0008E20C, 0x0008E230, 0x0008E283, 0x0008E368, 0x0008E384, 0x0008E391, 0x0008E480,
    0x0008E492, 0x0008E540, 0x0008E54A, 0x0008E5B8, 0x0008E801, 0x0008E838, 0x0008E841, 0x0008E850,
    0x0008E859, 0x0008E98A, 0x0008E9B8, 0x0008E9D2, 0x0008E9D8, 0x0008E9E2, 0x0008E9F0, 0x0008E9FA,
    0x0008EA31, 0x0008EA3A, 0x0008EA40, 0x0008EA83, 0x0008EAD0, 0x0008EB01, 0x0008EB30, 0x0008EB39,
    0x0008EB48, 0x0008EB51, 0x0008EC52, 0x0008EC78, 0x0008EC82, 0x0008EC90, 0x0008EC9A, 0x0008ECC1,
    0x0008ECC8, 0x0008ED03, 0x0008ED50, 0x0008F701, 0x0008F79A, 0x0008F7BC, 0x0008F7C8, 0x0008FD81,
    0x0008FD88, 0x0008FE03, 0x0008FEAD, 0x0008FF90, 0x0008FFFC, 0x00090001, 0x00091CD0, 0x00092003,
    0x00092378, 0x00092384, 0x000923A8, 0x00092401, 0x00092A20, 0x00097C81, 0x00097F8C, 0x00097F98,
    0x00098001, 0x0009A178, 0x000A2001, 0x000A3238, 0x000B4001, 0x000B51C8, 0x000B5201, 0x000B52F8,
    0x000B5303, 0x000B5350, 0x000B5374, 0x000B5381, 0x000B55F8, 0x000B5603, 0x000B5650, 0x000B5681,
    0x000B5770, 0x000B5782, 0x000B57AC, 0x000B57B0, 0x000B5801, 0x000B5982, 0x000B59BC, 0x000B59E5,
    0x000B5A01, 0x000B5A24, 0x000B5A2D, 0x000B5A30, 0x000B5A83, 0x000B5AD0, 0x000B5ADB, 0x000B5B10,
    0x000B5B19, 0x000B5BC0, 0x000B5BE9, 0x000B5C80, 0x000B7201, 0x000B7403, 0x000B74BC, 0x000B74D8,
    0x000B7801, 0x000B7A58, 0x000B7A7A, 0x000B7A81, 0x000B7A8A, 0x000B7C40, 0x000B7C7A, 0x000B7C99,
    0x000B7D00, 0x000B7F01, 0x000B7F14, 0x000B7F19, 0x000B7F22, 0x000B7F28, 0x000B7F82, 0x000B7F90,
    0x000B8001, 0x000C3FC0, 0x000C4001, 0x000C66B0, 0x000C6801, 0x000C6848, 0x000D7F81, 0x000D7FA0,
    0x000D7FA9, 0x000D7FE0, 0x000D7FE9, 0x000D7FF8, 0x000D8001, 0x000D8918, 0x000D8A81, 0x000D8A98,
    0x000D8B21, 0x000D8B40, 0x000D8B81, 0x000D97E0, 0x000DE001, 0x000DE358, 0x000DE381, 0x000DE3E8,
    0x000DE401, 0x000DE448, 0x000DE481, 0x000DE4D0, 0x000DE4E5, 0x000DE4EA, 0x000DE4FC, 0x000DE500,
    0x000E7802, 0x000E7970, 0x000E7982, 0x000E7A38, 0x000E7A85, 0x000E7E20, 0x000E8005, 0x000E87B0,
    0x000E8805, 0x000E8938, 0x000E894D, 0x000E8B2A, 0x000E8B55, 0x000E8B6A, 0x000E8B98, 0x000E8BDA,
    0x000E8C1D, 0x000E8C2A, 0x000E8C65, 0x000E8D52, 0x000E8D75, 0x000E8F58, 0x000E9005, 0x000E9212,
    0x000E922D, 0x000E9230, 0x000E9703, 0x000E97A0, 0x000E9805, 0x000E9AB8, 0x000E9B03, 0x000E9BC8,
    0x000EA001, 0x000EA2A8, 0x000EA2B1, 0x000EA4E8, 0x000EA4F1, 0x000EA500, 0x000EA511, 0x000EA518,
    0x000EA529, 0x000EA538, 0x000EA549, 0x000EA568, 0x000EA571, 0x000EA5D0, 0x000EA5D9, 0x000EA5E0,
    0x000EA5E9, 0x000EA620, 0x000EA629, 0x000EA830, 0x000EA839, 0x000EA858, 0x000EA869, 0x000EA8A8,
    0x000EA8B1, 0x000EA8E8, 0x000EA8F1, 0x000EA9D0, 0x000EA9D9, 0x000EA9F8, 0x000EAA01, 0x000EAA28,
    0x000EAA31, 0x000EAA38, 0x000EAA51, 0x000EAA88, 0x000EAA91, 0x000EB530, 0x000EB541, 0x000EB60D,
    0x000EB611, 0x000EB6DD, 0x000EB6E1, 0x000EB7DD, 0x000EB7E1, 0x000EB8AD, 0x000EB8B1, 0x000EB9AD,
    0x000EB9B1, 0x000EBA7D, 0x000EBA81, 0x000EBB7D, 0x000EBB81, 0x000EBC4D, 0x000EBC51, 0x000EBD4D,
    0x000EBD51, 0x000EBE1D, 0x000EBE21, 0x000EBE60, 0x000EBE73, 0x000EC005, 0x000ED002, 0x000ED1BD,
    0x000ED1DA, 0x000ED36D, 0x000ED3AA, 0x000ED3B5, 0x000ED422, 0x000ED42D, 0x000ED43C, 0x000ED460,
    0x000ED4DA, 0x000ED500, 0x000ED50A, 0x000ED580, 0x000EF801, 0x000EF8F8, 0x000F0002, 0x000F0038,
    0x000F0042, 0x000F00C8, 0x000F00DA, 0x000F0110, 0x000F011A, 0x000F0128, 0x000F0132, 0x000F0158,
    0x000F0801, 0x000F0968, 0x000F0982, 0x000F09B9, 0x000F09F0, 0x000F0A03, 0x000F0A50, 0x000F0A71,
    0x000F0A7D, 0x000F0A80, 0x000F1481, 0x000F1572, 0x000F1578, 0x000F1601, 0x000F1762, 0x000F1783,
    0x000F17D0, 0x000F17FD, 0x000F1800, 0x000F3F01, 0x000F3F38, 0x000F3F41, 0x000F3F60, 0x000F3F69,
    0x000F3F78, 0x000F3F81, 0x000F3FF8, 0x000F4001, 0x000F4628, 0x000F463B, 0x000F4682, 0x000F46B8,
    0x000F4801, 0x000F4A22, 0x000F4A59, 0x000F4A60, 0x000F4A83, 0x000F4AD0, 0x000F4AF4, 0x000F4B00,
    0x000F638B, 0x000F6565, 0x000F656B, 0x000F6585, 0x000F658B, 0x000F65A8, 0x000F680B, 0x000F6975,
    0x000F697B, 0x000F69F0, 0x000F7001, 0x000F7020, 0x000F7029, 0x000F7100, 0x000F7109, 0x000F7118,
    0x000F7121, 0x000F7128, 0x000F7139, 0x000F7140, 0x000F7149, 0x000F7198, 0x000F71A1, 0x000F71C0,
    0x000F71C9, 0x000F71D0, 0x000F71D9, 0x000F71E0, 0x000F7211, 0x000F7218, 0x000F7239, 0x000F7240,
    0x000F7249, 0x000F7250, 0x000F7259, 0x000F7260, 0x000F7269, 0x000F7280, 0x000F7289, 0x000F7298,
    0x000F72A1, 0x000F72A8, 0x000F72B9, 0x000F72C0, 0x000F72C9, 0x000F72D0, 0x000F72D9, 0x000F72E0,
    0x000F72E9, 0x000F72F0, 0x000F72F9, 0x000F7300, 0x000F7309, 0x000F7318, 0x000F7321, 0x000F7328,
    0x000F7339, 0x000F7358, 0x000F7361, 0x000F7398, 0x000F73A1, 0x000F73C0, 0x000F73C9, 0x000F73E8,
    0x000F73F1, 0x000F73F8, 0x000F7401, 0x000F7450, 0x000F7459, 0x000F74E0, 0x000F7509, 0x000F7520,
    0x000F7529, 0x000F7550, 0x000F7559, 0x000F75E0, 0x000F7785, 0x000F7790, 0x000F8005, 0x000F8160,
    0x000F8185, 0x000F84A0, 0x000F8505, 0x000F8578, 0x000F858D, 0x000F8600, 0x000F860D, 0x000F8680,
    0x000F868D, 0x000F87B0, 0x000F8803, 0x000F886D, 0x000F8D70, 0x000F8F35, 0x000F9018, 0x000F9085,
    0x000F91E0, 0x000F9205, 0x000F9248, 0x000F9285, 0x000F9290, 0x000F9305, 0x000F9330, 0x000F9805,
    0x000FB6C0, 0x000FB6ED, 0x000FB768, 0x000FB785, 0x000FB7E8, 0x000FB805, 0x000FBBA0, 0x000FBC05,
    0x000FBEC8, 0x000FBF05, 0x000FBF60, 0x000FBF85, 0x000FBF88, 0x000FC005, 0x000FC060, 0x000FC085,
    0x000FC240, 0x000FC285, 0x000FC2D0, 0x000FC305, 0x000FC440, 0x000FC485, 0x000FC570, 0x000FC585,
    0x000FC590, 0x000FC805, 0x000FD2A0, 0x000FD305, 0x000FD370, 0x000FD385, 0x000FD3A8, 0x000FD3C5,
    0x000FD3E8, 0x000FD405, 0x000FD438, 0x000FD485, 0x000FD568, 0x000FD585, 0x000FD5D8, 0x000FD605,
    0x000FD630, 0x000FD685, 0x000FD6D0, 0x000FD705, 0x000FD740, 0x000FD785, 0x000FD7B8, 0x000FD805,
    0x000FDC98, 0x000FDCA5, 0x000FDE58, 0x000FDF83, 0x000FDFD0, 0x00100001, 0x00153700, 0x00153801,
    0x0015B9C8, 0x0015BA01, 0x0015C0F0, 0x0015C101, 0x00167510, 0x00167581, 0x00175F08, 0x0017C001,
    0x0017D0F0, 0x00180001, 0x00189A58, 0x00700802, 0x00700F80,
};

/* The classes of U+0000..U+007F, to skip the search for ASCII. */
static const uint8_t unicode_ascii_class[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    6, 4, 4, 4, 5, 4, 4, 4, 4, 4, 4, 5, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 5, 5, 5, 4,
    4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 5, 4,
    5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 5, 4, 5, 0,
};

/* White_Space (PropList.txt): what \s matches. */
static const uint32_t unicode_space_table[25] = {
    0x0009, 0x000A, 0x000B, 0x000C, 0x000D, 0x0020, 0x0085, 0x00A0, 0x1680, 0x2000,
    0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A,
    0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
};

/* deepseek-llm's explicit classes, inclusive ranges, ascending. */
static const uint32_t ds_letter_ranges[84][2] = {
    {0x0041, 0x005A}, {0x0061, 0x007A}, {0x00B5, 0x00B5}, {0x00C0, 0x00D6}, {0x00D8, 0x00F6},
    {0x00F8, 0x01BA}, {0x01BC, 0x01BF}, {0x01C4, 0x0293}, {0x0295, 0x02AF}, {0x0370, 0x0373},
    {0x0376, 0x0377}, {0x037B, 0x037D}, {0x037F, 0x037F}, {0x0386, 0x0386}, {0x0388, 0x038A},
    {0x038C, 0x038C}, {0x038E, 0x03A1}, {0x03A3, 0x03F5}, {0x03F7, 0x0481}, {0x048A, 0x052F},
    {0x0531, 0x0556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59},
    {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB},
    {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107},
    {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126},
    {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4},
    {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F},
    {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17},
    {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
static const uint32_t ds_punct_ranges[6][2] = {
    {0x0021, 0x002F}, {0x003A, 0x007E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F},
    {0xFF1A, 0xFF5E},
};
static const uint32_t ds_cjk_ranges[2][2] = {
    {0x0800, 0x9FA5}, {0xAC00, 0xD7FF},
};
/* The same classes for U+0000..U+007F, to skip the search: bit 0 letter, 1 punct., 2 CJK. */
static const uint8_t ds_ascii[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2,
    2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2,
    2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 0,
};
/* END GENERATED UNICODE TABLES */

/* The general category class (UC_*) of a code point: the last run that starts at or before it. */
static int unicode_class(uint32_t cp)
{
    if (cp < 0x80) return unicode_ascii_class[cp];
    size_t lo = 0, hi = sizeof unicode_class_table / sizeof unicode_class_table[0];
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (unicode_class_table[mid] >> 3 <= cp) lo = mid;
        else hi = mid;
    }
    return (int)(unicode_class_table[lo] & 7);
}

static bool unicode_is_space(uint32_t cp)
{
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0d);
    for (size_t i = 0; i < sizeof unicode_space_table / sizeof unicode_space_table[0]; i++)
        if (unicode_space_table[i] == cp) return true;
    return false;
}

/* Is cp in one of n sorted, disjoint, inclusive ranges? */
static bool unicode_in_ranges(uint32_t cp, const uint32_t (*r)[2], size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

static bool ds_is_letter(uint32_t cp)
{
    if (cp < 0x80) return ds_ascii[cp] & 1;
    return unicode_in_ranges(cp, ds_letter_ranges, sizeof ds_letter_ranges / sizeof ds_letter_ranges[0]);
}
static bool ds_is_punct(uint32_t cp)
{
    if (cp < 0x80) return ds_ascii[cp] & 2;
    return unicode_in_ranges(cp, ds_punct_ranges, sizeof ds_punct_ranges / sizeof ds_punct_ranges[0]);
}
static bool ds_is_cjk(uint32_t cp) { return unicode_in_ranges(cp, ds_cjk_ranges, sizeof ds_cjk_ranges / sizeof ds_cjk_ranges[0]); }

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
 * few hundred common English pieces.  Its text is gibberish; its numerics are real.  With
 * `chatml` the vocabulary also has the control tokens <|im_start|> and <|im_end|> (which ends
 * generation, found by its text) and the file a minimal ChatML tokenizer.chat_template, so chat
 * tests meet what a Qwen model brings: special tokens in the prompt and a template to detect.
 * ============================================================================================= */

typedef struct {
    int arch;       /* ARCH_LLAMA or ARCH_QWEN2 */
    int type;       /* type of the big matrices */
    int out_type;   /* type of the output matrix (-1: same as type) */
    int n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
    bool tied;      /* no output.weight: reuse token_embd */
    uint64_t seed;
    int mix;        /* SYNTH_MIX_*: per-tensor types like llama-quantize's presets */
    bool chatml;    /* add <|im_start|> and <|im_end|> as control tokens and a ChatML chat template */
} synth_params;

/* Q4_K_M as llama-quantize lays it out: Q4_K everywhere, but Q6_K for attn_v and ffn_down in the
 * first and last eighth of the layers and every third layer between, and for the output. */
enum { SYNTH_MIX_NONE = 0, SYNTH_MIX_Q4_K_M = 1 };

static bool synth_more_bits(int l, int n_layer)
{
    return l < n_layer / 8 || l >= 7 * n_layer / 8 || (l - n_layer / 8) % 3 == 2;
}

static const char *const synth_words[] = {
    "the", "and", "to", "of", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "I",
    "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but", "what", "some", "we",
    "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she",
    "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "would", "like", "so",
    "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come",
    "did", "my", "sound", "no", "most", "number", "who", "over", "know", "water", "than", "call", "first", "people",
    "may", "down", "side", "been", "now", "find", "Once", "upon", "little", "girl", "boy", "dog", "cat", "ball",
    "park", "happy", "play", "big", "red", "Lily", "Tom", "friend", "tree", "sun", "mom", "dad", "home", "went"};

/* Append a piece unless the vocabulary already has it (a GGUF vocabulary must not repeat a
 * text: llama.cpp refuses such files, and lookups by text would be ambiguous). */
static void synth_piece(char **text, float *score, int32_t *type, int *n, int cap, const char *piece, float sc, int ty)
{
    if (*n >= cap) return;
    for (int i = 0; i < *n; i++)
        if (!strcmp(text[i], piece)) return;
    text[*n] = strdup(piece), score[*n] = sc, type[*n] = ty, (*n)++;
}

/* Build the vocabulary arrays; returns the number of tokens written (<= cap). */
static int synth_vocab(char **text, float *score, int32_t *type, int cap, bool chatml)
{
    int n = 0;
    const char *fixed[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) synth_piece(text, score, type, &n, cap, fixed[i], 0, i == 0 ? TOKT_UNKNOWN : TOKT_CONTROL);
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        synth_piece(text, score, type, &n, cap, buf, 0, TOKT_BYTE);
    }
    for (int c = 33; c < 127; c++) {
        char buf[2] = {(char)c, 0};
        synth_piece(text, score, type, &n, cap, buf, -1000.0f - (float)n, TOKT_NORMAL);
    }
    synth_piece(text, score, type, &n, cap, "\xe2\x96\x81", -1000.0f - (float)n, TOKT_NORMAL);
    for (size_t w = 0; w < sizeof synth_words / sizeof synth_words[0]; w++) {
        char buf[64];
        snprintf(buf, sizeof buf, "\xe2\x96\x81%s", synth_words[w]);
        synth_piece(text, score, type, &n, cap, buf, -(float)w, TOKT_NORMAL);
        synth_piece(text, score, type, &n, cap, synth_words[w], -100.0f - (float)w, TOKT_NORMAL);
    }
    /* prefixes of the words, so that merging can build them pair by pair */
    for (size_t w = 0; w < sizeof synth_words / sizeof synth_words[0]; w++) {
        char buf[64];
        int wl = (int)strlen(synth_words[w]);
        for (int l = 1; l < wl; l++) {
            snprintf(buf, sizeof buf, "\xe2\x96\x81%.*s", l, synth_words[w]);
            synth_piece(text, score, type, &n, cap, buf, -200.0f - (float)n, TOKT_NORMAL);
        }
    }
    for (int i = 0; chatml && i < 2 && n < cap; i++) /* after the words: plain models keep their ids */
        text[n] = strdup(i ? "<|im_end|>" : "<|im_start|>"), score[n] = 0, type[n] = TOKT_CONTROL, n++;
    while (n < cap) { /* pad to the requested size with unused filler pieces (unique by their number) */
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
    synth_vocab(text, score, ttype, n_vocab, sp->chatml);
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
    if (sp->chatml)
        gguf_writer_str(&w, "tokenizer.chat_template",
                        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");

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
            int type = t[i].vec ? TYPE_F32 : sp->type;
            if (sp->mix == SYNTH_MIX_Q4_K_M && !t[i].vec && (strstr(t[i].name, "attn_v") || strstr(t[i].name, "ffn_down")) &&
                synth_more_bits(l, sp->n_layer))
                type = TYPE_Q6_K;
            if (gguf_writer_tensor_f32(&w, name, type, t[i].vec ? 1 : 2, tne, buf, e)) goto done;
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
static int prof_kv_to_wire(int kv_type) { return kv_gtype(kv_type); }
static int prof_kv_from_wire(uint64_t t) { return t == TYPE_F32 ? HALDA_KV_F32 : t == TYPE_F16 ? HALDA_KV_F16 : t == TYPE_Q8_0 ? HALDA_KV_Q8_0 : -1; }

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
    for (int i = 0; i < 8; i++) size_le[i] = (uint8_t)(f->map.file_size >> (8 * i));
    uint64_t h = prof_fnv1a(PROF_FNV_BASIS, f->map.data, (size_t)gguf_header_bytes(f));
    h = prof_fnv1a(h, size_le, 8);
    return h ? h : 1; /* 0 means "no model" */
}

/* Bytes of a context's scratch arena, as halda run allocates it (n_batch 512 capped at the
 * context). */
static uint64_t prof_compute_bytes(const model_hparams *hp, int n_ctx, int n_threads)
{
    return context_arena_bytes(hp, n_ctx, n_ctx < 512 ? n_ctx : 512, n_threads);
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
            *t = (tensor){p, sig->type[i], {ne[0], ne[1]}, type_row_bytes(sig->type[i], ne[0]), prof_matrix_name[i], 0, 0};
            if (c == 0) prof_fill_tensor(p, t->type, ne[0], ne[1], row, &rng);
            p += prof_align64((size_t)ne[1] * t->row_bytes);
        }
        tensor *vec[5] = {&L->attn_norm, &L->ffn_norm, &L->bq, &L->bk, &L->bv};
        int64_t len[5] = {E, E, Q, K, K};
        for (int v = 0; v < (sig->bias ? 5 : 2); v++) {
            *vec[v] = (tensor){p, TYPE_F32, {len[v], 1}, (size_t)len[v] * 4, "vector", 0, 0};
            if (c == 0)
                for (int64_t j = 0; j < len[v]; j++) ((float *)p)[j] = v < 2 ? 1.0f + 0.1f * (2.0f * rand_unit(&rng) - 1.0f) : 0.1f * (2.0f * rand_unit(&rng) - 1.0f);
            p += prof_align64((size_t)len[v] * 4);
        }
        if (c > 0) memcpy(start, s->model.layers[0].wq.data, (size_t)(p - start)); /* same bytes, distinct memory */
    }
    s->model.output = (tensor){p, out_type, {E, n_vocab}, type_row_bytes(out_type, E), "output.weight", 0, 0};
    prof_fill_tensor(p, out_type, E, n_vocab, row, &rng);
    p += prof_align64((size_t)out_bytes);
    s->model.output_norm = (tensor){p, TYPE_F32, {E, 1}, (size_t)E * 4, "output_norm.weight", 0, 0};
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
    int kv_type;            /* HALDA_KV_F16, HALDA_KV_F32 or HALDA_KV_Q8_0 */
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
    model_profile cm = {0};
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
            HALDA_SIMD_NAME);
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

/* ============================================================================================
 * 12. Halda solver: which device runs which layers, proven optimal
 *
 * The cost model (../shared/halda/MODEL.md, version 1) predicts the time T to decode one token on
 * a ring of devices for a plan (k, w, n): k cycles around the ring per token, device m runs a
 * window of w[m] layers per cycle, the last n[m] of them on its GPU. This section parses an
 * instance, evaluates a plan exactly as the model defines it (solve_plan_latency is the
 * specification everything else is checked against), and finds the plan with the smallest T by
 * branch and bound, or says which memory constraint makes every plan infeasible.
 *
 * The one idea to hold: for a fixed k, T = kappa + sigma + sum over devices of a term that
 * depends on the device's own choice, where sigma = k*C is the cycle time summed over the k
 * cycles. Only devices whose window fits while overloaded ("window fits": they prefetch the next
 * window while the others compute) look at sigma, through max(0, y - sigma). So T is a sum of
 * per-device costs plus one scalar coupling, and a dynamic program over (device, layers used)
 * gives exact answers when nothing couples and strong lower bounds when something does; a depth
 * first search over the devices' (w, n) choices closes the gap. Headers used (halda.c includes
 * them): stdio.h, stdlib.h, string.h, math.h, stdint.h, errno.h, limits.h, stdarg.h.
 * ============================================================================================ */

/* ---- Limits. Hard caps keep every loop and allocation bounded whatever the input says. ------ */
enum {
    SOLVE_MAX_DEVICES = 64,   /* devices in a ring (the issue's cap) */
    SOLVE_MAX_LAYERS = 512,   /* transformer layers; real models have at most a few hundred */
    SOLVE_NAME_MAX = 64,      /* bytes of a device name, including the terminating NUL */
    SOLVE_LINE_MAX = 4096,    /* bytes of one instance line */
    SOLVE_FILE_MAX = 1 << 20  /* bytes of an instance file */
};
/* Every number in an instance must be <= this: 1e15 bytes is a petabyte, 1e15 ms 30,000 years.
 * Below 2^53, so byte counts given as integers are exact doubles. */
static const double solve_number_max = 1e15;
/* A disk slower than this (bytes/s) must never be paged from (MODEL.md). */
static const double solve_slow_disk = 0.1e9;

typedef enum { SOLVE_OS_LINUX, SOLVE_OS_ANDROID, SOLVE_OS_MACOS } solve_os;
typedef enum { SOLVE_GPU_NONE, SOLVE_GPU_CUDA, SOLVE_GPU_METAL } solve_gpu;

/* One device of the ring, as profiled. Times are per token and per layer, in ms. */
typedef struct {
    char name[SOLVE_NAME_MAX];
    solve_os os;
    solve_gpu gpu;
    double t_cpu_ms;          /* one layer on the CPU */
    double t_gpu_ms;          /* one layer on the GPU (unused without a GPU) */
    double t_comm_ms;         /* handing one token's activations to the next active device */
    double ram_bytes;         /* what this program may keep resident */
    double vram_bytes;        /* free GPU memory; for metal the working-set limit */
    double disk_bytes_per_s;  /* model-file read speed (random on macos, sequential elsewhere) */
    double fixed_ram_bytes;   /* buffers that do not scale with layers */
    double fixed_vram_bytes;  /* GPU buffers that do not scale with layers (CUDA context, ...) */
} solve_device;

typedef struct {
    int n_layer;              /* L */
    double layer_bytes;       /* b: weights of one layer */
    double kv_bytes;          /* K+V cache of one layer; b' = b + kv_bytes */
    double kappa_ms;          /* fixed head time: embedding, output layer, sampling */
} solve_model;

typedef struct {
    solve_model model;
    int kmax;                 /* largest k allowed; 0 means L (the default) */
    int n_device;             /* 1..SOLVE_MAX_DEVICES; device[0] is the head */
    solve_device device[SOLVE_MAX_DEVICES];
} solve_instance;

/* A plan: k cycles, window w[m] and GPU layers n[m] per device, and its predicted T. */
typedef struct {
    int k;
    int w[SOLVE_MAX_DEVICES];
    int n[SOLVE_MAX_DEVICES];
    double latency_ms;
} solve_plan;

/* What the search did, for benchmarks and curious users. */
typedef struct {
    long long nodes;          /* depth-first search nodes expanded, over every k */
    long long intervals;      /* sigma intervals searched (more than k_searched when split) */
    long long options;        /* (w, n) choices kept after dominance, summed over k and devices */
    int k_feasible;           /* values of k with at least one feasible plan */
    int k_searched;           /* values of k whose search was not pruned at the root */
} solve_stats;

/* Writes a printf-style message into a caller's buffer (never a global). */
static void solve_msg(char *buf, size_t len, const char *fmt, ...)
{
    if (!buf || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* ---- The instance format -------------------------------------------------------------------
 * TRUST BOUNDARY: the instance text is untrusted (a file, or bytes from a peer). Every field is
 * checked here: record and key names against fixed lists, numbers for syntax, finiteness, sign
 * and the caps above, integers for integrality, names for length and characters, and the
 * record counts (one model, at most one options, 1..64 devices). Lines are copied into a
 * bounded buffer before they are looked at, so embedded NUL bytes or a missing final newline
 * cannot make us read past `len`. Errors say "line N: what" with N counted from 1.
 *
 * Format: `#` starts a comment; each line is a record type followed by key=value fields:
 *     model layers=L layer_bytes=B kv_bytes=B kappa_ms=T          (exactly once)
 *     options kmax=K                                               (optional)
 *     device name=S os=linux|android|macos gpu=none|cuda|metal t_cpu=T t_gpu=T t_comm=T
 *            ram=B vram=B disk=B/s fixed_ram=B fixed_vram=B        (1..64, head first)
 * Every model key is required. For a device, t_gpu and vram are required when it has a GPU and
 * default to 0 without one; fixed_ram and fixed_vram default to 0; the rest are required.
 * -------------------------------------------------------------------------------------------- */

static int solve_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Parses a non-negative finite decimal number no larger than solve_number_max. Only the
 * characters of a decimal literal are accepted, so strtod's "inf", "nan" and hex forms never
 * get in. Returns 0, or -1 with the reason in why. */
static int solve_parse_number(const char *s, double *out, const char **why)
{
    if (!*s) { *why = "empty value"; return -1; }
    for (const char *p = s; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' ||
              *p == '-')) {
            *why = "not a number";
            return -1;
        }
    }
    /* strtod follows LC_NUMERIC; halda never calls setlocale, so the point is '.'. */
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0') { *why = "not a number"; return -1; }
    if (!isfinite(v)) { *why = "not a finite number"; return -1; }
    if (v < 0) { *why = "must not be negative"; return -1; }
    if (v > solve_number_max) { *why = "too large (the cap is 1e15)"; return -1; }
    *out = v;
    return 0;
}

/* The keys a record may carry, in the order their values are returned by solve_parse_fields;
 * `required` says whether the record is incomplete without it. */
typedef struct {
    const char *key;
    int required;
} solve_key;

static const solve_key solve_model_keys[] = {
    {"layers", 1}, {"layer_bytes", 1}, {"kv_bytes", 1}, {"kappa_ms", 1},
};
static const solve_key solve_options_keys[] = {
    {"kmax", 1},
};
/* Device keys; index 0..2 are the text fields name, os and gpu. */
static const solve_key solve_device_keys[] = {
    {"name", 1}, {"os", 1}, {"gpu", 1}, {"t_cpu", 1}, {"t_gpu", 0}, {"t_comm", 1},
    {"ram", 1}, {"vram", 0}, {"disk", 1}, {"fixed_ram", 0}, {"fixed_vram", 0},
};

/* Splits one record's fields into values[] by key; reports unknown, duplicate or malformed
 * fields. `fields` points just past the record type; text values are returned as pointers into
 * the line buffer, numbers parsed. */
static int solve_parse_fields(char *fields, int line_no, const char *record,
                              const solve_key *keys, int n_keys, double *values,
                              const char **texts, int n_texts, int *seen, char *err,
                              size_t err_len)
{
    for (int i = 0; i < n_keys; i++) seen[i] = 0;
    char *p = fields;
    for (;;) {
        while (solve_is_space(*p)) p++;
        if (!*p) break;
        char *tok = p;
        while (*p && !solve_is_space(*p)) p++;
        if (*p) *p++ = '\0';
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) {
            solve_msg(err, err_len, "line %d: '%.60s' in the %s record is not key=value",
                      line_no, tok, record);
            return -1;
        }
        *eq = '\0';
        const char *val = eq + 1;
        int idx = -1;
        for (int i = 0; i < n_keys; i++)
            if (strcmp(tok, keys[i].key) == 0) idx = i;
        if (idx < 0) {
            solve_msg(err, err_len, "line %d: unknown key '%.60s' in the %s record", line_no,
                      tok, record);
            return -1;
        }
        if (seen[idx]) {
            solve_msg(err, err_len, "line %d: key '%s' given twice", line_no, tok);
            return -1;
        }
        seen[idx] = 1;
        if (idx < n_texts) {
            texts[idx] = val;
        } else {
            const char *why = NULL;
            if (solve_parse_number(val, &values[idx], &why) != 0) {
                solve_msg(err, err_len, "line %d: %s=%.60s: %s", line_no, tok, val, why);
                return -1;
            }
        }
    }
    for (int i = 0; i < n_keys; i++) {
        if (keys[i].required && !seen[i]) {
            solve_msg(err, err_len, "line %d: the %s record lacks %s=", line_no, record,
                      keys[i].key);
            return -1;
        }
    }
    return 0;
}

/* Checks that v is a whole number in [lo, hi]. */
static int solve_parse_int(double v, int lo, int hi, int *out)
{
    if (v != floor(v) || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* A name is 1..63 printable ASCII characters other than '=' and '#', so that plan lines
 * `NAME w=W n=N` always split back into the same fields. */
static int solve_check_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len >= SOLVE_NAME_MAX) return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '=' || c == '#') return -1;
    }
    return 0;
}

static int solve_parse_device(char *fields, int line_no, solve_instance *out, char *err,
                              size_t err_len)
{
    enum { N_KEYS = (int)(sizeof solve_device_keys / sizeof solve_device_keys[0]) };
    double v[N_KEYS] = {0};
    const char *text[3] = {NULL, NULL, NULL};
    int seen[N_KEYS];
    if (out->n_device >= SOLVE_MAX_DEVICES) {
        solve_msg(err, err_len, "line %d: more than %d devices", line_no, SOLVE_MAX_DEVICES);
        return -1;
    }
    if (solve_parse_fields(fields, line_no, "device", solve_device_keys, N_KEYS, v, text, 3,
                           seen, err, err_len) != 0)
        return -1;
    solve_device *d = &out->device[out->n_device];
    memset(d, 0, sizeof *d);
    if (solve_check_name(text[0]) != 0) {
        solve_msg(err, err_len,
                  "line %d: name=%.60s: a name is 1 to %d printable characters without '=' "
                  "or '#'", line_no, text[0], SOLVE_NAME_MAX - 1);
        return -1;
    }
    for (int i = 0; i < out->n_device; i++) {
        if (strcmp(out->device[i].name, text[0]) == 0) {
            solve_msg(err, err_len, "line %d: device name '%s' is used twice", line_no,
                      text[0]);
            return -1;
        }
    }
    memcpy(d->name, text[0], strlen(text[0]) + 1);
    if (strcmp(text[1], "linux") == 0) d->os = SOLVE_OS_LINUX;
    else if (strcmp(text[1], "android") == 0) d->os = SOLVE_OS_ANDROID;
    else if (strcmp(text[1], "macos") == 0) d->os = SOLVE_OS_MACOS;
    else {
        solve_msg(err, err_len, "line %d: os=%.60s: expected linux, android or macos",
                  line_no, text[1]);
        return -1;
    }
    if (strcmp(text[2], "none") == 0) d->gpu = SOLVE_GPU_NONE;
    else if (strcmp(text[2], "cuda") == 0) d->gpu = SOLVE_GPU_CUDA;
    else if (strcmp(text[2], "metal") == 0) d->gpu = SOLVE_GPU_METAL;
    else {
        solve_msg(err, err_len, "line %d: gpu=%.60s: expected none, cuda or metal", line_no,
                  text[2]);
        return -1;
    }
    if (d->gpu != SOLVE_GPU_NONE && (!seen[4] || !seen[7])) {
        solve_msg(err, err_len, "line %d: a device with a GPU needs t_gpu= and vram=",
                  line_no);
        return -1;
    }
    d->t_cpu_ms = v[3];
    d->t_gpu_ms = v[4];
    d->t_comm_ms = v[5];
    d->ram_bytes = v[6];
    d->vram_bytes = v[7];
    d->disk_bytes_per_s = v[8];
    d->fixed_ram_bytes = v[9];
    d->fixed_vram_bytes = v[10];
    out->n_device++;
    return 0;
}

/* Parses one line (already NUL-terminated, comment stripped) into out. */
static int solve_parse_line(char *line, int line_no, solve_instance *out, int *have_model,
                            int *have_options, char *err, size_t err_len)
{
    char *p = line;
    while (solve_is_space(*p)) p++;
    if (!*p) return 0; /* blank or comment-only line */
    char *type = p;
    while (*p && !solve_is_space(*p)) p++;
    if (*p) *p++ = '\0';
    if (strcmp(type, "model") == 0) {
        double v[4] = {0};
        int seen[4];
        if (*have_model) {
            solve_msg(err, err_len, "line %d: a second model record", line_no);
            return -1;
        }
        if (solve_parse_fields(p, line_no, "model", solve_model_keys, 4, v, NULL, 0, seen, err,
                               err_len) != 0)
            return -1;
        if (solve_parse_int(v[0], 1, SOLVE_MAX_LAYERS, &out->model.n_layer) != 0) {
            solve_msg(err, err_len, "line %d: layers=%g: expected a whole number from 1 to %d",
                      line_no, v[0], SOLVE_MAX_LAYERS);
            return -1;
        }
        out->model.layer_bytes = v[1];
        out->model.kv_bytes = v[2];
        out->model.kappa_ms = v[3];
        *have_model = 1;
        return 0;
    }
    if (strcmp(type, "options") == 0) {
        double v[1] = {0};
        int seen[1];
        if (*have_options) {
            solve_msg(err, err_len, "line %d: a second options record", line_no);
            return -1;
        }
        if (solve_parse_fields(p, line_no, "options", solve_options_keys, 1, v, NULL, 0, seen,
                               err, err_len) != 0)
            return -1;
        if (solve_parse_int(v[0], 1, INT_MAX, &out->kmax) != 0) {
            solve_msg(err, err_len, "line %d: kmax=%g: expected a whole number >= 1", line_no,
                      v[0]);
            return -1;
        }
        *have_options = 1;
        return 0;
    }
    if (strcmp(type, "device") == 0) return solve_parse_device(p, line_no, out, err, err_len);
    solve_msg(err, err_len, "line %d: unknown record '%.60s' (expected model, options or device)",
              line_no, type);
    return -1;
}

/* Parses an instance from text[0..len) into *out. Returns 0, or -1 with "line N: ..." in err.
 * `text` need not be NUL-terminated. *out is fully overwritten; nothing is allocated. */
static int solve_parse_instance(const char *text, size_t len, solve_instance *out, char *err,
                                size_t err_len)
{
    char line[SOLVE_LINE_MAX + 1];
    int line_no = 0, have_model = 0, have_options = 0;
    memset(out, 0, sizeof *out);
    size_t pos = 0;
    while (pos < len) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        line_no++;
        if (n > SOLVE_LINE_MAX) {
            solve_msg(err, err_len, "line %d: longer than %d bytes", line_no, SOLVE_LINE_MAX);
            return -1;
        }
        memcpy(line, start, n);
        line[n] = '\0';
        char *hash = memchr(line, '#', n);
        size_t effective = hash ? (size_t)(hash - line) : n;
        if (memchr(line, '\0', effective)) {
            solve_msg(err, err_len, "line %d: contains a NUL byte", line_no);
            return -1;
        }
        line[effective] = '\0';
        if (solve_parse_line(line, line_no, out, &have_model, &have_options, err, err_len) != 0)
            return -1;
    }
    /* Missing records are reported at the last line, where the reader noticed them (line 1
     * of an empty input). */
    if (line_no == 0) line_no = 1;
    if (!have_model) {
        solve_msg(err, err_len, "line %d: end of input without a model record", line_no);
        return -1;
    }
    if (out->n_device == 0) {
        solve_msg(err, err_len,
                  "line %d: end of input without a device record (the head device, "
                  "listed first, is required)", line_no);
        return -1;
    }
    return 0;
}

/* Reads and parses an instance file ("-" is standard input). Returns 0, or -1 with the reason
 * in err ("line N: ..." for content errors). */
static int solve_instance_read_file(const char *path, solve_instance *out, char *err,
                                    size_t err_len)
{
    int from_stdin = strcmp(path, "-") == 0;
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        solve_msg(err, err_len, "cannot open: %s", strerror(errno));
        return -1;
    }
    char *buf = malloc((size_t)SOLVE_FILE_MAX + 1);
    if (!buf) {
        if (!from_stdin) fclose(f);
        solve_msg(err, err_len, "out of memory");
        return -1;
    }
    size_t n = fread(buf, 1, (size_t)SOLVE_FILE_MAX + 1, f);
    int read_error = ferror(f);
    if (!from_stdin) fclose(f);
    int rc = -1;
    if (read_error) solve_msg(err, err_len, "read error");
    else if (n > (size_t)SOLVE_FILE_MAX)
        solve_msg(err, err_len, "larger than %d bytes", SOLVE_FILE_MAX);
    else rc = solve_parse_instance(buf, n, out, err, err_len);
    free(buf);
    return rc;
}

/* The same checks as the parser, for instances built in memory from profiled numbers. */
static int solve_instance_check(const solve_instance *in, char *why, size_t why_len)
{
    const solve_model *md = &in->model;
    if (in->n_device < 1 || in->n_device > SOLVE_MAX_DEVICES) {
        solve_msg(why, why_len, "n_device=%d: expected 1 to %d", in->n_device,
                  SOLVE_MAX_DEVICES);
        return -1;
    }
    if (md->n_layer < 1 || md->n_layer > SOLVE_MAX_LAYERS || in->kmax < 0) {
        solve_msg(why, why_len, "n_layer=%d kmax=%d: out of range", md->n_layer, in->kmax);
        return -1;
    }
    double model_nums[3] = {md->layer_bytes, md->kv_bytes, md->kappa_ms};
    for (int i = 0; i < 3; i++) {
        if (!(model_nums[i] >= 0 && model_nums[i] <= solve_number_max)) {
            solve_msg(why, why_len, "model numbers must be finite, >= 0 and <= 1e15");
            return -1;
        }
    }
    for (int m = 0; m < in->n_device; m++) {
        const solve_device *d = &in->device[m];
        double nums[8] = {d->t_cpu_ms, d->t_gpu_ms, d->t_comm_ms, d->ram_bytes, d->vram_bytes,
                          d->disk_bytes_per_s, d->fixed_ram_bytes, d->fixed_vram_bytes};
        for (int i = 0; i < 8; i++) {
            if (!(nums[i] >= 0 && nums[i] <= solve_number_max)) {
                solve_msg(why, why_len, "device %d: numbers must be finite, >= 0 and <= 1e15",
                          m);
                return -1;
            }
        }
        if ((unsigned)d->os > SOLVE_OS_MACOS || (unsigned)d->gpu > SOLVE_GPU_METAL ||
            !memchr(d->name, '\0', sizeof d->name)) {
            solve_msg(why, why_len, "device %d: bad os, gpu or name", m);
            return -1;
        }
    }
    return 0;
}

/* ---- The model: one device's use of memory and time --------------------------------------
 * Everything that decides feasibility and regime lives in solve_device_eval, so the search,
 * the plan evaluator and --explain can never disagree about a boundary case (R == ram, say):
 * they all compute the same doubles in the same order. For an active device (w >= 1), with
 * b' = b + kv_bytes, s = 1 on cuda (its GPU layers live in VRAM) and 0 otherwise, and
 * fixed = fixed_ram (+ fixed_vram on metal, which shares RAM):
 *     VRAM use        k*n*b' + fixed_vram          <= vram on cuda and metal (hard)
 *     R (RAM need)    k*(w - s*n)*b' + fixed       overloaded when R > ram
 *     window need     2*(w - s*n)*b' + fixed       the window fits when <= ram
 *     B (bytes/token) k*w*b on macos+metal, else R - ram       (only when overloaded)
 *     D (ms/token)    1000*B/disk; a disk slower than 0.1e9 B/s may not be overloaded (hard)
 *     own             (w - n)*t_cpu + n*t_gpu + t_comm          (ms per cycle)
 * Note that the window test has no k: for k = 1 overloaded implies the window does not fit,
 * for k = 2 "fits" and "not overloaded" are the same test, so prefetching (the window-fits
 * regime) only exists for k >= 3. That is what makes k > 1 worth anything.
 * -------------------------------------------------------------------------------------------- */

typedef enum {
    SOLVE_INACTIVE = 0,   /* w = 0: left out of the ring, costs nothing */
    SOLVE_RESIDENT,       /* R <= ram: X = 0 */
    SOLVE_OVERLOADED,     /* R > ram, window does not fit: X = D, nothing hides the reads */
    SOLVE_WINDOW_FITS     /* R > ram, window fits: X = max(0, D - k*S), prefetch behind others */
} solve_regime;

typedef enum {
    SOLVE_ALLOWED = 0,
    SOLVE_BAD_SHAPE,      /* n < 0, n > w, w < 0, or n > 0 without a GPU */
    SOLVE_OVER_VRAM,      /* k*n*b' + fixed_vram > vram */
    SOLVE_SLOW_DISK       /* overloaded, but the disk is slower than 0.1e9 B/s */
} solve_violation;

typedef struct {
    solve_violation violation;
    solve_regime regime;
    double own_ms;         /* per cycle; 0 when inactive */
    double vram_bytes;     /* k*n*b' + fixed_vram on a GPU device, else 0 */
    double ram_bytes;      /* R */
    double window_bytes;   /* 2*(w - s*n)*b' + fixed */
    double disk_bytes;     /* B: re-read per token, 0 unless overloaded */
    double disk_ms;        /* D = 1000*B/disk, 0 unless overloaded */
} solve_device_use;

static void solve_device_eval(const solve_instance *in, int m, int k, int w, int n,
                              solve_device_use *u)
{
    const solve_device *d = &in->device[m];
    double bp = in->model.layer_bytes + in->model.kv_bytes;
    memset(u, 0, sizeof *u);
    if (w < 0 || n < 0 || n > w || (d->gpu == SOLVE_GPU_NONE && n > 0)) {
        u->violation = SOLVE_BAD_SHAPE;
        return;
    }
    if (w == 0) {
        u->regime = SOLVE_INACTIVE;
        return;
    }
    int s = d->gpu == SOLVE_GPU_CUDA ? 1 : 0;
    double fixed = d->fixed_ram_bytes + (d->gpu == SOLVE_GPU_METAL ? d->fixed_vram_bytes : 0.0);
    double resident_layers = (double)(w - s * n);
    u->own_ms = (double)(w - n) * d->t_cpu_ms + (double)n * d->t_gpu_ms + d->t_comm_ms;
    if (d->gpu != SOLVE_GPU_NONE) {
        u->vram_bytes = (double)k * (double)n * bp + d->fixed_vram_bytes;
        if (u->vram_bytes > d->vram_bytes) u->violation = SOLVE_OVER_VRAM;
    }
    u->ram_bytes = (double)k * resident_layers * bp + fixed;
    u->window_bytes = 2.0 * resident_layers * bp + fixed;
    if (u->ram_bytes <= d->ram_bytes) {
        u->regime = SOLVE_RESIDENT;
        return;
    }
    if (d->disk_bytes_per_s < solve_slow_disk) {
        if (u->violation == SOLVE_ALLOWED) u->violation = SOLVE_SLOW_DISK;
        u->regime = SOLVE_OVERLOADED;
        return;
    }
    u->regime = u->window_bytes <= d->ram_bytes ? SOLVE_WINDOW_FITS : SOLVE_OVERLOADED;
    if (d->os == SOLVE_OS_MACOS && d->gpu == SOLVE_GPU_METAL)
        u->disk_bytes = (double)k * (double)w * in->model.layer_bytes;
    else
        u->disk_bytes = u->ram_bytes - d->ram_bytes;
    u->disk_ms = 1000.0 * u->disk_bytes / d->disk_bytes_per_s;
}

/* The largest k a plan may use: kmax, or L when kmax is 0 or larger than L. */
static int solve_kmax(const solve_instance *in)
{
    int L = in->model.n_layer;
    return in->kmax > 0 && in->kmax < L ? in->kmax : L;
}

/* Exposed disk time X of one device given k*C (sigma): 0 resident, D overloaded, and
 * max(0, D - k*S) = max(0, D - (sigma - k*own)) when its window fits. */
static double solve_exposed_ms(const solve_device_use *u, int k, double sigma)
{
    if (u->regime == SOLVE_OVERLOADED) return u->disk_ms;
    if (u->regime != SOLVE_WINDOW_FITS) return 0.0;
    double hidden = sigma - (double)k * u->own_ms; /* k*S: others' time to prefetch behind */
    return u->disk_ms > hidden ? u->disk_ms - hidden : 0.0;
}

/* T of a plan, computed from the definition: T = kappa + k*C + sum X[m]. Returns INFINITY when
 * the plan breaks a constraint (k not a divisor of L or above kmax, sum w != L/k, w[0] = 0,
 * n outside [0, w], a GPU layer on a GPU-less device, VRAM, or overloading a slow disk). This
 * is the specification: the search's own arithmetic is checked against it. */
static double solve_plan_latency(const solve_instance *in, const solve_plan *plan)
{
    int L = in->model.n_layer, k = plan->k, M = in->n_device;
    if (k < 1 || k > solve_kmax(in) || L % k != 0) return INFINITY;
    if (plan->w[0] < 1) return INFINITY;
    solve_device_use use[SOLVE_MAX_DEVICES];
    long total = 0;
    double C = 0;
    for (int m = 0; m < M; m++) {
        solve_device_eval(in, m, k, plan->w[m], plan->n[m], &use[m]);
        if (use[m].violation != SOLVE_ALLOWED) return INFINITY;
        total += plan->w[m];
        C += use[m].own_ms;
    }
    if (total != L / k) return INFINITY;
    double sigma = (double)k * C;
    double T = in->model.kappa_ms + sigma;
    for (int m = 0; m < M; m++) T += solve_exposed_ms(&use[m], k, sigma);
    return T;
}

/* ---- The search ------------------------------------------------------------------------------
 * Formulation. Fix k (a divisor of L, <= kmax) and let W = L/k. Each device m picks an option
 * o = (w, n) with sum w = W and w[0] >= 1; the option fixes its regime and three numbers:
 *     a  = k*own          what it adds to sigma = k*C,
 *     nd = D if overloaded without a fitting window, else 0 (its X, whatever the others do),
 *     y  = D + a if its window fits, so that X = max(0, D - (sigma - a)) = max(0, y - sigma).
 * Then, exactly,
 *     T = kappa + sigma + sum nd + sum over window-fits devices of max(0, y - sigma).   (1)
 * Without window-fits devices (always the case for k <= 2) T is a sum of per-device costs
 * a + nd, and "min sum of costs subject to sum w = W" is solved exactly by a dynamic program
 * over (device, layers used) in O(M W^2 * options per window). The max(0, y - sigma) terms
 * couple the devices through one scalar, sigma; they are what the branch and bound is for.
 *
 * Search. For each k, the plans are split by sigma into intervals [s0, s1] (every plan lies in
 * one; see solve_search_k), and in each interval devices are fixed one at a time in a depth
 * first search (those that can prefetch first, since they carry the coupling); a node is a
 * prefix of devices with chosen options, the layers r left, sigma_a and P = sum nd of the
 * prefix, and the y values of its window-fits devices. Children are tried best bound first; a
 * child is pruned when its bound is >= best - tol, tol = 1e-9 * best: the plan returned is
 * within a relative 1e-9 of the true minimum (float rounding in the bounds is ~1e-14 relative,
 * far below tol, so a better plan is never pruned away; ties are not re-explored).
 *
 * Bound. Split sigma = sigma_a + rho, rho the rest's share. By (1), any completion costs
 *     T = kappa + P + sigma_a + G(rho) + sum over the rest of [nd + max(0, y - sigma)],
 *     G(rho) = rho + sum over the prefix's window-fits devices of max(0, z_i - rho),
 *     z_i = y_i - sigma_a.
 * (a) Only plans of this interval that beat the incumbent matter. Every plan has T = kappa +
 *     sigma + (its sum nd + sum X), so such a plan has sigma <= sigma_hi, the least of: s1;
 *     best - kappa; the largest sigma any plan reaches; and best - kappa - (a lower bound on
 *     sum nd + sum X), see solve_search_interval. Hence max(0, y - sigma) >= max(0, y -
 *     sigma_hi) for the rest's own window-fits terms. Likewise rho lies in [rho_lo, rho_hi]:
 *     rho_lo is the larger of the least sigma the rest can add (a table) and s0 - sigma_a,
 *     rho_hi the least of the most it can add, best - kappa - P - sigma_a and
 *     sigma_hi - sigma_a.
 * (b) G is convex and piecewise linear (slopes 1, 0, -1, ... as more z_i exceed rho), so for
 *     any slope c it lies above a line of slope c on [rho_lo, rho_hi]:
 *     G(rho) >= alpha_c + c*rho, alpha_c = min over that interval of G(rho) - c*rho, attained
 *     where the slope of G crosses c: at the (q+1)-th largest z with q = floor(1 - c),
 *     clamped into the interval (for c > 1, at rho_hi).
 * (c) So T >= kappa + P + sigma_a + alpha_c + min over completions of
 *     sum [c*a + nd + max(0, y - sigma_hi)], and that min is a table lookup: for each c in a
 *     fixed grid, tab_c[j][r] is the dynamic program over devices j.. with r layers, built per
 *     interval. The bound is the best over the grid, a Lagrangian dual in one multiplier:
 *     c = 1 is exact when nothing couples (so a k <= 2 search walks straight to the optimum);
 *     c < 1 prices the constraint sigma >= s0 (through rho >= rho_lo) and follows G where
 *     prefetching devices bind: with q devices binding at once T falls by q - 1 ms per ms of
 *     sigma, so the grid reaches c = -16 (without the steep slopes an instance with ~10
 *     binding took 100M nodes); c > 1 prices sigma <= sigma_hi (through rho <= rho_hi).
 * Narrow intervals make both (a) and (c) tight: max(0, y - sigma_hi) is then near the truth,
 * and a plan cannot be credited with hiding behind more sigma than it has.
 * Every completion at a leaf is evaluated with solve_plan_latency, so the T reported is the
 * model's, not the search's arithmetic. The seed incumbent is the best of the tables'
 * argmin plans over every k (each a feasible plan, usually within a few percent of optimal).
 *
 * Dominance. Per device and window, options (different n) are thinned before the search: o1
 * dominates o2 when T(o1) <= T(o2) for every completion. Changing a by delta moves (1) by
 * delta*(1 - #others binding), between delta*(1 - F) and delta where F is the number of other
 * devices that can prefetch at all, and a device's own term is 0, nd, or max(0, D - k*S) with
 * k*S independent of its own option; the test in solve_dominates bounds T(o1) - T(o2) by the
 * worst case of both. With F = 0 this keeps exactly the cheapest a + nd per window.
 * -------------------------------------------------------------------------------------------- */

enum { SOLVE_N_SLOPES = 14, SOLVE_DOMINANCE_SPAN = 8 };
/* The slopes c of the bound's lines, see (c); c = 1 must come first (the exact table when
 * nothing couples, and the cheap screen of solve_dfs), and 0 must be present (the sigma cap
 * of solve_search_interval). */
static const double solve_slopes[SOLVE_N_SLOPES] = {1.0,  0.75, 0.5,  0.25, 0.0, -0.5, -1.0,
                                                     -2.0, -4.0, -8.0, -16.0, 1.5, 2.0, 4.0};

typedef struct {
    int w, n;
    solve_regime regime;
    double a;    /* k*own_ms */
    double nd;   /* D when overloaded without a fitting window, else 0 */
    double y;    /* D + a when the window fits, else 0 */
    double D;    /* disk ms when overloaded (either kind), else 0 */
} solve_option;

/* A child considered at a search node: its option and its bound. */
typedef struct {
    int opt;
    double bound;
} solve_pick;

typedef struct {
    const solve_instance *in;
    int k, W, M;
    int n_tab;                   /* tables in use: 1 when nothing can prefetch, else N_SLOPES */
    int order[SOLVE_MAX_DEVICES];/* search depth -> device index */
    solve_option *opt;           /* options of depth j and window w:                         */
    int *first;                  /*   opt[first[j*(W+2)+w] .. first[j*(W+2)+w+1])             */
    long long n_opt;
    double sigma_lo, sigma_hi;   /* the sigma interval being searched; tables assume sigma_hi */
    double *tab;                 /* [n_tab+2][M+1][W+1]: bound tables, then min rho, -max rho */
    double *cheap;               /* W+1 scratch doubles for solve_build_tables */
    solve_pick *picks;           /* n_opt slots: depth j uses the slots of its own options */
    /* search state */
    int chosen[SOLVE_MAX_DEVICES];  /* option index per depth */
    double fy[SOLVE_MAX_DEVICES];   /* y of the prefix's window-fits devices, descending */
    int nf;
    solve_plan *best;
    double best_T;
    long long nodes;             /* expanded, over every interval */
    long long intervals;         /* intervals whose search ran */
    long long budget;            /* node budget of the current interval's search, 0 = none */
    long long budget_base;       /* the budget an interval starts with (solve_optimize_budget) */
    long long interval_nodes;
    int aborted;                 /* the current interval's search ran out of budget */
} solve_search;

static size_t solve_tab_index(const solve_search *s, int t, int j, int r)
{
    return ((size_t)t * (size_t)(s->M + 1) + (size_t)j) * (size_t)(s->W + 1) + (size_t)r;
}

/* Worst case of T(o1) - T(o2) over every completion is <= 0 (see "Dominance" above).
 * n_fit_others: how many other devices have any window-fits option at this k. */
static int solve_dominates(const solve_option *o1, const solve_option *o2, int n_fit_others)
{
    double da = o1->a - o2->a;
    /* sigma's effect: slope in [1 - F, 1] per unit of a. */
    double sigma_part = da <= 0 ? (1.0 - n_fit_others) * da : da;
    /* own term: R -> 0, overloaded -> nd, fits -> max(0, D - x) for an unknown x >= 0. */
    double hi1 = o1->regime == SOLVE_WINDOW_FITS ? o1->D : o1->nd;
    double lo2 = o2->regime == SOLVE_WINDOW_FITS ? 0.0 : o2->nd;
    double own_part = hi1 - lo2;
    if (o1->regime == SOLVE_WINDOW_FITS && o2->regime == SOLVE_WINDOW_FITS)
        own_part = o1->D > o2->D ? o1->D - o2->D : 0.0; /* sup of max(0,D1-x) - max(0,D2-x) */
    return sigma_part + own_part <= 0;
}

/* Appends one option to the growing array, with overflow-checked growth. */
static int solve_push_option(solve_search *s, long long *cap, const solve_option *o)
{
    if (s->n_opt == *cap) {
        long long nc = *cap ? *cap * 2 : 256;
        if ((unsigned long long)nc > SIZE_MAX / sizeof(solve_option)) return -1;
        solve_option *p = realloc(s->opt, (size_t)nc * sizeof(solve_option));
        if (!p) return -1;
        s->opt = p;
        *cap = nc;
    }
    s->opt[s->n_opt++] = *o;
    return 0;
}

/* Fills o from the model for device m; returns 0 if the choice is allowed. */
static int solve_make_option(const solve_instance *in, int m, int k, int w, int n,
                             solve_option *o)
{
    solve_device_use u;
    solve_device_eval(in, m, k, w, n, &u);
    if (u.violation != SOLVE_ALLOWED) return -1;
    o->w = w;
    o->n = n;
    o->regime = u.regime;
    o->a = (double)k * u.own_ms;
    o->D = u.disk_ms;
    o->nd = u.regime == SOLVE_OVERLOADED ? u.disk_ms : 0.0;
    o->y = u.regime == SOLVE_WINDOW_FITS ? u.disk_ms + o->a : 0.0;
    return 0;
}

/* Does device m have any window-fits option at this k? */
static int solve_can_prefetch(const solve_instance *in, int m, int k, int W)
{
    if (k < 3) return 0;
    for (int w = 1; w <= W; w++) {
        for (int n = 0; n <= w; n++) {
            solve_option o;
            if (solve_make_option(in, m, k, w, n, &o) == 0 && o.regime == SOLVE_WINDOW_FITS)
                return 1;
            if (in->device[m].gpu == SOLVE_GPU_NONE) break;
        }
    }
    return 0;
}

static void solve_search_free(solve_search *s)
{
    free(s->opt);
    free(s->first);
    free(s->tab);
    free(s->cheap);
    free(s->picks);
    memset(s, 0, sizeof *s);
}

/* Cost of option o in bound table t (see (c) above). */
static double solve_option_cost(const solve_search *s, int t, const solve_option *o)
{
    double c = s->n_tab > t ? solve_slopes[t] : 1.0;
    double cost = c * o->a + o->nd;
    if (o->regime == SOLVE_WINDOW_FITS && o->y > s->sigma_hi) cost += o->y - s->sigma_hi;
    return cost;
}

/* Builds tables t0..t1. Table t in [0, n_tab) is the bound table of slope solve_slopes[t];
 * table n_tab is min sum a (the least rho), table n_tab + 1 is -(max sum a) (minus the most
 * rho). Suffix dynamic program: tab[j][r] = min over options o of depth j with o.w <= r of
 * cost(o) + tab[j+1][r - o.w], and tab[M][r] = 0 for r = 0, +inf otherwise. Only the cheapest
 * option of each window matters, so that is found first (cheap[w]): O(options + M W^2). */
static void solve_build_tables(solve_search *s, int t0, int t1)
{
    int M = s->M, W = s->W;
    double *cheap = s->cheap;
    for (int t = t0; t <= t1; t++) {
        for (int r = 0; r <= W; r++) s->tab[solve_tab_index(s, t, M, r)] = r == 0 ? 0 : INFINITY;
        for (int j = M - 1; j >= 0; j--) {
            for (int w = 0; w <= W; w++) {
                double c = INFINITY;
                for (int i = s->first[j * (W + 2) + w]; i < s->first[j * (W + 2) + w + 1]; i++) {
                    double cost = t == s->n_tab       ? s->opt[i].a
                                : t == s->n_tab + 1 ? -s->opt[i].a
                                                    : solve_option_cost(s, t, &s->opt[i]);
                    if (cost < c) c = cost;
                }
                cheap[w] = c;
            }
            for (int r = 0; r <= W; r++) {
                double best = INFINITY;
                for (int w = 0; w <= r; w++) {
                    double v = cheap[w] + s->tab[solve_tab_index(s, t, j + 1, r - w)];
                    if (v < best) best = v;
                }
                s->tab[solve_tab_index(s, t, j, r)] = best;
            }
        }
    }
}

/* Sets up the search of the plans whose sigma = k*C lies in [s0, s1]: sigma_lo = s0, and
 * sigma_hi, the cap the tables' window-fits terms assume (see (a)), made as tight as can be
 * proven, then the bound tables for it. A plan better than the incumbent in this interval has
 * sigma <= sigma_hi, the least of:
 *   s1; best - kappa; the largest sigma any plan reaches (table n_tab+1); and
 *   best - kappa - tab_0, where tab_0 (slope 0: sum nd + max(0, y - sigma_hi), no a) bounds
 *   sum nd + sum X from below for every plan with sigma <= sigma_hi.
 * The last one improves as sigma_hi falls, so it is iterated a few times. When compute is
 * cheap against disk reads this is what keeps the bound honest: nothing can hide behind a
 * sigma that no plan has. */
static void solve_search_interval(solve_search *s, double s0, double s1)
{
    double sigma_max = -s->tab[solve_tab_index(s, s->n_tab + 1, 0, s->W)];
    double cap = s->best_T - s->in->model.kappa_ms;
    s->sigma_lo = s0;
    s->sigma_hi = s1;
    if (cap < s->sigma_hi) s->sigma_hi = cap;
    if (sigma_max < s->sigma_hi) s->sigma_hi = sigma_max;
    s->interval_nodes = 0;
    s->aborted = 0;
    /* Rounding: the search adds a plan's a values in its own order, so the interval is widened
     * by a relative 1e-12 on both sides; a plan on a split point is then searched twice,
     * never zero times. */
    s->sigma_lo -= 1e-12 * (1.0 + fabs(s->sigma_lo));
    s->sigma_hi += 1e-12 * (1.0 + fabs(s->sigma_hi));
    solve_build_tables(s, 0, s->n_tab - 1);
    if (s->n_tab == 1) return; /* nothing prefetches: sigma_hi is unused */
    int slope0 = 0;
    while (solve_slopes[slope0] != 0.0) slope0++; /* the grid holds 0 */
    for (int iter = 0; iter < 6; iter++) {
        double nd_x = s->tab[solve_tab_index(s, slope0, 0, s->W)];
        double next = cap - nd_x;
        if (!(next < s->sigma_hi - 1e-6 * fabs(s->sigma_hi) - 1e-9)) break;
        s->sigma_hi = next + 1e-12 * (1.0 + fabs(next));
        solve_build_tables(s, 0, s->n_tab - 1);
    }
}

/* Appends the options of depth j (device order[j]) to s->opt, thinned by dominance, and fills
 * s->first for that depth. cand is scratch for W + 1 options. Returns 0, -1 on OOM. */
static int solve_device_options(solve_search *s, int j, int n_fit_others, solve_option *cand,
                                long long *cap)
{
    const solve_instance *in = s->in;
    int m = s->order[j], W = s->W;
    for (int w = 0; w <= W; w++) {
        s->first[j * (W + 2) + w] = (int)s->n_opt;
        if (w == 0 && m == 0) continue; /* the head always runs at least one layer */
        int nc = 0;
        int nmax = in->device[m].gpu == SOLVE_GPU_NONE ? 0 : w;
        for (int n = 0; n <= nmax; n++) {
            solve_option o;
            if (solve_make_option(in, m, s->k, w, n, &o) != 0) continue;
            /* Compared with the last few kept candidates only (neighbours in n, the likely
             * dominators): dropping fewer options is always safe, and this keeps the
             * thinning linear when many options survive (F >= 2). */
            int lo = nc > SOLVE_DOMINANCE_SPAN ? nc - SOLVE_DOMINANCE_SPAN : 0;
            int dominated = 0;
            for (int i = lo; i < nc && !dominated; i++)
                dominated = solve_dominates(&cand[i], &o, n_fit_others);
            if (dominated) continue;
            int kept = lo; /* drop the kept candidates the newcomer dominates */
            for (int i = lo; i < nc; i++)
                if (!solve_dominates(&o, &cand[i], n_fit_others)) cand[kept++] = cand[i];
            nc = kept;
            cand[nc++] = o;
        }
        for (int i = 0; i < nc; i++)
            if (solve_push_option(s, cap, &cand[i]) != 0) return -1;
    }
    s->first[j * (W + 2) + W + 1] = (int)s->n_opt;
    return s->n_opt > INT_MAX / 2 ? -1 : 0; /* option indices are ints */
}

/* Builds the options, the device order and the rho tables for one k (the bound tables come
 * with each sigma interval, solve_search_interval). Returns 0; -1 on OOM, with s freed. */
static int solve_search_init(solve_search *s, const solve_instance *in, int k)
{
    memset(s, 0, sizeof *s);
    s->in = in;
    s->k = k;
    s->W = in->model.n_layer / k;
    s->M = in->n_device;
    int M = s->M, W = s->W;
    int can_fit[SOLVE_MAX_DEVICES], n_fit = 0;
    for (int m = 0; m < M; m++) {
        can_fit[m] = solve_can_prefetch(in, m, k, W);
        n_fit += can_fit[m];
    }
    s->n_tab = n_fit ? SOLVE_N_SLOPES : 1;
    /* Order: devices that can prefetch first (they carry the coupling, so the bound of (b)
     * sees them early), each group in ring order. */
    int depth = 0;
    for (int pass = 1; pass >= 0; pass--)
        for (int m = 0; m < M; m++)
            if (can_fit[m] == pass) s->order[depth++] = m;

    /* Sizes: M <= 64 and W <= 512, so these products cannot overflow size_t. */
    s->first = malloc((size_t)M * (size_t)(W + 2) * sizeof(int));
    s->tab = malloc((size_t)(s->n_tab + 2) * (size_t)(M + 1) * (size_t)(W + 1) * sizeof(double));
    solve_option *cand = malloc((size_t)(W + 1) * sizeof(solve_option));
    s->cheap = malloc((size_t)(W + 1) * sizeof(double));
    long long cap = 0;
    int ok = s->first && s->tab && cand && s->cheap;
    for (int j = 0; ok && j < M; j++)
        ok = solve_device_options(s, j, n_fit - can_fit[s->order[j]], cand, &cap) == 0;
    if (ok) {
        s->picks = malloc((size_t)(s->n_opt ? s->n_opt : 1) * sizeof(solve_pick));
        ok = s->picks != NULL;
    }
    free(cand);
    if (!ok) {
        solve_search_free(s);
        return -1;
    }
    solve_build_tables(s, s->n_tab, s->n_tab + 1); /* min and max rho: fixed for this k */
    return 0;
}

/* Turns the options chosen per depth into a plan (device order) and evaluates it. */
static void solve_leaf(solve_search *s)
{
    solve_plan p;
    memset(&p, 0, sizeof p);
    p.k = s->k;
    for (int j = 0; j < s->M; j++) {
        const solve_option *o = &s->opt[s->chosen[j]];
        p.w[s->order[j]] = o->w;
        p.n[s->order[j]] = o->n;
    }
    double T = solve_plan_latency(s->in, &p);
    if (T < s->best_T) {
        p.latency_ms = T;
        *s->best = p;
        s->best_T = T;
    }
}

/* Follows table t's argmin from the root to a full plan and offers it as an incumbent. */
static void solve_table_plan(solve_search *s, int t)
{
    int r = s->W;
    if (s->tab[solve_tab_index(s, t, 0, r)] == INFINITY) return;
    for (int j = 0; j < s->M; j++) {
        double best = INFINITY;
        int pick = -1;
        for (int w = 0; w <= r; w++) {
            double rest = s->tab[solve_tab_index(s, t, j + 1, r - w)];
            if (rest == INFINITY) continue;
            for (int i = s->first[j * (s->W + 2) + w]; i < s->first[j * (s->W + 2) + w + 1]; i++) {
                double v = solve_option_cost(s, t, &s->opt[i]) + rest;
                if (v < best) { best = v; pick = i; }
            }
        }
        if (pick < 0) return;
        s->chosen[j] = pick;
        r -= s->opt[pick].w;
    }
    solve_leaf(s);
}

static double solve_tol(double best)
{
    return best == INFINITY ? 0.0 : 1e-9 * fabs(best) + 1e-12;
}

/* The (idx+1)-th largest of the sorted (descending) list fy[0..nf) with `extra` merged in when
 * has_extra; -infinity past the end. */
static double solve_kth(const double *fy, int nf, double extra, int has_extra, int idx)
{
    if (idx < 0) return INFINITY; /* slopes c > 1: the tangent point is the top of the range */
    if (!has_extra) return idx < nf ? fy[idx] : -INFINITY;
    int p = 0; /* where extra goes */
    while (p < nf && fy[p] >= extra) p++;
    if (idx < p) return fy[idx];
    if (idx == p) return extra;
    return idx - 1 < nf ? fy[idx - 1] : -INFINITY;
}

/* Lower bound on T over completions of a node at depth j (devices order[j..] unassigned) with
 * r layers left, prefix totals P (sum nd) and sigma_a, and prefix window-fits values fy plus
 * `extra` when has_extra. Implements (a)-(c) of the comment above. */
static double solve_bound(const solve_search *s, int j, int r, double P, double sigma_a,
                          double extra, int has_extra)
{
    double kappa = s->in->model.kappa_ms;
    double rho_lo = s->tab[solve_tab_index(s, s->n_tab, j, r)];
    if (rho_lo == INFINITY) return INFINITY;
    double rho_hi = s->best_T - kappa - P - sigma_a;
    double rho_max = -s->tab[solve_tab_index(s, s->n_tab + 1, j, r)];
    if (rho_max < rho_hi) rho_hi = rho_max;
    if (s->sigma_hi - sigma_a < rho_hi) rho_hi = s->sigma_hi - sigma_a; /* the interval */
    if (s->sigma_lo - sigma_a > rho_lo) rho_lo = s->sigma_lo - sigma_a;
    if (rho_hi < rho_lo) return INFINITY; /* no completion in the interval beats best */
    double base = kappa + P + sigma_a, bound = -INFINITY;
    for (int t = 0; t < s->n_tab; t++) {
        double c = solve_slopes[t];
        int q = (int)floor(1.0 - c);
        double rho = solve_kth(s->fy, s->nf, extra, has_extra, q) - sigma_a;
        if (rho < rho_lo) rho = rho_lo;
        if (rho > rho_hi) rho = rho_hi;
        if (rho == INFINITY) { /* no incumbent yet: only c = 1 has a finite line (G - rho -> 0) */
            if (c == 1.0 && base + s->tab[solve_tab_index(s, t, j, r)] > bound)
                bound = base + s->tab[solve_tab_index(s, t, j, r)];
            continue;
        }
        double G = rho; /* G(rho) - c*rho at the tangent point, see (b) */
        for (int i = 0; i < s->nf && s->fy[i] - sigma_a > rho; i++) G += s->fy[i] - sigma_a - rho;
        if (has_extra && extra - sigma_a > rho) G += extra - sigma_a - rho;
        double v = base + G - c * rho + s->tab[solve_tab_index(s, t, j, r)];
        if (v > bound) bound = v;
    }
    return bound;
}

static int solve_pick_cmp(const void *pa, const void *pb)
{
    const solve_pick *a = pa, *b = pb;
    if (a->bound < b->bound) return -1;
    if (a->bound > b->bound) return 1;
    return a->opt - b->opt; /* deterministic order for equal bounds */
}

/* Depth-first branch and bound over the options of depth j. */
static void solve_dfs(solve_search *s, int j, int r, double P, double sigma_a)
{
    s->nodes++;
    if (s->budget && ++s->interval_nodes > s->budget) {
        s->aborted = 1; /* the caller splits the interval and searches the halves */
        return;
    }
    if (j == s->M) {
        if (r == 0) solve_leaf(s);
        return;
    }
    int W = s->W;
    double kappa = s->in->model.kappa_ms;
    /* Cheap screen: prefix window-fits terms at their least (rho = rho_hi of this node), the
     * child's own term against the sigma cap, the rest from the exact-when-uncoupled table. */
    double rho_hi = s->best_T - kappa - P - sigma_a;
    double rho_max = -s->tab[solve_tab_index(s, s->n_tab + 1, j, r)];
    if (rho_max < rho_hi) rho_hi = rho_max;
    if (s->sigma_hi - sigma_a < rho_hi) rho_hi = s->sigma_hi - sigma_a;
    double g_hi = 0;
    for (int i = 0; i < s->nf && s->fy[i] - sigma_a > rho_hi; i++) g_hi += s->fy[i] - sigma_a - rho_hi;
    solve_pick *picks = s->picks + s->first[j * (W + 2)];
    int np = 0;
    for (int w = 0; w <= r; w++) {
        double rest = s->tab[solve_tab_index(s, 0, j + 1, r - w)];
        if (rest == INFINITY) continue;
        for (int i = s->first[j * (W + 2) + w]; i < s->first[j * (W + 2) + w + 1]; i++) {
            const solve_option *o = &s->opt[i];
            double lim = s->best_T - solve_tol(s->best_T);
            double own_fit = 0;
            if (o->regime == SOLVE_WINDOW_FITS) {
                double cap = s->best_T - kappa - P - o->nd; /* sigma cap for this child */
                if (sigma_a + rho_hi < cap) cap = sigma_a + rho_hi;
                if (o->y > cap) own_fit = o->y - cap;
            }
            double cheap = kappa + P + o->nd + sigma_a + o->a + g_hi + own_fit + rest;
            if (!(cheap < lim)) continue;
            int fits = o->regime == SOLVE_WINDOW_FITS;
            double b = solve_bound(s, j + 1, r - w, P + o->nd, sigma_a + o->a, o->y, fits);
            if (b > cheap) cheap = b;
            if (!(cheap < lim)) continue;
            picks[np].opt = i;
            picks[np].bound = cheap;
            np++;
        }
    }
    qsort(picks, (size_t)np, sizeof *picks, solve_pick_cmp);
    for (int p = 0; p < np; p++) {
        if (!(picks[p].bound < s->best_T - solve_tol(s->best_T))) break;
        const solve_option *o = &s->opt[picks[p].opt];
        s->chosen[j] = picks[p].opt;
        int fits = o->regime == SOLVE_WINDOW_FITS;
        int at = 0;
        if (fits) { /* insert o->y into the descending list */
            at = s->nf;
            while (at > 0 && s->fy[at - 1] < o->y) { s->fy[at] = s->fy[at - 1]; at--; }
            s->fy[at] = o->y;
            s->nf++;
        }
        solve_dfs(s, j + 1, r - o->w, P + o->nd, sigma_a + o->a);
        if (fits) {
            for (int i = at; i < s->nf - 1; i++) s->fy[i] = s->fy[i + 1];
            s->nf--;
        }
        if (s->aborted) return;
    }
}

/* Searches every plan of this k: the sigma range [least, most] is searched as a stack of
 * intervals. An interval whose root bound cannot beat the incumbent is dropped; otherwise its
 * depth-first search runs with a node budget, and when that runs out the interval is split in
 * two: narrower intervals give tighter bounds (max(0, y - sigma_hi) is nearer the truth, and
 * sigma >= sigma_lo prices plans that compute too little). An interval split d times gets
 * budget * 2^d, so the work thrown away by aborted searches stays within a small factor of
 * the work kept; past 30 splits, or below a width of 1e-9 of the incumbent's T, the search
 * runs without a budget. So this always ends, and as every plan lies in some interval,
 * nothing is skipped. */
static void solve_search_k(solve_search *s)
{
    enum { STACK = 96, MAX_SPLITS = 30 };
    double lo[STACK], hi[STACK];
    int depth[STACK];
    int top = 0;
    lo[top] = s->tab[solve_tab_index(s, s->n_tab, 0, s->W)];
    hi[top] = -s->tab[solve_tab_index(s, s->n_tab + 1, 0, s->W)];
    depth[top] = 0;
    top++;
    long long budget = s->budget_base > 0 ? s->budget_base : 2000 + 50LL * s->M * s->W;
    while (top > 0) {
        top--;
        double s0 = lo[top], s1 = hi[top];
        int d = depth[top];
        solve_search_interval(s, s0, s1);
        if (!(solve_bound(s, 0, s->W, 0, 0, 0, 0) < s->best_T - solve_tol(s->best_T))) continue;
        int can_split = d < MAX_SPLITS && top + 2 <= STACK &&
                        s1 - s0 > 1e-9 * fabs(s->best_T) + 1e-12;
        s->budget = can_split ? budget << d : 0;
        s->intervals++;
        solve_dfs(s, 0, s->W, 0.0, 0.0);
        if (!s->aborted) continue;
        double mid = 0.5 * (s0 + s1);
        lo[top] = mid; hi[top] = s1; depth[top] = d + 1; top++; /* upper half after lower */
        lo[top] = s0; hi[top] = mid; depth[top] = d + 1; top++;
    }
}

/* ---- Infeasibility: which constraint binds -------------------------------------------------
 * A device that can be overloaded (fast disk) can take any number of layers, so a feasible k
 * exists unless the head cannot run a layer at all, or every device that can join is capped
 * by RAM (slow disk) and VRAM and together they hold fewer than L layers. The reason names the
 * k that comes closest and how many layers and bytes are missing.
 * -------------------------------------------------------------------------------------------- */

/* The largest window device m can run at k (0 if it cannot join; W+1 means "unbounded"), and
 * the constraint that stops the next larger window. */
static int solve_window_cap(const solve_instance *in, int m, int k, int W,
                            solve_violation *stop)
{
    int cap = 0;
    *stop = SOLVE_ALLOWED;
    for (int w = 1; w <= W + 1; w++) {
        int ok = 0;
        solve_violation last = SOLVE_ALLOWED;
        int nmax = in->device[m].gpu == SOLVE_GPU_NONE ? 0 : w;
        for (int n = 0; n <= nmax && !ok; n++) {
            solve_device_use u;
            solve_device_eval(in, m, k, w, n, &u);
            if (u.violation == SOLVE_ALLOWED) ok = 1;
            else if (last == SOLVE_ALLOWED || u.violation == SOLVE_SLOW_DISK) last = u.violation;
        }
        if (!ok) {
            *stop = last;
            break;
        }
        cap = w;
    }
    return cap;
}

static void solve_explain_infeasible(const solve_instance *in, char *why, size_t why_len)
{
    int L = in->model.n_layer, M = in->n_device, kmax = solve_kmax(in);
    double bp = in->model.layer_bytes + in->model.kv_bytes;
    int best_k = 0, best_held = -1;
    for (int k = 1; k <= kmax; k++) {
        if (L % k) continue;
        int W = L / k;
        solve_violation stop;
        if (solve_window_cap(in, 0, k, W, &stop) < 1) continue;
        int held = 0;
        for (int m = 0; m < M; m++) {
            int c = solve_window_cap(in, m, k, W, &stop);
            held += c > W ? W : c;
        }
        held *= k;
        if (held > best_held) { best_held = held; best_k = k; }
    }
    if (best_k == 0) {
        const solve_device *d = &in->device[0];
        solve_device_use u;
        solve_device_eval(in, 0, 1, 1, 0, &u);
        if (u.violation == SOLVE_OVER_VRAM)
            solve_msg(why, why_len,
                      "the head device '%s' cannot join the ring: its GPU needs fixed_vram = "
                      "%.0f bytes but vram is %.0f (short by %.0f bytes)", d->name,
                      d->fixed_vram_bytes, d->vram_bytes, d->fixed_vram_bytes - d->vram_bytes);
        else {
            char gpu_note[256] = "";
            if (d->gpu == SOLVE_GPU_CUDA) { /* the layer could have gone to VRAM instead */
                solve_device_use g;
                solve_device_eval(in, 0, 1, 1, 1, &g);
                snprintf(gpu_note, sizeof gpu_note, "; on its GPU the layer would need %.0f "
                         "bytes of VRAM (vram is %.0f) and %.0f of RAM", g.vram_bytes,
                         d->vram_bytes, g.ram_bytes);
            }
            solve_msg(why, why_len,
                      "the head device '%s' cannot hold even one layer: it needs %.0f bytes of "
                      "RAM (fixed buffers + one layer of %.0f bytes) but ram is %.0f (short by "
                      "%.0f bytes), and its disk (%.3g B/s) is slower than 0.1e9 B/s, too slow "
                      "to page from%s", d->name, u.ram_bytes, bp, d->ram_bytes,
                      u.ram_bytes - d->ram_bytes, d->disk_bytes_per_s, gpu_note);
        }
        return;
    }
    int W = L / best_k;
    size_t used = 0;
    char list[1024];
    list[0] = '\0';
    for (int m = 0; m < M && used < sizeof list; m++) {
        solve_violation stop;
        int c = solve_window_cap(in, m, best_k, W, &stop);
        const char *what = stop == SOLVE_OVER_VRAM ? "VRAM"
                         : stop == SOLVE_SLOW_DISK ? "RAM, slow disk" : "capped";
        if (c == 0 && stop == SOLVE_OVER_VRAM) what = "fixed_vram > vram";
        int wrote = snprintf(list + used, sizeof list - used, "%s%s %d (%s)", m ? ", " : "",
                             in->device[m].name, c * best_k, what);
        if (wrote < 0) break;
        used += (size_t)wrote;
    }
    solve_msg(why, why_len,
              "the model needs %d layers x %.0f bytes (weights + KV cache) = %.2f GB of "
              "VRAM+RAM+disk-backed memory, but no device may page from disk (disks slower "
              "than 0.1e9 B/s, or no room) and at best (k=%d) the devices hold %d layers "
              "(%.2f GB): %s; short by %d layers (%.2f GB)",
              L, bp, (double)L * bp / 1e9, best_k, best_held, (double)best_held * bp / 1e9,
              list, L - best_held, (double)(L - best_held) * bp / 1e9);
}

/* ---- The solver ------------------------------------------------------------------------------ */

/* solve_optimize with the node budget of an interval's search before its sigma interval is
 * split (0: the default, 2000 + 50 M W). The answer does not depend on it, only the work;
 * tests set it tiny so that splitting happens on small instances too. Longer than a screen
 * because its two passes (seed every k, then search them in order) read best together. */
static int solve_optimize_budget(const solve_instance *in, solve_plan *plan, solve_stats *stats,
                                 long long node_budget, char *why, size_t why_len)
{
    solve_stats st;
    memset(&st, 0, sizeof st);
    memset(plan, 0, sizeof *plan);
    if (stats) *stats = st;
    if (solve_instance_check(in, why, why_len) != 0) return -1;
    int L = in->model.n_layer, kmax = solve_kmax(in);
    int ks[SOLVE_MAX_LAYERS];
    double root[SOLVE_MAX_LAYERS];
    int nk = 0;
    solve_plan best;
    memset(&best, 0, sizeof best);
    double best_T = INFINITY;

    /* Pass 1: every k's tables give a root bound and up to N_SLOPES feasible seed plans. */
    for (int k = 1; k <= kmax; k++) {
        if (L % k) continue;
        solve_search s;
        if (solve_search_init(&s, in, k) != 0) goto oom;
        st.options += s.n_opt;
        s.best = &best;
        s.best_T = best_T;
        if (s.tab[solve_tab_index(&s, s.n_tab, 0, s.W)] < INFINITY) { /* some plan exists */
            st.k_feasible++;
            solve_search_interval(&s, 0, INFINITY);
            for (int t = 0; t < s.n_tab; t++) solve_table_plan(&s, t);
            best_T = s.best_T;
            ks[nk] = k;
            solve_search_interval(&s, 0, INFINITY); /* again, with the seeds' caps */
            root[nk] = solve_bound(&s, 0, s.W, 0, 0, 0, 0);
            nk++;
        }
        solve_search_free(&s);
    }
    if (nk == 0) {
        solve_explain_infeasible(in, why, why_len);
        if (stats) *stats = st;
        return 1;
    }
    /* Pass 2: search each k whose root bound can still beat the incumbent, the most promising
     * first, interval by interval (solve_search_k). */
    for (int a = 1; a < nk; a++) { /* insertion sort by root bound */
        for (int b = a; b > 0 && root[b] < root[b - 1]; b--) {
            double tr = root[b]; root[b] = root[b - 1]; root[b - 1] = tr;
            int tk = ks[b]; ks[b] = ks[b - 1]; ks[b - 1] = tk;
        }
    }
    for (int i = 0; i < nk; i++) {
        if (!(root[i] < best_T - solve_tol(best_T))) continue;
        solve_search s;
        if (solve_search_init(&s, in, ks[i]) != 0) goto oom;
        s.best = &best;
        s.best_T = best_T;
        s.budget_base = node_budget;
        st.k_searched++;
        solve_search_k(&s);
        best_T = s.best_T;
        st.nodes += s.nodes;
        st.intervals += s.intervals;
        solve_search_free(&s);
    }
    *plan = best;
    if (stats) *stats = st;
    return 0;
oom:
    solve_msg(why, why_len, "out of memory");
    if (stats) *stats = st;
    return -1;
}

/* Finds a plan of minimum T (within a relative 1e-9, see "Search") over every k.
 * Returns 0 with *plan filled (plan->latency_ms = solve_plan_latency of it), 1 when no plan is
 * feasible (reason in why), -1 on a bad instance or out of memory (reason in why). stats may
 * be NULL. Allocates only temporaries, all freed before it returns; no global state, so
 * threads may call it concurrently. */
static int solve_optimize(const solve_instance *in, solve_plan *plan, solve_stats *stats,
                          char *why, size_t why_len)
{
    return solve_optimize_budget(in, plan, stats, 0, why, why_len);
}

/* ---- Output ------------------------------------------------------------------------------------ */

static const char *solve_regime_name(solve_regime r)
{
    switch (r) {
    case SOLVE_INACTIVE: return "inactive";
    case SOLVE_RESIDENT: return "resident";
    case SOLVE_OVERLOADED: return "overloaded";
    case SOLVE_WINDOW_FITS: return "window fits";
    }
    return "?";
}

/* Prints the plan in MODEL.md's format: `NAME w=W n=N` per device in ring order, then
 * `k=K latency_ms=T`. With explain, `#` lines come first (so the k= line stays last and every
 * line a script parses is unchanged): per device its regime, RAM and VRAM use, disk traffic
 * and its share of T = kappa + sum over devices of (k*own + X). */
static void solve_print_plan(FILE *f, const solve_instance *in, const solve_plan *plan,
                             int explain)
{
    int k = plan->k, M = in->n_device;
    if (explain) {
        solve_device_use use[SOLVE_MAX_DEVICES];
        double C = 0;
        for (int m = 0; m < M; m++) {
            solve_device_eval(in, m, k, plan->w[m], plan->n[m], &use[m]);
            C += use[m].own_ms;
        }
        double sigma = (double)k * C, T = plan->latency_ms;
        fprintf(f, "# k=%d cycles of %d layers; T = kappa %.3f ms + sum of device shares "
                   "(k*own + exposed disk)\n", k, in->model.n_layer / k, in->model.kappa_ms);
        for (int m = 0; m < M; m++) {
            const solve_device *d = &in->device[m];
            const solve_device_use *u = &use[m];
            if (u->regime == SOLVE_INACTIVE) {
                fprintf(f, "# %s: inactive (left out of the ring)\n", d->name);
                continue;
            }
            double X = solve_exposed_ms(u, k, sigma);
            double share = (double)k * u->own_ms + X;
            fprintf(f, "# %s (w=%d n=%d): %s; RAM needs %.3f GB, has %.3f", d->name, plan->w[m],
                    plan->n[m], solve_regime_name(u->regime), u->ram_bytes / 1e9,
                    d->ram_bytes / 1e9);
            if (d->gpu != SOLVE_GPU_NONE)
                fprintf(f, "; VRAM uses %.3f GB of %.3f", u->vram_bytes / 1e9,
                        d->vram_bytes / 1e9);
            if (u->regime != SOLVE_RESIDENT)
                fprintf(f, "; two windows need %.3f GB (%s); re-reads %.3f GB/token = %.3f ms, "
                           "%.3f ms hidden, %.3f ms exposed", u->window_bytes / 1e9,
                        u->regime == SOLVE_WINDOW_FITS ? "fit" : "do not fit",
                        u->disk_bytes / 1e9, u->disk_ms, u->disk_ms - X, X);
            fprintf(f, "; compute %.3f ms/cycle x %d = %.3f ms; share of T %.3f ms (%.1f%%)\n",
                    u->own_ms, k, (double)k * u->own_ms, share, T > 0 ? 100.0 * share / T : 0.0);
        }
    }
    for (int m = 0; m < M; m++)
        fprintf(f, "%s w=%d n=%d\n", in->device[m].name, plan->w[m], plan->n[m]);
    fprintf(f, "k=%d latency_ms=%.6f\n", k, plan->latency_ms);
}

/* `halda solve FILE [--explain] [--help]`; argv[0] is "solve". Returns the exit status:
 * 0 a plan was printed, 1 the file is unreadable or malformed or no plan is feasible (reason
 * on stderr), 2 a usage error. */
static int cmd_solve(int argc, char **argv)
{
    const char *path = NULL;
    int explain = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: halda solve FILE [--explain]\n"
                   "Finds the layer assignment with the smallest predicted time per token for\n"
                   "the instance in FILE (\"-\" reads standard input; format: MODEL.md) and\n"
                   "prints `NAME w=W n=N` per device, then `k=K latency_ms=T`.\n"
                   "  --explain  first print, as # lines, each device's regime, memory use and\n"
                   "             share of T\n");
            return 0;
        }
        if (strcmp(argv[i], "--explain") == 0) {
            explain = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "halda: solve: unknown option '%s' (usage: halda solve FILE "
                            "[--explain])\n", argv[i]);
            return 2;
        } else if (path) {
            fprintf(stderr, "halda: solve: more than one FILE ('%s' and '%s')\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "halda: solve: missing FILE (usage: halda solve FILE [--explain])\n");
        return 2;
    }
    solve_instance *in = malloc(sizeof *in);
    if (!in) {
        fprintf(stderr, "halda: out of memory\n");
        return 1;
    }
    char err[1536];
    if (solve_instance_read_file(path, in, err, sizeof err) != 0) {
        fprintf(stderr, "halda: %s: %s\n", path, err);
        free(in);
        return 1;
    }
    solve_plan plan;
    int rc = solve_optimize(in, &plan, NULL, err, sizeof err);
    if (rc == 0) solve_print_plan(stdout, in, &plan, explain);
    else fprintf(stderr, "halda: %s: %s%s\n", path, rc == 1 ? "no feasible plan: " : "", err);
    free(in);
    return rc == 0 ? 0 : 1;
}

/* HALDA_SECTION_END solver */

/* =============================================================================================
 * 13. Crypto
 *
 * A cluster joined by home Wi-Fi needs to know that a peer holds the cluster key before it
 * believes a single byte from it.  The handshake (network section) is an HMAC-SHA256
 * challenge-response in both directions, so all we need is SHA-256 (FIPS 180-4) and HMAC
 * (RFC 2104), written out here and tested against the published vectors.
 *
 * SHA-256 in one paragraph: the message is padded with a 1 bit, zeros and its bit length to a
 * multiple of 64 bytes; each 64-byte block is expanded into 64 words and mixed into eight 32-bit
 * state words by 64 rounds of additions, rotations and the Ch/Maj bit functions, with one round
 * constant each (the fractional parts of the cube roots of the first 64 primes).
 * ============================================================================================= */

typedef struct {
    uint32_t h[8];     /* chaining state */
    uint64_t n_bytes;  /* message length so far */
    uint8_t buf[64];   /* partial block */
    size_t n_buf;
} sha256_ctx;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static inline uint32_t ror32(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256_block(sha256_ctx *c, const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha256_init(sha256_ctx *c)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->n_bytes = 0;
    c->n_buf = 0;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t n)
{
    const uint8_t *p = data;
    c->n_bytes += n;
    while (n > 0) {
        if (c->n_buf == 0 && n >= 64) {
            sha256_block(c, p);
            p += 64, n -= 64;
            continue;
        }
        size_t take = 64 - c->n_buf < n ? 64 - c->n_buf : n;
        memcpy(c->buf + c->n_buf, p, take);
        c->n_buf += take, p += take, n -= take;
        if (c->n_buf == 64) sha256_block(c, c->buf), c->n_buf = 0;
    }
}

static void sha256_final(sha256_ctx *c, uint8_t out[32])
{
    uint64_t bits = c->n_bytes * 8;
    uint8_t pad = 0x80;
    sha256_update(c, &pad, 1);
    pad = 0;
    while (c->n_buf != 56) sha256_update(c, &pad, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, len, 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(c->h[i] >> (24 - 8 * j));
}

static void sha256(const void *data, size_t n, uint8_t out[32])
{
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, data, n);
    sha256_final(&c, out);
}

/* HMAC-SHA256(key, msg) = H((K ^ opad) || H((K ^ ipad) || msg)), K the key padded to 64 bytes
 * (hashed first when longer than a block). */
static void hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len, uint8_t out[32])
{
    uint8_t k[64] = {0}, pad[64], inner[32];
    if (key_len > 64) sha256(key, key_len, k);
    else memcpy(k, key, key_len);
    sha256_ctx c;
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    sha256_init(&c);
    sha256_update(&c, pad, 64);
    sha256_update(&c, msg, msg_len);
    sha256_final(&c, inner);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    sha256_init(&c);
    sha256_update(&c, pad, 64);
    sha256_update(&c, inner, 32);
    sha256_final(&c, out);
}

/* Compare two MACs in time independent of where they differ. */
static bool mac_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) d |= a[i] ^ b[i];
    return d == 0;
}

/* =============================================================================================
 * 14. Network & ring runtime
 *
 * A model that fits on no single device is cut into windows of consecutive layers.  Per token
 * the activations travel k times around a ring of devices; in each cycle every active device
 * runs its window and hands the n_tok × n_embd activations straight to the next device.  The
 * head (device 0) embeds the tokens, runs its own window last in each cycle, and after the last
 * cycle computes the logits and samples.  Ring order within a cycle: workers 1..M-1, then the
 * head; with W = L/k layers per cycle, cycle c covers layers [cW, cW + W), split in that order.
 *
 * Each device maps only what it runs (model_map, section 7): a worker the file's header and, once
 * it has a plan, one mapping per window; the head its windows and the embedding and output
 * tensors.  A worker drops its windows when its head goes away: the next head may plan others.
 *
 * Connections.  The head opens one control connection to every worker (its --workers list).
 * Activations for the first worker ride on that connection, the last worker sends its output
 * back on its own control connection, and each worker in between opens a data connection to
 * the next one.  KV commands (keep the first n positions of a sequence) travel the same way, so
 * every worker applies them in order with the activations around them; the last one returns
 * them to the head as the acknowledgement.  Every blocking call has a timeout; both sides send a
 * heartbeat every second and give a peer up after 5 silent seconds.
 *
 * Setup, on the control connections: MODEL_CHECK (same file?); for an automatic plan
 * PROFILE_REQ (each worker measures itself), ECHO (the head times its link to each worker) and
 * LINK_REQ (worker i times its link to worker i+1 over a probe connection, role PROBE, of the
 * same session, and answers LINK); then PLAN, answered READY once the windows are mapped and
 * the data connections are up.
 *
 * Frames (all integers little-endian):
 *     0  magic "HLDR"   4  version (2)   5  type   6  flags (0)   8  payload length (u32)
 *    12  payload
 * TRUST BOUNDARY: frame bytes are untrusted.  The length is checked against the limit of the
 * frame's type before anything is allocated, payloads are decoded field by field with bounds
 * checks, and anything malformed ends the connection with a message — never the process.
 *
 * Handshake.  The listener sends HELLO {version u32, key_required u8, nonce[32]}; the connector
 * answers HELLO_REPLY {role u32, session u64, nonce[32], mac[32]} with mac =
 * HMAC(key, "halda-connect" | listener nonce | connector nonce); the listener checks it and
 * answers AUTH_OK {mac'} with mac' = HMAC(key, "halda-accept" | connector nonce | listener
 * nonce), which the connector checks.  Without a key both MACs are zero and both sides must
 * agree that no key is in use.  A peer that fails is dropped before any other frame is read.
 * ============================================================================================= */

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SIGPIPE is ignored process-wide by the CLI instead */
#endif

#define RING_DEFAULT_PORT 9137
#define RING_VERSION 2 /* 2: KV commands travel the ring; workers time their links to each other */
#define RING_HEARTBEAT_MS 1000
#define RING_DEAD_MS 4000 /* a peer silent this long is gone: detection stays under 5 s */
#define RING_IO_TIMEOUT_MS 5000
#define RING_MAX_DEVICES 64

enum {
    FRAME_HELLO = 1, FRAME_HELLO_REPLY, FRAME_AUTH_OK, FRAME_MODEL_CHECK, FRAME_PLAN, FRAME_READY, FRAME_ACT,
    FRAME_KV_KEEP, FRAME_HEARTBEAT, FRAME_STOP, FRAME_ERROR, FRAME_OK, FRAME_PROFILE_REQ, FRAME_PROFILE, FRAME_ECHO,
    FRAME_LINK_REQ, FRAME_LINK, FRAME_TYPE_COUNT
};
/* What a connection is for: the head's control connection, a data link between neighbours, or
 * a link probe (a worker timing its link to the next one while the head plans). */
enum { ROLE_CONTROL = 1, ROLE_DATA = 2, ROLE_PROBE = 3 };
#define LINK_PROBE_ROUNDS 5         /* echoes per link; the median round trip counts */
#define LINK_PROBE_TIMEOUT_MS 2000  /* per connect and per echo */
enum { WIRE_F32 = 0, WIRE_F16 = 1 };
enum { PREFETCH_OFF = 0, PREFETCH_ON = 1, PREFETCH_AUTO = 2 };

/* The largest payload each frame type may carry; ACT is bounded per session by the plan. */
static uint32_t frame_limit(int type, uint32_t act_limit)
{
    switch (type) {
    case FRAME_HELLO: return 37;
    case FRAME_HELLO_REPLY: return 76;
    case FRAME_AUTH_OK: return 32;
    case FRAME_MODEL_CHECK: return 40;
    case FRAME_PLAN: return 64 + 8 * 4096 + 512;
    case FRAME_ACT: return act_limit;
    case FRAME_KV_KEEP: return 8;
    case FRAME_ERROR: return 512;
    case FRAME_PROFILE_REQ: return 5;  /* n_ctx u32, kv_type u8 */
    case FRAME_PROFILE: return 1024;   /* a device profile record */
    case FRAME_ECHO: return 1u << 20;  /* a link probe, sent back as it came */
    case FRAME_LINK_REQ: return 12 + 255; /* probe bytes u32, port u32, host length u32, host */
    case FRAME_LINK: return 8 + 200;   /* one-way ns u64 (all ones: not timed), then the reason */
    case FRAME_READY: return 1; /* overloaded flag */
    case FRAME_HEARTBEAT: case FRAME_STOP: case FRAME_OK: return 0;
    default: return 0;
    }
}

/* ---- Sockets -------------------------------------------------------------------------------- */

/* Wait until fd is readable (events = POLLIN) or writable; 1 ready, 0 timeout, -1 error. */
static int net_wait(int fd, short events, int timeout_ms)
{
    struct pollfd p = {fd, events, 0};
    int r;
    do r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -1 : r;
}

/* Read exactly n bytes within timeout_ms overall.  0 ok; -1 with a reason. */
static int net_read_full(int fd, void *buf, size_t n, int timeout_ms, herr *e)
{
    uint8_t *p = buf;
    double deadline = now_ms() + timeout_ms;
    while (n > 0) {
        int left = (int)(deadline - now_ms());
        if (left <= 0 || net_wait(fd, POLLIN, left) <= 0) return herr_set(e, "timed out waiting for data"), -1;
        ssize_t r = recv(fd, p, n, 0);
        if (r == 0) return herr_set(e, "connection closed by peer"), -1;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return herr_set(e, "read failed: %s", strerror(errno)), -1;
        }
        p += r, n -= (size_t)r;
    }
    return 0;
}

static int net_write_full(int fd, const void *buf, size_t n, int timeout_ms, herr *e)
{
    const uint8_t *p = buf;
    double deadline = now_ms() + timeout_ms;
    while (n > 0) {
        int left = (int)(deadline - now_ms());
        if (left <= 0 || net_wait(fd, POLLOUT, left) <= 0) return herr_set(e, "timed out sending data"), -1;
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return herr_set(e, "send failed: %s", strerror(errno)), -1;
        }
        p += r, n -= (size_t)r;
    }
    return 0;
}

static void net_tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* activations are latency-bound */
}

/* Listen on host:port (host NULL or "" = every interface).  Returns the fd or -1. */
static int net_listen(const char *host, int port, herr *e)
{
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC, hints.ai_socktype = SOCK_STREAM, hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, ps, &hints, &res);
    if (rc) return herr_set(e, "cannot resolve %s: %s", host ? host : "*", gai_strerror(rc)), -1;
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol), one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 16)) {
        herr_set(e, "cannot listen on %s:%d: %s", host && *host ? host : "*", port, strerror(errno));
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Connect to host:port within timeout_ms.  Returns the fd or -1. */
static int net_connect(const char *host, int port, int timeout_ms, herr *e)
{
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC, hints.ai_socktype = SOCK_STREAM;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc) return herr_set(e, "cannot resolve %s: %s", host, gai_strerror(rc)), -1;
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd >= 0) {
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        int c = connect(fd, res->ai_addr, res->ai_addrlen);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (c != 0 && errno != EINPROGRESS) soerr = errno;
        else if (c != 0 && net_wait(fd, POLLOUT, timeout_ms) <= 0) soerr = ETIMEDOUT;
        else if (c != 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        fcntl(fd, F_SETFL, flags);
        if (soerr) {
            herr_set(e, "cannot connect to %s:%d: %s", host, port, strerror(soerr));
            close(fd);
            fd = -1;
        } else
            net_tune(fd);
    } else
        herr_set(e, "socket: %s", strerror(errno));
    freeaddrinfo(res);
    return fd;
}

/* ---- Frames --------------------------------------------------------------------------------- */

/* A connection: the fd plus a mutex, because a worker's heartbeat thread and its compute loop
 * both write to the control connection. */
typedef struct {
    int fd;
    pthread_mutex_t write_lock;
    char name[320];         /* "worker 2 (host:port)" for messages */
} ring_conn;

static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_u64le(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

static int frame_send(ring_conn *c, int type, const void *payload, uint32_t len, herr *e)
{
    uint8_t h[12] = {'H', 'L', 'D', 'R', RING_VERSION, (uint8_t)type, 0, 0};
    put_u32(h + 8, len);
    pthread_mutex_lock(&c->write_lock);
    int rc = net_write_full(c->fd, h, 12, RING_IO_TIMEOUT_MS, e);
    if (!rc && len) rc = net_write_full(c->fd, payload, len, RING_IO_TIMEOUT_MS, e);
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}

/* Read one frame header and payload into buf (capacity cap).  The payload length is checked
 * against the type's limit before any byte of it is read. */
static int frame_recv(int fd, int *type, uint8_t *buf, uint32_t cap, uint32_t *len, uint32_t act_limit, int timeout_ms, herr *e)
{
    uint8_t h[12];
    if (net_read_full(fd, h, 12, timeout_ms, e)) return -1;
    if (memcmp(h, "HLDR", 4)) return herr_set(e, "bad frame magic (not a halda peer?)"), -1;
    if (h[4] != RING_VERSION) return herr_set(e, "peer speaks protocol version %u, we speak %d", h[4], RING_VERSION), -1;
    *type = h[5];
    *len = (uint32_t)read_le(h + 8, 4);
    if (*type < 1 || *type >= FRAME_TYPE_COUNT) return herr_set(e, "unknown frame type %d", *type), -1;
    uint32_t limit = frame_limit(*type, act_limit);
    if (*len > limit || *len > cap) return herr_set(e, "frame type %d of %u bytes exceeds its limit of %u", *type, *len, limit), -1;
    return *len ? net_read_full(fd, buf, *len, timeout_ms, e) : 0;
}

/* ---- Handshake ------------------------------------------------------------------------------- */

static void random_bytes(uint8_t *out, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY);
    size_t got = 0;
    if (fd >= 0) {
        ssize_t r = read(fd, out, n);
        got = r > 0 ? (size_t)r : 0;
        close(fd);
    }
    if (got < n) { /* no /dev/urandom: mix the clock and pid, weak but never fails */
        uint64_t s = (uint64_t)now_ms() * 1000003u ^ (uint64_t)getpid() << 32;
        for (size_t i = got; i < n; i++) out[i] = (uint8_t)splitmix64(&s);
    }
}

static void handshake_mac(const char *key, const char *label, const uint8_t *n1, const uint8_t *n2, uint8_t out[32])
{
    uint8_t msg[16 + 64];
    size_t ll = strlen(label);
    memcpy(msg, label, ll);
    memcpy(msg + ll, n1, 32);
    memcpy(msg + ll + 32, n2, 32);
    if (key && *key) hmac_sha256(key, strlen(key), msg, ll + 64, out);
    else memset(out, 0, 32);
}

/* Listener side.  On success *role and *session hold what the connector said. */
static int handshake_accept(ring_conn *c, const char *key, int *role, uint64_t *session, herr *e)
{
    uint8_t hello[37], nonce[32], buf[128], mac[32];
    random_bytes(nonce, 32);
    put_u32(hello, RING_VERSION);
    hello[4] = key && *key;
    memcpy(hello + 5, nonce, 32);
    if (frame_send(c, FRAME_HELLO, hello, 37, e)) return -1;
    int type;
    uint32_t len;
    if (frame_recv(c->fd, &type, buf, sizeof buf, &len, 0, RING_IO_TIMEOUT_MS, e)) return -1;
    if (type != FRAME_HELLO_REPLY || len != 76) return herr_set(e, "expected a handshake reply"), -1;
    handshake_mac(key, "halda-connect", nonce, buf + 12, mac);
    if (!mac_equal(mac, buf + 44, 32)) return herr_set(e, "peer failed authentication (wrong or missing --cluster-key)"), -1;
    *role = (int)read_le(buf, 4);
    *session = read_le(buf + 4, 8);
    handshake_mac(key, "halda-accept", buf + 12, nonce, mac);
    return frame_send(c, FRAME_AUTH_OK, mac, 32, e);
}

/* Connector side. */
static int handshake_connect(ring_conn *c, const char *key, int role, uint64_t session, herr *e)
{
    uint8_t buf[128], reply[76], nonce[32], mac[32];
    int type;
    uint32_t len;
    if (frame_recv(c->fd, &type, buf, sizeof buf, &len, 0, RING_IO_TIMEOUT_MS, e)) return -1;
    if (type != FRAME_HELLO || len != 37) return herr_set(e, "expected a handshake hello"), -1;
    if (buf[4] && !(key && *key)) return herr_set(e, "%s requires a cluster key (--cluster-key)", c->name), -1;
    if (!buf[4] && key && *key) return herr_set(e, "%s runs without a cluster key but we have one", c->name), -1;
    random_bytes(nonce, 32);
    put_u32(reply, (uint32_t)role);
    put_u64le(reply + 4, session);
    memcpy(reply + 12, nonce, 32);
    handshake_mac(key, "halda-connect", buf + 5, nonce, reply + 44);
    uint8_t peer_nonce[32];
    memcpy(peer_nonce, buf + 5, 32);
    if (frame_send(c, FRAME_HELLO_REPLY, reply, 76, e)) return -1;
    if (frame_recv(c->fd, &type, buf, sizeof buf, &len, 0, RING_IO_TIMEOUT_MS, e)) {
        char r[sizeof e->msg];
        snprintf(r, sizeof r, "%s", e->msg);
        return herr_set(e, "%s rejected us (%s): check --cluster-key", c->name, r), -1;
    }
    handshake_mac(key, "halda-accept", nonce, peer_nonce, mac);
    if (type != FRAME_AUTH_OK || len != 32 || !mac_equal(mac, buf, 32)) return herr_set(e, "%s failed authentication", c->name), -1;
    return 0;
}

/* The identity of a model file: its size and the SHA-256 of its header and tensor table. */
static void model_fingerprint(const halda_model *m, uint8_t out[40])
{
    put_u64le(out, m->file.map.file_size);
    sha256(m->file.map.data, (size_t)gguf_header_bytes(&m->file), out + 8);
}

/* ---- The plan a worker receives ---------------------------------------------------------------- */

typedef struct {
    uint64_t session;
    int k;                     /* cycles */
    int n_ctx, kv_type, wire, n_threads;
    int begin[RING_MAX_DEVICES], end[RING_MAX_DEVICES]; /* this device's window in each cycle */
    int is_first, is_last;     /* receives from the head / sends to the head */
    int prefetch;              /* PREFETCH_OFF / ON / AUTO */
    char next_host[256];       /* the next worker, when not last */
    int next_port;
} ring_plan;

/* PLAN payload: session u64, k u32, n_ctx u32, kv_type u8, wire u8, first u8, last u8,
 * n_threads u16, prefetch u16, next_port u32, host length u32, host bytes, then k × (begin u32,
 * end u32). */
static uint32_t plan_encode(const ring_plan *p, uint8_t *out)
{
    put_u64le(out, p->session);
    put_u32(out + 8, (uint32_t)p->k);
    put_u32(out + 12, (uint32_t)p->n_ctx);
    out[16] = (uint8_t)p->kv_type, out[17] = (uint8_t)p->wire, out[18] = (uint8_t)p->is_first, out[19] = (uint8_t)p->is_last;
    out[20] = (uint8_t)p->n_threads, out[21] = (uint8_t)(p->n_threads >> 8);
    out[22] = (uint8_t)p->prefetch, out[23] = 0;
    put_u32(out + 24, (uint32_t)p->next_port);
    uint32_t hl = (uint32_t)strlen(p->next_host);
    put_u32(out + 28, hl);
    memcpy(out + 32, p->next_host, hl);
    uint8_t *q = out + 32 + hl;
    for (int c = 0; c < p->k; c++, q += 8) put_u32(q, (uint32_t)p->begin[c]), put_u32(q + 4, (uint32_t)p->end[c]);
    return (uint32_t)(q - out);
}

static int plan_decode(ring_plan *p, const uint8_t *b, uint32_t len, int n_layer, herr *e)
{
    memset(p, 0, sizeof *p);
    if (len < 32) return herr_set(e, "plan too short"), -1;
    p->session = read_le(b, 8);
    p->k = (int)read_le(b + 8, 4);
    p->n_ctx = (int)read_le(b + 12, 4);
    p->kv_type = b[16], p->wire = b[17], p->is_first = b[18], p->is_last = b[19];
    p->n_threads = (int)read_le(b + 20, 2);
    p->prefetch = (int)read_le(b + 22, 2);
    p->next_port = (int)read_le(b + 24, 4);
    uint32_t hl = (uint32_t)read_le(b + 28, 4);
    if (p->k < 1 || p->k > n_layer || p->k > RING_MAX_DEVICES) return herr_set(e, "plan has %d cycles", p->k), -1;
    if (p->n_ctx < 1 || p->n_ctx > (1 << 24) || p->kv_type > HALDA_KV_Q8_0 || p->wire > WIRE_F16 || p->is_first > 1 || p->is_last > 1)
        return herr_set(e, "plan has an invalid field"), -1;
    if (p->n_threads < 0 || p->n_threads > HALDA_MAX_THREADS || p->prefetch > PREFETCH_AUTO || p->next_port < 0 ||
        p->next_port > 65535 || hl > 255)
        return herr_set(e, "plan has an invalid field"), -1;
    if (len != 32 + hl + 8u * (uint32_t)p->k) return herr_set(e, "plan length %u does not match its %d cycles", len, p->k), -1;
    memcpy(p->next_host, b + 32, hl);
    p->next_host[hl] = 0;
    if (!p->is_last && (hl == 0 || strlen(p->next_host) != hl)) return herr_set(e, "plan names no next device"), -1;
    const uint8_t *q = b + 32 + hl;
    for (int c = 0; c < p->k; c++, q += 8) {
        p->begin[c] = (int)read_le(q, 4), p->end[c] = (int)read_le(q + 4, 4);
        if (p->begin[c] < 0 || p->end[c] <= p->begin[c] || p->end[c] > n_layer || (c && p->begin[c] < p->end[c - 1]))
            return herr_set(e, "plan window %d [%d, %d) is invalid for %d layers", c, p->begin[c], p->end[c], n_layer), -1;
    }
    return 0;
}

/* ACT payload: cycle u32, n_tok u32, then n_tok × pos u32, then n_tok × n_embd values (F32 or
 * F16 as the plan's wire type says).  Sequence 0 only for now. */
static uint32_t act_bytes(int n_tok, int n_embd, int wire)
{
    return 8 + 4u * (uint32_t)n_tok + (uint32_t)n_tok * (uint32_t)n_embd * (wire == WIRE_F16 ? 2u : 4u);
}

static uint32_t act_encode(uint8_t *out, int cycle, int n_tok, const int *pos, const float *x, int n_embd, int wire)
{
    put_u32(out, (uint32_t)cycle);
    put_u32(out + 4, (uint32_t)n_tok);
    for (int i = 0; i < n_tok; i++) put_u32(out + 8 + 4 * i, (uint32_t)pos[i]);
    uint8_t *v = out + 8 + 4 * n_tok;
    size_t n = (size_t)n_tok * (size_t)n_embd;
    if (wire == WIRE_F16) quantize_f16(x, v, (int64_t)n);
    else memcpy(v, x, n * 4); /* F32 is little-endian on every platform we build for */
    return act_bytes(n_tok, n_embd, wire);
}

static int act_decode(const uint8_t *b, uint32_t len, int n_embd, int wire, int max_tok, int n_ctx, int k, int *cycle,
                      int *n_tok, int *pos, float *x, herr *e)
{
    if (len < 8) return herr_set(e, "activation frame too short"), -1;
    *cycle = (int)read_le(b, 4);
    *n_tok = (int)read_le(b + 4, 4);
    if (*cycle < 0 || *cycle >= k) return herr_set(e, "activation frame for cycle %d of %d", *cycle, k), -1;
    if (*n_tok < 1 || *n_tok > max_tok) return herr_set(e, "activation frame with %d tokens (1..%d allowed)", *n_tok, max_tok), -1;
    if (len != act_bytes(*n_tok, n_embd, wire)) return herr_set(e, "activation frame of %u bytes, expected %u", len, act_bytes(*n_tok, n_embd, wire)), -1;
    for (int i = 0; i < *n_tok; i++) {
        pos[i] = (int)read_le(b + 8 + 4 * i, 4);
        if (pos[i] < 0 || pos[i] >= n_ctx) return herr_set(e, "activation frame position %d outside the context", pos[i]), -1;
    }
    const uint8_t *v = b + 8 + 4 * (size_t)*n_tok;
    size_t n = (size_t)*n_tok * (size_t)n_embd;
    if (wire == WIRE_F16) type_info(TYPE_F16)->dequantize(v, x, (int64_t)n);
    else memcpy(x, v, n * 4);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return herr_set(e, "activation frame holds a non-finite value"), -1;
    return 0;
}

/* KV_KEEP payload: seq u32, n_keep u32 — keep the first n_keep positions of sequence seq (0
 * clears it).  The head sends it along the ring like an activation frame; each worker applies
 * it and passes it on, and the last one returns it to the head as the acknowledgement. */
static void kv_keep_encode(uint8_t out[8], int seq, int n_keep)
{
    put_u32(out, (uint32_t)seq);
    put_u32(out + 4, (uint32_t)n_keep);
}

static int kv_keep_decode(const uint8_t *b, uint32_t len, int n_seq, int *seq, int *n_keep, herr *e)
{
    if (len != 8) return herr_set(e, "KV command of %u bytes, expected 8", len), -1;
    uint64_t s = read_le(b, 4), n = read_le(b + 4, 4);
    if (s >= (uint64_t)n_seq || n > (1u << 24)) return herr_set(e, "KV command for sequence %" PRIu64 ", %" PRIu64 " positions", s, n), -1;
    *seq = (int)s, *n_keep = (int)n;
    return 0;
}

/* LINK_REQ payload: probe_bytes u32, port u32, host length u32, host bytes — time the link to
 * host:port (the next device of the ring) with echoes of probe_bytes. */
typedef struct {
    uint32_t probe_bytes;
    int port;
    char host[256];
} link_request;

static uint32_t link_request_encode(const link_request *q, uint8_t *out)
{
    uint32_t hl = (uint32_t)strlen(q->host);
    put_u32(out, q->probe_bytes);
    put_u32(out + 4, (uint32_t)q->port);
    put_u32(out + 8, hl);
    memcpy(out + 12, q->host, hl);
    return 12 + hl;
}

static int link_request_decode(const uint8_t *b, uint32_t len, link_request *q, herr *e)
{
    memset(q, 0, sizeof *q);
    if (len < 12) return herr_set(e, "link request too short"), -1;
    uint64_t probe = read_le(b, 4), port = read_le(b + 4, 4), hl = read_le(b + 8, 4);
    if (probe < 1 || probe > frame_limit(FRAME_ECHO, 0) || port < 1 || port > 65535 || hl < 1 || hl > 255 || len != 12 + hl)
        return herr_set(e, "link request has an invalid field"), -1;
    memcpy(q->host, b + 12, (size_t)hl);
    if (strlen(q->host) != hl) return herr_set(e, "link request host holds a NUL byte"), -1;
    q->probe_bytes = (uint32_t)probe, q->port = (int)port;
    return 0;
}

/* ---- Heartbeats ------------------------------------------------------------------------------ */

typedef struct {
    ring_conn **conns; /* where to send */
    int n;
    atomic_bool stop;
    pthread_t thread;
} heartbeat;

static void *heartbeat_main(void *arg)
{
    heartbeat *h = arg;
    while (!atomic_load(&h->stop)) {
        for (int i = 0; i < h->n; i++) {
            herr e;
            frame_send(h->conns[i], FRAME_HEARTBEAT, NULL, 0, &e); /* a failure shows up on the reader side */
        }
        for (int t = 0; t < RING_HEARTBEAT_MS / 50 && !atomic_load(&h->stop); t++) usleep(50 * 1000);
    }
    return NULL;
}

static int heartbeat_start(heartbeat *h, ring_conn **conns, int n)
{
    h->conns = conns, h->n = n;
    atomic_store(&h->stop, false);
    return pthread_create(&h->thread, NULL, heartbeat_main, h);
}
static void heartbeat_stop(heartbeat *h)
{
    atomic_store(&h->stop, true);
    pthread_join(h->thread, NULL);
}

static void conn_init(ring_conn *c, int fd, const char *name)
{
    c->fd = fd;
    pthread_mutex_init(&c->write_lock, NULL);
    snprintf(c->name, sizeof c->name, "%s", name);
}
static void conn_close(ring_conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    pthread_mutex_destroy(&c->write_lock);
}

/* ---- Prefetch ---------------------------------------------------------------------------------- *
 * While a device waits for the token to come around the ring, a background thread brings the
 * weights of its next window into memory, so the window starts at memory speed instead of disk
 * speed.  With k = 1 there is only one window and nothing to do.
 *
 * On an overloaded device (its windows do not all fit in RAM) something must be read again from
 * disk every token.  Left alone, the page cache keeps what fits and re-reads the rest as it
 * faults, in the window's critical path.  The prefetcher instead keeps most of every window
 * resident and streams only the last s bytes of each: released right after the window is
 * computed, read again ahead of its next use while the token is on other devices.  Release
 * comes before the next read, so at most one window's tail is in memory besides the resident
 * parts: held − (k−1)·s must fit, which gives s.  Releasing whole windows instead (s = window)
 * re-reads everything every token: slower than leaving it to the page cache, as
 * bench/prefetch.sh showed before this split. */

typedef struct {
    const halda_model *m;
    const int *begin, *end; /* the device's windows, one per cycle */
    int k;
    bool release;           /* overloaded: release the tail of each window after use */
    uint64_t stream_bytes;  /* overloaded: the bytes at the end of each window that are released
                               after use and read ahead again (the rest stays resident) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done_cycle;         /* the window just computed, -1 when nothing is pending */
    bool quit, on;
} prefetcher;

static void window_extent(const halda_model *m, int l0, int l1, uint64_t *off, uint64_t *len)
{
    uint64_t b = UINT64_MAX, e = 0;
    for (int l = l0; l < l1; l++) {
        if (m->layers[l].file_begin < b) b = m->layers[l].file_begin;
        if (m->layers[l].file_end > e) e = m->layers[l].file_end;
    }
    *off = b, *len = e > b ? e - b : 0;
}

static void *prefetch_main(void *arg)
{
    prefetcher *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->quit) {
        if (p->done_cycle < 0) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        int c = p->done_cycle, next = (c + 1) % p->k;
        p->done_cycle = -1;
        pthread_mutex_unlock(&p->mu);
        uint64_t off, len;
        const file_region *r; /* the window's mapping (model_map made one per run of held layers) */
        if (p->release) {
            window_extent(p->m, p->begin[c], p->end[c], &off, &len);
            uint64_t tail = p->stream_bytes < len ? p->stream_bytes : len;
            if ((r = model_region_of(p->m, off, len))) platform_release(r, p->m->file.map.fd, off + len - tail, tail);
        }
        /* the whole next window: its resident part costs a touch per page, its tail a read */
        window_extent(p->m, p->begin[next], p->end[next], &off, &len);
        if ((r = model_region_of(p->m, off, len))) platform_prefetch(r, off, len);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Decide and start.  mode: PREFETCH_OFF / ON / AUTO (on exactly when the windows this device
 * holds do not fit in the memory it has available, i.e. the device is overloaded).  ctx: the
 * device's context.  Its KV cache is allocated but fills (is touched) only as the context does:
 * that much of what is available now is not there for weights, and a little more for the rows
 * of scratch a token touches (most of the arena serves long prompt batches only). */
static void prefetcher_start(prefetcher *p, const halda_model *m, const halda_context *ctx, const int *begin, const int *end, int k, int mode)
{
    memset(p, 0, sizeof *p);
    p->m = m, p->begin = begin, p->end = end, p->k = k, p->done_cycle = -1;
    uint64_t held = 0;
    for (int c = 0; c < k; c++) {
        uint64_t off, len;
        window_extent(m, begin[c], end[c], &off, &len);
        held += len;
    }
    int64_t avail = platform_ram_available_bytes();
    bool overloaded = avail >= 0 && held > (uint64_t)avail;
    p->release = overloaded;
    if (overloaded) {
        const kv_cache *kv = &ctx->kv;
        uint64_t reserve = kv_cache_bytes(kv->n_slots, kv->n_seq, kv->n_ctx, kv->kv_dim, kv->type) + (8u << 20);
        uint64_t room = (uint64_t)avail > reserve ? (uint64_t)avail - reserve : 0;
        p->stream_bytes = k > 1 ? (held - room + (uint64_t)k - 2) / (uint64_t)(k - 1) : held;
    }
    if (k < 2 || mode == PREFETCH_OFF || (mode == PREFETCH_AUTO && !overloaded)) return;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->on = pthread_create(&p->thread, NULL, prefetch_main, p) == 0;
}

/* Window `cycle` was just computed: release it if overloaded and fetch the next one. */
static void prefetcher_done(prefetcher *p, int cycle)
{
    if (!p->on) return;
    pthread_mutex_lock(&p->mu);
    p->done_cycle = cycle;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void prefetcher_stop(prefetcher *p)
{
    if (!p->on) return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    p->on = false;
}

/* ---- Worker ----------------------------------------------------------------------------------- */

/* What `halda worker` was started with. */
typedef struct {
    const char *model_path;
    const char *host;      /* address to listen on ("" or NULL: every interface) */
    int port;
    const char *key;       /* cluster key, or NULL */
    int n_threads;         /* 0: one per physical core */
    bool verbose;          /* -v: log KV commands and link probes too */
} worker_options;

/* Accept the data connection from the previous device of this session, within the timeout;
 * anything else that connects meanwhile is turned away. */
static int worker_accept_data(int listen_fd, const char *key, uint64_t session, ring_conn *in, herr *e)
{
    double deadline = now_ms() + 2 * RING_IO_TIMEOUT_MS;
    while (now_ms() < deadline) {
        if (net_wait(listen_fd, POLLIN, (int)(deadline - now_ms())) <= 0) break;
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0) continue;
        net_tune(fd);
        conn_init(in, fd, "previous device");
        int role;
        uint64_t s;
        herr he;
        if (handshake_accept(in, key, &role, &s, &he) == 0 && role == ROLE_DATA && s == session) return 0;
        frame_send(in, FRAME_ERROR, "busy with another session", 25, &he);
        conn_close(in);
    }
    return herr_set(e, "the previous device never connected"), -1;
}

/* Everything one session needs; freed by worker_session_end. */
typedef struct {
    halda_model *m;
    const worker_options *o;
    uint64_t session;       /* the head's, from the handshake */
    int listen_fd;
    ring_conn *ctl;         /* the head's control connection */
    halda_context *ctx;
    ring_plan plan;
    ring_conn in, out;      /* data from the previous / to the next worker (fd -1 when unused) */
    uint8_t *buf;           /* one frame */
    float *x;
    int *pos, *seq;
    uint32_t act_limit;
    prefetcher pf;
} worker_state;

/* Frames travel along the ring: activations and KV commands come from the previous device (the
 * head's control connection for the first worker) and go to the next (back to the head on the
 * control connection for the last). */
static ring_conn *worker_next(worker_state *w) { return w->plan.is_last ? w->ctl : &w->out; }

/* Run the window of one activation frame and pass the result on. */
static int worker_compute(worker_state *w, const uint8_t *payload, uint32_t len, herr *e)
{
    const model_hparams *hp = &w->m->hp;
    int cycle, n_tok;
    if (act_decode(payload, len, hp->n_embd, w->plan.wire, w->ctx->n_batch, w->plan.n_ctx, w->plan.k, &cycle, &n_tok, w->pos, w->x, e)) return -1;
    for (int i = 0; i < n_tok; i++) w->seq[i] = 0;
    if (model_forward_window(w->ctx, w->x, n_tok, w->pos, w->seq, w->plan.begin[cycle], w->plan.end[cycle]))
        return herr_set(e, "%s", halda_last_error(w->ctx)), -1;
    uint32_t n = act_encode(w->buf, cycle, n_tok, w->pos, w->x, hp->n_embd, w->plan.wire);
    prefetcher_done(&w->pf, cycle);
    return frame_send(worker_next(w), FRAME_ACT, w->buf, n, e);
}

/* A KV command: cut this device's cache as the head cut its own, and pass the command on, so
 * that it reaches every worker in the same order as the activations around it. */
static int worker_kv_keep(worker_state *w, const uint8_t *payload, uint32_t len, herr *e)
{
    int seq, n_keep;
    if (kv_keep_decode(payload, len, w->ctx->kv.n_seq, &seq, &n_keep, e)) return -1;
    kv_cache_keep(&w->ctx->kv, seq, n_keep);
    if (w->o->verbose)
        fprintf(stderr, "halda worker: KV cache: sequence %d keeps its first %d positions (%d held)\n", seq, n_keep, w->ctx->kv.n_pos[seq]);
    return frame_send(worker_next(w), FRAME_KV_KEEP, payload, len, e);
}

static void worker_session_end(worker_state *w)
{
    prefetcher_stop(&w->pf);
    if (w->in.fd >= 0) conn_close(&w->in);
    if (w->out.fd >= 0) conn_close(&w->out);
    halda_context_free(w->ctx);
    model_unmap(w->m); /* the next head may plan other windows */
    xfree(w->buf), xfree(w->x), xfree(w->pos), xfree(w->seq);
    halda_model *m = w->m;
    const worker_options *o = w->o;
    memset(w, 0, sizeof *w);
    w->m = m, w->o = o;
    w->in.fd = w->out.fd = -1;
}

/* One line on what this device maps of the model file: the header and each window. */
static void worker_print_maps(const halda_model *m)
{
    double mib = 1024.0 * 1024.0;
    fprintf(stderr, "halda worker: mapped %.1f MiB of the %.1f MiB model file: header %.1f MiB", model_mapped_bytes(m) / mib,
            m->file.map.file_size / mib, m->file.map.size / mib);
    for (int i = 0; i < m->maps.n_regions; i++) fprintf(stderr, ", %.1f MiB at %" PRIu64, m->maps.regions[i].size / mib, m->maps.regions[i].off);
    fprintf(stderr, " (%d layers)\n", m->maps.n_held);
}

/* Set up from a PLAN frame: map the windows, a context for them, data connections, then READY. */
static int worker_setup(worker_state *w, const uint8_t *payload, uint32_t len, herr *e)
{
    const model_hparams *hp = &w->m->hp;
    if (plan_decode(&w->plan, payload, len, hp->n_layer, e)) return -1;
    bool *held = xcalloc((size_t)hp->n_layer, sizeof *held);
    if (!held) return herr_set(e, "out of memory"), -1;
    for (int c = 0; c < w->plan.k; c++)
        for (int l = w->plan.begin[c]; l < w->plan.end[c]; l++) held[l] = true;
    int mapped = model_map(w->m, held, false, e);
    halda_context_params cp = halda_context_default_params();
    cp.n_ctx = w->plan.n_ctx, cp.kv_type = w->plan.kv_type;
    cp.n_threads = w->plan.n_threads ? w->plan.n_threads : w->o->n_threads;
    char err[256];
    if (!mapped && !(w->ctx = context_new(w->m, &cp, held, err, sizeof err))) herr_set(e, "%s", err);
    xfree(held);
    if (!w->ctx) return -1;
    worker_print_maps(w->m);
    w->act_limit = act_bytes(w->ctx->n_batch, hp->n_embd, WIRE_F32);
    w->buf = xmalloc(w->act_limit);
    w->x = xmalloc((size_t)w->ctx->n_batch * (size_t)hp->n_embd * sizeof *w->x);
    w->pos = xmalloc((size_t)w->ctx->n_batch * sizeof *w->pos);
    w->seq = xmalloc((size_t)w->ctx->n_batch * sizeof *w->seq);
    if (!w->buf || !w->x || !w->pos || !w->seq) return herr_set(e, "out of memory"), -1;
    /* connect onward first, then accept from behind: the chain resolves from the last worker */
    if (!w->plan.is_last) {
        int fd = net_connect(w->plan.next_host, w->plan.next_port, RING_IO_TIMEOUT_MS, e);
        if (fd < 0) return -1;
        char name[300];
        snprintf(name, sizeof name, "next device %s:%d", w->plan.next_host, w->plan.next_port);
        conn_init(&w->out, fd, name);
        if (handshake_connect(&w->out, w->o->key, ROLE_DATA, w->plan.session, e)) return -1;
    }
    if (w->plan.is_first && w->in.fd >= 0) conn_close(&w->in); /* nobody sends to the first worker but the head */
    if (!w->plan.is_first && w->in.fd < 0 && worker_accept_data(w->listen_fd, w->o->key, w->plan.session, &w->in, e)) return -1;
    prefetcher_start(&w->pf, w->m, w->ctx, w->plan.begin, w->plan.end, w->plan.k, w->plan.prefetch);
    if (w->pf.release && w->pf.on)
        fprintf(stderr, "halda worker: this device is overloaded: its windows do not fit in available RAM; prefetching, "
                        "re-reading the last %.1f MiB of each window\n", w->pf.stream_bytes / 1048576.0);
    else if (w->pf.release)
        fprintf(stderr, "halda worker: this device is overloaded: its windows do not fit in available RAM\n");
    uint8_t overloaded = w->pf.release;
    return frame_send(w->ctl, FRAME_READY, &overloaded, 1, e);
}

/* LINK_REQ: time the link to the next device of the ring with activation-sized echoes over a
 * probe connection of this session, and answer LINK with the one-way time, or with a reason. */
static int worker_time_link(worker_state *w, const uint8_t *payload, uint32_t len, herr *e)
{
    link_request q;
    if (link_request_decode(payload, len, &q, e)) return -1;
    uint8_t reply[8 + 200];
    uint32_t n = 8;
    herr le = {{0}};
    double one_way_ms = -1;
    uint8_t *buf = xmalloc(q.probe_bytes + 64);
    int fd = buf ? net_connect(q.host, q.port, LINK_PROBE_TIMEOUT_MS, &le) : -1;
    if (!buf) herr_set(&le, "out of memory");
    if (fd >= 0) {
        char name[300];
        snprintf(name, sizeof name, "next device %s:%d", q.host, q.port);
        ring_conn c;
        conn_init(&c, fd, name);
        if (handshake_connect(&c, w->o->key, ROLE_PROBE, w->session, &le) == 0) {
            double rtt[LINK_PROBE_ROUNDS];
            int r = 0;
            for (; r < LINK_PROBE_ROUNDS; r++) {
                int type;
                uint32_t got;
                memset(buf, 0x5a, q.probe_bytes);
                double t0 = now_ms();
                if (frame_send(&c, FRAME_ECHO, buf, q.probe_bytes, &le) ||
                    frame_recv(c.fd, &type, buf, q.probe_bytes + 64, &got, 0, LINK_PROBE_TIMEOUT_MS, &le))
                    break;
                if (type != FRAME_ECHO || got != q.probe_bytes) {
                    herr_set(&le, "answered a probe with frame type %d of %u bytes", type, got);
                    break;
                }
                rtt[r] = now_ms() - t0;
            }
            if (r == LINK_PROBE_ROUNDS) one_way_ms = prof_median(rtt, r) / 2;
        }
        conn_close(&c);
    }
    xfree(buf);
    uint64_t ns = one_way_ms >= 0 ? (uint64_t)(one_way_ms * 1e6) : UINT64_MAX;
    if (ns == 0) ns = 1; /* a measured link is never free */
    put_u64le(reply, ns);
    if (one_way_ms < 0) {
        n += (uint32_t)snprintf((char *)reply + 8, sizeof reply - 8, "%s", le.msg);
        if (n > sizeof reply - 1) n = sizeof reply - 1;
    }
    if (w->o->verbose) {
        if (one_way_ms >= 0) fprintf(stderr, "halda worker: link to %s:%d: %.3f ms one way (%u-byte echoes)\n", q.host, q.port, one_way_ms, q.probe_bytes);
        else fprintf(stderr, "halda worker: link to %s:%d not timed: %s\n", q.host, q.port, le.msg);
    }
    return frame_send(w->ctl, FRAME_LINK, reply, n, e);
}

/* A connection before the plan.  Usually the other end of a link probe: the previous device of
 * this session times its link to us; echo its frames until it hangs up (bounded: a few rounds,
 * each with a timeout).  Or the previous device's data link, when its PLAN reached it before
 * ours reached us: kept for worker_setup. */
static void worker_answer_early(worker_state *w)
{
    int fd = accept(w->listen_fd, NULL, NULL);
    if (fd < 0) return;
    net_tune(fd);
    ring_conn c;
    conn_init(&c, fd, "prober");
    int role = 0;
    uint64_t s = 0;
    herr he;
    bool ours = handshake_accept(&c, w->o->key, &role, &s, &he) == 0 && s == w->session;
    if (ours && role == ROLE_PROBE) {
        uint32_t cap = frame_limit(FRAME_ECHO, 0);
        uint8_t *buf = xmalloc(cap);
        for (int r = 0; buf && r < 2 * LINK_PROBE_ROUNDS; r++) {
            int type;
            uint32_t len;
            if (frame_recv(c.fd, &type, buf, cap, &len, 0, LINK_PROBE_TIMEOUT_MS, &he) || type != FRAME_ECHO) break;
            if (frame_send(&c, FRAME_ECHO, buf, len, &he)) break;
        }
        xfree(buf);
    } else if (ours && role == ROLE_DATA && w->in.fd < 0) {
        pthread_mutex_destroy(&c.write_lock);
        conn_init(&w->in, fd, "previous device");
        return;
    } else {
        frame_send(&c, FRAME_ERROR, "busy with another session", 25, &he);
    }
    conn_close(&c);
}

/* Serve one head until it says STOP, goes silent or misbehaves.  Returns 0 on a clean STOP. */
static int worker_session(halda_model *m, const worker_options *o, int listen_fd, ring_conn *ctl, uint64_t session, herr *e)
{
    worker_state w = {0};
    w.m = m, w.o = o, w.session = session, w.listen_fd = listen_fd, w.ctl = ctl;
    w.in.fd = w.out.fd = -1;
    uint32_t cap = act_bytes(512, m->hp.n_embd, WIRE_F32) + frame_limit(FRAME_PLAN, 0) + frame_limit(FRAME_ECHO, 0);
    uint8_t *buf = xmalloc(cap);
    if (!buf) return herr_set(e, "out of memory"), -1;
    heartbeat hb;
    ring_conn *hb_conns[1] = {ctl};
    bool hb_on = heartbeat_start(&hb, hb_conns, 1) == 0;
    double last_heard = now_ms();
    int rc = -1;
    for (;;) {
        /* before the plan, the listening socket too: the previous device may time its link to us */
        struct pollfd p[2] = {{ctl->fd, POLLIN, 0}, {w.ctx ? w.in.fd : listen_fd, POLLIN, 0}};
        int r = poll(p, p[1].fd >= 0 ? 2 : 1, 250);
        if (r < 0 && errno != EINTR) {
            herr_set(e, "poll: %s", strerror(errno));
            break;
        }
        /* dead only when nothing from the head waits to be read: after a long task (a profile,
         * a probe) its heartbeats are queued, and it is alive */
        if (!(r > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) && now_ms() - last_heard > RING_DEAD_MS) {
            herr_set(e, "the head stopped answering");
            break;
        }
        if (r <= 0) continue;
        if (!w.ctx && (p[1].revents & POLLIN)) {
            worker_answer_early(&w);
            continue;
        }
        int from_in = w.ctx && w.in.fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR));
        ring_conn *src = from_in ? &w.in : ctl;
        bool from_prev = w.ctx && (from_in || w.plan.is_first); /* the frame comes along the ring */
        int type;
        uint32_t len;
        uint32_t limit = w.act_limit ? w.act_limit : 0;
        if (frame_recv(src->fd, &type, buf, cap, &len, limit, RING_IO_TIMEOUT_MS, e)) break;
        if (src == ctl) last_heard = now_ms();
        if (type == FRAME_HEARTBEAT) continue;
        if (type == FRAME_STOP) {
            rc = 0;
            break;
        }
        if (type == FRAME_ACT && from_prev) {
            if (worker_compute(&w, buf, len, e)) break;
            continue;
        }
        if (type == FRAME_KV_KEEP && from_prev) {
            if (worker_kv_keep(&w, buf, len, e)) break;
            continue;
        }
        if (type == FRAME_MODEL_CHECK && src == ctl && !w.ctx) {
            uint8_t fp[40];
            model_fingerprint(m, fp);
            if (len != 40 || memcmp(fp, buf, 40)) {
                herr_set(e, "the head runs a different model file");
                frame_send(ctl, FRAME_ERROR, e->msg, (uint32_t)strlen(e->msg), e);
                break;
            }
            if (frame_send(ctl, FRAME_OK, NULL, 0, e)) break;
            continue;
        }
        if (type == FRAME_PLAN && src == ctl && !w.ctx) {
            if (worker_setup(&w, buf, len, e)) {
                herr tmp;
                frame_send(ctl, FRAME_ERROR, e->msg, (uint32_t)strlen(e->msg), &tmp);
                break;
            }
            continue;
        }
        if (type == FRAME_PROFILE_REQ && src == ctl && !w.ctx && len == 5) { /* measure (or recall) this device */
            prof_options po = {o->model_path, NULL, o->n_threads, (int)read_le(buf, 4), buf[4] <= HALDA_KV_Q8_0 ? buf[4] : HALDA_KV_F16,
                               false, false, 0, 0};
            device_profile d;
            model_profile mp;
            prof_report rep;
            uint8_t rec[1024];
            if (prof_run(&po, &d, &mp, &rep, e)) {
                herr tmp;
                frame_send(ctl, FRAME_ERROR, e->msg, (uint32_t)strlen(e->msg), &tmp);
                break;
            }
            size_t n = prof_device_encode(&d, rec, sizeof rec);
            if (!n || frame_send(ctl, FRAME_PROFILE, rec, (uint32_t)n, e)) break;
            continue;
        }
        if (type == FRAME_ECHO && src == ctl && !w.ctx) { /* a link probe: straight back */
            if (frame_send(ctl, FRAME_ECHO, buf, len, e)) break;
            continue;
        }
        if (type == FRAME_LINK_REQ && src == ctl && !w.ctx) {
            if (worker_time_link(&w, buf, len, e)) break;
            continue;
        }
        if (type == FRAME_ERROR) {
            herr_set(e, "peer reported: %.*s", (int)(len < 200 ? len : 200), (const char *)buf);
            break;
        }
        herr_set(e, "unexpected frame type %d", type);
        break;
    }
    if (hb_on) heartbeat_stop(&hb);
    worker_session_end(&w);
    xfree(buf);
    return rc;
}

/* `halda worker`: wait for a head, serve it, and wait again — forever.  The model is open but
 * none of its tensors is mapped between sessions. */
static int worker_serve(halda_model *m, const worker_options *o, herr *e)
{
    int lfd = net_listen(o->host, o->port, e);
    if (lfd < 0) return -1;
    fprintf(stderr, "halda worker: listening on %s:%d, model %s (%d layers)%s\n", o->host && *o->host ? o->host : "*", o->port,
            halda_model_arch(m), m->hp.n_layer, o->key && *o->key ? ", cluster key required" : "");
    for (;;) {
        if (net_wait(lfd, POLLIN, -1) <= 0) continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) continue;
        net_tune(fd);
        ring_conn ctl;
        conn_init(&ctl, fd, "head");
        int role;
        uint64_t session;
        herr se = {{0}};
        if (handshake_accept(&ctl, o->key, &role, &session, &se) || role != ROLE_CONTROL) {
            if (!se.msg[0]) herr_set(&se, "a data connection arrived outside a session");
            fprintf(stderr, "halda worker: dropped a connection: %s\n", se.msg);
            conn_close(&ctl);
            continue;
        }
        fprintf(stderr, "halda worker: session started\n");
        if (worker_session(m, o, lfd, &ctl, session, &se) == 0) fprintf(stderr, "halda worker: session ended\n");
        else fprintf(stderr, "halda worker: session ended: %s\n", se.msg);
        conn_close(&ctl);
    }
}

/* ---- Head -------------------------------------------------------------------------------------- */

typedef struct {
    ring_conn conn;
    char host[256];
    int port;
    int index;                 /* position in the --workers list, from 1 */
    pthread_t reader;
    bool reader_on;
    _Atomic double last_heard; /* now_ms() of the last frame */
    atomic_bool failed;
    bool overloaded;           /* its windows do not fit in its RAM: it pages from disk */
    char why[256];
} ring_peer;

/* A frame that came back around the ring (activations, or a KV command's acknowledgement),
 * waiting for the head. */
typedef struct ring_msg {
    struct ring_msg *next;
    int type;              /* FRAME_ACT or FRAME_KV_KEEP */
    uint32_t len;
    uint8_t data[];
} ring_msg;

typedef struct ring_head {
    halda_model *m;
    halda_context *ctx;        /* the head's windows */
    ring_peer *peers;          /* active workers in ring order */
    int n_peers;
    int k, wire, micro_batch;
    int begin[RING_MAX_DEVICES], end[RING_MAX_DEVICES]; /* the head's window per cycle */
    uint32_t act_limit;
    heartbeat hb;
    bool hb_on;
    ring_conn **hb_conns;
    pthread_mutex_t q_lock;
    pthread_cond_t q_cond;
    ring_msg *q_head, *q_tail;
    uint8_t *buf;
    float *x;
    int *pos, *seq;
    int n_done;                /* tokens processed so far, for failure messages */
    prefetcher pf;
} ring_head;

typedef struct {
    ring_head *r;
    ring_peer *p;
} reader_arg;

static void *ring_reader_main(void *arg)
{
    ring_head *r = ((reader_arg *)arg)->r;
    ring_peer *p = ((reader_arg *)arg)->p;
    xfree(arg);
    uint8_t *buf = xmalloc(r->act_limit + 512);
    herr e = {{0}};
    while (buf && !atomic_load(&p->failed)) {
        int type;
        uint32_t len;
        if (frame_recv(p->conn.fd, &type, buf, r->act_limit + 512, &len, r->act_limit, RING_DEAD_MS, &e)) {
            if (!strcmp(e.msg, "timed out waiting for data")) herr_set(&e, "stopped answering (no heartbeat for %d s)", RING_DEAD_MS / 1000);
            break;
        }
        p->last_heard = now_ms();
        if (type == FRAME_HEARTBEAT) continue;
        if ((type == FRAME_ACT || type == FRAME_KV_KEEP) && p == &r->peers[r->n_peers - 1]) {
            ring_msg *msg = xmalloc(sizeof *msg + len);
            if (!msg) {
                herr_set(&e, "out of memory");
                break;
            }
            msg->next = NULL, msg->type = type, msg->len = len;
            memcpy(msg->data, buf, len);
            pthread_mutex_lock(&r->q_lock);
            if (r->q_tail) r->q_tail->next = msg;
            else r->q_head = msg;
            r->q_tail = msg;
            pthread_cond_signal(&r->q_cond);
            pthread_mutex_unlock(&r->q_lock);
            continue;
        }
        if (type == FRAME_ERROR) herr_set(&e, "reported: %.*s", (int)(len < 200 ? len : 200), (const char *)buf);
        else herr_set(&e, "sent an unexpected frame (type %d)", type);
        break;
    }
    if (!buf) herr_set(&e, "out of memory");
    xfree(buf);
    snprintf(p->why, sizeof p->why, "%s", e.msg);
    atomic_store(&p->failed, true);
    pthread_mutex_lock(&r->q_lock);
    pthread_cond_broadcast(&r->q_cond);
    pthread_mutex_unlock(&r->q_lock);
    return NULL;
}

/* Wait for the next returned frame; NULL when a worker failed (reason in e). */
static ring_msg *ring_next(ring_head *r, herr *e)
{
    pthread_mutex_lock(&r->q_lock);
    for (;;) {
        for (int i = 0; i < r->n_peers; i++) {
            ring_peer *p = &r->peers[i];
            bool dead = atomic_load(&p->failed) || now_ms() - p->last_heard > RING_DEAD_MS;
            if (dead) {
                pthread_mutex_unlock(&r->q_lock);
                herr_set(e, "worker %d (%s:%d) failed at token %d: %s", p->index, p->host, p->port, r->n_done,
                         atomic_load(&p->failed) ? p->why : "stopped answering");
                return NULL;
            }
        }
        if (r->q_head) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&r->q_cond, &r->q_lock, &ts);
    }
    ring_msg *m = r->q_head;
    r->q_head = m->next;
    if (!r->q_head) r->q_tail = NULL;
    pthread_mutex_unlock(&r->q_lock);
    return m;
}

/* A send to a worker failed: name the worker and the token, as ring_next does. */
static int ring_send_failed(ring_head *r, const ring_peer *p, herr *e)
{
    char why[sizeof e->msg];
    snprintf(why, sizeof why, "%s", e->msg);
    return herr_set(e, "worker %d (%s:%d) failed at token %d: %.150s", p->index, p->host, p->port, r->n_done, why), -1;
}

/* Evaluate tokens at positions pos0.. around the ring; logits of the last token when asked.
 * The prompt travels as micro-batches one behind the other, so several devices work at once:
 * cycle 0 of every micro-batch is sent first, then each returning frame gets the head's window
 * and goes round again until its last cycle. */
static int ring_eval(ring_head *r, const int32_t *tokens, int n, int pos0, float *logits, herr *e)
{
    const int E = r->m->hp.n_embd;
    halda_context *c = r->ctx;
    if (pos0 < 0 || pos0 > c->n_ctx - n) return herr_set(e, "context is full: %d positions needed, %d available", pos0 + n, c->n_ctx), -1;
    int mb = n == 1 ? 1 : r->micro_batch, n_mb = (n + mb - 1) / mb;
    if (r->n_peers == 0) { /* the plan left every worker out: all windows are here */
        for (int b = 0; b < n_mb; b++) {
            int t0 = b * mb, nt = n - t0 < mb ? n - t0 : mb;
            for (int i = 0; i < nt; i++) r->pos[i] = pos0 + t0 + i, r->seq[i] = 0;
            if (model_embed(c, tokens + t0, nt, r->x)) return herr_set(e, "%s", halda_last_error(c)), -1;
            for (int cycle = 0; cycle < r->k; cycle++)
                if (model_forward_window(c, r->x, nt, r->pos, r->seq, r->begin[cycle], r->end[cycle])) return herr_set(e, "%s", halda_last_error(c)), -1;
            if (b == n_mb - 1 && logits) model_output(c, r->x + (size_t)(nt - 1) * (size_t)E, logits);
        }
        r->n_done = pos0 + n;
        return 0;
    }
    for (int b = 0; b < n_mb; b++) {
        int t0 = b * mb, nt = n - t0 < mb ? n - t0 : mb;
        for (int i = 0; i < nt; i++) r->pos[i] = pos0 + t0 + i;
        if (model_embed(c, tokens + t0, nt, r->x)) return herr_set(e, "%s", halda_last_error(c)), -1;
        uint32_t len = act_encode(r->buf, 0, nt, r->pos, r->x, E, r->wire);
        if (frame_send(&r->peers[0].conn, FRAME_ACT, r->buf, len, e)) return ring_send_failed(r, &r->peers[0], e);
    }
    for (int finished = 0; finished < n_mb;) {
        ring_msg *msg = ring_next(r, e);
        if (!msg) return -1;
        if (msg->type != FRAME_ACT) {
            xfree(msg);
            return herr_set(e, "a KV command came back unasked"), -1;
        }
        int cycle, nt;
        int rc = act_decode(msg->data, msg->len, E, r->wire, c->n_batch, c->n_ctx, r->k, &cycle, &nt, r->pos, r->x, e);
        xfree(msg);
        if (rc) return -1;
        for (int i = 0; i < nt; i++) r->seq[i] = 0;
        if (model_forward_window(c, r->x, nt, r->pos, r->seq, r->begin[cycle], r->end[cycle])) return herr_set(e, "%s", halda_last_error(c)), -1;
        prefetcher_done(&r->pf, cycle);
        if (cycle + 1 < r->k) {
            uint32_t len = act_encode(r->buf, cycle + 1, nt, r->pos, r->x, E, r->wire);
            if (frame_send(&r->peers[0].conn, FRAME_ACT, r->buf, len, e)) return ring_send_failed(r, &r->peers[0], e);
            continue;
        }
        finished++;
        if (r->pos[nt - 1] == pos0 + n - 1 && logits) model_output(c, r->x + (size_t)(nt - 1) * (size_t)E, logits);
    }
    r->n_done = pos0 + n;
    return 0;
}

/* Keep the first n_keep positions of sequence seq in every device's KV cache (0 clears it): the
 * head's own at once, the workers' by a KV command sent along the ring, in order with the
 * activations, and back.  Waits for it to come back, so when this returns every cache agrees. */
static int ring_kv_keep(ring_head *r, int seq, int n_keep, herr *e)
{
    kv_cache_keep(&r->ctx->kv, seq, n_keep);
    if (r->n_peers == 0) return 0;
    uint8_t cmd[8];
    kv_keep_encode(cmd, seq, n_keep);
    if (frame_send(&r->peers[0].conn, FRAME_KV_KEEP, cmd, 8, e)) return ring_send_failed(r, &r->peers[0], e);
    ring_msg *msg = ring_next(r, e);
    if (!msg) return -1;
    bool same = msg->type == FRAME_KV_KEEP && msg->len == 8 && !memcmp(msg->data, cmd, 8);
    xfree(msg);
    if (!same) return herr_set(e, "the ring returned something else than the KV command sent"), -1;
    return 0;
}

static void ring_head_close(ring_head *r)
{
    if (!r) return;
    herr e;
    prefetcher_stop(&r->pf);
    if (r->hb_on) heartbeat_stop(&r->hb);
    for (int i = 0; i < r->n_peers; i++) {
        ring_peer *p = &r->peers[i];
        if (p->conn.fd >= 0) frame_send(&p->conn, FRAME_STOP, NULL, 0, &e);
        atomic_store(&p->failed, true);
        if (p->conn.fd >= 0) shutdown(p->conn.fd, SHUT_RDWR);
        if (p->reader_on) pthread_join(p->reader, NULL);
        if (p->conn.fd >= 0) conn_close(&p->conn);
    }
    while (r->q_head) {
        ring_msg *m = r->q_head;
        r->q_head = m->next;
        xfree(m);
    }
    halda_context_free(r->ctx);
    model_unmap(r->m);
    xfree(r->peers), xfree(r->hb_conns), xfree(r->buf), xfree(r->x), xfree(r->pos), xfree(r->seq);
    xfree(r);
}

typedef struct {
    const char *workers;   /* "host:port,host:port" in ring order */
    const char *key;
    int k;                 /* cycles */
    const int *w;          /* layers per cycle for [head, worker 1, ...], or NULL for an even split */
    int n_w;
    int n_ctx, kv_type, wire, n_threads, micro_batch;
    int prefetch;          /* PREFETCH_OFF / ON / AUTO */
    const char *model_path; /* for profiling this device */
    bool print_instance;   /* print the measured Halda instance to stderr */
    /* Turn an instance into a plan: 0 with k and w[0..n_devices) set, 1 when it has no opinion,
     * -1 when no plan is feasible (reason in e).  NULL: no solver. */
    int (*solve)(const char *instance, int *k, int *w, int n_devices, herr *e);
} ring_options;

/* Parse "host:port,host:port"; returns the count or -1. */
static int parse_workers(const char *list, char hosts[][256], int *ports, int cap, herr *e)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[300];
        if (len == 0 || len >= sizeof item) return herr_set(e, "bad --workers entry"), -1;
        memcpy(item, p, len);
        item[len] = 0;
        char *colon = strrchr(item, ':');
        int port = RING_DEFAULT_PORT;
        if (colon) {
            char *end;
            long v = strtol(colon + 1, &end, 10);
            if (*end || v < 1 || v > 65535) return herr_set(e, "bad port in --workers entry '%s'", item), -1;
            port = (int)v;
            *colon = 0;
        }
        if (!item[0] || strlen(item) > 255) return herr_set(e, "bad host in --workers entry"), -1;
        if (n >= cap) return herr_set(e, "more than %d workers", cap), -1;
        memcpy(hosts[n], item, strlen(item) + 1); /* at most 256 bytes, checked above */
        ports[n++] = port;
        p += len + (comma ? 1 : 0);
        if (comma && !*p) return herr_set(e, "--workers ends with a comma"), -1;
    }
    if (n == 0) return herr_set(e, "--workers lists no worker"), -1;
    return n;
}

/* Read a plan in `halda solve`'s output format: one line `NAME w=W n=N` per device in ring
 * order (the head first), then `k=K latency_ms=T`.  Lines starting with # are comments.
 * TRUST BOUNDARY: a user's file; every number is range-checked.  Returns the device count. */
static int plan_file_read(const char *path, int *k, int *w, int cap, herr *e)
{
    FILE *f = fopen(path, "r");
    if (!f) return herr_set(e, "cannot open plan %s: %s", path, strerror(errno)), -1;
    char line[512];
    int n = 0, lineno = 0;
    *k = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *kp = strstr(line, "k="), *wp = strstr(line, " w=");
        long v;
        char *end;
        if (kp && (kp == line || isspace((unsigned char)kp[-1]))) {
            v = strtol(kp + 2, &end, 10);
            if (end == kp + 2 || v < 1 || v > 4096) return fclose(f), herr_set(e, "%s line %d: bad k", path, lineno), -1;
            *k = (int)v;
        } else if (wp) {
            v = strtol(wp + 3, &end, 10);
            if (end == wp + 3 || v < 0 || v > 4096) return fclose(f), herr_set(e, "%s line %d: bad w", path, lineno), -1;
            if (n >= cap) return fclose(f), herr_set(e, "%s: more than %d devices", path, cap), -1;
            w[n++] = (int)v;
        } else {
            for (char *c = line; *c; c++)
                if (!isspace((unsigned char)*c)) return fclose(f), herr_set(e, "%s line %d: not a plan line", path, lineno), -1;
        }
    }
    fclose(f);
    if (!*k || !n) return herr_set(e, "%s: no k= line or no devices", path), -1;
    return n;
}

/* Wait for the reply to a request on a control connection, skipping heartbeats. */
static int ring_reply(ring_peer *p, int *type, uint8_t *buf, uint32_t cap, uint32_t *len, int timeout_ms, herr *e)
{
    double deadline = now_ms() + timeout_ms;
    do {
        int left = (int)(deadline - now_ms());
        if (left <= 0 || frame_recv(p->conn.fd, type, buf, cap, len, 0, left, e)) {
            char r[sizeof e->msg];
            snprintf(r, sizeof r, "%s", left <= 0 ? "timed out" : e->msg);
            return herr_set(e, "worker %d (%s:%d): %s", p->index, p->host, p->port, r), -1;
        }
    } while (*type == FRAME_HEARTBEAT);
    if (*type == FRAME_ERROR) {
        char r[256];
        snprintf(r, sizeof r, "%.*s", (int)(*len < 200 ? *len : 200), (const char *)buf);
        return herr_set(e, "worker %d (%s:%d): %s", p->index, p->host, p->port, r), -1;
    }
    return 0;
}

/* The Halda instance of this cluster (../shared/halda/MODEL.md) from measurements: the head's
 * own profile, each worker's (it measures itself, or recalls its cache), and every link of the
 * ring timed with activation-sized echoes.  t_comm of a device is the one-way time to hand a
 * token's activations to the next device of the ring (in --workers order: a device the solver
 * leaves out makes its neighbours' hop another, which the model cannot know in advance).  The
 * head times its links to the first and the last worker; each worker times its link to the next
 * one when asked (LINK_REQ) and reports it.  A worker that cannot reach the next one gets the
 * head's link to that one as an estimate, and the instance says so.  Returns a malloc'd text,
 * or NULL. */
static char *ring_cluster_instance(halda_model *m, const char *model_path, ring_peer *peers, int n, int n_ctx, int kv_type,
                                   herr *e)
{
    device_profile d[RING_MAX_DEVICES];
    model_profile mp;
    prof_report rep;
    prof_options po = {model_path, NULL, 0, n_ctx, kv_type, false, false, 0, 0};
    if (prof_run(&po, &d[0], &mp, &rep, e)) return NULL;
    double one_way_ms[RING_MAX_DEVICES] = {0};
    uint32_t probe = (uint32_t)m->hp.n_embd * 4;
    uint8_t *buf = xmalloc(probe + 2048);
    if (!buf) return herr_set(e, "out of memory"), NULL;
    memset(buf, 0x5a, probe);
    for (int i = 0; i < n; i++) {
        uint8_t req[5];
        put_u32(req, (uint32_t)n_ctx);
        req[4] = (uint8_t)kv_type;
        int type;
        uint32_t len;
        if (frame_send(&peers[i].conn, FRAME_PROFILE_REQ, req, 5, e) || ring_reply(&peers[i], &type, buf, probe + 2048, &len, 60000, e))
            return xfree(buf), NULL;
        size_t used;
        if (type != FRAME_PROFILE || prof_device_decode(&d[i + 1], buf, len, &used, e)) {
            xfree(buf);
            return herr_set(e, "worker %d sent a bad profile", peers[i].index), NULL;
        }
        double rtt[5];
        for (int r = 0; r < 5; r++) {
            memset(buf, 0x5a, probe);
            double t0 = now_ms();
            if (frame_send(&peers[i].conn, FRAME_ECHO, buf, probe, e) || ring_reply(&peers[i], &type, buf, probe + 2048, &len, 10000, e))
                return xfree(buf), NULL;
            rtt[r] = now_ms() - t0;
        }
        one_way_ms[i + 1] = prof_median(rtt, 5) / 2;
    }
    /* worker i to worker i+1, timed by worker i: hop_ms[i] (< 0: not timed; why[i] says why) */
    double hop_ms[RING_MAX_DEVICES];
    char why[RING_MAX_DEVICES][96];
    for (int i = 0; i + 1 < n; i++) {
        link_request q = {probe, peers[i + 1].port, ""};
        snprintf(q.host, sizeof q.host, "%s", peers[i + 1].host);
        uint8_t req[12 + 256];
        uint32_t qn = link_request_encode(&q, req);
        int type;
        uint32_t len;
        if (frame_send(&peers[i].conn, FRAME_LINK_REQ, req, qn, e) ||
            ring_reply(&peers[i], &type, buf, probe + 2048, &len, 4 * LINK_PROBE_ROUNDS * LINK_PROBE_TIMEOUT_MS, e))
            return xfree(buf), NULL;
        if (type != FRAME_LINK || len < 8 || len > frame_limit(FRAME_LINK, 0)) {
            xfree(buf);
            return herr_set(e, "worker %d answered a link request with frame type %d", peers[i].index, type), NULL;
        }
        uint64_t ns = read_le(buf, 8);
        hop_ms[i] = ns == UINT64_MAX || ns > (uint64_t)PROF_MAX_MS * 1000000 ? -1 : (double)ns / 1e6;
        snprintf(why[i], sizeof why[i], "%.*s", (int)(len - 8 < 90 ? len - 8 : 90), (const char *)buf + 8);
        for (char *c = why[i]; *c; c++) if (*c == '\n' || (uint8_t)*c < 0x20) *c = ' ';
    }
    xfree(buf);
    size_t cap = 512 + 1024 * (size_t)(n + 1);
    char *text = xmalloc(cap);
    if (!text) return herr_set(e, "out of memory"), NULL;
    size_t at = (size_t)snprintf(text, cap, "# halda instance v1, measured by the head\n");
    /* the links, one way, as comments: what each t_comm below is made of */
    for (int i = 0; i <= n && n > 0; i++) {
        char from[16], to[16];
        snprintf(from, sizeof from, i == 0 ? "head" : "w%d", i == 0 ? 0 : peers[i - 1].index);
        snprintf(to, sizeof to, i == n ? "head" : "w%d", i == n ? 0 : peers[i].index);
        if (i == 0 || i == n)
            at += (size_t)snprintf(text + at, cap - at, "# link %s->%s %.4f ms one way (timed by the head)\n", from, to, one_way_ms[i == 0 ? 1 : n]);
        else if (hop_ms[i - 1] >= 0)
            at += (size_t)snprintf(text + at, cap - at, "# link %s->%s %.4f ms one way (timed by %s)\n", from, to, hop_ms[i - 1], from);
        else
            at += (size_t)snprintf(text + at, cap - at, "# link %s->%s %.4f ms one way (estimated from the head's link to %s: %s could not time it: %s)\n",
                                   from, to, one_way_ms[i + 1], to, from, why[i - 1]);
    }
    prof_instance_model_line(text + at, cap - at, &mp);
    at += strlen(text + at);
    for (int i = 0; i <= n; i++) {
        /* device i hands its output to device i+1 (the head, 0, after the last worker) */
        double t_comm = one_way_ms[(i + 1) % (n + 1)];
        if (i == n) t_comm = one_way_ms[n];
        else if (i > 0 && hop_ms[i - 1] >= 0) t_comm = hop_ms[i - 1];
        char name[PROF_NAME_BYTES + 8];
        snprintf(name, sizeof name, "%.*s", PROF_NAME_BYTES - 1, d[i].name);
        if (i > 0) snprintf(d[i].name, sizeof d[i].name, "w%d-%.24s", peers[i - 1].index, name);
        prof_instance_device_line(text + at, cap - at, &d[i], &mp, i == 0, t_comm);
        at += strlen(text + at);
    }
    return text;
}

/* The automatic plan: the measured instance through the Halda solver (section 12).  GPU layers
 * (n) are not run yet, so only k and the windows w are taken. */
static int ring_solve(const char *instance, int *k, int *w, int n_devices, herr *e)
{
    solve_instance *in = xmalloc(sizeof *in);
    solve_plan *plan = xmalloc(sizeof *plan);
    char why[512] = "";
    int rc = -1;
    if (!in || !plan) {
        herr_set(e, "out of memory");
    } else if (solve_parse_instance(instance, strlen(instance), in, why, sizeof why)) {
        herr_set(e, "the measured instance is invalid: %.200s", why);
    } else if (in->n_device != n_devices) {
        herr_set(e, "the measured instance has %d devices, expected %d", in->n_device, n_devices);
    } else {
        int r = solve_optimize(in, plan, NULL, why, sizeof why);
        if (r == 1) herr_set(e, "no plan fits this cluster: %.200s", why);
        else if (r != 0) herr_set(e, "the solver failed: %.200s", why);
        else {
            *k = plan->k;
            for (int i = 0; i < n_devices; i++) w[i] = plan->w[i];
            fprintf(stderr, "halda: Halda plan k=%d, predicted %.1f ms per token\n", plan->k, plan->latency_ms);
            rc = 0;
        }
    }
    xfree(in), xfree(plan);
    return rc;
}

/* Connect to the workers, check their model, decide the plan, hand out the windows, and wait
 * until the ring is up. */
static ring_head *ring_head_open(halda_model *m, const ring_options *o, herr *e)
{
    static char hosts[RING_MAX_DEVICES][256];
    int ports[RING_MAX_DEVICES];
    int n_workers = parse_workers(o->workers, hosts, ports, RING_MAX_DEVICES - 1, e);
    if (n_workers < 0) return NULL;
    int L = m->hp.n_layer, M = n_workers + 1;
    ring_head *r = xcalloc(1, sizeof *r);
    if (!r) return herr_set(e, "out of memory"), NULL;
    r->m = m, r->wire = o->wire;
    pthread_mutex_init(&r->q_lock, NULL);
    pthread_cond_init(&r->q_cond, NULL);
    r->peers = xcalloc((size_t)M, sizeof *r->peers);
    if (!r->peers) goto oom;
    uint64_t session;
    random_bytes((uint8_t *)&session, sizeof session);
    uint8_t fp[40], reply[512];
    model_fingerprint(m, fp);
    /* 1. every listed worker: connect, authenticate, compare models */
    for (int i = 0; i < n_workers; i++) {
        ring_peer *p = &r->peers[r->n_peers++];
        snprintf(p->host, sizeof p->host, "%.255s", hosts[i]);
        p->port = ports[i], p->index = i + 1;
        char name[300];
        snprintf(name, sizeof name, "worker %d (%s:%d)", p->index, p->host, p->port);
        int fd = net_connect(p->host, p->port, RING_IO_TIMEOUT_MS, e);
        if (fd < 0) goto fail;
        conn_init(&p->conn, fd, name);
        int type;
        uint32_t len;
        if (handshake_connect(&p->conn, o->key, ROLE_CONTROL, session, e) || frame_send(&p->conn, FRAME_MODEL_CHECK, fp, 40, e) ||
            ring_reply(p, &type, reply, sizeof reply, &len, RING_IO_TIMEOUT_MS, e))
            goto fail;
        if (type != FRAME_OK) {
            herr_set(e, "%s answered the model check with frame type %d", name, type);
            goto fail;
        }
    }
    /* keep the workers' dead-head timers quiet while we measure and plan */
    r->hb_conns = xcalloc((size_t)M, sizeof *r->hb_conns);
    if (!r->hb_conns) goto oom;
    for (int i = 0; i < r->n_peers; i++) r->hb_conns[i] = &r->peers[i].conn;
    if (heartbeat_start(&r->hb, r->hb_conns, r->n_peers)) goto oom;
    r->hb_on = true;
    /* 2. the plan: given, or from measurements */
    int k = o->k > 0 ? o->k : 1, w[RING_MAX_DEVICES];
    int n_ctx = o->n_ctx;
    if (!o->w && (o->print_instance || o->solve)) {
        char *inst = ring_cluster_instance(m, o->model_path, r->peers, r->n_peers, n_ctx, o->kv_type, e);
        if (!inst) goto fail;
        if (o->print_instance) fputs(inst, stderr);
        int rc = o->solve ? o->solve(inst, &k, w, M, e) : 1;
        xfree(inst);
        if (rc < 0) goto fail;
        if (rc == 0) goto have_plan;
    }
    if (L % k) {
        herr_set(e, "-k %d does not divide the %d layers", k, L);
        goto fail;
    }
    int W = L / k;
    if (o->w) {
        if (o->n_w != M) {
            herr_set(e, "--layer-window needs %d numbers (head first, then each worker), got %d", M, o->n_w);
            goto fail;
        }
        int sum = 0;
        for (int i = 0; i < M; i++) sum += w[i] = o->w[i];
        if (sum != W) {
            herr_set(e, "--layer-window adds up to %d, but %d layers / k=%d needs %d per cycle", sum, L, k, W);
            goto fail;
        }
        if (w[0] < 1) {
            herr_set(e, "the head must run at least one layer per cycle");
            goto fail;
        }
    } else {
        if (W < M) {
            herr_set(e, "%d layers per cycle cannot be spread over %d devices", W, M);
            goto fail;
        }
        for (int i = 0; i < M; i++) w[i] = W / M + (i < W % M);
    }
have_plan:
    r->k = k;
    W = L / k;
    /* 3. workers the plan leaves out go home; the rest keep their ring order */
    heartbeat_stop(&r->hb); /* it holds pointers into peers[], which move now */
    r->hb_on = false;
    {
        int a = 0;
        for (int i = 0; i < r->n_peers; i++) {
            ring_peer *p = &r->peers[i];
            if (w[p->index] == 0) {
                herr tmp;
                frame_send(&p->conn, FRAME_STOP, NULL, 0, &tmp);
                conn_close(&p->conn);
                continue;
            }
            if (a != i) { /* move it down; a mutex must not be used through a copy, so make a fresh one */
                r->peers[a] = *p;
                pthread_mutex_init(&r->peers[a].conn.write_lock, NULL);
            }
            a++;
        }
        r->n_peers = a;
    }
    /* 4. windows: within cycle c, workers in order, then the head last */
    bool *held = xcalloc((size_t)L, sizeof *held);
    if (!held) goto oom;
    ring_plan plans[RING_MAX_DEVICES];
    for (int c = 0; c < k; c++) {
        int at = c * W;
        for (int i = 0; i < r->n_peers; i++) {
            int wi = w[r->peers[i].index];
            plans[i].begin[c] = at, plans[i].end[c] = at + wi;
            at += wi;
        }
        r->begin[c] = at, r->end[c] = at + w[0];
        for (int l = at; l < at + w[0]; l++) held[l] = true;
    }
    /* the head maps its windows and the embedding and output tensors, nothing else */
    if (model_map(m, held, true, e)) {
        xfree(held);
        goto fail;
    }
    halda_context_params cp = halda_context_default_params();
    cp.n_ctx = n_ctx, cp.kv_type = o->kv_type, cp.n_threads = o->n_threads;
    char err[256];
    r->ctx = context_new(m, &cp, held, err, sizeof err);
    xfree(held);
    if (!r->ctx) {
        herr_set(e, "%s", err);
        goto fail;
    }
    r->micro_batch = o->micro_batch > 0 ? o->micro_batch : 16;
    if (r->micro_batch > r->ctx->n_batch) r->micro_batch = r->ctx->n_batch;
    r->act_limit = act_bytes(r->ctx->n_batch, m->hp.n_embd, WIRE_F32);
    r->buf = xmalloc(r->act_limit);
    r->x = xmalloc((size_t)r->ctx->n_batch * (size_t)m->hp.n_embd * sizeof *r->x);
    r->pos = xmalloc((size_t)r->ctx->n_batch * sizeof *r->pos);
    r->seq = xmalloc((size_t)r->ctx->n_batch * sizeof *r->seq);
    if (!r->buf || !r->x || !r->pos || !r->seq) goto oom;
    for (int i = 0; i < r->n_peers; i++) r->hb_conns[i] = &r->peers[i].conn;
    if (heartbeat_start(&r->hb, r->hb_conns, r->n_peers)) goto oom; /* through setup, before the readers */
    r->hb_on = true;
    for (int i = 0; i < r->n_peers; i++) { /* hand out the plan */
        ring_plan *pl = &plans[i];
        pl->session = session, pl->k = k, pl->n_ctx = r->ctx->n_ctx, pl->kv_type = o->kv_type, pl->wire = o->wire;
        pl->n_threads = 0, pl->is_first = i == 0, pl->is_last = i == r->n_peers - 1, pl->prefetch = o->prefetch;
        pl->next_host[0] = 0, pl->next_port = 0;
        if (!pl->is_last) snprintf(pl->next_host, sizeof pl->next_host, "%s", r->peers[i + 1].host), pl->next_port = r->peers[i + 1].port;
        uint8_t payload[64 + 8 * RING_MAX_DEVICES + 512];
        uint32_t len = plan_encode(pl, payload);
        if (frame_send(&r->peers[i].conn, FRAME_PLAN, payload, len, e)) goto fail;
    }
    for (int i = 0; i < r->n_peers; i++) { /* every worker set up its windows and data links */
        ring_peer *p = &r->peers[i];
        int type;
        uint32_t len;
        if (ring_reply(p, &type, reply, sizeof reply, &len, 4 * RING_IO_TIMEOUT_MS, e)) goto fail;
        if (type != FRAME_READY) {
            herr_set(e, "worker %d (%s:%d) could not join the ring (frame type %d)", p->index, p->host, p->port, type);
            goto fail;
        }
        p->overloaded = len == 1 && reply[0];
    }
    for (int i = 0; i < r->n_peers; i++) {
        ring_peer *p = &r->peers[i];
        p->last_heard = now_ms();
        reader_arg *ra = xmalloc(sizeof *ra);
        if (!ra) goto oom;
        ra->r = r, ra->p = p;
        if (pthread_create(&p->reader, NULL, ring_reader_main, ra)) goto oom;
        p->reader_on = true;
    }
    prefetcher_start(&r->pf, m, r->ctx, r->begin, r->end, k, o->prefetch);
    if (r->pf.release) fprintf(stderr, "halda: the head is overloaded: its windows do not fit in available RAM\n");
    /* the plan, for the user */
    fprintf(stderr, "halda: ring of %d devices, k=%d, layers per cycle:", r->n_peers + 1, k);
    fprintf(stderr, " head %d", w[0]);
    for (int i = 0; i < r->n_peers; i++)
        fprintf(stderr, ", %s:%d %d%s", r->peers[i].host, r->peers[i].port, w[r->peers[i].index], r->peers[i].overloaded ? " (overloaded)" : "");
    fprintf(stderr, "\nhalda: the head maps %.1f MiB of the %.1f MiB model file (its windows, the embeddings and the output)\n",
            model_mapped_bytes(m) / 1048576.0, m->file.map.file_size / 1048576.0);
    return r;
oom:
    herr_set(e, "out of memory");
fail:
    ring_head_close(r);
    return NULL;
}

/* =============================================================================================
 * 15. CLI
 *
 * `halda SUBCOMMAND [flags]`.  Flags follow llama.cpp where one exists (-m, -p, -n, -t, -c,
 * --temp ...).  A usage error prints one line `halda: <what>` and exits 2; a runtime failure
 * prints one line and exits 1.
 * ============================================================================================= */
#ifndef HALDA_NO_MAIN

typedef struct {
    const char *model, *prompt, *prompt_file, *out;
    const char *chat_template, *system; /* run --chat-template NAME, --system TEXT */
    int n_predict, n_threads, n_ctx, top, kv_type, runs;
    bool no_bos, special, tied, chat;
    /* cluster */
    const char *workers, *cluster_key, *host, *plan;
    int k, port, wire, n_windows, prefetch;
    int windows[RING_MAX_DEVICES];
    const char *disk; /* profile: a file or folder on the file system to time */
    bool reprofile;   /* profile: measure again even when cached */
    bool print_instance; /* run/eval with --workers: print the measured cluster instance */
    bool verbose;        /* worker -v: log KV commands and link probes */
    bool ignore_eos;     /* run: never stop at an end-of-generation token (benchmarks, tests) */
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
    "                 [--min-p P] [--repeat-penalty R] [--seed S] [-f PROMPT_FILE] [--kv-type f16|f32|q8_0] [--special]\n"
    "                 [--no-bos] [--chat] [--chat-template llama2|llama3|chatml|deepseek-r1] [--system TEXT] [--ignore-eos]\n"
    "                 [--workers HOST:PORT,... [--cluster-key KEY] [-k K] [--layer-window W0,W1,...] [--wire f32|f16]\n"
    "                  [--plan FILE] [--prefetch on|off|auto] [--print-instance]]\n"
    "Generate text: the continuation streams to stdout, timings go to stderr.  --chat sends the prompt as a\n"
    "user message laid out by the model's chat template (--chat-template picks the layout; it implies --chat).\n"
    "--no-bos: the prompt gets no BOS token (for a prompt laid out already, BOS included where it belongs).\n"
    "With --workers the layers are spread over a ring of `halda worker`s: -k cycles per token, W0 layers per\n"
    "cycle on this head, W1 on the first worker, ...  Without -k and --layer-window every device is profiled\n"
    "(cached) and the Halda solver picks the plan; -k alone splits evenly; --plan FILE takes a `halda solve` plan.\n";
static const char *const usage_eval =
    "usage: halda eval -m MODEL -p PROMPT [-n N] [--top K] [-t THREADS] [--no-bos] [--special]\n"
    "                  [--workers ... -k K --layer-window ... --wire ...]\n"
    "Print the prompt's token ids, the top K logits at every prompt position, and N greedy tokens,\n"
    "computed token by token with an F32 KV cache (the format of llama.cpp's reference files).\n"
    "--no-bos and --special tokenize as `halda tokenize` does (a chat prompt laid out already).\n";
static const char *const usage_tokenize =
    "usage: halda tokenize -m MODEL -p TEXT [-f FILE] [--no-bos] [--special]\n"
    "Print the token ids of TEXT on one line (MODEL may be a vocabulary-only GGUF).  --special: match control\n"
    "tokens such as <|im_start|> in the text.\n";
static const char *const usage_gen =
    "usage: halda gen-model -o PATH [--arch llama|qwen2] [--type TYPE] [--out-type TYPE] [--layers N] [--embd N]\n"
    "                       [--ff N] [--heads N] [--kv-heads N] [--vocab N] [--ctx N] [--tied] [--seed-weights S]\n"
    "                       [--mix q4_k_m] [--chatml]\n"
    "Write a synthetic model with deterministic random weights (types: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1\n"
    "q2_k q3_k q4_k q5_k q6_k iq4_nl iq1_s iq1_m).  --chatml adds the control tokens <|im_start|> and <|im_end|>\n"
    "and a ChatML chat template (for chat tests).\n";

/* Parse flags for a subcommand; `allowed` lists the flags it takes, space-separated. */
static void cli_parse(int argc, char **argv, const char *cmd, const char *allowed, const char *usage, cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = -1, o->n_threads = 0, o->n_ctx = 0, o->top = 5, o->kv_type = HALDA_KV_F16;
    o->sp = halda_sampler_default_params();
    o->prefetch = PREFETCH_AUTO;
    o->synth = (synth_params){ARCH_LLAMA, TYPE_Q8_0, -1, 2, 256, 512, 4, 2, 1024, 2048, false, 1, SYNTH_MIX_NONE, false};
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
        bool is_switch = !strcmp(f, "--no-bos") || !strcmp(f, "--special") || !strcmp(f, "--tied") || !strcmp(f, "--reprofile") ||
                         !strcmp(f, "--print-instance") || !strcmp(f, "--chat") || !strcmp(f, "--ignore-eos") || !strcmp(f, "--chatml") || !strcmp(f, "-v");
        if (!strcmp(f, "--cluster-key") && i + 1 >= argc) cli_die("--cluster-key needs a value");
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
            else if (!strcmp(v, "q8_0")) o->kv_type = HALDA_KV_Q8_0;
            else cli_die("--kv-type takes f16, f32 or q8_0, got '%s'", v);
        } else if (!strcmp(f, "--no-bos")) o->no_bos = true;
        else if (!strcmp(f, "--special")) o->special = true;
        else if (!strcmp(f, "--chat")) o->chat = true;
        else if (!strcmp(f, "--system")) o->system = v, o->chat = true;
        else if (!strcmp(f, "--chat-template")) {
            if (!chat_family_by_name(v)) cli_die("--chat-template takes llama2, llama3, chatml or deepseek-r1, got '%s'", v);
            o->chat_template = v, o->chat = true;
        }
        else if (!strcmp(f, "--tied")) o->synth.tied = true;
        else if (!strcmp(f, "--chatml")) o->synth.chatml = true;
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
        else if (!strcmp(f, "--mix")) {
            if (strcmp(v, "q4_k_m")) cli_die("--mix takes q4_k_m, got '%s'", v);
            o->synth.mix = SYNTH_MIX_Q4_K_M, o->synth.type = TYPE_Q4_K, o->synth.out_type = TYPE_Q6_K;
        }
        else if (!strcmp(f, "--workers")) o->workers = v;
        else if (!strcmp(f, "--plan")) o->plan = v;
        else if (!strcmp(f, "--print-instance")) o->print_instance = true;
        else if (!strcmp(f, "-v")) o->verbose = true;
        else if (!strcmp(f, "--ignore-eos")) o->ignore_eos = true;
        else if (!strcmp(f, "--cluster-key")) o->cluster_key = v;
        else if (!strcmp(f, "--host")) o->host = v;
        else if (!strcmp(f, "--port")) o->port = (int)cli_int(f, v, 1, 65535);
        else if (!strcmp(f, "-k")) o->k = (int)cli_int(f, v, 1, 4096);
        else if (!strcmp(f, "--prefetch")) {
            if (!strcmp(v, "on")) o->prefetch = PREFETCH_ON;
            else if (!strcmp(v, "off")) o->prefetch = PREFETCH_OFF;
            else if (!strcmp(v, "auto")) o->prefetch = PREFETCH_AUTO;
            else cli_die("--prefetch takes on, off or auto, got '%s'", v);
        }
        else if (!strcmp(f, "--wire")) {
            if (!strcmp(v, "f32")) o->wire = WIRE_F32;
            else if (!strcmp(v, "f16")) o->wire = WIRE_F16;
            else cli_die("--wire takes f32 or f16, got '%s'", v);
        } else if (!strcmp(f, "--layer-window")) {
            o->n_windows = 0;
            for (const char *p = v; *p;) {
                char *end;
                long x = strtol(p, &end, 10);
                if (end == p || x < 0 || x > 4096 || (*end && *end != ',') || o->n_windows >= RING_MAX_DEVICES)
                    cli_die("--layer-window takes comma-separated layer counts (head first), got '%s'", v);
                o->windows[o->n_windows++] = (int)x;
                p = *end ? end + 1 : end;
            }
        }
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

/* Open the model.  With --workers (a ring head) or for a worker, nothing of the tensor data is
 * mapped yet: the ring maps each device's share once the plan is known. */
static halda_model *cli_load(const cli_opts *o, bool map_all)
{
    if (!o->model) cli_die("a model is needed (-m FILE.gguf)");
    if (access(o->model, R_OK) != 0) cli_die("cannot open model %s: %s", o->model, strerror(errno));
    herr e = {{0}};
    halda_model *m = model_open(o->model, &e);
    if (m && map_all && model_map(m, NULL, true, &e)) {
        char reason[sizeof e.msg];
        snprintf(reason, sizeof reason, "%s", e.msg);
        herr_set(&e, "%s: %s", o->model, reason);
        halda_model_free(m);
        m = NULL;
    }
    if (!m) {
        fprintf(stderr, "halda: %s\n", e.msg);
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

/* What run and eval evaluate with: one local context, or a ring of workers with the head's
 * windows local. */
typedef struct {
    halda_context *ctx;
    ring_head *ring;
} cli_engine;

static cli_engine cli_engine_open(halda_model *m, const cli_opts *o, int kv_type)
{
    cli_engine en = {0};
    if (!o->workers) {
        en.ctx = cli_context(m, o, kv_type);
        return en;
    }
    signal(SIGPIPE, SIG_IGN);
    cli_opts po = *o;
    if (o->plan) { /* a solver's plan: k and the windows */
        if (o->n_windows || o->k) cli_die("give either --plan or -k/--layer-window, not both");
        herr pe = {{0}};
        po.n_windows = plan_file_read(o->plan, &po.k, po.windows, RING_MAX_DEVICES, &pe);
        if (po.n_windows < 0) {
            fprintf(stderr, "halda: %s\n", pe.msg);
            exit(2);
        }
        o = &po;
    }
    bool automatic = !o->k && !o->n_windows; /* nothing given: measure the cluster and solve */
    ring_options ro = {o->workers, o->cluster_key, o->k, o->n_windows ? o->windows : NULL, o->n_windows, 0, kv_type, o->wire,
                       o->n_threads, 0, o->prefetch, o->model, o->print_instance, automatic ? ring_solve : NULL};
    ro.n_ctx = o->n_ctx ? o->n_ctx : (halda_model_n_ctx_train(m) < 4096 ? halda_model_n_ctx_train(m) : 4096);
    herr e = {{0}};
    en.ring = ring_head_open(m, &ro, &e);
    if (!en.ring) {
        fprintf(stderr, "halda: %s\n", e.msg);
        exit(1);
    }
    en.ctx = en.ring->ctx;
    return en;
}

static void cli_engine_eval(cli_engine *en, const int32_t *t, int n, int pos0, float *logits)
{
    if (!en->ring) {
        if (halda_eval(en->ctx, t, n, pos0, logits)) cli_fail(en->ctx);
        return;
    }
    herr e = {{0}};
    if (ring_eval(en->ring, t, n, pos0, logits, &e)) {
        fprintf(stderr, "halda: %s\n", e.msg);
        exit(1);
    }
}

/* Keep the first n positions of the KV cache (0 empties it): on a ring, in every device's. */
static void cli_engine_kv_keep(cli_engine *en, int n)
{
    if (!en->ring) {
        halda_kv_truncate(en->ctx, n);
        return;
    }
    herr e = {{0}};
    if (ring_kv_keep(en->ring, 0, n, &e)) {
        fprintf(stderr, "halda: %s\n", e.msg);
        exit(1);
    }
}

static void cli_engine_close(cli_engine *en)
{
    if (en->ring) ring_head_close(en->ring);
    else halda_context_free(en->ctx);
}

/* Only the vocabulary is read, so this works on vocabulary-only GGUF files too. */
static int cmd_tokenize(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "tokenize", "-m -p -f --no-bos --special", usage_tokenize, &o);
    size_t len;
    char *text = cli_prompt(&o, &len);
    if (!o.model) cli_die("a model is needed (-m FILE.gguf)");
    herr e = {{0}};
    tok_vocab *v = tok_vocab_open(o.model, &e);
    if (!v) {
        fprintf(stderr, "halda: %s\n", e.msg);
        return 1;
    }
    int cap = (int)(len < TOK_MAX_TEXT ? len : 0) + 8;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    int n = t ? tok_tokenize(v, text, len, t, cap, !o.no_bos, o.special) : -1;
    if (n < 0) {
        fprintf(stderr, "halda: tokenization failed\n");
        return 1;
    }
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", t[i]);
    printf("\n");
    free(t), free(text);
    tok_vocab_free(v);
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
    cli_parse(argc, argv, "eval", "-m -p -f -n --top -t -c --no-bos --special --workers --cluster-key -k --layer-window --plan --wire --prefetch --print-instance", usage_eval, &o);
    size_t len;
    char *text = cli_prompt(&o, &len);
    int n_gen = o.n_predict < 0 ? 32 : o.n_predict;
    halda_model *m = cli_load(&o, !o.workers);
    int n_prompt;
    int32_t *toks = cli_tokenize(m, text, len, !o.no_bos, o.special, &n_prompt);
    if (n_prompt == 0) cli_die("the prompt has no tokens");
    cli_opts oc = o;
    if (!oc.n_ctx) oc.n_ctx = n_prompt + n_gen + 1;
    cli_engine en = cli_engine_open(m, &oc, HALDA_KV_F32);
    int nv = halda_model_n_vocab(m), k = o.top < nv ? o.top : nv;
    float *logits = malloc((size_t)nv * sizeof *logits);
    int32_t *top = malloc((size_t)k * sizeof *top);
    printf("tokens");
    for (int i = 0; i < n_prompt; i++) printf(" %d", toks[i]);
    printf("\n");
    for (int i = 0; i < n_prompt; i++) {
        cli_engine_eval(&en, &toks[i], 1, i, logits);
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
        if (i + 1 < n_gen) cli_engine_eval(&en, &top[0], 1, n_prompt + i, logits);
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
    cli_engine_close(&en);
    halda_model_free(m);
    return 0;
}

/* The prompt as one user turn (after an optional system message), laid out by the chat
 * template; replaces and frees text.  The result holds its special tokens as text. */
static char *cli_chat(halda_model *m, const cli_opts *o, char *text, size_t *len)
{
    if (!o->chat_template && !halda_chat_template(m))
        cli_die("the model has no chat template halda knows: give --chat-template llama2|llama3|chatml|deepseek-r1");
    halda_chat_message msg[2] = {{"system", o->system}, {"user", text}};
    int first = o->system ? 0 : 1;
    int n = halda_chat_apply(m, o->chat_template, msg + first, 2 - first, 1, NULL, 0);
    size_t cap = n < -1 ? (size_t)(-n - 1) + 1 : 1;
    char *out = malloc(cap);
    if (!out || halda_chat_apply(m, o->chat_template, msg + first, 2 - first, 1, out, cap) < 0) cli_die("cannot lay out the chat prompt");
    free(text);
    *len = cap - 1;
    return out;
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
              "-m -p -f -n -t -c --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n --seed --kv-type --special --no-bos "
              "--chat --chat-template --system --workers --cluster-key -k --layer-window --plan --wire --prefetch --print-instance "
              "--ignore-eos",
              usage_run, &o);
    size_t len;
    char *text = cli_prompt(&o, &len);
    int n_gen = o.n_predict < 0 ? 128 : o.n_predict;
    if (!o.seed_set) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    double t0 = now_ms();
    halda_model *m = cli_load(&o, !o.workers);
    int n_prompt;
    if (o.chat) text = cli_chat(m, &o, text, &len);
    int32_t *toks = cli_tokenize(m, text, len, !o.chat && !o.no_bos, o.special || o.chat, &n_prompt);
    if (n_prompt == 0) cli_die("the prompt has no tokens");
    cli_engine en = cli_engine_open(m, &o, o.kv_type);
    halda_context *c = en.ctx;
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
    cli_engine_eval(&en, toks, n_prompt, 0, logits);
    double t_prompt = now_ms() - t1;
    for (int i = 0; i < n_prompt; i++) halda_sampler_accept(s, toks[i]);
    double t2 = now_ms();
    int n_done = 0, pos = n_prompt;
    for (; n_done < n_gen && pos < n_ctx && !cli_interrupted; n_done++) {
        if (o.ignore_eos)
            for (int i = 0; i < nv; i++)
                if (halda_token_is_eog(m, i)) logits[i] = -INFINITY;
        int32_t t = halda_sample(s, logits);
        if (halda_token_is_eog(m, t)) break;
        halda_sampler_accept(s, t);
        char piece[256];
        int pl = halda_token_to_piece(m, t, piece, sizeof piece, o.special);
        if (pl > 0) fwrite(piece, 1, (size_t)pl, stdout);
        fflush(stdout);
        if (n_done + 1 < n_gen) cli_engine_eval(&en, &t, 1, pos++, logits);
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
            platform_rss_anon_bytes() / mib, kv_cache_bytes(c->kv.n_slots, c->kv.n_seq, c->kv.n_ctx, c->kv.kv_dim, c->kv.type) / mib,
            c->arena_bytes / mib, model_mapped_bytes(m) / mib);
    halda_sampler_free(s);
    free(logits), free(toks), free(text);
    cli_engine_close(&en);
    halda_model_free(m);
    return 0;
}

/* ---- halda chat ---------------------------------------------------------------------------------
 * A conversation is a list of messages.  Every turn lays out the whole conversation with the
 * chat template and tokenizes it.  The KV cache already holds the tokens of the previous layout
 * and of the answer generated after it, so only the tokens after the longest common prefix are
 * evaluated, the cache cut back to that prefix first.  Usually that is just the new message; it
 * is more when the layout of the history differs from what was generated (an answer's text can
 * tokenize to other ids than the model produced, reasoning templates drop past <think>
 * sections).  Either way what the cache holds is exactly the laid-out conversation, token for
 * token, so an answer is the one `halda run` gives for the same text in one go (batched and
 * token-by-token evaluation are bit-identical; tests/test_engine.c checks it).
 *
 * On a ring every device's cache is cut: the head's at once, the workers' by a KV command that
 * travels the ring like an activation frame (ring_kv_keep), so that each worker applies it in
 * order with the activations before and after it, and the head waits for it to come back.
 *
 * When the conversation would leave its answer less than a quarter of the context (or than -n
 * tokens, if fewer), the oldest exchanges are dropped (the system message stays) and the rest is
 * evaluated again.  Ctrl-C reaches the main thread only (helper
 * threads start with SIGINT blocked); it stops an answer, or at the prompt ends the session. */

static const char *const usage_chat =
    "usage: halda chat -m MODEL [--system TEXT] [-n N] [-t THREADS] [-c CTX] [--temp T] [--top-k K] [--top-p P]\n"
    "                  [--min-p P] [--repeat-penalty R] [--repeat-last-n N] [--seed S] [--kv-type f16|f32|q8_0]\n"
    "                  [--chat-template llama2|llama3|chatml|deepseek-r1]\n"
    "                  [--workers HOST:PORT,... [--cluster-key KEY] [-k K] [--layer-window W0,W1,...] [--wire f32|f16]\n"
    "                   [--plan FILE] [--prefetch on|off|auto] [--print-instance]]\n"
    "Chat with the model.  On a terminal: type a message and press Enter (a line ending in \\ goes on with the\n"
    "next); the answer streams out and Ctrl-C stops it; /reset starts over; /exit, Ctrl-D or Ctrl-C at the\n"
    "prompt leaves.  The KV cache is kept across turns, so a turn evaluates only its new tokens.  When stdin is\n"
    "not a terminal, all of it is one user message and its answer goes to stdout.  -n caps each answer\n"
    "(default: until the model ends its turn or the context is full).  Timings per answer go to stderr.\n";

static const char *const chat_help =
    "  /reset   forget the conversation (the system message stays) and empty the KV cache\n"
    "  /exit    leave (so do Ctrl-D and Ctrl-C at the prompt)\n"
    "  /help    this list\n"
    "  A line ending in \\ goes on with the next line.  Ctrl-C stops an answer; what came is kept.\n";

static void *cli_need(void *p)
{
    if (!p) {
        fputs("halda: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

typedef struct {
    halda_model *m;
    cli_engine en;
    halda_sampler *sampler;
    const char *tmpl;         /* --chat-template, or NULL: the model's own */
    float *logits;            /* [n_vocab] after the last evaluated token */
    int n_ctx;                /* positions in the KV cache */
    int n_predict;            /* tokens per answer at most; < 0: no limit */
    bool dim;                 /* stdout is a terminal: show reasoning dimmed */
    halda_chat_message *msg;  /* [n_msg] the conversation; the contents are owned */
    int n_msg, cap_msg;
    int32_t *kv_tok;          /* [n_ctx] the token at each position the KV cache holds */
    int n_kv;                 /* positions the KV cache holds */
} chat_session;

/* Append a message; its n bytes of content are copied. */
static void chat_push(chat_session *s, const char *role, const char *content, size_t n)
{
    if (s->n_msg == s->cap_msg) {
        s->cap_msg = s->cap_msg ? 2 * s->cap_msg : 8;
        s->msg = cli_need(realloc(s->msg, (size_t)s->cap_msg * sizeof *s->msg));
    }
    char *c = cli_need(malloc(n + 1));
    memcpy(c, content, n), c[n] = 0;
    s->msg[s->n_msg++] = (halda_chat_message){role, c};
}

/* Remove messages [i, i + n). */
static void chat_remove(chat_session *s, int i, int n)
{
    for (int j = i; j < i + n; j++) free((char *)s->msg[j].content);
    memmove(s->msg + i, s->msg + i + n, (size_t)(s->n_msg - i - n) * sizeof *s->msg);
    s->n_msg -= n;
}

static bool chat_has_system(const chat_session *s) { return s->n_msg > 0 && !strcmp(s->msg[0].role, "system"); }

/* The conversation laid out by the template, the assistant's turn opened, and tokenized; the
 * caller frees it.  *think: the layout leaves the model inside a reasoning section. */
static int32_t *chat_tokens(chat_session *s, int *n, bool *think)
{
    int need = halda_chat_apply(s->m, s->tmpl, s->msg, s->n_msg, 1, NULL, 0);
    size_t cap = need < -1 ? (size_t)(-need - 1) + 1 : 1;
    char *text = cli_need(malloc(cap));
    if (halda_chat_apply(s->m, s->tmpl, s->msg, s->n_msg, 1, text, cap) < 0) {
        fputs("halda: cannot lay out the conversation\n", stderr);
        exit(1);
    }
    size_t len = cap - 1;
    *think = len >= 8 && !memcmp(text + len - 8, "<think>\n", 8);
    int32_t *t = cli_tokenize(s->m, text, len, false, true, n);
    free(text);
    return t;
}

/* The conversation's tokens, after dropping the oldest exchanges (a user message and its answer;
 * the system message stays) while fewer than `room` positions would be left for the answer.
 * NULL when the system message and the newest message alone fill the context. */
static int32_t *chat_fit(chat_session *s, int room, int *n, bool *think)
{
    int dropped = 0;
    for (;;) {
        int32_t *t = chat_tokens(s, n, think);
        int first = chat_has_system(s);
        bool can_drop = s->n_msg - first > 1; /* more than the new message */
        if (*n + room <= s->n_ctx || (!can_drop && *n < s->n_ctx)) {
            if (dropped) fprintf(stderr, "halda: the context (%d tokens) is full: dropped the oldest %d messages\n", s->n_ctx, dropped);
            return t;
        }
        free(t);
        if (!can_drop) return NULL;
        int k = 1 + (first + 1 < s->n_msg - 1 && !strcmp(s->msg[first + 1].role, "assistant"));
        chat_remove(s, first, k);
        dropped += k;
    }
}

/* Make the KV cache hold t[0..n): keep the longest prefix it holds already and evaluate the
 * rest (at least the last token, whose logits the answer starts from), in chunks so that Ctrl-C
 * is noticed during a long prompt.  Returns the number of tokens evaluated. */
static int chat_prefill(chat_session *s, const int32_t *t, int n)
{
    int keep = 0;
    while (keep < n && keep < s->n_kv && s->kv_tok[keep] == t[keep]) keep++;
    if (keep == n) keep--;
    cli_engine_kv_keep(&s->en, keep);
    s->n_kv = keep;
    while (s->n_kv < n && !cli_interrupted) {
        int pos = s->n_kv, chunk = n - pos < 256 ? n - pos : 256;
        cli_engine_eval(&s->en, t + pos, chunk, pos, s->logits);
        memcpy(s->kv_tok + pos, t + pos, (size_t)chunk * sizeof *t);
        for (int i = pos; i < pos + chunk; i++) halda_sampler_accept(s->sampler, t[i]);
        s->n_kv += chunk;
    }
    return s->n_kv - keep;
}

/* An answer as it streams to stdout.  A token can end inside a UTF-8 character, so bytes that
 * may be the start of an unfinished one wait for the next token.  With `dim`, reasoning
 * (<think> ... </think>, the tags included) is shown dimmed; the tags are single tokens in the
 * models that write them, so they arrive whole. */
typedef struct {
    char *text;           /* the answer so far, owned, NUL-terminated */
    size_t len, cap;
    size_t shown;         /* bytes of text written to stdout */
    bool dim, thinking;   /* thinking: inside a reasoning section */
} chat_stream;

static void chat_show(chat_stream *o, const char *p, size_t n)
{
    while (n > 0) {
        const char *tag = o->thinking ? "</think>" : "<think>";
        const char *at = o->dim ? memmem(p, n, tag, strlen(tag)) : NULL;
        size_t upto = at ? (size_t)(at - p) + (o->thinking ? strlen(tag) : 0) : n;
        fwrite(p, 1, upto, stdout);
        p += upto, n -= upto;
        if (at) o->thinking = !o->thinking, fputs(o->thinking ? "\033[2m" : "\033[0m", stdout);
    }
}

static void chat_stream_put(chat_stream *o, const char *piece, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        o->cap = 2 * (o->len + n + 1);
        o->text = cli_need(realloc(o->text, o->cap));
    }
    memcpy(o->text + o->len, piece, n);
    o->len += n, o->text[o->len] = 0;
    size_t ready = o->len - utf8_partial_tail(o->text + o->shown, o->len - o->shown);
    chat_show(o, o->text + o->shown, ready - o->shown);
    o->shown = ready;
    fflush(stdout);
}

static void chat_stream_end(chat_stream *o)
{
    chat_show(o, o->text + o->shown, o->len - o->shown);
    if (o->dim && o->thinking) fputs("\033[0m", stdout);
    putchar('\n');
    fflush(stdout);
}

enum { CHAT_END_TURN, CHAT_END_LIMIT, CHAT_END_FULL, CHAT_END_INTERRUPTED };

/* Generate the answer from the logits of the prompt, streaming it.  Every token but the last
 * joins the KV cache (the end-of-turn token is left to the next layout).  Returns why it
 * stopped; *n_gen counts the tokens. */
static int chat_generate(chat_session *s, chat_stream *o, int *n_gen)
{
    for (*n_gen = 0;;) {
        if (cli_interrupted) return CHAT_END_INTERRUPTED;
        if (s->n_predict >= 0 && *n_gen >= s->n_predict) return CHAT_END_LIMIT;
        int32_t t = halda_sample(s->sampler, s->logits);
        if (halda_token_is_eog(s->m, t)) return CHAT_END_TURN;
        halda_sampler_accept(s->sampler, t);
        char piece[256];
        int pl = halda_token_to_piece(s->m, t, piece, sizeof piece, 0);
        if (pl > 0) chat_stream_put(o, piece, (size_t)pl);
        ++*n_gen;
        if (s->n_predict >= 0 && *n_gen >= s->n_predict) return CHAT_END_LIMIT;
        if (s->n_kv >= s->n_ctx) return CHAT_END_FULL;
        cli_engine_eval(&s->en, &t, 1, s->n_kv, s->logits);
        s->kv_tok[s->n_kv++] = t;
    }
}

/* One exchange: the user's message in, the answer out and kept in the conversation (a partial
 * one too), the timings on stderr.  Returns 0, or -1 when the message does not fit. */
static int chat_turn(chat_session *s, const char *text, size_t len)
{
    chat_push(s, "user", text, len);
    int room = s->n_ctx / 4, n;
    if (s->n_predict >= 0 && s->n_predict < room) room = s->n_predict;
    bool think;
    int32_t *t = chat_fit(s, room > 0 ? room : 1, &n, &think);
    if (!t) {
        fprintf(stderr, "halda: the message does not fit in the context of %d tokens (raise -c)\n", s->n_ctx);
        chat_remove(s, s->n_msg - 1, 1);
        return -1;
    }
    double t0 = now_ms();
    int n_eval = chat_prefill(s, t, n), cached = s->n_kv - n_eval;
    double t1 = now_ms();
    chat_stream o = {NULL, 0, 0, 0, s->dim, think};
    if (o.dim && think) fputs("\033[2m", stdout);
    int n_gen, why = chat_generate(s, &o, &n_gen);
    chat_stream_end(&o);
    double t2 = now_ms();
    chat_push(s, "assistant", o.text ? o.text : "", o.len);
    static const char *const end[] = {"", "", " (context full)", " (interrupted)"};
    fprintf(stderr, "halda: prompt %d tokens (%d cached, %d evaluated) %.1f ms, %.2f tok/s | answer %d tokens, %.1f ms, %.2f tok/s%s\n",
            n, cached, n_eval, t1 - t0, n_eval / ((t1 - t0) / 1e3 + 1e-9), n_gen, t2 - t1,
            n_gen > 0 ? n_gen / ((t2 - t1) / 1e3 + 1e-9) : 0.0, end[why]);
    free(o.text), free(t);
    return 0;
}

/* Forget the conversation but the system message, and empty the cache. */
static void chat_reset(chat_session *s)
{
    int first = chat_has_system(s);
    chat_remove(s, first, s->n_msg - first);
    cli_engine_kv_keep(&s->en, 0);
    s->n_kv = 0;
}

/* Terminal input, read with poll() and read() rather than stdio: a poll() with a timeout notices
 * Ctrl-C whatever SA_RESTART says and whichever thread took the signal, and no stdio buffer can
 * hold a line that poll() does not see. */
typedef struct {
    char *buf;               /* bytes read, from the start of the current line */
    size_t len, cap, used;   /* used: bytes of the line returned last */
} chat_input;

/* The next line, without its line break, NUL-terminated in *line until the next call; a line
 * ending in \ goes on with the next one (the \ becomes a line break).  Returns its length, -1
 * at the end of input or -2 on Ctrl-C. */
static long chat_read_line(chat_input *in, char **line)
{
    if (in->used) memmove(in->buf, in->buf + in->used, in->len - in->used);
    in->len -= in->used, in->used = 0;
    for (size_t scan = 0;;) {
        char *nl = in->len > scan ? memchr(in->buf + scan, '\n', in->len - scan) : NULL;
        if (nl) {
            size_t end = (size_t)(nl - in->buf);
            if (end > 0 && in->buf[end - 1] == '\\') {
                in->buf[end - 1] = '\n';
                memmove(nl, nl + 1, in->len - end - 1);
                in->len--, scan = end;
                continue;
            }
            *nl = 0, in->used = end + 1, *line = in->buf;
            return (long)end;
        }
        scan = in->len;
        if (in->len + 4096 + 1 > in->cap) in->buf = cli_need(realloc(in->buf, in->cap = 2 * in->cap + 4096 + 1));
        struct pollfd p = {0, POLLIN, 0};
        int r = poll(&p, 1, 200);
        if (cli_interrupted) return -2;
        if (r == 0 || (r < 0 && errno == EINTR)) continue;
        ssize_t got = r < 0 ? -1 : read(0, in->buf + in->len, in->cap - in->len - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) { /* end of input: what is left is the last line */
            if (in->len == 0) return -1;
            in->buf[in->len] = 0, in->used = in->len, *line = in->buf;
            return (long)in->len;
        }
        in->len += (size_t)got;
    }
}

/* The whole of stdin, without trailing line breaks; the caller frees it. */
static char *chat_read_all(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *s = cli_need(malloc(cap));
    for (size_t r; (r = fread(s + n, 1, cap - n - 1, stdin)) > 0;)
        if ((n += r) + 1 == cap) s = cli_need(realloc(s, cap *= 2));
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    s[n] = 0;
    *len = n;
    return s;
}

static void chat_interactive(chat_session *s)
{
    fprintf(stderr, "halda chat: a context of %d tokens; /help lists the commands, Ctrl-C stops an answer, Ctrl-D leaves\n", s->n_ctx);
    chat_input in = {0};
    for (;;) {
        fflush(stdout);
        fputs("> ", stderr);
        char *line;
        long n = chat_read_line(&in, &line);
        if (n < 0) { /* Ctrl-D or Ctrl-C at the prompt */
            fputc('\n', stderr);
            break;
        }
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            chat_reset(s);
            fputs("halda: the conversation is cleared\n", stderr);
        } else if (!strcmp(line, "/help")) fputs(chat_help, stderr);
        else if (line[0] == '/' && isalpha((uint8_t)line[1]) && !strpbrk(line, " \t\n"))
            fprintf(stderr, "halda: unknown command %s (/help lists them)\n", line);
        else if (line[strspn(line, " \t\r\n")]) chat_turn(s, line, (size_t)n);
        cli_interrupted = 0;
    }
    free(in.buf);
}

static int cmd_chat(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "chat",
              "-m -n -t -c --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n --seed --kv-type --chat-template "
              "--system --workers --cluster-key -k --layer-window --plan --wire --prefetch --print-instance",
              usage_chat, &o);
    if (!o.seed_set) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    bool interactive = isatty(0);
    size_t len = 0;
    char *text = interactive ? NULL : chat_read_all(&len);
    if (!interactive && !len) cli_die("stdin holds no message (give one, or run halda chat on a terminal)");
    halda_model *m = cli_load(&o, !o.workers);
    if (!o.chat_template && !halda_chat_template(m))
        cli_die("the model has no chat template halda knows: give --chat-template llama2|llama3|chatml|deepseek-r1");
    /* helper threads start with SIGINT blocked, so a Ctrl-C always reaches this thread */
    sigset_t intr, old;
    sigemptyset(&intr), sigaddset(&intr, SIGINT);
    pthread_sigmask(SIG_BLOCK, &intr, &old);
    chat_session s = {0};
    s.m = m, s.en = cli_engine_open(m, &o, o.kv_type);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cli_on_sigint, sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    int nv = halda_model_n_vocab(m);
    s.tmpl = o.chat_template, s.n_ctx = s.en.ctx->n_ctx, s.n_predict = o.n_predict;
    s.dim = isatty(1) && !getenv("NO_COLOR");
    s.logits = cli_need(malloc((size_t)nv * sizeof *s.logits));
    s.kv_tok = cli_need(malloc((size_t)s.n_ctx * sizeof *s.kv_tok));
    s.sampler = cli_need(halda_sampler_new(&o.sp, nv));
    if (o.system) chat_push(&s, "system", o.system, strlen(o.system));
    int rc = 0;
    if (interactive) chat_interactive(&s);
    else rc = chat_turn(&s, text, len) ? 1 : 0;
    chat_remove(&s, 0, s.n_msg);
    free(s.msg), free(s.logits), free(s.kv_tok), free(text);
    halda_sampler_free(s.sampler);
    cli_engine_close(&s.en);
    halda_model_free(m);
    return rc;
}

static int cmd_gen_model(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "gen-model",
              "-o --arch --type --out-type --mix --layers --embd --ff --heads --kv-heads --vocab --ctx --tied --seed-weights --chatml",
              usage_gen, &o);
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
    "usage: halda bench -m MODEL [-p 512] [-n 128] [-t THREADS] [-r RUNS] [--kv-type f16|f32|q8_0]\n"
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
    halda_model *m = cli_load(&o, !o.workers);
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

static const char *const usage_worker =
    "usage: halda worker -m MODEL [--host ADDR] [--port 9137] [--cluster-key KEY] [-t THREADS] [-v]\n"
    "Wait for a head (halda run|eval|chat --workers ...), run the layers it assigns, and wait again.  Only those\n"
    "layers of MODEL are mapped, while a head is served.  Without --cluster-key the worker listens on 127.0.0.1\n"
    "only unless --host is given.  -v: also log the KV cache commands and link timings the head asks for.\n";

static int cmd_worker(int argc, char **argv)
{
    cli_opts o;
    cli_parse(argc, argv, "worker", "-m --host --port --cluster-key -t -v", usage_worker, &o);
    signal(SIGPIPE, SIG_IGN);
    halda_model *m = cli_load(&o, false); /* each head's plan says what to map */
    const char *host = o.host;
    if (!o.cluster_key || !*o.cluster_key) {
        if (!host) host = "127.0.0.1";
        fprintf(stderr, "halda worker: warning: no --cluster-key: anyone who can reach %s may use this worker\n", host);
    }
    herr e = {{0}};
    worker_options wo = {o.model, host, o.port ? o.port : RING_DEFAULT_PORT, o.cluster_key, o.n_threads, o.verbose};
    worker_serve(m, &wo, &e);
    fprintf(stderr, "halda: %s\n", e.msg);
    halda_model_free(m);
    return 1;
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
    "  chat       talk with a chat model: multi-turn on a terminal, one answer for a message on stdin\n"
    "  eval       print token ids, top logits and a greedy continuation (for comparing with llama.cpp)\n"
    "  tokenize   print the token ids of a text\n"
    "  gen-model  write a synthetic model with random weights (tests, demos, benchmarks)\n"
    "  bench      measure prompt and generation speed against the machine's memory bandwidth\n"
    "  worker     serve layers of a model to a head on the network (run/eval --workers HOST:PORT,...)\n"
    "  profile    measure this device (and a model on it) for the Halda solver\n"
    "  solve      find the fastest layer assignment for a cluster (a Halda instance file)\n";

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(usage_main, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run")) return cmd_run(argc, argv);
    if (!strcmp(cmd, "chat")) return cmd_chat(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc, argv);
    if (!strcmp(cmd, "gen-model")) return cmd_gen_model(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "worker")) return cmd_worker(argc, argv);
    if (!strcmp(cmd, "profile")) return cmd_profile(argc, argv);
    if (!strcmp(cmd, "solve")) return cmd_solve(argc - 1, argv + 1);
    cli_die("unknown command '%s' (see halda --help)", cmd);
}
#endif /* HALDA_NO_MAIN */
