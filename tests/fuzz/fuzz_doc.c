/* The JSON/YAML reader (engine/io/doc.c) behind config files, Hugging Face
 * config.json and index files, safetensors headers and checkpoint
 * metadata: the input is parsed twice (no flags; one document with unique
 * keys, as config files are), then every node reachable from the root is
 * read the ways the callers read them. */
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "io/doc.h"

/* Nodes visited per parse: aliases share nodes, so a walk of the tree can
 * cost exponential time in the text's size ("billion laughs"); the callers
 * walk known keys only, never the whole graph. */
#define MAX_VISITS 20000

struct walk {
	unsigned visits;
};

static void visit(struct walk *w, const struct zn_doc_node *n, unsigned depth)
{
	char buf[128];
	long long i;
	double x;
	bool b;

	if (!n || ++w->visits > MAX_VISITS || depth > 200)
		return;
	zn_doc_describe(n, buf, sizeof(buf));
	zn_doc_where(n, buf, sizeof(buf));
	zn_doc_kind_name(n);
	(void)zn_doc_is_null(n);
	(void)zn_doc_string(n);
	(void)zn_doc_int(n, &i);
	(void)zn_doc_number(n, &x);
	(void)zn_doc_bool(n, &b);
	if (n->kind == ZN_DOC_LIST) {
		for (size_t k = 0; k < n->n; k++)
			visit(w, n->items[k], depth + 1);
	} else if (n->kind == ZN_DOC_MAP) {
		for (size_t k = 0; k < n->n; k++) {
			const struct zn_doc_node *key = n->pairs[k].key;
			if (key->kind == ZN_DOC_SCALAR)
				(void)zn_doc_get(n, key->text);
			visit(w, key, depth + 1);
			visit(w, n->pairs[k].value, depth + 1);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned flags[] = { 0, ZN_DOC_ONE | ZN_DOC_UNIQUE_KEYS, ZN_DOC_NO_LINES };

	for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
		struct zn_doc *d = zn_doc_create();
		struct zn_doc_node *root;
		if (!d)
			return 0;
		if (zn_doc_parse(d, (const char *)data, size, "fuzz.yaml", flags[f], &root) == 0) {
			struct walk w = { 0 };
			visit(&w, root, 0);
		} else {
			(void)zn_doc_last_error(d);
		}
		zn_doc_destroy(d);
	}
	return 0;
}
