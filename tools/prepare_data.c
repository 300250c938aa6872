/* `zinc prepare-data`: text files -> byte-level llm.c token shards.
 *
 * Tokenizer: bytes.  The vocabulary is 256 and token t is the byte t, so a
 * fresh machine can train on any text it has without a tokenizer.  Each
 * input file is one document; with --separator B (default 0, the NUL byte,
 * which text does not contain) the token B is written before every document,
 * as llm.c writes <|endoftext|> before each; --separator none concatenates
 * the files as they are.
 *
 * Split: the token stream (all files in the order given, globs sorted) is
 * cut once: the last ceil(F * total) tokens go to PREFIX_val_NNNNNN.bin,
 * the rest to PREFIX_train_NNNNNN.bin, llm.c's naming; each split is cut
 * into shards of --shard-tokens tokens (the last one shorter).
 *
 * Safety: everything is checked before a byte is written; shards are
 * written under hidden temporary names, fsynced, and renamed only when all
 * of them are complete (then the directory is fsynced), so a failure leaves
 * no shard behind.  Existing PREFIX_train_* / PREFIX_val_* shards (and
 * their .mask sidecars) are refused unless --force, which also removes the
 * old ones the new set does not replace (a glob over the directory must not
 * mix two data sets, and an old mask must not apply to a new shard).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "options.h"
#include "util.h"
#include "zinc/data.h"

#define PROG "zinc prepare-data"

struct prep {
	const char *out;
	const char *prefix;
	uint64_t shard_tokens;
	double val_fraction;
	int separator; /* 0..255, or -1: none */
	bool force;
};

static int set_val_fraction(void *ctx, const char *arg, const char **why)
{
	struct prep *p = ctx;
	char *end;
	errno = 0;
	double v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v >= 0 && v < 1)) {
		*why = "a number in [0, 1)";
		return -1;
	}
	p->val_fraction = v;
	return 0;
}

static int set_separator(void *ctx, const char *arg, const char **why)
{
	struct prep *p = ctx;
	char *end;
	if (strcmp(arg, "none") == 0) {
		p->separator = -1;
		return 0;
	}
	errno = 0;
	long v = strtol(arg, &end, 0);
	if (errno || end == arg || *end || v < 0 || v > 255) {
		*why = "a byte value 0..255, or none";
		return -1;
	}
	p->separator = (int)v;
	return 0;
}

static const struct opt options[] = {
	OPT_STR("out", "DIR", NULL, "directory for the shards (created if missing)", struct prep,
		out),
	OPT_STR("prefix", "NAME", "data", "shard names: NAME_train_000000.bin, NAME_val_000000.bin",
		struct prep, prefix),
	OPT_NUM("shard-tokens", "N", "1e8", "tokens per shard (1e8, or K/M/G: powers of 1024)",
		struct prep, shard_tokens, 1, INT32_MAX),
	OPT_CALL("val-fraction", "F", "0", "write the last fraction F of the tokens as val shards",
		 set_val_fraction),
	OPT_CALL("separator", "BYTE|none", "0",
		 "token written before each file (document); none: plain concatenation",
		 set_separator),
	OPT_BOOL("force", "replace existing NAME_train_*/NAME_val_* shards in DIR", struct prep,
		 force),
};

static const char synopsis[] = "--out DIR [--prefix NAME] [--shard-tokens N] "
			       "[--val-fraction F] [--separator BYTE|none] [--force] FILE|GLOB...";

struct input {
	char *path;
	uint64_t size; /* bytes = tokens */
};

struct inputs {
	struct input *v;
	size_t n, cap;
};

static int add_input(struct inputs *in, const char *path, uint64_t size)
{
	if (in->n == in->cap) {
		size_t cap = in->cap ? 2 * in->cap : 64;
		struct input *v = realloc(in->v, cap * sizeof(*v));
		if (!v)
			return -1;
		in->v = v;
		in->cap = cap;
	}
	in->v[in->n].path = strdup(path);
	if (!in->v[in->n].path)
		return -1;
	in->v[in->n++].size = size;
	return 0;
}

/* Expand one argument: a file, or a glob.  Returns 0 or 2 (printed). */
static int expand(struct inputs *in, const char *arg)
{
	bool is_glob = strpbrk(arg, "*?[") != NULL;
	glob_t g;
	struct stat st;
	int rc = 0;

	if (!is_glob) {
		if (stat(arg, &st) != 0) {
			fprintf(stderr, PROG ": cannot read %s: %s\n", arg, strerror(errno));
			return 2;
		}
		if (!S_ISREG(st.st_mode)) {
			fprintf(stderr, PROG ": %s is not a regular file: pass text files or a "
					"glob such as '%s/*'\n", arg, arg);
			return 2;
		}
		if (access(arg, R_OK) != 0) {
			fprintf(stderr, PROG ": cannot read %s: %s\n", arg, strerror(errno));
			return 2;
		}
		if (add_input(in, arg, (uint64_t)st.st_size) != 0) {
			fprintf(stderr, PROG ": out of memory\n");
			return 2;
		}
		return 0;
	}
	memset(&g, 0, sizeof(g));
	int grc = glob(arg, 0, NULL, &g);
	if (grc == GLOB_NOMATCH) {
		fprintf(stderr, PROG ": no file matches '%s'\n", arg);
		globfree(&g);
		return 2;
	}
	if (grc != 0) {
		fprintf(stderr, PROG ": cannot expand '%s'\n", arg);
		globfree(&g);
		return 2;
	}
	size_t used = 0;
	for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
		const char *p = g.gl_pathv[i];
		/* A glob over a directory may catch subdirectories: skip
		 * them, but an unreadable file is an error. */
		if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (access(p, R_OK) != 0) {
			fprintf(stderr, PROG ": cannot read %s: %s\n", p, strerror(errno));
			rc = 2;
		} else if (add_input(in, p, (uint64_t)st.st_size) != 0) {
			fprintf(stderr, PROG ": out of memory\n");
			rc = 2;
		}
		used++;
	}
	if (rc == 0 && used == 0) {
		fprintf(stderr, PROG ": '%s' matches no regular file\n", arg);
		rc = 2;
	}
	globfree(&g);
	return rc;
}

/* Is `name` one of our shards, PREFIX_train_*.bin or PREFIX_val_*.bin, or
 * a loss mask beside one (.mask: a stale mask must not meet a new shard)? */
static bool is_our_shard(const char *name, const char *prefix)
{
	size_t lp = strlen(prefix), ln = strlen(name);
	if (strncmp(name, prefix, lp) != 0)
		return false;
	const char *rest = name + lp;
	if (strncmp(rest, "_train_", 7) != 0 && strncmp(rest, "_val_", 5) != 0)
		return false;
	return (ln > 4 && strcmp(name + ln - 4, ".bin") == 0) ||
	       (ln > 5 && strcmp(name + ln - 5, ".mask") == 0);
}

/* One output shard. */
struct shard_out {
	char final[4096];
	char tmp[4096];
	uint64_t ntok;
	bool created;
};

struct writer {
	struct shard_out *shards;
	size_t nshards, cur;
	int fd;
	uint64_t left; /* tokens still to write into shards[cur] */
	uint16_t buf[1 << 16];
	size_t nbuf;
};

static int write_all(int fd, const void *p, size_t len, const char *path)
{
	const char *c = p;
	while (len) {
		ssize_t w = write(fd, c, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			fprintf(stderr, PROG ": writing %s: %s\n", path, strerror(errno));
			return -1;
		}
		c += w;
		len -= (size_t)w;
	}
	return 0;
}

static int open_shard(struct writer *w)
{
	struct shard_out *s = &w->shards[w->cur];
	int32_t h[ZN_DATA_HEADER_INTS] = { 0 };

	w->fd = open(s->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		fprintf(stderr, PROG ": cannot create %s: %s\n", s->tmp, strerror(errno));
		return -1;
	}
	s->created = true;
	/* The header is known up front: the plan fixed every shard's length. */
	h[0] = ZN_DATA_MAGIC;
	h[1] = ZN_DATA_VERSION;
	h[2] = (int32_t)s->ntok;
	w->left = s->ntok;
	return write_all(w->fd, h, sizeof(h), s->tmp);
}

static int flush_tokens(struct writer *w)
{
	int rc = write_all(w->fd, w->buf, w->nbuf * sizeof(uint16_t), w->shards[w->cur].tmp);
	w->nbuf = 0;
	return rc;
}

static int close_shard(struct writer *w)
{
	const char *path = w->shards[w->cur].tmp;
	if (flush_tokens(w) != 0)
		return -1;
	if (fsync(w->fd) != 0) {
		fprintf(stderr, PROG ": fsync %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (close(w->fd) != 0) {
		w->fd = -1;
		fprintf(stderr, PROG ": closing %s: %s\n", path, strerror(errno));
		return -1;
	}
	w->fd = -1;
	w->cur++;
	return 0;
}

static int emit(struct writer *w, uint16_t t)
{
	if (w->fd < 0 && open_shard(w) != 0)
		return -1;
	w->buf[w->nbuf++] = t;
	w->left--;
	if (w->nbuf == ARRAY_SIZE(w->buf) && flush_tokens(w) != 0)
		return -1;
	if (w->left == 0)
		return close_shard(w);
	return 0;
}

static int plan_split(struct shard_out *v, size_t *n, uint64_t tokens, uint64_t per,
		      const char *dir, const char *prefix, const char *split)
{
	for (uint64_t i = 0; tokens; i++) {
		struct shard_out *s = &v[(*n)++];
		s->ntok = tokens < per ? tokens : per;
		tokens -= s->ntok;
		snprintf(s->final, sizeof(s->final), "%s/%s_%s_%06llu.bin", dir, prefix, split,
			 (unsigned long long)i);
		snprintf(s->tmp, sizeof(s->tmp), "%s/.%s_%s_%06llu.bin.tmp-%ld", dir, prefix,
			 split, (unsigned long long)i, (long)getpid());
		if (strlen(s->final) >= sizeof(s->final) - 1 ||
		    strlen(s->tmp) >= sizeof(s->tmp) - 1)
			return -1;
	}
	return 0;
}

static bool in_new_set(const struct shard_out *v, size_t n, const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].final, path) == 0)
			return true;
	return false;
}

int cmd_prepare_data(int argc, char **argv)
{
	struct prep p = {
		.prefix = "data",
		.shard_tokens = 100000000,
		.separator = 0,
	};
	struct inputs in = { 0 };
	struct writer *w = NULL;
	struct shard_out *shards = NULL;
	size_t nshards = 0;
	int rc = 2, n;
	char **pos = calloc((size_t)argc + 1, sizeof(*pos));
	size_t npos = 0;

	if (!pos) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	/* Options and inputs in any order: parse up to the next positional,
	 * take it, go on (opts_parse stops at the first non-option). */
	for (int i = 1; i < argc;) {
		if (strcmp(argv[i], "--") == 0) {
			while (++i < argc)
				pos[npos++] = argv[i];
			break;
		}
		if (argv[i][0] != '-' || argv[i][1] == '\0') {
			pos[npos++] = argv[i++];
			continue;
		}
		n = opts_parse(PROG, options, ARRAY_SIZE(options), argc - i + 1, argv + i - 1, &p,
			       synopsis);
		if (n == -2) {
			printf("\nTokens from a model's own tokenizer (and loss masks for "
			       "fine-tuning):\ntools/hf_tokenize.py --tokenizer MODEL_DIR --out DIR "
			       "FILE.jsonl writes the same shards with\nthe user's transformers or "
			       "tokenizers library (see its --help and README.md).\n");
			rc = 0;
			goto out;
		}
		if (n < 0)
			goto out;
		i += n - 1;
	}
	if (!p.out) {
		fprintf(stderr, PROG ": --out DIR is required; see --help\n");
		goto out;
	}
	if (npos == 0) {
		fprintf(stderr, PROG ": no input files; e.g. `" PROG
				" --out data /usr/share/common-licenses/*`\n");
		goto out;
	}
	if (!p.prefix[0] || strchr(p.prefix, '/') || p.prefix[0] == '.') {
		fprintf(stderr, PROG ": --prefix '%s' must be a plain name (no '/', not starting "
				"with '.')\n", p.prefix);
		goto out;
	}
	for (size_t i = 0; i < npos; i++)
		if ((rc = expand(&in, pos[i])) != 0)
			goto out;
	rc = 2;

	/* The plan: token counts per split and per shard. */
	uint64_t total = 0;
	for (size_t i = 0; i < in.n; i++)
		total += in.v[i].size + (p.separator >= 0);
	if (total == 0) {
		fprintf(stderr, PROG ": the inputs hold no text (all %zu files are empty)\n", in.n);
		goto out;
	}
	uint64_t nval = 0;
	if (p.val_fraction > 0) {
		double x = p.val_fraction * (double)total;
		nval = (uint64_t)x;
		if ((double)nval < x)
			nval++;
	}
	if (nval >= total) {
		fprintf(stderr,
			PROG ": --val-fraction %g of %llu tokens leaves no training token\n",
			p.val_fraction, (unsigned long long)total);
		goto out;
	}
	uint64_t ntrain = total - nval;
	size_t cap = (size_t)((ntrain + p.shard_tokens - 1) / p.shard_tokens +
			      (nval + p.shard_tokens - 1) / p.shard_tokens);
	shards = calloc(cap, sizeof(*shards));
	if (!shards) {
		fprintf(stderr, PROG ": out of memory planning %zu shards\n", cap);
		rc = 1;
		goto out;
	}

	/* The directory: create it if missing; refuse to mix data sets. */
	struct stat st;
	if (stat(p.out, &st) != 0) {
		if (errno != ENOENT || mkdir(p.out, 0755) != 0) {
			fprintf(stderr, PROG ": cannot create --out %s: %s\n", p.out,
				strerror(errno));
			goto out;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, PROG ": --out %s exists and is not a directory\n", p.out);
		goto out;
	}
	if (plan_split(shards, &nshards, ntrain, p.shard_tokens, p.out, p.prefix, "train") ||
	    plan_split(shards, &nshards, nval, p.shard_tokens, p.out, p.prefix, "val")) {
		fprintf(stderr, PROG ": --out path is too long\n");
		goto out;
	}
	DIR *dir = opendir(p.out);
	if (!dir) {
		fprintf(stderr, PROG ": cannot list %s: %s\n", p.out, strerror(errno));
		goto out;
	}
	for (struct dirent *e; (e = readdir(dir));) {
		if (is_our_shard(e->d_name, p.prefix) && !p.force) {
			fprintf(stderr, PROG ": %s/%s exists: pass --force to replace the %s_* "
					"shards, or choose another --out or --prefix\n", p.out,
				e->d_name, p.prefix);
			closedir(dir);
			goto out;
		}
	}
	closedir(dir);

	/* Write: stream every file through the writer. */
	w = calloc(1, sizeof(*w));
	char *chunk = malloc(1 << 20);
	if (!w || !chunk) {
		free(chunk);
		fprintf(stderr, PROG ": out of memory\n");
		rc = 1;
		goto out;
	}
	w->shards = shards;
	w->nshards = nshards;
	w->fd = -1;
	rc = 1;
	for (size_t i = 0; i < in.n; i++) {
		int fd = open(in.v[i].path, O_RDONLY | O_CLOEXEC);
		uint64_t got = 0;
		if (fd < 0) {
			fprintf(stderr, PROG ": cannot read %s: %s\n", in.v[i].path,
				strerror(errno));
			goto fail;
		}
		if (p.separator >= 0 && emit(w, (uint16_t)p.separator) != 0) {
			close(fd);
			goto fail;
		}
		for (;;) {
			ssize_t r = read(fd, chunk, 1 << 20);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				fprintf(stderr, PROG ": reading %s: %s\n", in.v[i].path,
					strerror(errno));
				close(fd);
				goto fail;
			}
			if (r == 0)
				break;
			if (got + (uint64_t)r > in.v[i].size) {
				got += (uint64_t)r;
				break;
			}
			got += (uint64_t)r;
			for (ssize_t k = 0; k < r; k++)
				if (emit(w, (unsigned char)chunk[k]) != 0) {
					close(fd);
					goto fail;
				}
		}
		close(fd);
		if (got != in.v[i].size) {
			fprintf(stderr, PROG ": %s changed while it was read (%llu bytes, then "
					"%llu): run again\n", in.v[i].path,
				(unsigned long long)in.v[i].size, (unsigned long long)got);
			goto fail;
		}
	}
	if (w->cur != nshards) {
		fprintf(stderr, PROG ": internal error: %zu of %zu shards written\n", w->cur,
			nshards);
		goto fail;
	}

	/* Publish: rename every shard, then make the names durable. */
	for (size_t i = 0; i < nshards; i++) {
		if (rename(shards[i].tmp, shards[i].final) != 0) {
			fprintf(stderr, PROG ": rename %s to %s: %s\n", shards[i].tmp,
				shards[i].final, strerror(errno));
			for (size_t j = 0; j < i; j++)
				unlink(shards[j].final);
			goto fail;
		}
		shards[i].created = false;
	}
	if (p.force && (dir = opendir(p.out))) {
		for (struct dirent *e; (e = readdir(dir));)
			if (is_our_shard(e->d_name, p.prefix) &&
			    !in_new_set(shards, nshards, p.out, e->d_name)) {
				char old[4096];
				snprintf(old, sizeof(old), "%s/%s", p.out, e->d_name);
				unlink(old);
			}
		closedir(dir);
	}
	int dfd = open(p.out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	size_t ntrain_sh = (size_t)((ntrain + p.shard_tokens - 1) / p.shard_tokens);
	printf("wrote %zu training shard%s (%llu tokens) and %zu validation shard%s (%llu tokens) "
	       "to %s\n", ntrain_sh, ntrain_sh == 1 ? "" : "s", (unsigned long long)ntrain,
	       nshards - ntrain_sh, nshards - ntrain_sh == 1 ? "" : "s",
	       (unsigned long long)nval, p.out);
	printf("vocabulary: 256 (bytes); separator: ");
	if (p.separator >= 0)
		printf("%d before each of %zu document%s\n", p.separator, in.n,
		       in.n == 1 ? "" : "s");
	else
		printf("none (%zu file%s concatenated)\n", in.n, in.n == 1 ? "" : "s");
	printf("train: %s/%s_train_*.bin\n", p.out, p.prefix);
	if (nval)
		printf("val:   %s/%s_val_*.bin\n", p.out, p.prefix);
	rc = 0;
	free(chunk);
	goto out;

fail:
	free(chunk);
	if (w->fd >= 0)
		close(w->fd);
	for (size_t i = 0; i < nshards; i++)
		if (shards[i].created)
			unlink(shards[i].tmp);
out:
	for (size_t i = 0; i < in.n; i++)
		free(in.v[i].path);
	free(in.v);
	free(shards);
	free(w);
	free(pos);
	return rc;
}
