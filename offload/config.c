/* Config sections zero_optimization.offload_param / .offload_optimizer:
 * DeepSpeed's keys, units (elements for buffer_size, max_in_cpu) and
 * defaults, except buffer_size, whose default here is auto. */
#include "zn_common.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "zinc/offload.h"

static const char *const devices[] = { "none", "cpu", "nvme", NULL };
static const char *const grad_places[] = { "auto", "host", "nvme", NULL };

#define P(f) .offset = offsetof(struct zn_offload_param_config, f), \
	     .size = sizeof(((struct zn_offload_param_config *)0)->f)
#define O(f) .offset = offsetof(struct zn_offload_optimizer_config, f), \
	     .size = sizeof(((struct zn_offload_optimizer_config *)0)->f)
#define BIG 1e18

static const struct zn_key param_keys[] = {
	{ "device", NULL, ZN_KEY_ENUM, P(device), "none", 0, 0, devices, 0,
	  "where parameters live between uses: none (device memory), cpu or nvme" },
	{ "nvme_path", NULL, ZN_KEY_STRING, P(nvme_path), "", 0, 0, NULL, 0,
	  "directory for the swap files; several disks: several paths separated by ','; "
	  "several ranks share it (files per process), or {local_rank} / {rank} in it gives "
	  "each rank its own disk" },
	{ "pin_memory", NULL, ZN_KEY_BOOL, P(pin_memory), "true", 0, 1, NULL, 0,
	  "page-lock the host buffers (faster transfers; counts against ulimit -l)" },
	{ "buffer_count", NULL, ZN_KEY_UINT, P(buffer_count), "5", 1, 1024, NULL, ZN_KEY_AUTO,
	  "host buffers parameters are swapped through; auto: the prefetch depth + 2" },
	{ "buffer_size", NULL, ZN_KEY_SIZE, P(buffer_size), "auto", 1, BIG, NULL, ZN_KEY_AUTO,
	  "elements per buffer; auto: the largest parameter tensor" },
	{ "max_in_cpu", NULL, ZN_KEY_SIZE, P(max_in_cpu), "1e9", 0, BIG, NULL, 0,
	  "elements of parameters kept in host memory in front of NVMe" },
	{ "checksum", NULL, ZN_KEY_BOOL, P(checksum), "true", 0, 1, NULL, ZN_KEY_ZINC_ONLY,
	  "XXH3 checksum per swapped tensor, verified on every read" },
	{ "stripe_size", NULL, ZN_KEY_SIZE, P(stripe_size), "4M", 4096, 1ull << 30, NULL,
	  ZN_KEY_ZINC_ONLY, "bytes per stripe when a tensor is spread over several nvme paths" },
};

static const struct zn_key optimizer_keys[] = {
	{ "device", NULL, ZN_KEY_ENUM, O(device), "none", 0, 0, devices, 0,
	  "where fp32 master parameters and optimizer states live: none, cpu or nvme" },
	{ "nvme_path", NULL, ZN_KEY_STRING, O(nvme_path), "", 0, 0, NULL, 0,
	  "directory for the swap files; several disks: several paths separated by ','; "
	  "several ranks share it (files per process), or {local_rank} / {rank} in it gives "
	  "each rank its own disk" },
	{ "pin_memory", NULL, ZN_KEY_BOOL, O(pin_memory), "true", 0, 1, NULL, 0,
	  "page-lock the host buffers" },
	{ "buffer_count", NULL, ZN_KEY_UINT, O(buffer_count), "4", 1, 1024, NULL, 0,
	  "host buffers the optimizer states stream through" },
	{ "pipeline_read", NULL, ZN_KEY_BOOL, O(pipeline_read), "false", 0, 1, NULL, 0,
	  "read the next sub-group while the current one is updated" },
	{ "pipeline_write", NULL, ZN_KEY_BOOL, O(pipeline_write), "false", 0, 1, NULL, 0,
	  "write the previous sub-group back while the current one is updated" },
	{ "fast_init", NULL, ZN_KEY_BOOL, O(fast_init), "false", 0, 1, NULL, 0,
	  "initialise optimizer states on NVMe without staging them in host memory",
	  .noop = "zinc always initialises NVMe states sub-group by sub-group through the "
		  "swapper's buffers, which is what fast_init asks for" },
	{ "ratio", NULL, ZN_KEY_DOUBLE, O(ratio), "1.0", 0, 1, NULL, 0,
	  "share of the optimizer step run on the CPU (only 1.0 is supported)" },
	{ "super_offload", NULL, ZN_KEY_BOOL, O(super_offload), "false", 0, 1, NULL, 0,
	  "SuperOffload for Grace-Hopper (not supported; must be false)" },
	{ "cpuadam_cores_perc", NULL, ZN_KEY_DOUBLE, O(cpuadam_cores_perc), "0.8", 0, 1,
	  NULL, 0, "share of the cores the CPU optimizer uses",
	  .noop = "zinc's CPU Adam runs on its thread pool, one thread per core this "
		  "process may use" },
	{ "checksum", NULL, ZN_KEY_BOOL, O(checksum), "true", 0, 1, NULL, ZN_KEY_ZINC_ONLY,
	  "XXH3 checksum per swapped tensor, verified on every read" },
	{ "stripe_size", NULL, ZN_KEY_SIZE, O(stripe_size), "4M", 4096, 1ull << 30, NULL,
	  ZN_KEY_ZINC_ONLY, "bytes per stripe when a tensor is spread over several nvme paths" },
	{ "gradients", NULL, ZN_KEY_ENUM, O(gradients), "auto", 0, 0, grad_places,
	  ZN_KEY_ZINC_ONLY,
	  "with device nvme, where offloaded tensors' gradients gather over a step: nvme (each "
	  "sub-group's beside its states; host memory holds a few sub-groups, and each "
	  "micro-batch after a step's first reads and rewrites them), host (an accumulator per "
	  "parameter in host memory), or auto: nvme when offload_param is on too" },
};

static int check_paths(const char *section, int device, const char *nvme_path,
		       uint64_t stripe)
{
	char buf[ZN_NVME_PATH_MAX];
	const char *paths[16];

	if (stripe % 4096)
		return zn_error(-EINVAL, "%s.stripe_size: %llu is not a multiple of 4096", section,
				(unsigned long long)stripe);
	if (device != ZN_OFFLOAD_NVME)
		return 0;
	if (!nvme_path[0])
		return zn_error(-EINVAL, "%s.nvme_path: required when device is nvme; give the "
					 "directory (or directories, separated by ',') for swap files",
				section);
	int n = zn_nvme_paths_split(nvme_path, buf, paths, ZN_ARRAY_SIZE(paths));
	if (n < 0)
		return zn_error(-EINVAL, "%s.nvme_path: '%s' has an empty path or more than %zu",
				section, nvme_path, ZN_ARRAY_SIZE(paths));
	return 0;
}

static int param_validate(const void *obj)
{
	const struct zn_offload_param_config *c = obj;
	return check_paths("offload_param", c->device, c->nvme_path, c->stripe_size);
}

static int optimizer_validate(const void *obj)
{
	const struct zn_offload_optimizer_config *c = obj;
	if (c->ratio != 1.0)
		return zn_error(-EINVAL, "offload_optimizer.ratio: %g is not supported yet (the "
					 "partial CPU step of ZeRO-Offload++); remove it or use 1.0",
				c->ratio);
	if (c->super_offload)
		return zn_error(-EINVAL, "offload_optimizer.super_offload: not supported; set it to "
					 "false");
	return check_paths("offload_optimizer", c->device, c->nvme_path, c->stripe_size);
}

const struct zn_key_table zn_offload_param_key_table = {
	.name = "offload_param",
	.help = "zero_optimization.offload_param: where ZeRO-3 parameters live between uses",
	.keys = param_keys,
	.nkeys = ZN_ARRAY_SIZE(param_keys),
	.struct_size = sizeof(struct zn_offload_param_config),
	.validate = param_validate,
	.auto_default = true,
};

const struct zn_key_table zn_offload_optimizer_key_table = {
	.name = "offload_optimizer",
	.help = "zero_optimization.offload_optimizer: where optimizer states live",
	.keys = optimizer_keys,
	.nkeys = ZN_ARRAY_SIZE(optimizer_keys),
	.struct_size = sizeof(struct zn_offload_optimizer_config),
	.validate = optimizer_validate,
	.auto_default = true,
};

int zn_offload_param_pool(const struct zn_offload_param_config *cfg, uint64_t largest_elems,
			  const char *largest_name, size_t elem_bytes, unsigned prefetch_depth,
			  struct zn_bufpool_config *out)
{
	uint64_t elems = cfg->buffer_size ? cfg->buffer_size : largest_elems;

	if (elems < largest_elems)
		return zn_error(-EINVAL,
				"offload_param.buffer_size %llu elements is smaller than the largest "
				"parameter tensor '%s' (%llu elements): set buffer_size to at least "
				"%llu, or to auto",
				(unsigned long long)cfg->buffer_size, largest_name,
				(unsigned long long)largest_elems, (unsigned long long)largest_elems);
	if (elems == 0 || elem_bytes == 0)
		return zn_error(-EINVAL, "offload_param: no parameter tensors to size buffers for");
	memset(out, 0, sizeof(*out));
	out->buffer_count = cfg->buffer_count ? cfg->buffer_count : ZN_MAX(3u, prefetch_depth + 2);
	out->buffer_bytes = elems * elem_bytes;
	out->pin_memory = cfg->pin_memory;
	out->numa_node = -1;
	/* The disk decides the NUMA node.  With several paths (disks
	 * possibly on several nodes) no single node is nearest: unbound. */
	if (cfg->nvme_path[0] && !strchr(cfg->nvme_path, ','))
		out->near_path = cfg->nvme_path;
	return 0;
}

int zn_nvme_paths_split(const char *value, char *buf, const char **paths, unsigned max)
{
	unsigned n = 0;

	snprintf(buf, ZN_NVME_PATH_MAX, "%s", value);
	for (char *p = buf;;) {
		char *comma = strchr(p, ',');
		if (comma)
			*comma = 0;
		/* Trim blanks around each element ("a, b"). */
		while (*p == ' ')
			p++;
		for (char *e = p + strlen(p); e > p && e[-1] == ' ';)
			*--e = 0;
		if (!*p || n == max)
			return -EINVAL;
		paths[n++] = p;
		if (!comma)
			break;
		p = comma + 1;
	}
	return (int)n;
}
