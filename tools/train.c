/* zinc train CONFIG — train the model a config describes.
 *
 * One line per steps_per_print steps (step, loss, lr, grad norm, tokens/s,
 * step time, memory), validation every data.val_every steps, checkpoints
 * every checkpoint.every steps and at the end; --json-log writes one JSON
 * object per step.  Ctrl-C finishes the current step, saves a checkpoint
 * (when checkpoint.dir is set) and exits with status 130.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "preflight.h"
#include "options.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "zinc/checkpoint.h"
#include "zinc/comm.h"
#include "zinc/configfile.h"
#include "zinc/device.h"
#include "zinc/hostmem.h"
#include "zinc/json.h"
#include "zinc/kernels.h"
#include "zinc/plan.h"
#include "zinc/trace.h"
#include "zinc/train.h"

#define MAX_SETS 64

struct train_args {
	uint64_t max_steps;
	const char *json_log;
	const char *trace;
	bool bench;
	const char *sets[MAX_SETS];
	size_t nsets;
};

static int add_set(void *ctx, const char *arg, const char **why)
{
	struct train_args *a = ctx;
	if (a->nsets == MAX_SETS) {
		*why = "too many --set options";
		return -1;
	}
	a->sets[a->nsets++] = arg;
	return 0;
}

static const struct opt options[] = {
	OPT_NUM("max-steps", "N", "scheduler.params.total_num_steps",
		"optimizer steps to run (counting those of a resumed checkpoint)",
		struct train_args, max_steps, 1, 1ull << 40),
	OPT_STR("json-log", "FILE", NULL, "also write one JSON object per step to FILE",
		struct train_args, json_log),
	OPT_STR("trace", "FILE", NULL, "write a Chrome/Perfetto trace of the steps to FILE",
		struct train_args, trace),
	OPT_CALL("set", "KEY=VALUE", NULL, "override a config key, as a dotted path: "
		 "--set zero_optimization.offload_param.device=nvme (repeatable)", add_set),
	OPT_BOOL("bench", "measure: a few steps on random tokens (CONFIG optional: GPT-2 124M "
		 "with batch 4 x 1024, which --set changes), FLOP/s against a matrix product "
		 "of the model's largest shape in the same run (OpenBLAS sgemm; on a GPU the "
		 "device's own)", struct train_args, bench),
};

static volatile sig_atomic_t interrupted;
/* What a second signal says before it stops the process at once: which
 * checkpoint a resume will use (written when a save completes). */
static char abort_msg[4352];
static volatile sig_atomic_t abort_len;

/* The first SIGINT/SIGTERM finishes the step, saves and exits 130; a
 * second one stops at once (a long step -- a large model's, or many
 * micro-batches -- must not hold the user), the last complete checkpoint
 * intact: saves are written aside and renamed into place. */
static void stop_at_once(void)
{
	if (abort_len > 0 && write(STDERR_FILENO, abort_msg, (size_t)abort_len) < 0)
		abort_len = 0;
	_exit(130);
}

/* Seconds the step in progress and its save get after the first signal
 * before the process stops at once (SIGALRM): a step that cannot end --
 * a thread stuck in a library that never returns, as OpenBLAS's allocator
 * retrying a failed mmap for ever -- must not make SIGTERM a no-op.  Four
 * times the slowest step and save seen, at least a minute; five minutes
 * before the first step has ended. */
static volatile sig_atomic_t grace_s = 300;

static void on_signal(int sig)
{
	if (sig == SIGALRM) {
		static const char m[] = "\nzinc train: what was in progress did not end in time; ";
		if (write(STDERR_FILENO, m, sizeof(m) - 1) < 0)
			abort_len = 0;
		stop_at_once();
	}
	if (interrupted)
		stop_at_once();
	interrupted = 1;
	alarm((unsigned)grace_s);
}

static void set_abort_msg(const char *dir, uint64_t step)
{
	char m[sizeof(abort_msg)];
	int n = step ? snprintf(m, sizeof(m), "\nzinc train: stopped at once; a resume starts from the "
					"checkpoint of step %" PRIu64 " in %s\n", step, dir)
		     : snprintf(m, sizeof(m), "\nzinc train: stopped at once; no checkpoint was saved: "
					"a resume starts from scratch\n");
	abort_len = 0; /* the handler reads no half-written message */
	memcpy(abort_msg, m, sizeof(abort_msg));
	abort_len = n > 0 && (size_t)n < sizeof(abort_msg) ? n : 0;
}

static void log_json(FILE *f, const struct zn_step_info *s, double val,
		     const struct zn_rank_memory *m)
{
	struct zn_json j;
	zn_json_init(&j, f, ZN_JSON_LINE);
	zn_json_begin_object(&j);
	zn_json_key(&j, "step");
	zn_json_uint(&j, s->step);
	zn_json_key(&j, "loss");
	zn_json_double_exact(&j, s->loss);
	zn_json_key(&j, "lr");
	zn_json_double_exact(&j, s->lr);
	zn_json_key(&j, "beta1");
	zn_json_double_exact(&j, s->beta1);
	zn_json_key(&j, "beta2");
	zn_json_double_exact(&j, s->beta2);
	zn_json_key(&j, "grad_norm");
	zn_json_double_exact(&j, s->grad_norm);
	zn_json_key(&j, "tokens_per_s");
	zn_json_double(&j, (double)s->tokens / s->step_s);
	zn_json_key(&j, "step_s");
	zn_json_double(&j, s->step_s);
	zn_json_key(&j, "device_bytes");
	zn_json_uint(&j, s->device_bytes);
	zn_json_key(&j, "device_peak");
	zn_json_uint(&j, s->device_peak);
	zn_json_key(&j, "host_bytes");
	zn_json_uint(&j, s->host_bytes);
	zn_json_key(&j, "loss_scale");
	zn_json_double(&j, s->loss_scale);
	zn_json_key(&j, "skipped");
	zn_json_bool(&j, s->skipped);
	/* Where the time went and what moved (issue: breakdown per tier). */
	zn_json_key(&j, "compute_s");
	zn_json_double(&j, s->compute_s);
	zn_json_key(&j, "optimizer_s");
	zn_json_double(&j, s->optimizer_s);
	zn_json_key(&j, "stall_s");
	zn_json_double(&j, s->stall_s);
	zn_json_key(&j, "nvme_read_bytes");
	zn_json_uint(&j, s->nvme_read_bytes);
	zn_json_key(&j, "nvme_write_bytes");
	zn_json_uint(&j, s->nvme_write_bytes);
	zn_json_key(&j, "param_read_bytes");
	zn_json_uint(&j, s->param_read_bytes);
	zn_json_key(&j, "recompute_s");
	zn_json_double(&j, s->recompute_s);
	zn_json_key(&j, "act_offload_s");
	zn_json_double(&j, s->act_offload_s);
	zn_json_key(&j, "h2d_bytes");
	zn_json_uint(&j, s->h2d_bytes);
	zn_json_key(&j, "d2h_bytes");
	zn_json_uint(&j, s->d2h_bytes);
	/* This rank's share of the model states (ZeRO's partitioning). */
	zn_json_key(&j, "rank_memory");
	zn_json_begin_object(&j);
	zn_json_key(&j, "rank");
	zn_json_uint(&j, (uint64_t)m->rank);
	zn_json_key(&j, "world");
	zn_json_uint(&j, (uint64_t)m->world);
	zn_json_key(&j, "params");
	zn_json_uint(&j, m->params);
	zn_json_key(&j, "grads");
	zn_json_uint(&j, m->grads);
	zn_json_key(&j, "optimizer");
	zn_json_uint(&j, m->optimizer);
	zn_json_end_object(&j);
	zn_json_key(&j, "comm_bytes");
	zn_json_uint(&j, s->comm_bytes);
	zn_json_key(&j, "comm_elems");
	zn_json_uint(&j, s->comm_elems);
	zn_json_key(&j, "comm_s");
	zn_json_double(&j, s->comm_s);
	zn_json_key(&j, "read_bytes");
	zn_json_begin_object(&j);
	zn_json_key(&j, "nvme");
	zn_json_uint(&j, s->nvme_read_bytes);
	zn_json_key(&j, "host");
	zn_json_uint(&j, s->h2d_bytes);
	zn_json_end_object(&j);
	zn_json_key(&j, "write_bytes");
	zn_json_begin_object(&j);
	zn_json_key(&j, "nvme");
	zn_json_uint(&j, s->nvme_write_bytes);
	zn_json_key(&j, "host");
	zn_json_uint(&j, s->d2h_bytes);
	zn_json_end_object(&j);
	if (val >= 0) {
		zn_json_key(&j, "val_loss");
		zn_json_double_exact(&j, val);
	}
	zn_json_end_object(&j);
	fflush(f);
}

/* Best of 3 OpenBLAS sgemm runs of (M x K) @ (K x N), with OpenBLAS's own
 * threads on every core; GFLOP/s. */
extern void openblas_set_num_threads(int);
static double sgemm_gflops(int M, int N, int K)
{
	size_t a = (size_t)M * K, b = (size_t)K * N, c = (size_t)M * N;
	float *A = zn_hostmem_alloc(a * 4, ZN_HOSTMEM_HUGE), *Bm = zn_hostmem_alloc(b * 4, ZN_HOSTMEM_HUGE),
	      *Cm = zn_hostmem_alloc(c * 4, ZN_HOSTMEM_HUGE);
	double best = 0;
	if (!A || !Bm || !Cm)
		goto out;
	for (size_t i = 0; i < a; i++)
		A[i] = (float)(i % 13) * 0.01f;
	for (size_t i = 0; i < b; i++)
		Bm[i] = (float)(i % 7) * 0.01f;
	openblas_set_num_threads((int)sysconf(_SC_NPROCESSORS_ONLN));
	for (int r = 0; r < 3; r++) {
		double t0 = tool_now_s();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, Bm, K, 0.0f,
			    Cm, N);
		double g = 2.0 * M * N * K / (tool_now_s() - t0) / 1e9;
		best = g > best ? g : best;
	}
out:
	zn_hostmem_free(A, a * 4);
	zn_hostmem_free(Bm, b * 4);
	zn_hostmem_free(Cm, c * 4);
	return best;
}

/* The device's own matrix product on (M x K) @ (N x K)^T: the kernels'
 * matmul_forward in the dtype training computes in (cuBLASLt on a GPU,
 * OpenBLAS under the cpu kernels), best of 3 after a warm-up, GFLOP/s;
 * 0 (and a message) when it cannot run. */
static double device_gemm_gflops(const struct zn_config *cfg, int M, int N, int K)
{
	struct zn_device_params dp;
	zn_device_params_default(&dp);
	dp.kind = cfg->device.type == ZN_DEVICE_CUDA ? "cuda" : "cpu";
	dp.ordinal = (int)cfg->device.index;
	struct zn_device *dev = zn_device_create(&dp);
	struct zn_stream *st = dev ? zn_device_stream_create(dev, "gemm") : NULL;
	const struct zn_kernels *k = zn_kernels_get(dp.kind);
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	struct zn_kctx *ctx = NULL;
	const size_t na = (size_t)M * K, nb = (size_t)N * K, nc = (size_t)M * N;
	const size_t nmax = na > nb ? na : nb;
	float *h = malloc(nmax * sizeof(float));
	void *A = NULL, *B = NULL, *C = NULL, *f = NULL;
	double best = 0;
	if (st && k && h) {
		zn_device_kernels_params(dev, st, &kp);
		kp.dtype = zn_config_storage_dtype(cfg);
		ctx = k->ctx_create(&kp);
	}
	const size_t e = zn_dtype_size(kp.dtype);
	int rc = !ctx || zn_device_alloc(dev, na * e, &A) || zn_device_alloc(dev, nb * e, &B) ||
		 zn_device_alloc(dev, nc * e, &C) || zn_device_alloc(dev, nmax * 4, &f);
	/* Varied values (a product of zeros runs faster on some GPUs). */
	for (int m = 0; m < 2 && !rc; m++) {
		size_t n = m ? nb : na;
		for (size_t i = 0; i < n; i++)
			h[i] = (float)((i * (m ? 7 : 13)) % 101) * 0.01f - 0.5f;
		rc = zn_device_copy_async(dev, f, h, n * 4, ZN_COPY_HOST_TO_DEVICE, NULL) ||
		     k->cast(ctx, m ? B : A, kp.dtype, f, ZN_DTYPE_F32, n) ||
		     zn_device_stream_synchronize(st);
	}
	for (int r = 0; r < 4 && !rc; r++) {
		double t0 = tool_now_s();
		rc = k->matmul_forward(ctx, C, A, B, NULL, M, K, N) || zn_device_stream_synchronize(st);
		double g = 2.0 * M * N * K / (tool_now_s() - t0) / 1e9;
		best = r > 0 && g > best ? g : best;
	}
	if (rc)
		fprintf(stderr, "zinc train --bench: the device's matrix product: %s\n",
			zn_last_error());
	if (dev) {
		zn_device_free(dev, A);
		zn_device_free(dev, B);
		zn_device_free(dev, C);
		zn_device_free(dev, f);
	}
	if (ctx)
		k->ctx_destroy(ctx);
	zn_device_destroy(dev);
	free(h);
	return rc ? 0 : best;
}

/* zinc train --bench: FLOP/s of whole steps against raw sgemm. */
static int bench(struct zn_config *cfg, uint64_t steps)
{
	const double L = cfg->model.n_layer, C = cfg->model.n_embd, T = cfg->model.seq_len;
	const double B = cfg->batch.micro_batch, A = cfg->batch.grad_accum;
	const double Vp = ceil(cfg->model.vocab_size / 128.0) * 128.0, BT = B * T;
	/* Forward: the block matmuls 24 BT C^2 per layer, causal attention
	 * 2 B T^2 C per layer, the classifier 2 BT C Vp; backward twice that. */
	const double flops = 3.0 * A * (L * (24.0 * BT * C * C + 2.0 * B * T * T * C) +
					2.0 * BT * C * Vp);
	if (steps < 2)
		steps = 3;
	printf("zinc train --bench: GPT-2 %u layers, %u heads, %u channels, vocab %u, batch %u x "
	       "%u x %u accumulation, %" PRIu64 " steps (the first is warm-up), random tokens\n",
	       cfg->model.n_layer, cfg->model.n_head, cfg->model.n_embd, cfg->model.vocab_size,
	       cfg->batch.micro_batch, cfg->model.seq_len, cfg->batch.grad_accum, steps);
	fflush(stdout);
	double ref0 = cfg->device.type == ZN_DEVICE_CUDA ? 0 : sgemm_gflops((int)BT, (int)Vp, (int)C);
	struct zn_trainer *t = zn_trainer_create_synthetic(cfg, steps);
	if (!t) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		return 2;
	}
	double times[64];
	unsigned n = 0;
	for (uint64_t i = 0; i < steps && n < 64; i++) {
		struct zn_step_info s;
		if (zn_trainer_step(t, &s) != 0) {
			fprintf(stderr, "zinc train: %s\n", zn_last_error());
			zn_trainer_destroy(t);
			return 1;
		}
		printf("  step %" PRIu64 ": %.3f s, %.1f GFLOP/s, loss %.3f\n", i + 1, s.step_s,
		       flops / s.step_s / 1e9, s.loss);
		fflush(stdout);
		if (i > 0)
			times[n++] = s.step_s;
	}
	zn_trainer_destroy(t);
	const bool gpu = cfg->device.type == ZN_DEVICE_CUDA;
	double ref1 = gpu ? 0 : sgemm_gflops((int)BT, (int)Vp, (int)C);
	double dref = device_gemm_gflops(cfg, (int)BT, (int)Vp, (int)C);
	double step_s = tool_median(times, n), model = flops / step_s / 1e9;
	double ref = (ref0 + ref1) / 2;
	printf("model: %.1f GFLOP/s (%.2f TFLOP per step, median step %.3f s)\n", model,
	       flops / 1e12, step_s);
	if (!gpu)
		printf("OpenBLAS sgemm %d x %d x %d: %.1f GFLOP/s (before %.1f, after %.1f)\n",
		       (int)BT, (int)Vp, (int)C, ref, ref0, ref1);
	printf("the device's matmul (%s, %s) %d x %d x %d: %.1f GFLOP/s\n",
	       gpu ? "cuda" : "cpu kernels", zn_dtype_name(zn_config_storage_dtype(cfg)), (int)BT,
	       (int)Vp, (int)C, dref);
	/* The cpu target is OpenBLAS's sgemm; a GPU's own product is its
	 * (OpenBLAS on the host says nothing about it). */
	double den = gpu ? dref : ref;
	printf("ratio: %.2f (of the %s)\n", den > 0 ? model / den : 0.0,
	       gpu ? "device's matmul" : "OpenBLAS sgemm");
	/* The same figures as one JSON line, in the precision printed above. */
	struct zn_json j;
	zn_json_init(&j, stdout, ZN_JSON_LINE);
	zn_json_begin_object(&j);
	zn_json_key(&j, "gflops");
	zn_json_printf(&j, "%.2f", model);
	zn_json_key(&j, "sgemm_gflops");
	zn_json_printf(&j, "%.2f", ref);
	zn_json_key(&j, "device_gemm_gflops");
	zn_json_printf(&j, "%.2f", dref);
	zn_json_key(&j, "reference");
	zn_json_string(&j, gpu ? "device_gemm" : "openblas_sgemm");
	zn_json_key(&j, "ratio");
	zn_json_printf(&j, "%.3f", den > 0 ? model / den : 0.0);
	zn_json_key(&j, "step_s");
	zn_json_printf(&j, "%.4f", step_s);
	zn_json_key(&j, "flops_per_step");
	zn_json_printf(&j, "%.4g", flops);
	zn_json_end_object(&j);
	return 0;
}

static int train_ranks(struct zn_config *cfg_in, const struct train_args *args, const char *path,
		       struct zn_comm *comm, int rank, int world);

/* A "Vm...:" line of /proc/self/status in bytes (0 when absent).  VmHWM,
 * the peak, belongs to this program's own memory map: unlike getrusage's
 * ru_maxrss it does not count what a parent held before the exec. */
static uint64_t proc_status_bytes(const char *key)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	uint64_t kb = 0;
	size_t n = strlen(key);
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, key, n) == 0) {
			kb = strtoull(line + n, NULL, 10);
			break;
		}
	if (f)
		fclose(f);
	return kb * 1024;
}

/* Bytes of a file, or of the *.safetensors files of a directory (a
 * Hugging Face folder). */
static uint64_t path_bytes(const char *p)
{
	struct stat st;
	if (stat(p, &st) != 0)
		return 0;
	if (!S_ISDIR(st.st_mode))
		return (uint64_t)st.st_size;
	uint64_t sum = 0;
	DIR *d = opendir(p);
	struct dirent *e;
	char f[8192];
	while (d && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0)
			continue;
		snprintf(f, sizeof(f), "%s/%s", p, e->d_name);
		if (stat(f, &st) == 0)
			sum += (uint64_t)st.st_size;
	}
	if (d)
		closedir(d);
	return sum;
}

int cmd_train(int argc, char **argv)
{
	struct train_args a = { 0 };
	struct zn_config cfg;
	int rc = opts_parse("zinc train", options, ARRAY_SIZE(options), argc, argv, &a,
			    "CONFIG [--max-steps N] [--json-log FILE] [--trace FILE] | --bench [CONFIG]");
	if (rc == -2)
		return 0;
	if (rc < 0)
		return 2;
	if (rc != argc - 1 && !(a.bench && rc == argc)) {
		fprintf(stderr, "zinc train: give exactly one config file; see --help\n");
		return 2;
	}
	const char *path = rc < argc ? argv[rc] : NULL;
	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	/* --bench without a config: GPT-2 124M at llm.c's batch, which --set
	 * changes as it would a file (--set device.type=cuda). */
	static const char bench_default[] =
		"train_micro_batch_size_per_gpu: 4\n"
		"gradient_accumulation_steps: 1\n"
		"model: {type: gpt2, n_layer: 12, n_head: 12, n_embd: 768, vocab_size: 50257, "
		"seq_len: 1024}\n";
	if (path ? zn_config_load_file_set(path, a.sets, a.nsets, &cfg)
		 : a.bench && zn_config_load_string_set(bench_default, sizeof(bench_default) - 1,
							"the --bench default (GPT-2 124M)",
							a.sets, a.nsets, &cfg)) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		return 2;
	}
	if (a.bench)
		return bench(&cfg, a.max_steps);
	/* The ranks: mpirun's, or one.  Batch sizes follow DeepSpeed's rule
	 * for this many ranks. */
	struct zn_comm *comm = zn_comm_create(NULL);
	if (!comm) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		return 2;
	}
	const int rank = zn_comm_rank(comm), world = zn_comm_size(comm);
	/* The plan (one rank) checks the paths this rank will use; several
	 * ranks compare their configs first, so the trainer puts them in. */
	if (world == 1 && zn_config_expand_rank(&cfg, rank, zn_comm_local_rank(comm)) != 0) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		zn_comm_destroy(comm);
		return 2;
	}
	if (world > 1 && zn_config_resolve_batch(&cfg, (uint32_t)world, &cfg.batch) != 0) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		zn_comm_destroy(comm);
		return 2;
	}
	int status = train_ranks(&cfg, &a, path, comm, rank, world);
	zn_comm_destroy(comm);
	return status;
}

static int train_ranks(struct zn_config *cfg_in, const struct train_args *args, const char *path,
		       struct zn_comm *comm, int rank, int world)
{
	struct zn_config cfg = *cfg_in;
	struct train_args a = *args;
	char sz[32], sz2[32], sz3[32];
	/* Only rank 0 reports progress; every rank reports its errors. */
	char who[32] = "";
	if (world > 1)
		snprintf(who, sizeof(who), "rank %d: ", rank);
	const bool quiet = rank != 0;
	/* The memory plan first (zinc plan): a configuration that cannot fit
	 * is refused before anything is allocated, with what to change.  The
	 * plan counts one rank's whole states: with several, the partitions
	 * need less, so it only informs. */
	size_t rlen = 256 << 10;
	char *report = malloc(rlen);
	int prc = report && world == 1 ? zn_plan_check(&cfg, report, rlen) : 0;
	if (prc) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		if (prc == -ENOMEM && report[0])
			fputs(report, stderr);
		free(report);
		return 2;
	}
	free(report);
	/* Where everything will live: the plan's tiers, one line. */
	char tiers[1024] = "";
	struct zn_plan *plan = world == 1 ? calloc(1, sizeof(*plan)) : NULL;
	if (plan && zn_plan_compute(&cfg, plan) == 0) {
		size_t len = 0;
		for (unsigned i = 0; i < plan->ntiers && len < sizeof(tiers); i++) {
			const struct zn_plan_tier *tr = &plan->tiers[i];
			if (!tr->needed)
				continue;
			len += (size_t)snprintf(tiers + len, sizeof(tiers) - len, "%s %s %s%s%s",
						len ? " |" : "tiers:",
						tr->kind == ZN_PLAN_NVME ? "nvme" : tr->name,
						zn_format_size(tr->needed, sz, sizeof(sz)),
						tr->kind == ZN_PLAN_NVME ? " in " : "",
						tr->kind == ZN_PLAN_NVME ? tr->name : "");
		}
	}
	/* The process's limits against the run (a soft one is raised where
	 * the hard one allows): said now, not as a hang in OpenBLAS's
	 * allocator or an EMFILE in a save hours later. */
	char why[2048];
	int lrc = train_check_limits(&cfg, plan && plan->ntiers ? plan : NULL,
				     plan ? plan->params : 0, why, sizeof(why));
	free(plan);
	if (lrc) {
		fprintf(stderr, "zinc train: %s%s\n", who, why);
		return 2;
	}
	if (why[0])
		fprintf(stderr, "zinc train: %swarning: %s\n", who, why);
	uint64_t max_steps = a.max_steps ? a.max_steps : cfg.scheduler.params.total_num_steps;
	if (!max_steps) {
		fprintf(stderr, "zinc train: how many steps? give --max-steps N or "
				"scheduler.params.total_num_steps\n");
		return 2;
	}
	/* total_num_steps "auto" (or left out): the schedule spans the run,
	 * as the Trainer fills it with num_training_steps. */
	if (!cfg.scheduler.params.total_num_steps)
		cfg.scheduler.params.total_num_steps = max_steps;
	/* A checkpoint directory the run cannot write is said now, not after
	 * the whole run has trained. */
	if (cfg.checkpoint.dir[0] && zn_ckpt_check_dir(cfg.checkpoint.dir) != 0) {
		fprintf(stderr, "zinc train: %s%s\n", who, zn_last_error());
		return 2;
	}
	FILE *jl = NULL;
	if (a.json_log && !quiet && !(jl = fopen(a.json_log, "we"))) {
		fprintf(stderr, "zinc train: cannot write '%s': %s\n", a.json_log, strerror(errno));
		return 2;
	}
	double t_load = tool_now_s();
	const uint64_t rss_before = proc_status_bytes("VmRSS:");
	struct zn_trainer *t = zn_trainer_create_comm(&cfg, max_steps, comm);
	if (!t) {
		fprintf(stderr, "zinc train: %s%s\n", who, zn_last_error());
		if (jl)
			fclose(jl);
		return 2;
	}
	t_load = tool_now_s() - t_load;
	/* Room for one more checkpoint, asked once the swap files are made
	 * (they may share the disk): a full disk is said before training,
	 * not by a save that fails after it. */
	if (rank == 0 && cfg.checkpoint.dir[0] &&
	    train_check_space(cfg.checkpoint.dir,
			      train_checkpoint_bytes(zn_trainer_num_params(t)), why, sizeof(why))) {
		fprintf(stderr, "zinc train: %s\n", why);
		zn_trainer_destroy(t);
		if (jl)
			fclose(jl);
		return 2;
	}
	/* Every rank records its own trace: FILE, and FILE.rank-R for R > 0. */
	char trace_path[4096] = "";
	if (a.trace)
		snprintf(trace_path, sizeof(trace_path), rank ? "%s.rank-%d" : "%s", a.trace, rank);
	struct zn_trace *trace = a.trace ? zn_trace_create(1u << 20) : NULL;
	zn_trainer_set_trace(t, trace);
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	set_abort_msg(cfg.checkpoint.dir, cfg.checkpoint.dir[0] ? zn_trainer_steps_done(t) : 0);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	/* A file-size limit makes writes fail with EFBIG, reported, instead
	 * of killing the process without a word. */
	signal(SIGXFSZ, SIG_IGN);

	if (!quiet) {
		char ranks[64] = "";
		if (world > 1)
			snprintf(ranks, sizeof(ranks), " x %d ranks (ZeRO stage %u)", world,
				 cfg.zero_optimization.stage);
		char model[256];
		zn_trainer_model_summary(t, model, sizeof(model));
		printf("zinc train: %s: %s, %" PRIu64
		       " parameters; %u x %u tokens x %u accumulation%s per step; %s\n",
		       path, model, zn_trainer_num_params(t), cfg.batch.micro_batch,
		       cfg.model.seq_len, cfg.batch.grad_accum, ranks,
		       zn_trainer_steps_done(t) ? "resumed from a checkpoint" : "from scratch");
		char device[256];
		zn_trainer_device_summary(t, device, sizeof(device));
		printf("device: %s\n", device);
		if (world > 1) {
			struct zn_rank_memory m;
			char p[32], g[32], o[32];
			zn_trainer_memory(t, &m);
			printf("rank 0's model states (ZeRO stage %u over %d ranks): parameters %s, "
			       "gradients %s, optimizer states %s\n", m.stage, world,
			       zn_format_size(m.params, p, sizeof(p)),
			       zn_format_size(m.grads, g, sizeof(g)),
			       zn_format_size(m.optimizer, o, sizeof(o)));
		}
		if (tiers[0])
			printf("%s\n", tiers);
		/* What each "auto" became (hidden-size ones once the model is
		 * known: the trainer's config), the defaults that are not
		 * DeepSpeed's, and the weight-decay rule. */
		char line[8192];
		const struct zn_config *tc = zn_trainer_config(t);
		if (zn_config_auto_report(tc, line, sizeof(line)))
			printf("%s\n", line);
		if (zn_config_defaults_report(tc, line, sizeof(line)))
			printf("%s\n", line);
		const struct zn_optimizer_params *op = &tc->optimizer.params;
		if (op->weight_decay > 0)
			printf("weight decay %g on %s (optimizer.params.weight_decay_params: %s)\n",
			       op->weight_decay,
			       op->weight_decay_params == ZN_DECAY_ALL
				       ? "every parameter"
				       : "matrices only, not biases or norms",
			       op->weight_decay_params == ZN_DECAY_ALL ? "all" : "matrices");
		/* Starting weights: how fast they came in, and that they never
		 * had to be whole in memory (ZeRO-Infinity's initialisation). */
		uint64_t from = cfg.model.from[0] && !zn_trainer_steps_done(t)
					? path_bytes(cfg.model.from) : 0;
		uint64_t hwm = proc_status_bytes("VmHWM:");
		char rss[32], grew[32], fb[32];
		if (from)
			printf("loaded %s from %s in %.2f s (%.2f GB/s); peak resident memory %s, "
			       "%s above what zinc held before loading\n",
			       zn_format_size(from, fb, sizeof(fb)), cfg.model.from, t_load,
			       (double)from / t_load / 1e9, zn_format_size(hwm, rss, sizeof(rss)),
			       zn_format_size(hwm > rss_before ? hwm - rss_before : 0, grew,
					      sizeof(grew)));
		fflush(stdout);
	}

	const uint64_t print_every = cfg.steps_per_print ? cfg.steps_per_print : 1;
	const bool tty = !quiet && isatty(STDERR_FILENO);
	double t_start = tool_now_s();
	uint64_t first = zn_trainer_steps_done(t);
	uint64_t saved = first; /* the step whose checkpoint is on disk (a resumed one's) */
	int status = 0;
	bool stop = false;
	double slowest = 0;
	while (zn_trainer_steps_done(t) < max_steps && !stop) {
		struct zn_step_info s;
		double t_step = tool_now_s();
		if (zn_trainer_step(t, &s) != 0) {
			fprintf(stderr, "%szinc train: %s%s\n", tty ? "\r\033[K" : "", who,
				zn_last_error());
			status = 1;
			break;
		}
		double val = -1;
		if (cfg.data.val[0] && cfg.data.val_every && s.step % cfg.data.val_every == 0 &&
		    zn_trainer_eval(t, &val) != 0) {
			fprintf(stderr, "zinc train: %svalidation: %s\n", who, zn_last_error());
			status = 1;
			break;
		}
		if (jl) {
			struct zn_rank_memory m;
			zn_trainer_memory(t, &m);
			log_json(jl, &s, val, &m);
		}
		double done = (double)(s.step - first), left = (double)(max_steps - s.step);
		double eta = done > 0 ? (tool_now_s() - t_start) / done * left : 0;
		if (quiet) {
			/* nothing: rank 0 reports */
		} else if (s.step % print_every == 0 || s.step == max_steps || val >= 0) {
			if (tty)
				fprintf(stderr, "\r\033[K");
			char scale[48] = "";
			if (cfg.fp16.enabled)
				snprintf(scale, sizeof(scale), " | scale %g%s", s.loss_scale,
					 s.skipped ? " (overflow: skipped)" : "");
			char prof[96] = "";
			if (cfg.activation_checkpointing.profile)
				snprintf(prof, sizeof(prof), " | recompute %.3f s, kept inputs %.3f s",
					 s.recompute_s, s.act_offload_s);
			char nvme[96] = "";
			if (s.nvme_read_bytes || s.nvme_write_bytes) {
				char r[32], w[32];
				snprintf(nvme, sizeof(nvme), " | nvme read %s, written %s",
					 zn_format_size(s.nvme_read_bytes, r, sizeof(r)),
					 zn_format_size(s.nvme_write_bytes, w, sizeof(w)));
			}
			char comm_s[96] = "";
			if (world > 1) {
				char c[32];
				snprintf(comm_s, sizeof(comm_s), " | sent %s, waited %.3f s",
					 zn_format_size(s.comm_bytes, c, sizeof(c)), s.comm_s);
			}
			printf("step %6" PRIu64 "/%" PRIu64 " | loss %.4f | lr %.2e | norm %.3f%s | "
			       "%.0f tok/s | %.3f s | device %s (peak %s) | host %s%s%s%s%s",
			       s.step, max_steps, s.loss, s.lr, s.grad_norm, scale,
			       (double)s.tokens / s.step_s, s.step_s,
			       zn_format_size(s.device_bytes, sz, sizeof(sz)),
			       zn_format_size(s.device_peak, sz2, sizeof(sz2)),
			       zn_format_size(s.host_bytes, sz3, sizeof(sz3)), nvme, comm_s, prof,
			       val >= 0 ? "" : "\n");
			if (val >= 0)
				printf(" | val loss %.4f\n", val);
			fflush(stdout);
		} else if (tty) {
			fprintf(stderr, "\r\033[Kstep %" PRIu64 "/%" PRIu64 " loss %.4f, ETA %.0f s",
				s.step, max_steps, s.loss, eta);
		}
		if (cfg.checkpoint.dir[0] && cfg.checkpoint.every &&
		    s.step % cfg.checkpoint.every == 0) {
			if (zn_trainer_save(t) != 0) {
				fprintf(stderr, "zinc train: %s%s\n", who, zn_last_error());
				status = 1;
				break;
			}
			saved = s.step;
			set_abort_msg(cfg.checkpoint.dir, saved);
		}
		t_step = tool_now_s() - t_step;
		if (t_step > slowest) {
			slowest = t_step;
			grace_s = (sig_atomic_t)(slowest * 4 > 60 ? slowest * 4 + 1 : 60);
		}
		/* Ranks stop together: one interrupted rank stops them all after
		 * the same step. */
		if (zn_trainer_any(t, interrupted, &stop) != 0) {
			fprintf(stderr, "zinc train: %s%s\n", who, zn_last_error());
			status = 1;
			break;
		}
	}
	if (tty)
		fprintf(stderr, "\r\033[K");
	/* The last step, unless its checkpoint is written already: a step is
	 * saved once. */
	if (status == 0 && cfg.checkpoint.dir[0]) {
		/* A save after a signal gets its own deadline: it may be the
		 * run's first and take longer than any step (a large model's
		 * states at 50 MB/s, a slow disk's pace, or four times the
		 * slowest step with its save, at least a minute). */
		if (interrupted) {
			double need = (double)train_checkpoint_bytes(zn_trainer_num_params(t)) / 50e6;
			need = need > 4 * slowest ? need : 4 * slowest;
			alarm(need > 60 ? (unsigned)need + 1 : 60);
		}
		if (saved != zn_trainer_steps_done(t) && zn_trainer_save(t) != 0) {
			fprintf(stderr, "zinc train: %s%s\n", who, zn_last_error());
			status = 1;
		} else if (!quiet) {
			printf("checkpoint: step %" PRIu64 " saved in %s\n", zn_trainer_steps_done(t),
			       cfg.checkpoint.dir);
		}
	}
	if (stop && status == 0) {
		if (!quiet)
			fprintf(stderr, "zinc train: interrupted at step %" PRIu64 "%s\n",
				zn_trainer_steps_done(t),
				cfg.checkpoint.dir[0] ? "; checkpoint saved" : "");
		status = 130;
	}
	if (jl)
		fclose(jl);
	if (trace && zn_trace_write(trace, trace_path) != 0) {
		fprintf(stderr, "zinc train: %s%s\n", who, zn_last_error());
		status = status ? status : 1;
	}
	/* After a failed step a thread of the trainer may be stuck where it
	 * failed (inside OpenBLAS, say); destroying the trainer joins them.
	 * What the run leaves on disk is complete by now (a checkpoint is
	 * committed whole or not at all), so a teardown that does not end
	 * within a minute is cut short rather than left hanging. */
	fflush(NULL);
	if (status) {
		grace_s = 60;
		set_abort_msg(cfg.checkpoint.dir, cfg.checkpoint.dir[0] ? saved : 0);
		interrupted = 1;
		alarm(60);
	}
	zn_trainer_destroy(t);
	alarm(0);
	zn_trace_destroy(trace);
	return status;
}
