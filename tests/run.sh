#!/bin/sh
# The test runner: runs every test program in the folder given (default tests/bin) and every
# tests/test_*.sh script, adds up their "RESULT name passed=N failed=M skipped=K" lines, and
# ends with the line "N passed, N failed, N skipped".  A program that crashes or prints no
# RESULT line counts as one failure.
bindir=${1:-tests/bin}
export HALDA_BIN=${HALDA_BIN:-./halda}
pass=0 fail=0 skip=0
log=$(mktemp)
for t in "$bindir"/test_* tests/test_*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.sh) cmd="sh $t" ;; *) cmd="$t" ;; esac
    name=$(basename "$t")
    start=$(date +%s)
    $cmd >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    line=$(grep '^RESULT ' "$log" | tail -1)
    if [ -z "$line" ]; then
        echo "FAIL $name: crashed or printed no RESULT line (exit $rc); its output ends with:"
        tail -20 "$log" | sed 's/^/    /'
        fail=$((fail + 1))
        continue
    fi
    p=$(echo "$line" | sed 's/.*passed=\([0-9]*\).*/\1/')
    f=$(echo "$line" | sed 's/.*failed=\([0-9]*\).*/\1/')
    s=$(echo "$line" | sed 's/.*skipped=\([0-9]*\).*/\1/')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
    echo "$name: $p passed, $f failed, $s skipped (${secs}s)"
    if [ "$f" -gt 0 ]; then grep -E '^(FAIL|    )' "$log" | head -40 | sed 's/^/    /'; fi
    grep '^SKIP' "$log" | head -10 | sed 's/^/    /'
done
rm -f "$log"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
