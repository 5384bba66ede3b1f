/* tests/fuzz_tokenizer.c — libFuzzer target for the tokenizers (`make fuzz` builds and runs it
 * as build/fuzz_tokenizer for FUZZ_SECONDS; longer:  build/fuzz_tokenizer -max_total_time=300 DIR).
 *
 * The first byte of an input picks the vocabulary (llama-spm, llama-bpe, qwen2, deepseek-llm
 * from ../shared/models, or $HALDA_SHARED/models) and the flags; the rest is the text.  Besides
 * AddressSanitizer's and UBSan's checks, every run asserts what must hold for any bytes:
 * tokenizing succeeds, every id is in the vocabulary, byte-level BPE pieces give the text back,
 * and asking with too small an output reports the same count. */
#define HALDA_NO_MAIN
#include "../halda.c"

static tok_vocab *fuzz_vocab[4];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const char *const names[] = {"llama-spm", "llama-bpe", "qwen2", "deepseek-llm"};
    const char *shared = getenv("HALDA_SHARED");
    for (int i = 0; i < 4; i++) {
        char path[4200];
        herr e = {{0}};
        snprintf(path, sizeof path, "%s/models/ggml-vocab-%s.gguf", shared && *shared ? shared : "../shared", names[i]);
        if (!(fuzz_vocab[i] = tok_vocab_open(path, &e))) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", e.msg);
            exit(1);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16) return 0;
    const tok_vocab *v = fuzz_vocab[data[0] & 3];
    bool add_special = data[0] & 4, parse_special = data[0] & 8;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int cap = (int)len + 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    int n = tok_tokenize(v, text, len, ids, cap, add_special, parse_special);
    if (n < 0) abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= v->n) abort();
    if (n > 0) { /* too small an output: the same count, the same prefix */
        int32_t *few = malloc((size_t)n * sizeof *few);
        int r = tok_tokenize(v, text, len, few, n - 1, add_special, parse_special);
        if (r != -n - 1 || memcmp(few, ids, (size_t)(n - 1) * sizeof *ids)) abort();
        free(few);
    }
    bool user_byte = false; /* DeepSeek's bytes with only user-defined tokens (see bpe_piece) */
    for (size_t i = 0; v->kind == TOK_BPE && i < len; i++)
        user_byte |= v->byte_token[(uint8_t)text[i]] >= 0 && v->type[v->byte_token[(uint8_t)text[i]]] == TOKT_USER;
    if (v->kind == TOK_BPE && !user_byte) {
        char *back = malloc(len + 1);
        size_t k = 0;
        for (int i = add_special && v->add_bos ? 1 : 0; i < n; i++) {
            long l = tok_piece(v, ids[i], back + k, len - k, true, false);
            if (l < 0 || (size_t)l > len - k) abort();
            k += (size_t)l;
        }
        if (k != len || memcmp(back, text, len)) abort();
        free(back);
    }
    char out[256];
    if (tok_detokenize(v, ids, n, out, sizeof out, data[0] & 16) < 0) abort();
    free(ids);
    return 0;
}
