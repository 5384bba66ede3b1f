# tests/lib.sh — what the shell tests share.  Source it after setting H (the halda binary) and
# T (a scratch folder).  Counts checks in pass/fail/skip; each script prints its own
# "RESULT name passed=N failed=M skipped=K" line at the end.
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...: passes when the command succeeds
    d=$1; shift
    if "$@"; then ok; else bad "$d"; fi
}
# expect_exit_in CODE PATTERN STDIN -- ARGS: with STDIN as its input, halda exits with CODE and
# prints exactly one stderr line, matching PATTERN
expect_exit_in() {
    code=$1 pat=$2 in=$3; shift 4
    { printf '%s' "$in" 2>/dev/null; } | "$H" "$@" >"$T/x.out" 2>"$T/x.err"; rc=$?
    if [ "$rc" -eq "$code" ] && [ "$(wc -l <"$T/x.err")" -eq 1 ] && grep -q -e "$pat" "$T/x.err"; then ok
    else bad "halda $* -> exit $rc (want $code), stderr: $(head -c 300 "$T/x.err")"; fi
}
# expect_exit CODE PATTERN -- ARGS: the same with empty input
expect_exit() {
    code=$1 pat=$2; shift 3
    expect_exit_in "$code" "$pat" "" -- "$@"
}
