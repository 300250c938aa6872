/* The `aio` config section: DeepSpeed's keys and defaults, plus zinc's own. */
#include "zn_common.h"

#include <stddef.h>
#include <stdio.h>

#include "zinc/aio.h"

/* Every block must be a multiple of this, so that pieces of an aligned
 * request stay aligned for any device with logical blocks up to 4 KiB (all
 * NVMe drives in practice).  Files needing more are refused at open. */
#define ZN_AIO_BLOCK_ALIGN 4096u

#define KEY(n, t, f, d, lo, hi, fl, h) \
	{ .name = n, .type = t, .offset = offsetof(struct zn_aio_config, f), \
	  .size = sizeof(((struct zn_aio_config *)0)->f), .def = d, .min = lo, .max = hi, \
	  .flags = fl, .help = h }

static const struct zn_key aio_keys[] = {
	KEY("block_size", ZN_KEY_SIZE, block_size, "1048576", 4096, 1ull << 30, 0,
	    "bytes per I/O piece a request is cut into; a multiple of 4096"),
	KEY("queue_depth", ZN_KEY_UINT, queue_depth, "8", 1, 4096, 0,
	    "I/O pieces in flight per ring"),
	{ .name = "intra_op_parallelism", .alias = "thread_count", .type = ZN_KEY_UINT,
	  .offset = offsetof(struct zn_aio_config, intra_op_parallelism),
	  .size = sizeof(uint32_t), .def = "1", .min = 1, .max = 256,
	  .help = "rings, each with its own submitting thread, a request is spread over "
		  "(older name: thread_count)" },
	KEY("single_submit", ZN_KEY_BOOL, single_submit, "false", 0, 1, 0,
	    "submit each I/O with its own system call instead of one call per batch"),
	KEY("overlap_events", ZN_KEY_BOOL, overlap_events, "true", 0, 1, 0,
	    "refill the queue as each I/O completes; false waits for a whole batch"),
	KEY("use_gds", ZN_KEY_BOOL, use_gds, "false", 0, 1, 0,
	    "GPUDirect Storage (not supported yet; must be false)"),
	KEY("use_fixed_buffers", ZN_KEY_BOOL, use_fixed_buffers, "true", 0, 1, ZN_KEY_ZINC_ONLY,
	    "use io_uring registered buffers for I/O into registered memory"),
	KEY("sqpoll", ZN_KEY_BOOL, sqpoll, "false", 0, 1, ZN_KEY_ZINC_ONLY,
	    "a kernel thread per ring polls for submissions (saves system calls, "
	    "costs a core)"),
};

static int aio_validate(const void *obj)
{
	return zn_aio_config_validate(obj);
}

const struct zn_key_table zn_aio_key_table = {
	.name = "aio",
	.help = "the io_uring engine that moves tensors to and from NVMe",
	.keys = aio_keys,
	.nkeys = ZN_ARRAY_SIZE(aio_keys),
	.struct_size = sizeof(struct zn_aio_config),
	.validate = aio_validate,
};

void zn_aio_config_default(struct zn_aio_config *cfg)
{
	zn_keys_defaults(&zn_aio_key_table, cfg);
}

int zn_aio_config_validate(const struct zn_aio_config *cfg)
{
	if (cfg->use_gds)
		return zn_error(-EINVAL, "aio.use_gds: GPUDirect Storage is not supported yet; "
					 "set use_gds: false (I/O goes through pinned host buffers)");
	if (cfg->queue_depth == 0)
		return zn_error(-EINVAL, "aio.queue_depth: must be at least 1");
	if (cfg->queue_depth > 4096)
		return zn_error(-EINVAL, "aio.queue_depth: %u is above the limit of 4096",
				cfg->queue_depth);
	if (cfg->intra_op_parallelism == 0)
		return zn_error(-EINVAL, "aio.intra_op_parallelism: must be at least 1");
	if (cfg->intra_op_parallelism > 256)
		return zn_error(-EINVAL, "aio.intra_op_parallelism: %u is above the limit of 256",
				cfg->intra_op_parallelism);
	if (cfg->block_size == 0 || cfg->block_size % ZN_AIO_BLOCK_ALIGN != 0)
		return zn_error(-EINVAL,
				"aio.block_size: %llu is not a multiple of the %u-byte I/O "
				"alignment; use e.g. 131072 or 1048576",
				(unsigned long long)cfg->block_size, ZN_AIO_BLOCK_ALIGN);
	if (cfg->block_size > (1ull << 30))
		return zn_error(-EINVAL, "aio.block_size: %llu is above the limit of 1 GiB",
				(unsigned long long)cfg->block_size);
	return 0;
}
