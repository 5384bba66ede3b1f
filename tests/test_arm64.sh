#!/bin/sh
# tests/test_arm64.sh — halda on ARM, under user-mode emulation (qemu), on an x86 machine:
#   1. halda.c cross-compiles warning-free for 64-bit ARM (with and without the dot product
#      extension) and for 32-bit ARM (armhf, a phone's target), with gcc and, where present, clang;
#   2. tests/test_kernels.c runs under qemu-aarch64 for both 64-bit builds — the NEON dot
#      products against their scalar twins, bit for bit, the vdotq_s32 path and the plain
#      NEON one — and under qemu-arm for the 32-bit build (scalar kernels);
#   3. end to end: the ARM halda binaries' `halda eval` against llama.cpp's references in
#      ../shared/ref, through ../shared/tools/cmp_ref.py, for a set of references that covers
#      every weight type (HALDA_ARM_ALL_REFS=1: all of them; about 3 minutes more).
# The cross compilers and qemu come from Debian's packages gcc-aarch64-linux-gnu,
# gcc-arm-linux-gnueabihf and qemu-user; when they are missing this script installs them if it
# can (root with apt-get, as CI is), and otherwise skips with the reason.
SHARED=${HALDA_SHARED:-../shared}
B=build/arm
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
skipped() { skip=$((skip + 1)); echo "SKIP: $*"; }
finish() { echo "RESULT arm64 passed=$pass failed=$fail skipped=$skip"; [ $fail -eq 0 ]; exit $?; }

if [ -n "$HALDA_SANITIZE" ]; then
    skipped "ARM emulation runs in make test; not repeated under the sanitizers"
    finish
fi

# ---- the tools ---------------------------------------------------------------------------------
# install PACKAGE...: apt-get install as root, once with the package lists as they are and once
# after refreshing them; quiet unless it fails.
install() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    echo "installing $* (Debian packages) ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$B/apt.log" 2>&1; then
        apt-get update -q >>"$B/apt.log" 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$B/apt.log" 2>&1 || { tail -5 "$B/apt.log"; return 1; }
    fi
}
mkdir -p "$B"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    install gcc-aarch64-linux-gnu qemu-user
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    skipped "no aarch64-linux-gnu-gcc / qemu-aarch64, and they cannot be installed here (apt-get install gcc-aarch64-linux-gnu qemu-user as root)"
    finish
fi
have_armhf=1
if ! command -v arm-linux-gnueabihf-gcc >/dev/null || ! command -v qemu-arm >/dev/null; then
    install gcc-arm-linux-gnueabihf qemu-user || true
    command -v arm-linux-gnueabihf-gcc >/dev/null && command -v qemu-arm >/dev/null || have_armhf=0
fi

# ---- 1. builds, warning-free ------------------------------------------------------------------
WARN="-std=c11 -Wall -Wextra -Wshadow"
TWARN="$WARN -Wno-unused-function -Wno-format-truncation"
# build NAME CC FLAGS...: compile halda.c (the binary) and tests/test_kernels.c; any compiler
# output is a failure.
build() {
    name=$1 cc=$2; shift 2
    if $cc -O2 "$@" $WARN -pthread halda.c -o "$B/halda-$name" -lm >"$B/$name.log" 2>&1 && [ ! -s "$B/$name.log" ]; then ok
    else bad "halda.c for $name ($cc $*): $(head -c 1500 "$B/$name.log")"; rm -f "$B/halda-$name"; fi
    if $cc -O2 "$@" $TWARN -pthread tests/test_kernels.c -o "$B/test_kernels-$name" -lm >"$B/$name-t.log" 2>&1 && [ ! -s "$B/$name-t.log" ]; then ok
    else bad "tests/test_kernels.c for $name: $(head -c 1500 "$B/$name-t.log")"; rm -f "$B/test_kernels-$name"; fi
}
build arm64 aarch64-linux-gnu-gcc -march=armv8.2-a+dotprod
build arm64-nodot aarch64-linux-gnu-gcc -march=armv8-a
[ $have_armhf = 1 ] && build armhf arm-linux-gnueabihf-gcc -march=armv7-a -mfpu=neon
[ $have_armhf = 1 ] || skipped "no arm-linux-gnueabihf-gcc / qemu-arm: the 32-bit ARM build is not tested"

# clang, where present, checks the same sources for its own warnings (no linking needed).
if command -v clang >/dev/null; then
    for target in "aarch64-linux-gnu -march=armv8.2-a+dotprod" "aarch64-linux-gnu -march=armv8-a" "arm-linux-gnueabihf -march=armv7-a -mfpu=neon"; do
        t=${target%% *} flags=${target#* }
        [ -d "/usr/$t/include" ] || continue
        if clang --target=$t $flags -O2 $WARN -pthread -fsyntax-only halda.c >"$B/clang.log" 2>&1 && [ ! -s "$B/clang.log" ]; then ok
        else bad "clang --target=$t $flags: $(head -c 1500 "$B/clang.log")"; fi
    done
fi

# ---- 2. the kernel tests under emulation --------------------------------------------------------
# emu NAME ARGS...: run an ARM binary of build NAME under qemu
emu() {
    name=$1; shift
    case $name in
    armhf) QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf qemu-arm "$@" ;;
    *) QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 "$@" ;;
    esac
}
for name in arm64 arm64-nodot armhf; do
    [ -x "$B/test_kernels-$name" ] || continue
    emu $name "$B/test_kernels-$name" >"$B/kernels-$name.out" 2>&1
    line=$(grep '^RESULT ' "$B/kernels-$name.out")
    f=$(echo "$line" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
    if [ -n "$f" ] && [ "$f" -eq 0 ]; then ok; echo "test_kernels on $name: $line"
    else bad "test_kernels under qemu ($name): $(grep -E '^(FAIL|SKIP)' "$B/kernels-$name.out" | head -20) $(tail -3 "$B/kernels-$name.out")"; fi
    # the 64-bit builds must really compare NEON twins: no "no SIMD kernels" skip
    case $name in arm64*) if grep -q '^SKIP: no SIMD' "$B/kernels-$name.out"; then bad "$name: NEON kernels not compiled in"; else ok; fi ;; esac
done

# ---- 3. end to end against llama.cpp --------------------------------------------------------------
if [ ! -d "$SHARED/ref" ] || ! command -v python3 >/dev/null; then
    skipped "../shared or python3 absent: ARM reference comparison not run"
    finish
fi
if [ -n "$HALDA_ARM_ALL_REFS" ]; then
    REFS=$(ls "$SHARED/ref" | sed -n 's/\.ref$//p')
else # every weight type at least once, both model families, and the smallest models
    REFS="stories260K.once stories260K-q4_0.once stories260K-q4_k_m.lily stories260K-q8_0.once
          tinystories656k-q4_0.lily tiny-llama-f16.once tiny-llama-bf16.lily tiny-qwen2-f32.once
          tiny-llama-q8_0.lily tiny-llama-q4_0.lily tiny-qwen2-q4_1.lily tiny-llama-q5_0.once tiny-qwen2-q5_1.once
          tiny-llama-iq4_nl.lily tiny-llama-q2_k.lily tiny-qwen2-q3_k_m.lily tiny-llama-q4_k_m.lily
          tiny-qwen2-q4_k_m.once tiny-llama-q5_k_m.lily tiny-qwen2-q6_k.lily tiny-llama-q6_k.once"
fi
# a known failure (tests/known_failures.txt) is reported as skipped, as tests/test_engine.c does
known() { grep -qx "$1.ref" tests/known_failures.txt 2>/dev/null; }
# evals NAME REFS...: `halda eval` of build NAME against each reference
evals() {
    name=$1; shift
    [ -x "$B/halda-$name" ] || return
    n=0
    for r in "$@"; do
        m=$(sed -n 's/^# model //p' "$SHARED/ref/$r.ref") p=$(sed -n 's/^# prompt //p' "$SHARED/ref/$r.ref")
        emu $name "$B/halda-$name" eval -m "$SHARED/models/$m" -p "$p" -n 32 -t 2 >"$B/eval.out" 2>&1
        if msg=$(python3 "$SHARED/tools/cmp_ref.py" "$SHARED/ref/$r.ref" "$B/eval.out" 2>&1); then ok; n=$((n + 1))
        elif known "$r"; then skipped "$r on $name: known failure (tests/known_failures.txt): $msg"
        else bad "$r: halda eval on $name under qemu: $msg"; fi
    done
    echo "halda eval on $name: $n of $# references agree with llama.cpp"
}
evals arm64 $REFS
# the 32-bit build: its scalar kernels and 32-bit size_t on a few models
evals armhf stories260K-q4_k_m.once tiny-llama-q4_0.lily tiny-qwen2-q6_k.once tiny-llama-q8_0.once
# a KV cache over 4 GiB once wrapped around in a 32-bit size_t, got a small buffer and crashed:
# now it is refused with a reason
if [ -x "$B/halda-armhf" ]; then
    emu armhf "$B/halda-armhf" eval -m "$SHARED/models/tiny-llama-q4_0.gguf" -p hi -n 1 -c 16000000 >"$B/big.out" 2>&1; rc=$?
    if [ $rc -eq 1 ] && grep -q "KV cache does not fit in this machine's address space" "$B/big.out"; then ok
    else bad "armhf: a 45 GiB KV cache should be refused (exit $rc): $(tail -c 300 "$B/big.out")"; fi
fi
finish
