/* zinc nvme-bench — what do these disks give, and how should `aio` be set?
 *
 * Sweeps block size x queue depth x rings (intra_op_parallelism) over one
 * scratch file, sequentially, through the same engine the swapper uses:
 * the file is streamed as requests of several pieces each, with four
 * requests outstanding per stream so every ring's queue stays full.  `rw`
 * runs a read stream and a write stream at once over the two halves of the
 * file, the pattern of the pipelined optimizer swapper.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "commands.h"
#include "options.h"
#include "util.h"
#include "zinc/aio.h"
#include "zinc/hostmem.h"
#include "zinc/json.h"

#define MAXL 16
#define NOUT 4            /* requests outstanding per stream */
#define MAX_BUFFER (1ull << 30) /* bytes of I/O buffers the grid may need */

enum rw { RW_WRITE, RW_READ, RW_RW, RW_COUNT };
/* Writes run first so that reads find data on the disk. */
static const char *const rw_names[RW_COUNT] = { "write", "read", "rw" };

struct bench {
	const char *dir;
	const char *file;
	uint64_t size;
	uint64_t bs[MAXL];
	unsigned nbs;
	unsigned qd[MAXL], nqd;
	unsigned th[MAXL], nth;
	bool rw[RW_COUNT];
	unsigned loops;
	bool json, no_fixed, sqpoll, single_submit, no_overlap, no_huge;

	/* run time */
	char fname[PATH_MAX];
	bool delete_file;
	uint8_t *buf;
	size_t buflen;
	double huge_fraction;
};

struct result {
	enum rw rw;
	uint64_t bs;
	unsigned qd, th;
	double mib_s, iops;
	uint64_t p50_ns, p99_ns;
	bool fixed;
};

static volatile sig_atomic_t interrupted;

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}


static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* ---- options ------------------------------------------------------------ */

static int set_size(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	if (zn_parse_size(a, &b->size) != 0 || b->size == 0) {
		*why = "a byte count above zero, e.g. 4G or 512M";
		return -1;
	}
	return 0;
}

static int set_bs(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	if (parse_size_list(a, b->bs, MAXL, &b->nbs) != 0) {
		*why = "a comma-separated list of sizes, e.g. 128K,1M";
		return -1;
	}
	for (unsigned i = 0; i < b->nbs; i++) {
		if (b->bs[i] == 0 || b->bs[i] % 4096 || b->bs[i] > (1ull << 30)) {
			*why = "each block size must be a multiple of 4096 bytes, at most 1G";
			return -1;
		}
	}
	return 0;
}

static int set_uint_list(unsigned *out, unsigned *n, const char *a, const char **why)
{
	if (parse_uint_list(a, out, MAXL, n) != 0) {
		*why = "a comma-separated list of integers, e.g. 8,32";
		return -1;
	}
	for (unsigned i = 0; i < *n; i++)
		if (out[i] == 0) {
			*why = "values must be at least 1";
			return -1;
		}
	return 0;
}

static int set_qd(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	if (set_uint_list(b->qd, &b->nqd, a, why))
		return -1;
	for (unsigned i = 0; i < b->nqd; i++)
		if (b->qd[i] > 4096) {
			*why = "queue depth is at most 4096";
			return -1;
		}
	return 0;
}

static int set_threads(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	if (set_uint_list(b->th, &b->nth, a, why))
		return -1;
	for (unsigned i = 0; i < b->nth; i++)
		if (b->th[i] > 256) {
			*why = "at most 256 rings";
			return -1;
		}
	return 0;
}

static int set_rw(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	char buf[64];
	memset(b->rw, 0, sizeof(b->rw));
	snprintf(buf, sizeof(buf), "%s", a);
	int n = 0;
	for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int k = -1;
		for (int i = 0; i < RW_COUNT; i++)
			if (strcmp(t, rw_names[i]) == 0)
				k = i;
		if (k < 0) {
			*why = "a list of read, write and rw";
			return -1;
		}
		b->rw[k] = true;
		n++;
	}
	if (!n) {
		*why = "a list of read, write and rw";
		return -1;
	}
	return 0;
}

static const struct opt options[] = {
	OPT_STR("path", "DIR", NULL, "directory on the disk to measure (a scratch file is made "
		"there)", struct bench, dir),
	OPT_STR("file", "FILE", NULL, "use this file instead (kept afterwards; made if missing)",
		struct bench, file),
	OPT_CALL("size", "BYTES", "1G", "bytes per pass (K, M, G suffixes)", set_size),
	OPT_CALL("block-size", "LIST", "128K,1M", "block sizes to try (aio.block_size)", set_bs),
	OPT_CALL("queue-depth", "LIST", "8,32", "queue depths to try (aio.queue_depth)", set_qd),
	OPT_CALL("threads", "LIST", "1,2", "rings to try (aio.intra_op_parallelism)", set_threads),
	OPT_CALL("rw", "LIST", "read,write", "directions: read, write, rw (concurrent both)", set_rw),
	OPT_NUM("loops", "N", "3", "passes per setting; the median is reported", struct bench,
		loops, 1, 64),
	OPT_BOOL("json", "print one JSON object instead of the table", struct bench, json),
	OPT_BOOL("no-fixed-buffers", "do not register buffers (aio.use_fixed_buffers: false)",
		 struct bench, no_fixed),
	OPT_BOOL("sqpoll", "kernel submission polling (aio.sqpoll: true)", struct bench, sqpoll),
	OPT_BOOL("single-submit", "one system call per I/O (aio.single_submit: true)",
		 struct bench, single_submit),
	OPT_BOOL("no-overlap-events", "submit in whole batches (aio.overlap_events: false)",
		 struct bench, no_overlap),
	OPT_BOOL("no-huge-pages", "I/O buffers on 4 KiB pages (to compare with tools that use "
		 "malloc)", struct bench, no_huge),
};


/* ---- the run --------------------------------------------------------------- */

static void cleanup(struct bench *b)
{
	if (b->delete_file && b->fname[0])
		unlink(b->fname);
	b->delete_file = false;
	if (b->buf)
		zn_hostmem_free(b->buf, b->buflen);
	b->buf = NULL;
}

static uint64_t req_len_for(uint64_t bs, unsigned qd, unsigned th, uint64_t stream_len)
{
	/* Half of all rings' queues per request, so NOUT requests keep twice
	 * the queue depth available and no ring starves between requests. */
	uint64_t len = max_u64((uint64_t)th * bs, (uint64_t)th * qd * bs / 2);
	len = len / bs * bs;
	return len < stream_len ? len : stream_len;
}

struct stream {
	struct zn_aio_file *f;
	bool write;
	uint64_t next, end;      /* next offset to submit, end of the range */
	uint8_t *slots;          /* NOUT slots of req_len bytes */
	uint64_t req_len;
	struct zn_aio_req *req[NOUT];
	size_t len[NOUT];
	uint64_t t[NOUT];        /* submission time, ns */
	unsigned head, count;    /* FIFO of outstanding requests */
};

static int stream_submit(struct stream *s)
{
	while (s->count < NOUT && s->next < s->end && !interrupted) {
		unsigned i = (s->head + s->count) % NOUT;
		size_t len = (size_t)min_u64(s->req_len, s->end - s->next);
		uint8_t *buf = s->slots + (size_t)i * s->req_len;
		int rc = s->write ? zn_aio_write(s->f, buf, len, s->next, &s->req[i])
				  : zn_aio_read(s->f, buf, len, s->next, &s->req[i]);
		if (rc)
			return rc;
		s->len[i] = len;
		s->t[i] = tool_now_ns();
		s->next += len;
		s->count++;
	}
	return 0;
}

static int stream_reap_one(struct stream *s)
{
	unsigned i = s->head;
	ssize_t got = zn_aio_wait(s->req[i]);
	s->head = (s->head + 1) % NOUT;
	s->count--;
	if (got < 0)
		return (int)got;
	if ((size_t)got != s->len[i]) {
		fprintf(stderr, "zinc nvme-bench: short read: the file ends before --size\n");
		return -EIO;
	}
	return 0;
}

/* One pass over the file in direction rw; seconds elapsed in *secs. */
static int run_pass(struct bench *b, struct zn_aio_file *f, enum rw rw, uint64_t bs, unsigned qd,
		    unsigned th, double *secs)
{
	struct stream st[2];
	unsigned ns = rw == RW_RW ? 2 : 1;
	uint64_t stream_len = rw == RW_RW ? b->size / 2 / bs * bs : b->size;
	uint64_t req_len = req_len_for(bs, qd, th, stream_len);
	int rc = 0;

	for (unsigned k = 0; k < ns; k++) {
		st[k] = (struct stream){
			.f = f,
			.write = rw == RW_WRITE || (rw == RW_RW && k == 1),
			.next = k * stream_len,
			.end = (k + 1) * stream_len,
			.slots = b->buf + (size_t)k * NOUT * req_len,
			.req_len = req_len,
		};
	}
	uint64_t t0 = tool_now_ns();
	for (unsigned k = 0; k < ns && !rc; k++)
		rc = stream_submit(&st[k]);
	while (!rc) {
		/* Reap whichever stream's oldest request is done; if none is,
		 * block on the one submitted longest ago. */
		int pick = -1;
		for (unsigned k = 0; k < ns; k++)
			if (st[k].count && zn_aio_done(st[k].req[st[k].head]))
				pick = (int)k;
		if (pick < 0)
			for (unsigned k = 0; k < ns; k++)
				if (st[k].count &&
				    (pick < 0 || st[k].t[st[k].head] < st[pick].t[st[pick].head]))
					pick = (int)k;
		if (pick < 0)
			break; /* everything done */
		rc = stream_reap_one(&st[pick]);
		if (!rc)
			rc = stream_submit(&st[pick]);
	}
	/* On error or interrupt, drain what is still in flight. */
	for (unsigned k = 0; k < ns; k++)
		while (st[k].count)
			stream_reap_one(&st[k]);
	*secs = (double)(tool_now_ns() - t0) / 1e9;
	if (!rc && interrupted)
		rc = -EINTR;
	return rc;
}

static void config_for(const struct bench *b, uint64_t bs, unsigned qd, unsigned th,
		       struct zn_aio_config *cfg)
{
	zn_aio_config_default(cfg);
	cfg->block_size = bs;
	cfg->queue_depth = qd;
	cfg->intra_op_parallelism = th;
	cfg->use_fixed_buffers = !b->no_fixed;
	cfg->sqpoll = b->sqpoll;
	cfg->single_submit = b->single_submit;
	cfg->overlap_events = !b->no_overlap;
}

static const char *size_short(uint64_t v, char *buf, size_t len)
{
	if (v % (1ull << 30) == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(v >> 30));
	else if (v % (1ull << 20) == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(v >> 20));
	else
		snprintf(buf, len, "%lluK", (unsigned long long)(v >> 10));
	return buf;
}

/* Run one grid point `loops` times; fills *res. */
static int run_setting(struct bench *b, enum rw rw, uint64_t bs, unsigned qd, unsigned th,
		       struct result *res, unsigned idx, unsigned total, bool report)
{
	struct zn_aio_config cfg;
	struct zn_aio *aio;
	struct zn_aio_file *f;
	struct zn_aio_stats st, sum;
	double mibs[64], iops[64];
	unsigned loops = report ? b->loops : 1;
	int rc;

	config_for(b, bs, qd, th, &cfg);
	aio = zn_aio_create(&cfg);
	if (!aio)
		return -EINVAL;
	rc = zn_aio_open(aio, b->fname, ZN_AIO_RDWR, 0, &f);
	if (rc)
		goto out_aio;
	rc = zn_aio_register_buffer(aio, b->buf, b->buflen);
	if (rc)
		goto out_file;
	memset(&sum, 0, sizeof(sum));
	for (unsigned l = 0; l < loops && !rc; l++) {
		double secs;
		if (report && isatty(STDERR_FILENO)) {
			char bsz[32];
			fprintf(stderr, "\r\033[K[%u/%u] %s block %s qd %u threads %u pass %u/%u",
				idx, total, rw_names[rw], size_short(bs, bsz, sizeof(bsz)), qd, th,
				l + 1, loops);
		}
		zn_aio_stats_reset(aio);
		rc = run_pass(b, f, rw, bs, qd, th, &secs);
		if (rc)
			break;
		zn_aio_stats_get(aio, &st);
		uint64_t bytes = st.bytes_read + st.bytes_written;
		mibs[l] = (double)bytes / (1024.0 * 1024.0) / secs;
		iops[l] = (double)st.ios / secs;
		sum.ios += st.ios;
		sum.fixed_ios += st.fixed_ios;
		for (size_t i = 0; i < ARRAY_SIZE(sum.lat_hist); i++)
			sum.lat_hist[i] += st.lat_hist[i];
	}
	if (!rc && report) {
		*res = (struct result){
			.rw = rw, .bs = bs, .qd = qd, .th = th,
			.mib_s = tool_median(mibs, loops), .iops = tool_median(iops, loops),
			.p50_ns = zn_aio_stats_percentile(&sum, 50),
			.p99_ns = zn_aio_stats_percentile(&sum, 99),
			.fixed = sum.fixed_ios > 0,
		};
	}
	zn_aio_unregister_buffer(aio, b->buf);
out_file:
	zn_aio_close(f);
out_aio:
	zn_aio_destroy(aio);
	return rc;
}

/* ---- output ---------------------------------------------------------------- */

static void json_result(struct zn_json *j, const struct result *r)
{
	zn_json_begin_object(j);
	zn_json_key(j, "rw");
	zn_json_string(j, rw_names[r->rw]);
	zn_json_key(j, "block_size");
	zn_json_uint(j, r->bs);
	zn_json_key(j, "queue_depth");
	zn_json_uint(j, r->qd);
	zn_json_key(j, "threads");
	zn_json_uint(j, r->th);
	zn_json_key(j, "mib_s");
	zn_json_double(j, round(r->mib_s * 10) / 10);
	zn_json_key(j, "iops");
	zn_json_double(j, round(r->iops));
	zn_json_key(j, "p50_us");
	zn_json_double(j, round((double)r->p50_ns / 100.0) / 10);
	zn_json_key(j, "p99_us");
	zn_json_double(j, round((double)r->p99_ns / 100.0) / 10);
	zn_json_key(j, "fixed_buffers");
	zn_json_bool(j, r->fixed);
	zn_json_end_object(j);
}

/* The grid point to recommend: the best sum of read and write throughput
 * among settings measured both ways (DeepSpeed's tuner rule), else the best
 * of whatever was measured. */
static const struct result *pick_aio(const struct result *res, unsigned n)
{
	const struct result *best = NULL;
	double best_v = -1;

	for (unsigned i = 0; i < n; i++) {
		if (res[i].rw != RW_READ)
			continue;
		for (unsigned k = 0; k < n; k++) {
			if (res[k].rw == RW_WRITE && res[k].bs == res[i].bs &&
			    res[k].qd == res[i].qd && res[k].th == res[i].th &&
			    res[i].mib_s + res[k].mib_s > best_v) {
				best_v = res[i].mib_s + res[k].mib_s;
				best = &res[i];
			}
		}
	}
	if (best)
		return best;
	for (unsigned i = 0; i < n; i++)
		if (res[i].mib_s > best_v) {
			best_v = res[i].mib_s;
			best = &res[i];
		}
	return best;
}

static void print_aio_block(FILE *out, const struct bench *b, const struct result *r,
			    const char *indent)
{
	struct zn_aio_config cfg;
	char v[64];

	config_for(b, r->bs, r->qd, r->th, &cfg);
	fprintf(out, "%saio:\n", indent);
	/* Exactly the keys of the config table, so the block parses back. */
	for (size_t i = 0; i < zn_aio_key_table.nkeys; i++) {
		const struct zn_key *k = &zn_aio_key_table.keys[i];
		fprintf(out, "%s  %s: %s\n", indent, k->name, zn_keys_format(k, &cfg, v, sizeof(v)));
	}
}

/* ---- main ------------------------------------------------------------------ */

static int prepare_file(struct bench *b)
{
	struct statvfs vfs;
	struct stat st;
	char need[32], have[32];
	uint64_t existing = 0;

	if (b->file) {
		snprintf(b->fname, sizeof(b->fname), "%s", b->file);
		if (stat(b->fname, &st) == 0) {
			if (!S_ISREG(st.st_mode)) {
				fprintf(stderr, "zinc nvme-bench: '%s' is not a regular file\n",
					b->fname);
				return 2;
			}
			existing = (uint64_t)st.st_blocks * 512;
		}
		b->delete_file = false;
	} else {
		if (stat(b->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "zinc nvme-bench: --path '%s' is not a directory: %s\n",
				b->dir, stat(b->dir, &st) ? strerror(errno) : "not a directory");
			return 2;
		}
		if (access(b->dir, W_OK | X_OK) != 0) {
			fprintf(stderr, "zinc nvme-bench: cannot write in '%s': %s\n", b->dir,
				strerror(errno));
			return 2;
		}
		snprintf(b->fname, sizeof(b->fname), "%s/zinc-nvme-bench.%d.tmp", b->dir,
			 (int)getpid());
		/* A run swapping in this directory shares the disk with the
		 * measurement: its scratch file is its own, but the figures
		 * would count the run's traffic against the disk.  Said, and
		 * measured anyway. */
		tool_warn_if_swapping("nvme-bench", b->dir);
	}
	/* Free space is counted in the directory that holds the file. */
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", b->fname);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	if (statvfs(dir, &vfs) != 0) {
		fprintf(stderr, "zinc nvme-bench: cannot inspect '%s': %s\n", dir, strerror(errno));
		return 2;
	}
	uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (existing < b->size && b->size - existing > avail) {
		fprintf(stderr,
			"zinc nvme-bench: '%s' has %s free, but --size needs %s; free space or "
			"lower --size\n",
			dir, zn_format_size(avail, have, sizeof(have)),
			zn_format_size(b->size - existing, need, sizeof(need)));
		return 2;
	}
	return 0;
}

int cmd_nvme_bench(int argc, char **argv)
{
	struct bench b = {
		.size = 1ull << 30,
		.bs = { 128 << 10, 1 << 20 }, .nbs = 2,
		.qd = { 8, 32 }, .nqd = 2,
		.th = { 1, 2 }, .nth = 2,
		.rw = { [RW_READ] = true, [RW_WRITE] = true },
		.loops = 3,
	};
	static const char synopsis[] = "--path DIR [options]";
	struct result *res = NULL;
	unsigned nres = 0;
	int status = 1, rc;

	rc = opts_command("zinc nvme-bench", options, ARRAY_SIZE(options), argc, argv, &b,
			  synopsis);
	if (rc >= 0)
		return rc;
	if (!b.dir == !b.file) {
		fprintf(stderr, "zinc nvme-bench: give exactly one of --path DIR or --file FILE; "
				"see --help\n");
		return 2;
	}

	/* Every pass covers the same bytes: round --size down to the largest
	 * block (twice for rw, which streams two halves). */
	uint64_t max_bs = 0;
	for (unsigned i = 0; i < b.nbs; i++)
		max_bs = max_u64(max_bs, b.bs[i]);
	uint64_t unit = b.rw[RW_RW] ? 2 * max_bs : max_bs;
	if (b.size < unit) {
		fprintf(stderr, "zinc nvme-bench: --size %llu is smaller than %s%llu bytes (the "
				"largest block size)\n",
			(unsigned long long)b.size, b.rw[RW_RW] ? "twice " : "",
			(unsigned long long)max_bs);
		return 2;
	}
	b.size = b.size / unit * unit;

	/* Buffers for the largest setting: NOUT requests per stream. */
	uint64_t need = 0;
	for (unsigned i = 0; i < b.nbs; i++)
		for (unsigned q = 0; q < b.nqd; q++)
			for (unsigned t = 0; t < b.nth; t++) {
				uint64_t sl = b.rw[RW_RW] ? b.size / 2 : b.size;
				uint64_t n = NOUT * req_len_for(b.bs[i], b.qd[q], b.th[t], sl);
				need = max_u64(need, b.rw[RW_RW] ? 2 * n : n);
			}
	if (need > MAX_BUFFER) {
		char s[32];
		fprintf(stderr, "zinc nvme-bench: block size x queue depth x threads needs %s of "
				"I/O buffers (limit 1 GiB); lower one of them\n",
			zn_format_size(need, s, sizeof(s)));
		return 2;
	}

	rc = prepare_file(&b);
	if (rc)
		return rc;

	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	/* The file: created (and reserved) here, removed at the end unless
	 * the user named it. */
	{
		struct zn_aio_config cfg;
		struct zn_aio *aio;
		struct zn_aio_file *f;
		/* A new file, or the part an existing one grows by, holds no
		 * data yet: reads of it would not touch the disk. */
		struct stat st0;
		bool needs_fill = stat(b.fname, &st0) != 0 || (uint64_t)st0.st_size < b.size;
		zn_aio_config_default(&cfg);
		cfg.block_size = max_bs;
		aio = zn_aio_create(&cfg);
		if (!aio) {
			fprintf(stderr, "zinc nvme-bench: %s\n", zn_last_error());
			return 1;
		}
		b.delete_file = !b.file;
		rc = zn_aio_open(aio, b.fname, ZN_AIO_RDWR | ZN_AIO_CREATE, b.size, &f);
		if (rc) {
			fprintf(stderr, "zinc nvme-bench: %s\n", zn_last_error());
			zn_aio_destroy(aio);
			cleanup(&b);
			return 1;
		}
		bool direct = zn_aio_file_direct(f);
		if (!b.json)
			printf("zinc nvme-bench: %s (%s, alignment %u), %llu bytes per pass\n",
			       b.fname, direct ? "O_DIRECT" : "buffered: page cache included",
			       zn_aio_file_align(f), (unsigned long long)b.size);
		zn_aio_close(f);
		zn_aio_destroy(aio);

		b.buflen = need;
		b.buf = zn_hostmem_alloc(need, ZN_HOSTMEM_PREFAULT |
						(b.no_huge ? ZN_HOSTMEM_NOHUGE : ZN_HOSTMEM_HUGE));
		if (!b.buf) {
			fprintf(stderr, "zinc nvme-bench: %s\n", zn_last_error());
			cleanup(&b);
			return 1;
		}
		/* Incompressible data: some drives compress or dedupe zeros. */
		uint64_t s = 0x9e3779b97f4a7c15ull;
		for (size_t i = 0; i + 8 <= need; i += 8) {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			memcpy(b.buf + i, &s, 8);
		}
		b.huge_fraction = zn_hostmem_huge_fraction(b.buf, need);

		/* Reads need written data: fill the file once (unreported)
		 * unless a write pass comes first anyway. */
		if ((b.rw[RW_READ] || b.rw[RW_RW]) && !b.rw[RW_WRITE] && needs_fill) {
			struct result dummy;
			rc = run_setting(&b, RW_WRITE, max_bs, 8, 1, &dummy, 0, 0, false);
			if (rc == -EINTR || interrupted)
				goto interrupted;
			if (rc)
				goto fail;
		}
	}

	unsigned total = 0;
	for (int r = 0; r < RW_COUNT; r++)
		total += b.rw[r] ? b.nbs * b.nqd * b.nth : 0;
	res = calloc(total, sizeof(*res));
	if (!res)
		goto fail;
	if (!b.json) {
		char bsz[32];
		printf("buffers: %s, %s; fixed buffers %s; %u pass%s per setting\n",
		       zn_format_size(b.buflen, bsz, sizeof(bsz)),
		       b.huge_fraction < 0 ? "huge pages unknown"
		       : b.huge_fraction >= 0.99 ? "transparent huge pages"
		       : b.huge_fraction > 0.01 ? "partly huge pages" : "4 KiB pages",
		       b.no_fixed ? "off" : "on", b.loops, b.loops == 1 ? "" : "es");
		printf("\n%-6s %6s %6s %7s %10s %10s %9s %9s\n", "rw", "block", "qd", "threads",
		       "MiB/s", "IOPS", "p50 us", "p99 us");
		fflush(stdout);
	}
	for (int r = 0; r < RW_COUNT && !interrupted; r++) {
		if (!b.rw[r])
			continue;
		for (unsigned i = 0; i < b.nbs; i++)
			for (unsigned q = 0; q < b.nqd; q++)
				for (unsigned t = 0; t < b.nth; t++) {
					struct result *x = &res[nres];
					rc = run_setting(&b, (enum rw)r, b.bs[i], b.qd[q], b.th[t], x,
							 nres + 1, total, true);
					if (rc == -EINTR || interrupted)
						goto interrupted;
					if (rc)
						goto fail;
					nres++;
					if (!b.json) {
						char bs[32];
						if (isatty(STDERR_FILENO))
							fprintf(stderr, "\r\033[K");
						printf("%-6s %6s %6u %7u %10.1f %10.0f %9.1f %9.1f\n",
						       rw_names[r], size_short(x->bs, bs, sizeof(bs)),
						       x->qd, x->th, x->mib_s, x->iops,
						       (double)x->p50_ns / 1e3, (double)x->p99_ns / 1e3);
						fflush(stdout);
					}
				}
	}

	const struct result *best[RW_COUNT] = { NULL };
	for (unsigned i = 0; i < nres; i++)
		if (!best[res[i].rw] || res[i].mib_s > best[res[i].rw]->mib_s)
			best[res[i].rw] = &res[i];
	const struct result *rec = pick_aio(res, nres);

	if (b.json) {
		struct zn_json j;
		char v[64];
		zn_json_init(&j, stdout, ZN_JSON_LINE);
		zn_json_begin_object(&j);
		zn_json_key(&j, "results");
		zn_json_begin_array(&j);
		for (unsigned i = 0; i < nres; i++)
			json_result(&j, &res[i]);
		zn_json_end_array(&j);
		zn_json_key(&j, "best");
		zn_json_begin_object(&j);
		for (int r = 0; r < RW_COUNT; r++)
			if (best[r]) {
				zn_json_key(&j, rw_names[r]);
				json_result(&j, best[r]);
			}
		zn_json_end_object(&j);
		zn_json_key(&j, "aio");
		zn_json_begin_object(&j);
		struct zn_aio_config cfg;
		config_for(&b, rec->bs, rec->qd, rec->th, &cfg);
		for (size_t i = 0; i < zn_aio_key_table.nkeys; i++) {
			const struct zn_key *k = &zn_aio_key_table.keys[i];
			zn_json_key(&j, k->name);
			zn_keys_format(k, &cfg, v, sizeof(v));
			if (k->type == ZN_KEY_BOOL)
				zn_json_bool(&j, strcmp(v, "true") == 0);
			else
				zn_json_uint(&j, strtoull(v, NULL, 10));
		}
		zn_json_end_object(&j);
		zn_json_key(&j, "settings");
		zn_json_begin_object(&j);
		zn_json_key(&j, "file");
		zn_json_string(&j, b.fname);
		zn_json_key(&j, "size");
		zn_json_uint(&j, b.size);
		zn_json_key(&j, "loops");
		zn_json_uint(&j, b.loops);
		zn_json_key(&j, "buffer_bytes");
		zn_json_uint(&j, b.buflen);
		zn_json_key(&j, "buffer_huge_fraction");
		zn_json_double(&j, b.huge_fraction);
		zn_json_key(&j, "use_fixed_buffers");
		zn_json_bool(&j, !b.no_fixed);
		zn_json_end_object(&j);
		zn_json_end_object(&j);
	} else {
		char bs[32];
		printf("\n");
		for (int r = 0; r < RW_COUNT; r++)
			if (best[r])
				printf("best %-5s: block %s, queue depth %u, threads %u: %.1f MiB/s\n",
				       rw_names[r], size_short(best[r]->bs, bs, sizeof(bs)),
				       best[r]->qd, best[r]->th, best[r]->mib_s);
		printf("\nFor your config (%s):\n\n",
		       b.rw[RW_READ] && b.rw[RW_WRITE] ? "best read + write throughput"
						       : "best measured throughput");
		print_aio_block(stdout, &b, rec, "");
		printf("\n(ds_config.json: the same keys in an \"aio\" object.)\n");
	}
	status = 0;
	goto out;

interrupted:
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "\r\033[K");
	fprintf(stderr, "zinc nvme-bench: interrupted%s%s\n", b.delete_file ? "; removed " : "",
		b.delete_file ? b.fname : "");
	status = 130;
	goto out;
fail:
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "\r\033[K");
	fprintf(stderr, "zinc nvme-bench: %s\n", rc == -ENOMEM && !res ? "out of memory"
								   : zn_last_error());
	status = 1;
out:
	free(res);
	cleanup(&b);
	return status;
}
