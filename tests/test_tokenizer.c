/* tests/test_tokenizer.c — the tokenizers against independent truths:
 *   1. llama.cpp's test vectors for four vocabularies (../shared/models/ggml-vocab-*.gguf with
 *      .inp/.out, produced by Hugging Face's tokenizers): every case must give exactly the same
 *      ids, tokenized as llama.cpp's test-tokenizer-0 does (no BOS, special tokens not parsed),
 *      and detokenizing must give back what llama.cpp's detokenizer gives back;
 *   2. pre-tokenizer splits of our own cases (long inputs, emoji, CJK, mixed scripts, numbers,
 *      white-space runs, invalid UTF-8) against splits computed offline with Python's `regex`
 *      module from the published expressions, and their ids against an independent reference
 *      BPE in Python (tools/gen_pretok_cases.py, tools/gen_bpe_cases.py);
 *   3. properties: byte-level BPE round-trips any bytes; special tokens are matched only when
 *      asked; end-of-generation ids and add_bos follow the metadata;
 *   4. random bytes and random text-like strings through every tokenizer (also under
 *      `make sanitize`): no crash, no read out of bounds, the round trip holds;
 *   5. chat templates: detection by markers, and a two-turn conversation per family rendered
 *      exactly as the published template renders it. */
#define HALDA_NO_MAIN
#include "../halda.c"
#include "test.h"

static const char *const vocab_names[] = {"llama-spm", "llama-bpe", "qwen2", "deepseek-llm"};
enum { N_VOCABS = 4 };
static tok_vocab *vocabs[N_VOCABS];

static char *slurp_text(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *s = malloc(cap + 1);
    for (size_t r; s && (r = fread(s + len, 1, cap - len, f)) > 0;) {
        len += r;
        if (len == cap) s = realloc(s, (cap *= 2) + 1);
    }
    fclose(f);
    if (s) s[len] = 0;
    *n = len;
    return s;
}

/* Tokenize into a malloc'ed array (grown as needed); returns the count, or -1. */
static int tokenize_all(const tok_vocab *v, const char *s, size_t n, bool add_special, bool parse_special, int32_t **out)
{
    int cap = (int)n + 8;
    *out = malloc((size_t)cap * sizeof **out);
    int r = tok_tokenize(v, s, n, *out, cap, add_special, parse_special);
    if (r < -1) {
        cap = -r - 1;
        *out = realloc(*out, (size_t)cap * sizeof **out);
        r = tok_tokenize(v, s, n, *out, cap, add_special, parse_special);
    }
    return r;
}

/* Detokenize into a malloc'ed, NUL-terminated string; returns the length, or -1. */
static long detok_all(const tok_vocab *v, const int32_t *t, int n, bool special, char **out)
{
    size_t cap = 64;
    *out = malloc(cap + 1);
    long r = tok_detokenize(v, t, n, *out, cap, special);
    if (r > (long)cap) {
        cap = (size_t)r;
        *out = realloc(*out, cap + 1);
        r = tok_detokenize(v, t, n, *out, cap, special);
    }
    if (r >= 0) (*out)[r] = 0;
    return r;
}

/* The concatenated pieces (special tokens rendered), without any clean-up. */
static size_t pieces_all(const tok_vocab *v, const int32_t *t, int n, char *buf, size_t cap)
{
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        long l = tok_piece(v, t[i], buf + k, cap - k, true, false);
        if (l < 0 || (size_t)l > cap - k) return (size_t)-1;
        k += (size_t)l;
    }
    return k;
}

/* ---- 1. llama.cpp's vectors ------------------------------------------------------------------- */

/* Split the .inp file as test-tokenizer-0 does: cases are separated by "\n__ggml_vocab_test__\n"
 * and the text after the last separator, if any, is one more case. */
static int split_cases(char *raw, size_t n, char **cases, size_t *lens, int cap)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t sl = sizeof sep - 1, pos = 0;
    int k = 0;
    while (pos < n && k < cap) {
        char *hit = memmem(raw + pos, n - pos, sep, sl);
        size_t end = hit ? (size_t)(hit - raw) : n;
        cases[k] = raw + pos, lens[k] = end - pos, k++;
        if (!hit) break;
        pos = end + sl;
    }
    return k;
}

static void test_vectors(const char *shared, int vi)
{
    char path[4300];
    size_t ni, no;
    snprintf(path, sizeof path, "%s/models/ggml-vocab-%s.gguf.inp", shared, vocab_names[vi]);
    char *inp = slurp_text(path, &ni);
    snprintf(path, sizeof path, "%s/models/ggml-vocab-%s.gguf.out", shared, vocab_names[vi]);
    char *outs = slurp_text(path, &no);
    CHECK(inp && outs, "%s: cannot read the .inp/.out files", vocab_names[vi]);
    if (!inp || !outs) return free(inp), free(outs);
    char *cases[256], *want_line[256];
    size_t lens[256];
    int nc = split_cases(inp, ni, cases, lens, 256), nl = 0, exact = 0, passed = 0;
    for (char *p = outs; p < outs + no && nl < 256;) { /* lines as std::getline reads them */
        char *e = memchr(p, '\n', (size_t)(outs + no - p));
        if (e) *e = 0;
        want_line[nl++] = p;
        p = e ? e + 1 : outs + no;
    }
    CHECK(nc == nl && nc > 40, "%s: %d inputs but %d expected lines", vocab_names[vi], nc, nl);
    const tok_vocab *v = vocabs[vi];
    for (int c = 0; c < nc && c < nl; c++) {
        int32_t want[1024];
        int nw = 0;
        for (char *p = want_line[c]; nw < 1024;) {
            char *e;
            long x = strtol(p, &e, 10);
            if (e == p) break;
            want[nw++] = (int32_t)x, p = e;
        }
        int32_t *got;
        int ng = tokenize_all(v, cases[c], lens[c], false, false, &got);
        bool same = ng == nw && !memcmp(got, want, (size_t)nw * sizeof *got);
        CHECK(same, "%s case %d (%zu bytes '%.*s'): %d ids, expected %d", vocab_names[vi], c, lens[c], (int)lens[c], cases[c], ng, nw);
        for (int i = 0; !same && i < (ng > nw ? ng : nw) && i < 40; i++)
            fprintf(stderr, "    %2d: got %6d want %6d\n", i, i < ng ? got[i] : -1, i < nw ? want[i] : -1);
        passed += same;
        /* Detokenizing: llama.cpp gives back the input exactly, except that Llama 3's clean-up
         * changes " ," and friends; so the truth is the input after that same clean-up. */
        char *text;
        long nt = detok_all(v, got, ng > 0 ? ng : 0, true, &text);
        char *expect = malloc(lens[c] + 1);
        memcpy(expect, cases[c], lens[c]);
        size_t ne = v->clean_spaces ? tok_clean_spaces(expect, lens[c]) : lens[c];
        CHECK(nt == (long)ne && !memcmp(text, expect, ne), "%s case %d: detokenized to '%s'", vocab_names[vi], c, text);
        exact += nt == (long)lens[c] && !memcmp(text, cases[c], lens[c]);
        if (v->kind == TOK_BPE) { /* the pieces alone are lossless */
            char *buf = malloc(lens[c] + 64);
            size_t np = pieces_all(v, got, ng, buf, lens[c] + 64);
            CHECK(np == lens[c] && !memcmp(buf, cases[c], np), "%s case %d: pieces do not give the input back", vocab_names[vi], c);
            free(buf);
        }
        free(expect), free(text), free(got);
    }
    printf("%s: %d/%d cases match llama.cpp's ids; detokenized text equals the input in %d\n", vocab_names[vi], passed, nc, exact);
    free(inp), free(outs);
}

/* ---- 2. Pre-tokenizer splits of our own texts ------------------------------------------------- */

#include "pretok_cases.h"

typedef struct {
    size_t lens[4096];
    int n;
} piece_list;

static int collect_piece(void *ctx, const uint8_t *s, size_t n)
{
    (void)s;
    piece_list *p = ctx;
    if (p->n < 4096) p->lens[p->n++] = n;
    return 0;
}

static void test_pretokenizer_cases(void)
{
    static const char *const pre_name[] = {"", "llama3", "qwen2", "deepseek-llm"};
    for (size_t c = 0; c < sizeof pretok_cases / sizeof pretok_cases[0]; c++) {
        tok_vocab v = {0};
        v.pre = pretok_cases[c].pre;
        piece_list *got = calloc(1, sizeof *got);
        tok_pretokenize(&v, pretok_cases[c].text, pretok_cases[c].len, collect_piece, got);
        size_t want[4096];
        int nw = 0;
        for (const char *p = pretok_cases[c].pieces; *p && nw < 4096;) {
            char *e;
            want[nw++] = (size_t)strtoul(p, &e, 10);
            p = e;
        }
        int first_diff = 0;
        while (first_diff < got->n && first_diff < nw && got->lens[first_diff] == want[first_diff]) first_diff++;
        CHECK(got->n == nw && first_diff == nw, "%s split of case %zu ('%.40s'): %d pieces, expected %d; first difference at piece %d",
              pre_name[v.pre], c, pretok_cases[c].text, got->n, nw, first_diff);
        free(got);
    }
}

/* The ids of the same texts, from tools/gen_bpe_cases.py's independent reference BPE. */
#include "bpe_cases.h"

static void test_bpe_cases(void)
{
    for (size_t c = 0; c < sizeof bpe_cases / sizeof bpe_cases[0]; c++) {
        int vi = 1;
        while (vi < N_VOCABS && strcmp(vocab_names[vi], bpe_cases[c].vocab)) vi++;
        if (vi == N_VOCABS) continue;
        int32_t want[4096], *got;
        int nw = 0;
        for (const char *p = bpe_cases[c].ids; nw < 4096;) {
            char *e;
            long x = strtol(p, &e, 10);
            if (e == p) break;
            want[nw++] = (int32_t)x, p = e;
        }
        const char *text = pretok_cases[bpe_cases[c].pretok].text;
        int ng = tokenize_all(vocabs[vi], text, pretok_cases[bpe_cases[c].pretok].len, false, false, &got);
        int first_diff = 0;
        while (first_diff < ng && first_diff < nw && got[first_diff] == want[first_diff]) first_diff++;
        CHECK(ng == nw && first_diff == nw, "%s: ids of our case %d ('%.30s'): %d, expected %d; first difference at %d",
              vocab_names[vi], bpe_cases[c].pretok, text, ng, nw, first_diff);
        free(got);
    }
}

/* ---- 3. Properties ---------------------------------------------------------------------------- */

static int count_id(const int32_t *t, int n, int32_t id)
{
    int k = 0;
    for (int i = 0; i < n; i++) k += t[i] == id;
    return k;
}

/* Does the text hold a byte whose only token is user-defined (see bpe_piece)? */
static bool has_user_byte(const tok_vocab *v, const char *s, size_t n)
{
    for (size_t i = 0; v->kind == TOK_BPE && i < n; i++)
        if (v->byte_token[(uint8_t)s[i]] >= 0 && v->type[v->byte_token[(uint8_t)s[i]]] == TOKT_USER) return true;
    return false;
}

/* Byte-level BPE gives back any bytes; the cases of section 2 include invalid UTF-8.  (Except
 * DeepSeek LLM's bytes 0xc0, 0xc1, 0xf5..0xff, which come back as characters.) */
static void test_round_trip(void)
{
    for (int vi = 1; vi < N_VOCABS; vi++) {
        const tok_vocab *v = vocabs[vi];
        int bad = 0;
        for (size_t c = 0; c < sizeof pretok_cases / sizeof pretok_cases[0]; c++) {
            int32_t *t;
            size_t len = pretok_cases[c].len;
            int n = tokenize_all(v, pretok_cases[c].text, len, false, false, &t);
            char *buf = malloc(len + 64);
            size_t np = n >= 0 ? pieces_all(v, t, n, buf, len + 64) : (size_t)-1;
            bad += !(np == len && !memcmp(buf, pretok_cases[c].text, len)) && !has_user_byte(v, pretok_cases[c].text, len);
            free(buf), free(t);
        }
        CHECK(bad == 0, "%s: %d of our texts do not round-trip", vocab_names[vi], bad);
    }
}

static void test_specials(void)
{
    const tok_vocab *spm = vocabs[0], *l3 = vocabs[1], *qw = vocabs[2], *ds = vocabs[3];
    int32_t t[64];
    /* add_bos per vocabulary: Llama 2 and Llama 3 and DeepSeek add one, Qwen does not */
    CHECK(tok_tokenize(spm, "Hi", 2, t, 64, true, false) >= 1 && t[0] == 1, "llama-spm: BOS first");
    CHECK(tok_tokenize(l3, "Hi", 2, t, 64, true, false) == 2 && t[0] == 128000, "llama-bpe: <|begin_of_text|> first");
    CHECK(tok_tokenize(ds, "Hi", 2, t, 64, true, false) == 2 && t[0] == 100000, "deepseek-llm: BOS first");
    CHECK(tok_tokenize(qw, "Hi", 2, t, 64, true, false) == 1 && t[0] != 151643, "qwen2: no BOS");
    /* control tokens only when asked */
    const char *chat = "<|im_start|>user\nhi<|im_end|>\n";
    int n = tok_tokenize(qw, chat, strlen(chat), t, 64, false, true);
    CHECK(n > 3 && t[0] == 151644 && count_id(t, n, 151645) == 1, "qwen2: <|im_start|> and <|im_end|> parsed (%d tokens)", n);
    n = tok_tokenize(qw, chat, strlen(chat), t, 64, false, false);
    CHECK(n > 6 && !count_id(t, n, 151644) && !count_id(t, n, 151645), "qwen2: specials not parsed unless asked");
    const char *l3chat = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
    n = tok_tokenize(l3, l3chat, strlen(l3chat), t, 64, true, true);
    CHECK(n == 7 && t[0] == 128000 && t[1] == 128006 && t[3] == 128007 && t[6] == 128009, "llama-bpe: header tokens (%d)", n);
    /* user-defined tokens match without parse_special (DeepSeek's "ø" is one) */
    n = tok_tokenize(ds, "xøx", 4, t, 64, false, false);
    CHECK(count_id(t, n, 100002) == 1, "deepseek-llm: user-defined 'ø' matched");
    /* longest first: "<|im_end|>" inside a longer text, overlapping candidates */
    n = tok_tokenize(qw, "<|im_end|><|im_end|>x<|im_end|", 30, t, 64, false, true);
    CHECK(n >= 3 && t[0] == 151645 && t[1] == 151645 && count_id(t, n, 151645) == 2, "qwen2: adjacent specials");
    /* end of generation */
    CHECK(tok_is_eog(l3, 128009) && tok_is_eog(l3, 128001) && !tok_is_eog(l3, 128000) && l3->n_eog == 2, "llama-bpe: EOG set");
    CHECK(l3->eot == 128009 && l3->eom == -1, "llama-bpe: eot %d eom %d (Llama 3.0 has no <|eom_id|>)", l3->eot, l3->eom);
    CHECK(tok_is_eog(qw, 151643) && tok_is_eog(qw, 151645) && !tok_is_eog(qw, 151644), "qwen2: EOG set");
    CHECK(tok_is_eog(ds, 100001) && !tok_is_eog(ds, 100000), "deepseek-llm: EOG set");
    CHECK(tok_is_eog(spm, 2) && !tok_is_eog(spm, 1), "llama-spm: EOG set");
    /* pieces: control tokens hidden unless asked; byte-level characters decoded */
    char p[64];
    CHECK(tok_piece(l3, 128009, p, sizeof p, false, false) == 0, "llama-bpe: <|eot_id|> hidden");
    CHECK(tok_piece(l3, 128009, p, sizeof p, true, false) == 10 && !memcmp(p, "<|eot_id|>", 10), "llama-bpe: <|eot_id|> shown");
    CHECK(tok_piece(l3, 220, p, sizeof p, false, false) == 1 && p[0] == ' ', "llama-bpe: 'Ġ' is a space");
    CHECK(tok_piece(l3, 198, p, sizeof p, false, false) == 1 && p[0] == '\n', "llama-bpe: 'Ċ' is a newline");
    CHECK(tok_piece(l3, -1, p, sizeof p, false, false) == -1 && tok_piece(l3, l3->n, p, sizeof p, false, false) == -1, "bad ids refused");
    /* too little room: the count says how much is needed, and the prefix is the same */
    const char *txt = "The quick brown fox jumps over the lazy dog";
    int32_t full[64], part[4];
    int nf = tok_tokenize(l3, txt, strlen(txt), full, 64, false, false);
    int r = tok_tokenize(l3, txt, strlen(txt), part, 4, false, false);
    CHECK(nf == 9 && r == -nf - 1 && !memcmp(part, full, sizeof part), "short output buffer: %d, %d", nf, r);
    char small[8];
    long need = tok_detokenize(l3, full, nf, small, sizeof small, false);
    CHECK(need == (long)strlen(txt), "detokenize reports the length needed (%ld)", need);
}

/* Loading refuses what it cannot tokenize, by name.  The GGUF is built in memory. */
static void test_refusals(void)
{
    static const char *const toks[] = {"a", "b", "ab", "c"};
    static const char *const merges[] = {"a b"};
    const char *pres[] = {"falcon", NULL, "qwen2"};
    for (int i = 0; i < 3; i++) {
        gguf_writer w = {0};
        gguf_writer_str(&w, "tokenizer.ggml.model", "gpt2");
        if (pres[i]) gguf_writer_str(&w, "tokenizer.ggml.pre", pres[i]);
        gguf_writer_arr_str(&w, "tokenizer.ggml.tokens", toks, 4);
        gguf_writer_arr_str(&w, "tokenizer.ggml.merges", merges, 1);
        char path[64];
        snprintf(path, sizeof path, "/tmp/halda-tok-%d-%d.gguf", (int)getpid(), i);
        herr e = {{0}};
        int rc = gguf_writer_save(&w, path, &e);
        gguf_writer_free(&w);
        tok_vocab *v = rc == 0 ? tok_vocab_open(path, &e) : NULL;
        if (i == 0) CHECK(!v && strstr(e.msg, "'falcon'"), "unknown pre-tokenizer refused by name: %s", e.msg);
        if (i == 1) CHECK(!v && strstr(e.msg, "pre-tokenizer"), "missing pre-tokenizer refused: %s", e.msg);
        if (i == 2) { /* a tiny vocabulary with one merge: "ab" from "a" "b", the byte tokens absent */
            int32_t t[8];
            int n = v ? tok_tokenize(v, "abab", 4, t, 8, false, false) : -1;
            CHECK(n == 2 && t[0] == 2 && t[1] == 2, "tiny vocabulary: 'abab' -> %d tokens", n);
            n = v ? tok_tokenize(v, "cax", 3, t, 8, false, false) : -1;
            CHECK(n == 2 && t[0] == 3 && t[1] == 0, "tiny vocabulary: a byte missing from the vocabulary is dropped (%d)", n);
        }
        tok_vocab_free(v);
        remove(path);
    }
}

/* Every allocation of a tokenize call may fail: the call reports it and leaks nothing. */
static void test_allocation_failures(void)
{
    const char *txt = "Hello <|im_end|> world, 1234567 café 🦙 \xff!";
    for (int vi = 0; vi < N_VOCABS; vi++) {
        int32_t t[128];
        int ok = tok_tokenize(vocabs[vi], txt, strlen(txt), t, 128, true, true), failures = 0;
        for (long k = 0; k < 64; k++) {
            halda_alloc_count = 0, halda_alloc_fail_at = k;
            int r = tok_tokenize(vocabs[vi], txt, strlen(txt), t, 128, true, true);
            halda_alloc_fail_at = -1;
            if (r == ok) break;
            failures += r == -1;
        }
        CHECK(ok > 0 && failures > 0, "%s: failing allocations are reported (%d)", vocab_names[vi], failures);
    }
}

/* ---- 4. Random input -------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Text-like input: fragments that exercise every branch, with stray bytes between them. */
static size_t random_text(char *buf, size_t cap)
{
    static const char *const frag[] = {" ", "  ", "\n", "\r\n", "\t", "a", "Hello", " world", "'s", "'LL", "123", "4567",
                                       "٣٤", "é", "ſ", "中文", "가", "🦙", "😶‍🌫️", "\xc2\xa0", "\xe3\x80\x80", "...", "!?",
                                       "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<s>", "</s>", "ø", "[PAD100015]",
                                       "\xff", "\xc3", "\xe2\x82", "\x80", "\xed\xa0\x80", "\xc0\xaf", "\0", "“", "ｚ"};
    size_t n = 0, want = rnd() % cap;
    while (n < want) {
        const char *f = frag[rnd() % (sizeof frag / sizeof frag[0])];
        size_t l = f[0] ? strlen(f) : 1;
        if (n + l > cap) break;
        memcpy(buf + n, f, l);
        n += l;
    }
    return n;
}

static void test_random(int rounds)
{
    char buf[512], out[4096];
    int32_t t[600];
    for (int vi = 0; vi < N_VOCABS; vi++) {
        const tok_vocab *v = vocabs[vi];
        int errors = 0, bad_trip = 0;
        for (int r = 0; r < rounds; r++) {
            size_t n;
            if (r & 1) {
                n = random_text(buf, sizeof buf);
            } else {
                n = rnd() % sizeof buf;
                for (size_t i = 0; i < n; i++) buf[i] = (char)rnd();
            }
            bool special = r % 4 >= 2;
            int k = tok_tokenize(v, buf, n, t, 600, r % 3 == 0, special);
            if (k < 0) {
                errors++;
                continue;
            }
            int first = r % 3 == 0 && v->add_bos ? 1 : 0; /* the BOS, when added */
            if (v->kind == TOK_BPE) { /* the pieces (specials shown) are the input */
                size_t np = pieces_all(v, t + first, k - first, out, sizeof out);
                bad_trip += !(np == n && !memcmp(out, buf, n)) && !has_user_byte(v, buf, n);
            } else if (!special && !memmem(buf, n, "\xe2\x96\x81", 3)) { /* SPM: unless ▁ was in the text */
                long nt = tok_detokenize(v, t + first, k - first, out, sizeof out, false);
                bad_trip += !(nt == (long)n && !memcmp(out, buf, n));
            }
        }
        CHECK(errors == 0, "%s: %d random inputs failed to tokenize", vocab_names[vi], errors);
        CHECK(bad_trip == 0, "%s: %d random inputs did not round-trip", vocab_names[vi], bad_trip);
    }
}

/* ---- 5. Chat templates ------------------------------------------------------------------------
 * The expected strings are what the published Jinja templates produce for this conversation
 * (worked out by hand from the templates quoted in halda.c's "Chat templates" section). */

static const halda_chat_message chat_two_turns[] = {
    {"system", "You are terse."},
    {"user", "Hello!"},
    {"assistant", "Hi. How can I help?"},
    {"user", "What is 2+2?"},
};

static void check_render(const tok_vocab *v, const char *name, const halda_chat_message *m, int n, bool add, const char *want)
{
    char out[2048];
    long r = chat_render(v, name, m, n, add, out, sizeof out);
    CHECK(r == (long)strlen(want) && !strcmp(out, want), "chat %s:\n got '%s'\nwant '%s'", name ? name : "(model's)", r >= 0 ? out : "",
          want);
}

static void test_chat(void)
{
    /* detection by markers, on excerpts of the real templates */
    static const char llama2[] =
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
        "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
        "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
    static const char llama3[] =
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + "
        "content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
    static const char qwen25[] =
        "{%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
        "    {%- endif %}\n{%- for message in messages %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}";
    static const char r1[] =
        "{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
        "{{'<\357\275\234User\357\275\234>' + message['content']}}{%- endif %}{% if add_generation_prompt and not ns.is_tool %}"
        "{{'<\357\275\234Assistant\357\275\234><think>\\n'}}{% endif %}";
    CHECK(chat_detect(llama2, strlen(llama2)) == CHAT_LLAMA2, "Llama 2 template detected");
    CHECK(chat_detect(llama3, strlen(llama3)) == CHAT_LLAMA3, "Llama 3 template detected");
    CHECK(chat_detect(qwen25, strlen(qwen25)) == CHAT_CHATML, "Qwen 2.5 template detected");
    CHECK(chat_detect(r1, strlen(r1)) == CHAT_DEEPSEEK_R1, "DeepSeek-R1 template detected");
    CHECK(chat_detect("{{ messages }}", 14) == CHAT_NONE, "unknown template");
    const char *s;
    size_t sl = chat_default_system(qwen25, strlen(qwen25), &s);
    CHECK(sl == 68 && !memcmp(s, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", sl), "Qwen 2.5 default system prompt");
    const tok_vocab *qw = vocabs[2];
    CHECK(qw->chat == CHAT_CHATML && qw->chat_system && !strcmp(qw->chat_system, "You are a helpful assistant"),
          "qwen2 vocabulary: ChatML with the default system prompt '%s'", qw->chat_system ? qw->chat_system : "");

    check_render(vocabs[0], "llama2", chat_two_turns, 4, true,
                 "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello! [/INST] Hi. How can I help? </s><s>[INST] What is 2+2? [/INST]");
    check_render(vocabs[1], "llama3", chat_two_turns, 4, true,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                 "Hi. How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n");
    check_render(qw, NULL, chat_two_turns, 4, true,
                 "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
                 "Hi. How can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    check_render(vocabs[3], "deepseek-r1", chat_two_turns, 4, true,
                 "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234>You are terse.<\357\275\234User\357\275\234>Hello!"
                 "<\357\275\234Assistant\357\275\234>Hi. How can I help?<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>"
                 "<\357\275\234User\357\275\234>What is 2+2?<\357\275\234Assistant\357\275\234><think>\n");
    /* without a system message: ChatML adds the template's default; trimming and reasoning */
    static const halda_chat_message plain[] = {{"user", "  Hi \n"}, {"assistant", "<think>\nhmm\n</think>\n\nHello."}, {"user", "Bye"}};
    check_render(qw, NULL, plain, 3, false,
                 "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n  Hi \n<|im_end|>\n"
                 "<|im_start|>assistant\n<think>\nhmm\n</think>\n\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n");
    tok_vocab qwq = *qw; /* QwQ: no default system prompt, reasoning dropped, <think> opens the answer */
    qwq.chat_system = NULL, qwq.chat_think = true;
    check_render(&qwq, NULL, plain, 3, true,
                 "<|im_start|>user\n  Hi \n<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                 "<|im_start|>assistant\n<think>\n");
    check_render(vocabs[1], "llama3", plain, 3, false,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                 "<think>\nhmm\n</think>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>");
    check_render(vocabs[0], "llama2", plain, 3, false, "<s>[INST] Hi [/INST] <think>\nhmm\n</think>\n\nHello. </s><s>[INST] Bye [/INST]");
    check_render(vocabs[3], "deepseek-r1", plain, 3, false,
                 "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234><\357\275\234User\357\275\234>  Hi \n"
                 "<\357\275\234Assistant\357\275\234>\n\nHello.<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>"
                 "<\357\275\234User\357\275\234>Bye");
    /* Llama 3.1: the system header with the template's dates */
    static const char llama31[] =
        "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n"
        "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}";
    static const char llama32[] = "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- else %}"
                                  "{%- set date_string = \"26 Jul 2024\" %}{%- endif %} Cutting Knowledge Date <|start_header_id|><|end_header_id|>";
    char *d31 = chat_llama3_date(llama31, strlen(llama31)), *d32 = chat_llama3_date(llama32, strlen(llama32));
    CHECK(chat_detect(llama31, strlen(llama31)) == CHAT_LLAMA3 && d31 && !strcmp(d31, "26 Jul 2024") && d32 && !d32[0],
          "Llama 3.1/3.2 dates: '%s' '%s'", d31 ? d31 : "", d32 ? d32 : "");
    tok_vocab l31 = *vocabs[1];
    l31.chat = CHAT_LLAMA3, l31.chat_date = d31;
    if (d31)
        check_render(&l31, NULL, chat_two_turns, 4, true,
                     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                     "Today Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\nHi. How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    if (d31)
        check_render(&l31, NULL, chat_two_turns + 1, 1, true,
                     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                     "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(d31), free(d32);
    char small[8];
    CHECK(chat_render(vocabs[1], "nonsense", chat_two_turns, 4, true, small, sizeof small) == -1, "unknown family refused");
    CHECK(chat_render(vocabs[1], "llama3", chat_two_turns, 4, true, small, sizeof small) > 8, "short buffer: length reported");
    /* the rendered Llama 3 prompt tokenizes to one BOS and its header tokens */
    char out[2048];
    long r = chat_render(vocabs[1], "llama3", chat_two_turns, 4, true, out, sizeof out);
    int32_t t[256];
    int n = r > 0 ? tok_tokenize(vocabs[1], out, (size_t)r, t, 256, false, true) : -1;
    CHECK(n > 10 && t[0] == 128000 && count_id(t, n, 128000) == 1 && count_id(t, n, 128009) == 4 && t[n - 1] == 271,
          "Llama 3 chat prompt tokens (%d)", n);
}

/* utf8_partial_tail, as halda chat streams with it: valid text cut into pieces of every size
 * comes out as whole characters only, and nothing is held back once the text is complete. */
static void test_utf8_partial_tail(void)
{
    static const char text[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z\xe4\xb8\xad"; /* a é € 😀 z 中 */
    size_t n = sizeof text - 1;
    for (size_t piece = 1; piece <= 5; piece++) {
        size_t shown = 0, len = 0;
        bool whole = true;
        while (len < n) {
            len = len + piece < n ? len + piece : n;
            size_t ready = len - utf8_partial_tail(text + shown, len - shown);
            for (size_t i = shown; i < ready;) { /* each chunk shown must be whole characters */
                int l = utf8_valid_len((const uint8_t *)text + i, ready - i);
                if (l == 0) whole = false, l = 1;
                i += (size_t)l;
            }
            shown = ready;
        }
        CHECK(whole && shown == n, "pieces of %zu bytes: whole characters only, all shown (%zu of %zu)", piece, shown, n);
    }
    CHECK(utf8_partial_tail("\xf0\x9f\x98", 3) == 3 && utf8_partial_tail("\xe2\x82", 2) == 2 && utf8_partial_tail("\xc3", 1) == 1,
          "cut characters are held");
    CHECK(utf8_partial_tail("\xf0\x9f\x98\x80", 4) == 0 && utf8_partial_tail("", 0) == 0 && utf8_partial_tail("ab", 2) == 0,
          "complete text is not held");
    CHECK(utf8_partial_tail("\x80", 1) == 0 && utf8_partial_tail("\xff", 1) == 0 && utf8_partial_tail("\xe2" "a", 2) == 0 &&
              utf8_partial_tail("\x80\x80\x80", 3) == 0,
          "invalid bytes are not held");
}

int main(void)
{
    test_utf8_partial_tail();
    const char *shared = test_shared_dir();
    if (!shared) {
        SKIP("../shared is absent: no vocabularies to test");
        return test_summary("tokenizer");
    }
    for (int i = 0; i < N_VOCABS; i++) {
        char path[4300];
        herr e = {{0}};
        snprintf(path, sizeof path, "%s/models/ggml-vocab-%s.gguf", shared, vocab_names[i]);
        vocabs[i] = tok_vocab_open(path, &e);
        CHECK(vocabs[i] != NULL, "%s", e.msg);
    }
    test_pretokenizer_cases();
    test_refusals();
    for (int i = 0; i < N_VOCABS; i++)
        if (!vocabs[i]) return test_summary("tokenizer");
    for (int i = 0; i < N_VOCABS; i++) test_vectors(shared, i);
    test_bpe_cases();
    test_round_trip();
    test_specials();
    test_allocation_failures();
    test_random(getenv("HALDA_SANITIZE") ? 1000 : 4000);
    test_chat();
    for (int i = 0; i < N_VOCABS; i++) tok_vocab_free(vocabs[i]);
    return test_summary("tokenizer");
}
