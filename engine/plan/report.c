/* The memory plan for humans (see internal.h): zn_plan_format's table
 * and per-tier parts with exact byte counts and what to change, written
 * into the caller's buffer with snprintf's rule; zn_plan_check, the check
 * `zinc train` runs first, with its warning for a pinned shortfall and
 * its error naming the tiers that are short. */
#include "zn_common.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/internal.h"

struct out {
	char *buf;
	size_t len, pos; /* pos: the whole report's length so far (may exceed len) */
};

static void put(struct out *o, const char *fmt, ...) ZN_PRINTF(2, 3);
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = o->pos < o->len ? o->len - o->pos : 0;
	int n = vsnprintf(room ? o->buf + o->pos : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->pos += (size_t)n;
}

static const char *status_text(const struct zn_plan_tier *t, char *buf, size_t len)
{
	char a[32];
	if (t->counted_elsewhere)
		snprintf(buf, len, "see pageable host");
	else if (!t->known)
		snprintf(buf, len, "unknown");
	else if (t->fits)
		snprintf(buf, len, "fits");
	else
		snprintf(buf, len, "%s by %s", t->hard ? "SHORT" : "warning: short",
			 zn_plan_size(t->needed - t->available, a));
	return buf;
}

static const char *row_name(const struct zn_plan_tier *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", t->kind == ZN_PLAN_NVME ? "nvme " : "", t->name);
	return buf;
}

int zn_plan_format(const struct zn_plan *p, char *buf, size_t len)
{
	if (!p)
		return zn_error(-EINVAL, "zn_plan_format: no plan");
	struct out o = { buf, buf ? len : 0, 0 };
	char a[32], b[32], c[32], st[64], name[ZN_NVME_PATH_MAX + 8];
	int w = 13, wi = 40; /* "pageable host"; item names */
	for (unsigned i = 0; i < p->ntiers; i++) {
		w = ZN_MAX(w, (int)strlen(row_name(&p->tiers[i], name, sizeof(name))));
		for (unsigned k = 0; k < p->tiers[i].nitems; k++)
			wi = ZN_MAX(wi, (int)strlen(p->tiers[i].items[k].name));
	}
	w = ZN_MIN(w, 48);

	if (o.len)
		o.buf[0] = 0;
	put(&o, "memory plan: %s\n", p->summary);
	if (p->described)
		put(&o, "machine: %s\n", p->machine_text);
	put(&o, "largest tensor %s (%" PRIu64 " elements), largest layer %" PRIu64
		" elements\n\n", p->largest_name, p->largest, p->largest_layer);
	put(&o, "%-*s  %10s  %10s  %10s  %s\n", w, "tier", "needed", "available", "total",
	    "status");
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		put(&o, "%-*s  %10s  %10s  %10s  %s\n", w, row_name(t, name, sizeof(name)),
		    zn_plan_size(t->needed, a),
		    t->counted_elsewhere ? "host"
		    : t->known        ? zn_plan_size(t->available, b)
				      : "unknown",
		    t->total ? zn_plan_size(t->total, c) : "-", status_text(t, st, sizeof(st)));
	}
	uint64_t tot[3] = { 0, 0, 0 }; /* device, host (pinned + pageable), nvme */
	for (unsigned i = 0; i < p->ntiers; i++) {
		int k = p->tiers[i].kind;
		tot[k == ZN_PLAN_DEVICE ? 0 : k == ZN_PLAN_NVME ? 2 : 1] += p->tiers[i].needed;
	}
	put(&o, "totals: device %s (%" PRIu64 " bytes), host %s (%" PRIu64 " bytes), nvme %s (%"
		PRIu64 " bytes)\n", zn_plan_size(tot[0], a), tot[0], zn_plan_size(tot[1], b),
	    tot[1], zn_plan_size(tot[2], c), tot[2]);
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		put(&o, "\n%s needs %s (%" PRIu64 " bytes)", row_name(t, name, sizeof(name)),
		    zn_plan_size(t->needed, a), t->needed);
		if (t->known && !t->counted_elsewhere)
			put(&o, "; has %s (%" PRIu64 " bytes) from %s\n",
			    zn_plan_size(t->available, b), t->available, t->source);
		else
			put(&o, "; capacity: %s\n", t->source);
		for (unsigned k = 0; k < t->nitems; k++)
			put(&o, "  %-*s  %10s  (%" PRIu64 " bytes)\n", wi, t->items[k].name,
			    zn_plan_size(t->items[k].bytes, a), t->items[k].bytes);
		if (t->note[0])
			put(&o, "  note: %s\n", t->note);
	}
	bool any = false;
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		if (t->fits || !t->known || t->counted_elsewhere)
			continue;
		if (!any)
			put(&o, "\nwhat to change:\n");
		any = true;
		put(&o, "  %s%s needs %s, has %s:\n", t->hard ? "" : "(warning) ",
		    row_name(t, name, sizeof(name)), zn_plan_size(t->needed, a),
		    zn_plan_size(t->available, b));
		for (unsigned k = 0; k < t->nadvice; k++)
			put(&o, "    - %s\n", t->advice[k]);
	}
	put(&o, "\n%s\n", zn_plan_fits(p) ? "fits: yes" : "fits: NO (training would run out "
							  "of memory; see what to change above)");
	return (int)ZN_MIN(o.pos, (size_t)INT32_MAX);
}

int zn_plan_check(const struct zn_config *cfg, char *report, size_t len)
{
	struct zn_plan *p = malloc(sizeof(*p));
	char a[32], b[32], name[ZN_NVME_PATH_MAX + 8];
	int rc;

	if (report && len)
		report[0] = 0;
	if (!p)
		return zn_error(-ENOMEM, "memory plan: out of memory");
	if ((rc = zn_plan_compute(cfg, p)) != 0) {
		free(p);
		return rc;
	}
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		if (!t->hard && !t->fits)
			zn_log(zn_log_first(ZN_ONCE_UNPINNED) ? ZN_LOG_WARN : ZN_LOG_INFO,
			       "memory plan: %s needs %s but %s allows %s; the buffers that cannot "
			       "be page-locked are used unpinned (slower transfers)",
			       t->name, zn_plan_size(t->needed, a), t->source,
			       zn_plan_size(t->available, b));
	}
	if (zn_plan_fits(p)) {
		free(p);
		return 0;
	}
	char msg[1024] = "";
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		if (t->hard && !t->fits)
			zn_plan_append(msg, sizeof(msg), "%s%s needs %s but has %s (%s)",
				       msg[0] ? "; " : "",
				 row_name(t, name, sizeof(name)), zn_plan_size(t->needed, a),
				 zn_plan_size(t->available, b), t->source);
	}
	if (report && len)
		zn_plan_format(p, report, len);
	free(p);
	return zn_error(-ENOMEM, "the configuration does not fit this machine: %s (run `zinc "
				 "plan CONFIG` for the report and what to change)", msg);
}
