# Halda — build, test, demo, benchmark.
#   make          the optimised binary ./halda (-O3 -march=native)
#   make portable ./halda-portable, built exactly as a user on unknown hardware would
#   make test     every test; ends with "N passed, N failed, N skipped"
#   make sanitize the tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#   make demo     write a synthetic model and run it
#   make bench    speed figures (see bench/README.md)
#   make bench-kernels  single-thread dot-product speed, scalar vs SIMD (bench/kernels.c)
CC      ?= cc
OPT     ?= -O3 -march=native
WARN    := -std=c11 -Wall -Wextra -Wshadow
LDLIBS  := -lm
TESTS   := $(patsubst tests/%.c,tests/bin/%,$(wildcard tests/test_*.c))

.PHONY: all portable test sanitize demo bench bench-kernels clean
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

test: halda portable $(TESTS)
	@tests/run.sh tests/bin

# Sanitizer builds go to their own folder so they never mix with the normal ones.
SAN := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
tests/bin-san/%: tests/%.c halda.c halda.h tests/test.h
	@mkdir -p tests/bin-san
	$(CC) $(SAN) $(TWARN) -pthread $< -o $@ $(LDLIBS)
sanitize: $(patsubst tests/%.c,tests/bin-san/%,$(wildcard tests/test_*.c))
	$(CC) $(SAN) $(WARN) -pthread halda.c -o tests/bin-san/halda $(LDLIBS)
	@HALDA_BIN=tests/bin-san/halda HALDA_SANITIZE=1 tests/run.sh tests/bin-san

demo: halda
	@sh tests/demo.sh

bench: halda
	@sh bench/bench.sh

build/bench-kernels: bench/kernels.c halda.c halda.h
	@mkdir -p build
	$(CC) $(OPT) $(TWARN) -pthread bench/kernels.c -o $@ $(LDLIBS)
bench-kernels: build/bench-kernels
	@build/bench-kernels

clean:
	rm -rf halda halda-portable tests/bin tests/bin-san build
