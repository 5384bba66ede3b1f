/* tests/test_wire.c — the ring's wire formats: plan and activation frames round-trip exactly,
 * and random, truncated and mutated bytes are rejected with a reason, never a bad read (this
 * program also runs under ASan/UBSan in `make sanitize`).  Frames are also pushed through a
 * socketpair to exercise the length checks of frame_recv. */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

static void test_plan_roundtrip(void)
{
    ring_plan p = {0}, q;
    p.session = 0x1122334455667788ull, p.k = 3, p.n_ctx = 4096, p.kv_type = HALDA_KV_F16, p.wire = WIRE_F16;
    p.n_threads = 4, p.prefetch = PREFETCH_AUTO, p.is_first = 1, p.is_last = 0, p.next_port = 9137;
    snprintf(p.next_host, sizeof p.next_host, "192.168.1.20");
    int b[3] = {0, 10, 20}, e[3] = {4, 14, 24};
    for (int c = 0; c < 3; c++) p.begin[c] = b[c], p.end[c] = e[c];
    uint8_t buf[1024];
    uint32_t n = plan_encode(&p, buf);
    herr er = {{0}};
    CHECK(plan_decode(&q, buf, n, 30, &er) == 0, "plan decodes: %s", er.msg);
    CHECK(q.session == p.session && q.k == 3 && q.n_ctx == 4096 && q.wire == WIRE_F16 && q.prefetch == PREFETCH_AUTO &&
              q.next_port == 9137 && !strcmp(q.next_host, "192.168.1.20") && q.begin[2] == 20 && q.end[2] == 24,
          "plan round trip");
    CHECK(plan_decode(&q, buf, n, 20, &er) != 0, "a window past the model's layers is refused");
    for (uint32_t cut = 0; cut < n; cut++) CHECK(plan_decode(&q, buf, cut, 30, &er) != 0, "truncated plan (%u bytes) refused", cut);
    uint64_t rng = 5;
    int accepted = 0;
    for (int i = 0; i < 20000; i++) { /* mutate bytes of a valid plan */
        uint8_t m[1024];
        memcpy(m, buf, n);
        for (int j = 0; j < 3; j++) m[splitmix64(&rng) % n] = (uint8_t)splitmix64(&rng);
        if (plan_decode(&q, m, n, 30, &er) == 0) {
            accepted++;
            bool sane = q.k >= 1 && q.k <= 30 && q.n_ctx >= 1 && strlen(q.next_host) < 256;
            for (int c = 0; c < q.k; c++) sane &= q.begin[c] >= 0 && q.end[c] <= 30 && q.begin[c] < q.end[c];
            CHECK(sane, "an accepted mutated plan is within bounds");
        }
    }
    CHECK(accepted < 20000, "mutations are mostly caught (%d accepted)", accepted);
}

static void test_act_roundtrip(void)
{
    enum { E = 64, N = 5 };
    float x[N * E], y[N * E];
    int pos[N] = {7, 8, 9, 10, 11}, pos2[N];
    uint64_t rng = 9;
    for (int i = 0; i < N * E; i++) x[i] = (float)(splitmix64(&rng) % 2001) / 100.0f - 10.0f;
    uint8_t buf[8 + 4 * N + 4 * N * E];
    herr er = {{0}};
    for (int wire = WIRE_F32; wire <= WIRE_F16; wire++) {
        uint32_t n = act_encode(buf, 1, N, pos, x, E, wire);
        int cycle, nt;
        CHECK(act_decode(buf, n, E, wire, 16, 64, 2, &cycle, &nt, pos2, y, &er) == 0, "activation decodes: %s", er.msg);
        bool same = cycle == 1 && nt == N && !memcmp(pos, pos2, sizeof pos);
        for (int i = 0; i < N * E; i++) same &= wire == WIRE_F32 ? x[i] == y[i] : fabsf(x[i] - y[i]) <= 1e-2f;
        CHECK(same, "activation round trip (wire %d)", wire);
        CHECK(act_decode(buf, n, E, wire, 16, 64, 1, &cycle, &nt, pos2, y, &er) != 0, "cycle beyond k refused");
        CHECK(act_decode(buf, n, E, wire, 4, 64, 2, &cycle, &nt, pos2, y, &er) != 0, "more tokens than the batch refused");
        CHECK(act_decode(buf, n, E, wire, 16, 10, 2, &cycle, &nt, pos2, y, &er) != 0, "position outside the context refused");
        CHECK(act_decode(buf, n - 1, E, wire, 16, 64, 2, &cycle, &nt, pos2, y, &er) != 0, "short frame refused");
    }
    float bad = NAN;
    memcpy(buf + 8 + 4 * N, &bad, 4);
    int cycle, nt;
    CHECK(act_decode(buf, act_bytes(N, E, WIRE_F32), E, WIRE_F32, 16, 64, 2, &cycle, &nt, pos2, y, &er) != 0, "NaN refused");
    for (int i = 0; i < 20000; i++) { /* random payloads of random lengths */
        uint8_t r[512];
        uint32_t len = (uint32_t)(splitmix64(&rng) % sizeof r);
        for (uint32_t j = 0; j < len; j++) r[j] = (uint8_t)splitmix64(&rng);
        act_decode(r, len, E, WIRE_F16, 16, 64, 2, &cycle, &nt, pos2, y, &er);
    }
    CHECK(1, "random activation payloads survived");
}

static void test_kv_and_link(void)
{
    uint8_t b[8];
    int seq, n;
    herr er = {{0}};
    kv_keep_encode(b, 0, 1234);
    CHECK(kv_keep_decode(b, 8, 1, &seq, &n, &er) == 0 && seq == 0 && n == 1234, "KV command round trip: %s", er.msg);
    CHECK(kv_keep_decode(b, 7, 1, &seq, &n, &er) != 0, "short KV command refused");
    kv_keep_encode(b, 1, 5);
    CHECK(kv_keep_decode(b, 8, 1, &seq, &n, &er) != 0, "KV command for a sequence that does not exist refused");
    kv_keep_encode(b, 0, -1);
    CHECK(kv_keep_decode(b, 8, 1, &seq, &n, &er) != 0, "KV command keeping 2^32-1 positions refused");
    link_request q = {4096, 9137, "laptop.local"}, r;
    uint8_t buf[12 + 256];
    uint32_t len = link_request_encode(&q, buf);
    CHECK(link_request_decode(buf, len, &r, &er) == 0 && r.probe_bytes == 4096 && r.port == 9137 && !strcmp(r.host, "laptop.local"),
          "link request round trip: %s", er.msg);
    for (uint32_t cut = 0; cut < len; cut++) CHECK(link_request_decode(buf, cut, &r, &er) != 0, "truncated link request (%u) refused", cut);
    uint64_t rng = 3;
    for (int i = 0; i < 20000; i++) {
        uint8_t m[sizeof buf];
        memcpy(m, buf, len);
        for (int j = 0; j < 2; j++) m[splitmix64(&rng) % len] = (uint8_t)splitmix64(&rng);
        if (link_request_decode(m, len, &r, &er) == 0)
            CHECK(r.probe_bytes >= 1 && r.probe_bytes <= frame_limit(FRAME_ECHO, 0) && r.port >= 1 && r.port <= 65535 &&
                      strlen(r.host) >= 1 && strlen(r.host) < 256,
                  "an accepted mutated link request is within bounds");
    }
    CHECK(len <= frame_limit(FRAME_LINK_REQ, 0), "a link request fits its frame");
}

static void test_frame_recv(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    ring_conn c;
    conn_init(&c, sv[0], "test");
    herr er = {{0}};
    uint8_t buf[256];
    int type;
    uint32_t len;
    CHECK(frame_send(&c, FRAME_ERROR, "oops", 4, &er) == 0, "send");
    CHECK(frame_recv(sv[1], &type, buf, sizeof buf, &len, 0, 1000, &er) == 0 && type == FRAME_ERROR && len == 4, "receive");
    uint8_t h[12] = {'H', 'L', 'D', 'R', RING_VERSION, FRAME_ERROR, 0, 0, 0xff, 0xff, 0xff, 0x7f};
    CHECK(write(sv[0], h, 12) == 12, "write");
    CHECK(frame_recv(sv[1], &type, buf, sizeof buf, &len, 0, 1000, &er) != 0 && strstr(er.msg, "limit"), "oversized frame refused before reading: %s", er.msg);
    uint8_t g[12] = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1'};
    CHECK(write(sv[0], g, 12) == 12, "write");
    CHECK(frame_recv(sv[1], &type, buf, sizeof buf, &len, 0, 1000, &er) != 0 && strstr(er.msg, "magic"), "bad magic refused: %s", er.msg);
    uint8_t t[6] = {'H', 'L', 'D', 'R', RING_VERSION, 2};
    CHECK(write(sv[0], t, 6) == 6, "write");
    CHECK(frame_recv(sv[1], &type, buf, sizeof buf, &len, 0, 300, &er) != 0 && strstr(er.msg, "timed out"), "truncated header times out: %s", er.msg);
    close(sv[1]);
    conn_close(&c);
}

int main(void)
{
    test_plan_roundtrip();
    test_act_roundtrip();
    test_kv_and_link();
    test_frame_recv();
    return test_summary("wire");
}
