/* The kernel registry and the argument checks both backends share
 * (kernels_internal.h). */
#include "zn_common.h"

#include <limits.h>
#include <string.h>

#include "zn_build.h"
#include "kernels_internal.h"

void zn_kernels_params_default(struct zn_kernels_params *p)
{
	*p = (struct zn_kernels_params){
		.dtype = ZN_DTYPE_F32,
		.pool = NULL,
		.simd = ZN_ADAM_SIMD_AUTO,
		.cuda_stream = NULL,
		.cuda_device = -1,
		.workspace_bytes = 0,
		.tf32 = false,
	};
}

uint64_t zn_kernels_cuda_workspace_bytes(const struct zn_kernels_params *p)
{
	return (p->workspace_bytes ? p->workspace_bytes : ZN_KCUDA_DEFAULT_WORKSPACE) +
	       ZN_KCUDA_LT_WORKSPACE;
}

static const struct zn_kernels *const backends[] = {
	&zn_kernels_cpu,
#if ZN_HAVE_CUDA
	&zn_kernels_cuda,
#endif
};

const struct zn_kernels *zn_kernels_get(const char *name)
{
	if (!name) {
		zn_set_error("zn_kernels_get: no backend name given: use \"cpu\" or \"cuda\"");
		return NULL;
	}
	for (size_t i = 0; i < ZN_ARRAY_SIZE(backends); i++)
		if (strcmp(backends[i]->name, name) == 0)
			return backends[i];
	if (strcmp(name, "cuda") == 0)
		zn_set_error("kernels \"cuda\": this zinc was built without the CUDA toolkit "
			     "(reconfigure with -Dcuda=enabled where nvcc is installed)");
	else
		zn_set_error("kernels \"%s\" do not exist: use \"cpu\"%s", name,
			     ZN_HAVE_CUDA ? " or \"cuda\"" : "");
	return NULL;
}

/* ---- argument checks -------------------------------------------------------- */

int zn_kcheck_ptr(const char *op, const char *what, const void *p)
{
	if (zn_unlikely(!p))
		return zn_error(-EINVAL, "%s: %s is NULL", op, what);
	return 0;
}

static int dim(const char *op, const char *what, int v)
{
	if (zn_unlikely(v <= 0))
		return zn_error(-EINVAL, "%s: %s = %d; it must be > 0", op, what, v);
	return 0;
}

/* a * b must fit an int: it is a row count or a leading dimension handed to
 * BLAS, whose interface takes ints. */
static int prod(const char *op, const char *what, int a, int b)
{
	if (zn_unlikely((long long)a * b > INT_MAX))
		return zn_error(-EINVAL, "%s: %s = %lld is larger than %d", op, what,
				(long long)a * b, INT_MAX);
	return 0;
}

int zn_kcheck_ctx(const char *op, const struct zn_kctx *ctx, const struct zn_kernels *ops)
{
	if (zn_unlikely(!ctx))
		return zn_error(-EINVAL, "%s: the context is NULL", op);
	if (zn_unlikely(ctx->ops != ops))
		return zn_error(-EINVAL, "%s: the context belongs to the \"%s\" kernels, not to "
				"\"%s\"", op, ctx->ops ? ctx->ops->name : "?", ops->name);
	return 0;
}

int zn_kcheck_params(const struct zn_kernels *ops, const struct zn_kernels_params *p)
{
	if (!p)
		return zn_error(-EINVAL, "%s kernels: no parameters given (NULL): start from "
				"zn_kernels_params_default()", ops->name);
	if ((unsigned)p->dtype >= ZN_DTYPE_COUNT || !(ops->dtypes & (1u << p->dtype))) {
		char list[64] = "";
		for (unsigned d = 0; d < ZN_DTYPE_COUNT; d++)
			if (ops->dtypes & (1u << d)) {
				strcat(list, list[0] ? ", " : "");
				strcat(list, zn_dtype_name((enum zn_dtype)d));
			}
		return zn_error(-EINVAL, "%s kernels: storage dtype %s is not offered; use %s%s",
				ops->name, zn_dtype_name(p->dtype), list,
				p->dtype == ZN_DTYPE_BF16 || p->dtype == ZN_DTYPE_F16 ?
				" (keep a 16-bit copy and convert with the cast op)" : "");
	}
	return 0;
}

int zn_kcheck_encoder(const char *op, const void *out, const int32_t *tokens, const void *a,
		      const void *b, int B, int T, int C, int V, bool backward)
{
	if (!backward) {
		ZN_TRY(zn_kcheck_ptr(op, "out", out));
		ZN_TRY(zn_kcheck_ptr(op, "wte", a));
		(void)b; /* wpe may be NULL: no position embedding */
	} else {
		ZN_TRY(zn_kcheck_ptr(op, "dout", out));
	}
	ZN_TRY(zn_kcheck_ptr(op, "tokens", tokens));
	ZN_TRY(dim(op, "B", B));
	ZN_TRY(dim(op, "T", T));
	ZN_TRY(dim(op, "C", C));
	ZN_TRY(dim(op, "V", V));
	ZN_TRY(prod(op, "B*T", B, T));
	return 0;
}

int zn_kcheck_layernorm_fwd(const void *out, const void *inp, const void *weight,
			    const void *bias, int BT, int C)
{
	const char *op = "layernorm_forward";
	ZN_TRY(zn_kcheck_ptr(op, "out", out));
	ZN_TRY(zn_kcheck_ptr(op, "inp", inp));
	ZN_TRY(zn_kcheck_ptr(op, "weight", weight));
	ZN_TRY(zn_kcheck_ptr(op, "bias", bias));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "C", C));
	return 0;
}

int zn_kcheck_layernorm_bwd(const void *dout, const void *inp, const void *weight,
			    const float *mean, const float *rstd, int BT, int C)
{
	const char *op = "layernorm_backward";
	ZN_TRY(zn_kcheck_ptr(op, "dout", dout));
	ZN_TRY(zn_kcheck_ptr(op, "inp", inp));
	ZN_TRY(zn_kcheck_ptr(op, "weight", weight));
	ZN_TRY(zn_kcheck_ptr(op, "mean (saved by layernorm_forward)", mean));
	ZN_TRY(zn_kcheck_ptr(op, "rstd (saved by layernorm_forward)", rstd));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "C", C));
	return 0;
}

int zn_kcheck_ld(const char *op, int ldo, int OC)
{
	if (zn_unlikely(ldo < OC))
		return zn_error(-EINVAL, "%s: ldo = %d is below OC = %d; rows of out must hold OC "
					 "elements",
				op, ldo, OC);
	return 0;
}

int zn_kcheck_rows(const char *op, const void *x, const int32_t *tokens, const void *w,
		   int row0, int rows, int BT, int C)
{
	ZN_TRY(zn_kcheck_ptr(op, "out/dout", x));
	ZN_TRY(zn_kcheck_ptr(op, "tokens", tokens));
	ZN_TRY(zn_kcheck_ptr(op, "w", w));
	ZN_TRY(dim(op, "rows", rows));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "C", C));
	if (zn_unlikely(row0 < 0))
		return zn_error(-EINVAL, "%s: row0 = %d; it must be >= 0", op, row0);
	return 0;
}

int zn_kcheck_matmul_fwd(const void *out, const void *inp, const void *weight, int BT, int C,
			 int OC)
{
	const char *op = "matmul_forward";
	ZN_TRY(zn_kcheck_ptr(op, "out", out));
	ZN_TRY(zn_kcheck_ptr(op, "inp", inp));
	ZN_TRY(zn_kcheck_ptr(op, "weight", weight));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "C", C));
	ZN_TRY(dim(op, "OC", OC));
	return 0;
}

int zn_kcheck_matmul_bwd(const void *dinp, const void *dweight, const void *dout,
			 const void *inp, const void *weight, int BT, int C, int OC)
{
	const char *op = "matmul_backward";
	ZN_TRY(zn_kcheck_ptr(op, "dout", dout));
	if (dinp)
		ZN_TRY(zn_kcheck_ptr(op, "weight (needed for dinp)", weight));
	if (dweight)
		ZN_TRY(zn_kcheck_ptr(op, "inp (needed for dweight)", inp));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "C", C));
	ZN_TRY(dim(op, "OC", OC));
	return 0;
}

static int attention_dims(const char *op, int B, int T, int NH, int NKV, int HS)
{
	ZN_TRY(dim(op, "B", B));
	ZN_TRY(dim(op, "T", T));
	ZN_TRY(dim(op, "NH", NH));
	ZN_TRY(dim(op, "NKV", NKV));
	ZN_TRY(dim(op, "HS", HS));
	if (NH % NKV != 0)
		return zn_error(-EINVAL, "%s: NH = %d is not a multiple of NKV = %d: each key/value "
				"head must serve a whole number NH / NKV of query heads", op, NH, NKV);
	ZN_TRY(prod(op, "B*T", B, T));
	ZN_TRY(prod(op, "(NH+2*NKV)*HS", NH + 2 * NKV, HS)); /* a qkv row, in elements */
	ZN_TRY(prod(op, "T*T", T, T));
	return 0;
}

int zn_kcheck_attention_fwd(const void *out, const float *lse, const void *qkv, int B, int T,
			    int NH, int NKV, int HS)
{
	const char *op = "attention_forward";
	ZN_TRY(zn_kcheck_ptr(op, "out", out));
	ZN_TRY(zn_kcheck_ptr(op, "lse", lse));
	ZN_TRY(zn_kcheck_ptr(op, "qkv", qkv));
	return attention_dims(op, B, T, NH, NKV, HS);
}

int zn_kcheck_attention_bwd(const void *dqkv, const void *dout, const void *qkv,
			    const float *lse, int B, int T, int NH, int NKV, int HS)
{
	const char *op = "attention_backward";
	ZN_TRY(zn_kcheck_ptr(op, "dqkv", dqkv));
	ZN_TRY(zn_kcheck_ptr(op, "dout", dout));
	ZN_TRY(zn_kcheck_ptr(op, "qkv", qkv));
	ZN_TRY(zn_kcheck_ptr(op, "lse (saved by attention_forward)", lse));
	return attention_dims(op, B, T, NH, NKV, HS);
}

int zn_kcheck_rmsnorm_fwd(const void *out, const void *inp, const void *weight, float eps,
			  int BT, int C)
{
	const char *op = "rmsnorm_forward";
	ZN_TRY(zn_kcheck_ptr(op, "out", out));
	ZN_TRY(zn_kcheck_ptr(op, "inp", inp));
	ZN_TRY(zn_kcheck_ptr(op, "weight", weight));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "C", C));
	if (!(eps > 0.0f) || !(eps < 1.0f))
		return zn_error(-EINVAL, "%s: eps = %g; it must be > 0 and < 1 (config.json's "
				"rms_norm_eps, typically 1e-5 or 1e-6)", op, (double)eps);
	return 0;
}

int zn_kcheck_rmsnorm_bwd(const void *dout, const void *inp, const void *weight,
			  const float *rstd, int BT, int C)
{
	const char *op = "rmsnorm_backward";
	ZN_TRY(zn_kcheck_ptr(op, "dout", dout));
	ZN_TRY(zn_kcheck_ptr(op, "inp", inp));
	ZN_TRY(zn_kcheck_ptr(op, "weight", weight));
	ZN_TRY(zn_kcheck_ptr(op, "rstd (saved by rmsnorm_forward)", rstd));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "C", C));
	return 0;
}

int zn_kcheck_rope(bool backward, const void *out, int ldo, const void *inp, int ldi, int B,
		   int T, int NH, int HS)
{
	const char *op = backward ? "rope_backward" : "rope_forward";
	const char *o = backward ? "dinp" : "out", *i = backward ? "dout" : "inp";
	const char *lo = backward ? "ldi" : "ldo", *li = backward ? "ldo" : "ldi";
	ZN_TRY(zn_kcheck_ptr(op, o, out));
	ZN_TRY(zn_kcheck_ptr(op, i, inp));
	ZN_TRY(dim(op, "B", B));
	ZN_TRY(dim(op, "T", T));
	ZN_TRY(dim(op, "NH", NH));
	ZN_TRY(dim(op, "HS", HS));
	if (HS % 2 != 0 || HS > ZN_ROPE_MAX_HS)
		return zn_error(-EINVAL, "%s: HS = %d must be even (element i pairs with i + HS/2) "
				"and at most %d", op, HS, ZN_ROPE_MAX_HS);
	ZN_TRY(prod(op, "B*T", B, T));
	ZN_TRY(prod(op, "NH*HS", NH, HS));
	if (ldo < NH * HS || ldi < NH * HS)
		return zn_error(-EINVAL, "%s: the row strides %s = %d and %s = %d must be at least "
				"NH*HS = %d", op, lo, ldo, li, ldi, NH * HS);
	ZN_TRY(prod(op, "B*T*row stride", B * T, ldo > ldi ? ldo : ldi));
	if (backward) {
		/* dinp += f(dout) reads rows of dout while it adds into dinp */
		if (out == inp)
			return zn_error(-EINVAL, "%s: dinp and dout are the same buffer; the "
					"backward adds into dinp and needs dout intact", op);
	} else if (out == inp && ldo != ldi) {
		return zn_error(-EINVAL, "%s: in place (out == inp) needs ldo == ldi (%d, %d)", op,
				ldo, ldi);
	}
	return 0;
}

int zn_kcheck_elementwise(const char *op, const void *a, const void *b, const void *c)
{
	if (zn_unlikely(!a || !b || !c))
		return zn_error(-EINVAL, "%s: a tensor argument is NULL (%s)", op,
				!a ? "the first" : !b ? "the second" : "the third");
	return 0;
}

int zn_kcheck_xent(const float *losses, const void *logits, const int32_t *targets, int BT,
		   int V, int Vp)
{
	const char *op = "softmax_crossentropy";
	ZN_TRY(zn_kcheck_ptr(op, "losses", losses));
	ZN_TRY(zn_kcheck_ptr(op, "logits", logits));
	ZN_TRY(zn_kcheck_ptr(op, "targets", targets));
	ZN_TRY(dim(op, "BT", BT));
	ZN_TRY(dim(op, "V", V));
	if (Vp < V)
		return zn_error(-EINVAL, "%s: the padded row length Vp = %d is smaller than the "
				"vocabulary V = %d: pass Vp = V when the logits are not padded",
				op, Vp, V);
	return 0;
}

int zn_kcheck_dtype(const char *op, const char *what, enum zn_dtype dtype)
{
	if (!zn_dtype_is_float(dtype))
		return zn_error(-EINVAL, "%s: %s dtype %d is not fp32 (%d), fp16 (%d) or bf16 (%d)",
				op, what, (int)dtype, ZN_DTYPE_F32, ZN_DTYPE_F16, ZN_DTYPE_BF16);
	return 0;
}

enum zn_dtype zn_kernels_ctx_dtype(const struct zn_kctx *ctx)
{
	return ctx->dtype;
}

int zn_kcheck_convert(const char *op, void *dst, enum zn_dtype dst_dtype, const void *src,
		      enum zn_dtype src_dtype, size_t n, bool in_place)
{
	int rc;
	if ((rc = zn_kcheck_dtype(op, "destination", dst_dtype)) ||
	    (rc = zn_kcheck_dtype(op, "source", src_dtype)) ||
	    (rc = zn_kcheck_elementwise(op, dst, src, src)))
		return rc;
	size_t dsz = zn_dtype_size(dst_dtype), ssz = zn_dtype_size(src_dtype);
	uintptr_t d0 = (uintptr_t)dst, s0 = (uintptr_t)src;
	bool same = in_place && dst == src;
	if (n && !same && d0 < s0 + n * ssz && s0 < d0 + n * dsz)
		return zn_error(-EINVAL, "%s: the destination overlaps the source%s", op,
				in_place ? " without being the same buffer" : "");
	if (n && same && dsz != ssz)
		return zn_error(-EINVAL, "%s: %s -> %s cannot be done in place (element sizes "
				"differ)", op, zn_dtype_name(src_dtype), zn_dtype_name(dst_dtype));
	return 0;
}
