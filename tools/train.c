/* zinc train CONFIG — train the model a config describes.
 *
 * One line per steps_per_print steps (step, loss, lr, grad norm, tokens/s,
 * step time, memory), validation every data.val_every steps, checkpoints
 * every checkpoint.every steps and at the end; --json-log writes one JSON
 * object per step.  Ctrl-C finishes the current step, saves a checkpoint
 * (when checkpoint.dir is set) and exits with status 130.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "json.h"
#include "options.h"
#include "util.h"
#include "zinc/configfile.h"
#include "zinc/train.h"

struct train_args {
	uint64_t max_steps;
	const char *json_log;
};

static const struct opt options[] = {
	OPT_NUM("max-steps", "N", "scheduler.params.total_num_steps",
		"optimizer steps to run (counting those of a resumed checkpoint)",
		struct train_args, max_steps, 1, 1ull << 40),
	OPT_STR("json-log", "FILE", NULL, "also write one JSON object per step to FILE",
		struct train_args, json_log),
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void log_json(FILE *f, const struct zn_step_info *s, double val)
{
	struct json j;
	json_init(&j, f);
	json_begin_object(&j);
	json_key(&j, "step");
	json_uint(&j, s->step);
	json_key(&j, "loss");
	json_double(&j, s->loss);
	json_key(&j, "lr");
	json_double(&j, s->lr);
	json_key(&j, "grad_norm");
	json_double(&j, s->grad_norm);
	json_key(&j, "tokens_per_s");
	json_double(&j, (double)s->tokens / s->step_s);
	json_key(&j, "step_s");
	json_double(&j, s->step_s);
	json_key(&j, "device_bytes");
	json_uint(&j, s->device_bytes);
	json_key(&j, "host_bytes");
	json_uint(&j, s->host_bytes);
	if (val >= 0) {
		json_key(&j, "val_loss");
		json_double(&j, val);
	}
	json_end_object(&j);
	fflush(f);
}

int cmd_train(int argc, char **argv)
{
	struct train_args a = { 0 };
	struct zn_config cfg;
	char sz[32], sz2[32];
	int rc = opts_parse("zinc train", options, ARRAY_SIZE(options), argc, argv, &a,
			    "CONFIG [--max-steps N] [--json-log FILE]");
	if (rc == -2)
		return 0;
	if (rc < 0)
		return 2;
	if (rc != argc - 1) {
		fprintf(stderr, "zinc train: give exactly one config file; see --help\n");
		return 2;
	}
	const char *path = argv[rc];
	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	if (zn_config_load_file(path, &cfg) != 0) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		return 2;
	}
	uint64_t max_steps = a.max_steps ? a.max_steps : cfg.scheduler.params.total_num_steps;
	if (!max_steps) {
		fprintf(stderr, "zinc train: how many steps? give --max-steps N or "
				"scheduler.params.total_num_steps\n");
		return 2;
	}
	FILE *jl = NULL;
	if (a.json_log && !(jl = fopen(a.json_log, "we"))) {
		fprintf(stderr, "zinc train: cannot write '%s': %s\n", a.json_log, strerror(errno));
		return 2;
	}
	struct zn_trainer *t = zn_trainer_create(&cfg, max_steps);
	if (!t) {
		fprintf(stderr, "zinc train: %s\n", zn_last_error());
		if (jl)
			fclose(jl);
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	printf("zinc train: %s: GPT-2 %u layers, %u heads, %u channels, vocab %u, %" PRIu64
	       " parameters; %u x %u tokens x %u accumulation per step; %s\n",
	       path, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.vocab_size,
	       zn_trainer_num_params(t), cfg.batch.micro_batch, cfg.model.seq_len,
	       cfg.batch.grad_accum,
	       zn_trainer_steps_done(t) ? "resumed from a checkpoint" : "from scratch");
	fflush(stdout);

	const uint64_t print_every = cfg.steps_per_print ? cfg.steps_per_print : 1;
	const bool tty = isatty(STDERR_FILENO);
	double t_start = tool_now_s();
	uint64_t first = zn_trainer_steps_done(t);
	int status = 0;
	while (zn_trainer_steps_done(t) < max_steps && !interrupted) {
		struct zn_step_info s;
		if (zn_trainer_step(t, &s) != 0) {
			fprintf(stderr, "%szinc train: %s\n", tty ? "\r\033[K" : "", zn_last_error());
			status = 1;
			break;
		}
		double val = -1;
		if (cfg.data.val[0] && cfg.data.val_every && s.step % cfg.data.val_every == 0 &&
		    zn_trainer_eval(t, &val) != 0) {
			fprintf(stderr, "zinc train: validation: %s\n", zn_last_error());
			status = 1;
			break;
		}
		if (jl)
			log_json(jl, &s, val);
		double done = (double)(s.step - first), left = (double)(max_steps - s.step);
		double eta = done > 0 ? (tool_now_s() - t_start) / done * left : 0;
		if (s.step % print_every == 0 || s.step == max_steps || val >= 0) {
			if (tty)
				fprintf(stderr, "\r\033[K");
			printf("step %6" PRIu64 "/%" PRIu64 " | loss %.4f | lr %.2e | norm %.3f | "
			       "%.0f tok/s | %.3f s | device %s (peak %s)%s",
			       s.step, max_steps, s.loss, s.lr, s.grad_norm,
			       (double)s.tokens / s.step_s, s.step_s,
			       zn_format_size(s.device_bytes, sz, sizeof(sz)),
			       zn_format_size(s.device_peak, sz2, sizeof(sz2)),
			       val >= 0 ? "" : "\n");
			if (val >= 0)
				printf(" | val loss %.4f\n", val);
			fflush(stdout);
		} else if (tty) {
			fprintf(stderr, "\r\033[Kstep %" PRIu64 "/%" PRIu64 " loss %.4f, ETA %.0f s",
				s.step, max_steps, s.loss, eta);
		}
		if (cfg.checkpoint.dir[0] && cfg.checkpoint.every &&
		    s.step % cfg.checkpoint.every == 0 && zn_trainer_save(t) != 0) {
			fprintf(stderr, "zinc train: %s\n", zn_last_error());
			status = 1;
			break;
		}
	}
	if (tty)
		fprintf(stderr, "\r\033[K");
	if (status == 0 && cfg.checkpoint.dir[0]) {
		if (zn_trainer_save(t) != 0) {
			fprintf(stderr, "zinc train: %s\n", zn_last_error());
			status = 1;
		} else {
			printf("checkpoint: step %" PRIu64 " saved in %s\n", zn_trainer_steps_done(t),
			       cfg.checkpoint.dir);
		}
	}
	if (interrupted && status == 0) {
		fprintf(stderr, "zinc train: interrupted at step %" PRIu64 "%s\n",
			zn_trainer_steps_done(t), cfg.checkpoint.dir[0] ? "; checkpoint saved" : "");
		status = 130;
	}
	if (jl)
		fclose(jl);
	zn_trainer_destroy(t);
	return status;
}
