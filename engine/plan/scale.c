/* zn_plan_largest (include/zinc/plan.h): the largest model of the config's
 * family that fits a machine.
 *
 * The family's shapes run from its smallest published size to its largest.
 * A target parameter count N between two published sizes' counts puts the
 * hidden size and the depth the same fraction of the way between theirs,
 * each rounded to the nearest allowed value; both only grow with N, so the
 * shapes are ordered by N and the search bisects on it.  A shape is the
 * config's resolved architecture with its hidden size, depth, heads and
 * MLP width replaced -- vocabulary, tying, seq_len, activation
 * checkpointing and the rest of the config as they are -- and its plan is
 * zn_plan_compute_geom's, the one every plan is computed by: a shape
 * reported here plans the same through `zinc plan` with it written into
 * the config.
 *
 * The architectures' shapes are set here through their public configs
 * (struct zn_llama_config, struct zn_gpt2_config) and checked by their own
 * zn_*_config_check, the checks a config file's shape goes through. */
#include "zn_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/internal.h"

#define MAX_ANCHORS 5

/* A published size: its name, hidden size and depth. */
struct anchor {
	const char *name;
	uint32_t hidden, layers;
};

struct family {
	enum zn_model_type type;
	const char *name;
	uint32_t head_dim;
	unsigned n;
	struct anchor a[MAX_ANCHORS];
};

static const struct family families[] = {
	{ ZN_MODEL_LLAMA, "Llama", 128, 5,
	  { { "Llama-3.2-1B", 2048, 16 },
	    { "Llama-3.2-3B", 3072, 28 },
	    { "Llama-3-8B", 4096, 32 },
	    { "Llama-3-70B", 8192, 80 },
	    { "Llama-3.1-405B", 16384, 126 } } },
	{ ZN_MODEL_GPT2, "GPT-2", 64, 4,
	  { { "GPT-2 124M", 768, 12 },
	    { "GPT-2 350M", 1024, 24 },
	    { "GPT-2 774M", 1280, 36 },
	    { "GPT-2 1558M", 1600, 48 } } },
};

/* The family's shapes for one config and machine. */
struct ladder {
	const struct family *f;
	const struct zn_config *cfg;
	const struct zn_plan_machine *m;
	struct zn_arch base;     /* the config's model */
	uint32_t grid;           /* hidden sizes are multiples of it */
	uint32_t kv;             /* Llama's key/value heads; 0: one per query head */
	uint64_t P[MAX_ANCHORS]; /* parameters of the published sizes' shapes */
};

/* x rounded to the nearest multiple of the grid, halves up; at least one. */
static uint32_t round_hidden(const struct ladder *ld, double x)
{
	double k = floor(x / ld->grid + 0.5);
	return ld->grid * (uint32_t)(k < 1 ? 1 : k);
}

/* The architecture of hidden size C and L layers, and its shape: query
 * heads C / head_dim; a Llama's key/value heads as the config's and its
 * MLP 3.5 C rounded to a multiple of 256 (halves up: Llama-3-8B's and
 * 70B's 14336 and 28672 exactly), GPT-2's its own 4 C.  0, or the
 * architecture's check's -EINVAL. */
static int shape_of(const struct ladder *ld, uint32_t C, uint32_t L, struct zn_arch *a,
		    struct zn_plan_shape *s)
{
	const uint32_t heads = C / ld->f->head_dim;
	int rc;
	*a = ld->base;
	*s = (struct zn_plan_shape){ .n_layer = L, .n_embd = C, .n_head = heads,
				     .head_dim = ld->f->head_dim };
	if (ld->f->type == ZN_MODEL_LLAMA) {
		struct zn_llama_config *l = &a->l;
		s->n_kv_head = ld->kv ? ld->kv : heads;
		s->intermediate = (7 * C / 2 + 128) / 256 * 256;
		s->vocab_size = (uint32_t)l->vocab_size;
		l->n_layer = (int)L;
		l->n_embd = (int)C;
		l->n_head = (int)heads;
		l->n_kv_head = (int)s->n_kv_head;
		l->head_dim = (int)s->head_dim;
		l->intermediate = (int)s->intermediate;
		rc = zn_llama_config_check(l);
	} else {
		struct zn_gpt2_config *g = &a->g;
		s->n_kv_head = heads;
		s->intermediate = 4 * C;
		s->vocab_size = (uint32_t)g->vocab_size;
		g->n_layer = (int)L;
		g->n_head = (int)heads;
		g->n_embd = (int)C;
		rc = zn_gpt2_config_check(g);
	}
	s->params = rc ? 0 : zn_arch_num_params(a);
	return rc;
}

/* The hidden size and depth at target parameter count N (P[0] <= N <=
 * P[n-1]): the same fraction t of the way between the published sizes
 * around N, t = (N - P[i]) / (P[i+1] - P[i]). */
static void dims_at(const struct ladder *ld, uint64_t N, uint32_t *C, uint32_t *L)
{
	const struct family *f = ld->f;
	unsigned i = 0;
	while (i + 2 < f->n && N > ld->P[i + 1])
		i++;
	const struct anchor *lo = &f->a[i], *hi = &f->a[i + 1];
	double t = N <= ld->P[i] ? 0 : (double)(N - ld->P[i]) / (double)(ld->P[i + 1] - ld->P[i]);
	t = t > 1 ? 1 : t;
	*C = round_hidden(ld, lo->hidden + t * ((double)hi->hidden - lo->hidden));
	*L = (uint32_t)floor(lo->layers + t * ((double)hi->layers - lo->layers) + 0.5);
}

static int ladder_of(const struct zn_config *cfg, const struct zn_plan_machine *m,
		     struct ladder *ld)
{
	memset(ld, 0, sizeof(*ld));
	ld->cfg = cfg;
	ld->m = m;
	int rc = zn_arch_from_config(cfg, &ld->base);
	if (rc)
		return rc;
	for (size_t i = 0; i < ZN_ARRAY_SIZE(families); i++)
		if ((int)families[i].type == cfg->model.type)
			ld->f = &families[i];
	if (!ld->f)
		return zn_error(-ENOTSUP, "the largest model: model.type %d has no family of "
					  "published sizes to scale", cfg->model.type);
	ld->grid = ld->f->head_dim;
	if (ld->f->type == ZN_MODEL_LLAMA && ld->base.l.n_kv_head != ld->base.l.n_head) {
		/* Grouped-query attention: every key/value head serves a whole
		 * group of query heads, so the heads come in multiples of them. */
		ld->kv = (uint32_t)ld->base.l.n_kv_head;
		ld->grid *= ld->kv;
	}
	for (unsigned i = 0; i < ld->f->n; i++) {
		struct zn_arch a;
		struct zn_plan_shape s;
		if ((rc = shape_of(ld, round_hidden(ld, ld->f->a[i].hidden), ld->f->a[i].layers, &a,
				   &s)))
			return rc;
		ld->P[i] = s.params;
	}
	return 0;
}

/* One shape's outcome. */
struct trial {
	struct zn_plan_shape s;
	bool fits;
	char error[ZN_PLAN_TEXT_MAX]; /* why it could not be planned, else "" */
};

/* Plan the shape at N into *p.  A shape the config cannot be planned with
 * (offload_param.buffer_size below its largest tensor, say) does not fit,
 * with the reason in tr->error.  0, or -ENOMEM. */
static int try_at(const struct ladder *ld, uint64_t N, struct zn_plan *p, struct trial *tr,
		  unsigned *plans)
{
	uint32_t C, L;
	struct zn_arch a;
	struct zn_plan_geom g;
	memset(tr, 0, sizeof(*tr));
	memset(&g, 0, sizeof(g));
	dims_at(ld, N, &C, &L);
	int rc = shape_of(ld, C, L, &a, &tr->s);
	if (!rc && !(rc = zn_plan_geom_of_arch(&a, &g))) {
		rc = zn_plan_compute_geom(ld->cfg, &g, ld->m, p);
		(*plans)++;
	}
	zn_plan_geom_free(&g);
	if (rc == -ENOMEM)
		return rc;
	if (rc)
		snprintf(tr->error, sizeof(tr->error), "%s", zn_last_error());
	tr->fits = !rc && zn_plan_fits(p);
	return 0;
}

/* Keep a trial as the largest shape that fits or the smallest that does
 * not. */
static void keep(struct zn_plan_largest *out, const struct trial *tr, const struct zn_plan *p)
{
	if (tr->fits) {
		out->fit = tr->s;
		memcpy(&out->fit_plan, p, sizeof(*p));
	} else {
		out->over = tr->s;
		snprintf(out->over_error, sizeof(out->over_error), "%s", tr->error);
		if (!tr->error[0])
			memcpy(&out->over_plan, p, sizeof(*p));
	}
}

static bool same(const struct zn_plan_shape *s, uint32_t C, uint32_t L)
{
	return s->n_embd == C && s->n_layer == L;
}

int zn_plan_largest(const struct zn_config *cfg, const struct zn_plan_machine *m,
		    struct zn_plan_largest *out)
{
	static const struct zn_plan_machine here; /* nothing described */
	struct ladder ld;
	struct trial tr;

	if (!cfg || !out)
		return zn_error(-EINVAL, "zn_plan_largest: a config and a result are required");
	memset(out, 0, sizeof(*out));
	m = m ? m : &here;
	struct zn_plan *p = malloc(sizeof(*p));
	if (!p)
		return zn_error(-ENOMEM, "the largest model: out of memory");
	/* The config at its own shape first: what is wrong with it is
	 * reported as zn_plan_compute reports it. */
	int rc = zn_plan_compute_on(cfg, m, p);
	if (rc || (rc = ladder_of(cfg, m, &ld)))
		goto done;
	out->model_type = ld.f->type;
	snprintf(out->family, sizeof(out->family), "%s", ld.f->name);
	snprintf(out->smallest, sizeof(out->smallest), "%s", ld.f->a[0].name);
	snprintf(out->biggest, sizeof(out->biggest), "%s", ld.f->a[ld.f->n - 1].name);
	out->step = ld.grid;

	uint64_t lo = ld.P[0], hi = ld.P[ld.f->n - 1];
	if ((rc = try_at(&ld, lo, p, &tr, &out->plans)))
		goto done;
	keep(out, &tr, p);
	if (!tr.fits) {
		out->result = ZN_PLAN_LARGEST_NONE;
		goto done;
	}
	if ((rc = try_at(&ld, hi, p, &tr, &out->plans)))
		goto done;
	keep(out, &tr, p);
	if (tr.fits) {
		out->result = ZN_PLAN_LARGEST_ALL;
		goto done;
	}
	/* Invariant: the shape at lo fits (out->fit), the one at hi does not
	 * (out->over); at the end hi = lo + 1, so over is the next shape up. */
	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;
		uint32_t C, L;
		dims_at(&ld, mid, &C, &L);
		if (same(&out->fit, C, L)) {
			lo = mid;
			continue;
		}
		if (same(&out->over, C, L)) {
			hi = mid;
			continue;
		}
		if ((rc = try_at(&ld, mid, p, &tr, &out->plans)))
			goto done;
		keep(out, &tr, p);
		if (tr.fits)
			lo = mid;
		else
			hi = mid;
	}
	out->result = ZN_PLAN_LARGEST_FOUND;
done:
	free(p);
	return rc;
}
