/* Replays fuzz corpora through a target without libFuzzer, so that every
 * build (gcc's too, and the sanitizer build of tools/test.sh) runs the seed
 * inputs and every crash ever found as a regression test:
 *
 *   replay_TARGET DIR_OR_FILE...
 *
 * Each file is read whole and given to LLVMFuzzerTestOneInput once.  A crash
 * or a sanitizer report ends the program (the test fails, naming the file
 * on stdout just before); an empty or unreadable corpus is a failure too, so
 * that a corpus that went missing cannot pass.  Output is TAP: one line per
 * corpus.  With ZINC_FUZZ_VERBOSE set, each input's line is followed by the
 * library's last error message (what a seed exercises). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "zinc/common.h"

/* libFuzzer calls it when a target defines it; so does this driver. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		printf("# cannot open %s\n", path);
		return -1;
	}
	size_t cap = 4096, n = 0;
	unsigned char *buf = malloc(cap);
	for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
		n += r;
		if (n == cap) {
			unsigned char *bigger = realloc(buf, cap *= 2);
			if (!bigger) {
				free(buf);
				buf = NULL;
			}
			buf = bigger;
		}
	}
	int err = ferror(f);
	fclose(f);
	if (!buf || err) {
		free(buf);
		printf("# cannot read %s\n", path);
		return -1;
	}
	/* libFuzzer hands over a buffer of exactly the input's size: copy it
	 * into one, so that ASan sees a read past its end here too. */
	unsigned char *exact = malloc(n ? n : 1);
	if (!exact) {
		free(buf);
		return -1;
	}
	memcpy(exact, buf, n);
	free(buf);
	printf("# %s\n", path);
	fflush(stdout);
	LLVMFuzzerTestOneInput(exact, n);
	free(exact);
	if (getenv("ZINC_FUZZ_VERBOSE"))
		printf("#   last error: %s\n", zn_last_error());
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order: 0 and *count, or -1. */
static int run_dir(const char *dir, size_t *count)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	int rc = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **bigger = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));
			if (!bigger) {
				rc = -1;
				break;
			}
			names = bigger;
		}
		if (!(names[n] = strdup(e->d_name))) {
			rc = -1;
			break;
		}
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_name);
	for (size_t i = 0; i < n; i++) {
		char path[4200];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (!rc && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path))
				rc = -1;
			else
				(*count)++;
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	int failed = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	printf("1..%d\n", argc - 1);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		size_t count = 0;
		int rc;
		if (stat(argv[i], &st) != 0)
			rc = -1;
		else if (S_ISDIR(st.st_mode))
			rc = run_dir(argv[i], &count);
		else
			rc = run_file(argv[i]) ? -1 : (count = 1, 0);
		if (rc || count == 0) {
			printf("not ok %d - %s: %s\n", i, argv[i],
			       rc ? "unreadable" : "no inputs in it");
			failed = 1;
		} else {
			printf("ok %d - %s: %zu inputs\n", i, argv[i], count);
		}
	}
	return failed;
}
