/* msgpack_frame.h — finds where one msgpack object ends without building it.
 *
 * The stream reader uses this to know a record's exact size before handing
 * it to msgpack-c: so a record larger than the limit is refused before it is
 * buffered, a cut-off record is told apart from garbage, and no declared
 * length or element count can make msgpack-c allocate more than the record's
 * own size allows. */
#ifndef LLMUX_MSGPACK_FRAME_H
#define LLMUX_MSGPACK_FRAME_H

#include <stddef.h>

typedef enum {
    LLM_MP_COMPLETE,    /* *len = size of the object */
    LLM_MP_NEED_MORE,   /* the object continues past n; *len = bytes known to be needed (> n) */
    LLM_MP_TOO_BIG,     /* the object is (or declares itself) larger than limit */
    LLM_MP_INVALID,     /* byte 0xc1 (never used) at *len */
} llm_mp_frame_status;

llm_mp_frame_status llm_mp_frame(const unsigned char *p, size_t n, size_t limit, size_t *len);

#endif
