/* What `zinc train` checks before the first step: the process's resource
 * limits against what the run will use, and the checkpoint directory's free
 * space against one checkpoint.
 *
 * A limit found too low later fails far from its cause: an RLIMIT_AS that
 * OpenBLAS's allocator meets makes it retry mmap forever (it never returns
 * an error), an RLIMIT_NOFILE or RLIMIT_FSIZE turns into EMFILE or EFBIG in
 * the middle of a save, and a full disk into a failed save after hours of
 * training.  So each is compared with the run's figures now; a soft limit
 * below the need is raised up to the hard one (any process may), and a
 * hard limit below it refuses the run, naming the number it needs.
 *
 * The figures are upper bounds where the exact one is not known before the
 * trainer exists: the estimate errs towards refusing a run that was close
 * to its limit rather than starting one that cannot finish.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "preflight.h"
#include "zinc/common.h"

/* Address space OpenBLAS maps for each thread that calls it, on the first
 * call (memory.c's BUFFER_SIZE: 32 MiB on most targets, 128 MiB on the
 * AVX-512 ones a DYNAMIC_ARCH build like Debian's selects; measured here as
 * one 128 MiB mapping per worker).  When the mapping fails it retries for
 * ever, so the room must be there before the first product. */
#define BLAS_BUFFER_BYTES (128ull << 20)
/* Descriptors beyond the counted ones: a checkpoint save's files and
 * directories open at once, the lock files, a JSON log, a trace, the data
 * shard being opened, standard streams. */
#define FD_SPARE 64

static const char *fmt(uint64_t b, char *buf, size_t n)
{
	return zn_format_size(b, buf, n);
}

static unsigned cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

/* The directories of a comma-separated nvme_path list. */
static unsigned path_count(const char *list)
{
	unsigned n = list[0] ? 1 : 0;
	for (const char *p = list; *p; p++)
		n += *p == ',';
	return n;
}

static uint64_t open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	uint64_t n = 0;
	if (!d)
		return 16;
	while (readdir(d))
		n++;
	closedir(d);
	return n > 2 ? n - 2 : n; /* . and .. */
}

/* Address space mapped now, less the large anonymous mappings: those are
 * reservations that come and go with the limit itself (a malloc arena's
 * 64 MiB, an OpenBLAS thread's buffer mapped early -- under a tight limit
 * they fail and are retried or done without), and are counted apart
 * below, so that the figure, and the advice built on it, does not depend
 * on the limit it is compared with. */
static uint64_t mapped_now(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[4352];
	uint64_t sum = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi, ino;
		char perms[8], path[4096] = "";
		if (sscanf(line, "%llx-%llx %7s %*s %*s %llu %4095s", &lo, &hi, perms, &ino,
			   path) < 4)
			continue;
		const uint64_t n = hi - lo;
		if (ino == 0 && path[0] != '[' && n >= (32ull << 20))
			continue; /* anonymous and large */
		sum += n;
	}
	if (f)
		fclose(f);
	return sum;
}

/* Raise `res`'s soft limit to `need` when the hard one allows it.  0 when
 * the limit covers `need` (now), 1 when it cannot; *soft and *hard get the
 * limits as they are after the call. */
static int cover(int res, uint64_t need, rlim_t *soft, rlim_t *hard)
{
	struct rlimit rl;
	if (getrlimit(res, &rl) != 0)
		return 0; /* cannot tell: nothing to check */
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) {
		*soft = rl.rlim_cur;
		*hard = rl.rlim_max;
		return 0;
	}
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) {
		struct rlimit up = { .rlim_cur = rl.rlim_max == RLIM_INFINITY ? (rlim_t)need
									      : rl.rlim_max,
				     .rlim_max = rl.rlim_max };
		/* To the hard limit for descriptors (cheap, and an
		 * estimate is only an estimate); to the need for the rest. */
		if (res != RLIMIT_NOFILE)
			up.rlim_cur = (rlim_t)need;
		if (setrlimit(res, &up) == 0) {
			*soft = up.rlim_cur;
			*hard = up.rlim_max;
			return 0;
		}
	}
	*soft = rl.rlim_cur;
	*hard = rl.rlim_max;
	return 1;
}

static uint64_t host_need(const struct zn_plan *p)
{
	uint64_t b = 0;
	for (unsigned i = 0; p && i < p->ntiers; i++)
		if (p->tiers[i].kind == ZN_PLAN_PINNED || p->tiers[i].kind == ZN_PLAN_PAGEABLE)
			b += p->tiers[i].needed;
	return b;
}

/* Locked memory one io_uring takes where the kernel counts rings against
 * RLIMIT_MEMLOCK (measured: 8 KiB at 2 entries, 48 KiB at 129, 256 KiB at
 * 1025): the SQEs (64 bytes each) and the CQ ring (two CQEs of 16 bytes
 * per entry, the SQ index array) in whole pages, rounded up. */
static uint64_t ring_bytes(uint32_t queue_depth)
{
	uint64_t e = 1;
	while (e < (uint64_t)queue_depth + 1)
		e <<= 1;
	return 2 * e * 64 + e * 48 + (12 << 10);
}

uint64_t train_checkpoint_bytes(uint64_t params)
{
	/* The model's files (at most fp32), master, exp_avg and exp_avg_sq in
	 * fp32, and the safetensors headers, metadata and the manifest (a few
	 * KiB for a GPT-2; 256 KiB is room for thousands of tensors' names). */
	return params * (4 + 12) + (256 << 10);
}

int train_check_limits(const struct zn_config *cfg, const struct zn_plan *plan, uint64_t params,
		       char *msg, size_t len)
{
	char a[32], b[32], c[32];
	rlim_t soft, hard;
	const bool pnvme = cfg->zero_optimization.offload_param.device == ZN_OFFLOAD_NVME;
	const bool onvme = cfg->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NVME;
	const unsigned handles = (unsigned)pnvme + (unsigned)onvme;
	const unsigned rings = handles * cfg->aio.intra_op_parallelism;
	const unsigned ncpu = cpus();
	msg[0] = 0;

	/* Descriptors: each ring is an io_uring and an eventfd; each swap
	 * directory a file per section; data shards are mapped and closed. */
	uint64_t fds = open_fds() + 2ull * rings + FD_SPARE +
		       (pnvme ? path_count(cfg->zero_optimization.offload_param.nvme_path) : 0) +
		       (onvme ? path_count(cfg->zero_optimization.offload_optimizer.nvme_path) : 0);
	if (cover(RLIMIT_NOFILE, fds, &soft, &hard)) {
		snprintf(msg, len, "the open-file limit (ulimit -n) is %llu (hard %llu) but this run "
			 "opens up to %" PRIu64 " files (%u io_uring rings with their eventfds, "
			 "swap files, checkpoint files): raise it with `ulimit -n %" PRIu64 "`",
			 (unsigned long long)soft, (unsigned long long)hard, fds, rings, fds);
		return -EMFILE;
	}

	/* Address space: what is mapped now (the program and its libraries),
	 * the plan's host memory, a stack per thread (the device's and the
	 * CPU Adam's pools, the rings' workers, a few more) and, on the cpu
	 * backend, OpenBLAS's buffer for every thread that multiplies. */
	struct rlimit st;
	uint64_t stack = getrlimit(RLIMIT_STACK, &st) == 0 && st.rlim_cur != RLIM_INFINITY
				 ? (uint64_t)st.rlim_cur : 8ull << 20;
	uint64_t threads = 2ull * ncpu + rings + 8;
	uint64_t blas = cfg->device.type == ZN_DEVICE_CPU ? (ncpu + 1ull) * BLAS_BUFFER_BYTES : 0;
	/* (and 64 MiB for what grows besides: the heap's small allocations,
	 * the rings' mappings, the libraries' own) */
	uint64_t as = mapped_now() + host_need(plan) + threads * (stack + 4096) + blas +
		      (64ull << 20);
	if (cover(RLIMIT_AS, as, &soft, &hard)) {
		char d[32], e[32], f[32];
		snprintf(msg, len, "the address-space limit (ulimit -v) is %s but this run needs "
			 "about %s: %s mapped now, %s of host memory (zinc plan), %s for %" PRIu64
			 " threads' stacks%s%s: raise it with `ulimit -v %" PRIu64 "` (KiB), or "
			 "lower what the plan needs", fmt(soft, a, sizeof(a)), fmt(as, b, sizeof(b)),
			 fmt(mapped_now(), c, sizeof(c)), fmt(host_need(plan), d, sizeof(d)),
			 fmt(threads * stack, e, sizeof(e)), threads,
			 blas ? " and OpenBLAS's buffers of " : "", blas ? fmt(blas, f, sizeof(f)) : "",
			 (as + 1023) / 1024);
		return -ENOMEM;
	}

	/* The largest file the run writes: a swap directory's file (the
	 * plan's NVMe row is every file in the directory, so this bounds
	 * each), or the optimizer's checkpoint file. */
	uint64_t fsize = cfg->checkpoint.dir[0] ? params * 12 + (1 << 20) : 0;
	for (unsigned i = 0; plan && i < plan->ntiers; i++)
		if (plan->tiers[i].kind == ZN_PLAN_NVME && plan->tiers[i].needed > fsize)
			fsize = plan->tiers[i].needed;
	if (fsize && cover(RLIMIT_FSIZE, fsize, &soft, &hard)) {
		snprintf(msg, len, "the file-size limit (ulimit -f) is %s but this run writes files "
			 "of up to %s (swap files, the optimizer's checkpoint file): raise it with "
			 "`ulimit -f %" PRIu64 "` (KiB, as bash counts it), or `ulimit -f "
			 "unlimited`", fmt(soft, a, sizeof(a)), fmt(fsize, b, sizeof(b)),
			 (fsize + 1023) / 1024);
		return -EFBIG;
	}

	/* Locked memory: page-locking the swap buffers falls back to
	 * pageable ones (the plan warns once), but where the kernel counts
	 * io_uring's rings against this limit no ring can be made below it,
	 * and the ring's creation refuses the run saying so.  Raise the soft
	 * limit towards both first. */
	if (rings && geteuid() != 0) {
		uint64_t pinned = 0;
		for (unsigned i = 0; plan && i < plan->ntiers; i++)
			if (plan->tiers[i].kind == ZN_PLAN_PINNED)
				pinned += plan->tiers[i].needed;
		uint64_t ring = rings * ring_bytes(cfg->aio.queue_depth);
		if (cover(RLIMIT_MEMLOCK, pinned + ring, &soft, &hard))
			(void)cover(RLIMIT_MEMLOCK, ring, &soft, &hard);
	}
	return 0;
}

int train_check_space(const char *dir, uint64_t need, char *msg, size_t len)
{
	struct statvfs sv;
	char a[32], b[32];
	if (statvfs(dir, &sv) != 0)
		return 0; /* the save says why, with the path */
	uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
	if (avail >= need)
		return 0;
	snprintf(msg, len, "checkpoint.dir '%s' has %s free but one checkpoint of this run takes "
		 "about %s: free space there, point checkpoint.dir at a larger disk, or lower "
		 "checkpoint.keep so older checkpoints are pruned", dir, fmt(avail, a, sizeof(a)),
		 fmt(need, b, sizeof(b)));
	return -ENOSPC;
}
