/* The key tables of the training config: DeepSpeed's top-level keys and
 * sections (optimizer, scheduler, fp16, bf16, zero_optimization) with
 * DeepSpeed's names and defaults, and zinc's own sections (model, data,
 * checkpoint, device).  aio, offload_param and offload_optimizer have their
 * tables beside their code (aio/config.c, offload/config.c).
 *
 * Keys DeepSpeed reads for features zinc does not have yet carry
 * ZN_KEY_UNSUPPORTED: the file may name them with their default value (so a
 * ds_config.json that spells out defaults loads), and any other value is
 * refused with "not supported yet" instead of being ignored.
 */
#include "zn_common.h"

#include <stddef.h>
#include <string.h>

#include "config/keys.h"
#include "zinc/configfile.h"

#define BIG 1e18
#define KEY(st, n, al, t, f, d, lo, hi, ch, fl, h) \
	{ .name = n, .alias = al, .type = t, .offset = offsetof(st, f), \
	  .size = sizeof(((st *)0)->f), .def = d, .min = lo, .max = hi, .choices = ch, \
	  .flags = fl, .help = h }
/* A key accepted that does nothing in zinc, and why. */
#define KEYN(st, n, al, t, f, d, lo, hi, ch, fl, h, why) \
	{ .name = n, .alias = al, .type = t, .offset = offsetof(st, f), \
	  .size = sizeof(((st *)0)->f), .def = d, .min = lo, .max = hi, .choices = ch, \
	  .flags = fl, .help = h, .noop = why }
/* A key with a name DeepSpeed deprecates but still reads. */
#define KEYD(st, n, al, dep, t, f, d, lo, hi, ch, fl, h, why) \
	{ .name = n, .alias = al, .deprecated = dep, .type = t, .offset = offsetof(st, f), \
	  .size = sizeof(((st *)0)->f), .def = d, .min = lo, .max = hi, .choices = ch, \
	  .flags = fl, .help = h, .noop = why }
#define SUB(st, n, f, table, fl, h) \
	{ .name = n, .type = ZN_KEY_SECTION, .offset = offsetof(st, f), \
	  .size = sizeof(((st *)0)->f), .sub = &table, .flags = fl, .help = h }
#define UNSUP ZN_KEY_UNSUPPORTED
#define ZINC ZN_KEY_ZINC_ONLY
#define AUTO ZN_KEY_AUTO

/* ---- optimizer --------------------------------------------------------- */

/* DeepSpeed matches the type case-insensitively; so does zn_keys_set. */
static const char *const optimizer_types[] = {
	"Adam", "AdamW", "Adagrad", "Lamb", "Lion", "OneBitAdam", "ZeroOneAdam", "OneBitLamb",
	"MuAdam", "MuAdamW", "MuSGD", "SGD", NULL,
};
_Static_assert(ZN_ARRAY_SIZE(optimizer_types) == ZN_OPT_COUNT + 1,
	      "one name per enum zn_optimizer_type");

static const char *const decay_params[] = { "matrices", "all", NULL };

#define OP(...) KEY(struct zn_optimizer_params, __VA_ARGS__)
static const struct zn_key optimizer_param_keys[] = {
	OP("lr", NULL, ZN_KEY_DOUBLE, lr, "1e-3", 0, 1e6, NULL, AUTO,
	   "learning rate (the peak; a scheduler may vary it)"),
	OP("betas", NULL, ZN_KEY_PAIR, betas, "[0.9, 0.999]", 0, 1, NULL, AUTO,
	   "Adam's decay rates of the first and second moment, a list of two"),
	OP("eps", NULL, ZN_KEY_DOUBLE, eps, "1e-8", 0, 1, NULL, AUTO,
	   "added to the root of the second moment"),
	OP("weight_decay", NULL, ZN_KEY_DOUBLE, weight_decay, "0", 0, 1e6, NULL, AUTO,
	   "weight decay; decoupled (AdamW) unless adam_w_mode is false"),
	OP("bias_correction", NULL, ZN_KEY_BOOL, bias_correction, "true", 0, 1, NULL, 0,
	   "Adam's bias correction of the moments"),
	OP("adam_w_mode", NULL, ZN_KEY_BOOL, adam_w_mode, "true", 0, 1, NULL, 0,
	   "type Adam only: decoupled weight decay (false: L2 added to the gradient)"),
	OP("amsgrad", NULL, ZN_KEY_BOOL, amsgrad, "false", 0, 1, NULL, UNSUP, "AMSGrad variant"),
	KEYN(struct zn_optimizer_params, "torch_adam", NULL, ZN_KEY_BOOL, torch_adam, "false", 0,
	     1, NULL, 0, "DeepSpeed: torch.optim's Adam instead of its fused or CPU Adam",
	     "zinc always runs its own Adam (CPU or device), which matches torch's AdamW"),
	OP("weight_decay_params", NULL, ZN_KEY_ENUM, weight_decay_params, "matrices", 0, 0,
	   decay_params, ZINC,
	   "which parameters weight_decay applies to: matrices (2-D tensors only, not biases "
	   "or norms: the Hugging Face Trainer's and nanoGPT's rule) or all (every parameter, "
	   "as DeepSpeed does with the parameters a script passes it)"),
	OP("max_coeff", NULL, ZN_KEY_DOUBLE, max_coeff, "10.0", 0, 1e6, NULL, 0,
	   "Lamb: the trust ratio ||param|| / ||update|| is at most this"),
	OP("min_coeff", NULL, ZN_KEY_DOUBLE, min_coeff, "0.01", 0, 1e6, NULL, 0,
	   "Lamb: the trust ratio is at least this"),
	OP("eps_inside_sqrt", NULL, ZN_KEY_BOOL, eps_inside_sqrt, "false", 0, 1, NULL, 0,
	   "Lamb: divide by sqrt(v + eps) instead of sqrt(v) + eps"),
	OP("max_grad_norm", NULL, ZN_KEY_DOUBLE, max_grad_norm, "0", 0, 1e6, NULL, UNSUP,
	   "Lamb: FusedLamb's own clipping (use gradient_clipping)"),
	OP("momentum", NULL, ZN_KEY_DOUBLE, momentum, "0", 0, 1, NULL, 0,
	   "SGD: momentum factor (0: plain SGD, no state)"),
	OP("dampening", NULL, ZN_KEY_DOUBLE, dampening, "0", 0, 1, NULL, 0,
	   "SGD: dampening of the gradient added to the momentum buffer"),
	OP("nesterov", NULL, ZN_KEY_BOOL, nesterov, "false", 0, 1, NULL, 0,
	   "SGD: Nesterov momentum (needs momentum > 0 and dampening 0)"),
};

static const struct zn_key_table optimizer_params_table = {
	.name = "params",
	.help = "the optimizer's parameters",
	.keys = optimizer_param_keys,
	.nkeys = ZN_ARRAY_SIZE(optimizer_param_keys),
	.struct_size = sizeof(struct zn_optimizer_params),
};

/* The type first, before the parameters only that type takes: a 1-bit
 * optimizer is refused for what it is, not for its freeze_step. */
static int optimizer_check_type(const void *obj)
{
	const struct zn_optimizer_config *c = obj;
	const char *name = optimizer_types[c->type];

	if (strcmp(name, "OneBitAdam") == 0 || strcmp(name, "OneBitLamb") == 0 ||
	    strcmp(name, "ZeroOneAdam") == 0)
		return zn_error(-EINVAL, "optimizer.type: %s is refused: it compresses the "
					 "gradients ranks exchange to 1 bit with error feedback, a "
					 "saving in communication between GPUs that zinc's offload "
					 "does not have (and it cannot run with ZeRO offload in "
					 "DeepSpeed either); use Adam or AdamW",
				name);
	switch (c->type) {
	case ZN_OPT_ADAM:
	case ZN_OPT_ADAMW:
	case ZN_OPT_LAMB:
	case ZN_OPT_SGD:
		return 0;
	default:
		return zn_error(-EINVAL, "optimizer.type: %s is not supported yet; use Adam, AdamW, "
					 "Lamb or SGD",
				name);
	}
}

/* The parameters each type takes, as DeepSpeed hands params to the
 * optimizer's constructor as keyword arguments: one it does not take is
 * a TypeError there (FusedLamb has no adam_w_mode, torch's SGD no betas),
 * so a value other than the default is an error here, not ignored. */
struct opt_param_use {
	const char *name;
	unsigned types; /* bit per enum zn_optimizer_type */
};
#define ADAMS ((1u << ZN_OPT_ADAM) | (1u << ZN_OPT_ADAMW))
#define LAMB (1u << ZN_OPT_LAMB)
#define SGD (1u << ZN_OPT_SGD)
static const struct opt_param_use opt_param_uses[] = {
	{ "betas", ADAMS | LAMB },	   { "eps", ADAMS | LAMB },
	{ "bias_correction", ADAMS | LAMB }, { "adam_w_mode", ADAMS },
	{ "amsgrad", ADAMS | LAMB },	   { "torch_adam", ADAMS },
	{ "max_coeff", LAMB },		   { "min_coeff", LAMB },
	{ "eps_inside_sqrt", LAMB },	   { "max_grad_norm", LAMB },
	{ "momentum", SGD },		   { "dampening", SGD },
	{ "nesterov", SGD },
};

static int optimizer_validate(const void *obj)
{
	const struct zn_optimizer_config *c = obj;
	const struct zn_optimizer_params *p = &c->params;

	ZN_TRY(optimizer_check_type(obj));
	for (size_t i = 0; i < ZN_ARRAY_SIZE(opt_param_uses); i++) {
		const struct zn_key *k = zn_keys_find(&optimizer_params_table, opt_param_uses[i].name);
		if (!(opt_param_uses[i].types & (1u << c->type)) && !zn_keys_is_default(k, p))
			return zn_error(-EINVAL, "optimizer.params.%s: %s does not take it",
					k->name, optimizer_types[c->type]);
	}
	if (p->betas[0] >= 1 || p->betas[1] >= 1)
		return zn_error(-EINVAL, "optimizer.params.betas: [%g, %g]: each must be below 1",
				p->betas[0], p->betas[1]);
	if (c->type == ZN_OPT_ADAMW && !p->adam_w_mode)
		return zn_error(-EINVAL, "optimizer.params: adam_w_mode false contradicts type "
					 "AdamW; use type Adam for L2 weight decay");
	if (c->type == ZN_OPT_LAMB && p->min_coeff > p->max_coeff)
		return zn_error(-EINVAL, "optimizer.params.min_coeff: %g is above max_coeff %g",
				p->min_coeff, p->max_coeff);
	/* torch.optim.SGD raises the same. */
	if (c->type == ZN_OPT_SGD && p->nesterov && (p->momentum <= 0 || p->dampening != 0))
		return zn_error(-EINVAL, "optimizer.params.nesterov: Nesterov momentum needs "
					 "momentum > 0 and dampening 0 (got %g and %g)",
				p->momentum, p->dampening);
	return 0;
}

#define OC(...) KEY(struct zn_optimizer_config, __VA_ARGS__)
static const struct zn_key optimizer_keys[] = {
	OC("type", NULL, ZN_KEY_ENUM, type, "AdamW", 0, 0, optimizer_types, 0,
	   "the optimizer: Adam, AdamW, Lamb (DeepSpeed's FusedLamb) or SGD (torch.optim.SGD); "
	   "DeepSpeed's other types are not supported yet, its 1-bit ones refused"),
	KEYN(struct zn_optimizer_config, "legacy_fusion", NULL, ZN_KEY_BOOL, legacy_fusion,
	     "false", 0, 1, NULL, 0, "DeepSpeed: the old fused fp16 optimizer wrapper",
	     "a PyTorch wrapper around the fp16 optimizer; zinc's fp16 path is its own"),
	SUB(struct zn_optimizer_config, "params", params, optimizer_params_table, 0,
	    "the optimizer's parameters"),
};

static const struct zn_key_table optimizer_table = {
	.name = "optimizer",
	.help = "the optimizer and its parameters",
	.keys = optimizer_keys,
	.nkeys = ZN_ARRAY_SIZE(optimizer_keys),
	.struct_size = sizeof(struct zn_optimizer_config),
	.validate = optimizer_validate,
	.check_type = optimizer_check_type,
};

/* ---- scheduler --------------------------------------------------------- */

static const char *const scheduler_types[] = {
	"none", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest", NULL,
};
_Static_assert(ZN_ARRAY_SIZE(scheduler_types) == ZN_SCHED_COUNT + 1,
	       "one name per enum zn_scheduler_type");
static const char *const warmup_types[] = { "log", "linear", NULL };

#define SP(...) KEY(struct zn_scheduler_params, __VA_ARGS__)
static const struct zn_key scheduler_param_keys[] = {
	SP("warmup_min_lr", NULL, ZN_KEY_DOUBLE, warmup_min_lr, "0", 0, 1e6, NULL, AUTO,
	   "WarmupLR, WarmupDecayLR: learning rate at step 0"),
	SP("warmup_max_lr", NULL, ZN_KEY_DOUBLE, warmup_max_lr, "0.001", 0, 1e6, NULL, AUTO,
	   "WarmupLR, WarmupDecayLR: learning rate at the end of the warmup"),
	SP("warmup_num_steps", NULL, ZN_KEY_UINT, warmup_num_steps, "1000", 0, BIG, NULL, AUTO,
	   "optimizer steps of warmup (at least 2 are used); auto: 0, the Hugging Face "
	   "default"),
	SP("warmup_type", NULL, ZN_KEY_ENUM, warmup_type, "log", 0, 0, warmup_types, 0,
	   "warmup curve: log or linear"),
	SP("total_num_steps", NULL, ZN_KEY_UINT, total_num_steps, "auto", 1, BIG, NULL, AUTO,
	   "WarmupDecayLR, WarmupCosineLR: optimizer steps of the whole run; auto: "
	   "zinc train's step count"),
	SP("warmup_min_ratio", NULL, ZN_KEY_DOUBLE, warmup_min_ratio, "0", 0, 1, NULL, 0,
	   "WarmupCosineLR: share of optimizer.params.lr at step 0"),
	SP("cos_min_ratio", NULL, ZN_KEY_DOUBLE, cos_min_ratio, "0.0001", 0, 1, NULL, 0,
	   "WarmupCosineLR: share of optimizer.params.lr at the end"),
	SP("last_batch_iteration", NULL, ZN_KEY_INT, last_batch_iteration, "-1", -1, BIG, NULL,
	   UNSUP, "step to resume the schedule from (zinc resumes it from checkpoints)"),
	SP("cycle_min_lr", NULL, ZN_KEY_DOUBLE, cycle_min_lr, "-1", -1, 1e6, NULL, 0,
	   "OneCycle (required): learning rate at the start and end of the cycle"),
	SP("cycle_max_lr", NULL, ZN_KEY_DOUBLE, cycle_max_lr, "-1", -1, 1e6, NULL, 0,
	   "OneCycle (required): learning rate at the peak of the cycle"),
	SP("decay_lr_rate", NULL, ZN_KEY_DOUBLE, decay_lr_rate, "0", 0, 1e6, NULL, 0,
	   "OneCycle: after the cycle, lr = cycle_min_lr / (1 + rate * steps / "
	   "decay_step_size); 0: cycle_min_lr"),
	SP("cycle_first_step_size", NULL, ZN_KEY_UINT, cycle_first_step_size, "2000", 1, BIG,
	   NULL, 0, "OneCycle: optimizer steps of the rising half of the cycle"),
	SP("cycle_second_step_size", NULL, ZN_KEY_INT, cycle_second_step_size, "-1", -1, BIG,
	   NULL, 0, "OneCycle: optimizer steps of the falling half; -1 (DeepSpeed's None): "
	   "cycle_first_step_size"),
	SP("cycle_first_stair_count", NULL, ZN_KEY_UINT, cycle_first_stair_count, "0", 0, BIG,
	   NULL, 0, "OneCycle: stairs of the rising half (lr and momentum held flat on each); "
	   "0: continuous"),
	SP("cycle_second_stair_count", NULL, ZN_KEY_INT, cycle_second_stair_count, "-1", -1, BIG,
	   NULL, 0, "OneCycle: stairs of the falling half; -1 (DeepSpeed's None): "
	   "cycle_first_stair_count"),
	SP("decay_step_size", NULL, ZN_KEY_UINT, decay_step_size, "0", 0, BIG, NULL, 0,
	   "OneCycle: optimizer steps per unit of decay after the cycle; 0: no decay"),
	SP("cycle_momentum", NULL, ZN_KEY_BOOL, cycle_momentum, "true", 0, 1, NULL, 0,
	   "OneCycle: cycle Adam's and Lamb's beta1 inversely to the lr (and set beta2 to "
	   "0.99, as DeepSpeed does); SGD's momentum is not cycled, as in DeepSpeed"),
	SP("cycle_min_mom", NULL, ZN_KEY_DOUBLE, cycle_min_mom, "0.8", 0, 1, NULL, 0,
	   "OneCycle: beta1 at the peak of the lr"),
	SP("cycle_max_mom", NULL, ZN_KEY_DOUBLE, cycle_max_mom, "0.9", 0, 1, NULL, 0,
	   "OneCycle: beta1 at the start and end of the cycle"),
	SP("decay_mom_rate", NULL, ZN_KEY_DOUBLE, decay_mom_rate, "0", 0, 1e6, NULL, 0,
	   "OneCycle: after the cycle, beta1 = cycle_max_mom * (1 + rate * steps / "
	   "decay_step_size); 0: cycle_max_mom"),
	SP("lr_range_test_min_lr", NULL, ZN_KEY_DOUBLE, lr_range_test_min_lr, "0.001", 0, 1e6,
	   NULL, 0, "LRRangeTest: learning rate at step 0"),
	SP("lr_range_test_step_size", NULL, ZN_KEY_UINT, lr_range_test_step_size, "2000", 1, BIG,
	   NULL, 0, "LRRangeTest: optimizer steps per unit of increase"),
	SP("lr_range_test_step_rate", NULL, ZN_KEY_DOUBLE, lr_range_test_step_rate, "1.0", 0,
	   1e6, NULL, 0, "LRRangeTest: lr = min_lr * (1 + rate * steps / step_size)"),
	SP("lr_range_test_staircase", NULL, ZN_KEY_BOOL, lr_range_test_staircase, "false", 0, 1,
	   NULL, 0, "LRRangeTest: increase in whole steps of step_size (floor)"),
};

static const struct zn_key_table scheduler_params_table = {
	.name = "params",
	.help = "the schedule's parameters (DeepSpeed's names)",
	.keys = scheduler_param_keys,
	.nkeys = ZN_ARRAY_SIZE(scheduler_param_keys),
	.struct_size = sizeof(struct zn_scheduler_params),
};

static int scheduler_check_type(const void *obj)
{
	const struct zn_scheduler_config *c = obj;

	if (c->type < 0 || c->type >= ZN_SCHED_COUNT)
		return zn_error(-EINVAL, "scheduler.type: %d is not a schedule", c->type);
	return 0;
}

/* The parameters each schedule takes.  DeepSpeed passes params to the
 * schedule's constructor as keyword arguments: one it does not take is a
 * TypeError there, so a value other than the default is an error here
 * (warmup_max_lr to WarmupCosineLR, cycle_max_lr to WarmupLR). */
#define S_(t) (1u << (t))
#define S_WARM (S_(ZN_SCHED_WARMUP_LR) | S_(ZN_SCHED_WARMUP_DECAY_LR))
static const struct opt_param_use sched_param_uses[] = {
	{ "warmup_min_lr", S_WARM },
	{ "warmup_max_lr", S_WARM },
	{ "warmup_num_steps", S_WARM | S_(ZN_SCHED_WARMUP_COSINE_LR) },
	{ "warmup_type", S_WARM | S_(ZN_SCHED_WARMUP_COSINE_LR) },
	{ "total_num_steps", S_(ZN_SCHED_WARMUP_DECAY_LR) | S_(ZN_SCHED_WARMUP_COSINE_LR) },
	{ "warmup_min_ratio", S_(ZN_SCHED_WARMUP_COSINE_LR) },
	{ "cos_min_ratio", S_(ZN_SCHED_WARMUP_COSINE_LR) },
	{ "cycle_min_lr", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_max_lr", S_(ZN_SCHED_ONE_CYCLE) },
	{ "decay_lr_rate", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_first_step_size", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_second_step_size", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_first_stair_count", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_second_stair_count", S_(ZN_SCHED_ONE_CYCLE) },
	{ "decay_step_size", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_momentum", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_min_mom", S_(ZN_SCHED_ONE_CYCLE) },
	{ "cycle_max_mom", S_(ZN_SCHED_ONE_CYCLE) },
	{ "decay_mom_rate", S_(ZN_SCHED_ONE_CYCLE) },
	{ "lr_range_test_min_lr", S_(ZN_SCHED_LR_RANGE_TEST) },
	{ "lr_range_test_step_size", S_(ZN_SCHED_LR_RANGE_TEST) },
	{ "lr_range_test_step_rate", S_(ZN_SCHED_LR_RANGE_TEST) },
	{ "lr_range_test_staircase", S_(ZN_SCHED_LR_RANGE_TEST) },
};

static int scheduler_validate(const void *obj)
{
	const struct zn_scheduler_config *c = obj;
	const struct zn_scheduler_params *p = &c->params;

	ZN_TRY(scheduler_check_type(obj));
	for (size_t i = 0; i < ZN_ARRAY_SIZE(sched_param_uses) && c->type != ZN_SCHED_NONE; i++) {
		const struct zn_key *k = zn_keys_find(&scheduler_params_table,
						      sched_param_uses[i].name);
		if ((sched_param_uses[i].types & S_(c->type)) || zn_keys_is_default(k, p))
			continue;
		const char *why = "";
		if (c->type == ZN_SCHED_WARMUP_COSINE_LR && strncmp(k->name, "warmup_m", 8) == 0)
			why = "; it scales optimizer.params.lr by warmup_min_ratio and "
			      "cos_min_ratio";
		else if (c->type == ZN_SCHED_WARMUP_LR && strcmp(k->name, "total_num_steps") == 0)
			why = " (it holds warmup_max_lr after the warmup); use WarmupDecayLR to "
			      "decay";
		return zn_error(-EINVAL, "scheduler.params.%s: %s does not take it%s", k->name,
				scheduler_types[c->type], why);
	}
	if (p->warmup_max_lr < p->warmup_min_lr)
		return zn_error(-EINVAL, "scheduler.params.warmup_max_lr: %g is below "
					 "warmup_min_lr %g",
				p->warmup_max_lr, p->warmup_min_lr);
	if (c->type == ZN_SCHED_ONE_CYCLE) {
		/* DeepSpeed's OneCycle has no default for either bound. */
		if (p->cycle_min_lr < 0 || p->cycle_max_lr < 0)
			return zn_error(-EINVAL, "scheduler.params.%s: OneCycle needs it (the "
						 "learning rate at the %s of the cycle)",
					p->cycle_min_lr < 0 ? "cycle_min_lr" : "cycle_max_lr",
					p->cycle_min_lr < 0 ? "start" : "peak");
	}
	return 0;
}

#define SC(...) KEY(struct zn_scheduler_config, __VA_ARGS__)
static const struct zn_key scheduler_keys[] = {
	SC("type", NULL, ZN_KEY_ENUM, type, "none", 0, 0, scheduler_types, 0,
	   "WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle or LRRangeTest; none: constant "
	   "optimizer.params.lr"),
	SUB(struct zn_scheduler_config, "params", params, scheduler_params_table, 0,
	    "the schedule's parameters"),
};

static const struct zn_key_table scheduler_table = {
	.name = "scheduler",
	.help = "the learning-rate schedule, one value per optimizer step",
	.keys = scheduler_keys,
	.nkeys = ZN_ARRAY_SIZE(scheduler_keys),
	.struct_size = sizeof(struct zn_scheduler_config),
	.validate = scheduler_validate,
	.check_type = scheduler_check_type,
};

/* ---- fp16, bf16 -------------------------------------------------------- */

#define F16(...) KEY(struct zn_fp16_config, __VA_ARGS__)
static const struct zn_key fp16_keys[] = {
	F16("enabled", NULL, ZN_KEY_BOOL, enabled, "false", 0, 1, NULL, AUTO,
	    "fp16 parameters and gradients with fp32 master weights"),
	F16("loss_scale", NULL, ZN_KEY_DOUBLE, loss_scale, "0", 0, 1e308, NULL, 0,
	    "static loss scale; 0: dynamic loss scaling"),
	F16("initial_scale_power", NULL, ZN_KEY_UINT, initial_scale_power, "16", 0, 127, NULL, 0,
	    "dynamic: the scale starts at 2^initial_scale_power"),
	F16("loss_scale_window", NULL, ZN_KEY_UINT, loss_scale_window, "1000", 1, 4294967295.0,
	    NULL, 0, "dynamic: steps without overflow before the scale doubles"),
	F16("hysteresis", NULL, ZN_KEY_UINT, hysteresis, "2", 1, 4294967295.0, NULL, 0,
	    "dynamic: overflows tolerated before the scale is halved"),
	F16("consecutive_hysteresis", NULL, ZN_KEY_BOOL, consecutive_hysteresis, "false", 0, 1,
	    NULL, 0, "dynamic: refill the hysteresis on every step without overflow"),
	F16("min_loss_scale", NULL, ZN_KEY_DOUBLE, min_loss_scale, "1", 1e-30, 1e308, NULL, 0,
	    "dynamic: the scale never goes below this"),
	F16("auto_cast", NULL, ZN_KEY_BOOL, auto_cast, "false", 0, 1, NULL, UNSUP,
	    "cast the model's inputs to fp16"),
	F16("fp16_master_weights_and_grads", NULL, ZN_KEY_BOOL, fp16_master_weights_and_grads,
	    "false", 0, 1, NULL, UNSUP, "keep master weights and gradients in fp16"),
};

static const struct zn_key_table fp16_table = {
	.name = "fp16",
	.help = "fp16 mixed precision and its dynamic loss scaler",
	.keys = fp16_keys,
	.nkeys = ZN_ARRAY_SIZE(fp16_keys),
	.struct_size = sizeof(struct zn_fp16_config),
	.auto_default = true,
};

#define B16(...) KEY(struct zn_bf16_config, __VA_ARGS__)
static const struct zn_key bf16_keys[] = {
	B16("enabled", NULL, ZN_KEY_BOOL, enabled, "false", 0, 1, NULL, AUTO,
	    "bf16 parameters and gradients with fp32 master weights (no loss scaling)"),
	B16("immediate_grad_update", NULL, ZN_KEY_BOOL, immediate_grad_update, "false", 0, 1,
	    NULL, UNSUP, "apply each gradient as soon as it is reduced"),
	/* DeepSpeed's default is true; zinc's is what it does (listed among
	 * the defaults that differ from DeepSpeed's). */
	KEYN(struct zn_bf16_config, "check_grad_overflow", NULL, ZN_KEY_BOOL, check_grad_overflow,
	     "false", 0, 1, NULL, AUTO, "skip a step whose gradients hold inf or nan",
	     "zinc skips overflowing steps in fp16 only; a bf16 step whose gradients hold "
	     "inf or nan stops the run with a message instead"),
	B16("bf16_master_weights_and_grads", NULL, ZN_KEY_BOOL, bf16_master_weights_and_grads,
	    "false", 0, 1, NULL, UNSUP, "keep master weights and gradients in bf16"),
	B16("bf16_optimizer_states", NULL, ZN_KEY_BOOL, bf16_optimizer_states, "false", 0, 1,
	    NULL, UNSUP, "keep the optimizer states in bf16"),
#define BF16_NOSCALE "bf16 has fp32's exponent range: there is no loss scaling to configure"
	KEYN(struct zn_bf16_config, "loss_scale", NULL, ZN_KEY_DOUBLE, loss_scale, "0", 0, 1e308,
	     NULL, AUTO, "fp16's key, tolerated here", BF16_NOSCALE),
	KEYN(struct zn_bf16_config, "initial_scale_power", NULL, ZN_KEY_UINT, initial_scale_power,
	     "16", 0, 127, NULL, AUTO, "fp16's key, tolerated here", BF16_NOSCALE),
	KEYN(struct zn_bf16_config, "loss_scale_window", NULL, ZN_KEY_UINT, loss_scale_window,
	     "1000", 0, 4294967295.0, NULL, AUTO, "fp16's key, tolerated here", BF16_NOSCALE),
	KEYN(struct zn_bf16_config, "hysteresis", NULL, ZN_KEY_UINT, hysteresis, "2", 0,
	     4294967295.0, NULL, AUTO, "fp16's key, tolerated here", BF16_NOSCALE),
	KEYN(struct zn_bf16_config, "consecutive_hysteresis", NULL, ZN_KEY_BOOL,
	     consecutive_hysteresis, "false", 0, 1, NULL, AUTO, "fp16's key, tolerated here",
	     BF16_NOSCALE),
	KEYN(struct zn_bf16_config, "min_loss_scale", NULL, ZN_KEY_DOUBLE, min_loss_scale, "1", 0,
	     1e308, NULL, AUTO, "fp16's key, tolerated here", BF16_NOSCALE),
};

static const struct zn_key_table bf16_table = {
	.name = "bf16",
	.help = "bf16 mixed precision",
	.keys = bf16_keys,
	.nkeys = ZN_ARRAY_SIZE(bf16_keys),
	.struct_size = sizeof(struct zn_bf16_config),
	.auto_default = true,
};

/* ---- activation_checkpointing ---------------------------------------------- */

#define AC(...) KEY(struct zn_actckpt_config, __VA_ARGS__)
static const struct zn_key actckpt_keys[] = {
	AC("enabled", NULL, ZN_KEY_BOOL, enabled, "false", 0, 1, NULL, ZINC,
	   "keep only each transformer block's input and recompute the rest during backward "
	   "(bit-identical results, a fraction of the activation memory)"),
	KEYN(struct zn_actckpt_config, "partition_activations", NULL, ZN_KEY_BOOL,
	     partition_activations, "false", 0, 1, NULL, 0,
	     "split checkpointed activations across model-parallel ranks",
	     "it splits checkpoints over model-parallel ranks, and zinc has no model "
	     "parallelism (DeepSpeed does nothing with it without either)"),
	AC("cpu_checkpointing", NULL, ZN_KEY_BOOL, cpu_checkpointing, "false", 0, 1, NULL, 0,
	   "keep the checkpointed activations in host memory; they come back just before "
	   "their block's backward (needs enabled)"),
	KEYN(struct zn_actckpt_config, "contiguous_memory_optimization", NULL, ZN_KEY_BOOL,
	     contiguous_memory_optimization, "false", 0, 1, NULL, 0,
	     "copy checkpoints into one buffer",
	     "zinc's kept block inputs are already one buffer per pass"),
	KEYN(struct zn_actckpt_config, "number_checkpoints", NULL, ZN_KEY_INT, number_checkpoints,
	     "0", 0, 1e9, NULL, 0, "checkpoints per pass, for contiguous_memory_optimization",
	     "zinc keeps one checkpoint per transformer block, always"),
	KEYN(struct zn_actckpt_config, "synchronize_checkpoint_boundary", NULL, ZN_KEY_BOOL,
	     synchronize_checkpoint_boundary, "false", 0, 1, NULL, 0,
	     "synchronize the device at each checkpoint",
	     "a debugging aid of DeepSpeed's; zinc orders its streams by events"),
	AC("profile", NULL, ZN_KEY_BOOL, profile, "false", 0, 1, NULL, 0,
	   "time the checkpointing per step (recompute, kept inputs out and back), the "
	   "device synchronized around each part; shown in the step lines and --json-log"),
};

/* Keeping the block inputs in host memory is a form of checkpointing:
 * said when the file is read, not when the model is made. */
static int actckpt_validate(const void *obj)
{
	const struct zn_actckpt_config *c = obj;
	if (c->cpu_checkpointing && !c->enabled)
		return zn_error(-EINVAL, "activation_checkpointing.cpu_checkpointing needs "
					 "activation_checkpointing.enabled: true (the block inputs it "
					 "keeps in host memory are the checkpoints)");
	return 0;
}

static const struct zn_key_table actckpt_table = {
	.name = "activation_checkpointing",
	.help = "recompute activations during backward instead of keeping them",
	.keys = actckpt_keys,
	.nkeys = ZN_ARRAY_SIZE(actckpt_keys),
	.struct_size = sizeof(struct zn_actckpt_config),
	.validate = actckpt_validate,
};

/* ---- data_types ----------------------------------------------------------- */

static const char *const grad_accum_dtypes[] = { "fp32", "fp16", "bf16", NULL };

#define DT(...) KEY(struct zn_data_types_config, __VA_ARGS__)
static const struct zn_key data_types_keys[] = {
	DT("grad_accum_dtype", NULL, ZN_KEY_ENUM, grad_accum_dtype, "fp32", 0, 0,
	   grad_accum_dtypes, 0,
	   "the dtype gradients are accumulated and kept in on the host until the optimizer "
	   "step (offload_optimizer cpu/nvme): fp32, or the training dtype to halve that "
	   "memory; with gradient_accumulation_steps 1 both give the same results"),
};

static const struct zn_key_table data_types_table = {
	.name = "data_types",
	.help = "dtypes of training buffers",
	.keys = data_types_keys,
	.nkeys = ZN_ARRAY_SIZE(data_types_keys),
	.struct_size = sizeof(struct zn_data_types_config),
};

/* ---- zero_optimization ------------------------------------------------- */

#define LC(...) KEY(struct zn_zero_loco_config, __VA_ARGS__)
static const struct zn_key loco_keys[] = {
	LC("err_beta", NULL, ZN_KEY_DOUBLE, err_beta, "0.8", 0, 1, NULL, 0,
	   "error-feedback decay"),
	LC("reset_T", NULL, ZN_KEY_UINT, reset_T, "1024", 1, 4294967295.0, NULL, 0,
	   "steps between error-buffer resets"),
};

static const struct zn_key_table loco_table = {
	.name = "zeropp_loco_param",
	.help = "ZeRO++ LoCo error feedback for quantized gradients",
	.keys = loco_keys,
	.nkeys = ZN_ARRAY_SIZE(loco_keys),
	.struct_size = sizeof(struct zn_zero_loco_config),
};

/* DeepSpeed's deprecated fields with a new_param_fn, read as their
 * replacement; and offload_param below stage 3, which DeepSpeed warns
 * about and does not use. */
static int zero_resolve(void *obj)
{
	struct zn_zero_config *c = obj;

	if (c->cpu_offload) {
		if (c->offload_optimizer.device != ZN_OFFLOAD_NONE)
			return zn_error(-EINVAL, "zero_optimization.cpu_offload: given with "
						 "offload_optimizer; keep offload_optimizer (DeepSpeed "
						 "refuses both together too)");
		zn_warn("zero_optimization.cpu_offload is deprecated by DeepSpeed; read as "
			"offload_optimizer.device: cpu");
		c->offload_optimizer.device = ZN_OFFLOAD_CPU;
	}
	if (c->cpu_offload_param) {
		if (c->offload_param.device != ZN_OFFLOAD_NONE)
			return zn_error(-EINVAL, "zero_optimization.cpu_offload_param: given with "
						 "offload_param; keep offload_param (DeepSpeed "
						 "refuses both together too)");
		zn_warn("zero_optimization.cpu_offload_param is deprecated by DeepSpeed; read as "
			"offload_param.device: cpu");
		c->offload_param.device = ZN_OFFLOAD_CPU;
	}
	/* A cap of 0 on the resident elements keeps none resident. */
	if (c->model_persistence_threshold == 0)
		c->param_persistence_threshold = 0;
	if (c->offload_param.device != ZN_OFFLOAD_NONE && c->stage != 3) {
		zn_warn("zero_optimization.offload_param: parameter offload is a stage 3 feature "
			"(stage is %u); ignored, as DeepSpeed ignores it", c->stage);
		c->offload_param.device = ZN_OFFLOAD_NONE;
	}
	return 0;
}

static int zero_validate(const void *obj)
{
	const struct zn_zero_config *c = obj;

	if (c->model_persistence_threshold != 0 &&
	    c->model_persistence_threshold != 9223372036854775807ull)
		return zn_error(-EINVAL, "zero_optimization.stage3_model_persistence_threshold: %llu "
					 "is not supported yet (a cap on the elements kept resident); "
					 "give 0 to keep none resident, or remove the key",
				(unsigned long long)c->model_persistence_threshold);

	if (c->offload_optimizer.device != ZN_OFFLOAD_NONE && c->stage == 0)
		return zn_error(-EINVAL, "zero_optimization.offload_optimizer: optimizer offload "
					 "needs stage 1, 2 or 3 (stage is 0)");
	return 0;
}

#define Z(...) KEY(struct zn_zero_config, __VA_ARGS__)
#define ZN_(...) KEYN(struct zn_zero_config, __VA_ARGS__)

/* A section zinc refuses whenever it is given, keeping none of its keys. */
static const struct zn_key_table empty_table = {
	.name = "",
	.help = "refused when given",
	.keys = NULL,
	.nkeys = 0,
	.struct_size = 1,
};
static const struct zn_key zero_keys[] = {
	Z("stage", NULL, ZN_KEY_UINT, stage, "0", 0, 3, NULL, 0,
	  "ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters partitioned"),
	ZN_("contiguous_gradients", NULL, ZN_KEY_BOOL, contiguous_gradients, "true", 0, 1, NULL, 0,
	    "copy gradients into one contiguous buffer as they are produced",
	    "zinc's gradients go to their accumulator as they are produced; there is no "
	    "fragmented buffer to avoid"),
	Z("reduce_scatter", NULL, ZN_KEY_BOOL, reduce_scatter, "true", 0, 1, NULL, UNSUP,
	  "average gradients with reduce-scatter (false: all-reduce)"),
	Z("reduce_bucket_size", NULL, ZN_KEY_SIZE, reduce_bucket_size, "5e8", 0, BIG, NULL,
	  AUTO | ZN_KEY_AUTO_MAX,
	  "elements reduced at a time (0: each tensor alone); auto: hidden size^2"),
	Z("use_multi_rank_bucket_allreduce", NULL, ZN_KEY_BOOL, use_multi_rank_bucket_allreduce,
	  "true", 0, 1, NULL, UNSUP, "reduce buckets of several ranks in one all-reduce"),
	Z("allgather_partitions", NULL, ZN_KEY_BOOL, allgather_partitions, "true", 0, 1, NULL,
	  UNSUP, "all-gather updated partitions (false: broadcasts)"),
	Z("allgather_bucket_size", NULL, ZN_KEY_SIZE, allgather_bucket_size, "5e8", 1, BIG, NULL,
	  0, "elements all-gathered at a time"),
	Z("overlap_comm", NULL, ZN_KEY_BOOL, overlap_comm, "false", 0, 1, NULL, 0,
	  "overlap the gradients' reduction (one rank: their way to the host) with the "
	  "backward pass, on a stream of their own; up to 3 layers' gradients wait on the "
	  "device for their copy"),
	Z("load_from_fp32_weights", NULL, ZN_KEY_BOOL, load_from_fp32_weights, "true", 0, 1, NULL,
	  UNSUP, "restore master weights from the checkpoint's fp32 copy"),
	Z("elastic_checkpoint", NULL, ZN_KEY_BOOL, elastic_checkpoint, "false", 0, 1, NULL, UNSUP,
	  "load checkpoints saved with another world size"),
	SUB(struct zn_zero_config, "offload_param", offload_param, zn_offload_param_key_table, 0,
	    "where ZeRO-3 parameters live between uses"),
	SUB(struct zn_zero_config, "offload_optimizer", offload_optimizer,
	    zn_offload_optimizer_key_table, 0, "where optimizer states live"),
	Z("sub_group_size", NULL, ZN_KEY_SIZE, sub_group_size, "1e9", 0, BIG, NULL, 0,
	  "elements per optimizer sub-group (the unit streamed through offload); 0: "
	  "DeepSpeed's one parameter per sub-group, which zinc makes sub-groups of the "
	  "largest parameter tensor's elements"),
	Z("tile_size", NULL, ZN_KEY_SIZE, tile_size, "67108864", 0, BIG, NULL, ZN_KEY_ZINC_ONLY,
	  "memory-centric tiling (ZeRO-Infinity): a vocabulary tensor (embedding, classifier, "
	  "tied or not) of more elements is computed, fetched and its gradients sent in tiles "
	  "of whole rows of at most this many elements, so no tier holds it whole (other "
	  "offloaded tensors are stored and sent in tiles); 0: never"),
	Z("cpu_offload", NULL, ZN_KEY_BOOL, cpu_offload, "false", 0, 1, NULL, 0,
	  "deprecated by DeepSpeed, still read: true is offload_optimizer.device: cpu"),
	Z("cpu_offload_param", NULL, ZN_KEY_BOOL, cpu_offload_param, "false", 0, 1, NULL, 0,
	  "deprecated by DeepSpeed, still read: true is offload_param.device: cpu"),
	ZN_("cpu_offload_use_pin_memory", NULL, ZN_KEY_BOOL, cpu_offload_use_pin_memory, "false",
	    0, 1, NULL, 0, "deprecated by DeepSpeed: use offload_*.pin_memory",
	    "deprecated; DeepSpeed does not read it either: set offload_param.pin_memory or "
	    "offload_optimizer.pin_memory"),
	Z("stage3_prefetch_bucket_size", "prefetch_bucket_size", ZN_KEY_SIZE,
	  prefetch_bucket_size, "5e7", 0, BIG, NULL, AUTO | ZN_KEY_AUTO_MAX,
	  "elements of parameters fetched ahead of use (0: none); auto: 0.9 n_embd^2"),
	Z("stage3_param_persistence_threshold", "param_persistence_threshold", ZN_KEY_SIZE,
	  param_persistence_threshold, "1e5", 0, BIG, NULL, AUTO | ZN_KEY_AUTO_MAX,
	  "parameters with fewer elements stay resident on the device, not offloaded (0: "
	  "none); auto: 10 n_embd"),
	Z("stage3_model_persistence_threshold", "model_persistence_threshold", ZN_KEY_SIZE,
	  model_persistence_threshold, "9223372036854775807", 0, 9223372036854775807.0, NULL, 0,
	  "cap on the elements kept resident by the persistence threshold: 0 keeps none "
	  "(as stage3_param_persistence_threshold 0); other caps are not supported yet"),
	Z("stage3_max_live_parameters", "max_live_parameters", ZN_KEY_SIZE, max_live_parameters,
	  "1e9", 0, BIG, NULL, 0, "elements of gathered parameters resident at once"),
	Z("stage3_max_reuse_distance", "max_reuse_distance", ZN_KEY_SIZE, max_reuse_distance,
	  "1e9", 0, BIG, NULL, 0,
	  "a parameter reused within this many elements of fetches is kept, not released"),
	KEYD(struct zn_zero_config, "stage3_gather_16bit_weights_on_model_save",
	     "gather_16bit_weights_on_model_save", "stage3_gather_fp16_weights_on_model_save",
	     ZN_KEY_BOOL, gather_16bit_weights_on_model_save, "false", 0, 1, NULL, AUTO,
	     "gather the 16-bit weights into one file when the model is saved",
	     "a one-rank checkpoint always holds the whole model (a Llama's in the training "
	     "dtype), and several ranks' parts are joined afterwards by zinc consolidate; "
	     "the run does not gather them at save time"),
	Z("stage3_module_granularity_threshold", "module_granularity_threshold", ZN_KEY_SIZE,
	  module_granularity_threshold, "0", 0, BIG, NULL, UNSUP,
	  "fetch modules below this size as one unit"),
	Z("stage3_use_all_reduce_for_fetch_params", "use_all_reduce_for_fetch_params",
	  ZN_KEY_BOOL, use_all_reduce_for_fetch_params, "false", 0, 1, NULL, UNSUP,
	  "fetch parameters with all-reduce instead of all-gather"),
	ZN_("ignore_unused_parameters", NULL, ZN_KEY_BOOL, ignore_unused_parameters, "true", 0, 1,
	    NULL, 0, "tolerate parameters that get no gradient",
	    "every parameter of zinc's models gets a gradient each step"),
	Z("legacy_stage1", NULL, ZN_KEY_BOOL, legacy_stage1, "false", 0, 1, NULL, UNSUP,
	  "DeepSpeed's old stage 1 implementation"),
	ZN_("round_robin_gradients", NULL, ZN_KEY_BOOL, round_robin_gradients, "false", 0, 1,
	    NULL, 0, "stage 1/2 with offload: spread the ranks' gradient copies to the host "
	    "round-robin",
	    "an ordering of DeepSpeed's device-to-host copies that does not change results; "
	    "each zinc rank copies its own part as it is produced"),
	Z("zero_hpz_partition_size", NULL, ZN_KEY_UINT, zero_hpz_partition_size, "1", 1,
	  4294967295.0, NULL, UNSUP, "ZeRO++ hierarchical partitioning: ranks per secondary group"),
	Z("zero_quantized_weights", NULL, ZN_KEY_BOOL, zero_quantized_weights, "false", 0, 1, NULL,
	  UNSUP, "ZeRO++ quantized weight all-gather"),
	Z("zero_quantized_nontrainable_weights", NULL, ZN_KEY_BOOL,
	  zero_quantized_nontrainable_weights, "false", 0, 1, NULL, UNSUP,
	  "ZeRO++ quantized storage of frozen weights"),
	Z("zero_quantized_gradients", NULL, ZN_KEY_BOOL, zero_quantized_gradients, "false", 0, 1,
	  NULL, UNSUP, "ZeRO++ quantized gradient reduction"),
	SUB(struct zn_zero_config, "zeropp_loco_param", zeropp_loco_param, loco_table, UNSUP,
	    "ZeRO++ LoCo error feedback"),
	Z("mics_shard_size", NULL, ZN_KEY_INT, mics_shard_size, "-1", -1, BIG, NULL, UNSUP,
	  "MiCS: ranks per shard group; -1 off"),
	Z("mics_hierarchical_params_gather", NULL, ZN_KEY_BOOL, mics_hierarchical_params_gather,
	  "false", 0, 1, NULL, UNSUP, "MiCS hierarchical all-gather"),
	Z("memory_efficient_linear", NULL, ZN_KEY_BOOL, memory_efficient_linear, "true", 0, 1,
	  NULL, UNSUP, "DeepSpeed's memory-efficient torch linear (zinc's is always)"),
	Z("pipeline_loading_checkpoint", NULL, ZN_KEY_BOOL, pipeline_loading_checkpoint, "false",
	  0, 1, NULL, UNSUP, "load a checkpoint layer by layer into partitions"),
	Z("override_module_apply", NULL, ZN_KEY_BOOL, override_module_apply, "true", 0, 1, NULL,
	  UNSUP, "a PyTorch hook; there is no module.apply in zinc"),
	ZN_("log_trace_cache_warnings", NULL, ZN_KEY_BOOL, log_trace_cache_warnings, "false", 0,
	    1, NULL, 0, "log when the recorded fetch order is invalidated",
	    "zinc's fetch order comes from the model's layer order, which does not change"),
	Z("stage3_allgather_sequential", "allgather_sequential", ZN_KEY_BOOL,
	  allgather_sequential, "false", 0, 1, NULL, UNSUP,
	  "all-gather stage-3 parameters one after another"),
	ZN_("enable_sanity_checks", NULL, ZN_KEY_BOOL, enable_sanity_checks, "false", 0, 1, NULL,
	    0, "DeepSpeed's internal consistency checks",
	    "DeepSpeed's own debugging checks of its partitioning"),
	ZN_("save_muon_momentum_buffer_in_memory", NULL, ZN_KEY_BOOL,
	    save_muon_momentum_buffer_in_memory, "false", 0, 1, NULL, 0,
	    "Muon with NVMe offload: keep its momentum in memory",
	    "for the Muon optimizer, which zinc does not have"),
	SUB(struct zn_zero_config, "zenflow", zenflow, empty_table, UNSUP,
	    "ZenFlow: stall-free offloading with asynchronous updates"),
	SUB(struct zn_zero_config, "leaf_module", leaf_module, empty_table, UNSUP,
	    "modules ZeRO-3 fetches as one unit"),
};

static const struct zn_key_table zero_table = {
	.name = "zero_optimization",
	.help = "ZeRO partitioning and offload (every DeepSpeed key; those not implemented "
		"yet must keep their default)",
	.keys = zero_keys,
	.nkeys = ZN_ARRAY_SIZE(zero_keys),
	.struct_size = sizeof(struct zn_zero_config),
	.validate = zero_validate,
	.resolve = zero_resolve,
	.auto_default = true,
};

/* ---- zinc's own: model, data, checkpoint, device ----------------------- */

static const char *const model_types[] = { "gpt2", "llama", NULL };

static int model_validate(const void *obj)
{
	const struct zn_model_config *c = obj;

	if (c->n_embd % c->n_head)
		return zn_error(-EINVAL, "model.n_embd: %u is not a multiple of n_head %u",
				c->n_embd, c->n_head);
	return 0;
}

#define M(...) KEY(struct zn_model_config, __VA_ARGS__)
static const struct zn_key model_keys[] = {
	M("type", NULL, ZN_KEY_ENUM, type, "gpt2", 0, 0, model_types, ZINC,
	  "architecture: gpt2 (pre-LN decoder, learned positions, tied embeddings), or llama "
	  "(the Llama family -- Llama 2/3, Mistral, Qwen2 -- shaped by a Hugging Face "
	  "config.json: model.from's folder, or model.config; n_layer, n_head, n_embd and "
	  "vocab_size are then the file's)"),
	M("n_layer", NULL, ZN_KEY_UINT, n_layer, "12", 1, 1024, NULL, ZINC, "transformer blocks"),
	M("n_head", NULL, ZN_KEY_UINT, n_head, "12", 1, 1024, NULL, ZINC, "attention heads"),
	M("n_embd", NULL, ZN_KEY_UINT, n_embd, "768", 1, 1 << 20, NULL, ZINC,
	  "channels; a multiple of n_head"),
	M("vocab_size", NULL, ZN_KEY_UINT, vocab_size, "50257", 1, 1 << 24, NULL, ZINC,
	  "tokens in the vocabulary (256 for byte-level data)"),
	M("seq_len", NULL, ZN_KEY_UINT, seq_len, "1024", 1, 1 << 20, NULL, ZINC,
	  "tokens per sample, and positions the model knows"),
	M("from", NULL, ZN_KEY_STRING, from, "", 0, 0, NULL, ZINC,
	  "start from these weights: gpt2 -- model.safetensors or an llm.c checkpoint; llama -- "
	  "a Hugging Face model folder (config.json, safetensors shards and their index); "
	  "empty: random initialisation"),
	M("config", NULL, ZN_KEY_STRING, config, "", 0, 0, NULL, ZINC,
	  "llama from scratch: the Hugging Face config.json giving its shape (random "
	  "initialisation as transformers does it)"),
};

static const struct zn_key_table model_table = {
	.name = "model",
	.help = "the model to train",
	.keys = model_keys,
	.nkeys = ZN_ARRAY_SIZE(model_keys),
	.struct_size = sizeof(struct zn_model_config),
	.validate = model_validate,
};

#define D(...) KEY(struct zn_data_config, __VA_ARGS__)
static const struct zn_key data_keys[] = {
	D("train", NULL, ZN_KEY_STRING, train, "", 0, 0, NULL, ZINC,
	  "training token shards (llm.c format): a file or a glob"),
	D("val", NULL, ZN_KEY_STRING, val, "", 0, 0, NULL, ZINC,
	  "validation shards; empty: no validation"),
	D("seed", NULL, ZN_KEY_UINT, seed, "1337", 0, BIG, NULL, ZINC,
	  "seed of the shuffling and of the initialisation"),
	D("shuffle", NULL, ZN_KEY_BOOL, shuffle, "true", 0, 1, NULL, ZINC,
	  "visit samples in a seeded random order"),
	D("val_every", NULL, ZN_KEY_UINT, val_every, "0", 0, BIG, NULL, ZINC,
	  "optimizer steps between validation losses; 0: only at the end"),
	D("val_steps", NULL, ZN_KEY_UINT, val_steps, "20", 1, 1 << 20, NULL, ZINC,
	  "batches per validation"),
};

static const struct zn_key_table data_table = {
	.name = "data",
	.help = "training and validation data",
	.keys = data_keys,
	.nkeys = ZN_ARRAY_SIZE(data_keys),
	.struct_size = sizeof(struct zn_data_config),
};

#define PW(...) KEY(struct zn_ckpt_parallel_write, __VA_ARGS__)
static const struct zn_key parallel_write_keys[] = {
	PW("pipeline_stage", NULL, ZN_KEY_BOOL, pipeline_stage, "false", 0, 1, NULL, 0,
	   "each pipeline stage writes its own part"),
};

static const struct zn_key_table parallel_write_table = {
	.name = "parallel_write",
	.help = "DeepSpeed's parallel checkpoint writing",
	.keys = parallel_write_keys,
	.nkeys = ZN_ARRAY_SIZE(parallel_write_keys),
	.struct_size = sizeof(struct zn_ckpt_parallel_write),
};

static const char *const tag_validation[] = { "Ignore", "Warn", "Fail", NULL };

#define CK(...) KEY(struct zn_checkpoint_config, __VA_ARGS__)
static const struct zn_key checkpoint_keys[] = {
	CK("dir", NULL, ZN_KEY_STRING, dir, "", 0, 0, NULL, ZINC,
	   "directory checkpoints are written to, locked while a run uses it (a second run "
	   "there refuses); empty: none"),
	CK("every", NULL, ZN_KEY_UINT, every, "0", 0, BIG, NULL, ZINC,
	   "optimizer steps between checkpoints; 0: only at the end"),
	CK("keep", NULL, ZN_KEY_UINT, keep, "0", 0, 1 << 20, NULL, ZINC,
	   "newest complete checkpoints kept (older ones go once a save is complete); 0: all"),
	CK("resume", NULL, ZN_KEY_BOOL, resume, "false", 0, 1, NULL, ZINC,
	   "continue from the newest complete checkpoint in dir whose checksums verify (a "
	   "damaged one is named and the one before used; none there: from scratch, said)"),
	KEYN(struct zn_checkpoint_config, "tag_validation", NULL, ZN_KEY_ENUM, tag_validation,
	     "Warn", 0, 0, tag_validation, 0,
	     "DeepSpeed's check that all ranks save the same tag",
	     "zinc's ranks save each step's checkpoint together, named by the step: there is "
	     "no tag to compare"),
	CK("load_universal", NULL, ZN_KEY_BOOL, load_universal, "false", 0, 1, NULL, UNSUP,
	   "load a DeepSpeed universal checkpoint"),
	CK("use_node_local_storage", NULL, ZN_KEY_BOOL, use_node_local_storage, "false", 0, 1,
	   NULL, UNSUP, "each node saves to its own local storage"),
	SUB(struct zn_checkpoint_config, "parallel_write", parallel_write, parallel_write_table,
	    UNSUP, "parallel checkpoint writing"),
};

static const struct zn_key_table checkpoint_table = {
	.name = "checkpoint",
	.help = "checkpoints: where, how often (zinc's keys) and DeepSpeed's checkpoint keys",
	.keys = checkpoint_keys,
	.nkeys = ZN_ARRAY_SIZE(checkpoint_keys),
	.struct_size = sizeof(struct zn_checkpoint_config),
};

static const char *const device_types[] = { "cpu", "cuda", NULL };

#define DV(...) KEY(struct zn_device_config, __VA_ARGS__)
static const struct zn_key device_keys[] = {
	DV("type", NULL, ZN_KEY_ENUM, type, "cpu", 0, 0, device_types, ZINC,
	   "compute backend: cpu or cuda"),
	DV("index", NULL, ZN_KEY_UINT, index, "0", 0, 1024, NULL, ZINC, "cuda: the GPU ordinal"),
	DV("memory_limit", NULL, ZN_KEY_SIZE, memory_limit, "0", 0, BIG, NULL, ZINC,
	   "bytes of device memory the engine may allocate (simulates a small GPU); 0: no "
	   "limit"),
};

static const struct zn_key_table device_table = {
	.name = "device",
	.help = "the compute device",
	.keys = device_keys,
	.nkeys = ZN_ARRAY_SIZE(device_keys),
	.struct_size = sizeof(struct zn_device_config),
};

/* ---- the top level ----------------------------------------------------- */

static int root_validate(const void *obj)
{
	const struct zn_config *c = obj;
	struct zn_batch b;

	if (c->fp16.enabled && c->bf16.enabled)
		return zn_error(-EINVAL, "bf16.enabled: fp16 and bf16 are both enabled; "
					 "enable one");
	/* zinc trains on one rank: the rule is checked for a world of 1. */
	return zn_config_resolve_batch(c, 1, &b);
}

#define R(...) KEY(struct zn_config, __VA_ARGS__)
#define RS(n, f, t, fl) SUB(struct zn_config, n, f, t, fl, NULL)
static const struct zn_key root_keys[] = {
	R("train_batch_size", NULL, ZN_KEY_UINT, train_batch_size, "auto", 1, 4294967295.0, NULL,
	  AUTO, "samples per optimizer step, all ranks together; auto: from the other two"),
	R("train_micro_batch_size_per_gpu", NULL, ZN_KEY_UINT, train_micro_batch_size_per_gpu,
	  "auto", 1, 4294967295.0, NULL, AUTO,
	  "samples per forward/backward pass on one rank; auto: from the other two"),
	R("gradient_accumulation_steps", NULL, ZN_KEY_UINT, gradient_accumulation_steps, "auto",
	  1, 4294967295.0, NULL, AUTO,
	  "micro-batches per optimizer step; auto: from the other two"),
	R("gradient_clipping", NULL, ZN_KEY_DOUBLE, gradient_clipping, "0", 0, 1e308, NULL, AUTO,
	  "clip the global gradient norm to this; 0: no clipping"),
	R("steps_per_print", NULL, ZN_KEY_UINT, steps_per_print, "10", 1, BIG, NULL, 0,
	  "optimizer steps between progress lines"),
	RS("optimizer", optimizer, optimizer_table, 0),
	RS("scheduler", scheduler, scheduler_table, 0),
	RS("fp16", fp16, fp16_table, 0),
	/* DeepSpeed still reads the section's older name, bfloat16. */
	{ .name = "bf16", .alias = "bfloat16", .type = ZN_KEY_SECTION,
	  .offset = offsetof(struct zn_config, bf16), .size = sizeof(struct zn_bf16_config),
	  .sub = &bf16_table },
	RS("zero_optimization", zero_optimization, zero_table, 0),
	RS("activation_checkpointing", activation_checkpointing, actckpt_table, 0),
	RS("data_types", data_types, data_types_table, 0),
	RS("aio", aio, zn_aio_key_table, 0),
	RS("model", model, model_table, 0),
	RS("data", data, data_table, 0),
	RS("checkpoint", checkpoint, checkpoint_table, 0),
	RS("device", device, device_table, 0),
};

const struct zn_key_table zn_config_key_table = {
	.name = "",
	.help = "training keys at the top level of the file",
	.keys = root_keys,
	.nkeys = ZN_ARRAY_SIZE(root_keys),
	.struct_size = sizeof(struct zn_config),
	.validate = root_validate,
};
