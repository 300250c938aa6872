/* engine/zero's partition arithmetic for tiles on several ranks
 * (zn_zero_piece_of, zn_zero_pieces_own, zn_zero_share_of) and the folds
 * of a tied embedding's tiles (zn_zero_fold_parts, zn_zero_fold), checked
 * by their properties over many shapes, tile sizes and rank counts --
 * including the awkward ones: tiles smaller than the ranks' count, a last
 * tile whose piece on a rank is larger than a full tile's, empty pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "zero/zero.h"

/* Every rank's pieces of every tile cover the tensor exactly once; a
 * rank's pieces lie back to back in its part, tile after tile; the pieces
 * of a tile lie in rank order, so an all-gather of the tile's parts
 * (padded to `part`) is the tile's elements in order. */
static void check_pieces(uint64_t rows, uint64_t cols, uint64_t R, int W)
{
	const uint64_t n = rows * cols, tiles = R ? (rows + R - 1) / R : 1;
	unsigned char *seen = calloc(n, 1);
	assert_non_null(seen);
	for (int r = 0; r < W; r++) {
		uint64_t own = 0;
		for (uint64_t k = 0; k < tiles; k++) {
			struct zn_zero_piece p;
			zn_zero_piece_of(rows, cols, R, W, r, k, &p);
			assert_true(p.first + p.n <= n);
			assert_int_equal(p.own, own); /* back to back in the part */
			assert_true(p.len <= p.part && p.part * (uint64_t)W >= p.n);
			if (p.len) /* the gather's rank order is the tile's order */
				assert_int_equal(p.lo, p.part * (uint64_t)r);
			for (uint64_t e = p.first + p.lo; e < p.first + p.lo + p.len; e++) {
				assert_int_equal(seen[e], 0);
				seen[e] = 1;
			}
			own += p.len;
		}
		assert_int_equal(zn_zero_pieces_own(rows, cols, R, W, r), own);
	}
	for (uint64_t e = 0; e < n; e++)
		assert_int_equal(seen[e], 1);
	free(seen);
}

static void test_pieces_cover_the_tensor(void **state)
{
	(void)state;
	static const uint64_t shapes[][2] = { { 10, 1 }, { 4, 1 }, { 37, 3 }, { 1024, 32 },
					      { 1, 64 },  { 7, 5 }, { 33, 33 } };
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
		for (uint64_t R = 0; R <= shapes[s][0]; R += R < 4 ? 1 : 5)
			for (int W = 1; W <= 9; W++)
				check_pieces(shapes[s][0], shapes[s][1], R, W);
}

/* The cases the trainer's tile arithmetic (tr_tile_of: a full tile's
 * piece is the step, the last runs to the part's end) must hold. */
static void test_awkward_pieces(void **state)
{
	(void)state;
	struct zn_zero_piece p;
	/* 10 rows in tiles of 3 over 4 ranks: a full tile (3) gives 1 1 1 0,
	 * the last (1 row) 1 0 0 0. */
	zn_zero_piece_of(10, 1, 3, 4, 3, 0, &p);
	assert_int_equal(p.len, 0);
	zn_zero_piece_of(10, 1, 3, 4, 0, 3, &p);
	assert_int_equal(p.len, 1);
	assert_int_equal(p.own, 3);
	/* 13 rows in tiles of 9 over 4 ranks: the full tile gives 3 3 3 0,
	 * the last (4 rows) 1 1 1 1 -- on rank 3 larger than its full
	 * tile's piece, which is empty. */
	zn_zero_piece_of(13, 1, 9, 4, 3, 0, &p);
	assert_int_equal(p.len, 0);
	zn_zero_piece_of(13, 1, 9, 4, 3, 1, &p);
	assert_int_equal(p.len, 1);
	assert_int_equal(p.own, 0);
	assert_int_equal(zn_zero_pieces_own(13, 1, 9, 4, 3), 1);
	/* Untiled (R 0): the plain part. */
	zn_zero_piece_of(5, 7, 0, 3, 1, 0, &p);
	assert_int_equal(p.first, 0);
	assert_int_equal(p.n, 35);
	assert_int_equal(p.lo, 12);
	assert_int_equal(p.len, 12);
}

static struct zn_zero_rules rules(int rank, int world, uint64_t tile, bool nvme, enum zn_dtype hdt)
{
	struct zn_zero_rules z;
	memset(&z, 0, sizeof(z));
	z.rank = rank;
	z.world = world;
	z.stage = 3;
	z.parts = (uint64_t)world;
	z.tile_size = tile;
	z.offload_param = true;
	z.partition_params = true;
	z.nvme_homes = nvme;
	z.hdt = hdt;
	return z;
}

/* A share: an offloaded 2-D tensor above the tile size is tiled and owns
 * its pieces' sum; resident or small ones keep the contiguous part. */
static void test_share_of_a_tiled_tensor(void **state)
{
	(void)state;
	struct zn_param_desc d;
	memset(&d, 0, sizeof(d));
	d.ndim = 2;
	d.shape[0] = 1024;
	d.shape[1] = 32;
	d.numel = 1024 * 32;
	uint64_t total = 0;
	for (int r = 0; r < 3; r++) {
		struct zn_zero_rules z = rules(r, 3, 5000, true, ZN_DTYPE_BF16);
		struct zn_zero_share s = zn_zero_share_of(&z, &d);
		assert_true(s.tiled);
		assert_int_equal(s.tile_rows, 147); /* 7 tiles, the last of 142 rows */
		assert_int_equal(s.part, (147 * 32 + 2) / 3);
		assert_int_equal(s.nown, zn_zero_pieces_own(1024, 32, 147, 3, r));
		total += s.nown;
	}
	assert_int_equal(total, d.numel);
	/* Under the persistence threshold: resident, whole on the device. */
	struct zn_zero_rules z = rules(0, 3, 5000, true, ZN_DTYPE_BF16);
	z.threshold = d.numel + 1;
	struct zn_zero_share s = zn_zero_share_of(&z, &d);
	assert_false(s.tiled);
	assert_int_equal(s.nown, (d.numel + 2) / 3);
}

/* A fold of a tile (fp32) is cut in parts no larger than the largest NVMe
 * home, so the homes' buffers hold it; in host memory it is one piece. */
static void test_fold_parts_fit_the_home_buffers(void **state)
{
	(void)state;
	struct zn_zero_rules z = rules(0, 1, 1 << 20, true, ZN_DTYPE_BF16);
	struct zn_zero_homes h;
	memset(&h, 0, sizeof(h));
	h.nvme_largest = 1000; /* bf16 elements: 2000 bytes a buffer */
	const unsigned parts = zn_zero_fold_parts(&z, &h, 1000);
	assert_int_equal(parts, 2); /* 4000 bytes of fp32 */
	assert_int_equal(zn_zero_fold(&z, &h, 1000, parts, "w"), ZN_TIER_NVME);
	assert_int_equal(h.nvme_largest, 1000); /* no larger buffer */
	assert_int_equal(h.nvme_bytes, 2 * 4096);
	/* An odd tile: parts of ceil(n / parts) still fit. */
	assert_int_equal(zn_zero_fold_parts(&z, &h, 1001), 3);
	/* No NVMe home yet: parts of a bf16 home of the tile. */
	h.nvme_largest = 0;
	assert_int_equal(zn_zero_fold_parts(&z, &h, 1000), 2);
	/* Homes in host memory: one piece there. */
	z.nvme_homes = false;
	memset(&h, 0, sizeof(h));
	assert_int_equal(zn_zero_fold_parts(&z, &h, 1000), 1);
	assert_int_equal(zn_zero_fold(&z, &h, 1000, 1, "w"), ZN_TIER_HOST);
	assert_int_equal(h.host_fold_bytes, 4000);
	assert_int_equal(h.nvme_bytes, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pieces_cover_the_tensor),
		cmocka_unit_test(test_awkward_pieces),
		cmocka_unit_test(test_share_of_a_tiled_tensor),
		cmocka_unit_test(test_fold_parts_fit_the_home_buffers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
