/* tests/fuzz_profile.c — libFuzzer target: arbitrary bytes as profile records.  Each decoder
 * (device, model, link) must refuse malformed bytes with a message and never read outside the
 * buffer; whatever it accepts must be canonical — encoding the decoded struct gives back the
 * very bytes that were read — and a cache file is decoded the same way, record after record.
 * Build and run: `make fuzz` (clang, libFuzzer). */
#define HALDA_NO_MAIN
#include "../halda.c"

/* Decode buf as every kind; whatever is accepted must re-encode to the same bytes. */
static void decode_all(const uint8_t *buf, size_t size)
{
    uint8_t re[256];
    herr e = {{0}};
    size_t used = 0, n;
    device_profile d;
    model_profile m;
    link_profile l;
    /* each decoder on the whole input */
    if (prof_device_decode(&d, buf, size, &used, &e) == 0) {
        n = prof_device_encode(&d, re, sizeof re);
        if (n != used || used > size || memcmp(re, buf, n)) __builtin_trap();
    } else if (!e.msg[0]) {
        __builtin_trap(); /* a refusal always says why */
    }
    if (prof_model_decode(&m, buf, size, &used, &e) == 0) {
        n = prof_model_encode(&m, re, sizeof re);
        if (n != used || used > size || memcmp(re, buf, n)) __builtin_trap();
    }
    if (prof_link_decode(&l, buf, size, &used, &e) == 0) {
        n = prof_link_encode(&l, re, sizeof re);
        if (n != used || used > size || memcmp(re, buf, n)) __builtin_trap();
        if (prof_t_comm_ms(&l, 8192, TYPE_F16) < 0) __builtin_trap(); /* an accepted link has a finite t_comm */
    }
    /* a cache file: a device record, then a model record */
    if (prof_device_decode(&d, buf, size, &used, &e) == 0) {
        size_t used_m;
        prof_model_decode(&m, buf + used, size - used, &used_m, &e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. the bytes as they are, in an exact-size copy so ASan sees any read past the end */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    decode_all(buf, size);
    free(buf);
    /* 2. the bytes as the payload behind a valid header (kind from the first byte), so the
     *    fuzzer spends its time on the field checks rather than on finding the header */
    if (size >= 1) {
        static const size_t payload[4] = {0, PROF_DEVICE_BYTES, PROF_MODEL_BYTES, PROF_LINK_BYTES};
        int kind = 1 + data[0] % 3;
        size_t len = PROF_HEADER_BYTES + (size - 1 < payload[kind] ? size - 1 : payload[kind]);
        uint8_t *rec = malloc(len);
        memcpy(rec, PROF_MAGIC, 4);
        rec[4] = PROF_VERSION, rec[5] = 0, rec[6] = (uint8_t)kind, rec[7] = 0;
        for (int i = 0; i < 4; i++) rec[8 + i] = (uint8_t)(payload[kind] >> (8 * i));
        memcpy(rec + PROF_HEADER_BYTES, data + 1, len - PROF_HEADER_BYTES);
        decode_all(rec, len);
        free(rec);
    }
    return 0;
}
