/* The struct zn_model_mem callbacks over host memory (see model_host.h). */
#include "model_host.h"

#include <stdlib.h>
#include <string.h>

#include "zinc/device.h"

static void *mh_alloc(void *user, size_t bytes)
{
	struct mh_counts *c = user;
	if (c) {
		c->dev += bytes;
		c->dev_aligned += (bytes + ZN_DEVICE_ALIGN - 1) / ZN_DEVICE_ALIGN * ZN_DEVICE_ALIGN;
		c->dev_allocs++;
	}
	return calloc(1, bytes ? bytes : 1);
}

static void *mh_host_alloc(void *user, size_t bytes)
{
	struct mh_counts *c = user;
	if (c) {
		c->host += bytes;
		c->host_allocs++;
	}
	return calloc(1, bytes ? bytes : 1);
}

static void mh_free(void *user, void *p)
{
	(void)user;
	free(p);
}

static int mh_zero(void *user, void *p, size_t bytes)
{
	(void)user;
	memset(p, 0, bytes);
	return 0;
}

static int mh_copy(void *user, void *dst, const void *src, size_t bytes)
{
	(void)user;
	memcpy(dst, src, bytes);
	return 0;
}

struct zn_model_mem mh_host_mem(struct mh_counts *c)
{
	return (struct zn_model_mem){ .user = c, .alloc = mh_alloc, .free = mh_free,
				      .memset0 = mh_zero, .host_alloc = mh_host_alloc,
				      .host_free = mh_free, .to_host = mh_copy,
				      .to_device = mh_copy };
}
