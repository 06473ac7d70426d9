#!/usr/bin/env python3
r"""Generates lib/unicode_tables.h: the Unicode classes that the pre-tokenizer
scanners (lib/pretok.c) need, as a two-stage lookup of one flag byte per code
point.

    ~/.cache/llmux/venv/bin/python scripts/gen-unicode-tables.py -o lib/unicode_tables.h

Unicode version: 16.0.0, the version of the tables in the Rust regex crate
(regex-syntax) that tiktoken 0.14 is built with.  Evidence (November 2026, with
tiktoken 0.14.0 from ~/.cache/llmux/venv): an Encoding whose vocabulary holds
the 256 bytes and every substring of "X" + ch + "X" (so that one regex piece
always becomes exactly one token and the token count shows whether the piece
matched), with pat_str r"X\p{C}X|[\s\S]" for C in L, Lu, Ll, Lt, Lm, Lo, M,
N, was run on all 23,624 code points whose general category differs between
any two of Unicode 15.0, 16.0, 17.0 and 18.0 (unicodedata2 of those versions),
plus 20,000 random code points:
  - 16.0.0: 0 disagreements out of 345,560 (code point, class) pairs;
  - 15.0.0: 9,979 disagreements (e.g. U+1C89, new in 16.0, is \p{L});
  - 17.0.0: 9,345 (e.g. U+088F, U+0C5C, U+A7CE, new in 17.0, are not \p{L});
  - 18.0.0: 34,705.
\s, probed the same way, is exactly Unicode White_Space (U+0009-000D, 0020,
0085, 00A0, 1680, 2000-200A, 2028, 2029, 202F, 205F, 3000): not U+180E,
U+200B, U+FEFF, U+001C-001F.  White_Space is not in unicodedata, so that list
(PropList.txt, unchanged since Unicode 6.3) is written out below.
With these tables the scanners split 15,000 random strings (ASCII, many
scripts, marks, Unicode spaces, U+180E, characters new in 15.0 and 16.0 and
17.0) exactly as tiktoken 0.14 does, under each of the eight pattern spellings
they serve, the same vocabulary trick showing tiktoken's pieces.

The generator also lists the code points whose flags differ between Unicode
14.0 and 16.0. PCRE2 10.42 (Debian 12's), which the unit tests use as the
oracle, has Unicode 14.0 tables (its Unicode 15.0 additions such as U+0CF3 are
unassigned there), so the tests leave those code points out of random inputs;
a newer PCRE2 differs on fewer of them.

unicodedata2 of the needed versions is installed on demand, with the running
Python's pip, into --ucd-dir (default ~/.cache/llmux/ucd/VERSION), unless the
running Python's own unicodedata is that version.
"""

import argparse
import importlib.util
import os
import subprocess
import sys

VERSION = "16.0.0"
PCRE2_VERSION = "14.0.0"

WHITE_SPACE = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000]

# flag bits, as in lib/unicode.h
L, N, S, M, UP, LO = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def find_module(path):
    if os.path.isdir(path):
        for f in sorted(os.listdir(path)):
            if f.startswith("unicodedata2") and f.endswith(".so"):
                return os.path.join(path, f)
    return None


def load_ucd(version, ucd_dir):
    import unicodedata
    if unicodedata.unidata_version == version:  # Python 3.11's is 14.0.0 (unicodedata2 14 has no wheel for it)
        return unicodedata
    path = os.path.join(ucd_dir, version)
    if find_module(path) is None:
        os.makedirs(path, exist_ok=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--target", path,
                               "unicodedata2==" + version], stdout=sys.stderr)
    so = find_module(path)
    if so is None:
        sys.exit(f"gen-unicode-tables: no unicodedata2 extension module under {path}")
    spec = importlib.util.spec_from_file_location("unicodedata2", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if mod.unidata_version != version:
        sys.exit(f"gen-unicode-tables: {so}: Unicode {mod.unidata_version}, want {version}")
    return mod


def flags_of(ucd):
    ws = set(WHITE_SPACE)
    out = bytearray(0x110000)
    for cp in range(0x110000):
        gc = ucd.category(chr(cp))
        f = 0
        if gc[0] == "L": f |= L
        if gc[0] == "N": f |= N
        if gc[0] == "M": f |= M
        if gc in ("Lu", "Lt", "Lm", "Lo") or gc[0] == "M": f |= UP
        if gc in ("Ll", "Lm", "Lo") or gc[0] == "M": f |= LO
        if cp in ws: f |= S
        out[cp] = f
    return out


def two_stage(flags):
    best = None
    for shift in range(4, 11):
        size = 1 << shift
        blocks, index = {}, []
        for b in range(0x110000 >> shift):
            blk = bytes(flags[b << shift:(b + 1) << shift])
            index.append(blocks.setdefault(blk, len(blocks)))
        isz = 1 if len(blocks) <= 256 else 2
        total = len(index) * isz + len(blocks) * size
        if best is None or total < best[0]:
            best = (total, shift, index, list(blocks), isz)
    return best


def ranges(cps):
    out = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def c_array(ctype, name, values, per_line=16, fmt="{}"):
    lines = [f"const {ctype} {name}[{len(values)}] = {{"]
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(fmt.format(v) for v in values[i:i + per_line]) + ",")
    lines.append("};")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ucd-dir", default=os.path.expanduser("~/.cache/llmux/ucd"))
    ap.add_argument("-o", "--output", help="write here (through a temporary file) instead of to stdout")
    args = ap.parse_args()
    flags = flags_of(load_ucd(VERSION, args.ucd_dir))
    for cp in WHITE_SPACE:  # White_Space code points are all assigned Zs/Zl/Zp/Cc
        assert flags[cp] == S, hex(cp)
    old = flags_of(load_ucd(PCRE2_VERSION, args.ucd_dir))
    changed = ranges([cp for cp in range(0x110000) if flags[cp] != old[cp]])

    total, shift, index, blocks, isz = two_stage(flags)
    stage2 = [v for blk in blocks for v in blk]
    out = [
        "/* unicode_tables.h — generated by scripts/gen-unicode-tables.py; do not edit.",
        f" * Unicode {VERSION} (as tiktoken 0.14's regex engine; the evidence is in the",
        " * generator's header). One flag byte per code point (LLM_UC_* in unicode.h),",
        f" * two-stage lookup: {len(index)} x {isz}-byte block indexes, {len(blocks)} blocks of",
        f" * {1 << shift} bytes, {total} bytes in all. Included by lib/unicode.c only;",
        " * declared in unicode.h. */",
        "",
        f'#define LLM_UC_TABLE_VERSION "{VERSION}"',
        f"#define LLM_UC_TABLE_SHIFT {shift}",
        f"#define LLM_UC_TABLE_STAGE1_BYTES {isz}",
        "",
        c_array("uint8_t" if isz == 1 else "uint16_t", "llm_uc_stage1", index, 32),
        "",
        c_array("uint8_t", "llm_uc_stage2", stage2, 32, "0x{:02x}"),
        "",
        f"/* Code point ranges [first, last] whose flags differ between Unicode {PCRE2_VERSION} and {VERSION}. */",
        f'const char llm_uc_changed_since[] = "{PCRE2_VERSION}";',
        c_array("uint32_t", "llm_uc_changed", [v for r in changed for v in r], 8, "0x{:05x}"),
        f"const size_t llm_uc_n_changed = {len(changed)};",
        "",
    ]
    text = "\n".join(out)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
