/* The installed API alone: this test includes only <zinc/...> headers and
 * links the shared libzinc, the way an embedding program does (the README's
 * example, checked). */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <zinc/aio.h>
#include <zinc/configfile.h>
#include <zinc/hostmem.h>

static void test_readme_example(void **state)
{
	(void)state;
	char path[4096];
	const char *dir = getenv("ZINC_TEST_DIR");
	if (dir)
		mkdir(dir, 0755); /* may exist already; the open below reports real trouble */
	snprintf(path, sizeof(path), "%s/public-api.%d.bin", dir ? dir : ".", (int)getpid());

	struct zn_aio_config cfg;
	zn_aio_config_default(&cfg);
	struct zn_aio *aio = zn_aio_create(&cfg);
	assert_non_null(aio);
	struct zn_aio_file *f;
	assert_int_equal(zn_aio_open(aio, path, ZN_AIO_RDWR | ZN_AIO_CREATE, 16 << 20, &f), 0);
	unsigned char *buf = zn_hostmem_alloc(16 << 20, ZN_HOSTMEM_HUGE);
	unsigned char *back = zn_hostmem_alloc(16 << 20, 0);
	assert_non_null(buf);
	assert_int_equal(zn_aio_register_buffer(aio, buf, 16 << 20), 0);
	for (size_t i = 0; i < (16u << 20); i++)
		buf[i] = (unsigned char)(i * 2654435761u >> 13);
	struct zn_aio_req *req;
	assert_int_equal(zn_aio_write(f, buf, 16 << 20, 0, &req), 0);
	assert_int_equal(zn_aio_wait(req), 16 << 20);
	assert_int_equal(zn_aio_pread(f, back, 16 << 20, 0), 16 << 20);
	assert_memory_equal(buf, back, 16 << 20);
	assert_int_equal(zn_aio_unregister_buffer(aio, buf), 0);
	assert_int_equal(zn_aio_close(f), 0);
	zn_aio_destroy(aio);
	zn_hostmem_free(buf, 16 << 20);
	zn_hostmem_free(back, 16 << 20);
	unlink(path);

	/* Errors come back as -errno with a message, never a print. */
	assert_int_equal(zn_aio_open(aio = zn_aio_create(&cfg), "/nonexistent/x", ZN_AIO_RDWR, 0, &f),
			 -ENOENT);
	assert_non_null(strstr(zn_last_error(), "/nonexistent/x"));
	zn_aio_destroy(aio);

	struct zn_config c;
	const char *yaml = "aio:\n  queue_depth: 32\n";
	assert_int_equal(zn_config_load_string(yaml, strlen(yaml), NULL, &c), 0);
	assert_int_equal(c.aio.queue_depth, 32);
	assert_non_null(zn_version());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_readme_example),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
