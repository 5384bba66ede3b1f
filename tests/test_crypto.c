/* tests/test_crypto.c — SHA-256 against FIPS 180-4's examples and HMAC-SHA256 against RFC 4231's
 * test cases (the expected digests are the published ones). */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

static void hex(const uint8_t *d, int n, char *out)
{
    for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_sha(const void *msg, size_t n, const char *want, const char *name)
{
    uint8_t d[32];
    char h[65];
    sha256(msg, n, d);
    hex(d, 32, h);
    CHECK(!strcmp(h, want), "SHA-256 %s: %s, want %s", name, h, want);
}

static void check_hmac(const uint8_t *key, size_t kn, const void *msg, size_t mn, const char *want, const char *name)
{
    uint8_t d[32];
    char h[65];
    hmac_sha256(key, kn, msg, mn, d);
    hex(d, 32, h);
    CHECK(!strncmp(h, want, strlen(want)), "HMAC-SHA256 %s: %s, want %s", name, h, want);
}

int main(void)
{
    check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty");
    check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha(m448, strlen(m448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "448 bits");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check_sha(m896, strlen(m896), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1", "896 bits");
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    check_sha(million, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "a million a");
    /* the same, fed in uneven pieces, exercises the partial-block path */
    sha256_ctx c;
    uint8_t d[32];
    char h[65];
    sha256_init(&c);
    for (size_t off = 0, step = 1; off < 1000000; off += step, step = step % 97 + 1)
        sha256_update(&c, million + off, off + step <= 1000000 ? step : 1000000 - off);
    sha256_final(&c, d);
    hex(d, 32, h);
    CHECK(!strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "SHA-256 in pieces");
    free(million);

    uint8_t k[131];
    memset(k, 0x0b, 20);
    check_hmac(k, 20, "Hi There", 8, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", "RFC 4231 case 1");
    check_hmac((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28,
               "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "case 2");
    uint8_t data[50];
    memset(k, 0xaa, 20), memset(data, 0xdd, 50);
    check_hmac(k, 20, data, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", "case 3");
    for (int i = 0; i < 25; i++) k[i] = (uint8_t)(i + 1);
    memset(data, 0xcd, 50);
    check_hmac(k, 25, data, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", "case 4");
    memset(k, 0x0c, 20);
    check_hmac(k, 20, "Test With Truncation", 20, "a3b6167473100ee06e0c796c2955552b", "case 5 (truncated to 128 bits)");
    memset(k, 0xaa, 131);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    check_hmac(k, 131, m6, strlen(m6), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", "case 6");
    const char *m7 = "This is a test using a larger than block-size key and a larger than block-size data. The key needs "
                     "to be hashed before being used by the HMAC algorithm.";
    check_hmac(k, 131, m7, strlen(m7), "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", "case 7");
    uint8_t a[32] = {1}, b[32] = {1};
    CHECK(mac_equal(a, b, 32), "equal MACs compare equal");
    b[31] = 2;
    CHECK(!mac_equal(a, b, 32), "different MACs compare different");
    return test_summary("crypto");
}
