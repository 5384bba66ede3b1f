#!/bin/sh
# tests/test_profile.sh — `halda profile` as a user meets it: flags and errors, the instance
# lines (every key, every value a number), the cache (a second run is instant, --reprofile
# measures again), and the promise that profiling a new device takes under 10 seconds.
H=${HALDA_BIN:-./halda}
SHARED=${HALDA_SHARED:-../shared}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export XDG_CACHE_HOME="$T/cache" # never touch the user's own cache
. "$(dirname "$0")/lib.sh"
ms() { echo $(( $(date +%s%N) / 1000000 )); }

"$H" gen-model -o "$T/m.gguf" --layers 4 --embd 512 --ff 1024 --heads 8 --kv-heads 2 --vocab 4096 --type q8_0 --out-type q6_k
check "gen-model writes a model" test -s "$T/m.gguf"

# flags and errors
if "$H" profile --help | grep -q "usage: halda profile"; then ok; else bad "profile --help"; fi
if "$H" --help | grep -q "  profile "; then ok; else bad "halda --help lists profile"; fi
expect_exit 2 "unknown argument '--bogus'" -- profile --bogus
expect_exit 2 "cannot open model" -- profile -m "$T/missing.gguf"
expect_exit 2 "needs a value" -- profile --disk
expect_exit 2 "cannot read" -- profile --disk "$T/missing-dir"
expect_exit 2 "--kv-type takes" -- profile -m "$T/m.gguf" --kv-type q3
printf 'GGUF\003\000\000\000garbage' >"$T/bad.gguf"
expect_exit 1 "truncated" -- profile -m "$T/bad.gguf"
if [ -f "$SHARED/models/tiny-llama-q4_k_m.gguf" ]; then # mixed Q4_K / Q6_K layers
    if "$H" profile -m "$SHARED/models/tiny-llama-q4_k_m.gguf" 2>/dev/null | grep -q "^device "; then ok
    else bad "profile of a k-quant model prints no device line"; fi
else
    skip=$((skip + 1)); echo "SKIP: ../shared absent: the k-quant profile was not checked"
fi

# a new device: measured, under 10 seconds, with both instance lines
t0=$(ms)
"$H" profile -m "$T/m.gguf" >"$T/p1" 2>"$T/e1"
rc=$?
t1=$(ms)
check "profile exits 0 ($(cat "$T/e1"))" test $rc -eq 0
echo "profiling a new device took $((t1 - t0)) ms"
if [ -n "$HALDA_SANITIZE" ]; then skip=$((skip + 1)); echo "SKIP: no time limit under sanitizers"
else check "profiling a new device takes under 10 s ($((t1 - t0)) ms)" test $((t1 - t0)) -lt 10000; fi
check "the table says it measured" grep -q "(measured in" "$T/p1"
check "the table shows memory, disk, t_cpu and kappa" sh -c "grep -q '^  memory ' '$T/p1' && grep -q '^  disk .*sequential' '$T/p1' && grep -q '^  t_cpu ' '$T/p1' && grep -q '^  kappa ' '$T/p1'"
grep '^model ' "$T/p1" >"$T/model"
grep '^device ' "$T/p1" >"$T/device"
check "one model line" test "$(wc -l <"$T/model")" -eq 1
check "one device line" test "$(wc -l <"$T/device")" -eq 1
check "model line keys" grep -q '^model layers=4 layer_bytes=[0-9]* kv_bytes=[0-9]* kappa_ms=[0-9.e+-]*$' "$T/model"
check "device line keys" grep -q '^device name=[A-Za-z0-9._-]* os=\(linux\|android\|macos\) gpu=none t_cpu=[^ ]* t_gpu=0 t_comm=0 ram=[0-9]* vram=0 disk=[^ ]* fixed_ram=[0-9]* fixed_vram=0$' "$T/device"
# every value a positive number where it must be
check "t_cpu, ram, disk, fixed_ram and kappa are positive numbers" awk '
    FNR == 1 { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { exit (v["t_cpu"] + 0 > 0 && v["ram"] + 0 > 0 && v["disk"] + 0 > 0 && v["fixed_ram"] + 0 > 0 && v["kappa_ms"] + 0 > 0 && v["layer_bytes"] + 0 > 0) ? 0 : 1 }' "$T/model" "$T/device"
check "the cache file exists" sh -c "ls '$XDG_CACHE_HOME'/halda/profile-*.bin >/dev/null"

# a restart: from the cache, at once, with the same figures
t0=$(ms)
"$H" profile -m "$T/m.gguf" >"$T/p2" 2>&1
t1=$(ms)
check "the second run uses the cache" grep -q "from the cache" "$T/p2"
check "the second run is quick ($((t1 - t0)) ms)" test $((t1 - t0)) -lt 3000
check "the cached model line is the same" sh -c "grep '^model ' '$T/p2' | cmp -s - '$T/model'"
check "the cached t_cpu is the same" sh -c "test \"\$(grep '^device ' '$T/p2' | sed 's/.* t_cpu=\([^ ]*\).*/\1/')\" = \"\$(sed 's/.* t_cpu=\([^ ]*\).*/\1/' '$T/device')\""
"$H" profile -m "$T/m.gguf" --reprofile >"$T/p3" 2>&1
check "--reprofile measures again" grep -q "(measured in" "$T/p3"
"$H" profile -m "$T/m.gguf" -t 1 >"$T/p4" 2>&1
check "another thread count is measured" grep -q "(measured in" "$T/p4"
"$H" profile -m "$T/m.gguf" -c 64 --kv-type f32 >"$T/p5" 2>&1
check "kv_bytes follows -c and --kv-type (64 positions x 128 x 2 x f32 = 65536)" grep -q '^model .* kv_bytes=65536 ' "$T/p5"

# the device alone, and another file system
"$H" profile >"$T/p6" 2>&1
check "profile without a model exits 0" test $? -eq 0
check "without a model there are no instance lines" sh -c "! grep -q '^\(model\|device\) ' '$T/p6'"
"$H" profile --disk "$T" >"$T/p7" 2>&1
check "--disk times a folder's largest file" grep -q "^  disk .*m.gguf: sequential" "$T/p7"
echo "RESULT profile_cli passed=$pass failed=$fail skipped=$skip"
[ $fail -eq 0 ]
