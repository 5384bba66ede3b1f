/* tests/test_sampler.c — the sampler: greedy, top-k, top-p, min-p, temperature, repetition
 * penalty and seeds, checked against what each rule means on small hand-made distributions. */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

static halda_sampler *make(float temp, int top_k, float top_p, float min_p, float rep, uint64_t seed, int n)
{
    halda_sampler_params p = {temp, top_k, top_p, min_p, rep, 64, seed};
    return halda_sampler_new(&p, n);
}

/* Draw `draws` samples from fixed logits; counts[i] = times token i was chosen. */
static void histogram(halda_sampler *s, const float *logits, int n, int draws, int *counts)
{
    float *l = malloc((size_t)n * sizeof *l);
    memset(counts, 0, (size_t)n * sizeof *counts);
    for (int d = 0; d < draws; d++) {
        memcpy(l, logits, (size_t)n * sizeof *l);
        int32_t t = halda_sample(s, l);
        if (t >= 0 && t < n) counts[t]++;
    }
    free(l);
}

int main(void)
{
    float logits[8] = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f, 2.5f, -4.0f};
    float l[8];
    int counts[8];
    /* greedy: the first maximum */
    halda_sampler *s = make(0, 0, 1, 0, 1, 1, 8);
    memcpy(l, logits, sizeof l);
    CHECK(halda_sample(s, l) == 1, "greedy picks the first maximum");
    halda_sampler_free(s);
    /* top-k = 1 behaves like greedy even when hot */
    s = make(5, 1, 1, 0, 1, 1, 8);
    histogram(s, logits, 8, 200, counts);
    CHECK(counts[1] == 200, "top-k 1 always picks the best (%d)", counts[1]);
    halda_sampler_free(s);
    /* top-k = 3 never picks outside {1, 3, 6} */
    s = make(1, 3, 1, 0, 1, 2, 8);
    histogram(s, logits, 8, 2000, counts);
    CHECK(counts[1] + counts[3] + counts[6] == 2000, "top-k 3 stays in the top 3");
    CHECK(counts[1] > 400 && counts[3] > 400 && counts[6] > 200, "top-k 3 samples all three (%d %d %d)", counts[1], counts[3], counts[6]);
    halda_sampler_free(s);
    /* temperature 1, no filters: frequencies follow the softmax */
    s = make(1, 0, 1, 0, 1, 3, 8);
    int draws = 40000;
    histogram(s, logits, 8, draws, counts);
    double z = 0;
    for (int i = 0; i < 8; i++) z += exp(logits[i]);
    bool close = true;
    for (int i = 0; i < 8; i++) {
        double want = exp(logits[i]) / z * draws, sd = sqrt(want) + 1;
        if (fabs(counts[i] - want) > 5 * sd) close = false;
    }
    CHECK(close, "sampling frequencies follow the softmax");
    halda_sampler_free(s);
    /* top-p: probabilities of {1,3} are 0.33 each, {6} 0.2 ... top_p 0.5 keeps only the top two */
    s = make(1, 0, 0.5f, 0, 1, 4, 8);
    histogram(s, logits, 8, 2000, counts);
    CHECK(counts[1] + counts[3] == 2000, "top-p 0.5 keeps the two best (%d + %d)", counts[1], counts[3]);
    halda_sampler_free(s);
    /* min-p 0.5: keeps tokens with p >= 0.5 p_max: logits >= 3 - ln 2 = 2.31: {1, 3, 6} */
    s = make(1, 0, 1, 0.5f, 1, 5, 8);
    histogram(s, logits, 8, 2000, counts);
    CHECK(counts[1] + counts[3] + counts[6] == 2000 && counts[6] > 0, "min-p keeps {1,3,6}");
    halda_sampler_free(s);
    /* low temperature concentrates on the best tokens */
    s = make(0.05f, 0, 1, 0, 1, 6, 8);
    histogram(s, logits, 8, 1000, counts);
    CHECK(counts[1] + counts[3] == 1000, "temperature 0.05 keeps to the maxima");
    halda_sampler_free(s);
    /* repetition penalty: a penalised best token loses to the next */
    s = make(0, 0, 1, 0, 2.0f, 7, 8);
    halda_sampler_accept(s, 1);
    halda_sampler_accept(s, 3);
    halda_sampler_accept(s, 1);
    memcpy(l, logits, sizeof l);
    CHECK(halda_sample(s, l) == 6, "penalty 2 turns 3.0 into 1.5, so token 6 (2.5) wins");
    CHECK(l[1] == 1.5f && l[3] == 1.5f, "each distinct token penalised once (%g %g)", l[1], l[3]);
    memcpy(l, logits, sizeof l);
    halda_sampler_accept(s, 4); /* negative logit: multiplied */
    halda_sample(s, l);
    CHECK(l[4] == -2.0f, "negative logits are multiplied by the penalty");
    halda_sampler_free(s);
    /* same seed, same sequence; different seed, different sequence */
    int32_t a[64], b[64], c[64];
    halda_sampler *s1 = make(1, 0, 1, 0, 1, 99, 8), *s2 = make(1, 0, 1, 0, 1, 99, 8), *s3 = make(1, 0, 1, 0, 1, 100, 8);
    for (int i = 0; i < 64; i++) {
        memcpy(l, logits, sizeof l), a[i] = halda_sample(s1, l);
        memcpy(l, logits, sizeof l), b[i] = halda_sample(s2, l);
        memcpy(l, logits, sizeof l), c[i] = halda_sample(s3, l);
    }
    CHECK(!memcmp(a, b, sizeof a), "same seed gives the same tokens");
    CHECK(memcmp(a, c, sizeof a) != 0, "another seed gives other tokens");
    halda_sampler_free(s1), halda_sampler_free(s2), halda_sampler_free(s3);
    return test_summary("sampler");
}
