/* tests/fuzz_gguf.c — libFuzzer target: arbitrary bytes as a GGUF file.  The parser, the
 * hyper-parameter reader, the tensor binder and the vocabulary loader must refuse garbage with
 * a message and never read out of bounds.  Build and run: `make fuzz` (clang, libFuzzer). */
#define HALDA_NO_MAIN
#include "../halda.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    /* copy into an exact-size buffer so ASan sees any read past the end */
    uint8_t *copy = malloc(size);
    memcpy(copy, data, size);
    halda_model m;
    memset(&m, 0, sizeof m);
    m.file.map.data = copy;
    m.file.map.size = m.file.map.file_size = size; /* the whole file is mapped */
    m.file.map.fd = -1;
    herr e = {{0}};
    if (gguf_parse(&m.file, &e) == 0) {
        if (model_read_hparams(&m, &e) == 0) model_bind_tensors(&m, &e);
        tok_vocab *v = tok_vocab_load(&m.file, &e);
        if (v) {
            int32_t ids[64];
            tok_out out = {ids, 0, 64, 0};
            spm_tokenize(v, "hello world", 11, &out);
        }
        tok_vocab_free(v);
    }
    xfree(m.layers);
    m.file.map.data = NULL; /* not a mapping: do not munmap */
    gguf_close(&m.file);
    free(copy);
    return 0;
}
