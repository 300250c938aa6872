/* JSON and YAML documents, read whole into a tree (engine/io/doc.c): the one
 * reader behind config files (engine/config), Hugging Face config.json and
 * index files (engine/io/hf_*.c) and safetensors headers.
 *
 * libyaml parses the text (JSON is YAML's flow syntax, so one parser serves
 * all three; zinc has no JSON library) and the nodes are copied into a tree
 * owned by a struct zn_doc, each remembering where it started, so that a
 * message can point at the value at fault: zn_doc_fail words it
 * "NAME:LINE:COLUMN: ..." (1-based, as editors and compilers count).
 * Several texts may be parsed into one doc (a config file and the values of
 * its --set overrides): nodes of any of them can be linked together, and
 * each node keeps the name of the text it came from.
 *
 * JSON's types are told apart by the scalar's style: a JSON string is a
 * quoted scalar; a number, true, false or null is a plain one.  An alias
 * (YAML's *name) is the node its anchor named, shared, not copied.
 */
#ifndef ZN_IO_DOC_H
#define ZN_IO_DOC_H

#include <stdbool.h>
#include <stddef.h>

#include "zn_common.h"

enum zn_doc_kind { ZN_DOC_SCALAR, ZN_DOC_LIST, ZN_DOC_MAP };

struct zn_doc_node {
	enum zn_doc_kind kind;
	bool plain;                   /* SCALAR written without quotes */
	const char *text;             /* SCALAR: NUL-terminated */
	size_t len;                   /* SCALAR: bytes; an escaped "\0" inside makes
				       * strlen(text) shorter */
	size_t n;                     /* LIST: items; MAP: pairs */
	struct zn_doc_node **items;   /* LIST */
	struct zn_doc_pair *pairs;    /* MAP, in the text's order */
	size_t line, column;          /* 1-based, where the node starts */
	const struct zn_doc_src *src; /* the text it came from */
};

struct zn_doc_pair {
	struct zn_doc_node *key, *value;
};

/* What a node's position is relative to. */
struct zn_doc_src {
	const char *name; /* a file name; or the text itself (a --set override) */
	bool lines;       /* false: LINE:COLUMN mean nothing to the reader */
};

enum zn_doc_flags {
	ZN_DOC_ONE = 1u << 0,         /* refuse a second document ("---") */
	ZN_DOC_UNIQUE_KEYS = 1u << 1, /* refuse a key given twice in one mapping */
	ZN_DOC_NO_LINES = 1u << 2,    /* the text is not a file: messages name it alone */
};

/* A syntax error of the last zn_doc_parse, for callers that word their own
 * message: its position (1-based line and column, 0-based byte offset) and
 * libyaml's description. */
struct zn_doc_error {
	size_t line, column, offset;
	char problem[160];
};

struct zn_doc;

struct zn_doc *zn_doc_create(void); /* NULL: out of memory */
void zn_doc_destroy(struct zn_doc *d);

/* Parse `len` bytes of `text` into d.  *root is the document's root node;
 * an empty text (or one of comments alone) is a plain empty scalar, YAML's
 * null.  `name` is copied.  0; -ENOMEM; -EINVAL for a syntax error ("NAME:
 * LINE:COLUMN: syntax error: ...", details in zn_doc_last_error) or what a
 * flag refuses ("NAME:LINE:COLUMN: duplicate key 'k' (first given at line
 * L); remove one"). */
int zn_doc_parse(struct zn_doc *d, const char *text, size_t len, const char *name,
		 unsigned flags, struct zn_doc_node **root);
const struct zn_doc_error *zn_doc_last_error(const struct zn_doc *d);

/* Read the file at `path` (at most max_bytes) into a malloc'd buffer.  0 or
 * -errno: -EISDIR for a directory, -EFBIG past max_bytes, both naming
 * `what` the file should be ("a Hugging Face config.json"). */
int zn_doc_read_file(const char *path, size_t max_bytes, const char *what, char **text,
		     size_t *len);

/* Read the file at `path` (at most max_bytes) and parse it into d as one
 * JSON object, *root: the text must start with '{' (YAML would take
 * "a: 1" too).  `what` says what the file should be, for messages
 * ("'PATH': bad JSON at line L, column C: ...; it should be WHAT"). */
int zn_doc_load_json(struct zn_doc *d, const char *path, size_t max_bytes, const char *what,
		     struct zn_doc_node **root);

/* New nodes, placed where `at` is (its text and position), for a caller
 * that adds to a parsed tree; NULL when out of memory. */
struct zn_doc_node *zn_doc_new_scalar(struct zn_doc *d, const char *text, size_t len,
				      const struct zn_doc_node *at);
struct zn_doc_node *zn_doc_new_map(struct zn_doc *d, const struct zn_doc_node *at);
/* Append a pair to mapping `map`; 0 or -ENOMEM. */
int zn_doc_map_add(struct zn_doc *d, struct zn_doc_node *map, struct zn_doc_node *key,
		   struct zn_doc_node *value);

/* The value of the last pair of `map` whose key is the scalar `key` (the
 * last, as Python's json keeps it); NULL when absent or `map` is not a
 * mapping. */
struct zn_doc_node *zn_doc_get(const struct zn_doc_node *map, const char *key);

/* Typed reads: 0, or -EINVAL when the node is not of that type. */
bool zn_doc_is_null(const struct zn_doc_node *n); /* plain "", ~, null, Null, NULL */
const char *zn_doc_string(const struct zn_doc_node *n); /* quoted scalar's text, or NULL */
int zn_doc_int(const struct zn_doc_node *n, long long *out);  /* plain decimal integer */
int zn_doc_number(const struct zn_doc_node *n, double *out);  /* plain finite number */
int zn_doc_bool(const struct zn_doc_node *n, bool *out);      /* plain true or false */

/* For messages: "a scalar", "a sequence", "a mapping" (YAML's words)... */
const char *zn_doc_kind_name(const struct zn_doc_node *n);
/* ...or the value itself as JSON's reader sees it: `4096`, `"4096" (a
 * string)`, `an object`, `a list`, `nothing` (n NULL); into buf. */
const char *zn_doc_describe(const struct zn_doc_node *n, char *buf, size_t len);

/* Where node n is, for messages: "NAME:LINE:COLUMN", or "NAME" when its
 * text has no lines; into buf. */
const char *zn_doc_where(const struct zn_doc_node *n, char *buf, size_t len);

/* Set the last error to "WHERE: message" for node n and return err. */
int zn_doc_fail(const struct zn_doc_node *n, int err, const char *fmt, ...) ZN_PRINTF(3, 4);

#endif
