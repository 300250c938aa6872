/* zinc consolidate CHECKPOINT — one model.safetensors from a checkpoint,
 * whatever number of ranks saved it.
 *
 * With ZeRO stage >= 1 on several ranks every rank saves only its parts of
 * the states (optimizer-RRRRR-of-WWWWW.safetensors); this joins the master
 * weights into the Hugging Face files a model leaves as (GPT-2's
 * model.safetensors, a Llama's folder), for inference, fine-tuning
 * elsewhere (`model.from`), or transformers.  (zinc
 * itself resumes from the parts on any number of ranks: no need to
 * consolidate for that.)  DeepSpeed users know it as zero_to_fp32.py.
 *
 * The checkpoint is verified against its manifest first: a damaged file
 * is named (and the tensor in it), and under a checkpoint directory the
 * newest complete checkpoint that verifies is taken, with a warning.
 *
 * Exit status: 0 written, 2 bad input (the message names the file).
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "options.h"
#include "util.h"

#include "zinc/checkpoint.h"
#include "zinc/train.h"

struct consolidate_args {
	const char *out;
};

static const struct opt options[] = {
	OPT_STR("out", "PATH", "the checkpoint's step directory",
		"where to write the model: GPT-2's model.safetensors file, or the directory of "
		"a Llama's Hugging Face folder", struct consolidate_args, out),
};

int cmd_consolidate(int argc, char **argv)
{
	struct consolidate_args a = { 0 };
	int rc = opts_parse("zinc consolidate", options, ARRAY_SIZE(options), argc, argv, &a,
			    "CHECKPOINT [--out FILE]   (CHECKPOINT: checkpoint.dir, or one "
			    "step's directory)");
	if (rc == -2)
		return 0;
	if (rc < 0)
		return 2;
	if (rc != argc - 1) {
		fprintf(stderr, "zinc consolidate: give exactly one checkpoint directory; see "
				"--help\n");
		return 2;
	}
	const char *ck = argv[rc];
	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	char wrote[4400];
	if (zn_checkpoint_consolidate_into(ck, a.out, wrote, sizeof(wrote)) != 0) {
		fprintf(stderr, "zinc consolidate: %s\n", zn_last_error());
		return 2;
	}
	printf("zinc consolidate: wrote %s\n", wrote);
	return 0;
}
