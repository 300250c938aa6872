/* Training data: llm.c token shards, memory-mapped (see include/zinc/data.h
 * for the format, the window rule, the order and the splits).
 *
 * Every shard is checked when the loader opens (header, size, length, and
 * every token against the vocabulary), so a bad file fails before the first
 * step rather than hours into a run, naming the shard and the position.
 * Windows are checked again as they are served (cheap: one window), which
 * guards a shard changed on disk while mapped.
 */
#include "zinc/data.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zn_common.h"

/* The header is read as little-endian int32s and the tokens are used in
 * place as uint16/uint32: like llm.c, zinc assumes a little-endian host. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "llm.c shards are little-endian");

struct shard {
	char *path;
	void *map;          /* the whole file, read-only */
	size_t map_len;     /* bytes */
	const void *tok;    /* ntok tokens after the header */
	unsigned width;     /* bytes per token: 2 (uint16) or 4 (uint32) */
	uint64_t ntok;
	void *mask_map;     /* the sidecar NAME.mask, or NULL */
	size_t mask_len;    /* bytes */
	const uint8_t *mask; /* ntok values after its header, or NULL */
	uint64_t win_first; /* first window of this split */
	uint64_t win_count; /* windows of this split */
};

struct zn_data {
	struct zn_data_options opt;
	uint64_t bt;               /* B*T: tokens per batch (window k starts at k*B*T) */
	struct shard *shards;
	uint32_t nshards;
	uint64_t total_tokens;
	uint64_t batches_per_epoch;
	uint32_t nmasked;
	uint64_t fingerprint;
	struct zn_data_pos pos;
	/* Orders derived from (seed, epoch[, shard]); recomputed on demand. */
	uint32_t *shard_order;     /* nshards */
	uint64_t shard_order_epoch; /* UINT64_MAX: not computed */
	uint64_t *win_order;       /* windows of win_shard */
	uint64_t win_order_epoch;
	uint32_t win_shard;        /* UINT32_MAX: not computed */
};

/* splitmix64: the order generator.  Small, fast and fully determined by its
 * 64-bit state, so an order is a pure function of (seed, epoch, shard). */
static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t mix(uint64_t h, uint64_t v)
{
	uint64_t s = h ^ (v * 0x9e3779b97f4a7c15ull);
	return splitmix64(&s);
}

/* Uniform in [0, n), n >= 1, without modulo bias (Lemire's method). */
static uint64_t below(uint64_t *s, uint64_t n)
{
	unsigned __int128 m = (unsigned __int128)splitmix64(s) * n;
	uint64_t lo = (uint64_t)m;
	if (lo < n) {
		uint64_t t = -n % n;
		while (lo < t) {
			m = (unsigned __int128)splitmix64(s) * n;
			lo = (uint64_t)m;
		}
	}
	return (uint64_t)(m >> 64);
}

/* Fisher-Yates over the identity, or the identity without shuffle. */
static void permute_u64(uint64_t *a, uint64_t n, bool shuffle, uint64_t state)
{
	for (uint64_t i = 0; i < n; i++)
		a[i] = i;
	if (!shuffle)
		return;
	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = below(&state, i);
		uint64_t t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

static void permute_u32(uint32_t *a, uint32_t n, bool shuffle, uint64_t state)
{
	for (uint32_t i = 0; i < n; i++)
		a[i] = i;
	if (!shuffle)
		return;
	for (uint32_t i = n; i > 1; i--) {
		uint32_t j = (uint32_t)below(&state, i);
		uint32_t t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

#define HOW_TO_MAKE "make one with `zinc prepare-data` or llm.c's dev/data scripts"

/* NAME.bin -> NAME.mask; other names get ".mask" appended.  Caller frees. */
static char *mask_path(const char *path)
{
	size_t n = strlen(path);
	char *m = malloc(n + 6);
	if (!m)
		return NULL;
	memcpy(m, path, n + 1);
	if (n >= 4 && strcmp(path + n - 4, ".bin") == 0)
		m[n - 4] = '\0';
	strcat(m, ".mask");
	return m;
}

/* Map s's loss-mask sidecar when there is one.  0 when absent. */
static int map_mask(struct shard *s)
{
	int32_t h[ZN_DATA_HEADER_INTS];
	struct stat st;
	char *mp = mask_path(s->path);
	int err = 0, fd;

	if (!mp)
		return zn_error(-ENOMEM, "data shard %s: out of memory", s->path);
	fd = open(mp, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno == ENOENT ? 0 : zn_error(-errno, "loss mask %s: cannot open: %s", mp,
						     strerror(errno));
		free(mp);
		return err;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		err = zn_error(-EINVAL, "loss mask %s is not a readable regular file", mp);
		goto out;
	}
	if (st.st_size < (off_t)ZN_DATA_HEADER_BYTES ||
	    pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || h[0] != ZN_DATA_MASK_MAGIC) {
		err = zn_error(-EINVAL, "%s is not a zinc loss mask (a 1024-byte header with "
			       "magic %d, then one uint8 per token of %s): remove it or "
			       "regenerate it with the shard", mp, ZN_DATA_MASK_MAGIC, s->path);
		goto out;
	}
	if (h[1] != ZN_DATA_MASK_VERSION) {
		err = zn_error(-ENOTSUP, "loss mask %s has version %d; zinc reads version %d: "
			       "regenerate it with the shard", mp, h[1], ZN_DATA_MASK_VERSION);
		goto out;
	}
	if (h[2] < 0 || (uint64_t)h[2] != s->ntok) {
		err = zn_error(-EINVAL, "loss mask %s is for %d tokens but %s has %llu: it "
			       "belongs to another shard; regenerate both together", mp, h[2],
			       s->path, (unsigned long long)s->ntok);
		goto out;
	}
	if ((uint64_t)st.st_size != ZN_DATA_HEADER_BYTES + s->ntok) {
		err = zn_error(-EINVAL, "loss mask %s: %lld bytes, want %llu (header + %llu "
			       "tokens): truncated or damaged; regenerate it", mp,
			       (long long)st.st_size,
			       (unsigned long long)(ZN_DATA_HEADER_BYTES + s->ntok),
			       (unsigned long long)s->ntok);
		goto out;
	}
	s->mask_len = (size_t)st.st_size;
	s->mask_map = mmap(NULL, s->mask_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (s->mask_map == MAP_FAILED) {
		s->mask_map = NULL;
		err = zn_error(-errno, "loss mask %s: mmap: %s", mp, strerror(errno));
		goto out;
	}
	s->mask = (const uint8_t *)s->mask_map + ZN_DATA_HEADER_BYTES;
out:
	close(fd);
	free(mp);
	return err;
}

/* Open, check and map one shard.  Fills s (path already set). */
static inline uint32_t tok_at(const struct shard *s, uint64_t j)
{
	return s->width == 2 ? ((const uint16_t *)s->tok)[j] : ((const uint32_t *)s->tok)[j];
}

static int check_tokens(const struct zn_data *d, const struct shard *s);

static int map_shard(struct zn_data *d, struct shard *s)
{
	int32_t h[ZN_DATA_HEADER_INTS];
	struct stat st;
	int fd = open(s->path, O_RDONLY | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return zn_error(-errno, "data shard %s: cannot open: %s", s->path,
				strerror(errno));
	if (fstat(fd, &st) != 0) {
		err = zn_error(-errno, "data shard %s: stat: %s", s->path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = zn_error(-EINVAL, "data shard %s is not a regular file: narrow the data "
			       "pattern to token shards", s->path);
		goto out;
	}
	if (st.st_size < (off_t)ZN_DATA_HEADER_BYTES) {
		err = zn_error(-EINVAL, "%s is not an llm.c token shard: %lld bytes is shorter "
			       "than the %d-byte header; %s", s->path, (long long)st.st_size,
			       ZN_DATA_HEADER_BYTES, HOW_TO_MAKE);
		goto out;
	}
	ssize_t got = pread(fd, h, sizeof(h), 0);
	if (got != (ssize_t)sizeof(h)) {
		err = zn_error(got < 0 ? -errno : -EIO, "data shard %s: cannot read the header: %s",
			       s->path, got < 0 ? strerror(errno) : "short read");
		goto out;
	}
	if (h[0] == ZN_DATA_MASK_MAGIC) {
		err = zn_error(-EINVAL, "%s is a zinc loss mask, not a token shard: narrow the "
			       "data pattern to the .bin shards (masks are found beside them)",
			       s->path);
		goto out;
	}
	if (h[0] != ZN_DATA_MAGIC && h[0] != ZN_DATA_MAGIC_U32) {
		err = zn_error(-EINVAL, "%s is not an llm.c token shard: its first int32 is %d "
			       "(0x%08x), not the magic %d (uint16 tokens) or %d (uint32); %s",
			       s->path, h[0], (unsigned)h[0], ZN_DATA_MAGIC, ZN_DATA_MAGIC_U32,
			       HOW_TO_MAKE);
		goto out;
	}
	if (h[0] == ZN_DATA_MAGIC && h[1] != ZN_DATA_VERSION) {
		err = zn_error(-ENOTSUP, "data shard %s has version %d; with magic %d zinc reads "
			       "version %d (uint16 tokens): regenerate it with `zinc prepare-data` "
			       "or llm.c's gpt-2 data scripts", s->path, h[1], ZN_DATA_MAGIC,
			       ZN_DATA_VERSION);
		goto out;
	}
	if (h[0] == ZN_DATA_MAGIC_U32 && h[1] != ZN_DATA_VERSION_U32) {
		err = zn_error(-ENOTSUP, "data shard %s has version %d; with magic %d zinc reads "
			       "version %d (uint32 tokens): regenerate it with llm.c's llama-3 "
			       "data scripts", s->path, h[1], ZN_DATA_MAGIC_U32,
			       ZN_DATA_VERSION_U32);
		goto out;
	}
	s->width = h[0] == ZN_DATA_MAGIC ? 2 : 4;
	if (h[2] <= 0) {
		err = zn_error(-EINVAL, "data shard %s: header says %d tokens; a shard needs at "
			       "least one: regenerate it", s->path, h[2]);
		goto out;
	}
	s->ntok = (uint64_t)h[2];
	uint64_t want = ZN_DATA_HEADER_BYTES + s->width * s->ntok;
	if ((uint64_t)st.st_size != want) {
		err = zn_error(-EINVAL, "data shard %s: header says %llu tokens (%llu bytes with "
			       "the header) but the file has %lld bytes: %s; regenerate it",
			       s->path, (unsigned long long)s->ntok, (unsigned long long)want,
			       (long long)st.st_size,
			       (uint64_t)st.st_size < want ? "truncated" : "trailing bytes");
		goto out;
	}
	if (s->ntok < d->bt + 1) {
		err = zn_error(-EINVAL, "data shard %s has %llu tokens, fewer than one window of "
			       "B*T+1 = %llu (B=%u, T=%u): use a smaller batch or sequence "
			       "length, or larger shards (`zinc prepare-data --shard-tokens`)",
			       s->path, (unsigned long long)s->ntok,
			       (unsigned long long)(d->bt + 1), d->opt.B, d->opt.T);
		goto out;
	}
	s->map_len = (size_t)st.st_size;
	s->map = mmap(NULL, s->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (s->map == MAP_FAILED) {
		s->map = NULL;
		err = zn_error(-errno, "data shard %s: mmap of %zu bytes: %s", s->path, s->map_len,
			       strerror(errno));
		goto out;
	}
	s->tok = (const char *)s->map + ZN_DATA_HEADER_BYTES;
	err = check_tokens(d, s);
	if (err)
		goto out;
	err = map_mask(s);
	if (err)
		goto out;
	d->nmasked += s->mask != NULL;

	/* The split: the last ceil(f * n) windows are validation, but at
	 * least one stays for training. */
	uint64_t n = (s->ntok - 1) / d->bt;
	uint64_t nval = 0;
	if (d->opt.split != ZN_DATA_ALL && d->opt.val_fraction > 0) {
		/* ceil without libm: f * n < n fits in the integer. */
		double x = d->opt.val_fraction * (double)n;
		nval = (uint64_t)x;
		if ((double)nval < x)
			nval++;
		if (nval > n - 1)
			nval = n - 1;
	}
	switch (d->opt.split) {
	case ZN_DATA_ALL:
		s->win_first = 0;
		s->win_count = n;
		break;
	case ZN_DATA_TRAIN:
		s->win_first = 0;
		s->win_count = n - nval;
		break;
	case ZN_DATA_VAL:
		s->win_first = n - nval;
		s->win_count = nval;
		break;
	}
out:
	close(fd);
	return err;
}

/* Every token of shard s below the vocabulary (or, for uint32 tokens
 * without one, below 2^31, the int32 batch's range): a bad id is named by
 * its shard and position when the loader opens, not when its window comes
 * up, steps or hours into a run.  The scan reads the shard once, at memory
 * speed from the page cache (about 10 GB/s here) or the disk's; it takes
 * the maximum of each block of tokens, a loop the compiler vectorizes,
 * and looks for the first bad token only in a block that has one. */
static int check_tokens(const struct zn_data *d, const struct shard *s)
{
	const uint64_t limit = d->opt.vocab_size ? d->opt.vocab_size : (uint64_t)INT32_MAX + 1;
	if (!d->opt.vocab_size && s->width != 4)
		return 0;
	enum { BLOCK = 1 << 14 };
	for (uint64_t j0 = 0; j0 < s->ntok; j0 += BLOCK) {
		uint64_t n = s->ntok - j0 < BLOCK ? s->ntok - j0 : BLOCK;
		uint32_t mx = 0;
		if (s->width == 2) {
			const uint16_t *t = (const uint16_t *)s->tok + j0;
			uint16_t m = 0;
			for (uint64_t i = 0; i < n; i++)
				m = t[i] > m ? t[i] : m;
			mx = m;
		} else {
			const uint32_t *t = (const uint32_t *)s->tok + j0;
			for (uint64_t i = 0; i < n; i++)
				mx = t[i] > mx ? t[i] : mx;
		}
		if (mx < limit)
			continue;
		for (uint64_t i = 0; i < n; i++) {
			uint32_t t = tok_at(s, j0 + i);
			if (t >= limit)
				return zn_error(-ERANGE, "data shard %s: token %u at index %llu is "
						">= %s %llu: the shard was made with another "
						"tokenizer, or the model's vocab_size is too small",
						s->path, t, (unsigned long long)(j0 + i),
						d->opt.vocab_size ? "vocab_size" : "2^31 (int32 ids),",
						(unsigned long long)limit);
		}
	}
	return 0;
}

static const char *split_name(enum zn_data_split s)
{
	return s == ZN_DATA_TRAIN ? "training" : s == ZN_DATA_VAL ? "validation" : "whole";
}

struct zn_data *zn_data_open(const struct zn_data_options *opt)
{
	struct zn_data *d;
	glob_t g;
	int rc;

	if (!opt || !opt->pattern || !opt->pattern[0]) {
		zn_set_error("zn_data_open: no data pattern given");
		return NULL;
	}
	uint64_t world = opt->world ? opt->world : 1;
	if (opt->B == 0 || opt->T == 0 || (uint64_t)opt->B * opt->T >= (1ull << 31)) {
		zn_set_error("zn_data_open: B=%u, T=%u: B and T must be >= 1 and B*T < 2^31",
			     opt->B, opt->T);
		return NULL;
	}
	if (opt->rank >= world) {
		zn_set_error("zn_data_open: rank %u is not below world %llu", opt->rank,
			     (unsigned long long)world);
		return NULL;
	}
	if (!(opt->val_fraction >= 0 && opt->val_fraction < 1)) {
		zn_set_error("zn_data_open: val_fraction %g is outside [0, 1)", opt->val_fraction);
		return NULL;
	}
	if (opt->split > ZN_DATA_VAL) {
		zn_set_error("zn_data_open: unknown split %d", (int)opt->split);
		return NULL;
	}
	if (opt->split == ZN_DATA_VAL && opt->val_fraction <= 0) {
		zn_set_error("zn_data_open: the validation split of %s needs val_fraction > 0 "
			     "(or open the validation shards' own pattern as split 'all')",
			     opt->pattern);
		return NULL;
	}

	memset(&g, 0, sizeof(g));
	rc = glob(opt->pattern, 0, NULL, &g);
	if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
		globfree(&g);
		zn_set_error("no data shard matches '%s': check the path, or make shards with "
			     "`zinc prepare-data`", opt->pattern);
		return NULL;
	}
	if (rc != 0) {
		globfree(&g);
		zn_set_error("data pattern '%s': %s", opt->pattern,
			     rc == GLOB_NOSPACE ? "out of memory"
						: "a directory could not be read");
		return NULL;
	}
	if (g.gl_pathc > UINT32_MAX / 2) {
		globfree(&g);
		zn_set_error("data pattern '%s' matches too many files", opt->pattern);
		return NULL;
	}

	d = calloc(1, sizeof(*d));
	if (!d) {
		globfree(&g);
		zn_set_error("zn_data_open: out of memory");
		return NULL;
	}
	d->opt = *opt;
	d->opt.pattern = NULL; /* not kept: the caller's string */
	d->bt = (uint64_t)opt->B * opt->T;
	d->opt.world = opt->world ? opt->world : 1;
	d->nshards = (uint32_t)g.gl_pathc;
	d->shards = calloc(d->nshards, sizeof(*d->shards));
	d->shard_order = calloc(d->nshards, sizeof(*d->shard_order));
	d->shard_order_epoch = UINT64_MAX;
	d->win_shard = UINT32_MAX;
	if (!d->shards || !d->shard_order) {
		globfree(&g);
		zn_data_close(d);
		zn_set_error("zn_data_open: out of memory");
		return NULL;
	}

	/* The fingerprint covers what decides the batches: options and every
	 * shard's length in order, not the paths (data may move). */
	uint64_t fp = mix(0x7a696e63ull, d->bt);
	fp = mix(fp, opt->B);
	/* Neither the rank nor the world size: ranks interleave over one
	 * stream of windows, so a position resumes on any number of ranks.
	 * (The constant keeps positions saved before ranks existed valid.) */
	fp = mix(fp, 1);
	fp = mix(fp, opt->seed);
	fp = mix(fp, opt->shuffle);
	fp = mix(fp, (uint64_t)opt->split);
	uint64_t vf;
	memcpy(&vf, &opt->val_fraction, sizeof(vf));
	fp = mix(fp, vf);
	fp = mix(fp, d->nshards);

	for (uint32_t i = 0; i < d->nshards; i++) {
		struct shard *s = &d->shards[i];
		s->path = strdup(g.gl_pathv[i]);
		if (!s->path) {
			globfree(&g);
			zn_data_close(d);
			zn_set_error("zn_data_open: out of memory");
			return NULL;
		}
		if (map_shard(d, s) != 0) {
			globfree(&g);
			zn_data_close(d);
			return NULL;
		}
		d->total_tokens += s->ntok;
		d->batches_per_epoch += s->win_count;
		fp = mix(fp, s->ntok);
	}
	globfree(&g);
	d->fingerprint = fp;
	if (d->batches_per_epoch == 0) {
		zn_set_error("data pattern '%s': no window of B*T+1 = %llu tokens in the %s "
			     "split (val_fraction %g of %u shards): raise val_fraction or use "
			     "larger shards", opt->pattern, (unsigned long long)(d->bt + 1),
			     split_name(opt->split), opt->val_fraction, d->nshards);
		zn_data_close(d);
		return NULL;
	}
	zn_data_rewind(d);
	return d;
}

void zn_data_close(struct zn_data *d)
{
	if (!d)
		return;
	if (d->shards) {
		for (uint32_t i = 0; i < d->nshards; i++) {
			if (d->shards[i].map)
				munmap(d->shards[i].map, d->shards[i].map_len);
			if (d->shards[i].mask_map)
				munmap(d->shards[i].mask_map, d->shards[i].mask_len);
			free(d->shards[i].path);
		}
	}
	free(d->shards);
	free(d->shard_order);
	free(d->win_order);
	free(d);
}

/* The shard order of pos.epoch. */
static void want_shard_order(struct zn_data *d)
{
	if (d->shard_order_epoch == d->pos.epoch)
		return;
	permute_u32(d->shard_order, d->nshards, d->opt.shuffle,
		    mix(mix(d->opt.seed, 0x5348ull), d->pos.epoch));
	d->shard_order_epoch = d->pos.epoch;
}

/* The window order of shard s in pos.epoch. */
static int want_win_order(struct zn_data *d, uint32_t s)
{
	if (d->win_shard == s && d->win_order_epoch == d->pos.epoch)
		return 0;
	uint64_t n = d->shards[s].win_count;
	uint64_t *o = realloc(d->win_order, (size_t)(n ? n : 1) * sizeof(*o));
	if (!o)
		return zn_error(-ENOMEM, "data: out of memory for %llu windows of %s",
				(unsigned long long)n, d->shards[s].path);
	d->win_order = o;
	permute_u64(o, n, d->opt.shuffle,
		    mix(mix(mix(d->opt.seed, 0x5749ull), d->pos.epoch), s));
	d->win_shard = s;
	d->win_order_epoch = d->pos.epoch;
	return 0;
}

/* Move pos to a window that exists (skipping shards with none in this
 * split, rolling into the next epoch).  Terminates: batches_per_epoch > 0.
 * Run after every move, so the position always names the next batch and
 * the epoch counts up right after an epoch's last batch. */
static void settle(struct zn_data *d)
{
	for (;;) {
		if (d->pos.shard >= d->nshards) {
			d->pos.epoch++;
			d->pos.shard = 0;
			d->pos.window = 0;
		}
		want_shard_order(d);
		if (d->pos.window < d->shards[d->shard_order[d->pos.shard]].win_count)
			return;
		d->pos.shard++;
		d->pos.window = 0;
	}
}

/* n windows on along the stream. */
static void advance(struct zn_data *d, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		d->pos.window++;
		settle(d);
	}
}

/* Token j of a shard (either width). */

/* The window the position points at, checked against the vocabulary, and
 * its loss mask (checked) when asked for and the shard has one. */
static int current_window(struct zn_data *d, bool want_mask, const struct shard **shp,
			  uint64_t *first, const uint8_t **mask)
{
	settle(d);
	uint32_t s = d->shard_order[d->pos.shard];
	int rc = want_win_order(d, s);
	if (rc)
		return rc;
	const struct shard *sh = &d->shards[s];
	uint64_t k = sh->win_first + d->win_order[d->pos.window];
	uint64_t j0 = k * d->bt;
	/* Without a vocabulary, uint32 tokens must still fit the int32 batch. */
	uint64_t limit = d->opt.vocab_size ? d->opt.vocab_size : (uint64_t)INT32_MAX + 1;
	if (d->opt.vocab_size || sh->width == 4) {
		for (uint64_t i = 0; i <= d->bt; i++) {
			uint32_t t = tok_at(sh, j0 + i);
			if (t >= limit)
				return zn_error(-ERANGE, "data shard %s: token %u at index %llu is "
						">= vocab_size %llu: the shard was made with "
						"another tokenizer, or the model's vocab_size "
						"is too small", sh->path, t,
						(unsigned long long)(j0 + i),
						(unsigned long long)limit);
		}
	}
	const uint8_t *m = sh->mask ? sh->mask + j0 : NULL;
	if (m && want_mask)
		for (uint64_t i = 1; i <= d->bt; i++)
			if (m[i] > 1)
				return zn_error(-ERANGE, "loss mask of %s: value %u at index %llu; "
						"masks hold 0 or 1: regenerate it", sh->path, m[i],
						(unsigned long long)(j0 + i));
	*shp = sh;
	*first = j0;
	*mask = want_mask ? m : NULL;
	return 0;
}

int zn_data_next_batch(struct zn_data *d, int32_t *inputs, int32_t *targets)
{
	const struct shard *sh;
	const uint8_t *m;
	uint64_t j0;
	int rc;

	if (!d || !inputs || !targets)
		return zn_error(-EINVAL, "zn_data_next_batch: NULL argument");
	/* The position names the next round of `world` windows; this rank's
	 * is the rank-th of them. */
	struct zn_data_pos round = d->pos;
	advance(d, d->opt.rank);
	rc = current_window(d, true, &sh, &j0, &m);
	d->pos = round;
	if (rc)
		return rc;
	if (sh->width == 2) {
		const uint16_t *w = (const uint16_t *)sh->tok + j0;
		for (uint64_t i = 0; i < d->bt; i++) {
			inputs[i] = w[i];
			targets[i] = w[i + 1];
		}
	} else { /* checked < 2^31 in current_window */
		const uint32_t *w = (const uint32_t *)sh->tok + j0;
		for (uint64_t i = 0; i < d->bt; i++) {
			inputs[i] = (int32_t)w[i];
			targets[i] = (int32_t)w[i + 1];
		}
	}
	if (m) /* m[j] judges predicting token j, the target of position j-1 */
		for (uint64_t i = 0; i < d->bt; i++)
			if (!m[i + 1])
				targets[i] = -1;
	advance(d, d->opt.world);
	return 0;
}

int zn_data_next_window(struct zn_data *d, uint16_t *window)
{
	const struct shard *sh;
	const uint8_t *m;
	uint64_t j0;
	int rc;

	if (!d || !window)
		return zn_error(-EINVAL, "zn_data_next_window: NULL argument");
	struct zn_data_pos round = d->pos;
	advance(d, d->opt.rank);
	rc = current_window(d, false, &sh, &j0, &m);
	d->pos = round;
	if (rc)
		return rc;
	if (sh->width == 4) {
		for (uint64_t i = 0; i <= d->bt; i++)
			if (tok_at(sh, j0 + i) > UINT16_MAX)
				return zn_error(-ERANGE, "data shard %s: token %u at index "
						"%llu does not fit zn_data_next_window's "
						"uint16: use zn_data_next_batch", sh->path,
						tok_at(sh, j0 + i), (unsigned long long)(j0 + i));
		for (uint64_t i = 0; i <= d->bt; i++)
			window[i] = (uint16_t)tok_at(sh, j0 + i);
	} else {
		memcpy(window, (const uint16_t *)sh->tok + j0,
		       (size_t)(d->bt + 1) * sizeof(uint16_t));
	}
	advance(d, d->opt.world);
	return 0;
}

void zn_data_tell(const struct zn_data *d, struct zn_data_pos *pos)
{
	*pos = d->pos;
}

int zn_data_seek(struct zn_data *d, const struct zn_data_pos *pos)
{
	if (!d || !pos)
		return zn_error(-EINVAL, "zn_data_seek: NULL argument");
	if (pos->magic != ZN_DATA_POS_MAGIC)
		return zn_error(-EINVAL, "data position: magic 0x%08x is not 0x%08x: the saved "
				"position is damaged; restart the data from the beginning with "
				"zn_data_rewind", pos->magic, ZN_DATA_POS_MAGIC);
	if (pos->version != ZN_DATA_POS_VERSION)
		return zn_error(-EINVAL, "data position version %u, this zinc reads version %u: "
				"resume with the zinc that saved it, or restart the data",
				pos->version, ZN_DATA_POS_VERSION);
	if (pos->fingerprint != d->fingerprint)
		return zn_error(-EINVAL, "data position was saved for another data set or other "
				"data options (shards, B, T, seed, shuffle, split): resume with "
				"the same data and options, or restart the data");
	if (pos->shard > d->nshards)
		return zn_error(-EINVAL, "data position: shard %llu of %u is out of range",
				(unsigned long long)pos->shard, d->nshards);
	d->pos = *pos;
	/* An out-of-range window inside a shard rolls over here. */
	settle(d);
	return 0;
}

void zn_data_rewind(struct zn_data *d)
{
	memset(&d->pos, 0, sizeof(d->pos));
	d->pos.magic = ZN_DATA_POS_MAGIC;
	d->pos.version = ZN_DATA_POS_VERSION;
	d->pos.fingerprint = d->fingerprint;
	settle(d);
}

uint64_t zn_data_epoch(const struct zn_data *d)
{
	return d->pos.epoch;
}

uint64_t zn_data_batches_per_epoch(const struct zn_data *d)
{
	return d->batches_per_epoch;
}

uint32_t zn_data_num_masked_shards(const struct zn_data *d)
{
	return d->nmasked;
}

uint32_t zn_data_num_shards(const struct zn_data *d)
{
	return d->nshards;
}

uint64_t zn_data_num_tokens(const struct zn_data *d)
{
	return d->total_tokens;
}

const char *zn_data_current_file(const struct zn_data *d)
{
	/* The position is always settled (see advance), so its shard order is
	 * the current epoch's. */
	return d->shards[d->shard_order[d->pos.shard]].path;
}
