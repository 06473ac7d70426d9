/* docsource.h — the documents llm-tokenize reads: text files, JSON lines,
 * directories, archives and stdin, one document at a time.
 *
 *   llm_docsrc *s;
 *   if (llm_docsrc_open(&s, paths, npaths, &opts, &err)) die(err.msg);
 *   llm_doc d;
 *   int r;
 *   while ((r = llm_docsrc_next(s, &d, &err)) == 1) use(d.text, d.len, d.origin);
 *   if (r < 0) die(err.msg);
 *   llm_docsrc_close(s);
 *
 * What a path is read as:
 *   "-" (or no paths at all)  stdin, read like any other file below (so
 *                       `zcat x.tar.gz |` and `cat x.tar.gz |` both work); with
 *                       opts.jsonl_stdin it is JSON lines instead. Its origin is
 *                       "<stdin>".
 *   NAME.jsonl          JSON lines (by name, any case of ".jsonl"): one document
 *                       per non-blank line, the string field opts.field
 *                       (default "text") of a JSON object. Blank lines (only
 *                       spaces, tabs, CR) are skipped silently but still counted
 *                       in line numbers; a UTF-8 BOM before line 1 is ignored.
 *   a directory         walked recursively, the entries of each directory in
 *                       byte order (strcmp) and subdirectories visited where
 *                       they sort, so runs are deterministic. Hidden files are
 *                       read; entries named ".git" are not. Symbolic links to
 *                       files are followed, symbolic links to directories are
 *                       not (so a symlink cannot make a loop); a dangling link
 *                       is an error; FIFOs, sockets and devices inside a walked
 *                       directory are skipped. A directory that is its own
 *                       ancestor (bind mounts) is an error. Paths named on the
 *                       command line are followed even when they are symlinks.
 *   an archive          recognised by content, not name: tar (ustar, pax, GNU),
 *                       zip, 7-Zip, cpio, ar, ISO 9660, RAR, xar, cab, LHA, WARC,
 *                       each optionally compressed (gzip, bzip2, xz, lzma, lzip,
 *                       zstd, lz4, compress). Each regular-file member, in
 *                       archive order, is one document; a member whose name ends
 *                       in ".jsonl" is read as JSON lines. Directories, links
 *                       (hard links repeat an earlier member), and members with
 *                       a ".git" or "__MACOSX" path component are skipped.
 *                       Archives inside archives are not opened (such a member
 *                       is just a bad text document). Detection uses
 *                       archive_read_support_format_all()'s list less "mtree"
 *                       and "empty", and never "raw": raw and empty would take
 *                       any file (an empty text file must stay one empty
 *                       document), and mtree both bids on ordinary text
 *                       ("README type=file") and reads the files its content
 *                       names. The filters are the decompressors above (no
 *                       "uu", which would decode a uuencoded block quoted in a
 *                       text). A cpio, ar, WARC or LHA bid (their magic is
 *                       printable) whose first header does not parse means
 *                       plain text after all.
 *   a compressed file   (gzip, xz, zstd, … of something that is not an archive)
 *                       is decompressed: "x.jsonl.zst" is JSON lines, "x.txt.gz"
 *                       one text document; compressed empty input is one empty
 *                       document (no lines for JSONL). A compressed file whose
 *                       name says tar ("x.tar.gz", ".tgz", ".tbz2", ".txz",
 *                       ".tzst") but whose content is not a readable archive is
 *                       an error. (libarchive 3.6 does not notice a truncated
 *                       zstd stream; gzip, xz and bzip2 truncation it does.)
 *   anything else       one plain text document: the whole file, byte for byte
 *                       (mmap for regular files; no BOM or CRLF rewriting). An
 *                       empty file is one empty document.
 *
 * Text rules: every document must be valid UTF-8 (no overlongs, surrogates or
 * code points above U+10FFFF) and must not contain NUL (U+0000): a NUL is what a
 * UTF-16 or binary file looks like, and a NUL in text would be cut short by any
 * C-string consumer. For JSON lines jansson already guarantees valid UTF-8; a
 * "\u0000" in the text field is an error, and with keep_json a "\u0000" in any
 * string of the object is an error (callers then read C strings).
 *
 * Errors are one line naming the file and the line or member:
 *   "f.txt: No such file or directory"          (missing: found by open, up front)
 *   "f.txt: invalid UTF-8 at byte 123"          (byte offsets count from 0)
 *   "f.txt: NUL byte at byte 8"
 *   "f.jsonl:7: invalid JSON: <jansson's message>"
 *   "f.jsonl:3: not a JSON object"
 *   "f.jsonl:3: no string field 'text'"
 *   "f.jsonl:3: field 'text' contains U+0000"
 *   "f.jsonl:3: line longer than N bytes"
 *   "f.txt: document of N bytes is larger than the limit of M bytes"
 *   "a.tar.gz: member 'x.txt': invalid UTF-8 at byte 5"
 *   "a.tar.gz: member 'x.jsonl': line 4: no string field 'text'"
 *   "a.tar.gz: member 'x.txt': <libarchive's message, e.g. truncated gzip input>"
 *   "a.zip: member 'x.txt': ZIP bad CRC: ..."   (a bad member: skippable)
 *   "a.tar.gz: after member 'x.txt': <libarchive's message>"   (corrupt headers)
 *   "d/sub: directory loop (same directory as 'd')"
 * Bad documents — a bad JSON line, a text document that is not valid UTF-8 or
 * is too large, a member libarchive cannot extract (encrypted, unsupported
 * method) — are skipped and counted when opts.skip_bad is set. Missing or
 * unreadable files, directory loops, and corrupt or truncated archive
 * structure always fail. After llm_docsrc_next() fails, the source stays
 * failed: further calls return -1 with the same message.
 *
 * Memory is bounded by one document (or one JSON line) plus libarchive's
 * buffers and one directory listing per directory level, never the corpus. */
#ifndef LLMUX_DOCSOURCE_H
#define LLMUX_DOCSOURCE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

typedef struct {
    int jsonl_stdin;        /* stdin ("-" or no paths) is JSON lines, not detected */
    const char *field;      /* JSONL text field; NULL means "text" */
    int keep_json;          /* hand out the parsed object in llm_doc.json; the field
                               may then be absent or not a string (text NULL, len 0) */
    int skip_bad;           /* skip and count bad documents instead of failing */
    size_t max_doc_bytes;   /* largest document or JSON line; 0 means 1 GiB */
    int binary;             /* text documents (not JSONL) may hold any bytes: no
                               UTF-8 or NUL check (llm-tokenize --bytes) */
    /* Optional, with skip_bad: called with the message of each skipped
       document (the one it would have failed with), e.g. to print
       "warning: f.jsonl:7: invalid JSON: ..., skipped". */
    void (*on_skip)(void *ctx, const char *msg);
    void *on_skip_ctx;
} llm_docsrc_opts;

typedef struct {
    const char *text;       /* the document's bytes, valid UTF-8 without NUL; not
                               NUL-terminated (files are mapped); NULL only for
                               keep_json lines without a string field */
    size_t len;             /* bytes in text */
    const char *origin;     /* "path", "path:LINE", "archive:member" or
                               "archive:member:LINE" (LINE counts from 1);
                               stdin is "<stdin>" */
    json_t *json;           /* the parsed JSONL object when keep_json, else NULL;
                               owned by the source (json_incref to keep it) */
    uint64_t index;         /* 0, 1, 2… over the documents handed out (skipped
                               ones take no index) */
} llm_doc;
/* Everything an llm_doc points to is owned by the source and valid until the
 * next llm_docsrc_next() or llm_docsrc_close(). */

typedef struct llm_docsrc llm_docsrc;

/* Opens a source over paths[0..npaths) (npaths 0: stdin). Checks up front
 * that every path exists; opts may be NULL for the defaults. The paths are
 * copied. Returns 0 or -1 with err set. */
int llm_docsrc_open(llm_docsrc **out, const char *const *paths, size_t npaths,
                    const llm_docsrc_opts *opts, llm_err *err);

/* The next document: 1 and *doc filled, 0 at the end, -1 on error. */
int llm_docsrc_next(llm_docsrc *s, llm_doc *doc, llm_err *err);

/* Bad documents skipped so far (skip_bad). */
uint64_t llm_docsrc_skipped(const llm_docsrc *s);

/* Closes files and frees everything; NULL is fine. Never closes fd 0. */
void llm_docsrc_close(llm_docsrc *s);

#endif
