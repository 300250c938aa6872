/* The reductions in rank order: the specification of every backend's.
 * The host backends' collectives call it (collectives.c); the nccl
 * backend's kernel (nccl_kernels.cu) takes the same steps on the device,
 * to the bit.
 *
 * rows: `size` rows of m elements each, row p from rank p; out: m elements.
 * out[i] = ((row0[i] op row1[i]) op row2[i]) ...  fp16/bf16 accumulate in
 * fp32 and round once; integers wrap (unsigned arithmetic, no UB). */
#include "comm/core.h"
#include "zn_half.h"

#include <math.h>

static float fmax_nan(float acc, float x)
{
	if (isnan(acc) || isnan(x))
		return isnan(acc) ? acc : x;
	return x > acc ? x : acc;
}

static float load_half(enum zn_dtype dt, const void *p, size_t i)
{
	const uint16_t h = ((const uint16_t *)p)[i];
	return dt == ZN_DTYPE_BF16 ? zn_bf16_to_f32(h) : zn_f16_to_f32(h);
}

void zn_comm_reduce_rows(enum zn_dtype dt, enum zn_comm_redop op, void *out,
			 const unsigned char *rows, int size, size_t m)
{
	/* The specification of every backend's reduction (zn_comm_mem_ops.reduce). */
	const size_t row = m * zn_dtype_size(dt);

	for (size_t i = 0; i < m; i++) {
		switch (dt) {
		case ZN_DTYPE_F32: {
			float acc = ((const float *)rows)[i];
			for (int p = 1; p < size; p++) {
				float x = ((const float *)(rows + p * row))[i];
				acc = op == ZN_COMM_SUM ? acc + x : fmax_nan(acc, x);
			}
			((float *)out)[i] = acc;
			break;
		}
		case ZN_DTYPE_BF16:
		case ZN_DTYPE_F16: {
			float acc = load_half(dt, rows, i);
			for (int p = 1; p < size; p++) {
				float x = load_half(dt, rows + p * row, i);
				acc = op == ZN_COMM_SUM ? acc + x : fmax_nan(acc, x);
			}
			((uint16_t *)out)[i] = dt == ZN_DTYPE_BF16 ? zn_f32_to_bf16(acc)
								  : zn_f32_to_f16(acc);
			break;
		}
		case ZN_DTYPE_I32: {
			int32_t acc = ((const int32_t *)rows)[i];
			for (int p = 1; p < size; p++) {
				int32_t x = ((const int32_t *)(rows + p * row))[i];
				acc = op == ZN_COMM_SUM ? (int32_t)((uint32_t)acc + (uint32_t)x)
							: (x > acc ? x : acc);
			}
			((int32_t *)out)[i] = acc;
			break;
		}
		case ZN_DTYPE_U8: {
			uint8_t acc = rows[i];
			for (int p = 1; p < size; p++) {
				uint8_t x = rows[p * row + i];
				acc = op == ZN_COMM_SUM ? (uint8_t)(acc + x) : (x > acc ? x : acc);
			}
			((uint8_t *)out)[i] = acc;
			break;
		}
		default:
			break;
		}
	}
}
