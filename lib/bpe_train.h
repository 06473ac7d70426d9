/* bpe_train.h — learning a byte-level BPE (GPT-2 style) from text, and
 * writing it as a Hugging Face tokenizer.json.
 *
 *   llm_bpe_trainer *t = llm_bpe_trainer_new(pretok);
 *   llm_bpe_trainer_add_text(t, text, n, &err);          // once per file / document
 *   llm_bpe_trainer_finish(t, 32000, specials, 1, pattern, &json, &err);
 *   llm_bpe_trainer_free(t);
 *
 * Counting: add_text splits the text with the pretokenizer and counts each
 * piece (a "word": its bytes) in a hash map. Large texts are split across
 * threads; pieces near each chunk start are re-synchronised with the
 * previous chunk's match chain, so the counts are exactly those of one
 * find-all pass over the whole text, whatever the thread count.
 *
 * Training is the algorithm of tokenizers' BpeTrainer: every word is its
 * bytes, pairs of adjacent symbols are counted over all words (weighted by
 * the word's count), and the most frequent pair is merged, again and again,
 * until the vocabulary has vocab_size entries or no pair is left. Pair
 * counts are updated incrementally, only in the words that hold the merged
 * pair (an index pair -> words, and a max-heap with lazy deletion).
 *
 * Ids, as BpeTrainer assigns them, so that ids and ties are comparable:
 *   0 .. nspecial-1   the special tokens, in the order given;
 *   then the 256 byte tokens, ordered by their character in GPT-2's byte-to-
 *                     unicode mapping ("!" .. "~", "¡" .. "¬", "®" .. "ÿ",
 *                     then "Ā" = byte 0 .. "Ń" = byte 173), i.e. GPT-2's order;
 *   then one token per merge, in the order learned.
 * Ties (equal counts) go to the pair with the smaller (left id, right id),
 * BpeTrainer's rule. vocab_size counts all of these; it is an error when it
 * is smaller than nspecial + 256. Training stops early (a smaller vocabulary)
 * when every word has become a single token. A merge whose concatenation is
 * already a token (another split of the same bytes) reuses that id, as
 * BpeTrainer does, so vocab entries stay unique.
 *
 * The tokenizer.json: added_tokens = the specials (special, not normalized);
 * pre_tokenizer = Sequence[Split(Regex pattern, Isolated), ByteLevel(
 * add_prefix_space false, use_regex false)]; post_processor null; decoder
 * ByteLevel; model BPE with vocab (strings in GPT-2's byte-to-unicode
 * mapping; specials as their text) and merges as [left, right] pairs — the
 * shape tokenizers 0.23 writes for the same training. */
#ifndef LLMUX_BPE_TRAIN_H
#define LLMUX_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "pretok.h"
#include "strbuf.h"

typedef struct llm_bpe_trainer llm_bpe_trainer;

/* p splits text into words; it must outlive the trainer. p may be NULL when
 * only llm_bpe_trainer_add_word is used. Returns NULL when out of memory. */
llm_bpe_trainer *llm_bpe_trainer_new(const llm_pretok *p);

/* Threads for add_text: at most `threads` (0: the online CPUs, at most 8),
 * and no chunk smaller than min_chunk bytes (0: 1 MiB). For tests. */
void llm_bpe_trainer_set_threads(llm_bpe_trainer *t, int threads, size_t min_chunk);

/* Pretokenizes text[0..n) and counts its words. text must be valid UTF-8
 * (checked: "invalid UTF-8 at byte N"). Texts of separate calls are
 * separate: no piece spans two calls. After a failure other than invalid
 * UTF-8 (out of memory) the counts are partial: free the trainer. */
int llm_bpe_trainer_add_text(llm_bpe_trainer *t, const char *text, size_t n, llm_err *err);

/* Counts one already split word `count` times (n >= 1 bytes, any bytes). */
int llm_bpe_trainer_add_word(llm_bpe_trainer *t, const void *word, size_t n, uint64_t count, llm_err *err);

/* Distinct words so far; *total (if not NULL) gets the count of all words. */
size_t llm_bpe_trainer_words(const llm_bpe_trainer *t, uint64_t *total);

/* Trains and appends the tokenizer.json to *tokenizer_json. specials:
 * nspecial distinct, non-empty UTF-8 strings. pattern: the Split regex text
 * written into the pre_tokenizer (that of the trainer's pretokenizer).
 * The trainer's counts are left as they were: finish may be called again. */
int llm_bpe_trainer_finish(llm_bpe_trainer *t, size_t vocab_size, const char *const *specials, size_t nspecial,
                           const char *pattern, llm_strbuf *tokenizer_json, llm_err *err);

/* After a successful finish: the vocabulary size and merge count learned. */
size_t llm_bpe_trainer_vocab_size(const llm_bpe_trainer *t);
size_t llm_bpe_trainer_merges(const llm_bpe_trainer *t);

void llm_bpe_trainer_free(llm_bpe_trainer *t);

#endif
