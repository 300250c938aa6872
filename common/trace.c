/* Trace recorder: Chrome trace-event JSON ("X" complete events). */
#include "zn_common.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zinc/json.h"
#include "zinc/trace.h"

struct span {
	const char *name, *cat, *track;
	uint64_t start, end, bytes;
};

struct zn_trace {
	pthread_mutex_t lock;
	uint64_t cap, n, dropped;
	uint64_t t0;        /* ns; timestamps are written relative to it */
	struct span spans[];
};

struct zn_trace *zn_trace_create(uint64_t max_spans)
{
	if (max_spans == 0 || max_spans > (1ull << 32)) {
		zn_set_error("zn_trace_create: max_spans %" PRIu64 " must be between 1 and 2^32",
			     max_spans);
		return NULL;
	}
	struct zn_trace *t = calloc(1, sizeof(*t) + max_spans * sizeof(struct span));
	if (!t) {
		zn_set_error("zn_trace_create: out of memory for %" PRIu64 " spans", max_spans);
		return NULL;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->cap = max_spans;
	t->t0 = zn_now_ns();
	return t;
}

void zn_trace_destroy(struct zn_trace *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t);
}

uint64_t zn_trace_now(void)
{
	return zn_now_ns();
}

void zn_trace_span(struct zn_trace *t, const char *name, const char *cat, const char *track,
		   uint64_t start_ns, uint64_t end_ns, uint64_t bytes)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	if (t->n < t->cap)
		t->spans[t->n++] = (struct span){ name, cat, track, start_ns, end_ns, bytes };
	else
		t->dropped++;
	pthread_mutex_unlock(&t->lock);
}

void zn_trace_reset(struct zn_trace *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->n = 0;
	t->dropped = 0;
	t->t0 = zn_now_ns();
	pthread_mutex_unlock(&t->lock);
}

uint64_t zn_trace_count(const struct zn_trace *t)
{
	return t ? t->n : 0;
}

uint64_t zn_trace_dropped(const struct zn_trace *t)
{
	return t ? t->dropped : 0;
}

int zn_trace_write(struct zn_trace *t, const char *path)
{
	char tmp[4096];
	const char *tracks[256];
	unsigned ntracks = 0;
	int rc = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return zn_error(-ENAMETOOLONG, "trace path '%s' is too long", path);
	FILE *f = fopen(tmp, "we");
	if (!f) {
		int e = errno;
		return zn_error(-e, "cannot write the trace to '%s': %s", tmp, strerror(e));
	}
	pthread_mutex_lock(&t->lock);
	/* Chrome's trace-event format, compact (traces run to many thousands
	 * of spans). */
	struct zn_json j;
	zn_json_init(&j, f, ZN_JSON_LINE);
	zn_json_begin_object(&j);
	zn_json_key(&j, "displayTimeUnit");
	zn_json_string(&j, "ms");
	zn_json_key(&j, "traceEvents");
	zn_json_begin_array(&j);
	for (uint64_t i = 0; i < t->n; i++) {
		const struct span *s = &t->spans[i];
		/* One viewer row ("thread") per track, named by metadata below. */
		unsigned tid = 0;
		while (tid < ntracks && strcmp(tracks[tid], s->track) != 0)
			tid++;
		if (tid == ntracks && ntracks < ZN_ARRAY_SIZE(tracks))
			tracks[ntracks++] = s->track;
		uint64_t start = s->start > t->t0 ? s->start - t->t0 : 0;
		uint64_t dur = s->end > s->start ? s->end - s->start : 0;
		zn_json_begin_object(&j);
		zn_json_key(&j, "name");
		zn_json_string(&j, s->name);
		zn_json_key(&j, "cat");
		zn_json_string(&j, s->cat);
		zn_json_key(&j, "ph");
		zn_json_string(&j, "X");
		zn_json_key(&j, "pid");
		zn_json_uint(&j, 1);
		zn_json_key(&j, "tid");
		zn_json_uint(&j, tid + 1);
		/* Trace-event times are microseconds; keep ns precision. */
		zn_json_key(&j, "ts");
		zn_json_printf(&j, "%.3f", (double)start / 1e3);
		zn_json_key(&j, "dur");
		zn_json_printf(&j, "%.3f", (double)dur / 1e3);
		if (s->bytes) {
			zn_json_key(&j, "args");
			zn_json_begin_object(&j);
			zn_json_key(&j, "bytes");
			zn_json_uint(&j, s->bytes);
			zn_json_end_object(&j);
		}
		zn_json_end_object(&j);
	}
	for (unsigned i = 0; i < ntracks; i++) {
		zn_json_begin_object(&j);
		zn_json_key(&j, "name");
		zn_json_string(&j, "thread_name");
		zn_json_key(&j, "ph");
		zn_json_string(&j, "M");
		zn_json_key(&j, "pid");
		zn_json_uint(&j, 1);
		zn_json_key(&j, "tid");
		zn_json_uint(&j, i + 1);
		zn_json_key(&j, "args");
		zn_json_begin_object(&j);
		zn_json_key(&j, "name");
		zn_json_string(&j, tracks[i]);
		zn_json_end_object(&j);
		zn_json_end_object(&j);
	}
	zn_json_end_array(&j);
	zn_json_key(&j, "otherData");
	zn_json_begin_object(&j);
	zn_json_key(&j, "dropped_spans");
	zn_json_uint(&j, t->dropped);
	zn_json_end_object(&j);
	zn_json_end_object(&j);
	pthread_mutex_unlock(&t->lock);

	if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0)
		rc = errno ? -errno : -EIO;
	if (fclose(f) != 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) != 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return zn_error(rc, "cannot write the trace to '%s': %s", path, strerror(-rc));
	}
	return 0;
}
