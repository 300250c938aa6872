#include "testutil.h"

#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/common.h"

static char scratch[3072];

static int mkdir_p(const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			mkdir(tmp, 0755);
			*p = '/';
		}
	}
	return mkdir(tmp, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

const char *tu_scratch_dir(void)
{
	if (scratch[0])
		return scratch;
	const char *base = getenv("ZINC_TEST_DIR");
	char parent[3000];
	snprintf(parent, sizeof(parent), "%s", base && *base ? base : "zinc-test-scratch");
	if (mkdir_p(parent) != 0) {
		fprintf(stderr, "# cannot create %s: %s\n", parent, strerror(errno));
		abort();
	}
	snprintf(scratch, sizeof(scratch), "%s/t.XXXXXX", parent);
	if (!mkdtemp(scratch)) {
		fprintf(stderr, "# mkdtemp in %s: %s\n", parent, strerror(errno));
		abort();
	}
	return scratch;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tu_scratch_cleanup(void)
{
	if (scratch[0])
		nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	scratch[0] = 0;
}

const char *tu_path(const char *name)
{
	static char bufs[8][4096];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", tu_scratch_dir(), name);
	return b;
}

int tu_count_entries(const char *dir, const char *prefix, const char *needle,
		     const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name), sl = suffix ? strlen(suffix) : 0;
		if (prefix && strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		if (needle && !strstr(e->d_name, needle))
			continue;
		if (suffix && (len < sl || strcmp(e->d_name + len - sl, suffix) != 0))
			continue;
		n++;
	}
	closedir(d);
	return n;
}

uint64_t tu_rand(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

void tu_fill_random(void *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	uint8_t *p = buf;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = tu_rand(&s);
		memcpy(p + i, &v, 8);
	}
	for (; i < len; i++)
		p[i] = (uint8_t)tu_rand(&s);
}

#define MAX_LOG 256
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	int level;
	char msg[512];
} logs[MAX_LOG];
static int nlogs;

static void capture(enum zn_log_level level, const char *msg, void *user)
{
	(void)user;
	pthread_mutex_lock(&log_lock);
	if (nlogs < MAX_LOG) {
		logs[nlogs].level = (int)level;
		snprintf(logs[nlogs].msg, sizeof(logs[0].msg), "%s", msg);
		nlogs++;
	}
	pthread_mutex_unlock(&log_lock);
}

void tu_log_capture_start(void)
{
	pthread_mutex_lock(&log_lock);
	nlogs = 0;
	pthread_mutex_unlock(&log_lock);
	zn_log_set_sink(capture, NULL, ZN_LOG_DEBUG);
}

int tu_log_count(int level, const char *needle)
{
	int n = 0;
	pthread_mutex_lock(&log_lock);
	for (int i = 0; i < nlogs; i++)
		if (logs[i].level == level && (!needle || strstr(logs[i].msg, needle)))
			n++;
	pthread_mutex_unlock(&log_lock);
	return n;
}

void tu_log_capture_stop(void)
{
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);
}

/* ---- TAP that meson reads: tu_run_group ----------------------------------- */

struct tap_filter {
	int in, out; /* the pipe's read end; the real standard output */
};

static void tap_write(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* One line (with its newline, if any) as TAP. */
static void tap_line(int out, const char *line, size_t len)
{
	unsigned num;
	int name_at = 0;
	char buf[8192];
	if (sscanf(line, "not ok %u # SKIP %n", &num, &name_at) == 1 && name_at > 0) {
		size_t nlen = len - (size_t)name_at;
		while (nlen && (line[name_at + nlen - 1] == '\n' || line[name_at + nlen - 1] == '\r'))
			nlen--;
		int k = snprintf(buf, sizeof(buf), "ok %u - %.*s # SKIP\n", num, (int)nlen,
				 line + name_at);
		tap_write(out, buf, (size_t)k < sizeof(buf) ? (size_t)k : sizeof(buf) - 1);
		return;
	}
	if (strncmp(line, "ok", 2) == 0 || strncmp(line, "not ok", 6) == 0 ||
	    strncmp(line, "1..", 3) == 0 || line[0] == '#' || strncmp(line, "Bail out!", 9) == 0) {
		tap_write(out, line, len);
		return;
	}
	tap_write(out, "# ", 2);
	tap_write(out, line, len);
}

static void *tap_filter_main(void *arg)
{
	struct tap_filter *f = arg;
	FILE *in = fdopen(f->in, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	if (!in)
		return NULL;
	while ((len = getline(&line, &cap, in)) > 0)
		tap_line(f->out, line, (size_t)len);
	free(line);
	fclose(in);
	return NULL;
}

int tu_run_group(const char *name, const struct CMUnitTest *tests, size_t n,
		 CMFixtureFunction setup, CMFixtureFunction teardown)
{
	const char *o = getenv("CMOCKA_MESSAGE_OUTPUT");
	struct tap_filter f;
	int p[2];
	pthread_t th;
	if (!o || strcasecmp(o, "TAP") != 0)
		return _cmocka_run_group_tests(name, tests, n, setup, teardown);
	fflush(stdout);
	if (pipe(p) != 0)
		return _cmocka_run_group_tests(name, tests, n, setup, teardown);
	f.in = p[0];
	f.out = dup(STDOUT_FILENO);
	if (f.out < 0 || dup2(p[1], STDOUT_FILENO) < 0 ||
	    pthread_create(&th, NULL, tap_filter_main, &f) != 0) {
		fprintf(stderr, "# cannot filter the TAP output: %s\n", strerror(errno));
		abort();
	}
	close(p[1]);
	int rc = _cmocka_run_group_tests(name, tests, n, setup, teardown);
	fflush(stdout);
	dup2(f.out, STDOUT_FILENO); /* closes the pipe's last write end: EOF */
	pthread_join(th, NULL);
	close(f.out);
	return rc;
}
