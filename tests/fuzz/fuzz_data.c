/* llm.c token shards and zinc's loss masks (engine/io/data.c): a shard's
 * 256-int32 header and its tokens, a mask's header and values, then batches
 * served from them and a position saved and restored.
 *
 * The input: 4 bytes of options -- B (1 + byte % 4), T (1 + byte % 16),
 * flags (bit 0 shuffle, bit 1 a mask beside the shard, bits 2-3 the split,
 * bit 4 check tokens against a vocabulary of 50257), a seed byte -- then
 * the shard's length as a little-endian uint32, the shard, and the rest is
 * the mask (when bit 1 says there is one). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "zinc/data.h"

#define MAX_BATCHES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	const uint8_t *opt = data;
	uint32_t shard_len = (uint32_t)data[4] | (uint32_t)data[5] << 8 |
			     (uint32_t)data[6] << 16 | (uint32_t)data[7] << 24;
	data += 8;
	size -= 8;
	if (shard_len > size)
		shard_len = (uint32_t)size;
	const char *mask = fuzz_path("s.mask");
	if (!mask)
		return 0;
	unlink(mask);
	if ((opt[2] & 2) && !fuzz_write("s.mask", data + shard_len, size - shard_len))
		return 0;
	const char *shard = fuzz_write("s.bin", data, shard_len);
	if (!shard)
		return 0;

	struct zn_data_options o = {
		.pattern = shard,
		.B = 1u + opt[0] % 4,
		.T = 1u + opt[1] % 16,
		.seed = opt[3],
		.shuffle = opt[2] & 1,
		.vocab_size = opt[2] & 16 ? 50257 : 0,
		.split = (enum zn_data_split)((opt[2] >> 2) & 3),
		.val_fraction = (opt[2] >> 2) & 3 ? 0.25 : 0,
	};
	struct zn_data *d = zn_data_open(&o);
	if (!d)
		return 0;
	size_t bt = (size_t)o.B * o.T;
	int32_t *in = malloc(bt * sizeof(*in)), *tg = malloc(bt * sizeof(*tg));
	uint16_t *win = malloc((bt + 1) * sizeof(*win));
	struct zn_data_pos pos;
	if (in && tg && win) {
		zn_data_tell(d, &pos);
		for (int i = 0; i < MAX_BATCHES; i++)
			if (zn_data_next_batch(d, in, tg))
				break;
		(void)zn_data_next_window(d, win);
		(void)zn_data_seek(d, &pos);
		(void)zn_data_next_batch(d, in, tg);
		/* A damaged saved position: refused, or rolled over. */
		pos.shard += opt[3] & 3;
		pos.window += opt[3] >> 2;
		if (zn_data_seek(d, &pos) == 0)
			(void)zn_data_next_batch(d, in, tg);
		(void)zn_data_current_file(d);
	}
	free(in);
	free(tg);
	free(win);
	zn_data_close(d);
	return 0;
}
