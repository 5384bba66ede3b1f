/* halda.h — the public API of halda.c.
 *
 * One model (the weights, mapped read-only from a GGUF file) can serve several contexts (a KV
 * cache and scratch memory each).  Every call that can fail returns a status (0 = ok) or NULL
 * and leaves a one-line reason in the caller's buffer or in the context (halda_last_error).
 * Nothing here exits the process.
 */
#ifndef HALDA_H
#define HALDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct halda_model halda_model;     /* weights + vocabulary; read-only once loaded */
typedef struct halda_context halda_context; /* KV cache, scratch buffers, threads */

/* ---- Loading --------------------------------------------------------------------------------- */

/* Map a GGUF file and check it.  Returns NULL and writes the reason into err on failure. */
halda_model *halda_model_load(const char *path, char *err, size_t err_len);
void halda_model_free(halda_model *model);

/* Hyper-parameters a caller may want to show. */
int halda_model_n_layer(const halda_model *model);
int halda_model_n_embd(const halda_model *model);
int halda_model_n_vocab(const halda_model *model);
int halda_model_n_ctx_train(const halda_model *model);
uint64_t halda_model_size_bytes(const halda_model *model); /* bytes of weight tensors */
const char *halda_model_arch(const halda_model *model);    /* "llama" or "qwen2" */

/* KV cache element type. */
enum { HALDA_KV_F32 = 0, HALDA_KV_F16 = 1, HALDA_KV_Q8_0 = 2 };

typedef struct {
    int n_ctx;     /* positions in the KV cache (0: the model's training context, capped at 4096) */
    int n_threads; /* 0: the number of physical cores */
    int kv_type;   /* HALDA_KV_F16 (default), HALDA_KV_F32 or HALDA_KV_Q8_0 */
    int n_batch;   /* most tokens per forward call (0: 512) */
} halda_context_params;

halda_context_params halda_context_default_params(void);
/* Create a context: allocates the KV cache and all scratch memory once. */
halda_context *halda_context_new(halda_model *model, const halda_context_params *params, char *err,
                                 size_t err_len);
void halda_context_free(halda_context *ctx);
const char *halda_last_error(const halda_context *ctx);

/* ---- Tokens ------------------------------------------------------------------------------------ */

/* Tokenize text (UTF-8; invalid bytes are kept as bytes) into at most max_tokens ids.  add_bos:
 * prepend BOS when the model wants it.  parse_special: match control tokens such as <s> or
 * <|im_start|> in the text (user-defined tokens always match).  Returns the number of tokens, or
 * -1 on error, or -(needed) - 1 when max_tokens is too small. */
int halda_tokenize(const halda_model *model, const char *text, size_t len, int32_t *tokens, int max_tokens,
                   int add_bos, int parse_special);
/* The text of one token (byte tokens give their byte).  Returns bytes written (not NUL
 * terminated beyond out_len), or -1.  special: render control tokens instead of hiding them. */
int halda_token_to_piece(const halda_model *model, int32_t token, char *out, size_t out_len, int special);
/* Tokens back to text, as llama.cpp's llama_detokenize: the space SentencePiece adds before the
 * first word is dropped, and Llama 3 vocabularies tidy spaces before punctuation.  Returns the
 * bytes written (no NUL), -1 for an invalid id, or -(needed) - 1 when out_len is too small. */
int halda_detokenize(const halda_model *model, const int32_t *tokens, int n_tokens, char *out, size_t out_len,
                     int special);
int32_t halda_token_bos(const halda_model *model);
int32_t halda_token_eos(const halda_model *model);
int halda_token_is_eog(const halda_model *model, int32_t token); /* end of generation? */

/* ---- Chat templates -------------------------------------------------------------------------- */

typedef struct {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content;
} halda_chat_message;

/* Lay out a conversation as the model was trained to see it, with the built-in renderer of the
 * family named by tmpl ("llama2", "llama3", "chatml", "deepseek-r1"), or of the model's own
 * tokenizer.chat_template when tmpl is NULL.  add_assistant: end by opening the assistant's
 * turn.  The text holds special tokens (BOS too): tokenize it with parse_special and no add_bos.
 * Returns its length (NUL-terminated), -1 for an unknown family, or -(needed) - 1 when out_len
 * is too small (needed does not count the NUL). */
int halda_chat_apply(const halda_model *model, const char *tmpl, const halda_chat_message *messages, int n_messages,
                     int add_assistant, char *out, size_t out_len);
/* The family of the model's chat template, or NULL when it has none halda recognises. */
const char *halda_chat_template(const halda_model *model);

/* ---- Evaluation -------------------------------------------------------------------------------- */

/* Run n_tokens tokens at positions pos0, pos0+1, ... through the whole model and keep the KV
 * entries.  When logits is not NULL it receives n_vocab floats: the logits of the last token.
 * Returns 0, or -1 with halda_last_error(ctx) set. */
int halda_eval(halda_context *ctx, const int32_t *tokens, int n_tokens, int pos0, float *logits);
/* Forget the KV entries from position pos on (pos = 0 clears the cache). */
void halda_kv_truncate(halda_context *ctx, int pos);

/* ---- Sampling ---------------------------------------------------------------------------------- */

typedef struct {
    float temperature;    /* 0: greedy */
    int top_k;            /* 0: off */
    float top_p;          /* 1: off */
    float min_p;          /* 0: off */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;    /* how many recent tokens the penalty looks at */
    uint64_t seed;
} halda_sampler_params;

typedef struct halda_sampler halda_sampler;
halda_sampler_params halda_sampler_default_params(void);
halda_sampler *halda_sampler_new(const halda_sampler_params *params, int n_vocab);
void halda_sampler_free(halda_sampler *sampler);
/* Pick the next token from logits (n_vocab floats; modified in place). */
int32_t halda_sample(halda_sampler *sampler, float *logits);
/* Tell the sampler a token was added to the sequence (feeds the repetition penalty). */
void halda_sampler_accept(halda_sampler *sampler, int32_t token);

#ifdef __cplusplus
}
#endif
#endif /* HALDA_H */
