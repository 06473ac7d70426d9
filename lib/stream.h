/* stream.h — llmux record streams: msgpack over a file descriptor.
 *
 * A stream is a sequence of msgpack maps with string keys, each carrying a
 * string "type" (see llm-stream(5)):
 *   {"type":"header","format":"llmux-stream","version":1,"kind":K,"token_width":4|2,...}
 *   records...                      e.g. {"type":"doc","tokens":<bin>,...}
 *   {"type":"end","records":N}      N = number of records between header and end
 * then end of file. A stream without its end record, with a record cut short,
 * with bytes that are not msgpack, or with a record larger than the reader's
 * limit is an error that names the byte offset of the record.
 *
 * Tokens travel as `bin` of little-endian u32 (or u16 when token_width is 2).
 * The bytes of a `bin` are not aligned: decode with llm_sr_tokens, never cast. */
#ifndef LLMUX_STREAM_H
#define LLMUX_STREAM_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LLM_STREAM_FORMAT "llmux-stream"
#define LLM_STREAM_VERSION 1
#define LLM_STREAM_MAX_RECORD_DEFAULT (64u << 20)   /* 16M u32 tokens */

/* ---- reading ---- */
typedef struct llm_stream_reader llm_stream_reader;

/* Reads and checks the header record. max_record 0 means the default. */
int llm_sr_open(llm_stream_reader **out, int fd, const char *name, size_t max_record, llm_err *err);
/* The same, for a caller that already read the first `n` bytes of fd (to
 * sniff the format): they are read as if still in the file. */
int llm_sr_open_prefixed(llm_stream_reader **out, int fd, const char *name, size_t max_record, const void *prefix,
                         size_t n, llm_err *err);
void llm_sr_close(llm_stream_reader *r);   /* does not close fd */

/* The header (a map), valid until llm_sr_close. */
const msgpack_object *llm_sr_header(const llm_stream_reader *r);
int llm_sr_token_width(const llm_stream_reader *r);   /* 2 or 4 */
const char *llm_sr_kind(const llm_stream_reader *r);
/* 1 when a bin field named `key` holds tokens (header "token_fields", default ["tokens"]). */
int llm_sr_is_token_field(const llm_stream_reader *r, const char *key, size_t keylen);

/* Next record: 1 and *rec (valid until the next call), 0 at a clean end (the
 * end record, its count checked, then end of file), -1 on error. */
int llm_sr_next(llm_stream_reader *r, const msgpack_object **rec, llm_err *err);
/* After llm_sr_next returned 0: the end record as read (a map), valid until
 * llm_sr_close; NULL before. */
const msgpack_object *llm_sr_end(const llm_stream_reader *r);
/* Byte offset of the record most recently returned (or being read). */
uint64_t llm_sr_offset(const llm_stream_reader *r);
uint64_t llm_sr_records(const llm_stream_reader *r);  /* records returned so far */
/* The byte offset in the stream of p, a pointer into the record most
 * recently returned (a bin's bytes, say), or UINT64_MAX when p is not in it:
 * how a reader finds a field again in a mapped file. */
uint64_t llm_sr_data_offset(const llm_stream_reader *r, const void *p);

/* Field access on a record or header map; NULL / -1 when absent or mistyped. */
const msgpack_object *llm_mp_get(const msgpack_object *map, const char *key);
int llm_mp_str_eq(const msgpack_object *o, const char *s);
int llm_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out);

/* Decodes the bin field `key` of rec as tokens into a buffer that grows as
 * needed (*ids, *cap: malloc'd, reusable across calls); sets *n. Errors name
 * the record's offset and the field. */
int llm_sr_tokens(const llm_stream_reader *r, const msgpack_object *rec, const char *key,
                  uint32_t **ids, size_t *cap, size_t *n, llm_err *err);

/* ---- writing ---- */
typedef struct llm_stream_writer llm_stream_writer;

int llm_sw_open(llm_stream_writer **out, int fd, const char *name, llm_err *err);
/* Writes the header: type, format, version, kind, token_width, then exactly
 * `nextra` more key/value pairs written with the llm_sw_kv_* calls. */
int llm_sw_header(llm_stream_writer *w, const char *kind, int token_width, size_t nextra);
/* Starts a record of the given type with exactly `nfields` more key/value pairs. */
int llm_sw_record(llm_stream_writer *w, const char *type, size_t nfields);
int llm_sw_kv_str(llm_stream_writer *w, const char *key, const char *value);
int llm_sw_kv_u64(llm_stream_writer *w, const char *key, uint64_t value);
int llm_sw_kv_i64(llm_stream_writer *w, const char *key, int64_t value);
int llm_sw_kv_f64(llm_stream_writer *w, const char *key, double value);
int llm_sw_kv_bin(llm_stream_writer *w, const char *key, const void *data, size_t n);
/* Tokens as little-endian token_width-byte integers; an id that does not fit
 * a 2-byte width is an error. */
int llm_sw_kv_tokens(llm_stream_writer *w, const char *key, const uint32_t *ids, size_t n);
/* For values the helpers above do not cover: pack the key and the value with
 * msgpack_pack_* on this packer, then call llm_sw_kv_done. */
msgpack_packer *llm_sw_packer(llm_stream_writer *w);
int llm_sw_kv_done(llm_stream_writer *w);
/* Writes the end record and flushes. Returns -1 with the first error that any
 * earlier call met (write failures included). */
int llm_sw_finish(llm_stream_writer *w, llm_err *err);
void llm_sw_free(llm_stream_writer *w);

#endif
