/* The pipelined optimizer swapper (see include/zinc/offload.h).
 *
 * Slots: S buffers, each holding one sub-group's state arrays.  Group g
 * uses slot g % S.  With read-ahead R (pipeline_read: S - 1 - W, where W is
 * 1 with pipeline_write), while group g is updated the reads of groups
 * g+1..g+R are in flight and, with pipeline_write, the write of g-1; the
 * slot of a group about to be read last held group (g+R+1) - S <= g-1-W,
 * whose write has been started before and is waited for first.
 *
 *   time ->   read g+1  | read g+2  | read g+3
 *             update g  | update g+1| update g+2
 *             write g-1 | write g   | write g+1
 */
#include "zn_common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/offload.h"

#define ALIGN 4096u

struct slot {
	uint8_t *buf;
	int64_t group;              /* group in the buffer, -1 none */
	struct zn_store_io *read;   /* in flight */
	struct zn_store_io *write;  /* in flight */
	struct zn_extent *write_ext; /* the spare being written */
	uint64_t read_start, write_start;
};

struct zn_optswap {
	struct zn_optswap_config cfg;
	struct zn_store *store;
	struct zn_bufpool *pool;
	uint64_t groups;
	uint64_t stride;            /* bytes per state array in a buffer/extent */
	unsigned nslots, read_ahead;
	struct slot *slots;
	struct zn_extent **cur;     /* the extent holding each group's states */
	struct zn_extent **spares;  /* free extents for copy-on-write */
	unsigned nspares;
	struct zn_optswap_stats last;
};

static unsigned min_slots(const struct zn_optswap_config *c)
{
	return 1u + (c->pipeline_read ? 1u : 0u) + (c->pipeline_write ? 1u : 0u);
}

static unsigned slots_of(const struct zn_optswap_config *c)
{
	unsigned need = min_slots(c);
	/* Extra buffers only help reading ahead. */
	return c->pipeline_read && c->buffer_count > need ? c->buffer_count : need;
}

static uint64_t stride_of(const struct zn_optswap_config *c)
{
	return ZN_ALIGN_UP(c->sub_group_size * sizeof(float), ALIGN);
}

void zn_optswap_set_trace(struct zn_optswap *os, struct zn_trace *trace)
{
	os->cfg.trace = trace;
}

uint64_t zn_optswap_store_bytes(const struct zn_optswap_config *c)
{
	uint64_t groups = ZN_DIV_ROUND_UP(c->params, c->sub_group_size);
	/* One extent per group, plus one spare per slot for copy-on-write. */
	return (groups + slots_of(c)) * c->nstates * stride_of(c);
}

/* The pool zn_optswap_create makes: one buffer of every state's padded
 * array per slot. */
static void pool_of(const struct zn_optswap_config *c, struct zn_bufpool_config *bc)
{
	memset(bc, 0, sizeof(*bc));
	bc->buffer_count = slots_of(c);
	bc->buffer_bytes = c->nstates * stride_of(c);
}

uint64_t zn_optswap_buffer_bytes(const struct zn_optswap_config *cfg)
{
	struct zn_bufpool_config bc;
	pool_of(cfg, &bc);
	return zn_bufpool_bytes(&bc);
}

void zn_optswap_destroy(struct zn_optswap *os)
{
	if (!os)
		return;
	for (unsigned i = 0; os->slots && i < os->nslots; i++) {
		struct slot *s = &os->slots[i];
		if (s->read)
			zn_store_wait(s->read);
		if (s->write)
			zn_store_wait(s->write);
		if (s->write_ext)
			zn_store_free(os->store, s->write_ext);
		if (s->buf)
			zn_bufpool_release(os->pool, s->buf);
	}
	for (uint64_t g = 0; os->cur && g < os->groups; g++)
		zn_store_free(os->store, os->cur[g]);
	for (unsigned i = 0; i < os->nspares; i++)
		zn_store_free(os->store, os->spares[i]);
	zn_bufpool_destroy(os->pool);
	free(os->slots);
	free(os->cur);
	free(os->spares);
	free(os);
}

struct zn_optswap *zn_optswap_create(const struct zn_optswap_config *cfg)
{
	char name[64], have[32], need[32];

	if (!cfg || !cfg->store || !cfg->params || !cfg->sub_group_size || !cfg->nstates ||
	    cfg->nstates > 8) {
		zn_set_error("optimizer swapper: needs a store, params > 0, sub_group_size > 0 and "
			     "1 to 8 state arrays");
		return NULL;
	}
	if (cfg->buffer_count && cfg->buffer_count < min_slots(cfg)) {
		zn_set_error("offload_optimizer.buffer_count %u is too small for %s: it needs at "
			     "least %u buffers of one sub-group's states",
			     cfg->buffer_count,
			     cfg->pipeline_read && cfg->pipeline_write ? "pipeline_read and "
									   "pipeline_write"
			     : cfg->pipeline_read ? "pipeline_read" : "pipeline_write",
			     min_slots(cfg));
		return NULL;
	}
	uint64_t cap_need = zn_optswap_store_bytes(cfg);
	uint64_t cap_free = zn_store_capacity(cfg->store) - zn_store_used(cfg->store);
	if (cap_need > cap_free) {
		zn_set_error("optimizer swapper: the swap store has %s free but the optimizer "
			     "states need %s (%" PRIu64 " elements x %u arrays, plus %u spare "
			     "sub-groups); create the store with zn_optswap_store_bytes()",
			     zn_format_size(cap_free, have, sizeof(have)),
			     zn_format_size(cap_need, need, sizeof(need)), cfg->params, cfg->nstates,
			     slots_of(cfg));
		return NULL;
	}

	struct zn_optswap *os = calloc(1, sizeof(*os));
	if (!os)
		goto oom;
	os->cfg = *cfg;
	os->store = cfg->store;
	os->groups = ZN_DIV_ROUND_UP(cfg->params, cfg->sub_group_size);
	os->stride = stride_of(cfg);
	os->nslots = slots_of(cfg);
	os->read_ahead = cfg->pipeline_read ? os->nslots - 1 - (cfg->pipeline_write ? 1 : 0) : 0;
	os->slots = calloc(os->nslots, sizeof(*os->slots));
	os->cur = calloc(os->groups, sizeof(*os->cur));
	os->spares = calloc(os->nslots, sizeof(*os->spares));
	if (!os->slots || !os->cur || !os->spares)
		goto oom;

	struct zn_bufpool_config pc;
	pool_of(cfg, &pc);
	pc.pin_memory = cfg->pin_memory;
	pc.numa_node = -1;
	pc.near_path = zn_store_file_path(cfg->store, 0);
	os->pool = zn_bufpool_create(&pc, cfg->aio);
	if (!os->pool)
		goto fail;
	for (unsigned i = 0; i < os->nslots; i++) {
		os->slots[i].group = -1;
		zn_bufpool_acquire(os->pool, (void **)&os->slots[i].buf);
	}
	uint64_t ext_bytes = cfg->nstates * os->stride;
	for (uint64_t g = 0; g < os->groups; g++) {
		snprintf(name, sizeof(name), "optimizer states, sub-group %" PRIu64, g);
		if (zn_store_alloc(os->store, name, ext_bytes, &os->cur[g]))
			goto fail;
	}
	for (unsigned i = 0; i < os->nslots; i++) {
		snprintf(name, sizeof(name), "optimizer states, spare %u", i);
		if (zn_store_alloc(os->store, name, ext_bytes, &os->spares[i]))
			goto fail;
		os->nspares++;
	}
	return os;

oom:
	zn_set_error("optimizer swapper: out of memory");
fail:
	zn_optswap_destroy(os);
	return NULL;
}

uint64_t zn_optswap_groups(const struct zn_optswap *os)
{
	return os->groups;
}

void zn_optswap_last_stats(const struct zn_optswap *os, struct zn_optswap_stats *out)
{
	*out = os->last;
}

static uint64_t group_len(const struct zn_optswap *os, uint64_t g)
{
	uint64_t first = g * os->cfg.sub_group_size;
	return ZN_MIN(os->cfg.sub_group_size, os->cfg.params - first);
}

static const char *group_name(uint64_t g, char *buf, size_t len)
{
	snprintf(buf, len, "sub-group %" PRIu64, g);
	return buf;
}

/* ---- the pipeline's moves ------------------------------------------------ */

/* Wait for the slot's write; on success the spare becomes the group's
 * extent and the old one a spare, on failure the spare goes back. */
static int finish_write(struct zn_optswap *os, struct slot *s, double *wait_s)
{
	uint64_t t0 = zn_now_ns(), done;
	int rc = zn_store_wait_timed(s->write, &done);
	*wait_s += (double)(zn_now_ns() - t0) / 1e9;
	zn_trace_span(os->cfg.trace, "write", "optimizer", "nvme write", s->write_start, done,
		      os->cfg.nstates * os->stride);
	uint64_t g = (uint64_t)s->group;
	if (rc) {
		char gname[48];
		zn_set_error("writing back the optimizer states of %s failed (its previous "
			     "states are kept): %s",
			     group_name(g, gname, sizeof(gname)), zn_last_error());
		os->spares[os->nspares++] = s->write_ext;
	} else {
		os->spares[os->nspares++] = os->cur[g];
		os->cur[g] = s->write_ext;
		os->last.bytes_written += os->cfg.nstates * os->stride;
	}
	s->write = NULL;
	s->write_ext = NULL;
	return rc;
}

static int start_read(struct zn_optswap *os, uint64_t g, double *write_wait_s)
{
	struct slot *s = &os->slots[g % os->nslots];
	int rc = 0;
	if (s->write)
		rc = finish_write(os, s, write_wait_s);
	if (rc)
		return rc;
	s->group = (int64_t)g;
	s->read_start = zn_now_ns();
	return zn_store_read(os->store, os->cur[g], s->buf, &s->read);
}

static int finish_read(struct zn_optswap *os, struct slot *s, double *wait_s)
{
	uint64_t t0 = zn_now_ns(), done;
	int rc = zn_store_wait_timed(s->read, &done);
	uint64_t t1 = zn_now_ns();
	*wait_s += (double)(t1 - t0) / 1e9;
	s->read = NULL;
	zn_trace_span(os->cfg.trace, "read", "optimizer", "nvme read", s->read_start, done,
		      os->cfg.nstates * os->stride);
	if (t1 - t0 > 20000) /* the update had to wait for the disk */
		zn_trace_span(os->cfg.trace, "stall", "optimizer", "update", t0, t1, 0);
	if (!rc) {
		os->last.bytes_read += os->cfg.nstates * os->stride;
	} else {
		char gname[48];
		zn_set_error("reading the optimizer states of %s failed: %s",
			     group_name((uint64_t)s->group, gname, sizeof(gname)), zn_last_error());
	}
	return rc;
}

static int start_write(struct zn_optswap *os, struct slot *s)
{
	/* Copy-on-write: a spare always exists, since each slot holds at most
	 * one write and there are as many spares as slots. */
	s->write_ext = os->spares[--os->nspares];
	s->write_start = zn_now_ns();
	int rc = zn_store_write(os->store, s->write_ext, s->buf, &s->write);
	if (rc) {
		os->spares[os->nspares++] = s->write_ext;
		s->write_ext = NULL;
	}
	return rc;
}

int zn_optswap_step(struct zn_optswap *os, zn_optswap_update_fn update, void *user)
{
	const uint64_t G = os->groups;
	uint64_t next_read = 0;
	uint64_t t_step = zn_now_ns();
	double read_wait = 0, write_wait = 0, update_s = 0;
	int rc = 0;
	char msg[512] = "", gname[48];

	os->last = (struct zn_optswap_stats){ 0 };
	for (uint64_t g = 0; g < G && !rc; g++) {
		struct slot *s = &os->slots[g % os->nslots];
		/* Reads: this group if not yet on its way, then the read-ahead. */
		while (!rc && next_read < G && (next_read <= g || next_read <= g + os->read_ahead))
			rc = start_read(os, next_read++, &write_wait);
		if (rc)
			break;
		rc = finish_read(os, s, &read_wait);
		if (rc)
			break;

		float *states[8];
		for (unsigned k = 0; k < os->cfg.nstates; k++)
			states[k] = (float *)(s->buf + k * os->stride);
		uint64_t t0 = zn_now_ns();
		rc = update(user, g, g * os->cfg.sub_group_size, group_len(os, g), states);
		uint64_t t1 = zn_now_ns();
		update_s += (double)(t1 - t0) / 1e9;
		zn_trace_span(os->cfg.trace, "update", "optimizer", "update", t0, t1, 0);
		if (rc) {
			snprintf(msg, sizeof(msg), "optimizer update of %s failed: %s",
				 group_name(g, gname, sizeof(gname)), zn_last_error());
			break;
		}
		rc = start_write(os, s);
		if (!rc && !os->cfg.pipeline_write)
			rc = finish_write(os, s, &write_wait);
	}
	if (rc && !msg[0])
		snprintf(msg, sizeof(msg), "%s", zn_last_error());
	/* Drain: every I/O still in flight is waited for (and writes that
	 * succeeded committed) whatever happened above. */
	for (unsigned i = 0; i < os->nslots; i++) {
		struct slot *s = &os->slots[i];
		if (s->read) {
			int r = zn_store_wait(s->read);
			s->read = NULL;
			if (r && !rc) {
				rc = r;
				snprintf(msg, sizeof(msg), "%s", zn_last_error());
			}
		}
		if (s->write) {
			int r = finish_write(os, s, &write_wait);
			if (r && !rc) {
				rc = r;
				snprintf(msg, sizeof(msg), "%s", zn_last_error());
			}
		}
	}
	os->last.step_s = (double)(zn_now_ns() - t_step) / 1e9;
	os->last.read_wait_s = read_wait;
	os->last.update_s = update_s;
	os->last.write_wait_s = write_wait;
	if (rc)
		return zn_error(rc, "%s", msg);
	return 0;
}

/* ---- synchronous access to one group --------------------------------------- */

int zn_optswap_write_group(struct zn_optswap *os, uint64_t g, const float *const *states)
{
	char gname[48];
	double unused = 0;

	if (g >= os->groups)
		return zn_error(-EINVAL, "optimizer swapper: %s does not exist (%" PRIu64 " groups)",
				group_name(g, gname, sizeof(gname)), os->groups);
	struct slot *s = &os->slots[0];
	/* Between steps every slot is idle; slot 0 serves as the staging
	 * buffer.  Unused tail bytes are zeroed so checksums are stable. */
	memset(s->buf, 0, os->cfg.nstates * os->stride);
	for (unsigned k = 0; k < os->cfg.nstates; k++)
		memcpy(s->buf + k * os->stride, states[k], group_len(os, g) * sizeof(float));
	s->group = (int64_t)g;
	struct zn_optswap_stats saved = os->last; /* report steps only */
	int rc = start_write(os, s);
	if (!rc)
		rc = finish_write(os, s, &unused);
	os->last = saved;
	return rc;
}

int zn_optswap_read_group(struct zn_optswap *os, uint64_t g, float *const *states)
{
	char gname[48];
	double unused = 0;

	if (g >= os->groups)
		return zn_error(-EINVAL, "optimizer swapper: %s does not exist (%" PRIu64 " groups)",
				group_name(g, gname, sizeof(gname)), os->groups);
	struct slot *s = &os->slots[g % os->nslots];
	struct zn_optswap_stats saved = os->last; /* report steps only */
	int rc = start_read(os, g, &unused);
	if (!rc)
		rc = finish_read(os, s, &unused);
	os->last = saved;
	if (rc)
		return rc;
	for (unsigned k = 0; k < os->cfg.nstates; k++)
		memcpy(states[k], s->buf + k * os->stride, group_len(os, g) * sizeof(float));
	return 0;
}
