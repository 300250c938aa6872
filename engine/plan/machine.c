/* What the machine offers each tier of the memory plan (see internal.h):
 * on this machine host memory (hwloc's total, /proc/meminfo's MemAvailable,
 * the cgroup memory limit), the locked-memory limit (getrlimit), the
 * training device's free memory (cudaMemGetInfo in CUDA builds,
 * device.memory_limit), and one nvme row per distinct nvme_path directory
 * (stat, access, statvfs; directories on one filesystem share its free
 * space); or the capacities of a described machine
 * (zn_plan_machine_parse reads its description), whose directories need
 * not exist here and share its disks by the rule in zinc/plan.h.  Nothing
 * here knows what training needs. */
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

void zn_plan_host_memory(const struct zn_plan_machine *m, struct zn_plan_host *h)
{
	memset(h, 0, sizeof(*h));
	if (m->host) {
		/* Page-locking limits are this machine's settings, not the
		 * described one's: none is applied. */
		h->total = h->available = m->host;
		h->memlock = UINT64_MAX;
		h->described = true;
		return;
	}
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

/* A described device of `bytes`: its memory for a GPU, a cap on the
 * device's allocations for the cpu backend (as device.memory_limit). */
static void described_device(const struct zn_config *c, uint64_t bytes, struct zn_plan_tier *t)
{
	char a[32];
	const bool cpu = c->device.type == ZN_DEVICE_CPU;
	const uint64_t limit = c->device.memory_limit;
	t->known = t->described = true;
	t->total = t->available = bytes;
	snprintf(t->source, sizeof(t->source), "the described device's memory%s",
		 cpu ? " (cpu backend: a cap on its device memory, as device.memory_limit)" : "");
	if (limit && limit < bytes) {
		t->available = limit;
		snprintf(t->source, sizeof(t->source), "device.memory_limit (the described device "
			 "has %s)", zn_plan_size(bytes, a));
	} else if (limit && limit > bytes && !cpu) {
		snprintf(t->note, sizeof(t->note), "device.memory_limit %s is more than the described "
			 "device's memory; the device would refuse it: lower it",
			 zn_plan_size(limit, a));
	}
	if (cpu)
		zn_plan_append(t->note, sizeof(t->note), "%sthe cpu backend's device memory is host "
			       "memory: the pageable host row counts these bytes too",
			       t->note[0] ? "; " : "");
}

void zn_plan_device_capacity(const struct zn_config *c, const struct zn_plan_machine *m,
			     struct zn_plan_tier *t)
{
	char a[32];
	if (m->device) {
		described_device(c, m->device, t);
		return;
	}
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

/* The row of directory `path` on this machine: it must exist and take
 * files; one row per filesystem object, its capacity the filesystem's
 * free space.  *k: its index in dirs.  0, or -errno naming the key. */
static int measured_dir(struct zn_plan *p, struct zn_plan_dir *dirs, unsigned *ndirs, int which,
			const char *path, unsigned *k)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		int e = errno;
		if (e == ENOENT)
			return zn_error(-ENOENT, "%s: '%s' does not exist; create it or point the key "
						 "at a directory on an NVMe drive",
					section_key[which], path);
		return zn_error(-e, "%s: '%s': %s", section_key[which], path, strerror(e));
	}
	if (!S_ISDIR(st.st_mode))
		return zn_error(-ENOTDIR, "%s: '%s' is not a directory; point the key at a "
					  "directory on an NVMe drive",
				section_key[which], path);
	if (access(path, W_OK | X_OK) != 0) {
		int e = errno;
		return zn_error(-e, "%s: '%s': cannot create swap files there (%s); fix its "
				    "permissions or point the key at another directory",
				section_key[which], path, strerror(e));
	}
	for (*k = 0; *k < *ndirs; (*k)++)
		if (dirs[*k].dev == st.st_dev && dirs[*k].ino == st.st_ino)
			return 0;
	struct statvfs vfs;
	if (statvfs(path, &vfs) != 0) {
		int e = errno;
		return zn_error(-e, "%s: '%s': %s", section_key[which], path, strerror(e));
	}
	struct zn_plan_tier *t = zn_plan_new_tier(p, ZN_PLAN_NVME, path, true);
	t->known = true;
	t->available = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	t->total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	snprintf(t->source, sizeof(t->source), "free space of its filesystem (statvfs)");
	/* A filesystem that keeps no count (ramfs: 0 blocks in all) has no
	 * limit to check against. */
	if (vfs.f_blocks == 0) {
		t->known = false;
		snprintf(t->source, sizeof(t->source), "unknown: its filesystem reports no size "
			 "(ramfs?)");
	}
	dirs[*k] = (struct zn_plan_dir){ .row = p->ntiers - 1, .dev = st.st_dev, .ino = st.st_ino };
	(*ndirs)++;
	return 0;
}

/* The row of directory `path` on the described machine: one per path
 * (trailing '/' aside), on the disk its order gives (zinc/plan.h's rule),
 * whose size is its capacity.  Nothing here is looked at. */
static void described_dir(struct zn_plan *p, const struct zn_plan_machine *m,
			  struct zn_plan_dir *dirs, unsigned *ndirs, const char *path, unsigned *k)
{
	char name[ZN_NVME_PATH_MAX];
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	snprintf(name, sizeof(name), "%.*s", (int)n, path);
	for (*k = 0; *k < *ndirs; (*k)++)
		if (strcmp(p->tiers[dirs[*k].row].name, name) == 0)
			return;
	const unsigned disk = ZN_MIN(*ndirs, m->ndisks - 1);
	struct zn_plan_tier *t = zn_plan_new_tier(p, ZN_PLAN_NVME, name, true);
	t->known = t->described = true;
	t->available = t->total = m->disk[disk];
	if (m->ndisks == 1)
		snprintf(t->source, sizeof(t->source), "the described nvme disk");
	else
		snprintf(t->source, sizeof(t->source), "the described nvme disk %u of %u", disk + 1,
			 m->ndisks);
	dirs[*k] = (struct zn_plan_dir){ .row = p->ntiers - 1, .dev = disk, .ino = *k };
	(*ndirs)++;
}

int zn_plan_nvme_section(struct zn_plan *p, const struct zn_plan_machine *m,
			 struct zn_plan_dir *dirs, unsigned *ndirs, int which, const char *value,
			 uint64_t capacity, uint64_t stripe, const char *what, uint64_t part,
			 const char *part_what)
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
		unsigned k = 0;
		if (m->ndisks) {
			described_dir(p, m, dirs, ndirs, paths[i], &k);
		} else {
			int rc = measured_dir(p, dirs, ndirs, which, paths[i], &k);
			if (rc)
				return rc;
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
			snprintf(t->note, sizeof(t->note), "shares %s with %u other director%s%s: "
				 "together they need %s of its %s free",
				 t->described ? "the described disk" : "its filesystem", others,
				 others == 1 ? "y" : "ies", t->described ? "" : " here",
				 zn_plan_size(together, a), zn_plan_size(t->available, b));
		if (t->fits)
			continue;
		char keys[160] = "";
		for (int s = 0; s < 2; s++)
			if (dirs[i].keys[s])
				zn_plan_append(keys, sizeof(keys), "%s%s", keys[0] ? " or " : "",
					       section_key[s]);
		if (t->described)
			zn_plan_advice(t, "'%s' needs %s but the described disk has %s: plan for a "
					  "larger disk, or for several (nvme=SIZE once per disk) with "
					  "a directory on each listed in %s, separated by ','",
				       t->name, zn_plan_size(together, a),
				       zn_plan_size(t->available, b), keys);
		else
			zn_plan_advice(t, "'%s' needs %s but has %s free: free space there, point %s "
					  "at a directory with more room, or list several directories "
					  "on other disks separated by ',' to stripe over them",
				       t->name, zn_plan_size(together, a),
				       zn_plan_size(t->available, b), keys);
	}
}

void zn_plan_machine_text(struct zn_plan *p, const struct zn_plan_machine *m, unsigned ndirs)
{
	char a[32];
	char *s = p->machine_text;
	const size_t n = sizeof(p->machine_text);
	p->machine = *m;
	p->described = m->device || m->host || m->ndisks;
	s[0] = 0;
	if (!p->described)
		return;
	zn_plan_append(s, n, "described, not measured:");
	if (m->device)
		zn_plan_append(s, n, " device %s,", zn_plan_size(m->device, a));
	if (m->host)
		zn_plan_append(s, n, " host %s,", zn_plan_size(m->host, a));
	for (unsigned i = 0; i < m->ndisks; i++)
		zn_plan_append(s, n, "%s %s,", i ? "" : m->ndisks == 1 ? " nvme" : " nvme disks",
			       zn_plan_size(m->disk[i], a));
	s[strlen(s) - 1] = 0; /* the last ',' */
	const char *here[3];
	unsigned nhere = 0;
	if (!m->device)
		here[nhere++] = "device";
	if (!m->host)
		here[nhere++] = "host";
	if (!m->ndisks)
		here[nhere++] = "nvme";
	for (unsigned i = 0; i < nhere; i++)
		zn_plan_append(s, n, "%s%s", i ? ", " : "; measured here: ", here[i]);
	if (m->ndisks > ndirs)
		zn_plan_append(s, n, "; %u described disk%s hold%s no nvme_path directory of this "
			       "config", m->ndisks - ndirs, m->ndisks - ndirs == 1 ? "" : "s",
			       m->ndisks - ndirs == 1 ? "s" : "");
}

/* ---- a described machine ---------------------------------------------------- */

/* One "name=SIZE" of a machine description. */
static int machine_part(const char *part, struct zn_plan_machine *m)
{
	static const char *const names[] = { "device", "host", "nvme" };
	const char *eq = strchr(part, '=');
	size_t len = eq ? (size_t)(eq - part) : strlen(part);
	unsigned k = 0;
	uint64_t v;
	while (k < ZN_ARRAY_SIZE(names) && !(strlen(names[k]) == len &&
					      strncmp(part, names[k], len) == 0))
		k++;
	if (!part[0])
		return zn_error(-EINVAL, "machine description: an empty part (two commas, or one "
					 "at an end); give parts such as device=24G,host=64G,nvme=2T");
	if (k == ZN_ARRAY_SIZE(names))
		return zn_error(-EINVAL, "machine description: '%s': no such part; the parts are "
					 "device=SIZE, host=SIZE and nvme=SIZE (once per disk), such "
					 "as device=24G,host=64G,nvme=2T", part);
	if (!eq)
		return zn_error(-EINVAL, "machine description: %s: give its size, as %s=SIZE",
				names[k], names[k]);
	if (zn_parse_size(eq + 1, &v) != 0)
		return zn_error(-EINVAL, "machine description: %s: '%s' is not a size; give an "
					 "integer with K, M, G or T (powers of 1024, as the config's "
					 "size keys: 24G, 24GB and 24GiB all mean 24 x 2^30 bytes; no "
					 "fractions, 1229G for 1.2T), or bytes such as 1.2e12",
				names[k], eq + 1);
	if (v == 0)
		return zn_error(-EINVAL, "machine description: %s: 0 bytes; give its capacity",
				names[k]);
	if ((k == 0 && m->device) || (k == 1 && m->host))
		return zn_error(-EINVAL, "machine description: %s is given twice; give it once",
				names[k]);
	if (k == 2 && m->ndisks == ZN_PLAN_MAX_DISKS)
		return zn_error(-EINVAL, "machine description: more than %d nvme disks",
				ZN_PLAN_MAX_DISKS);
	if (k == 0)
		m->device = v;
	else if (k == 1)
		m->host = v;
	else
		m->disk[m->ndisks++] = v;
	return 0;
}

int zn_plan_machine_parse(const char *text, struct zn_plan_machine *m)
{
	char buf[512];
	if (!text || !m)
		return zn_error(-EINVAL, "zn_plan_machine_parse: a text and a machine are required");
	if (!text[0])
		return zn_error(-EINVAL, "machine description: empty; give parts such as "
					 "device=24G,host=64G,nvme=2T");
	if (strlen(text) >= sizeof(buf))
		return zn_error(-EINVAL, "machine description: longer than %zu bytes",
				sizeof(buf) - 1);
	snprintf(buf, sizeof(buf), "%s", text);
	/* Split by hand: strtok would pass over an empty part. */
	for (char *part = buf;;) {
		char *comma = strchr(part, ',');
		if (comma)
			*comma = 0;
		int rc = machine_part(part, m);
		if (rc || !comma)
			return rc;
		part = comma + 1;
	}
}
