# Halda — build, test, demo, benchmark.
#   make          the optimised binary ./halda (-O3 -march=native)
#   make portable ./halda-portable, built exactly as a user on unknown hardware would
#   make test     every test; ends with "N passed, N failed, N skipped"
#   make sanitize the tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#   make demo     write a synthetic model and run it
#   make bench    speed figures (see bench/README.md)
#   make bench-tokenizer   tokenization speed (MB/s) for each vocabulary in ../shared/models
#   make bench-kernels     single-thread dot-product speed, scalar vs SIMD (bench/kernels.c)
#   make bench-solve       Halda solver time and nodes: shared instances, 16x80 and 64x128 clusters
CC      ?= cc
OPT     ?= -O3 -march=native
WARN    := -std=c11 -Wall -Wextra -Wshadow
LDLIBS  := -lm
TESTS   := $(patsubst tests/%.c,tests/bin/%,$(wildcard tests/test_*.c))
# On x86 compilers, the kernel tests once more without AVX-512: the AVX2 kernels that an
# AVX-512 machine's native build replaces (the 16-register gemm tiles) are checked there too.
TESTS   += $(shell $(CC) -march=native -mno-avx512f -E -x c /dev/null >/dev/null 2>&1 && echo tests/bin/test_kernels_avx2)

.PHONY: all portable test sanitize fuzz demo bench bench-tokenizer bench-kernels bench-solve clean
all: halda

halda: halda.c halda.h
	$(CC) $(OPT) $(WARN) -pthread halda.c -o $@ $(LDLIBS)

portable: halda.c halda.h
	$(CC) -O2 -pthread halda.c -o halda-portable $(LDLIBS)

# Test programs include halda.c without main(), so helpers only main() uses are unused there.
TWARN   := $(WARN) -Wno-unused-function -Wno-format-truncation
tests/bin/%: tests/%.c halda.c halda.h tests/test.h
	@mkdir -p tests/bin
	$(CC) -O2 -march=native -g $(TWARN) -pthread $< -o $@ $(LDLIBS)

tests/bin/test_kernels_avx2: tests/test_kernels.c halda.c halda.h tests/test.h
	@mkdir -p tests/bin
	$(CC) -O2 -march=native -mno-avx512f -g $(TWARN) -pthread $< -o $@ $(LDLIBS)

tests/bin/relay: tests/relay.c
	@mkdir -p tests/bin
	$(CC) -O2 $(WARN) -pthread $< -o $@

# The tokenizer test also reads the cases made by tools/gen_pretok_cases.py and gen_bpe_cases.py.
tests/bin/test_tokenizer tests/bin-san/test_tokenizer: tests/pretok_cases.h tests/bpe_cases.h

test: halda portable $(TESTS) tests/bin/relay
	@tests/run.sh tests/bin

# Sanitizer builds go to their own folder so they never mix with the normal ones.
SAN := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
tests/bin-san/%: tests/%.c halda.c halda.h tests/test.h
	@mkdir -p tests/bin-san
	$(CC) $(SAN) $(TWARN) -pthread $< -o $@ $(LDLIBS)
# The kernel and engine tests once more with -march=native: the plain sanitizer builds take the
# portable kernels, so without these the SIMD paths (per-row, 8-row and gemm tiles) would never
# run under the sanitizers.
SAN_NATIVE := $(shell $(CC) -march=native -E -x c /dev/null >/dev/null 2>&1 && echo tests/bin-san/test_kernels_native tests/bin-san/test_engine_native)
tests/bin-san/%_native: tests/%.c halda.c halda.h tests/test.h
	@mkdir -p tests/bin-san
	$(CC) $(SAN) -march=native $(TWARN) -pthread $< -o $@ $(LDLIBS)
sanitize: $(patsubst tests/%.c,tests/bin-san/%,$(wildcard tests/test_*.c)) $(SAN_NATIVE)
	$(CC) $(SAN) $(WARN) -pthread halda.c -o tests/bin-san/halda $(LDLIBS)
	@HALDA_BIN=tests/bin-san/halda HALDA_SANITIZE=1 tests/run.sh tests/bin-san

# Fuzz every parser for FUZZ_SECONDS each (clang's libFuzzer), starting from seed files.
FUZZ_SECONDS ?= 60
fuzz: halda
	@mkdir -p build/fuzz-gguf-seed
	./halda gen-model -o build/fuzz-gguf-seed/small.gguf --layers 1 --embd 64 --ff 64 --heads 2 --kv-heads 1 --vocab 400 --ctx 64
	clang -O1 -g -fsanitize=fuzzer,address,undefined $(WARN) -Wno-unused-function -pthread tests/fuzz_gguf.c -o build/fuzz_gguf $(LDLIBS)
	@mkdir -p build/fuzz-gguf-corpus
	build/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 build/fuzz-gguf-corpus build/fuzz-gguf-seed 2>&1 | tail -3
	@for f in tests/fuzz_*.c; do [ $$f = tests/fuzz_gguf.c ] && continue; n=$$(basename $$f .c); \
	  clang -O1 -g -fsanitize=fuzzer,address,undefined $(WARN) -Wno-unused-function -pthread $$f -o build/$$n $(LDLIBS) && \
	  mkdir -p build/$$n-corpus && build/$$n -max_total_time=$(FUZZ_SECONDS) build/$$n-corpus 2>&1 | tail -3; done

tests/bin/bench_tokenizer: tests/bench_tokenizer.c halda.c halda.h tests/test.h
	@mkdir -p tests/bin
	$(CC) $(OPT) $(TWARN) -pthread $< -o $@ $(LDLIBS)
bench-tokenizer: tests/bin/bench_tokenizer
	@tests/bin/bench_tokenizer

demo: halda
	@sh tests/demo.sh

bench: halda
	@sh bench/bench.sh

build/bench-kernels: bench/kernels.c halda.c halda.h
	@mkdir -p build
	$(CC) $(OPT) $(TWARN) -pthread bench/kernels.c -o $@ $(LDLIBS)
build/bench-solve: bench/solve.c halda.c halda.h
	@mkdir -p build
	$(CC) -O2 $(TWARN) -pthread bench/solve.c -o $@ $(LDLIBS)
bench-solve: build/bench-solve
	@build/bench-solve

bench-kernels: build/bench-kernels
	@build/bench-kernels

clean:
	rm -rf halda halda-portable tests/bin tests/bin-san build
