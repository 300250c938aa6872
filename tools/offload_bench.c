/* zinc offload-bench — how close does the NVMe optimizer step come to its
 * bound?
 *
 * In one process, on the same disks and arrays, interleaved round by round:
 *   (a) io      the pipelined step with an update that does nothing: the
 *               store's I/O for exactly the bytes one step moves, in the
 *               same concurrent read + write pattern;
 *   (b) adam    the Adam update of all N elements in memory;
 *   (c) step    the pipelined NVMe step (pipeline_read + pipeline_write);
 *   (d) serial  the same step with both pipeline flags off (DeepSpeed's).
 * bound = max(io, adam); efficiency = bound / step.  Medians of --loops.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "options.h"
#include "util.h"
#include "zinc/adam.h"
#include "zinc/configfile.h"
#include "zinc/hostmem.h"
#include "zinc/json.h"
#include "zinc/offload.h"
#include "zinc/threadpool.h"
#include "zinc/trace.h"

#define MAX_LOOPS 32

struct bench {
	const char *paths_arg;
	uint64_t params, sub_group;
	unsigned threads, loops, buffer_count;
	const char *config, *trace;
	bool json;
};

/* ---- options ------------------------------------------------------------ */

static const struct opt options[] = {
	OPT_STR("path", "DIR[,DIR...]", NULL, "directories for the swap files, one per disk",
		struct bench, paths_arg),
	OPT_NUM("params", "N", "64M", "parameters (elements) the optimizer updates", struct bench,
		params, 1, 1ull << 40),
	OPT_NUM("sub-group", "N", "4M", "elements per sub-group (zero_optimization.sub_group_size)",
		struct bench, sub_group, 1, 1ull << 40),
	OPT_NUM("threads", "T", "all cores", "threads for the Adam update", struct bench, threads,
		1, 1024),
	OPT_NUM("buffer-count", "N", "4", "offload_optimizer.buffer_count (sub-groups in memory)",
		struct bench, buffer_count, 1, 64),
	OPT_NUM("loops", "N", "3", "rounds; medians are reported", struct bench, loops, 1,
		MAX_LOOPS),
	OPT_STR("config", "FILE", NULL,
		"take the aio block from this config (e.g. what nvme-bench printed)", struct bench,
		config),
	OPT_STR("trace", "FILE", NULL, "write a Chrome/Perfetto trace of the last pipelined step",
		struct bench, trace),
	OPT_BOOL("json", "print one JSON object instead of the table", struct bench, json),
};

/* ---- the run -------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

struct update_ctx {
	struct zn_adam_hparams hp;
	uint64_t step;
	const float *grad;
	uint16_t *copy;       /* bf16 parameter copy, all N */
	struct zn_adam_exec ex;
	bool noop;
};

static int update(void *user, uint64_t group, uint64_t first, uint64_t n, float *const *st)
{
	struct update_ctx *u = user;
	(void)group;
	if (u->noop)
		return interrupted ? -EINTR : 0;
	struct zn_adam_tensors t = {
		.n = n, .param = st[0], .exp_avg = st[1], .exp_avg_sq = st[2],
		.grad = u->grad + first, .grad_dtype = ZN_DTYPE_F32,
		.param_copy = u->copy + first, .copy_dtype = ZN_DTYPE_BF16,
	};
	int rc = zn_adam_step(&u->hp, u->step, 1.0f, &t, &u->ex);
	return rc ? rc : interrupted ? -EINTR : 0;
}

/* An optimizer swapper with fresh states: random master params, m = v = 0. */
static struct zn_optswap *make_swapper(const struct bench *b, struct zn_store *store,
				       struct zn_aio *aio, bool pipelined, struct zn_trace *trace,
				       const float *init)
{
	struct zn_optswap_config oc = {
		.store = store, .aio = aio, .params = b->params, .sub_group_size = b->sub_group,
		.nstates = 3, .buffer_count = pipelined ? b->buffer_count : 0,
		.pipeline_read = pipelined, .pipeline_write = pipelined, .pin_memory = true,
		.trace = trace,
	};
	struct zn_optswap *os = zn_optswap_create(&oc);
	if (!os)
		return NULL;
	float *zeros = calloc(b->sub_group, sizeof(float));
	if (!zeros) {
		zn_optswap_destroy(os);
		return NULL;
	}
	for (uint64_t g = 0; g < zn_optswap_groups(os); g++) {
		const float *st[3] = { init + g * b->sub_group, zeros, zeros };
		if (zn_optswap_write_group(os, g, st)) {
			free(zeros);
			zn_optswap_destroy(os);
			return NULL;
		}
	}
	free(zeros);
	return os;
}

int cmd_offload_bench(int argc, char **argv)
{
	struct bench b = { .params = 64ull << 20, .sub_group = 4ull << 20, .loops = 3,
			   .buffer_count = 4 };
	static const char synopsis[] = "--path DIR[,DIR...] [options]";
	struct zn_config cfg;
	int rc = opts_command("zinc offload-bench", options, ARRAY_SIZE(options), argc, argv, &b,
			      synopsis);
	if (rc >= 0)
		return rc;
	if (!b.paths_arg) {
		fprintf(stderr, "zinc offload-bench: --path DIR is required; see --help\n");
		return 2;
	}
	if (b.sub_group > b.params)
		b.sub_group = b.params;
	if (b.buffer_count < 3) {
		fprintf(stderr, "zinc offload-bench: --buffer-count must be at least 3 for the "
				"pipelined step (read ahead, update, write behind)\n");
		return 2;
	}
	char pathbuf[ZN_NVME_PATH_MAX];
	const char *paths[ZN_STORE_MAX_PATHS];
	int npaths = zn_nvme_paths_split(b.paths_arg, pathbuf, paths, ZN_STORE_MAX_PATHS);
	if (npaths < 0) {
		fprintf(stderr, "zinc offload-bench: --path '%s' has an empty element or more than "
				"%d paths\n", b.paths_arg, ZN_STORE_MAX_PATHS);
		return 2;
	}
	for (int i = 0; i < npaths; i++) {
		struct stat st;
		if (stat(paths[i], &st) != 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "zinc offload-bench: --path '%s' is not a directory\n",
				paths[i]);
			return 2;
		}
		tool_warn_if_swapping("offload-bench", paths[i]);
	}
	zn_config_default(&cfg);
	if (b.config && zn_config_load_file(b.config, &cfg) != 0) {
		fprintf(stderr, "zinc offload-bench: %s\n", zn_last_error());
		return 2;
	}
	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct zn_aio *aio = NULL;
	struct zn_store *store = NULL;
	struct zn_threadpool *pool = NULL;
	struct zn_trace *trace = NULL;
	void *region = NULL;
	size_t region_bytes = 0;
	uint16_t *copy = NULL;
	struct zn_optswap *pipe = NULL;
	int status = 1;
	const uint64_t N = b.params;

	aio = zn_aio_create(&cfg.aio);
	if (!aio)
		goto fail;
	struct zn_optswap_config sizing = {
		.params = N, .sub_group_size = b.sub_group, .nstates = 3,
		.buffer_count = b.buffer_count, .pipeline_read = true, .pipeline_write = true,
	};
	struct zn_store_config sc = {
		.paths = paths, .npaths = (unsigned)npaths,
		.capacity = zn_optswap_store_bytes(&sizing), .checksum = true,
	};
	store = zn_store_create(&sc, aio);
	if (!store) {
		if (strstr(zn_last_error(), "not enough room")) { /* refused up front */
			fprintf(stderr, "zinc offload-bench: %s\n", zn_last_error());
			zn_aio_destroy(aio);
			return 2;
		}
		goto fail;
	}
	pool = zn_threadpool_create(b.threads, -1);
	if (!pool)
		goto fail;

	/* In-memory arrays: p, m, v, grad (staggered, huge pages), a bf16 copy
	 * and the initial master params shared by every swapper. */
	size_t bytes[5] = { N * 4, N * 4, N * 4, N * 4, N * 4 };
	void *arr[5];
	region = zn_hostmem_alloc_arrays(5, bytes, ZN_HOSTMEM_HUGE | ZN_HOSTMEM_PREFAULT, arr,
					 &region_bytes);
	copy = zn_hostmem_alloc(N * 2, ZN_HOSTMEM_HUGE | ZN_HOSTMEM_PREFAULT);
	if (!region || !copy)
		goto fail;
	float *p = arr[0], *m = arr[1], *v = arr[2], *grad = arr[3], *init = arr[4];
	uint64_t s = 0x9e3779b97f4a7c15ull;
	for (uint64_t i = 0; i < N; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		init[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5) * 0.1f;
		grad[i] = (float)((double)(s & 0xffff) / 65536.0 - 0.5) * 1e-3f;
	}
	memcpy(p, init, N * 4);

	struct update_ctx u = { .grad = grad, .copy = copy, .ex = { .pool = pool } };
	zn_adam_defaults(&u.hp);
	u.hp.weight_decay = 0.01f;
	trace = b.trace ? zn_trace_create(1u << 20) : NULL;

	if (!b.json) {
		char gb[32], sg[32];
		printf("zinc offload-bench: %llu params (%s of fp32 states), sub-groups of %llu, "
		       "%d path(s), %u Adam threads (%s)\n",
		       (unsigned long long)N, zn_format_size(N * 12, gb, sizeof(gb)),
		       (unsigned long long)b.sub_group, npaths, zn_threadpool_size(pool),
		       zn_threadpool_binding(pool));
		printf("aio: block_size %s, queue_depth %u, intra_op_parallelism %u; "
		       "buffer_count %u; %u rounds\n",
		       zn_format_size(cfg.aio.block_size, sg, sizeof(sg)), cfg.aio.queue_depth,
		       cfg.aio.intra_op_parallelism, b.buffer_count, b.loops);
		fflush(stdout);
	}

	double io[MAX_LOOPS], adam[MAX_LOOPS], step[MAX_LOOPS], serial[MAX_LOOPS];
	struct zn_optswap_stats last_pipe = { 0 };
	pipe = make_swapper(&b, store, aio, true, trace, init);
	if (!pipe)
		goto fail;
	uint64_t step_no = 0;
	for (unsigned l = 0; l < b.loops && !interrupted; l++) {
		struct zn_optswap_stats st;
		/* (a) I/O alone, same pattern. */
		u.noop = true;
		u.step = ++step_no;
		if (zn_optswap_step(pipe, update, &u))
			goto fail;
		zn_optswap_last_stats(pipe, &st);
		io[l] = st.step_s;
		/* (b) Adam in memory. */
		struct zn_adam_tensors t = { .n = N, .param = p, .exp_avg = m, .exp_avg_sq = v,
					     .grad = grad, .grad_dtype = ZN_DTYPE_F32,
					     .param_copy = copy, .copy_dtype = ZN_DTYPE_BF16 };
		double t0 = tool_now_s();
		if (zn_adam_step(&u.hp, step_no, 1.0f, &t, &u.ex))
			goto fail;
		adam[l] = tool_now_s() - t0;
		/* (c) the pipelined step; the trace keeps the last one only. */
		u.noop = false;
		zn_trace_reset(trace);
		if (zn_optswap_step(pipe, update, &u))
			goto fail;
		zn_optswap_last_stats(pipe, &last_pipe);
		step[l] = last_pipe.step_s;
		/* (d) serial: its own swapper (the pipelined one's buffers stay
		 * allocated; the store holds both). */
		zn_optswap_destroy(pipe);
		pipe = NULL;
		struct zn_optswap *ser = make_swapper(&b, store, aio, false, NULL, init);
		if (!ser)
			goto fail;
		int r = zn_optswap_step(ser, update, &u);
		zn_optswap_last_stats(ser, &st);
		zn_optswap_destroy(ser);
		if (r)
			goto fail;
		serial[l] = st.step_s;
		if (!b.json && isatty(STDERR_FILENO))
			fprintf(stderr, "\r\033[Kround %u/%u: io %.3f s, adam %.3f s, step %.3f s, "
					"serial %.3f s", l + 1, b.loops, io[l], adam[l], step[l],
				serial[l]);
		if (l + 1 < b.loops) {
			pipe = make_swapper(&b, store, aio, true, trace, init);
			if (!pipe)
				goto fail;
		}
	}
	if (interrupted) {
		fprintf(stderr, "\r\033[Kzinc offload-bench: interrupted\n");
		status = 130;
		goto out;
	}
	if (!b.json && isatty(STDERR_FILENO))
		fprintf(stderr, "\r\033[K");

	double io_s = tool_median(io, b.loops), adam_s = tool_median(adam, b.loops);
	double step_s = tool_median(step, b.loops), serial_s = tool_median(serial, b.loops);
	double bound = io_s > adam_s ? io_s : adam_s;
	uint64_t rbytes = last_pipe.bytes_read, wbytes = last_pipe.bytes_written;
	if (b.trace && zn_trace_write(trace, b.trace) != 0) {
		fprintf(stderr, "zinc offload-bench: %s\n", zn_last_error());
		goto out;
	}
	if (b.json) {
		struct zn_json j;
		zn_json_init(&j, stdout, ZN_JSON_LINE);
		zn_json_begin_object(&j);
		zn_json_key(&j, "params");
		zn_json_uint(&j, N);
		zn_json_key(&j, "sub_group");
		zn_json_uint(&j, b.sub_group);
		zn_json_key(&j, "paths");
		zn_json_uint(&j, (uint64_t)npaths);
		zn_json_key(&j, "threads");
		zn_json_uint(&j, zn_threadpool_size(pool));
		zn_json_key(&j, "loops");
		zn_json_uint(&j, b.loops);
		zn_json_key(&j, "read_bytes");
		zn_json_uint(&j, rbytes);
		zn_json_key(&j, "write_bytes");
		zn_json_uint(&j, wbytes);
		zn_json_key(&j, "io_s");
		zn_json_double(&j, io_s);
		zn_json_key(&j, "adam_s");
		zn_json_double(&j, adam_s);
		zn_json_key(&j, "bound_s");
		zn_json_double(&j, bound);
		zn_json_key(&j, "step_s");
		zn_json_double(&j, step_s);
		zn_json_key(&j, "serial_s");
		zn_json_double(&j, serial_s);
		zn_json_key(&j, "efficiency");
		zn_json_double(&j, bound / step_s);
		zn_json_key(&j, "speedup_vs_serial");
		zn_json_double(&j, serial_s / step_s);
		zn_json_key(&j, "io_gb_s");
		zn_json_double(&j, (double)(rbytes + wbytes) / io_s / 1e9);
		zn_json_key(&j, "step_read_wait_s");
		zn_json_double(&j, last_pipe.read_wait_s);
		zn_json_key(&j, "step_write_wait_s");
		zn_json_double(&j, last_pipe.write_wait_s);
		zn_json_key(&j, "step_update_s");
		zn_json_double(&j, last_pipe.update_s);
		zn_json_end_object(&j);
	} else {
		char rb[32], wb[32];
		printf("\nbytes per step: %s read, %s written\n", zn_format_size(rbytes, rb, sizeof(rb)),
		       zn_format_size(wbytes, wb, sizeof(wb)));
		printf("%-28s %9s\n", "", "seconds");
		printf("%-28s %9.3f   (%.2f GB/s)\n", "(a) I/O alone", io_s,
		       (double)(rbytes + wbytes) / io_s / 1e9);
		printf("%-28s %9.3f   (%.2f Gelem/s)\n", "(b) Adam in memory", adam_s,
		       (double)N / adam_s / 1e9);
		printf("%-28s %9.3f   = max(a, b)\n", "bound", bound);
		printf("%-28s %9.3f   (waits: read %.3f, write %.3f; updates %.3f)\n",
		       "(c) pipelined NVMe step", step_s, last_pipe.read_wait_s,
		       last_pipe.write_wait_s, last_pipe.update_s);
		printf("%-28s %9.3f\n", "(d) serial NVMe step", serial_s);
		printf("\nefficiency (bound / step): %.3f;  serial / pipelined: %.2fx\n",
		       bound / step_s, serial_s / step_s);
		if (b.trace)
			printf("trace: %s (open in ui.perfetto.dev)\n", b.trace);
	}
	status = 0;
	goto out;

fail:
	fprintf(stderr, "zinc offload-bench: %s\n", zn_last_error());
	status = 1;
out:
	zn_optswap_destroy(pipe);
	zn_trace_destroy(trace);
	zn_threadpool_destroy(pool);
	if (region)
		zn_hostmem_free(region, region_bytes);
	if (copy)
		zn_hostmem_free(copy, N * 2);
	zn_store_destroy(store);
	zn_aio_destroy(aio);
	return status;
}
