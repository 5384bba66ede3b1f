/* tests/test.h — the tiny test harness every C test program shares.
 *
 * A test program includes "../halda.c" (with HALDA_NO_MAIN) to reach the internals, then this
 * file, and calls CHECK / SKIP as it goes.  It ends with `return test_summary("name");`, which
 * prints one machine-readable line
 *
 *     RESULT name passed=N failed=M skipped=K
 *
 * that tests/run.sh adds up into the suite's closing line `N passed, N failed, N skipped`.
 * A failing CHECK prints the file, line and a formatted reason, and the program keeps going so
 * one run reports every failure.
 */
#ifndef HALDA_TEST_H
#define HALDA_TEST_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed, test_failed, test_skipped;

static void test_report(int ok, const char *file, int line, const char *fmt, ...)
{
    if (ok) { test_passed++; return; }
    test_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* CHECK(condition, printf-style reason): one assertion, counted as one passed or failed test. */
#define CHECK(cond, ...) test_report(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* SKIP(printf-style reason): a test that cannot run here (say why), counted as skipped. */
static void test_skip(const char *fmt, ...)
{
    test_skipped++;
    fprintf(stderr, "SKIP: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
#define SKIP(...) test_skip(__VA_ARGS__)

/* Where ../shared is (tests run from the repository root); NULL when it is absent. */
static const char *test_shared_dir(void)
{
    static char path[4096];
    const char *env = getenv("HALDA_SHARED");
    snprintf(path, sizeof path, "%s", env && *env ? env : "../shared");
    FILE *f;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/models/README.md", path);
    if (!(f = fopen(probe, "r"))) return NULL;
    fclose(f);
    return path;
}

static int test_summary(const char *name)
{
    printf("RESULT %s passed=%d failed=%d skipped=%d\n", name, test_passed, test_failed, test_skipped);
    return test_failed ? 1 : 0;
}
#endif
