#include "msgpack_frame.h"

#include <stdint.h>

static uint64_t be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = v << 8 | p[i];
    return v;
}

/* Walks the encoding with one counter of objects still to skip: a container
 * adds its children to it, so nesting needs no recursion. */
llm_mp_frame_status llm_mp_frame(const unsigned char *p, size_t n, size_t limit, size_t *len)
{
    uint64_t pos = 0, pending = 1;
    while (pending) {
        if (pos >= n) { *len = (size_t)pos + 1; return LLM_MP_NEED_MORE; }
        unsigned b = p[pos];
        uint64_t head = 1, body = 0, children = 0;
        int lenbytes = 0;   /* size of a big-endian length after the type byte */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if (b <= 0x8f) {
            children = 2 * (uint64_t)(b & 0x0f);
        } else if (b <= 0x9f) {
            children = b & 0x0f;
        } else if (b <= 0xbf) {
            body = b & 0x1f;
        } else if (b == 0xc1) {
            *len = (size_t)pos;
            return LLM_MP_INVALID;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: lenbytes = 1; break;           /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;           /* bin16, str16 */
            case 0xc6: case 0xdb: lenbytes = 4; break;           /* bin32, str32 */
            case 0xc7: lenbytes = 1; break;                      /* ext8: len, then type */
            case 0xc8: lenbytes = 2; break;
            case 0xc9: lenbytes = 4; break;
            case 0xca: head = 5; break;                          /* float32 */
            case 0xcb: head = 9; break;                          /* float64 */
            case 0xcc: case 0xd0: head = 2; break;
            case 0xcd: case 0xd1: head = 3; break;
            case 0xce: case 0xd2: head = 5; break;
            case 0xcf: case 0xd3: head = 9; break;
            case 0xd4: head = 3; break;                          /* fixext 1, 2, 4, 8, 16 */
            case 0xd5: head = 4; break;
            case 0xd6: head = 6; break;
            case 0xd7: head = 10; break;
            case 0xd8: head = 18; break;
            case 0xdc: case 0xde: lenbytes = 2; break;           /* array16, map16 */
            case 0xdd: case 0xdf: lenbytes = 4; break;           /* array32, map32 */
            }
            if (lenbytes) {
                head = 1 + (uint64_t)lenbytes + (b >= 0xc7 && b <= 0xc9);   /* ext has a type byte */
                if (pos + 1 + (uint64_t)lenbytes > n) { *len = (size_t)(pos + 1 + lenbytes); return LLM_MP_NEED_MORE; }
                uint64_t count = be(p + pos + 1, lenbytes);
                if (b == 0xdc || b == 0xdd) children = count;
                else if (b == 0xde || b == 0xdf) children = 2 * count;
                else body = count;
            }
        }
        pos += head + body;
        if (pos > limit) return LLM_MP_TOO_BIG;
        pending += children;
        pending--;
        /* every object takes at least one byte: more pending than room is a lie */
        if (pending > limit - pos) return LLM_MP_TOO_BIG;
    }
    *len = (size_t)pos;
    return pos > n ? LLM_MP_NEED_MORE : LLM_MP_COMPLETE;
}
