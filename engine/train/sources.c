/* Where starting weights are read from (struct sources): a checkpoint's
 * optimizer files (whole, or the parts of the ranks that saved it), or the
 * architecture's pretrained weights (model/arch.h's reader: a Hugging Face
 * GPT-2 model.safetensors or Llama folder, or llm.c's GPT-2 .bin); without
 * any, each tensor is initialised.  Every tensor is checked
 * when its source is opened and read, a range of its elements at a time,
 * when asked for: the trainer (weights.c) and the consolidation read
 * through here alike. */
#include "zn_common.h"

#include "train/internal.h"

#include <glob.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The checkpoint's parts: one file, or one per rank that saved it. */
static int nparts(const struct sources *src)
{
	return src->ckpt ? 1 : src->world;
}

static struct zn_st_file *part_file(const struct sources *src, int r)
{
	return src->ckpt ? src->ckpt : src->shards[r];
}

struct zn_st_file *tr_sources_meta(const struct sources *src)
{
	return part_file(src, 0);
}

/* Sharded parts of tiled tensors: metadata zinc.tile_rows lists them as
 * "name:rows;name:rows" (save.c), each rank's part then holding its piece
 * of every tile in order.  Absent: every part is a run of the tensor. */
static int read_tile_rows(struct sources *src, const char *dir)
{
	const char *v = zn_st_metadata(src->shards[0], "zinc.tile_rows");
	if (!v || !*v)
		return 0;
	if (!(src->tile_rows = calloc(src->tab->nt, sizeof(*src->tile_rows))))
		return zn_error(-ENOMEM, "out of memory");
	const char *bad;
	int len;
	if (tr_tile_rows_parse(v, src->tab, src->tile_rows, &bad, &len))
		return zn_error(-EINVAL, "checkpoint '%s': metadata zinc.tile_rows ('%.*s') names no "
					 "tiled tensor of this model; the checkpoint is damaged: "
					 "resume from an earlier one", dir, len, bad);
	return 0;
}

/* Rank r's piece of tensor i's tile k in the parts (k 0: its part when
 * the parts are not tiled). */
static void part_piece(const struct sources *src, unsigned i, int r, uint64_t k,
		       struct zn_zero_piece *p)
{
	const struct zn_param_desc *d = &src->tab->d[i];
	const uint64_t R = src->tile_rows ? src->tile_rows[i] : 0;
	zn_zero_piece_of(R ? (uint64_t)d->shape[0] : 1, R ? (uint64_t)d->shape[1] : d->numel, R,
			 nparts(src), r, k, p);
}

static uint64_t part_tiles(const struct sources *src, unsigned i)
{
	const uint64_t R = src->tile_rows ? src->tile_rows[i] : 0;
	return R ? ZN_DIV_ROUND_UP((uint64_t)src->tab->d[i].shape[0], R) : 1;
}

/* The optimizer files of a checkpoint: optimizer.safetensors (whole
 * tensors), or optimizer-RRRRR-of-WWWWW.safetensors for W ranks' parts. */
int tr_sources_open_checkpoint(struct sources *src, const char *dir)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/optimizer.safetensors", dir);
	if (access(path, F_OK) == 0) {
		src->ckpt = zn_st_open(path);
		return src->ckpt ? 0 : -EINVAL;
	}
	glob_t g;
	snprintf(path, sizeof(path), "%s/optimizer-00000-of-*.safetensors", dir);
	int W = 0;
	if (glob(path, 0, NULL, &g) == 0) {
		const char *of = g.gl_pathc == 1 ? strstr(g.gl_pathv[0] + strlen(dir), "-of-") : NULL;
		W = of ? atoi(of + 4) : 0;
		globfree(&g);
	}
	if (W < 1)
		return zn_error(-EINVAL, "checkpoint '%s' has neither optimizer.safetensors nor one "
					 "set of optimizer-RRRRR-of-WWWWW.safetensors parts; point "
					 "checkpoint.dir elsewhere or set checkpoint.resume: false",
				dir);
	src->shards = calloc((size_t)W, sizeof(*src->shards));
	if (!src->shards)
		return zn_error(-ENOMEM, "out of memory");
	src->world = W;
	for (int r = 0; r < W; r++) {
		snprintf(path, sizeof(path), "%s/optimizer-%05d-of-%05d.safetensors", dir, r, W);
		if (access(path, F_OK) != 0)
			return zn_error(-ENOENT, "checkpoint '%s' was saved by %d ranks but the part "
						 "of rank %d (%s) is missing: the checkpoint is "
						 "incomplete; resume from an earlier one", dir, W, r,
					path);
		if (!(src->shards[r] = zn_st_open(path)))
			return -EINVAL;
	}
	return 0;
}

/* The first `nstates` of each tensor's states (master, exp_avg,
 * exp_avg_sq) in the opened optimizer files: every part present, fp32, of
 * its length (the parts' tiles read first: the model's tensors are known
 * now).  Before any read. */
int tr_sources_check_states(struct sources *src, const char *dir, int nstates)
{
	const int W = nparts(src);
	int rc = src->shards && !src->tile_rows ? read_tile_rows(src, dir) : 0;
	if (rc)
		return rc;
	for (unsigned i = 0; i < src->tab->nt; i++)
		for (int k = 0; k < nstates; k++) {
			const struct zn_param_desc *d = &src->tab->d[i];
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", d->name, tr_state_suffix[k]);
			for (int r = 0; r < W; r++) {
				struct zn_zero_piece p;
				part_piece(src, i, r, part_tiles(src, i) - 1, &p);
				const uint64_t len = p.own + p.len; /* its part's elements */
				if (!len)
					continue;
				const struct zn_st_tensor *x = zn_st_find(part_file(src, r), name);
				if (!x || x->dtype != ZN_ST_F32 || x->bytes != len * 4)
					return zn_error(-EINVAL, "checkpoint '%s': tensor '%s'%s is "
								 "missing or has the wrong shape", dir,
							name, W > 1 ? " of a rank's part" : "");
			}
		}
	return 0;
}

/* Fine-tuning: the architecture's pretrained weights (a Llama's Hugging
 * Face folder; GPT-2's Hugging Face model.safetensors or llm.c .bin).
 * Every tensor is checked now (present, dtype, shape), read when made. */
int tr_sources_open_pretrained(struct sources *src, const char *path)
{
	return zn_arch_reader_open(src->arch, path, src->tab->d, src->tab->nt, &src->pretrained);
}

void tr_sources_close(struct sources *src)
{
	for (int r = 0; r < src->world && src->shards; r++)
		zn_st_close(src->shards[r]);
	free(src->shards);
	src->shards = NULL;
	free(src->tile_rows);
	src->tile_rows = NULL;
	src->world = 0;
	zn_arch_reader_close(src->pretrained);
	src->pretrained = NULL;
	zn_st_close(src->ckpt);
	src->ckpt = NULL;
}

/* Elements [off, off + n) of tensor i's starting states: a checkpoint's
 * (from the parts that cover them; m or v NULL: not wanted), or
 * pretrained (or freshly initialised) weights with zero moments (m, v
 * NULL: none).  Read from the mapped files, whose pages then leave this
 * process, so a checkpoint larger than memory is never held whole. */
int tr_sources_read(const struct sources *src, unsigned i, uint64_t off, uint64_t n,
		    float *master, float *m, float *v)
{
	const struct zn_param_desc *d = &src->tab->d[i];
	if (src->ckpt || src->shards) {
		float *a[3] = { master, m, v };
		const int W = nparts(src);
		for (int k = 0; k < 3; k++) {
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", d->name, tr_state_suffix[k]);
			for (int r = 0; r < W && a[k]; r++)
				for (uint64_t q = 0; q < part_tiles(src, i); q++) {
					/* Rank r's piece of tile q: [lo, lo + len) of
					 * the tensor, at `own` in its part. */
					struct zn_zero_piece p;
					part_piece(src, i, r, q, &p);
					const uint64_t lo = p.first + p.lo;
					const uint64_t b = ZN_MAX(lo, off), e = ZN_MIN(lo + p.len, off + n);
					int rc = b < e ? zn_st_read(zn_st_find(part_file(src, r), name),
								    (p.own + b - lo) * 4, (e - b) * 4,
								    a[k] + (b - off))
						       : 0;
					if (rc)
						return rc;
				}
		}
		return 0;
	}
	if (m)
		memset(m, 0, n * 4);
	if (v)
		memset(v, 0, n * 4);
	if (src->pretrained)
		return zn_arch_reader_get_range(src->pretrained, i, off, n, master);
	zn_arch_init_range(src->arch, d, src->seed, i, off, n, master);
	return 0;
}
