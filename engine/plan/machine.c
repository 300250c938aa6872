/* What this machine offers each tier of the memory plan (see internal.h):
 * host memory (hwloc's total, /proc/meminfo's MemAvailable, the cgroup
 * memory limit), the locked-memory limit (getrlimit), the training
 * device's free memory (cudaMemGetInfo in CUDA builds, device.memory_limit),
 * and one nvme row per distinct nvme_path directory (stat, access, statvfs;
 * directories on one filesystem share its free space).  Nothing here
 * knows what training needs. */
#include "zn_common.h"
#include "zn_build.h"

#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#if ZN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "plan/internal.h"

/* ---- host memory ------------------------------------------------------------ */

static uint64_t meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	uint64_t kib = 0;
	size_t n = strlen(key);
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, n) == 0 && line[n] == ':') {
			kib = strtoull(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return kib * 1024;
}

static bool read_u64(const char *path, uint64_t *out)
{
	FILE *f = fopen(path, "re");
	unsigned long long v;
	bool ok = f && fscanf(f, "%llu", &v) == 1; /* "max" does not scan: no limit */
	if (f)
		fclose(f);
	if (ok)
		*out = v;
	return ok;
}

/* The memory limit of this process's cgroup (v2 memory.max, else v1
 * memory.limit_in_bytes, as seen inside the cgroup namespace) and its
 * current usage; false when there is no finite limit. */
static bool cgroup_limit(uint64_t *limit, uint64_t *usage)
{
	char line[512], path[700];
	FILE *f = fopen("/proc/self/cgroup", "re");
	bool found = false;
	if (f) {
		while (!found && fgets(line, sizeof(line), f))
			if (strncmp(line, "0::", 3) == 0) {
				line[strcspn(line, "\n")] = 0;
				const char *rel = strcmp(line + 3, "/") == 0 ? "" : line + 3;
				snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", rel);
				found = read_u64(path, limit);
				snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", rel);
				if (found && !read_u64(path, usage))
					*usage = 0;
			}
		fclose(f);
	}
	/* A container without a cgroup namespace may see its own cgroup
	 * mounted at the root. */
	if (!found && (found = read_u64("/sys/fs/cgroup/memory.max", limit)) &&
	    !read_u64("/sys/fs/cgroup/memory.current", usage))
		*usage = 0;
	if (!found && read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes", limit)) {
		found = *limit < (1ull << 62); /* v1 writes "no limit" as a huge number */
		if (found && !read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes", usage))
			*usage = 0;
	}
	return found;
}

void zn_plan_host_memory(struct zn_plan_host *h)
{
	memset(h, 0, sizeof(*h));
	hwloc_topology_t topo;
	if (hwloc_topology_init(&topo) == 0) {
		if (hwloc_topology_load(topo) == 0)
			h->total = hwloc_get_root_obj(topo)->total_memory;
		hwloc_topology_destroy(topo);
	}
	h->available = meminfo("MemAvailable");
	/* hwloc sums the NUMA nodes' memory (those this process may use); a
	 * figure below MemAvailable (some virtual machines report partial
	 * nodes) cannot be the machine's, and the kernel's MemTotal is used. */
	if (h->total < h->available)
		h->total = meminfo("MemTotal");
	uint64_t limit, usage;
	if (cgroup_limit(&limit, &usage) && limit < h->total) {
		h->cgroup = true;
		h->total = limit;
		h->available = ZN_MIN(h->available, limit > usage ? limit - usage : 0);
	}
	/* As offload/bufpool.c decides: root is not held to the limit. */
	struct rlimit rl;
	h->memlock = UINT64_MAX;
	if (geteuid() != 0 && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		h->memlock = rl.rlim_cur;
}

/* ---- the device ----------------------------------------------------------------- */

void zn_plan_device_capacity(const struct zn_config *c, struct zn_plan_tier *t)
{
	char a[32];
	if (c->device.type == ZN_DEVICE_CPU) {
		if (c->device.memory_limit) {
			t->known = true;
			t->available = c->device.memory_limit;
			snprintf(t->source, sizeof(t->source), "device.memory_limit (cpu backend)");
		} else {
			t->counted_elsewhere = true;
			snprintf(t->source, sizeof(t->source),
				 "host memory (cpu backend, no device.memory_limit): checked in "
				 "the pageable host row");
		}
		return;
	}
#if ZN_HAVE_CUDA
	size_t free_b = 0, total_b = 0;
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e == cudaSuccess && (int)c->device.index >= count)
		e = cudaErrorInvalidDevice;
	if (e == cudaSuccess)
		e = cudaSetDevice((int)c->device.index);
	if (e == cudaSuccess)
		e = cudaMemGetInfo(&free_b, &total_b);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		snprintf(t->source, sizeof(t->source), "unknown: cuda:%u: %s", c->device.index,
			 cudaGetErrorString(e));
		return;
	}
	t->known = true;
	t->total = total_b;
	t->available = free_b;
	snprintf(t->source, sizeof(t->source), "cuda:%u free memory (cudaMemGetInfo)",
		 c->device.index);
	if (c->device.memory_limit && c->device.memory_limit < free_b) {
		t->available = c->device.memory_limit;
		snprintf(t->source, sizeof(t->source), "device.memory_limit (cuda:%u has %s free)",
			 c->device.index, zn_plan_size(free_b, a));
	} else if (c->device.memory_limit) {
		snprintf(t->note, sizeof(t->note), "device.memory_limit %s is more than the GPU's "
			 "free memory; the device refuses it: lower it",
			 zn_plan_size(c->device.memory_limit, a));
	}
#else
	(void)a;
	snprintf(t->source, sizeof(t->source), "unknown: zinc was built without CUDA");
#endif
}

/* ---- nvme rows ------------------------------------------------------------------ */

static const char *const section_key[2] = {
	"zero_optimization.offload_optimizer.nvme_path",
	"zero_optimization.offload_param.nvme_path",
};

int zn_plan_nvme_section(struct zn_plan *p, struct zn_plan_dir *dirs, unsigned *ndirs, int which,
			const char *value, uint64_t capacity, uint64_t stripe, const char *what,
			uint64_t part, const char *part_what)
{
	char buf[ZN_NVME_PATH_MAX];
	const char *paths[ZN_STORE_MAX_PATHS];
	int np = zn_nvme_paths_split(value, buf, paths, ZN_STORE_MAX_PATHS);
	if (np < 1)
		return zn_error(-EINVAL, "%s: '%s' has an empty path or more than %d; give the "
					 "directory (or directories, separated by ',')",
				section_key[which], value, ZN_STORE_MAX_PATHS);
	/* Each directory's file, as the swap store sizes it. */
	const struct zn_store_config sc = { .npaths = (unsigned)np, .capacity = capacity,
					    .stripe_bytes = stripe };
	uint64_t share = zn_store_path_bytes(&sc);
	/* The part of the file listed apart: its share, as if alone. */
	const struct zn_store_config pc = { .npaths = (unsigned)np, .capacity = part,
					    .stripe_bytes = stripe };
	uint64_t pshare = part ? ZN_MIN(zn_store_path_bytes(&pc), share) : 0;
	for (int i = 0; i < np; i++) {
		struct stat st;
		if (stat(paths[i], &st) != 0) {
			int e = errno;
			if (e == ENOENT)
				return zn_error(-ENOENT, "%s: '%s' does not exist; create it or point "
							 "the key at a directory on an NVMe drive",
						section_key[which], paths[i]);
			return zn_error(-e, "%s: '%s': %s", section_key[which], paths[i],
					strerror(e));
		}
		if (!S_ISDIR(st.st_mode))
			return zn_error(-ENOTDIR, "%s: '%s' is not a directory; point the key at a "
						  "directory on an NVMe drive",
					section_key[which], paths[i]);
		if (access(paths[i], W_OK | X_OK) != 0) {
			int e = errno;
			return zn_error(-e, "%s: '%s': cannot create swap files there (%s); fix its "
					    "permissions or point the key at another directory",
					section_key[which], paths[i], strerror(e));
		}
		unsigned k = 0;
		while (k < *ndirs && !(dirs[k].dev == st.st_dev && dirs[k].ino == st.st_ino))
			k++;
		if (k == *ndirs) {
			struct statvfs vfs;
			if (statvfs(paths[i], &vfs) != 0) {
				int e = errno;
				return zn_error(-e, "%s: '%s': %s", section_key[which], paths[i],
						strerror(e));
			}
			struct zn_plan_tier *t = zn_plan_new_tier(p, ZN_PLAN_NVME, paths[i], true);
			t->known = true;
			t->available = (uint64_t)vfs.f_bavail * vfs.f_frsize;
			t->total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
			snprintf(t->source, sizeof(t->source), "free space of its filesystem (statvfs)");
			/* A filesystem that keeps no count (ramfs: 0 blocks in
			 * all) has no limit to check against. */
			if (vfs.f_blocks == 0) {
				t->known = false;
				snprintf(t->source, sizeof(t->source),
					 "unknown: its filesystem reports no size (ramfs?)");
			}
			dirs[k] = (struct zn_plan_dir){ .row = p->ntiers - 1, .dev = st.st_dev,
						.ino = st.st_ino };
			(*ndirs)++;
		}
		dirs[k].keys[which] = true;
		zn_plan_item(&p->tiers[dirs[k].row], share - pshare, "%s%s", what,
			     np > 1 ? ", its share of the stripes" : "");
		if (pshare)
			zn_plan_item(&p->tiers[dirs[k].row], pshare, "%s%s", part_what,
				     np > 1 ? ", its share of the stripes" : "");
	}
	return 0;
}

/* Directories on one filesystem share its free space: each row's fit is
 * checked against the sum over its filesystem. */
void zn_plan_nvme_fit(struct zn_plan *p, const struct zn_plan_dir *dirs, unsigned ndirs)
{
	char a[32], b[32];
	for (unsigned i = 0; i < ndirs; i++) {
		struct zn_plan_tier *t = &p->tiers[dirs[i].row];
		uint64_t together = 0;
		unsigned others = 0;
		for (unsigned k = 0; k < ndirs; k++)
			if (dirs[k].dev == dirs[i].dev) {
				together += p->tiers[dirs[k].row].needed;
				others += k != i;
			}
		t->fits = !t->known || together <= t->available;
		if (others && t->known)
			snprintf(t->note, sizeof(t->note), "shares its filesystem with %u other "
				 "director%s here: together they need %s of its %s free",
				 others, others == 1 ? "y" : "ies", zn_plan_size(together, a),
				 zn_plan_size(t->available, b));
		if (t->fits)
			continue;
		char keys[160] = "";
		for (int s = 0; s < 2; s++)
			if (dirs[i].keys[s])
				zn_plan_append(keys, sizeof(keys), "%s%s", keys[0] ? " or " : "",
					       section_key[s]);
		zn_plan_advice(t, "'%s' needs %s but has %s free: free space there, point %s at a "
				  "directory with more room, or list several directories on other "
				  "disks separated by ',' to stripe over them",
			       t->name, zn_plan_size(together, a), zn_plan_size(t->available, b),
			       keys);
	}
}
