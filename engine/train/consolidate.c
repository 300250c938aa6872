/* Joining a checkpoint's parameters into the files a model leaves as
 * (zn_checkpoint_consolidate). */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/checkpoint.h"

int zn_checkpoint_consolidate(const char *path, const char *out)
{
	char dir[4096];
	char latest[4200];
	snprintf(latest, sizeof(latest), "%s/latest", path);
	if (access(latest, F_OK) == 0) {
		int lrc = zn_ckpt_latest(path, dir, sizeof(dir));
		if (lrc)
			return lrc;
	} else {
		snprintf(dir, sizeof(dir), "%s", path);
	}
	struct zn_trainer *t = calloc(1, sizeof(*t));
	if (!t)
		return zn_error(-ENOMEM, "out of memory");
	t->world = 1;
	struct zn_st_tensor *mt = NULL;
	struct zn_param_desc *descs = NULL;
	char (*names)[ZN_PARAM_NAME_MAX + 16] = NULL;
	float *a[4] = { NULL, NULL, NULL, NULL };
	struct zn_st_writer *w = NULL;
	struct zn_hf_writer *hw = NULL;
	char target[4200];
	int rc = tr_open_optimizer_files(t, dir);
	if (rc)
		goto out;
	/* The model, from the metadata every optimizer file carries. */
	struct zn_st_file *f = t->src.ckpt ? t->src.ckpt : t->src.shards[0];
	const char *ms = zn_st_metadata(f, "zinc.model");
	if (!ms || zn_arch_parse(ms, &t->arch)) {
		rc = zn_error(-EINVAL, "checkpoint '%s': its metadata names no model this zinc "
				       "knows (zinc.model = %s)", dir, ms ? ms : "absent");
		goto out;
	}
	t->nlayers = zn_arch_layers(&t->arch);
	t->t = calloc(MAX_TENSORS, sizeof(*t->t));
	if (!t->t) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned l = 0; l < t->nlayers; l++) {
		struct zn_param_desc d[ZN_ARCH_LAYER_TENSORS_MAX];
		unsigned n = zn_arch_layer_params(&t->arch, l, d);
		for (unsigned i = 0; i < n; i++) {
			t->t[t->nt].d = d[i];
			t->largest = ZN_MAX(t->largest, d[i].numel);
			t->nt++;
		}
	}
	mt = calloc(t->nt, sizeof(*mt));
	names = calloc(t->nt, sizeof(*names));
	descs = tr_all_descs(t);
	for (int k = 0; k < 4; k++)
		a[k] = malloc(t->largest * 4);
	if (!mt || !names || !descs || !a[0] || !a[1] || !a[2] || !a[3]) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < t->nt && !t->arch.llama; i++) {
		snprintf(names[i], sizeof(names[0]), "transformer.%s", t->t[i].d.name);
		mt[i] = (struct zn_st_tensor){ .name = names[i], .dtype = ZN_ST_F32,
					       .ndim = t->t[i].d.ndim };
		tr_hf_shape(&t->t[i], &t->arch.g, mt[i].shape, &mt[i].bytes);
	}
	/* Every master (or part of one) present with its shape, before writing. */
	if (!rc)
		rc = tr_check_states(t, dir, 1);
	/* GPT-2: one model.safetensors (fp32); a Llama: a Hugging Face folder
	 * (fp32 masters, sharded, config.json).  By default into the step's
	 * own directory. */
	if (t->arch.llama)
		snprintf(target, sizeof(target), "%s", out ? out : dir);
	else if (out)
		snprintf(target, sizeof(target), "%s", out);
	else
		snprintf(target, sizeof(target), "%s/model.safetensors", dir);
	struct zn_st_meta meta[1] = { { "format", "pt" } };
	if (!rc && t->arch.llama) {
		if (mkdir(target, 0777) != 0 && errno != EEXIST)
			rc = zn_error(-errno, "cannot make directory '%s': %s", target,
				      strerror(errno));
		if (!rc)
			rc = zn_hf_writer_begin(target, &t->arch.l, descs, t->nt, "float32",
						ZN_HF_DEFAULT_SHARD_BYTES, &hw);
	} else if (!rc) {
		rc = zn_st_writer_begin(target, mt, t->nt, meta, 1, &w);
	}
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		const struct tstate *s = &t->t[i];
		if ((rc = tr_tensor_from_sources(t, i, a[0], a[1], a[2])))
			break;
		const float *m = a[0];
		if (s->d.hf_transposed) {
			tr_transpose(a[0], a[3], s->d.shape[0], s->d.shape[1]);
			m = a[3];
		}
		rc = hw ? zn_hf_writer_put(hw, m) : zn_st_writer_put(w, m, mt[i].bytes);
	}
	if (!rc) {
		rc = hw ? zn_hf_writer_end(hw) : zn_st_writer_end(w);
		w = NULL;
		hw = NULL;
	}
out:
	zn_st_writer_abort(w);
	zn_hf_writer_abort(hw);
	tr_close_sources(t);
	for (int k = 0; k < 4; k++)
		free(a[k]);
	free(descs);
	free(names);
	free(mt);
	free(t->t);
	free(t);
	return rc;
}
