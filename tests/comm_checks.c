/* Checks of the comm API on any backend: see comm_checks.h. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_checks.h"
#include "zn_half.h"
#include "testutil.h"

/* Not a multiple of any rank count tested: all_reduce's chunks differ. */
#define N 100003

static void report(struct zn_comm *c, int line, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void report(struct zn_comm *c, int line, const char *what, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "rank %d: comm_checks.c:%d: %s: ", zn_comm_rank(c), line, what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

/* Each check has a `fail:` label that frees what it allocated. */
#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			report(c, __LINE__, #cond, __VA_ARGS__);           \
			goto fail;                                         \
		}                                                          \
	} while (0)
#define CALL(expr)                                                                 \
	do {                                                                       \
		int r_ = (expr);                                                   \
		if (r_) {                                                          \
			report(c, __LINE__, #expr, "returned %d: %s", r_,          \
			       zn_last_error());                                   \
			goto fail;                                                 \
		}                                                                  \
	} while (0)

uint64_t cc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void cc_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}


/* Rank r's input: n elements of dt.  Floats of very different magnitudes,
 * so that the order of the additions changes the rounded sum; with
 * `specials`, NaN on one rank at some positions, +-0 and +-Inf (by rank
 * parity) at others.  Integers over their whole range, so that sums wrap. */
static void gen(enum zn_dtype dt, void *buf, size_t n, int r, uint64_t salt, bool specials)
{
	uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(r + 1) + salt * 0x632be59bd9b4e019ull;
	for (size_t i = 0; i < n; i++) {
		uint64_t u = tu_rand(&s);
		/* fp16 spans 2^-14 ... 2^15: keep its sums finite and normal. */
		int e = dt == ZN_DTYPE_F16 ? (int)(u % 21) - 10 : (int)(u % 41) - 20;
		float f = ldexpf((float)(u >> 40) / (float)(1 << 24) - 0.5f, e);
		if (specials) {
			if (i % 211 == (size_t)(r * 13) % 211)
				f = NAN;
			else if (i % 223 == 5)
				f = r % 2 ? -0.0f : 0.0f;
			else if (i % 227 == 7)
				f = r % 2 ? -INFINITY : INFINITY;
		}
		switch (dt) {
		case ZN_DTYPE_F32: ((float *)buf)[i] = f; break;
		case ZN_DTYPE_BF16: ((uint16_t *)buf)[i] = zn_f32_to_bf16(f); break;
		case ZN_DTYPE_F16: ((uint16_t *)buf)[i] = zn_f32_to_f16(f); break;
		case ZN_DTYPE_I32: ((uint32_t *)buf)[i] = (uint32_t)(u >> 16); break;
		case ZN_DTYPE_U8: ((uint8_t *)buf)[i] = (uint8_t)(u >> 32); break;
		default: break;
		}
	}
}

static float load_f(enum zn_dtype dt, const void *p, size_t i)
{
	switch (dt) {
	case ZN_DTYPE_F32: return ((const float *)p)[i];
	case ZN_DTYPE_BF16: return zn_bf16_to_f32(((const uint16_t *)p)[i]);
	default: return zn_f16_to_f32(((const uint16_t *)p)[i]);
	}
}

/* comm.h's MAX: the larger; a NaN on any rank wins. */
static float max_f(float acc, float x)
{
	if (isnan(acc) || isnan(x))
		return isnan(acc) ? acc : x;
	return x > acc ? x : acc;
}

/* want[i] = reduction over ranks 0, 1, ... size-1, in that order, of
 * element off + i of each rank's input of `total` elements. */
static int reference(enum zn_dtype dt, enum zn_comm_redop op, int size, size_t total,
		     size_t off, size_t m, uint64_t salt, bool specials, void *want)
{
	const size_t es = zn_dtype_size(dt);
	unsigned char *in = malloc(total * es + 1);
	float *accf = malloc(m * sizeof(float) + 1);
	uint32_t *acci = malloc(m * sizeof(uint32_t) + 1);
	if (!in || !accf || !acci) {
		free(in);
		free(accf);
		free(acci);
		return -1;
	}
	for (int r = 0; r < size; r++) {
		gen(dt, in, total, r, salt, specials);
		for (size_t i = 0; i < m; i++) {
			const size_t k = off + i;
			if (zn_dtype_is_float(dt)) {
				float x = load_f(dt, in, k);
				accf[i] = r == 0 ? x : op == ZN_COMM_SUM ? accf[i] + x : max_f(accf[i], x);
			} else if (dt == ZN_DTYPE_I32) {
				uint32_t x = ((const uint32_t *)in)[k];
				acci[i] = r == 0 ? x
					  : op == ZN_COMM_SUM ? acci[i] + x
					  : (int32_t)x > (int32_t)acci[i] ? x : acci[i];
			} else {
				uint32_t x = in[k];
				acci[i] = r == 0 ? x
					  : op == ZN_COMM_SUM ? (uint8_t)(acci[i] + x)
					  : x > acci[i] ? x : acci[i];
			}
		}
	}
	for (size_t i = 0; i < m; i++) {
		switch (dt) {
		case ZN_DTYPE_F32: ((float *)want)[i] = accf[i]; break;
		case ZN_DTYPE_BF16: ((uint16_t *)want)[i] = zn_f32_to_bf16(accf[i]); break;
		case ZN_DTYPE_F16: ((uint16_t *)want)[i] = zn_f32_to_f16(accf[i]); break;
		case ZN_DTYPE_I32: ((uint32_t *)want)[i] = acci[i]; break;
		default: ((uint8_t *)want)[i] = (uint8_t)acci[i]; break;
		}
	}
	free(in);
	free(accf);
	free(acci);
	return 0;
}

/* ---- comm buffers in other memory (cc_use_device_memory) ---------------
 * The checks call the collectives through these: with host memory they
 * are the calls themselves; otherwise each stages its buffers.  An _async
 * op's staged output is copied back by do_wait(), which finds it in `staged`. */

static const struct cc_mem *mem;

void cc_use_device_memory(const struct cc_mem *m)
{
	mem = m;
}

/* A copy of host p (bytes) in mem, or NULL after a report.  in: copy the
 * contents (else the buffer only receives). */
static void *stage(const void *p, size_t bytes, bool in)
{
	void *d = mem->alloc(bytes);
	if (d && in && bytes && mem->to_device(d, p, bytes)) {
		mem->free(d);
		d = NULL;
	}
	return d;
}

/* The device buffers of the _async ops in flight. */
static struct staged {
	struct zn_comm_op *op;
	void *host, *dev;  /* output: dev copied to host after the wait */
	size_t bytes;
	void *dev_in;      /* input only: freed */
} staged[16];

static int remember(struct zn_comm_op *op, void *host, void *dev, size_t bytes, void *dev_in)
{
	for (size_t i = 0; i < sizeof(staged) / sizeof(staged[0]); i++) {
		if (!staged[i].op) {
			staged[i] = (struct staged){ op, host, dev, bytes, dev_in };
			return 0;
		}
	}
	fprintf(stderr, "comm_checks.c: more than %zu staged ops in flight\n",
		sizeof(staged) / sizeof(staged[0]));
	return -1;
}

static int do_wait(struct zn_comm_op *op)
{
	int rc = zn_comm_wait(op);
	for (size_t i = 0; mem && i < sizeof(staged) / sizeof(staged[0]); i++) {
		struct staged *s = &staged[i];
		if (s->op != op)
			continue;
		if (rc == 0 && s->bytes && mem->to_host(s->host, s->dev, s->bytes))
			rc = -EIO;
		mem->free(s->dev);
		mem->free(s->dev_in);
		*s = (struct staged){ 0 };
	}
	return rc;
}

static int do_all_reduce_async(struct zn_comm *c, void *buf, size_t n, enum zn_dtype dt,
			    enum zn_comm_redop op, struct zn_comm_op **out)
{
	if (!mem)
		return zn_comm_all_reduce_async(c, buf, n, dt, op, out);
	*out = NULL;
	const size_t bytes = n * zn_dtype_size(dt);
	void *d = buf ? stage(buf, bytes, true) : NULL;
	if (buf && !d)
		return -ENOMEM;
	int rc = zn_comm_all_reduce_async(c, d, n, dt, op, out);
	if (rc == 0)
		rc = remember(*out, buf, d, bytes, NULL);
	else
		mem->free(d);
	return rc;
}

static int do_reduce_scatter_async(struct zn_comm *c, const void *send, void *recv, size_t n,
				enum zn_dtype dt, struct zn_comm_op **out)
{
	if (!mem)
		return zn_comm_reduce_scatter_async(c, send, recv, n, dt, out);
	*out = NULL;
	const size_t bytes = n * zn_dtype_size(dt);
	void *ds = stage(send, (size_t)zn_comm_size(c) * bytes, true), *dr = stage(recv, bytes, false);
	if (!ds || !dr) {
		mem->free(ds);
		mem->free(dr);
		return -ENOMEM;
	}
	int rc = zn_comm_reduce_scatter_async(c, ds, dr, n, dt, out);
	if (rc == 0)
		rc = remember(*out, recv, dr, bytes, ds);
	else {
		mem->free(ds);
		mem->free(dr);
	}
	return rc;
}

/* send may be this rank's slot of recv (in place): so it stays. */
static int do_all_gather_async(struct zn_comm *c, const void *send, void *recv, size_t n,
			    enum zn_dtype dt, struct zn_comm_op **out)
{
	if (!mem)
		return zn_comm_all_gather_async(c, send, recv, n, dt, out);
	*out = NULL;
	const size_t row = n * zn_dtype_size(dt), bytes = (size_t)zn_comm_size(c) * row;
	const unsigned char *s = send, *r = recv;
	const bool in_place = s >= r && s < r + bytes;
	void *dr = stage(recv, bytes, in_place), *ds = in_place ? NULL : stage(send, row, true);
	if (!dr || (!in_place && !ds)) {
		mem->free(dr);
		mem->free(ds);
		return -ENOMEM;
	}
	int rc = zn_comm_all_gather_async(c, in_place ? (unsigned char *)dr + (s - r) : ds, dr, n,
					  dt, out);
	if (rc == 0)
		rc = remember(*out, recv, dr, bytes, ds);
	else {
		mem->free(dr);
		mem->free(ds);
	}
	return rc;
}

static int do_broadcast_async(struct zn_comm *c, void *buf, size_t bytes, int root,
			   struct zn_comm_op **out)
{
	if (!mem)
		return zn_comm_broadcast_async(c, buf, bytes, root, out);
	*out = NULL;
	void *d = stage(buf, bytes, true);
	if (!d)
		return -ENOMEM;
	int rc = zn_comm_broadcast_async(c, d, bytes, root, out);
	if (rc == 0)
		rc = remember(*out, buf, d, bytes, NULL);
	else
		mem->free(d);
	return rc;
}

/* The blocking calls, staged the same way. */
static int do_all_reduce(struct zn_comm *c, void *buf, size_t n, enum zn_dtype dt,
		      enum zn_comm_redop op)
{
	struct zn_comm_op *o;
	if (!mem)
		return zn_comm_all_reduce(c, buf, n, dt, op);
	int rc = do_all_reduce_async(c, buf, n, dt, op, &o);
	return rc ? rc : do_wait(o);
}

static int do_reduce_scatter(struct zn_comm *c, const void *send, void *recv, size_t n,
			  enum zn_dtype dt)
{
	struct zn_comm_op *o;
	if (!mem)
		return zn_comm_reduce_scatter(c, send, recv, n, dt);
	int rc = do_reduce_scatter_async(c, send, recv, n, dt, &o);
	return rc ? rc : do_wait(o);
}

static int do_all_gather(struct zn_comm *c, const void *send, void *recv, size_t n,
		      enum zn_dtype dt)
{
	struct zn_comm_op *o;
	if (!mem)
		return zn_comm_all_gather(c, send, recv, n, dt);
	int rc = do_all_gather_async(c, send, recv, n, dt, &o);
	return rc ? rc : do_wait(o);
}

static int do_broadcast(struct zn_comm *c, void *buf, size_t bytes, int root)
{
	struct zn_comm_op *o;
	if (!mem)
		return zn_comm_broadcast(c, buf, bytes, root);
	int rc = do_broadcast_async(c, buf, bytes, root, &o);
	return rc ? rc : do_wait(o);
}

/* Bit for bit, but any NaN equals any NaN.  0, or -1 after a report. */
static int compare(struct zn_comm *c, int line, const char *what, enum zn_dtype dt,
		   const void *got, const void *want, size_t m)
{
	const size_t es = zn_dtype_size(dt);
	for (size_t i = 0; i < m; i++) {
		const unsigned char *g = (const unsigned char *)got + i * es;
		const unsigned char *w = (const unsigned char *)want + i * es;
		if (memcmp(g, w, es) == 0)
			continue;
		if (zn_dtype_is_float(dt) && isnan(load_f(dt, got, i)) && isnan(load_f(dt, want, i)))
			continue;
		uint32_t gb = 0, wb = 0;
		memcpy(&gb, g, es);
		memcpy(&wb, w, es);
		report(c, line, what, "%s element %zu of %zu is 0x%x, want 0x%x", zn_dtype_name(dt),
		       i, m, gb, wb);
		return -1;
	}
	return 0;
}

int cc_all_reduce(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	static const size_t sizes[] = { 0, 1, N };
	unsigned char *buf = malloc(N * 4), *want = malloc(N * 4), *first = malloc(N * 4);
	int rc = -1;

	CHECK(buf && want && first, "out of memory");
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		const size_t n = sizes[si];
		for (int dt = 0; dt < ZN_DTYPE_COUNT; dt++) {
			for (int op = 0; op < ZN_COMM_REDOP_COUNT; op++) {
				const uint64_t salt = 100 + (uint64_t)(dt * 2 + op);
				gen(dt, buf, n, R, salt, true);
				CALL(do_all_reduce(c, n ? buf : NULL, n, dt, op));
				CHECK(reference(dt, op, S, n, 0, n, salt, true, want) == 0, "no memory");
				if (compare(c, __LINE__, op ? "all_reduce max" : "all_reduce sum", dt,
					    buf, want, n))
					goto fail;
			}
		}
	}
	/* The same bits from one run to the next. */
	for (int run = 0; run < 2; run++) {
		gen(ZN_DTYPE_F32, buf, N, R, 1, false);
		CALL(do_all_reduce(c, buf, N, ZN_DTYPE_F32, ZN_COMM_SUM));
		if (run == 0)
			memcpy(first, buf, N * 4);
		else
			CHECK(memcmp(first, buf, N * 4) == 0, "a second run gave other bits");
	}
	rc = 0;
fail:
	free(buf);
	free(want);
	free(first);
	return rc;
}

int cc_reduce_scatter(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	enum { P = 4099 };
	unsigned char *send = malloc((size_t)S * P * 4), *recv = malloc(P * 4), *want = malloc(P * 4);
	int rc = -1;

	CHECK(send && recv && want, "out of memory");
	for (int dt = 0; dt < ZN_DTYPE_COUNT; dt++) {
		const uint64_t salt = 200 + (uint64_t)dt;
		gen(dt, send, (size_t)S * P, R, salt, true);
		CALL(do_reduce_scatter(c, send, recv, P, dt));
		CHECK(reference(dt, ZN_COMM_SUM, S, (size_t)S * P, (size_t)R * P, P, salt, true,
				want) == 0, "no memory");
		if (compare(c, __LINE__, "reduce_scatter", dt, recv, want, P))
			goto fail;
	}
	rc = 0;
fail:
	free(send);
	free(recv);
	free(want);
	return rc;
}

int cc_all_gather(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	static const struct { enum zn_dtype dt; size_t n; } cases[] = {
		{ ZN_DTYPE_U8, 3 }, { ZN_DTYPE_I32, 1000 }, { ZN_DTYPE_F32, 300001 },
	};
	unsigned char *send = NULL, *recv = NULL, *want = NULL;
	int rc = -1;

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		const enum zn_dtype dt = cases[k].dt;
		const size_t n = cases[k].n, es = zn_dtype_size(dt), row = n * es;
		send = malloc(row);
		recv = malloc((size_t)S * row);
		want = malloc((size_t)S * row);
		CHECK(send && recv && want, "out of memory");
		for (int r = 0; r < S; r++)
			gen(dt, want + (size_t)r * row, n, r, 300 + k, true);
		gen(dt, send, n, R, 300 + k, true);
		memset(recv, 0xa5, (size_t)S * row);
		CALL(do_all_gather(c, send, recv, n, dt));
		CHECK(memcmp(recv, want, (size_t)S * row) == 0, "%s x %zu: gathered bytes differ",
		      zn_dtype_name(dt), n);
		/* In place: send is this rank's slot of recv. */
		memset(recv, 0xff, (size_t)S * row);
		memcpy(recv + (size_t)R * row, send, row);
		CALL(do_all_gather(c, recv + (size_t)R * row, recv, n, dt));
		CHECK(memcmp(recv, want, (size_t)S * row) == 0,
		      "%s x %zu in place: gathered bytes differ", zn_dtype_name(dt), n);
		free(send);
		free(recv);
		free(want);
		send = recv = want = NULL;
	}
	rc = 0;
fail:
	free(send);
	free(recv);
	free(want);
	return rc;
}

int cc_broadcast(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	static const size_t sizes[] = { 64, ((size_t)5 << 20) + 3 };
	unsigned char *buf = malloc(sizes[1]), *want = malloc(sizes[1]);
	int rc = -1;

	CHECK(buf && want, "out of memory");
	for (size_t k = 0; k < 2; k++) {
		for (int root = 0; root < S; root++) {
			const size_t bytes = sizes[k];
			tu_fill_random(want, bytes, 1000 + (uint64_t)root);
			if (R == root)
				memcpy(buf, want, bytes);
			else
				tu_fill_random(buf, bytes, 2000 + (uint64_t)R);
			CALL(do_broadcast(c, buf, bytes, root));
			CHECK(memcmp(buf, want, bytes) == 0, "%zu bytes from root %d differ", bytes,
			      root);
		}
	}
	rc = 0;
fail:
	free(buf);
	free(want);
	return rc;
}

int cc_barrier(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	int rc = -1;

	CALL(zn_comm_barrier(c));
	if (R == S - 1)
		cc_sleep_ms(200);
	const uint64_t t0 = cc_now_ns();
	CALL(zn_comm_barrier(c));
	const uint64_t dt = cc_now_ns() - t0;
	if (R != S - 1)
		CHECK(dt >= 150000000ull, "the barrier returned after %.3f s, before the last rank "
		      "entered it (200 ms late)", (double)dt / 1e9);
	CALL(zn_comm_barrier(c));
	rc = 0;
fail:
	return rc;
}

int cc_async_together(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	enum { P2 = 513, P3 = 1001, B4 = 4097, N6 = 777 };
	float *a1 = malloc(N * 4), *w1 = malloc(N * 4);
	int32_t *s2 = malloc((size_t)S * P2 * 4), r2[P2], w2[P2];
	uint8_t *s3 = malloc(P3), *r3 = malloc((size_t)S * P3), *w3 = malloc((size_t)S * P3);
	uint8_t b4[B4], w4[B4];
	uint16_t a6[N6], w6[N6];
	struct zn_comm_op *ops[6] = { NULL };
	int rc = -1, n_ops = 0;

	CHECK(a1 && w1 && s2 && s3 && r3 && w3, "out of memory");
	gen(ZN_DTYPE_F32, a1, N, R, 11, false);
	gen(ZN_DTYPE_I32, s2, (size_t)S * P2, R, 12, false);
	gen(ZN_DTYPE_U8, s3, P3, R, 13, false);
	tu_fill_random(b4, B4, R == S - 1 ? 14 : 15 + (uint64_t)R);
	tu_fill_random(w4, B4, 14);
	gen(ZN_DTYPE_BF16, a6, N6, R, 16, true);

	CALL(do_all_reduce_async(c, a1, N, ZN_DTYPE_F32, ZN_COMM_SUM, &ops[n_ops++]));
	CALL(do_reduce_scatter_async(c, s2, r2, P2, ZN_DTYPE_I32, &ops[n_ops++]));
	CALL(do_all_gather_async(c, s3, r3, P3, ZN_DTYPE_U8, &ops[n_ops++]));
	CALL(do_broadcast_async(c, b4, B4, S - 1, &ops[n_ops++]));
	CALL(zn_comm_barrier_async(c, &ops[n_ops++]));
	CALL(do_all_reduce_async(c, a6, N6, ZN_DTYPE_BF16, ZN_COMM_MAX, &ops[n_ops++]));
	/* Waited for in reverse: the FIFO has run them all by the first wait. */
	while (n_ops > 0) {
		struct zn_comm_op *op = ops[--n_ops];
		ops[n_ops] = NULL;
		CALL(do_wait(op));
	}
	CHECK(reference(ZN_DTYPE_F32, ZN_COMM_SUM, S, N, 0, N, 11, false, w1) == 0, "no memory");
	if (compare(c, __LINE__, "async all_reduce", ZN_DTYPE_F32, a1, w1, N))
		goto fail;
	CHECK(reference(ZN_DTYPE_I32, ZN_COMM_SUM, S, (size_t)S * P2, (size_t)R * P2, P2, 12, false,
			w2) == 0, "no memory");
	if (compare(c, __LINE__, "async reduce_scatter", ZN_DTYPE_I32, r2, w2, P2))
		goto fail;
	for (int r = 0; r < S; r++)
		gen(ZN_DTYPE_U8, w3 + (size_t)r * P3, P3, r, 13, false);
	CHECK(memcmp(r3, w3, (size_t)S * P3) == 0, "async all_gather: bytes differ");
	CHECK(memcmp(b4, w4, B4) == 0, "async broadcast: bytes differ");
	CHECK(reference(ZN_DTYPE_BF16, ZN_COMM_MAX, S, N6, 0, N6, 16, true, w6) == 0, "no memory");
	if (compare(c, __LINE__, "async all_reduce max", ZN_DTYPE_BF16, a6, w6, N6))
		goto fail;
	rc = 0;
fail:
	/* After a failure, ops still enqueued are waited for (and freed). */
	while (n_ops > 0)
		if (ops[--n_ops])
			do_wait(ops[n_ops]);
	free(a1);
	free(w1);
	free(s2);
	free(s3);
	free(r3);
	free(w3);
	return rc;
}

int cc_async_overlap(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	enum { M = 1 << 20 };
	float *buf = malloc(M * sizeof(float));
	struct zn_comm_op *op = NULL;
	int rc = -1;

	CHECK(buf, "out of memory");
	for (size_t i = 0; i < M; i++)
		buf[i] = (float)(R + 1);
	CALL(zn_comm_barrier(c));
	if (R == S - 1)
		cc_sleep_ms(300);
	const uint64_t t0 = cc_now_ns();
	CALL(do_all_reduce_async(c, buf, M, ZN_DTYPE_F32, ZN_COMM_SUM, &op));
	const uint64_t t_enq = cc_now_ns() - t0;
	volatile double work = 0;
	unsigned rounds = 0;
	while (cc_now_ns() - t0 < 100000000ull) { /* 100 ms of "compute" */
		for (int i = 0; i < 1000; i++)
			work += i * 0.5;
		rounds++;
	}
	struct zn_comm_op *w = op;
	op = NULL;
	CALL(do_wait(w));
	const uint64_t t_done = cc_now_ns() - t0;
	if (R == 0) {
		CHECK(t_enq < 50000000ull, "enqueueing took %.3f s", (double)t_enq / 1e9);
		CHECK(t_done >= 200000000ull, "the op finished after %.3f s, before the last rank "
		      "joined (300 ms late)", (double)t_done / 1e9);
		CHECK(rounds > 0, "no compute while the op was in flight");
	}
	for (size_t i = 0; i < M; i += 4097)
		CHECK(buf[i] == (float)(S * (S + 1) / 2), "element %zu is %g", i, (double)buf[i]);
	rc = 0;
fail:
	if (op)
		do_wait(op);
	free(buf);
	return rc;
}

int cc_timeout(struct zn_comm *c)
{
	const int R = zn_comm_rank(c), S = zn_comm_size(c);
	float v[16] = { 1 };
	char want[32];
	int rc = -1;

	CALL(zn_comm_barrier(c));
	CALL(zn_comm_set_timeout(c, 1.0));
	if (R == S - 1) {
		/* Skips the all_reduce, alive until the others have timed out
		 * (closing its links earlier would make them fail with -EPIPE). */
		cc_sleep_ms(2500);
		return 0;
	}
	const uint64_t t0 = cc_now_ns();
	int e = do_all_reduce(c, v, 16, ZN_DTYPE_F32, ZN_COMM_SUM);
	const uint64_t dt = cc_now_ns() - t0;
	fprintf(stderr, "# rank %d: %s\n", R, zn_last_error());
	CHECK(e == -ETIMEDOUT, "all_reduce returned %d: %s", e, zn_last_error());
	snprintf(want, sizeof(want), "rank %d", S - 1);
	CHECK(strstr(zn_last_error(), "all_reduce") && strstr(zn_last_error(), want),
	      "the message does not name all_reduce and %s: %s", want, zn_last_error());
	CHECK(dt >= 900000000ull && dt < 30000000000ull, "timed out after %.3f s, not 1 s",
	      (double)dt / 1e9);
	e = zn_comm_barrier(c);
	CHECK(e == -EPIPE && strstr(zn_last_error(), "unusable"),
	      "a collective after the timeout returned %d: %s", e, zn_last_error());
	rc = 0;
fail:
	return rc;
}

int cc_reduce_rows(struct zn_comm *c, cc_reduce_fn reduce)
{
	static const size_t sizes[] = { 1, 1000, N };
	unsigned char *rows = malloc((size_t)5 * N * 4), *got = malloc(N * 4), *want = malloc(N * 4);
	int rc = -1;

	CHECK(rows && got && want, "out of memory");
	for (int size = 1; size <= 5; size++) {
		for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
			const size_t m = sizes[si];
			for (int dt = 0; dt < ZN_DTYPE_COUNT; dt++) {
				const size_t row = m * zn_dtype_size(dt);
				for (int op = 0; op < ZN_COMM_REDOP_COUNT; op++) {
					const uint64_t salt = 400 + (uint64_t)(dt * 2 + op);
					for (int p = 0; p < size; p++)
						gen(dt, rows + (size_t)p * row, m, p, salt, true);
					memset(got, 0xa5, row);
					CHECK(reduce(dt, op, got, rows, size, m) == 0,
					      "%s %s of %d rows of %zu failed", zn_dtype_name(dt),
					      op ? "max" : "sum", size, m);
					CHECK(reference(dt, op, size, m, 0, m, salt, true, want) == 0,
					      "no memory");
					if (compare(c, __LINE__, op ? "reduce max" : "reduce sum", dt, got,
						    want, m)) {
						fprintf(stderr, "  (%d rows of %zu)\n", size, m);
						goto fail;
					}
				}
			}
		}
	}
	rc = 0;
fail:
	free(rows);
	free(got);
	free(want);
	return rc;
}
