/* tests/bench_tokenizer.c — tokenization speed, in MB of text per second, for each vocabulary in
 * ../shared/models.  Not a test (timings vary with the machine): `make bench-tokenizer`.
 *
 *   tests/bin/bench_tokenizer [FILE...]
 *
 * The text is the files given (default: the English licence texts in /usr/share/common-licenses),
 * repeated to at least 8 MB so that one run takes long enough to time; each vocabulary
 * tokenizes it three times and the best time counts. */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

static void append_file(const char *path, char **buf, size_t *len, size_t *cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char chunk[65536];
    for (size_t r; (r = fread(chunk, 1, sizeof chunk, f)) > 0;) {
        while (*len + r > *cap) *buf = realloc(*buf, *cap = *cap ? *cap * 2 : 1 << 20);
        memcpy(*buf + *len, chunk, r);
        *len += r;
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    static const char *const defaults[] = {"GPL-3", "GPL-2", "LGPL-2.1", "Apache-2.0", "Artistic", "GFDL-1.3", "MPL-2.0", "BSD"};
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (int i = 1; i < argc; i++) append_file(argv[i], &text, &len, &cap);
    for (size_t i = 0; argc < 2 && i < sizeof defaults / sizeof defaults[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "/usr/share/common-licenses/%s", defaults[i]);
        append_file(path, &text, &len, &cap);
    }
    const char *shared = test_shared_dir();
    if (!len || !shared) {
        fprintf(stderr, "bench_tokenizer: no text or no ../shared\n");
        return 1;
    }
    size_t one = len;
    while (len < (8u << 20)) append_file(argc > 1 ? argv[1] : "/usr/share/common-licenses/GPL-3", &text, &len, &cap);
    printf("text: %.2f MB (%zu bytes of distinct text, repeated)\n", len / 1e6, one);
    static const char *const names[] = {"llama-spm", "llama-bpe", "qwen2", "deepseek-llm"};
    int32_t *ids = malloc((len + 8) * sizeof *ids);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4300];
        herr e = {{0}};
        snprintf(path, sizeof path, "%s/models/ggml-vocab-%s.gguf", shared, names[i]);
        double t0 = now_ms();
        tok_vocab *v = tok_vocab_open(path, &e);
        double t_load = now_ms() - t0, best = 1e30;
        if (!v) {
            fprintf(stderr, "%s\n", e.msg);
            continue;
        }
        int n = 0;
        for (int rep = 0; rep < 3; rep++) {
            t0 = now_ms();
            n = tok_tokenize(v, text, len, ids, (int)len + 8, false, false);
            double t = now_ms() - t0;
            if (t < best) best = t;
        }
        printf("%-13s %7.2f MB/s  %9.0f tokens/s  %.2f bytes/token  (load %.0f ms)\n", names[i], len / 1e6 / (best / 1e3),
               n / (best / 1e3), (double)len / n, t_load);
        tok_vocab_free(v);
    }
    free(ids), free(text);
    return 0;
}
