/* The oracle test's helper (tests/test_cpu_adam_oracle.py): runs zinc's
 * optimizers on inputs the script wrote and writes the results back.
 *
 *   adam_oracle_helper IN OUT [SIMD]
 *
 * IN (little-endian): "ZNORIN03", u32 optimizer (0 adam, 1 adagrad,
 * 2 lion, 3 lamb, 4 sgd), n, steps, grad dtype (0 fp32, 1 fp16, 2 bf16),
 * copy dtype (1 fp16, 2 bf16, 0xffffffff none), flags (1 bias_correction,
 * 2 adamw_mode, 4 Lamb's eps_inside_sqrt, 8 SGD's nesterov); f64 lr, beta1,
 * beta2, eps, weight_decay, then two f64 more: Lamb's max_coeff and
 * min_coeff, or SGD's momentum and dampening; f32 grad_scale;
 * f32 param[n], exp_avg[n], exp_avg_sq[n]; then steps x n f32 gradients
 * (already representable in the grad dtype; converted here exactly).
 * OUT: "ZNOROUT1", u32 n, f32 param[n], exp_avg[n], exp_avg_sq[n],
 * u16 copy[n] (zeros without a copy).
 * Exit status: 0 done, 1 failure, 3 the SIMD path is not available here.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/adam.h"
#include "zinc/dtype.h"

static int read_all(FILE *f, void *p, size_t len)
{
	return fread(p, 1, len, f) == len ? 0 : -1;
}

int main(int argc, char **argv)
{
	char magic[8];
	uint32_t hdr[6];
	double hp_d[7];
	float scale;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: adam_oracle_helper IN OUT [SIMD]\n");
		return 1;
	}
	enum zn_adam_simd simd = ZN_ADAM_SIMD_AUTO;
	if (argc == 4) {
		if (zn_adam_simd_parse(argv[3], &simd) != 0) {
			fprintf(stderr, "adam_oracle_helper: %s\n", zn_last_error());
			return 1;
		}
		enum zn_adam_simd got;
		if (zn_adam_simd_select(simd, &got) != 0) {
			fprintf(stderr, "adam_oracle_helper: %s\n", zn_last_error());
			return 3;
		}
	}
	FILE *in = fopen(argv[1], "rb");
	if (!in || read_all(in, magic, 8) || memcmp(magic, "ZNORIN03", 8) ||
	    read_all(in, hdr, sizeof(hdr)) || read_all(in, hp_d, sizeof(hp_d)) ||
	    read_all(in, &scale, sizeof(scale))) {
		fprintf(stderr, "adam_oracle_helper: %s is not a ZNORIN03 input file\n", argv[1]);
		return 1;
	}
	uint32_t opt = hdr[0], n = hdr[1], steps = hdr[2], gt = hdr[3], ct = hdr[4], flags = hdr[5];
	if (opt > 4 || gt > 2 || (ct != 0xffffffffu && (ct < 1 || ct > 2))) {
		fprintf(stderr, "adam_oracle_helper: bad header\n");
		return 1;
	}
	float *p = malloc(n * 4ul), *m = malloc(n * 4ul), *v = malloc(n * 4ul);
	float *g32 = malloc(n * 4ul);
	void *g = malloc(n * 4ul);
	uint16_t *copy = calloc(n, 2);
	if (!p || !m || !v || !g32 || !g || !copy || read_all(in, p, n * 4ul) ||
	    read_all(in, m, n * 4ul) || read_all(in, v, n * 4ul)) {
		fprintf(stderr, "adam_oracle_helper: short input\n");
		return 1;
	}
	struct zn_adam_hparams hp = {
		.lr = hp_d[0], .beta1 = hp_d[1], .beta2 = hp_d[2], .eps = hp_d[3],
		.weight_decay = hp_d[4], .bias_correction = flags & 1, .adamw_mode = flags & 2,
		.eps_inside_sqrt = flags & 4, .nesterov = flags & 8,
	};
	if (opt == 3) {
		hp.max_coeff = hp_d[5];
		hp.min_coeff = hp_d[6];
	} else if (opt == 4) {
		hp.momentum = hp_d[5];
		hp.dampening = hp_d[6];
	}
	struct zn_adam_tensors t = {
		.n = n, .param = p, .grad = g, .grad_dtype = (enum zn_dtype)gt,
		.exp_avg = m, .exp_avg_sq = v,
		.param_copy = ct != 0xffffffffu ? copy : NULL,
		.copy_dtype = ct != 0xffffffffu ? (enum zn_dtype)ct : ZN_DTYPE_F16,
	};
	struct zn_adam_exec ex = { .simd = simd };
	for (uint32_t s = 1; s <= steps; s++) {
		if (read_all(in, g32, n * 4ul)) {
			fprintf(stderr, "adam_oracle_helper: short input (gradients of step %u)\n", s);
			return 1;
		}
		zn_dtype_from_f32(g, (enum zn_dtype)gt, g32, n);
		int rc = opt == 0   ? zn_adam_step(&hp, s, scale, &t, &ex)
			 : opt == 1 ? zn_adagrad_step(&hp, s, scale, &t, &ex)
			 : opt == 2 ? zn_lion_step(&hp, s, scale, &t, &ex)
			 : opt == 3 ? zn_lamb_step(&hp, s, scale, &t, &ex, NULL)
				    : zn_sgd_step(&hp, s, scale, &t, &ex);
		if (rc) {
			fprintf(stderr, "adam_oracle_helper: step %u: %s\n", s, zn_last_error());
			return 1;
		}
	}
	fclose(in);
	FILE *out = fopen(argv[2], "wb");
	uint32_t n32 = n;
	if (!out || fwrite("ZNOROUT1", 1, 8, out) != 8 || fwrite(&n32, 4, 1, out) != 1 ||
	    fwrite(p, 4, n, out) != n || fwrite(m, 4, n, out) != n || fwrite(v, 4, n, out) != n ||
	    fwrite(copy, 2, n, out) != n || fclose(out) != 0) {
		fprintf(stderr, "adam_oracle_helper: cannot write %s\n", argv[2]);
		return 1;
	}
	free(p);
	free(m);
	free(v);
	free(g32);
	free(g);
	free(copy);
	return 0;
}
