#!/usr/bin/env python3
"""Generate halda.c's Unicode tables (section 8, "Unicode tables").

Usage:  python3 tools/gen_unicode.py halda.c      rewrites the block between the markers
        python3 tools/gen_unicode.py              prints the block

The data comes from Python's unicodedata module, so the Unicode version is the one this Python
was built with (printed into the block).  What is generated:

  * unicode_class_table: the whole code space U+0000..U+10FFFF cut into runs of one general
    category class (L letter, M mark, N number, P punctuation, S symbol, Z separator, C other:
    control, format, surrogate, private use and unassigned).  Each entry packs the first code
    point of a run and its class as (first << 3) | class; a run ends where the next begins.
  * unicode_space_table: the White_Space property (PropList.txt), i.e. what \\s matches in the
    Oniguruma regexes of Hugging Face tokenizers.  unicodedata has no PropList, but
    str.isspace() is White_Space plus U+001C..U+001F (Python counts the information
    separators as space), so those four are taken out.
  * The explicit character classes of the deepseek-llm pre-tokenizer, copied verbatim from its
    published regexes (tokenizer.json of deepseek-llm-7b) and expanded into sorted ranges.
"""
import sys
import unicodedata

CLASSES = "CLMNPSZ"  # index = the UC_* value in halda.c

# The deepseek-llm pre-tokenizer's bracket expressions, verbatim (without the [ ] and the +).
# Written with escapes: six of them (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) have singleton
# canonical decompositions, and a tool that normalises text to NFC would silently change them.
DS_LETTERS = ("\u0041-\u005a\u0061-\u007a\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf"
              "\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386"
              "\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556"
              "\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b"
              "\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
              "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
              "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4"
              "\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128"
              "\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184"
              "\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b"
              "\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
              "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
              "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
              "\U0001e900-\U0001e943")
DS_PUNCT = "!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002"
DS_CJK = "\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff"


def bracket_ranges(expr):
    """Expand a regex bracket expression made of single characters and a-b ranges."""
    out, i = [], 0
    while i < len(expr):
        if i + 2 < len(expr) and expr[i + 1] == "-":
            out.append((ord(expr[i]), ord(expr[i + 2])))
            i += 3
        else:
            out.append((ord(expr[i]), ord(expr[i])))
            i += 1
    out.sort()
    merged = []
    for a, b in out:  # merge touching or overlapping ranges
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def class_runs():
    runs, prev = [], None
    for cp in range(0x110000):
        c = CLASSES.index(unicodedata.category(chr(cp))[0])
        if c != prev:
            runs.append((cp, c))
            prev = c
    return runs


def c_array(decl, values, per_line, fmt):
    lines = [decl + " = {"]
    for i in range(0, len(values), per_line):
        lines.append("    " + " ".join(fmt(v) + "," for v in values[i:i + per_line]))
    lines.append("};")
    return "\n".join(lines)


def generate():
    runs = class_runs()
    spaces = [cp for cp in range(0x110000) if chr(cp).isspace() and not 0x1C <= cp <= 0x1F]
    pairs = lambda r: "{0x%04X, 0x%04X}" % r
    out = [
        "/* BEGIN GENERATED UNICODE TABLES: tools/gen_unicode.py, Unicode %s (Python %s).  Do not edit by"
        % (unicodedata.unidata_version, sys.version.split()[0]),
        " * hand; regenerate with `python3 tools/gen_unicode.py halda.c`. */",
        "",
        "/* %d runs: (first code point << 3) | UC_* class, ascending; a run ends where the next begins. */"
        % len(runs),
        c_array("static const uint32_t unicode_class_table[%d]" % len(runs),
                [(cp << 3) | c for cp, c in runs], 8, lambda v: "0x%08X" % v),
        "",
        "/* The classes of U+0000..U+007F, to skip the search for ASCII. */",
        c_array("static const uint8_t unicode_ascii_class[128]",
                [CLASSES.index(unicodedata.category(chr(cp))[0]) for cp in range(128)], 32, lambda v: "%d" % v),
        "",
        "/* White_Space (PropList.txt): what \\s matches. */",
        c_array("static const uint32_t unicode_space_table[%d]" % len(spaces), spaces, 10,
                lambda v: "0x%04X" % v),
        "",
        "/* deepseek-llm's explicit classes, inclusive ranges, ascending. */",
    ]
    for name, expr in (("ds_letter", DS_LETTERS), ("ds_punct", DS_PUNCT), ("ds_cjk", DS_CJK)):
        r = bracket_ranges(expr)
        out.append(c_array("static const uint32_t %s_ranges[%d][2]" % (name, len(r)), r, 5, pairs))
    ascii_bits = [sum(1 << k for k, expr in enumerate((DS_LETTERS, DS_PUNCT, DS_CJK))
                      if any(a <= cp <= b for a, b in bracket_ranges(expr))) for cp in range(128)]
    out.append("/* The same classes for U+0000..U+007F, to skip the search: bit 0 letter, 1 punct., 2 CJK. */")
    out.append(c_array("static const uint8_t ds_ascii[128]", ascii_bits, 32, lambda v: "%d" % v))
    out.append("/* END GENERATED UNICODE TABLES */")
    return "\n".join(out) + "\n"


def main():
    block = generate()
    if len(sys.argv) < 2:
        sys.stdout.write(block)
        return
    path = sys.argv[1]
    src = open(path, encoding="utf-8").read()
    begin = src.index("/* BEGIN GENERATED UNICODE TABLES")
    end = src.index("/* END GENERATED UNICODE TABLES */")
    end = src.index("\n", end) + 1
    open(path, "w", encoding="utf-8").write(src[:begin] + block + src[end:])


if __name__ == "__main__":
    main()
