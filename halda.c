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
 *  11. Halda solver           (see its section)
 *  12. CLI                    `halda run | eval | tokenize | gen-model | solve`, and main()
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
 * across all rows and threads.  SIMD variants replace `vec_dot` entries only; the scalar
 * functions are the specification.
 *
 * Two summation orders per type, where llama.cpp has two.  An integer dot product is exact but
 * the F32 arithmetic around it is not, and llama.cpp's x86 backend adds up differently
 * depending on the matrix: one whose row count is a multiple of 8 (nearly every real one) is
 * "repacked" at load for some types (Q4_0, IQ4_NL, Q4_K, Q5_K, and Q2_K on AVX-512) and
 * computed 8 rows at a time, one F32 accumulator per row; any other goes through its plain
 * dot product, which keeps 8 F32 lanes per row (see lane_acc).  `vec_dot_r8` is the first
 * order and `type_vec_dot` picks it by row count.  Matching llama.cpp bit for bit is what makes
 * its reference logits a usable test at all: the activations are re-quantized before every
 * matrix product, so a one-ulp difference that crosses a rounding boundary moves the logits by
 * ~1e-2, and the references' greedy tokens are compared strictly.
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
    vec_dot_fn vec_dot_r8;    /* the same product in the order of llama.cpp's "repacked" kernels,
                                 for matrices with a multiple of 8 rows (NULL: as vec_dot) */
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
 * The AVX2 dot products (Q8_0, Q4_0, Q4_K, Q6_K) sit right below their scalar twins and replace
 * them in the table on builds with AVX2 and FMA.  They compute the same exact integer lane
 * sums and the same F32 operations in the same order, so they are bit-identical to the scalar
 * functions (tests/test_kernels.c checks it).  The one caveat is the byte product: maddubs
 * adds two products into 16 bits, which cannot saturate while the signed bytes stay in
 * [−127, 127] — every quantizer here and in llama.cpp keeps them there, and llama.cpp's own
 * kernels make the same assumption.  The scalar twins stay compiled as the specification
 * (marked unused where the table no longer names them). */
#if HALDA_AVX2
/* lane l = Σ_{i=4l..4l+3} x_i·y_i over 32 signed bytes: |x| times y with x's sign, paired into
 * 16 bits, then paired again into 32. */
static inline __m256i avx2_dot_i8_lanes(__m256i x, __m256i y)
{
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
/* The same for unsigned x (k-quant weights), each 16-element half weighted by its own 16-bit scale. */
static inline __m256i avx2_dot_u8_lanes(__m256i x, __m256i y, int scale_lo, int scale_hi)
{
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16((int16_t)scale_hi), _mm_set1_epi16((int16_t)scale_lo));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), sc);
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
#endif

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
#if HALDA_AVX2
/* The 32 weights of a Q4_0 block as signed bytes in element order (low nibbles, then high). */
static inline __m256i avx2_q4_0_bytes(const block_q4_0 *x)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)x->qs);
    __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(15));
    return _mm256_sub_epi8(q, _mm256_set1_epi8(8));
}
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
static float vec_dot_q4_1(int64_t n, const void *w, const void *a)
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
        mins = fmaf(f16_to_f32(x[b].m), f16_to_f32(y[b].s), mins);
        lane_acc_block(&acc, f16_to_f32(x[b].d) * f16_to_f32(y[b].d), q, y[b].qs);
    }
    return lane_acc_sum(&acc) + mins;
}

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
static float vec_dot_iq4_nl(int64_t n, const void *w, const void *a)
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
static float vec_dot_iq4_nl_r8(int64_t n, const void *w, const void *a)
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

/* ---- Q8_K (activations of the k-quants) and Q6_K --------------------------------------------- */

/* iscale = −127 / x_max with x_max the element of largest magnitude (its sign kept), q clamped
 * to 127 (the element x_max itself maps to −127), d = 1 / iscale; bsums are the per-16 sums.
 * q is the exact product iscale·x rounded once to the nearest integer (ties to even), not the
 * product first rounded to F32 and then to an integer: llama.cpp rounds with the "add 1.5·2^23"
 * trick, nearest_int(iscale·x), and its build (GCC's default -ffp-contract=fast in GNU C mode)
 * fuses that multiply and add into one FMA.  The two differ only when the product lies within
 * half an F32 ulp of a .5, but the references carry such flips: following the fused form took
 * two reference runs from greedy-token failures to agreement within 2e-6. */
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
            float f = fmaf(iscale, src[j], 12582912.0f); /* 1.5·2^23: the integer lands in the low bits */
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
static float vec_dot_q2_K(int64_t n, const void *w, const void *a)
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
static float vec_dot_q2_K_r8(int64_t n, const void *w, const void *a)
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
static float vec_dot_q3_K(int64_t n, const void *w, const void *a)
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
/* The repacked order of Q4_K and Q5_K, as for Q2_K above: exact integer sums per super-block,
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
    __m256i sum = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        __m256i plo = avx2_dot_u8_lanes(lo, _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c)), sc[2 * c], sc[2 * c]);
        __m256i phi = avx2_dot_u8_lanes(hi, _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c + 32)), sc[2 * c + 1], sc[2 * c + 1]);
        sum = _mm256_add_epi32(sum, _mm256_add_epi32(plo, phi));
    }
    return sum;
}
static float vec_dot_q4_K_avx2(int64_t n, const void *w, const void *a)
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
static float vec_dot_q4_K_r8_avx2(int64_t n, const void *w, const void *a)
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
static float vec_dot_q5_K(int64_t n, const void *w, const void *a)
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
/* The repacked order, as Q4_K's. */
static float vec_dot_q5_K_r8(int64_t n, const void *w, const void *a)
{
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    float acc = 0, acc_min = 0;
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++) {
        q5_K_unpack(&x[b], q);
        k_scale_min_dot(q, x[b].scales, x[b].d, x[b].dmin, &y[b], &acc, &acc_min);
    }
    return acc - acc_min;
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
#if HALDA_AVX2
static float vec_dot_q6_K_avx2(int64_t n, const void *w, const void *a)
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
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p16, sc));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[b].d * f16_to_f32(x[b].d)), _mm256_cvtepi32_ps(sum), acc);
    }
    return avx2_lane_sum(acc);
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

static void iq1_s_unpack(const block_iq1_s *x, iq1_unpacked *u)
{
    const int8_t(*grid)[8] = iq1_grid_get();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        int qh = x->qh[ib];
        u->scale[2 * ib] = u->scale[2 * ib + 1] = 2 * ((qh >> 12) & 7) + 1;
        for (int l = 0; l < 4; l++) {
            const int8_t *g = grid[x->qs[4 * ib + l] | ((qh >> (3 * l)) & 7) << 8];
            for (int j = 0; j < 8; j++) u->g[32 * ib + 8 * l + j] = g[j], u->shift[32 * ib + 8 * l + j] = qh & 0x8000 ? -1 : 1;
        }
    }
}

static inline int iq1_m_sc(const block_iq1_m *x, int k) { return x->scales[2 * k] | x->scales[2 * k + 1] << 8; }
/* d, gathered from the top nibbles of the four scale words */
static inline f16_t iq1_m_d(const block_iq1_m *x)
{
    return (f16_t)((iq1_m_sc(x, 0) >> 12) | (iq1_m_sc(x, 1) >> 8 & 0x00f0) | (iq1_m_sc(x, 2) >> 4 & 0x0f00) | (iq1_m_sc(x, 3) & 0xf000));
}
static void iq1_m_unpack(const block_iq1_m *x, iq1_unpacked *u)
{
    const int8_t(*grid)[8] = iq1_grid_get();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        int sc = iq1_m_sc(x, ib / 2) >> (6 * (ib % 2));
        u->scale[2 * ib] = 2 * (sc & 7) + 1, u->scale[2 * ib + 1] = 2 * ((sc >> 3) & 7) + 1;
        for (int l = 0; l < 4; l++) {
            int h = (x->qh[2 * ib + l / 2] >> (4 * (l % 2))) & 15;
            const int8_t *g = grid[x->qs[4 * ib + l] | (h & 7) << 8];
            for (int j = 0; j < 8; j++) u->g[32 * ib + 8 * l + j] = g[j], u->shift[32 * ib + 8 * l + j] = h & 8 ? -1 : 1;
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
static float vec_dot_iq1_s(int64_t n, const void *w, const void *a)
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
static float vec_dot_iq1_m(int64_t n, const void *w, const void *a)
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

/* ---- The table ------------------------------------------------------------------------------ */

/* The dot products the table names: the SIMD twin where this build has one, chosen once at
 * compile time; the scalar function otherwise. */
#if HALDA_AVX2
#define VEC_DOT_Q8_0 vec_dot_q8_0_avx2
#define VEC_DOT_Q4_0 vec_dot_q4_0_avx2
#define VEC_DOT_Q4_0_R8 vec_dot_q4_0_r8_avx2
#define VEC_DOT_Q4_K vec_dot_q4_K_avx2
#define VEC_DOT_Q4_K_R8 vec_dot_q4_K_r8_avx2
#define VEC_DOT_Q6_K vec_dot_q6_K_avx2
#else
#define VEC_DOT_Q8_0 vec_dot_q8_0
#define VEC_DOT_Q4_0 vec_dot_q4_0
#define VEC_DOT_Q4_0_R8 vec_dot_q4_0_r8
#define VEC_DOT_Q4_K vec_dot_q4_K
#define VEC_DOT_Q4_K_R8 vec_dot_q4_K_r8
#define VEC_DOT_Q6_K vec_dot_q6_K
#endif

static const type_traits type_table[TYPE_COUNT] = {
    [TYPE_F32] = {"f32", 1, 4, TYPE_F32, dequantize_f32, quantize_f32, vec_dot_f32, NULL},
    [TYPE_F16] = {"f16", 1, 2, TYPE_F16, dequantize_f16, quantize_f16, vec_dot_f16, NULL},
    [TYPE_BF16] = {"bf16", 1, 2, TYPE_BF16, dequantize_bf16, quantize_bf16, vec_dot_bf16, NULL},
    [TYPE_Q4_0] = {"q4_0", QK, sizeof(block_q4_0), TYPE_Q8_0, dequantize_q4_0, quantize_q4_0, VEC_DOT_Q4_0, VEC_DOT_Q4_0_R8},
    [TYPE_Q4_1] = {"q4_1", QK, sizeof(block_q4_1), TYPE_Q8_1, dequantize_q4_1, quantize_q4_1, vec_dot_q4_1, NULL},
    [TYPE_Q5_0] = {"q5_0", QK, sizeof(block_q5_0), TYPE_Q8_0, dequantize_q5_0, quantize_q5_0, vec_dot_q5_0, NULL},
    [TYPE_Q5_1] = {"q5_1", QK, sizeof(block_q5_1), TYPE_Q8_1, dequantize_q5_1, quantize_q5_1, vec_dot_q5_1, NULL},
    [TYPE_Q8_0] = {"q8_0", QK, sizeof(block_q8_0), TYPE_Q8_0, dequantize_q8_0, quantize_q8_0, VEC_DOT_Q8_0, NULL},
    [TYPE_Q8_1] = {"q8_1", QK, sizeof(block_q8_1), TYPE_Q8_1, NULL, quantize_q8_1, NULL, NULL},
    [TYPE_Q8_K] = {"q8_k", QK_K, sizeof(block_q8_K), TYPE_Q8_K, dequantize_q8_K, quantize_q8_K, NULL, NULL},
    [TYPE_Q2_K] = {"q2_k", QK_K, sizeof(block_q2_K), TYPE_Q8_K, dequantize_q2_K, quantize_q2_K, vec_dot_q2_K, vec_dot_q2_K_r8},
    [TYPE_Q3_K] = {"q3_k", QK_K, sizeof(block_q3_K), TYPE_Q8_K, dequantize_q3_K, quantize_q3_K, vec_dot_q3_K, NULL},
    [TYPE_Q4_K] = {"q4_k", QK_K, sizeof(block_q4_K), TYPE_Q8_K, dequantize_q4_K, quantize_q4_K, VEC_DOT_Q4_K, VEC_DOT_Q4_K_R8},
    [TYPE_Q5_K] = {"q5_k", QK_K, sizeof(block_q5_K), TYPE_Q8_K, dequantize_q5_K, quantize_q5_K, vec_dot_q5_K, vec_dot_q5_K_r8},
    [TYPE_Q6_K] = {"q6_k", QK_K, sizeof(block_q6_K), TYPE_Q8_K, dequantize_q6_K, quantize_q6_K, VEC_DOT_Q6_K, NULL},
    [TYPE_IQ1_S] = {"iq1_s", QK_K, sizeof(block_iq1_s), TYPE_Q8_K, dequantize_iq1_s, quantize_iq1_s, vec_dot_iq1_s, NULL},
    [TYPE_IQ1_M] = {"iq1_m", QK_K, sizeof(block_iq1_m), TYPE_Q8_K, dequantize_iq1_m, quantize_iq1_m, vec_dot_iq1_m, NULL},
    [TYPE_IQ4_NL] = {"iq4_nl", QK, sizeof(block_iq4_nl), TYPE_Q8_0, dequantize_iq4_nl, quantize_iq4_nl, vec_dot_iq4_nl, vec_dot_iq4_nl_r8},
    /* Known to GGUF; geometry recorded so files parse and are refused by name, not garbled. */
    [TYPE_IQ2_XXS] = {"iq2_xxs", QK_K, 66, TYPE_Q8_K, NULL, NULL, NULL, NULL},
    [TYPE_IQ2_XS] = {"iq2_xs", QK_K, 74, TYPE_Q8_K, NULL, NULL, NULL, NULL},
    [TYPE_IQ3_XXS] = {"iq3_xxs", QK_K, 98, TYPE_Q8_K, NULL, NULL, NULL, NULL},
        [TYPE_IQ3_S] = {"iq3_s", QK_K, 110, TYPE_Q8_K, NULL, NULL, NULL, NULL},
    [TYPE_IQ2_S] = {"iq2_s", QK_K, 82, TYPE_Q8_K, NULL, NULL, NULL, NULL},
    [TYPE_IQ4_XS] = {"iq4_xs", QK_K, 136, TYPE_Q8_K, NULL, NULL, NULL, NULL},
    [TYPE_I8] = {"i8", 1, 1, TYPE_I8, NULL, NULL, NULL, NULL},
    [TYPE_I16] = {"i16", 1, 2, TYPE_I16, NULL, NULL, NULL, NULL},
    [TYPE_I32] = {"i32", 1, 4, TYPE_I32, NULL, NULL, NULL, NULL},
    [TYPE_I64] = {"i64", 1, 8, TYPE_I64, NULL, NULL, NULL, NULL},
    [TYPE_F64] = {"f64", 1, 8, TYPE_F64, NULL, NULL, NULL, NULL},
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
            if (++spins < 20000) continue;
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
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0) {
        /* the other threads finish within microseconds of us */
    }
}

/* The slice [begin, end) of n items that thread ith of nth handles. */
static void pool_split(int64_t n, int ith, int nth, int64_t *begin, int64_t *end)
{
    int64_t per = (n + nth - 1) / nth;
    *begin = per * ith < n ? per * ith : n;
    *end = *begin + per < n ? *begin + per : n;
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
    c->arena = xmalloc(floats * sizeof(float) + act_bytes + 64);
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
} matmul_job;

static void matmul_task(void *arg, int ith, int nth)
{
    const matmul_job *j = arg;
    const tensor *w = j->w;
    vec_dot_fn dot = type_vec_dot(type_info(w->type), w->ne[1]);
    int64_t r0, r1, rows = w->ne[1];
    pool_split(rows, ith, nth, &r0, &r1);
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
    matmul_job j = {w, x, (size_t)w->ne[0] * 4, out, n_tok};
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
} attention_job;

static float kv_get(const kv_cache *kv, const uint8_t *p, int i)
{
    return kv->type == HALDA_KV_F32 ? ((const float *)p)[i] : f16_to_f32(((const f16_t *)p)[i]);
}

static void attention_task(void *arg, int ith, int nth)
{
    const attention_job *j = arg;
    halda_context *c = j->c;
    const model_hparams *hp = &c->model->hp;
    const kv_cache *kv = &c->kv;
    int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    float scale = 1.0f / sqrtf((float)hd);
    float *w = c->scores + (size_t)ith * (size_t)c->n_ctx;
    int64_t b, e;
    pool_split((int64_t)j->n_tok * hp->n_head, ith, nth, &b, &e);
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
        attention_job aj = {c, l, n_tok, pos, seq};
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
        for (int l = 2; l < wl; l++) {
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
 * 12. CLI
 *
 * `halda SUBCOMMAND [flags]`.  Flags follow llama.cpp where one exists (-m, -p, -n, -t, -c,
 * --temp ...).  A usage error prints one line `halda: <what>` and exits 2; a runtime failure
 * prints one line and exits 1.
 * ============================================================================================= */
#ifndef HALDA_NO_MAIN

typedef struct {
    const char *model, *prompt, *prompt_file, *out;
    int n_predict, n_threads, n_ctx, top, kv_type;
    bool no_bos, special, tied;
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
    "Write a synthetic model with deterministic random weights (types: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1\n"
    "q2_k q3_k q4_k q5_k q6_k iq4_nl iq1_s iq1_m).\n";

/* Parse flags for a subcommand; `allowed` lists the flags it takes, space-separated. */
static void cli_parse(int argc, char **argv, const char *cmd, const char *allowed, const char *usage, cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = -1, o->n_threads = 0, o->n_ctx = 0, o->top = 5, o->kv_type = HALDA_KV_F16;
    o->sp = halda_sampler_default_params();
    o->synth = (synth_params){ARCH_LLAMA, TYPE_Q8_0, -1, 2, 256, 512, 4, 2, 512, 2048, false, 1};
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
        bool is_switch = !strcmp(f, "--no-bos") || !strcmp(f, "--special") || !strcmp(f, "--tied");
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
    fprintf(stderr, "halda: load %.0f ms | prompt %d tokens, %.1f ms, %.2f tok/s | generation %d tokens, %.1f ms, %.2f tok/s\n",
            t_load, n_prompt, t_prompt, n_prompt / (t_prompt / 1e3), n_done, t_gen, n_done > 0 ? n_done / (t_gen / 1e3) : 0.0);
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

static const char *const usage_main =
    "usage: halda COMMAND [flags]      (halda COMMAND --help for its flags)\n"
    "  run        generate text from a prompt\n"
    "  eval       print token ids, top logits and a greedy continuation (for comparing with llama.cpp)\n"
    "  tokenize   print the token ids of a text\n"
    "  gen-model  write a synthetic model with random weights (tests, demos, benchmarks)\n";

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
    cli_die("unknown command '%s' (see halda --help)", cmd);
}
#endif /* HALDA_NO_MAIN */
