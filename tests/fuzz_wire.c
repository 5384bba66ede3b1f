/* tests/fuzz_wire.c — libFuzzer target for the ring's decoders: the first byte picks plan,
 * activation frame, KV command or link request, the rest is the payload.  Built and run by
 * `make fuzz`. */
#define HALDA_NO_MAIN
#include "../halda.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t *p = malloc(size - 1 ? size - 1 : 1); /* exact size: ASan catches any overread */
    memcpy(p, data + 1, size - 1);
    herr e;
    if ((data[0] & 3) == 2) {
        int seq, n;
        kv_keep_decode(p, (uint32_t)(size - 1), 1, &seq, &n, &e);
        link_request q;
        link_request_decode(p, (uint32_t)(size - 1), &q, &e);
    } else if (data[0] & 1) {
        ring_plan plan;
        plan_decode(&plan, p, (uint32_t)(size - 1), 80, &e);
    } else {
        static float x[16 * 64];
        int pos[16], cycle, n;
        act_decode(p, (uint32_t)(size - 1), 64, data[0] >> 1 & 1, 16, 4096, 4, &cycle, &n, pos, x, &e);
    }
    free(p);
    return 0;
}
