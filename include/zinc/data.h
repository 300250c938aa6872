/* zinc — training data: llm.c token shards, memory-mapped, batched.
 *
 * Shard format (llm.c's dev/data/data_common.py), all little-endian:
 *
 *   int32 header[256]   header[0] = 20240520 (ZN_DATA_MAGIC, "gpt-2")
 *                                or 20240801 (ZN_DATA_MAGIC_U32, "llama-3")
 *                       header[1] = 1 (ZN_DATA_VERSION: uint16 tokens), or
 *                                   7 with the llama-3 magic (uint32 tokens)
 *                       header[2] = number of tokens N (1 .. 2^31-1)
 *                       header[3..255] = 0 when zinc writes them; ignored
 *   uint16 tokens[N]    (uint32 with the llama-3 magic)
 *
 * and nothing else: the file is exactly 1024 + 2 N (or 4 N) bytes.  zinc
 * prepare-data writes the uint16 kind; shards of both kinds may be mixed.
 *
 * Samples.  A batch of B rows of T tokens comes from one window of B*T+1
 * consecutive tokens w[0..B*T]: inputs[i] = w[i], targets[i] = w[i+1], both
 * (B, T) row-major.  Window k of a shard starts at token k*B*T, so a shard of
 * N tokens holds (N - 1) / (B*T) windows (neighbours share one token), as in
 * llm.c's DataLoader.  A shard shorter than one window is an error.  With
 * `world` ranks, the ranks take turns along one stream of windows (see
 * struct zn_data_options).
 *
 * Order.  With shuffle, each epoch visits the shards in a permutation drawn
 * from (seed, epoch) and, inside each shard, its windows in a permutation
 * drawn from (seed, epoch, shard); without, both are in order (shards in
 * glob(3)'s sorted order).  The order is a pure function of the seed and the
 * position, so a position saved with zn_data_tell and restored with
 * zn_data_seek gives exactly the batches the uninterrupted run would have.
 *
 * Validation.  Either a separate glob (open a second loader on it), or
 * `val_fraction`: the last ceil(f * windows) windows of every shard (at least
 * one window stays for training) form the validation split and the others
 * the training split; open one loader per split with the same pattern and
 * fraction.  The first validation window shares one token (the last
 * training target) with the training split.
 *
 * Loss mask (fine-tuning: no loss on the prompt).  A shard NAME.bin may
 * have a sidecar NAME.mask beside it (the name with ".bin" replaced, or
 * ".mask" appended when it does not end in ".bin"):
 *
 *   int32 header[256]   header[0] = 20240524 (ZN_DATA_MASK_MAGIC)
 *                       header[1] = 1        (ZN_DATA_MASK_VERSION: uint8)
 *                       header[2] = N, the shard's token count
 *   uint8 mask[N]       1: predicting token j counts in the loss; 0: not
 *
 * exactly 1024 + N bytes.  The token shard stays a plain llm.c shard (llm.c
 * trains on it ignoring the mask).  zn_data_next_batch writes target -1
 * (PyTorch's ignore_index) where mask[j] = 0; shards without a sidecar count
 * every target.  A mask value other than 0 or 1 is an error when served.
 *
 * Errors follow zinc's rule (0 or -errno, NULL + zn_last_error()); every
 * message names the file.  The shards are mapped read-only: a file truncated
 * by someone else while mapped can still fault (SIGBUS), as with any mmap.
 */
#ifndef ZINC_DATA_H
#define ZINC_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZN_DATA_MAGIC 20240520
#define ZN_DATA_VERSION 1
#define ZN_DATA_MAGIC_U32 20240801
#define ZN_DATA_VERSION_U32 7
#define ZN_DATA_HEADER_INTS 256
#define ZN_DATA_HEADER_BYTES (ZN_DATA_HEADER_INTS * 4)
#define ZN_DATA_MASK_MAGIC 20240524
#define ZN_DATA_MASK_VERSION 1

enum zn_data_split {
	ZN_DATA_ALL = 0, /* every window (val_fraction is ignored) */
	ZN_DATA_TRAIN,   /* the first windows of each shard */
	ZN_DATA_VAL,     /* the last ceil(val_fraction * windows) of each shard */
};

struct zn_data_options {
	const char *pattern;     /* glob(3) pattern of shard files */
	uint32_t B, T;           /* batch rows, tokens per row; B*T < 2^31 */
	uint64_t seed;           /* shuffle seed */
	bool shuffle;            /* false: shards and windows in order */
	uint32_t vocab_size;     /* tokens must be < this; 0: not checked */
	double val_fraction;     /* [0, 1): see "Validation" above */
	enum zn_data_split split;
	/* Data parallelism, as torch's DistributedSampler: every rank walks
	 * the same stream of windows (the one a single rank reads), in rounds
	 * of `world` windows, rank r taking the r-th of each round.  So W ranks
	 * with accumulation A see, step for step, the windows one rank sees
	 * with accumulation W*A, and a position (which names the next round)
	 * means the same on any number of ranks.  world 0 means 1. */
	uint32_t rank, world;
};

/* A position in the stream: small, fixed-size, safe to store in a
 * checkpoint as bytes.  Its fields are private; `fingerprint` ties it to the
 * data set and options it came from (shard sizes, B, T, seed, shuffle,
 * split), not to the rank or world size: all ranks share one position, and
 * it resumes on another number of ranks. */
#define ZN_DATA_POS_MAGIC 0x736f706eu /* "npos" */
#define ZN_DATA_POS_VERSION 1
struct zn_data_pos {
	uint32_t magic;
	uint32_t version;
	uint64_t fingerprint;
	uint64_t epoch;
	uint64_t shard;  /* index into this epoch's shard order */
	uint64_t window; /* index into that shard's window order: next to serve */
};

struct zn_data;

/* Find, check and map every shard.  Checks, each failing with a message
 * naming the file: no match, unreadable, not an llm.c token shard (bad
 * magic), unsupported version, token count not matching the file size,
 * shard shorter than one window, no window in the asked split, and the same
 * for a loss-mask sidecar (magic, version, token count, size), and every
 * token against vocab_size (uint32 tokens without one against 2^31),
 * naming the shard and the token's index: each shard is read once here.
 * NULL on failure. */
ZN_API struct zn_data *zn_data_open(const struct zn_data_options *opt);
ZN_API void zn_data_close(struct zn_data *d);

/* The next batch: inputs and targets (B, T) as int32; targets are -1 where
 * the shard's loss mask excludes them.  Advances the position, moving to
 * the next shard and epoch as needed.  Returns 0, or -ERANGE for a token
 * >= vocab_size (or >= 2^31 in a uint32 shard) or a mask value > 1 (naming
 * file and index; the position is not advanced). */
ZN_API int zn_data_next_batch(struct zn_data *d, int32_t *inputs, int32_t *targets);
/* The same, as the raw window of B*T+1 uint16 tokens (inputs are
 * window[0..B*T-1], targets window[1..B*T]); the loss mask is not applied.
 * -ERANGE for a uint32 token above 65535 (use zn_data_next_batch). */
ZN_API int zn_data_next_window(struct zn_data *d, uint16_t *window);

/* Save / restore the position.  zn_data_seek returns -EINVAL when the
 * position is damaged or was taken on another data set or with other
 * options (the message says which). */
ZN_API void zn_data_tell(const struct zn_data *d, struct zn_data_pos *pos);
ZN_API int zn_data_seek(struct zn_data *d, const struct zn_data_pos *pos);
/* Back to epoch 0, first batch (e.g. before each validation pass). */
ZN_API void zn_data_rewind(struct zn_data *d);

/* Completed passes over the split: 0 until the first epoch's last batch was served. */
ZN_API uint64_t zn_data_epoch(const struct zn_data *d);
/* Windows in one epoch of this split (all ranks together: each of `world`
 * ranks serves about this / world of them), shards, tokens in all shards,
 * and shards that have a loss-mask sidecar. */
ZN_API uint64_t zn_data_batches_per_epoch(const struct zn_data *d);
ZN_API uint32_t zn_data_num_shards(const struct zn_data *d);
ZN_API uint64_t zn_data_num_tokens(const struct zn_data *d);
ZN_API uint32_t zn_data_num_masked_shards(const struct zn_data *d);
/* Path of the shard the next batch comes from. */
ZN_API const char *zn_data_current_file(const struct zn_data *d);

#ifdef __cplusplus
}
#endif
#endif
