/* tests/test_engine.c — the single-node engine against independent truths:
 *   1. llama.cpp's reference outputs in ../shared/ref (prompt ids, top logits, greedy tokens);
 *   2. invariants on synthetic models: batched prefill == token by token, results independent
 *      of the thread count, F16 KV cache close to F32;
 *   3. a corpus of corrupt GGUF files, each refused with a clear reason and no bad read;
 *   4. the F32 steps between quantizations (e^x, SiLU, F32 dot products, softmax) bit for bit
 *      against values computed by llama.cpp's own functions (its AVX-512 build). */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

/* ---- 1. References ----------------------------------------------------------------------- */

typedef struct {
    char model[256], prompt[2048];
    double tol;
    int32_t tokens[512];
    int n_tokens;
    int32_t top_id[512][5];
    float top_val[512][5];
    int n_pos;
    int32_t gen[64];
    double margin[64];
    int n_gen;
} ref_file;

static int read_ids(char *s, int32_t *out, int cap)
{
    int n = 0;
    for (char *tok = strtok(s, " \n"); tok && n < cap; tok = strtok(NULL, " \n")) out[n++] = atoi(tok);
    return n;
}

static bool ref_load(const char *path, ref_file *r)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    memset(r, 0, sizeof *r);
    r->tol = 2e-2;
    char line[2000];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "# model ", 8)) snprintf(r->model, sizeof r->model, "%s", line + 8);
        else if (!strncmp(line, "# prompt ", 9)) snprintf(r->prompt, sizeof r->prompt, "%s", line + 9);
        else if (!strncmp(line, "# tol ", 6)) r->tol = atof(line + 6);
        else if (!strncmp(line, "tokens ", 7)) r->n_tokens = read_ids(line + 7, r->tokens, 512);
        else if (!strncmp(line, "generated ", 10)) r->n_gen = read_ids(line + 10, r->gen, 64);
        else if (!strncmp(line, "margins ", 8)) {
            int n = 0;
            for (char *t = strtok(line + 8, " "); t && n < 64; t = strtok(NULL, " ")) r->margin[n++] = atof(t);
        } else if (!strncmp(line, "logits ", 7)) {
            char *p = line + 7;
            int pos = (int)strtol(p, &p, 10);
            if (pos < 0 || pos >= 512) continue;
            for (int k = 0; k < 5; k++) {
                r->top_id[pos][k] = (int32_t)strtol(p, &p, 10);
                if (*p == ':') p++;
                r->top_val[pos][k] = strtof(p, &p);
            }
            if (pos + 1 > r->n_pos) r->n_pos = pos + 1;
        }
    }
    fclose(f);
    return r->n_tokens > 0;
}

static void top5(const float *l, int n, int32_t *out)
{
    for (int j = 0; j < 5; j++) out[j] = -1;
    for (int i = 0; i < n; i++) {
        int j = 5;
        while (j > 0 && (out[j - 1] < 0 || l[i] > l[out[j - 1]])) j--;
        if (j >= 5) continue;
        memmove(out + j + 1, out + j, (size_t)(4 - j) * sizeof *out);
        out[j] = i;
    }
}

/* Models whose weight types this engine covers (the rest belong to the kernels issue). */
static bool in_scope(const char *model)
{
    static const char *const ok[] = {"stories260K", "tinystories656k", "-f32.", "-f16.", "-bf16.", "-q8_0.", "-q4_0.",
                                     "-q4_1.", "-q5_0.", "-q5_1.", "-q6_k.", "-q2_k.", "-q3_k_m.", "-q4_k_m.",
                                     "-q5_k_m.", "-iq4_nl.", NULL};
    for (int i = 0; ok[i]; i++)
        if (strstr(model, ok[i])) return true;
    return false;
}

/* Is this reference listed in tests/known_failures.txt?  (Known failures are listed, never hidden.) */
static bool known_failure(const char *ref_name)
{
    FILE *f = fopen("tests/known_failures.txt", "r");
    if (!f) return false;
    char line[256];
    bool hit = false;
    while (!hit && fgets(line, sizeof line, f)) {
        line[strcspn(line, " \n")] = 0;
        hit = line[0] && line[0] != '#' && !strcmp(line, ref_name);
    }
    fclose(f);
    return hit;
}

static void check_reference(const char *shared, const char *ref_name)
{
    char path[1024];
    ref_file *r = calloc(1, sizeof *r);
    snprintf(path, sizeof path, "%s/ref/%s", shared, ref_name);
    if (!ref_load(path, r)) {
        CHECK(0, "%s: cannot read the reference", ref_name);
        free(r);
        return;
    }
    snprintf(path, sizeof path, "%s/models/%s", shared, r->model);
    char err[512];
    halda_model *m = halda_model_load(path, err, sizeof err);
    if (!in_scope(r->model)) {
        if (!m) SKIP("%s: %s (kernels issue)", ref_name, err);
        halda_model_free(m);
        free(r);
        if (m) goto run_anyway;
        return;
    }
run_anyway:
    if (!m) m = halda_model_load(path, err, sizeof err);
    CHECK(m != NULL, "%s: load failed: %s", ref_name, err);
    if (!m) {
        free(r);
        return;
    }
    bool known = known_failure(ref_name);
    int failed_before = test_failed;
    int32_t toks[512];
    int n = halda_tokenize(m, r->prompt, strlen(r->prompt), toks, 512, 1, 0);
    bool same = n == r->n_tokens && !memcmp(toks, r->tokens, (size_t)n * sizeof *toks);
    CHECK(same, "%s: prompt tokens differ (%d vs %d tokens)", ref_name, n, r->n_tokens);
    halda_context_params cp = halda_context_default_params();
    cp.kv_type = HALDA_KV_F32;
    cp.n_ctx = r->n_tokens + r->n_gen + 2;
    cp.n_threads = 2;
    halda_context *c = halda_context_new(m, &cp, err, sizeof err);
    int nv = halda_model_n_vocab(m);
    float *lg = malloc((size_t)nv * sizeof *lg);
    double worst = 0;
    bool logits_ok = true;
    for (int p = 0; same && p < r->n_tokens; p++) {
        if (halda_eval(c, &r->tokens[p], 1, p, lg)) {
            CHECK(0, "%s: eval failed: %s", ref_name, halda_last_error(c));
            break;
        }
        if (p >= r->n_pos) continue;
        int32_t top[5];
        top5(lg, nv, top);
        bool argmax_in = false;
        for (int k = 0; k < 5; k++) argmax_in |= top[k] == r->top_id[p][0];
        if (!argmax_in) logits_ok = false;
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < 5; j++)
                if (top[j] == r->top_id[p][k]) {
                    double e = fabs(lg[top[j]] - r->top_val[p][k]) / fmax(1.0, fabs(r->top_val[p][k]));
                    if (e > worst) worst = e;
                }
    }
    CHECK(logits_ok, "%s: a reference argmax is missing from halda's top 5", ref_name);
    CHECK(worst <= r->tol, "%s: worst logit error %.3g > tol %.3g", ref_name, worst, r->tol);
    /* greedy continuation, compared until the reference's margin gets too thin */
    int pos = r->n_tokens, agree = 0;
    bool gen_ok = true;
    for (int i = 0; same && i < r->n_gen; i++) {
        int32_t top[5];
        top5(lg, nv, top);
        if (top[0] != r->gen[i]) {
            gen_ok = r->margin[i] <= 1e-2;
            break;
        }
        agree++;
        if (halda_eval(c, &top[0], 1, pos++, lg)) break;
    }
    CHECK(gen_ok, "%s: greedy token %d differs (reference margin %.3g)", ref_name, agree, r->margin[agree]);
    if (known && test_failed > failed_before) {
        /* listed in tests/known_failures.txt: report, but count as skipped */
        test_failed = failed_before;
        SKIP("%s: known failure (tests/known_failures.txt)", ref_name);
    }
    free(lg);
    halda_context_free(c);
    halda_model_free(m);
    free(r);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_references(void)
{
    const char *shared = test_shared_dir();
    if (!shared) {
        SKIP("../shared is absent: llama.cpp reference tests not run");
        return;
    }
    char cmd[4200], line[512];
    snprintf(cmd, sizeof cmd, "ls %s/ref", shared);
    FILE *p = popen(cmd, "r");
    char *names[512];
    int n = 0;
    while (p && n < 512 && fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        if (strstr(line, ".ref")) names[n++] = strdup(line);
    }
    if (p) pclose(p);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    CHECK(n > 0, "no reference files in %s/ref", shared);
    for (int i = 0; i < n; i++) {
        check_reference(shared, names[i]);
        free(names[i]);
    }
}

/* ---- 2. Synthetic models ------------------------------------------------------------------ */

static char tmpdir[256];

static const char *synth_path(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static halda_model *synth_model(const char *name, synth_params sp)
{
    herr e = {{0}};
    const char *path = synth_path(name);
    if (synth_write(path, &sp, &e)) {
        CHECK(0, "synth_write %s: %s", name, e.msg);
        return NULL;
    }
    char err[512];
    halda_model *m = halda_model_load(path, err, sizeof err);
    CHECK(m != NULL, "load %s: %s", name, err);
    return m;
}

/* Logits of the last of n tokens, evaluated in one batch or one at a time. */
static void run_logits(halda_model *m, const int32_t *t, int n, int threads, int batch_mode, int kv, float *out)
{
    halda_context_params cp = halda_context_default_params();
    cp.n_threads = threads, cp.kv_type = kv, cp.n_ctx = 64;
    char err[256];
    halda_context *c = halda_context_new(m, &cp, err, sizeof err);
    if (!c) {
        CHECK(0, "context: %s", err);
        return;
    }
    if (batch_mode) CHECK(halda_eval(c, t, n, 0, out) == 0, "batched eval: %s", halda_last_error(c));
    else
        for (int i = 0; i < n; i++) CHECK(halda_eval(c, &t[i], 1, i, out) == 0, "eval: %s", halda_last_error(c));
    halda_context_free(c);
}

static void test_synthetic(void)
{
    static const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1,
                                TYPE_Q2_K, TYPE_Q3_K, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K, TYPE_IQ4_NL, TYPE_IQ1_S, TYPE_IQ1_M};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        for (int arch = ARCH_LLAMA; arch <= ARCH_QWEN2; arch++) {
            synth_params sp = {arch, types[ti], -1, 2, 256, 512, 4, 2, 512, 256, arch == ARCH_QWEN2, 7 + ti, SYNTH_MIX_NONE, false};
            char name[64];
            snprintf(name, sizeof name, "synth-%s-%s.gguf", arch ? "qwen2" : "llama", type_info(types[ti])->name);
            halda_model *m = synth_model(name, sp);
            if (!m) continue;
            const char *text = "Once upon a time the little girl went to the park";
            int32_t t[64];
            int n = halda_tokenize(m, text, strlen(text), t, 64, 1, 0);
            CHECK(n > 5, "%s: tokenized to %d tokens", name, n);
            int nv = halda_model_n_vocab(m);
            float *a = malloc((size_t)nv * 4), *b = malloc((size_t)nv * 4), *c = malloc((size_t)nv * 4), *d = malloc((size_t)nv * 4);
            run_logits(m, t, n, 1, 0, HALDA_KV_F32, a);
            run_logits(m, t, n, 2, 1, HALDA_KV_F32, b);
            run_logits(m, t, n, 3, 0, HALDA_KV_F32, c);
            run_logits(m, t, n, 2, 1, HALDA_KV_F16, d);
            float *q8 = malloc((size_t)nv * 4);
            run_logits(m, t, n, 2, 1, HALDA_KV_Q8_0, q8);
            CHECK(!memcmp(a, b, (size_t)nv * 4), "%s: batched prefill differs from token by token", name);
            CHECK(!memcmp(a, c, (size_t)nv * 4), "%s: 3 threads differ from 1 thread", name);
            double worst = 0, maxabs = 0;
            bool finite = true;
            for (int i = 0; i < nv; i++) {
                finite &= isfinite(a[i]);
                worst = fmax(worst, fabs(a[i] - d[i]));
                maxabs = fmax(maxabs, fabs(a[i]));
            }
            CHECK(finite && maxabs > 1e-3, "%s: logits are not finite and non-trivial", name);
            CHECK(worst <= 2e-2 * fmax(1, maxabs), "%s: F16 KV cache moves logits by %.3g", name, worst);
            double worst8 = 0;
            for (int i = 0; i < nv; i++) worst8 = fmax(worst8, fabs(a[i] - q8[i]));
            CHECK(worst8 <= 5e-2 * fmax(1, maxabs), "%s: Q8_0 KV cache moves logits by %.3g", name, worst8);
            free(a), free(b), free(c), free(d), free(q8);
            halda_model_free(m);
        }
    }
}

/* The Q4_K_M-style mix: the writer puts Q6_K exactly where llama-quantize does. */
static void test_mix(void)
{
    synth_params sp = {ARCH_LLAMA, TYPE_Q4_K, TYPE_Q6_K, 8, 256, 512, 4, 2, 512, 128, false, 3, SYNTH_MIX_Q4_K_M, false};
    halda_model *m = synth_model("mix.gguf", sp);
    if (!m) return;
    bool right = m->output.type == TYPE_Q6_K;
    for (int l = 0; l < 8; l++) {
        int want = synth_more_bits(l, 8) ? TYPE_Q6_K : TYPE_Q4_K;
        right &= m->layers[l].wv.type == want && m->layers[l].w_down.type == want && m->layers[l].wq.type == TYPE_Q4_K;
    }
    CHECK(right, "q4_k_m mix: Q6_K for attn_v/ffn_down in layers 0, 3, 6, 7 and the output, Q4_K elsewhere");
    const tok_vocab *v = m->vocab;
    int dups = 0;
    for (int i = 0; i < v->n; i++) dups += tok_find(v, v->text[i], v->len[i]) != i;
    CHECK(dups == 0, "the synthetic vocabulary repeats %d pieces", dups);
    halda_model_free(m);
}

/* The ring in one process: three "devices" hold interleaved windows of a 6-layer model for
 * k = 2 cycles (device 1: layers 0 and 3, device 2: 1 and 4, head: 2 and 5), each with its own
 * context and KV cache; a prompt goes through in micro-batches of 3, then tokens one by one.
 * The logits must be bit-identical to one context running everything. */
static void test_windows(void)
{
    synth_params sp = {ARCH_QWEN2, TYPE_Q4_0, -1, 6, 128, 256, 4, 2, 512, 128, true, 11, SYNTH_MIX_NONE, false};
    halda_model *m = synth_model("windows.gguf", sp);
    if (!m) return;
    int nv = halda_model_n_vocab(m), E = halda_model_n_embd(m);
    halda_context_params cp = halda_context_default_params();
    cp.n_ctx = 64, cp.n_threads = 2, cp.kv_type = HALDA_KV_F32;
    char err[256];
    bool held[3][6] = {{0, 0, 1, 0, 0, 1}, {1, 0, 0, 1, 0, 0}, {0, 1, 0, 0, 1, 0}}; /* head, dev1, dev2 */
    halda_context *dev[3];
    for (int d = 0; d < 3; d++) dev[d] = context_new(m, &cp, held[d], err, sizeof err);
    halda_context *one = halda_context_new(m, &cp, err, sizeof err);
    CHECK(dev[0] && dev[1] && dev[2] && one, "contexts: %s", err);
    if (!dev[0] || !dev[1] || !dev[2] || !one) return;
    CHECK(dev[1]->kv.n_slots == 2, "a device's KV cache holds only its layers");
    int32_t toks[12] = {1, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310};
    float *x = malloc((size_t)4 * E * sizeof *x), *ref = malloc((size_t)nv * 4), *got = malloc((size_t)nv * 4);
    int pos[4], seq[4] = {0};
    bool exact = true;
    /* prompt of 9 tokens in micro-batches of 3, then 3 single tokens */
    for (int start = 0; start < 12;) {
        int n = start < 9 ? 3 : 1;
        for (int i = 0; i < n; i++) pos[i] = start + i;
        halda_eval(one, toks + start, n, start, ref);
        model_embed(dev[0], toks + start, n, x);
        for (int cycle = 0; cycle < 2; cycle++)
            for (int d = 1; d <= 3; d++) { /* ring order: dev1, dev2, then the head */
                int layer = cycle * 3 + d - 1;
                halda_context *c = dev[d % 3];
                CHECK(model_forward_window(c, x, n, pos, seq, layer, layer + 1) == 0, "window: %s", halda_last_error(c));
            }
        model_output(dev[0], x + (size_t)(n - 1) * E, got);
        exact &= !memcmp(ref, got, (size_t)nv * 4);
        start += n;
    }
    CHECK(exact, "windows across contexts give the same logits as one context");
    CHECK(model_forward_window(dev[1], x, 1, pos, seq, 1, 2) != 0 && strstr(halda_last_error(dev[1]), "not held"),
          "a layer the device does not hold is refused");
    free(x), free(ref), free(got);
    for (int d = 0; d < 3; d++) halda_context_free(dev[d]);
    halda_context_free(one);
    halda_model_free(m);
}

/* A device maps only what it runs: model_open maps the header alone; model_map maps one region
 * per run of held layers (and the head's tensors when asked), whose bytes must be the file's
 * (read back with pread, the independent truth); everything else stays NULL and is refused by
 * the forward pass instead of being read. */
static bool tensor_is_file(int fd, const tensor *t)
{
    if (!t->data) return false;
    uint8_t *b = malloc((size_t)t->bytes);
    bool same = b && pread(fd, b, (size_t)t->bytes, (off_t)t->file_offset) == (ssize_t)t->bytes && !memcmp(b, t->data, (size_t)t->bytes);
    free(b);
    return same;
}

static void test_maps(void)
{
    synth_params sp = {ARCH_QWEN2, TYPE_Q8_0, TYPE_Q4_0, 6, 128, 256, 4, 2, 512, 128, false, 5, SYNTH_MIX_NONE, false};
    herr e = {{0}};
    const char *path = synth_path("maps.gguf");
    CHECK(synth_write(path, &sp, &e) == 0, "write: %s", e.msg);
    halda_model *m = model_open(path, &e);
    CHECK(m != NULL, "model_open: %s", e.msg);
    if (!m) return;
    uint64_t page = platform_page_bytes(), file = m->file.map.file_size;
    CHECK(m->file.map.size == (m->file.data_offset + page - 1) / page * page && model_mapped_bytes(m) == m->file.map.size,
          "model_open maps the header's pages only (%" PRIu64 " of %" PRIu64 " bytes)", model_mapped_bytes(m), file);
    CHECK(!m->tok_embd.data && !m->output.data && !m->layers[0].wq.data, "nothing of the tensor data is mapped yet");
    int fd = open(path, O_RDONLY);
    bool held[6] = {0, 1, 0, 0, 1, 1};
    CHECK(model_map(m, held, false, &e) == 0, "model_map: %s", e.msg);
    CHECK(m->maps.n_regions == 2 && m->maps.n_held == 3, "one mapping per window: %d regions, %d layers", m->maps.n_regions, m->maps.n_held);
    bool right = true;
    uint64_t want = m->file.map.size;
    for (int l = 0; l < 6; l++) {
        layer_weights *L = &m->layers[l];
        tensor *t[16];
        int n = model_layer_tensors(L, t);
        for (int i = 0; i < n; i++) right &= held[l] ? tensor_is_file(fd, t[i]) : !t[i]->data;
        if (held[l]) want += L->file_end - L->file_begin;
    }
    CHECK(right, "held layers hold the file's bytes, the others are NULL");
    CHECK(!m->tok_embd.data && !m->output.data && !m->output_norm.data, "a worker does not map the head's tensors");
    CHECK(model_mapped_bytes(m) >= want && model_mapped_bytes(m) <= want + 2 * page && model_mapped_bytes(m) < file / 2,
          "mapped %" PRIu64 " bytes for %" PRIu64 " of the window and header", model_mapped_bytes(m), want);
    halda_context_params cp = halda_context_default_params();
    cp.n_ctx = 16, cp.n_threads = 1;
    char err[256];
    bool all[6] = {1, 1, 1, 1, 1, 1};
    halda_context *c = context_new(m, &cp, all, err, sizeof err);
    CHECK(c != NULL, "context: %s", err);
    if (c) {
        float *x = calloc((size_t)m->hp.n_embd, sizeof *x);
        int pos = 0, seq = 0, tok = 1;
        x[0] = 1;
        CHECK(model_forward_window(c, x, 1, &pos, &seq, 4, 6) == 0, "a mapped window runs: %s", halda_last_error(c));
        CHECK(model_forward_window(c, x, 1, &pos, &seq, 2, 3) != 0 && strstr(halda_last_error(c), "not mapped"),
              "an unmapped layer is refused: %s", halda_last_error(c));
        CHECK(model_embed(c, &tok, 1, x) != 0 && strstr(halda_last_error(c), "not mapped"), "so is the embedding: %s", halda_last_error(c));
        free(x);
        halda_context_free(c);
    }
    bool head_only[6] = {0};
    CHECK(model_map(m, head_only, true, &e) == 0 && m->maps.n_regions == 3 && tensor_is_file(fd, &m->tok_embd) &&
              tensor_is_file(fd, &m->output) && tensor_is_file(fd, &m->output_norm) && !m->layers[1].wq.data,
          "mapped again for the head alone: embeddings, output norm and output, the old windows gone: %s", e.msg);
    model_unmap(m);
    CHECK(!m->tok_embd.data && m->maps.n_regions == 0 && model_mapped_bytes(m) == m->file.map.size, "unmapped: the header alone");
    /* the identity the ring's handshake compares: the file size and the SHA-256 of the header,
     * read here with pread */
    uint8_t fp[40], want_fp[40], *hdr = malloc((size_t)m->file.data_offset);
    model_fingerprint(m, fp);
    put_u64le(want_fp, file);
    CHECK(hdr && pread(fd, hdr, (size_t)m->file.data_offset, 0) == (ssize_t)m->file.data_offset, "read the header");
    if (hdr) sha256(hdr, (size_t)m->file.data_offset, want_fp + 8);
    CHECK(!memcmp(fp, want_fp, 40), "the model fingerprint is the file size and the header's SHA-256");
    free(hdr);
    close(fd);
    halda_model_free(m);
    /* a header longer than the first MiB mapped: the mapping grows until the header fits */
    const char *shared = test_shared_dir();
    char vocab[512];
    snprintf(vocab, sizeof vocab, "%s/models/ggml-vocab-qwen2.gguf", shared ? shared : "");
    gguf_file f;
    memset(&f, 0, sizeof f);
    if (shared && access(vocab, R_OK) == 0) {
        CHECK(gguf_open(&f, vocab, &e) == 0 && f.map.file_size > (1u << 20) && f.n_kv > 0 && gguf_header_bytes(&f) > (1u << 20) &&
                  f.map.size >= gguf_header_bytes(&f),
              "a %" PRIu64 "-byte header is mapped whole: %s", gguf_header_bytes(&f), e.msg);
        gguf_close(&f);
    }
}

/* The type table must agree with what the writer produces and the reader expects. */
static void test_type_roundtrip(void)
{
    static const int types[] = {TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1, TYPE_Q6_K};
    uint64_t rng = 42;
    float x[512], y[512];
    uint8_t buf[4096];
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const type_traits *tt = type_info(types[ti]);
        synth_fill(x, 512, 1.0f, &rng);
        tt->quantize(x, buf, 512);
        tt->dequantize(buf, y, 512);
        double err = 0;
        /* (written without fmax: aarch64 GCC 12.2 crashes vectorizing an fmax reduction of floats
         * widened to double, "internal compiler error: in vect_transform_reduction") */
        for (int i = 0; i < 512; i++)
            if (fabs(x[i] - y[i]) > err) err = fabs(x[i] - y[i]);
        double bound = types[ti] == TYPE_Q4_0 || types[ti] == TYPE_Q4_1 ? 0.15 : types[ti] == TYPE_Q5_0 || types[ti] == TYPE_Q5_1 ? 0.07
                       : types[ti] == TYPE_Q6_K ? 0.05 : types[ti] == TYPE_Q8_0 ? 0.01 : 0.005;
        CHECK(err <= bound, "%s: quantize/dequantize round trip error %.3g > %.3g", tt->name, err, bound);
        /* dot product against quantized activations == dequantized dot product (within rounding) */
        float a[512];
        synth_fill(a, 512, 1.0f, &rng);
        uint8_t act[4096];
        const type_traits *at = type_info(tt->act_type);
        at->quantize(a, act, 512);
        float ad[512];
        if (at->dequantize) at->dequantize(act, ad, 512);
        else memcpy(ad, a, sizeof ad); /* Q8_1: compare against the plain activations */
        double ref = 0, mag = 0;
        for (int i = 0; i < 512; i++) ref += (double)y[i] * ad[i], mag += fabs((double)y[i] * ad[i]);
        float got = tt->vec_dot(512, buf, act);
        double tol = tt->act_type == TYPE_Q8_1 ? 2e-2 * mag : 1e-5 * mag + 1e-6;
        CHECK(fabs(got - ref) <= tol, "%s: vec_dot %.6f vs dequantized %.6f", tt->name, got, ref);
    }
    /* f16 conversion: exact on every half, round-to-nearest-even from float */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32_ref((f16_t)h);
        if (isnan(f)) continue;
        if (f32_to_f16_ref(f) != h) bad++;
    }
    CHECK(bad == 0, "f16 round trip fails on %d halves", bad);
    CHECK(f32_to_f16_ref(1.0f + 1.0f / 2048) == 0x3c00, "f16: tie rounds to even (down)");
    CHECK(f32_to_f16_ref(1.0f + 3.0f / 2048) == 0x3c02, "f16: tie rounds to even (up)");
    CHECK(f32_to_f16_ref(65520.0f) == 0x7c00, "f16: 65520 overflows to inf");
    CHECK(f32_to_bf16(1.00390625f) == 0x3f80, "bf16: tie rounds to even");
}

/* ---- 3. Corrupt files ------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}
static void spit(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* Load a mutated file; it must fail with a message containing `want` (or any message if NULL). */
static void expect_refused(const uint8_t *b, size_t n, const char *want, const char *what)
{
    static int serial;
    char name[64];
    snprintf(name, sizeof name, "corrupt-%d.gguf", serial++);
    const char *path = synth_path(name);
    spit(path, b, n);
    char err[512] = "";
    halda_model *m = halda_model_load(path, err, sizeof err);
    CHECK(m == NULL, "%s: a corrupt file was accepted", what);
    CHECK(strlen(err) > 10 && !strchr(err, '\n'), "%s: no one-line reason ('%s')", what, err);
    if (want) CHECK(strstr(err, want) != NULL, "%s: reason '%s' does not mention '%s'", what, err, want);
    halda_model_free(m);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_corrupt(void)
{
    synth_params sp = {ARCH_LLAMA, TYPE_Q8_0, -1, 1, 64, 128, 2, 1, 400, 64, false, 3, SYNTH_MIX_NONE, false};
    herr e = {{0}};
    char good[512], p2[512];
    snprintf(good, sizeof good, "%s", synth_path("good.gguf"));
    CHECK(synth_write(good, &sp, &e) == 0, "write: %s", e.msg);
    size_t n;
    uint8_t *b = slurp(good, &n);
    if (!b) return;
    char err[512];
    halda_model *m = halda_model_load(good, err, sizeof err);
    CHECK(m != NULL, "the unmodified file loads: %s", err);
    halda_model_free(m);
    /* where the header ends: the data section of the first tensor */
    gguf_file gf;
    herr ge = {{0}};
    CHECK(gguf_open(&gf, good, &ge) == 0, "gguf_open: %s", ge.msg);
    uint64_t data_off = gf.data_offset;
    gguf_close(&gf);
    /* truncated at many offsets: inside the header every cut must be caught */
    int cuts = 0;
    for (size_t cut = 0; cut < n; cut += cut < data_off ? 7 : 4093, cuts++) expect_refused(b, cut, NULL, "truncated");
    CHECK(cuts > 100, "truncation corpus too small (%d)", cuts);
    uint8_t *c = malloc(n);
    memcpy(c, b, n), memcpy(c, "GGUX", 4);
    expect_refused(c, n, "magic", "bad magic");
    memcpy(c, b, n), c[4] = 1;
    expect_refused(c, n, "version 1", "version 1");
    memcpy(c, b, n), c[4] = 9;
    expect_refused(c, n, "version", "unknown version");
    memcpy(c, b, n), put_u64(c + 8, 1ull << 60);
    expect_refused(c, n, "tensors", "huge tensor count");
    memcpy(c, b, n), put_u64(c + 16, 1ull << 60);
    expect_refused(c, n, "metadata", "huge metadata count");
    /* the first key's length, then its type */
    memcpy(c, b, n), put_u64(c + 24, 1ull << 62);
    expect_refused(c, n, NULL, "huge key length");
    uint64_t klen = read_le(b + 24, 8);
    memcpy(c, b, n), c[32 + klen] = 77;
    expect_refused(c, n, "type", "unknown value type");
    /* corrupt the tensor table: find the first tensor name "token_embd.weight" */
    const uint8_t *tn = memmem(b, (size_t)data_off, "token_embd.weight", 17);
    CHECK(tn != NULL, "tensor table found");
    if (tn) {
        size_t at = (size_t)(tn - b) + 17; /* n_dims u32, dims u64 x2, type u32, offset u64 */
        memcpy(c, b, n), c[at] = 9;
        expect_refused(c, n, "dimensions", "too many dimensions");
        memcpy(c, b, n), put_u64(c + at + 4, 0);
        expect_refused(c, n, "shape", "zero dimension");
        memcpy(c, b, n), put_u64(c + at + 4, 1ull << 41);
        expect_refused(c, n, "shape", "huge dimension");
        memcpy(c, b, n), c[at + 20] = 200;
        expect_refused(c, n, "type", "unknown tensor type");
        memcpy(c, b, n), c[at + 20] = TYPE_F32; /* data no longer fits */
        expect_refused(c, n, NULL, "wrong type for the data");
        memcpy(c, b, n), c[at + 20] = TYPE_IQ2_XXS; /* row length 64 is not a block multiple */
        expect_refused(c, n, "multiple", "row not a block multiple");
        memcpy(c, b, n), put_u64(c + at + 24, 1ull << 40);
        expect_refused(c, n, "past the end", "offset past the end");
        memcpy(c, b, n), put_u64(c + at + 24, 3);
        expect_refused(c, n, "aligned", "misaligned offset");
    }
    /* semantic errors, through the writer */
    synth_params bad = sp;
    snprintf(p2, sizeof p2, "%s", synth_path("qwen-as-llama.gguf"));
    bad.arch = ARCH_LLAMA;
    CHECK(synth_write(p2, &bad, &e) == 0, "write");
    uint8_t *q;
    size_t qn;
    if ((q = slurp(p2, &qn))) {
        uint8_t *hit = memmem(q, qn, "llama", 5); /* general.architecture value */
        if (hit) memcpy(hit, "gemma", 5);
        expect_refused(q, qn, "gemma", "unsupported architecture");
        free(q);
    }
    if ((q = slurp(good, &qn))) {
        uint8_t *hit = memmem(q, qn, "blk.0.attn_k.weight", 19);
        CHECK(hit != NULL, "tensor name found in the header");
        if (hit) memcpy(hit, "blk.0.attn_z.weight", 19);
        expect_refused(q, qn, "attn_k", "missing tensor");
        free(q);
    }
    expect_refused((const uint8_t *)"", 0, "empty", "empty file");
    char missing[600];
    snprintf(missing, sizeof missing, "%s/does-not-exist.gguf", tmpdir);
    m = halda_model_load(missing, err, sizeof err);
    CHECK(!m && strstr(err, "cannot open"), "missing file: '%s'", err);
    /* allocation failures anywhere in loading are reported, never crash */
    for (long k = 0; k < 40; k++) {
        halda_alloc_count = 0, halda_alloc_fail_at = k;
        m = halda_model_load(good, err, sizeof err);
        halda_alloc_fail_at = -1;
        if (m) {
            halda_model_free(m);
            break;
        }
        CHECK(strlen(err) > 0, "allocation %ld failing gives a reason", k);
    }
    free(c);
    free(b);
}

/* ---- 4. llama.cpp's arithmetic ------------------------------------------------------------
 * Expected values from ggml's AVX-512 CPU build (the build that reproduces ../shared/ref):
 * ggml_vec_soft_max_f32 with max 0 (= ggml_v_expf), ggml_vec_swiglu_f32 with up = 1 (19 values:
 * a group of 16 and a scalar tail), ggml_vec_dot_f32, and the softmax of 37 scores padded with
 * −inf to 48.  Without them tiny-llama-q4_1.lily's greedy token 11 differs. */

static uint32_t lcg_state;
static float lcg_float(void) /* uniform in [-2, 2), exactly as the values were made */
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return (float)((int32_t)(lcg_state >> 8) - (1 << 23)) / (float)(1 << 23) * 2.0f;
}

static void test_llama_arithmetic(void)
{
    static const float expf_cases[][2] = {
        {-INFINITY, 0x0p+0}, {0x0p+0, 0x1p+0}, {-0x1p-1, 0x1.368b2ep-1}, {-0x1.0624dep-10, 0x1.ff7cfep-1},
        {-0x1.4p+3, 0x1.7cd79cp-15}, {-0x1.5ep+6, 0x1.b2cafp-127}, {-0x1.9p+6, 0x1.bp-145}, {-0x1.ap+6, 0x0p+0},
        {0x1p+0, 0x1.5bf0aap+1}, {0x1.d9999ap+1, 0x1.439416p+5}, {0x1.633334p+6, INFINITY}, {-0x1.62e43p-2, 0x1.6a09e4p-1},
        {-0x1.2p+1, 0x1.afb718p-4}, {-0x1.e1999ap+4, 0x1.7d534cp-44}, {0x1p-3, 0x1.221602p+0}, {-0x1.bp+2, 0x1.32f066p-10},
    };
    for (size_t i = 0; i < sizeof expf_cases / sizeof *expf_cases; i++) {
        float got = expf_ggml(expf_cases[i][0]);
        CHECK(!memcmp(&got, &expf_cases[i][1], sizeof got), "expf_ggml(%a) = %a, ggml_v_expf gives %a", expf_cases[i][0], got,
              expf_cases[i][1]);
    }
    /* expf_ggml's final scaling is ldexpf's, one rounding, in the subnormal and overflow ranges too. */
    int scale_bad = 0;
    float bad_p = 0, bad_got = 0, bad_want = 0;
    int bad_n = 0;
    for (int n = -192; n <= 192; n++)
        for (int i = 0; i < 256; i++) {
            /* p in [0.5, 2) with all 24 bits of mantissa in play (ties of a double rounding need them) */
            uint32_t bits = (i & 1 ? 0x3f800000u : 0x3f000000u) | ((uint32_t)(n + 193) * 2654435761u + (uint32_t)i * 40503u) >> 9;
            float p;
            memcpy(&p, &bits, sizeof p);
            float got = scale_pow2(p, n), want = ldexpf(p, n);
            if (memcmp(&got, &want, sizeof got) && !scale_bad++) bad_p = p, bad_n = n, bad_got = got, bad_want = want;
        }
    CHECK(!scale_bad, "scale_pow2 differs from ldexpf in %d cases, first scale_pow2(%a, %d) = %a, ldexpf gives %a", scale_bad, bad_p, bad_n,
          bad_got, bad_want);
    static const float silu_cases[19][2] = {
        {-0x1.eb1b9p+2, -0x1.d36f5ap-9}, {-0x1.ef0e18p+2, -0x1.bb0536p-9}, {0x1.61884p-1, 0x1.d6f582p-2},
        {0x1.14489p+1, 0x1.ef5a3ep+0},   {0x1.a3dec4p+2, 0x1.a346dcp+2},   {-0x1.8cd6dcp+2, -0x1.9b4188p-7},
        {-0x1.0d65p-4, -0x1.0489e6p-5},  {0x1.8c12ep-1, 0x1.0f0806p-1},    {0x1.89a04p+0, 0x1.43ffeep+0},
        {0x1.2240dp+2, 0x1.1f2c6p+2},    {-0x1.d7307p+2, -0x1.320e24p-8},  {0x1.f34e08p+1, 0x1.e9680cp+1},
        {0x1.dcfd2p+2, 0x1.dcb66p+2},    {-0x1.b4908p+2, -0x1.e6dee8p-8},  {0x1.98cb8p+1, 0x1.88afe6p+1},
        {-0x1.45454p-1, -0x1.c29444p-3}, {-0x1.a800fp+0, -0x1.0fcf6ep-2},  {0x1.d68cbcp+2, 0x1.d63f8ep+2},
        {-0x1.8082dp+0, -0x1.181ef2p-2},
    };
    float gate[19], up[19];
    for (int i = 0; i < 19; i++) gate[i] = silu_cases[i][0], up[i] = 1.0f;
    swiglu_row(gate, up, 19);
    for (int i = 0; i < 19; i++)
        CHECK(!memcmp(&gate[i], &silu_cases[i][1], sizeof *gate), "swiglu_row value %d: %a, ggml gives %a", i, gate[i], silu_cases[i][1]);
    static const struct {
        int n;
        float want;
    } dots[] = {{8, -0x1.4af6d4p+1}, {15, -0x1.514ccp+3},   {24, -0x1.6ed91ep+2}, {64, -0x1.09f9ap+4},
                {72, 0x1.7dab38p+2}, {100, -0x1.0413f8p+2}, {256, -0x1.3aa0ccp+3}};
    lcg_state = 777;
    for (size_t k = 0; k < sizeof dots / sizeof *dots; k++) {
        float x[256], y[256];
        for (int i = 0; i < dots[k].n; i++) x[i] = lcg_float();
        for (int i = 0; i < dots[k].n; i++) y[i] = lcg_float();
        float got = dot_f32_ggml(dots[k].n, x, y);
        CHECK(!memcmp(&got, &dots[k].want, sizeof got), "dot_f32_ggml n=%d: %a, ggml_vec_dot_f32 gives %a", dots[k].n, got, dots[k].want);
    }
    float w[37];
    lcg_state = 99;
    for (int i = 0; i < 37; i++) w[i] = lcg_float() * 8;
    softmax_ggml(w, 37);
    uint32_t fnv = 2166136261u;
    for (int i = 0; i < 37; i++) fnv = (fnv ^ f32_bits(w[i])) * 16777619u;
    CHECK(w[0] == 0x1.ad24e4p-34f && w[36] == 0x1.03c548p-27f && fnv == 1359766609u,
          "softmax_ggml of 37 scores: p0 %a p36 %a hash %u (ggml: 0x1.ad24e4p-34 0x1.03c548p-27 1359766609)", w[0], w[36], fnv);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/halda-test-%d", (int)getpid());
    mkdir(tmpdir, 0700);
    test_type_roundtrip();
    test_synthetic();
    test_windows();
    test_maps();
    test_mix();
    test_corrupt();
    test_llama_arithmetic();
    test_references();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary("engine");
}
