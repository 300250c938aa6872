/* zinc — CPU optimizers over contiguous arrays: Adam/AdamW, Adagrad, Lion,
 * Lamb and SGD with momentum.
 *
 * DeepSpeed's DeepSpeedCPUAdam (and DeepSpeedCPUAdagrad, DeepSpeedCPULion)
 * as a C API.  One call updates n elements in place:
 *
 *   param       fp32 master weights                       read, written
 *   grad        fp32, fp16 or bf16 gradients              read
 *   exp_avg     fp32 first moment m (Adam, Lion)          read, written
 *   exp_avg_sq  fp32 second moment v (Adam); Adagrad's
 *               running sum of squared gradients          read, written
 *   param_copy  optional fp16/bf16 copy of the updated
 *               params (what goes back to the device)     written
 *
 * in one pass over memory, with the gradient multiplied by `grad_scale`
 * first (1/loss_scale × the clipping coefficient).  The pass is split into
 * tiles run on a thread pool; an optional callback hears about each tile as
 * soon as its outputs are final, so copying them out can start while the
 * rest is computed.
 *
 * Three implementations — AVX-512, AVX2 (+FMA, F16C) and scalar — give
 * bit-identical results (the scalar one is the specification; the others
 * do the same IEEE operations in the same order, and no FMA contraction).
 * The best one the CPU supports is used; ZINC_SIMD=scalar|avx2|avx512|auto
 * in the environment, or zn_adam_exec.simd, forces one.
 *
 * NaN and Inf in gradients propagate into the results as in PyTorch (Adam,
 * Adagrad: the affected params become NaN); zn_adam_grad_check is how a
 * caller finds them before stepping (the loss scaler skips such a step).
 */
#ifndef ZINC_ADAM_H
#define ZINC_ADAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_threadpool;

enum zn_adam_simd {
	ZN_ADAM_SIMD_AUTO = 0, /* $ZINC_SIMD if set, else the best the CPU has */
	ZN_ADAM_SIMD_SCALAR,
	ZN_ADAM_SIMD_AVX2,   /* AVX2 + FMA + F16C */
	ZN_ADAM_SIMD_AVX512, /* AVX512F + BW + VL */
	ZN_ADAM_SIMD_COUNT
};

/* Hyperparameters, with DeepSpeed's names and meaning.  Each optimizer
 * reads the fields it has:
 *   Adam:    lr, beta1, beta2, eps, weight_decay, bias_correction, adamw_mode
 *   Adagrad: lr, eps, weight_decay (added to the gradient, L2, as in torch)
 *   Lion:    lr, beta1, beta2, weight_decay (decoupled, always)
 *   Lamb:    lr, beta1, beta2, eps, weight_decay, bias_correction,
 *            max_coeff, min_coeff, eps_inside_sqrt
 *   SGD:     lr, momentum, dampening, nesterov, weight_decay (L2, as torch)
 * Doubles, like the Python floats torch and DeepSpeed users write: the
 * per-step constants (1 - beta, lr / (1 - beta1^step), ...) are computed
 * in double from them and rounded to fp32 once, so 1 - 0.999 is 0.001 as in
 * torch, not 1 - 0.999f. */
struct zn_adam_hparams {
	double lr;            /* learning rate, >= 0 */
	double beta1, beta2;  /* in [0, 1) */
	double eps;           /* > 0 */
	double weight_decay;  /* >= 0 */
	bool bias_correction; /* Adam: divide the moments by 1 - beta^step */
	bool adamw_mode;      /* Adam: true decoupled decay (AdamW), false L2 */
	double max_coeff, min_coeff; /* Lamb: the trust ratio's bounds */
	bool eps_inside_sqrt; /* Lamb: sqrt(v + eps) instead of sqrt(v) + eps */
	double momentum;      /* SGD: in [0, 1]; 0: no momentum buffer */
	double dampening;     /* SGD: in [0, 1] */
	bool nesterov;        /* SGD */
};

/* DeepSpeedCPUAdam's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8,
 * weight_decay 0, bias_correction on, adamw_mode on. */
ZN_API void zn_adam_defaults(struct zn_adam_hparams *hp);
/* DeepSpeedCPUAdagrad's: lr 1e-2, eps 1e-10, weight_decay 0. */
ZN_API void zn_adagrad_defaults(struct zn_adam_hparams *hp);
/* DeepSpeedCPULion's: lr 1e-3, betas (0.9, 0.999), weight_decay 0. */
ZN_API void zn_lion_defaults(struct zn_adam_hparams *hp);
/* DeepSpeed's FusedLamb's: lr 1e-3, betas (0.9, 0.999), eps 1e-8,
 * weight_decay 0, bias_correction on, max_coeff 10, min_coeff 0.01, eps
 * outside the root. */
ZN_API void zn_lamb_defaults(struct zn_adam_hparams *hp);
/* torch.optim.SGD's: lr 1e-3, momentum 0, dampening 0, weight_decay 0,
 * nesterov off. */
ZN_API void zn_sgd_defaults(struct zn_adam_hparams *hp);

/* The arrays of one call: each aligned to its element size (as C
 * requires), any further alignment (64 bytes is fastest), no overlap. */
struct zn_adam_tensors {
	size_t n;                       /* elements */
	float *param;                   /* n fp32 master weights */
	const void *grad;               /* n gradients of grad_dtype */
	enum zn_dtype grad_dtype;       /* ZN_DTYPE_F32, ZN_DTYPE_F16 or ZN_DTYPE_BF16 */
	float *exp_avg;                 /* n; Adam, Lion (NULL for Adagrad) */
	float *exp_avg_sq;              /* n; Adam, Adagrad (NULL for Lion) */
	void *param_copy;               /* NULL, or n elements of copy_dtype */
	enum zn_dtype copy_dtype;       /* ZN_DTYPE_F16 or ZN_DTYPE_BF16 */
};

/* Called once per tile, from the worker that computed it, as soon as
 * elements [offset, offset + count) of every output are final.  Calls for
 * different tiles may run at the same time on different threads. */
typedef void (*zn_adam_tile_fn)(void *user, size_t offset, size_t count);

/* How to run a call; NULL means all defaults (zero-initialize to start). */
struct zn_adam_exec {
	struct zn_threadpool *pool; /* NULL: the calling thread does all */
	size_t tile;                /* elements per tile, rounded up to 64; 0: automatic */
	zn_adam_tile_fn on_tile;    /* NULL: none */
	void *user;                 /* passed to on_tile */
	enum zn_adam_simd simd;     /* ZN_ADAM_SIMD_AUTO: see zn_adam_simd_select */
};

/* One optimizer step over t->n elements.  `step` counts from 1 (the first
 * step is 1, as in torch and DeepSpeed); `grad_scale` multiplies every
 * gradient first (1/loss_scale × clip coefficient; 1 for none).
 * Returns 0, or -EINVAL with a message naming the argument: a NULL array
 * the optimizer needs, beta outside [0, 1), eps <= 0, lr or weight_decay
 * negative or not finite, step 0, grad_scale not finite, a bad dtype,
 * overlapping arrays; -EINVAL / -ENOTSUP for a ZINC_SIMD or exec->simd
 * that is unknown / not available.  n == 0 is a no-op (arrays unchecked).
 * Nothing is written unless the call returns 0. */
ZN_API int zn_adam_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
			const struct zn_adam_tensors *t, const struct zn_adam_exec *ex);
ZN_API int zn_adagrad_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
			   const struct zn_adam_tensors *t, const struct zn_adam_exec *ex);
ZN_API int zn_lion_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
			const struct zn_adam_tensors *t, const struct zn_adam_exec *ex);

/* SGD with momentum, torch.optim.SGD's rule (exp_avg is the momentum
 * buffer, exp_avg_sq unused and may be NULL; with momentum 0 exp_avg may be
 * NULL too):
 *   d = g * grad_scale + weight_decay * p
 *   buf = d at step 1, else momentum * buf + (1 - dampening) * d
 *   d = d + momentum * buf (nesterov), else buf
 *   p = p - lr * d
 * Returns as zn_adam_step; also -EINVAL for momentum or dampening outside
 * [0, 1], or nesterov without momentum > 0 and dampening 0 (torch raises). */
ZN_API int zn_sgd_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
		       const struct zn_adam_tensors *t, const struct zn_adam_exec *ex);

/* Lamb (You et al., "Large Batch Optimization for Deep Learning: Training
 * BERT in 76 minutes", ICLR 2020) as DeepSpeed's FusedLamb computes it
 * (csrc/lamb/fused_lamb_cuda_kernel.cu), per tensor:
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   u = m / (sqrt(v) + eps) + weight_decay * p     (sqrt(v + eps) with
 *                                                   eps_inside_sqrt)
 *   ratio = ||p|| / ||u|| clamped to [min_coeff, max_coeff]; 1 when
 *           either norm is 0
 *   p = p - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * ratio * u
 * (the bias corrections in the step size, m and v in u uncorrected: that
 * is FusedLamb's arithmetic, and what its trust ratio measures).
 *
 * The ratio needs the whole tensor's norms before any element of it
 * moves, so Lamb is two passes a caller holding a tensor in pieces (ZeRO
 * parts, sub-groups, tiles) runs piece by piece:
 *   zn_lamb_moments  over every piece: updates m and v from the gradient
 *                    and adds the piece's sums of squares of p and u
 *                    into *sums (param and param_copy are not written);
 *   zn_lamb_trust_ratio of the summed sums (over ranks too);
 *   zn_lamb_apply    over every piece: p (and param_copy) from p, m, v
 *                    and the ratio (grad is not read).
 * The sums are in double, each tile's over 16 lanes (element i of the
 * tile in lane i mod 16) added lane by lane in order, the tiles in order:
 * the same bits from every SIMD path and thread count for a given tile
 * size; zn_lamb_moments's automatic tile (exec->tile 0) is a fixed 64 Ki
 * elements, whatever the pool.  zn_lamb_step does the three over one
 * whole tensor.
 * Return as zn_adam_step (zn_lamb_moments: step and grad_scale as there;
 * zn_lamb_apply: ratio must be finite and >= 0). */
struct zn_lamb_sums {
	double param_sumsq;  /* sum of p^2 */
	double update_sumsq; /* sum of u^2 */
};
ZN_API int zn_lamb_moments(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
			   const struct zn_adam_tensors *t, const struct zn_adam_exec *ex,
			   struct zn_lamb_sums *sums);
ZN_API double zn_lamb_trust_ratio(const struct zn_adam_hparams *hp,
				  const struct zn_lamb_sums *sums);
ZN_API int zn_lamb_apply(const struct zn_adam_hparams *hp, uint64_t step, double ratio,
			 const struct zn_adam_tensors *t, const struct zn_adam_exec *ex);
/* One whole tensor; *ratio_out (if not NULL) gets the trust ratio. */
ZN_API int zn_lamb_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
			const struct zn_adam_tensors *t, const struct zn_adam_exec *ex,
			double *ratio_out);

/* The fused gradient check the loss scaler and clipping need, in one
 * vectorized pass: sum of squares (in double, so it cannot overflow for
 * finite inputs and loses little to rounding) and whether every element is
 * finite.  The sum is deterministic for a given exec->tile whatever the
 * thread count.  exec->on_tile is not called.  Returns 0 or -EINVAL. */
struct zn_adam_grad_stats {
	double sumsq;  /* sum of grad[i]^2; Inf or NaN when !finite */
	bool finite;   /* no Inf and no NaN in grad */
};
ZN_API int zn_adam_grad_check(const void *grad, enum zn_dtype dtype, size_t n,
			      const struct zn_adam_exec *ex, struct zn_adam_grad_stats *out);

/* Resolve a SIMD choice: ZN_ADAM_SIMD_AUTO becomes $ZINC_SIMD when that is
 * set (and not "auto"), else the best path the CPU and the build support.
 * Returns 0, -EINVAL for an unknown ZINC_SIMD value, -ENOTSUP for a path
 * this CPU or build lacks (the message says which feature is missing). */
ZN_API int zn_adam_simd_select(enum zn_adam_simd want, enum zn_adam_simd *got);
/* "auto", "scalar", "avx2", "avx512"; "?" for an unknown value. */
ZN_API const char *zn_adam_simd_name(enum zn_adam_simd simd);
/* Parse one of those names; returns 0 or -EINVAL. */
ZN_API int zn_adam_simd_parse(const char *name, enum zn_adam_simd *out);

/* Elements per tile of a call over n elements with `ex`: ex->tile rounded
 * up to a multiple of 64, or (ex->tile 0, or ex NULL) the automatic
 * choice: about 4 tiles per worker, from 64 Ki to 1 Mi elements. */
ZN_API size_t zn_adam_tile_size(size_t n, const struct zn_adam_exec *ex);

/* Memory-bandwidth yardsticks for the optimizers (what `zinc adam-bench`
 * measures zn_adam_step against), run over the same tiles, pool and SIMD
 * path as a step, on fp32 arrays (t->grad_dtype, param_copy and
 * ex->on_tile are ignored); they overwrite the arrays they write:
 *   stream7  Adam's traffic with trivial arithmetic: reads param, grad,
 *            exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq
 *            in place (28 bytes per element), keeping values bounded
 *   triad    STREAM's a = b + s * c: exp_avg = param + 3 * exp_avg_sq
 *            (12 bytes per element; grad unused)
 * Return 0, or -EINVAL for a NULL array, or the SIMD choice's error (as
 * zn_adam_step).  n == 0 is a no-op. */
ZN_API int zn_adam_stream7(const struct zn_adam_tensors *t, const struct zn_adam_exec *ex);
ZN_API int zn_adam_triad(const struct zn_adam_tensors *t, const struct zn_adam_exec *ex);
#ifdef __cplusplus
}
#endif
#endif
