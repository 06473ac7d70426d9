/* test_unicode.c — llm_utf8_sanitized (lib/unicode.c): valid UTF-8 passes
 * unchanged; what is not becomes U+FFFD, one per maximal subpart, as
 * Unicode's "U+FFFD substitution of maximal subparts" (and Python's
 * bytes.decode(errors="replace")) give: the table's expected strings are
 * Python's. */
#include "unicode.h"
#include "unit.h"

#define R "\xef\xbf\xbd"

TEST(sanitized_as_python_replaces)
{
    static const struct { const char *in; size_t n; const char *want; } cases[] = {
        {"plain ascii", 11, "plain ascii"},
        {"\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"a\x80z", 3, "a" R "z"},                       /* a lone continuation byte */
        {"a\xe2\x82z", 4, "a" R "z"},                   /* a 3-byte sequence cut after 2: one */
        {"a\xe2\x82", 3, "a" R},                        /* cut at the end */
        {"\xf0\x9f\x98", 3, R},                         /* 4-byte cut after 3: one */
        {"\xc0\xaf", 2, R R},                           /* overlong lead: each byte */
        {"\xed\xa0\x80", 3, R R R},                     /* a surrogate: ED then two lone bytes */
        {"\xf4\x90\x80\x80", 4, R R R R},               /* above U+10FFFF */
        {"\xff\xfe", 2, R R},
        {"\xe0\x80\x80", 3, R R R},                     /* overlong 3-byte */
        {"x\xf0\x9f\x98\x80\xf0\x9f", 7, "x\xf0\x9f\x98\x80" R},
        {"\x00" "a", 2, "\x00" "a"},                       /* NUL is UTF-8 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        llm_strbuf b = {0};
        llm_utf8_sanitized(&b, cases[i].in, cases[i].n);
        size_t wl = cases[i].n && cases[i].in[0] == 0 ? 2 : strlen(cases[i].want);
        int ok = b.len == wl && !memcmp(b.data, cases[i].want, wl);
        if (!ok) printf("# case %zu: got %zu bytes, %02x %02x\n", i, b.len, b.len ? (unsigned char)b.data[0] : 0, b.len > 1 ? (unsigned char)b.data[1] : 0);
        CHECK(ok);
        llm_sb_free(&b);
    }
}

int main(void)
{
    RUN(sanitized_as_python_replaces);
    return unit_done();
}
