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
 *
 * Gradients (cfg.grad_bytes): each group has a gradient extent besides its
 * states, written in place (a pass's gradients are not worth keeping if
 * the write fails: the step fails with it) and read by the step into the
 * slot behind the states.  Between steps the slots carry the backward's
 * gradients: a slot takes a group when its first gradients come (read
 * first when the pass accumulates), is written once the group's expected
 * elements have all come, and is free again once that write is done.
 *
 * Between steps the slots also lend themselves to the caller, a group's
 * state arrays in place (zn_optswap_group_fill, _read): start-up fills
 * each group where it will be written from and a checkpoint writes each
 * group from where it was read, with no buffer of their own.  Group g
 * uses slot g % S here too, so a fill's write runs behind the filling of
 * the next S - 1 groups, and a read starts the reads of the next S - 1
 * groups behind it.  These moves are not a step's: they are not counted
 * in its statistics, and a step first waits for the ones in flight.
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
	/* Gradients: the step's read of them, behind the states; between
	 * steps, a gradient pass's use of the slot. */
	struct zn_store_io *gread;
	enum { G_FREE, G_READING, G_OPEN, G_WRITING } gstate;
	int64_t ggroup;
	struct zn_store_io *gio;    /* G_READING, G_WRITING */
	/* Between steps: the group's arrays are lent to the caller
	 * (zn_optswap_group_fill, _read); the read or write in flight is the
	 * caller's, not a step's (not counted in its statistics). */
	bool lent, staged;
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
	/* Gradients (cfg.grad_bytes). */
	uint64_t gstride;           /* bytes of a group's gradients in a buffer/extent */
	struct zn_extent **gext;    /* each group's, written in place */
	uint64_t *gexpect;          /* elements of each group a pass sends */
	uint64_t *ggot;             /* ... and has sent in this pass */
	bool *gwritten;             /* a pass has written the group's gradients */
	int *gslot;                 /* the slot holding each group in a pass, -1 */
	bool gpass, gaccumulate;    /* a pass is on; it adds to the last one's sums */
	struct zn_optswap_grad_stats gstats;
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

static uint64_t gstride_of(const struct zn_optswap_config *c)
{
	return ZN_ALIGN_UP(c->sub_group_size * c->grad_bytes, ALIGN);
}

void zn_optswap_set_trace(struct zn_optswap *os, struct zn_trace *trace)
{
	os->cfg.trace = trace;
}

uint64_t zn_optswap_store_bytes(const struct zn_optswap_config *c)
{
	uint64_t groups = ZN_DIV_ROUND_UP(c->params, c->sub_group_size);
	/* One extent per group, plus one spare per slot for copy-on-write;
	 * the gradients' in place. */
	return (groups + slots_of(c)) * c->nstates * stride_of(c) + zn_optswap_grads_store_bytes(c);
}

uint64_t zn_optswap_grads_store_bytes(const struct zn_optswap_config *c)
{
	return ZN_DIV_ROUND_UP(c->params, c->sub_group_size) * gstride_of(c);
}

/* The pool zn_optswap_create makes: one buffer of every state's padded
 * array per slot. */
static void pool_of(const struct zn_optswap_config *c, struct zn_bufpool_config *bc)
{
	memset(bc, 0, sizeof(*bc));
	bc->buffer_count = slots_of(c);
	bc->buffer_bytes = c->nstates * stride_of(c) + gstride_of(c);
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
		if (s->gread)
			zn_store_wait(s->gread);
		if (s->gio)
			zn_store_wait(s->gio);
		if (s->buf)
			zn_bufpool_release(os->pool, s->buf);
	}
	for (uint64_t g = 0; os->cur && g < os->groups; g++)
		zn_store_free(os->store, os->cur[g]);
	for (uint64_t g = 0; os->gext && g < os->groups; g++)
		zn_store_free(os->store, os->gext[g]);
	for (unsigned i = 0; i < os->nspares; i++)
		zn_store_free(os->store, os->spares[i]);
	zn_bufpool_destroy(os->pool);
	free(os->slots);
	free(os->cur);
	free(os->spares);
	free(os->gext);
	free(os->gexpect);
	free(os->ggot);
	free(os->gwritten);
	free(os->gslot);
	free(os);
}

struct zn_optswap *zn_optswap_create(const struct zn_optswap_config *cfg)
{
	char name[64], have[32], need[32];

	if (!cfg || !cfg->store || !cfg->params || !cfg->sub_group_size || !cfg->nstates ||
	    cfg->nstates > 7 || (cfg->grad_bytes && cfg->grad_bytes != 2 && cfg->grad_bytes != 4)) {
		zn_set_error("optimizer swapper: needs a store, params > 0, sub_group_size > 0, "
			     "1 to 7 state arrays and gradients of 0, 2 or 4 bytes");
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
	os->gstride = gstride_of(cfg);
	os->slots = calloc(os->nslots, sizeof(*os->slots));
	os->cur = calloc(os->groups, sizeof(*os->cur));
	os->spares = calloc(os->nslots, sizeof(*os->spares));
	if (!os->slots || !os->cur || !os->spares)
		goto oom;
	if (cfg->grad_bytes) {
		os->gext = calloc(os->groups, sizeof(*os->gext));
		os->gexpect = calloc(os->groups, sizeof(*os->gexpect));
		os->ggot = calloc(os->groups, sizeof(*os->ggot));
		os->gwritten = calloc(os->groups, sizeof(*os->gwritten));
		os->gslot = malloc(os->groups * sizeof(*os->gslot));
		if (!os->gext || !os->gexpect || !os->ggot || !os->gwritten || !os->gslot)
			goto oom;
		for (uint64_t g = 0; g < os->groups; g++)
			os->gslot[g] = -1;
	}

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
		os->slots[i].ggroup = -1;
		zn_bufpool_acquire(os->pool, (void **)&os->slots[i].buf);
	}
	uint64_t ext_bytes = cfg->nstates * os->stride;
	for (uint64_t g = 0; g < os->groups; g++) {
		snprintf(name, sizeof(name), "optimizer states, sub-group %" PRIu64, g);
		if (zn_store_alloc(os->store, name, ext_bytes, &os->cur[g]))
			goto fail;
	}
	for (uint64_t g = 0; os->gext && g < os->groups; g++) {
		snprintf(name, sizeof(name), "gradients, sub-group %" PRIu64, g);
		if (zn_store_alloc(os->store, name, os->gstride, &os->gext[g]))
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
		if (!s->staged)
			os->last.bytes_written += os->cfg.nstates * os->stride;
	}
	s->write = NULL;
	s->write_ext = NULL;
	s->staged = false;
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
	rc = zn_store_read(os->store, os->cur[g], s->buf, &s->read);
	if (rc || !os->gext)
		return rc;
	/* The group's gradients behind its states; none sent: zeros. */
	uint8_t *gbuf = s->buf + os->cfg.nstates * os->stride;
	if (os->gwritten[g])
		return zn_store_read(os->store, os->gext[g], gbuf, &s->gread);
	memset(gbuf, 0, os->gstride);
	return 0;
}

static int finish_read(struct zn_optswap *os, struct slot *s, double *wait_s)
{
	uint64_t t0 = zn_now_ns(), done;
	int rc = zn_store_wait_timed(s->read, &done);
	s->read = NULL;
	if (s->gread) {
		int r = zn_store_wait(s->gread);
		s->gread = NULL;
		rc = rc ? rc : r;
		if (!r)
			os->last.bytes_read += os->gstride;
	}
	uint64_t t1 = zn_now_ns();
	*wait_s += (double)(t1 - t0) / 1e9;
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

	if (os->gpass)
		return zn_error(-EBUSY, "optimizer swapper: a step during a gradient pass (end the "
					"pass first)");
	if ((rc = zn_optswap_group_sync(os)))
		return rc;
	for (unsigned i = 0; i < os->nslots; i++)
		if (os->slots[i].lent)
			return zn_error(-EBUSY, "optimizer swapper: a step while sub-group %" PRId64
						"'s states are lent (release them first)",
					os->slots[i].group);
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
		states[os->cfg.nstates] = os->gext ? (float *)(s->buf + os->cfg.nstates * os->stride)
						   : NULL;
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
		for (struct zn_store_io **io = &s->read; io; io = io == &s->read ? &s->gread : NULL) {
			if (!*io)
				continue;
			int r = zn_store_wait(*io);
			*io = NULL;
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

/* ---- a group's states lent between steps ------------------------------------ */

/* Group g may be lent: it exists, no gradient pass is on, its slot is not
 * lent already. */
static int lend_check(struct zn_optswap *os, uint64_t g)
{
	char gname[48];
	if (g >= os->groups)
		return zn_error(-EINVAL, "optimizer swapper: %s does not exist (%" PRIu64 " groups)",
				group_name(g, gname, sizeof(gname)), os->groups);
	if (os->gpass)
		return zn_error(-EBUSY, "optimizer swapper: %s's states asked for during a "
					"gradient pass (end the pass first)",
				group_name(g, gname, sizeof(gname)));
	const struct slot *s = &os->slots[g % os->nslots];
	if (s->lent)
		return zn_error(-EBUSY, "optimizer swapper: %s's states asked for while %s's, "
					"which share its buffer, are lent (release them first)",
				group_name(g, gname, sizeof(gname)),
				group_name((uint64_t)s->group, gname, sizeof(gname)));
	return 0;
}

/* The slot's own I/O over: its write waited for (committed, or its error
 * returned), a read ahead of a group nobody asked for yet dropped. */
static int settle(struct zn_optswap *os, struct slot *s)
{
	double unused = 0;
	int rc = s->write ? finish_write(os, s, &unused) : 0;
	if (s->read) {
		int r = zn_store_wait(s->read);
		s->read = NULL;
		s->group = -1;
		rc = rc ? rc : r;
	}
	s->staged = false;
	return rc;
}

/* Start reading group g's states (not its gradients) into its slot, for
 * the caller. */
static int start_lend_read(struct zn_optswap *os, struct slot *s, uint64_t g)
{
	s->group = (int64_t)g;
	s->staged = true;
	int rc = zn_store_read(os->store, os->cur[g], s->buf, &s->read);
	if (rc)
		s->group = -1;
	return rc;
}

static void lend(struct zn_optswap *os, struct slot *s, float **states)
{
	s->lent = true;
	for (unsigned k = 0; k < os->cfg.nstates; k++)
		states[k] = (float *)(s->buf + k * os->stride);
}

int zn_optswap_group_fill(struct zn_optswap *os, uint64_t g, float **states)
{
	int rc = lend_check(os, g);
	struct slot *s = &os->slots[g % os->nslots];
	if (rc || (rc = settle(os, s)))
		return rc;
	s->group = (int64_t)g;
	lend(os, s, states);
	/* The arrays' padding (a short last group's too) is zeroed, so the
	 * extent's bytes -- and its checksum -- depend on the states alone. */
	const uint64_t used = group_len(os, g) * sizeof(float);
	for (unsigned k = 0; k < os->cfg.nstates; k++)
		memset(s->buf + k * os->stride + used, 0, os->stride - used);
	return 0;
}

int zn_optswap_group_write(struct zn_optswap *os, uint64_t g)
{
	struct slot *s = g < os->groups ? &os->slots[g % os->nslots] : NULL;
	if (!s || !s->lent || s->group != (int64_t)g)
		return zn_error(-EINVAL, "optimizer swapper: sub-group %" PRIu64 " written "
					 "without being lent (zn_optswap_group_fill)", g);
	s->lent = false;
	int rc = start_write(os, s);
	if (!rc)
		s->staged = true;
	return rc;
}

int zn_optswap_group_read(struct zn_optswap *os, uint64_t g, const float **states)
{
	int rc = lend_check(os, g);
	struct slot *s = &os->slots[g % os->nslots];
	if (rc)
		return rc;
	if (!(s->read && s->group == (int64_t)g)) { /* not read ahead */
		if ((rc = settle(os, s)) || (rc = start_lend_read(os, s, g)))
			return rc;
	}
	rc = zn_store_wait(s->read);
	s->read = NULL;
	s->staged = false;
	if (rc) {
		char gname[48];
		s->group = -1;
		return zn_error(rc, "reading the optimizer states of %s failed: %s",
				group_name(g, gname, sizeof(gname)), zn_last_error());
	}
	lend(os, s, (float **)states);
	/* The next groups' reads behind it, into slots with nothing else to do. */
	for (uint64_t h = g + 1; h < os->groups && h < g + os->nslots; h++) {
		struct slot *n = &os->slots[h % os->nslots];
		if (n->lent || n->read || n->write)
			continue;
		if ((rc = start_lend_read(os, n, h)))
			return rc;
	}
	return 0;
}

void zn_optswap_group_release(struct zn_optswap *os, uint64_t g)
{
	struct slot *s = g < os->groups ? &os->slots[g % os->nslots] : NULL;
	if (s && s->group == (int64_t)g)
		s->lent = false;
}

int zn_optswap_group_sync(struct zn_optswap *os)
{
	int rc = 0;
	for (unsigned i = 0; i < os->nslots; i++) {
		struct slot *s = &os->slots[i];
		if (!s->staged)
			continue;
		int r = settle(os, s);
		rc = rc ? rc : r;
	}
	return rc;
}

/* ---- synchronous access to one group: a lent group copied ------------------- */

int zn_optswap_write_group(struct zn_optswap *os, uint64_t g, const float *const *states)
{
	float *dst[8];
	int rc = zn_optswap_group_fill(os, g, dst);
	if (rc)
		return rc;
	for (unsigned k = 0; k < os->cfg.nstates; k++)
		memcpy(dst[k], states[k], group_len(os, g) * sizeof(float));
	rc = zn_optswap_group_write(os, g);
	int r = settle(os, &os->slots[g % os->nslots]);
	return rc ? rc : r;
}

int zn_optswap_read_group(struct zn_optswap *os, uint64_t g, float *const *states)
{
	const float *src[8];
	int rc = zn_optswap_group_read(os, g, src);
	if (rc)
		return rc;
	for (unsigned k = 0; k < os->cfg.nstates; k++)
		memcpy(states[k], src[k], group_len(os, g) * sizeof(float));
	zn_optswap_group_release(os, g);
	return 0;
}

/* ---- gradient passes -------------------------------------------------------- */

void zn_optswap_grads_stats(const struct zn_optswap *os, struct zn_optswap_grad_stats *out)
{
	*out = os->gstats;
}

static uint8_t *gbuf_of(const struct zn_optswap *os, const struct slot *s)
{
	return s->buf + os->cfg.nstates * os->stride;
}

static int no_grads(const struct zn_optswap *os)
{
	return os->gext ? 0
			: zn_error(-EINVAL, "optimizer swapper: created without gradients "
					    "(grad_bytes 0)");
}

/* Elements [first, first + n) must lie within the states. */
static int grads_range(const struct zn_optswap *os, uint64_t first, uint64_t n)
{
	int rc = no_grads(os);
	if (!rc && (first > os->cfg.params || n > os->cfg.params - first))
		rc = zn_error(-EINVAL, "optimizer swapper: gradients of elements %" PRIu64
				       "..%" PRIu64 " outside the %" PRIu64 " elements",
			      first, first + n, os->cfg.params);
	return rc;
}

int zn_optswap_grads_expect(struct zn_optswap *os, uint64_t first, uint64_t n)
{
	int rc = grads_range(os, first, n);
	if (rc)
		return rc;
	const uint64_t S = os->cfg.sub_group_size;
	for (uint64_t a = first; a < first + n;) {
		uint64_t g = a / S, b = ZN_MIN(first + n, (g + 1) * S);
		os->gexpect[g] += b - a;
		if (os->gexpect[g] > group_len(os, g))
			return zn_error(-EINVAL, "optimizer swapper: gradients of sub-group %" PRIu64
						 " expected twice",
					g);
		a = b;
	}
	return 0;
}

int zn_optswap_grads_begin(struct zn_optswap *os, bool accumulate)
{
	int rc = no_grads(os);
	if (rc)
		return rc;
	if (os->gpass)
		return zn_error(-EBUSY, "optimizer swapper: a gradient pass is on already");
	memset(os->ggot, 0, os->groups * sizeof(*os->ggot));
	os->gpass = true;
	os->gaccumulate = accumulate;
	return 0;
}

/* A slot's gradient I/O is over: a read leaves the group open in it, a
 * write frees it (and marks the group's gradients written). */
static int gio_finish(struct zn_optswap *os, struct slot *s)
{
	uint64_t t0 = zn_now_ns();
	int rc = zn_store_wait(s->gio);
	os->gstats.wait_s += (double)(zn_now_ns() - t0) / 1e9;
	s->gio = NULL;
	uint64_t g = (uint64_t)s->ggroup;
	if (s->gstate == G_READING) {
		s->gstate = G_OPEN;
		if (!rc)
			os->gstats.bytes_read += os->gstride;
		else
			zn_set_error("reading the gradients of sub-group %" PRIu64 " failed: %s", g,
				     zn_last_error());
		return rc;
	}
	s->gstate = G_FREE;
	s->ggroup = -1;
	os->gslot[g] = -1;
	if (rc) {
		os->gwritten[g] = false; /* unknown contents: never read */
		return zn_error(rc, "writing the gradients of sub-group %" PRIu64 " failed: %s", g,
				zn_last_error());
	}
	os->gwritten[g] = true;
	os->gstats.bytes_written += os->gstride;
	return 0;
}

/* Put group g into slot i: read its previous sums when the pass
 * accumulates (zeros if it has none), else start from zeros where the
 * group has elements nothing is expected of, so its bytes are defined. */
static int gslot_take(struct zn_optswap *os, unsigned i, uint64_t g)
{
	struct slot *s = &os->slots[i];
	s->ggroup = (int64_t)g;
	os->gslot[g] = (int)i;
	if (os->gaccumulate && os->gwritten[g]) {
		s->gstate = G_READING;
		return zn_store_read(os->store, os->gext[g], gbuf_of(os, s), &s->gio);
	}
	s->gstate = G_OPEN;
	if (os->gaccumulate || os->gexpect[g] < group_len(os, g))
		memset(gbuf_of(os, s), 0, os->gstride);
	return 0;
}

/* A free slot: one that is, else the one whose write started first (its
 * wait frees it), else one reading ahead (its group is dropped).  With
 * every slot open: -EDEADLK. */
static int gslot_free(struct zn_optswap *os, unsigned *out)
{
	int writing = -1, reading = -1;
	for (unsigned i = 0; i < os->nslots; i++) {
		const struct slot *s = &os->slots[i];
		if (s->gstate == G_FREE) {
			*out = i;
			return 0;
		}
		if (s->gstate == G_WRITING && writing < 0)
			writing = (int)i;
		if (s->gstate == G_READING && reading < 0)
			reading = (int)i;
	}
	int i = writing >= 0 ? writing : reading;
	if (i < 0)
		return zn_error(-EDEADLK, "optimizer swapper: gradients of %u sub-groups are open "
					  "at once and another one starts; send them in "
					  "descending order, or give more buffers "
					  "(offload_optimizer.buffer_count with pipeline_read)",
				os->nslots);
	struct slot *s = &os->slots[i];
	int rc = gio_finish(os, s);
	if (rc)
		return rc;
	if (s->gstate == G_OPEN) { /* a read ahead, given up */
		os->gslot[s->ggroup] = -1;
		s->gstate = G_FREE;
		s->ggroup = -1;
	}
	*out = (unsigned)i;
	return 0;
}

/* Group g open in a slot, its previous sums read when the pass
 * accumulates; then the reads ahead of the groups below it start, in the
 * slots that are free. */
static int gopen(struct zn_optswap *os, uint64_t g, struct slot **out)
{
	int rc = 0;
	if (os->gslot[g] < 0) {
		unsigned i = 0;
		if ((rc = gslot_free(os, &i)) || (rc = gslot_take(os, i, g)))
			return rc;
	}
	struct slot *s = &os->slots[os->gslot[g]];
	if (s->gstate == G_WRITING)
		return zn_error(-EPROTO, "optimizer swapper: gradients of sub-group %" PRIu64
					 " sent after all of them had come",
				g);
	if (s->gstate == G_READING && (rc = gio_finish(os, s)))
		return rc;
	for (uint64_t h = g; os->gaccumulate && h-- > 0;) {
		if (os->gslot[h] >= 0 || !os->gwritten[h] || !os->gexpect[h])
			continue;
		unsigned i = 0;
		while (i < os->nslots && os->slots[i].gstate != G_FREE)
			i++;
		if (i == os->nslots)
			break;
		if ((rc = gslot_take(os, i, h)))
			return rc;
	}
	*out = s;
	return 0;
}

/* The pieces of [first, first + n) in each group, from the highest group
 * down: fn(os, g, offset in the group, offset in the range, length). */
static int grads_pieces(struct zn_optswap *os, uint64_t first, uint64_t n, void *buf,
			int (*fn)(struct zn_optswap *, uint64_t, uint64_t, uint64_t, uint64_t, void *))
{
	int rc = grads_range(os, first, n);
	if (!rc && !os->gpass)
		rc = zn_error(-EINVAL, "optimizer swapper: gradients outside a pass "
				       "(zn_optswap_grads_begin)");
	const uint64_t S = os->cfg.sub_group_size;
	for (uint64_t b = first + n; !rc && b > first;) {
		uint64_t g = (b - 1) / S, a = ZN_MAX(first, g * S);
		rc = fn(os, g, a - g * S, a - first, b - a, buf);
		b = a;
	}
	return rc;
}

static int get_piece(struct zn_optswap *os, uint64_t g, uint64_t off, uint64_t at, uint64_t len,
		     void *dst)
{
	struct slot *s;
	int rc = gopen(os, g, &s);
	const size_t e = os->cfg.grad_bytes;
	if (!rc)
		memcpy((uint8_t *)dst + at * e, gbuf_of(os, s) + off * e, len * e);
	return rc;
}

static int put_piece(struct zn_optswap *os, uint64_t g, uint64_t off, uint64_t at, uint64_t len,
		     void *src)
{
	struct slot *s;
	const size_t e = os->cfg.grad_bytes;
	if (os->ggot[g] + len > os->gexpect[g])
		return zn_error(-EPROTO, "optimizer swapper: more gradients of sub-group %" PRIu64
					 " than were expected (%" PRIu64 " elements)",
				g, os->gexpect[g]);
	int rc = gopen(os, g, &s);
	if (rc)
		return rc;
	memcpy(gbuf_of(os, s) + off * e, (const uint8_t *)src + at * e, len * e);
	os->ggot[g] += len;
	if (os->ggot[g] < os->gexpect[g])
		return 0;
	s->gstate = G_WRITING;
	os->gwritten[g] = false; /* until this write is done */
	return zn_store_write(os->store, os->gext[g], gbuf_of(os, s), &s->gio);
}

int zn_optswap_grads_get(struct zn_optswap *os, uint64_t first, uint64_t n, void *dst)
{
	if (os->gext && os->gpass && !os->gaccumulate)
		return zn_error(-EINVAL, "optimizer swapper: previous gradients read in a pass "
					 "that does not accumulate");
	return grads_pieces(os, first, n, dst, get_piece);
}

int zn_optswap_grads_put(struct zn_optswap *os, uint64_t first, uint64_t n, const void *src)
{
	return grads_pieces(os, first, n, (void *)src, put_piece);
}

int zn_optswap_grads_end(struct zn_optswap *os)
{
	int rc = no_grads(os);
	if (rc)
		return rc;
	if (!os->gpass)
		return zn_error(-EINVAL, "optimizer swapper: no gradient pass to end");
	for (unsigned i = 0; i < os->nslots; i++) {
		struct slot *s = &os->slots[i];
		int r = s->gio ? gio_finish(os, s) : 0;
		rc = rc ? rc : r;
		if (s->gstate != G_FREE) { /* a read ahead, or a group left short */
			os->gslot[s->ggroup] = -1;
			s->gstate = G_FREE;
			s->ggroup = -1;
		}
	}
	os->gpass = false;
	for (uint64_t g = 0; g < os->groups; g++) {
		if (os->ggot[g] == os->gexpect[g])
			continue;
		os->gwritten[g] = false; /* neither this pass's sums nor the last's */
		if (!rc)
			rc = zn_error(-EPROTO, "optimizer swapper: the pass sent %" PRIu64 " of the %" PRIu64
					       " gradients expected of sub-group %" PRIu64,
				      os->ggot[g], os->gexpect[g], g);
	}
	return rc;
}
