/* JSON and YAML documents read whole (see doc.h): the libyaml parser and
 * its errors, the copy of libyaml's node graph into zinc's tree, the
 * duplicate-key check, typed reads and positioned messages.
 *
 * Every node, string and array of a doc comes from one arena (a list of
 * blocks freed together), so building and linking trees never frees
 * anything piece by piece.
 */
#include "io/doc.h"

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

struct block {
	struct block *next;
	size_t used, cap;
	_Alignas(16) unsigned char mem[];
};

struct zn_doc {
	struct block *blocks;
	struct zn_doc_error err;
};

#define BLOCK_BYTES (64u << 10)

struct zn_doc *zn_doc_create(void)
{
	return calloc(1, sizeof(struct zn_doc));
}

void zn_doc_destroy(struct zn_doc *d)
{
	if (!d)
		return;
	for (struct block *b = d->blocks, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	free(d);
}

/* n zeroed bytes, 16-byte aligned, that live as long as the doc. */
static void *doc_alloc(struct zn_doc *d, size_t n)
{
	struct block *b = d->blocks;

	n = ZN_ALIGN_UP(n ? n : 1, 16);
	if (!b || b->cap - b->used < n) {
		size_t cap = ZN_MAX(n, (size_t)BLOCK_BYTES);
		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->cap = cap;
		b->used = 0;
		b->next = d->blocks;
		d->blocks = b;
	}
	void *p = b->mem + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

const struct zn_doc_error *zn_doc_last_error(const struct zn_doc *d)
{
	return &d->err;
}

const char *zn_doc_where(const struct zn_doc_node *n, char *buf, size_t len)
{
	if (n->src->lines)
		snprintf(buf, len, "%s:%zu:%zu", n->src->name, n->line, n->column);
	else
		snprintf(buf, len, "%s", n->src->name);
	return buf;
}

int zn_doc_fail(const struct zn_doc_node *n, int err, const char *fmt, ...)
{
	char msg[1024], where[4200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return zn_error(err, "%s: %s", zn_doc_where(n, where, sizeof(where)), msg);
}

/* ---- parsing ------------------------------------------------------------------ */

/* Record libyaml's error in d->err and word it "NAME:LINE:COL: ...". */
static int syntax_error(struct zn_doc *d, const yaml_parser_t *p, const struct zn_doc_node *at,
			const unsigned char *text, size_t len)
{
	struct zn_doc_error *e = &d->err;
	struct zn_doc_node where = *at;

	if (p->error == YAML_MEMORY_ERROR)
		return zn_error(-ENOMEM, "%s: out of memory while parsing", at->src->name);
	*e = (struct zn_doc_error){ .line = p->problem_mark.line + 1,
				    .column = p->problem_mark.column + 1,
				    .offset = p->problem_mark.index };
	if (p->error == YAML_READER_ERROR) {
		/* Encoding errors carry a byte offset, not a mark: count
		 * the lines up to it. */
		e->offset = ZN_MIN(p->problem_offset, len);
		e->line = 1;
		e->column = 1;
		for (size_t i = 0; i < e->offset; i++) {
			e->column = text[i] == '\n' ? 1 : e->column + 1;
			e->line += text[i] == '\n';
		}
	}
	const char *problem = p->problem ? p->problem : "unknown problem";
	if (p->error == YAML_READER_ERROR && p->problem_value != -1)
		snprintf(e->problem, sizeof(e->problem), "%s (#x%X)", problem,
			 (unsigned)p->problem_value);
	else
		snprintf(e->problem, sizeof(e->problem), "%s", problem);
	where.line = e->line;
	where.column = e->column;
	if (p->error == YAML_READER_ERROR)
		return zn_doc_fail(&where, -EINVAL, "%s", e->problem);
	if (p->context)
		return zn_doc_fail(&where, -EINVAL, "syntax error: %s (%s at %zu:%zu)", e->problem,
				   p->context, p->context_mark.line + 1,
				   p->context_mark.column + 1);
	return zn_doc_fail(&where, -EINVAL, "syntax error: %s", e->problem);
}

/* A line whose first non-blank characters are "//" at or before line
 * `upto` (a JavaScript-style comment, which neither JSON nor YAML has and
 * which libyaml reports a line or more later): its line, or 0. */
static size_t slash_comment_line(const unsigned char *text, size_t len, size_t upto)
{
	size_t line = 1;
	for (size_t i = 0; i < len && line <= upto; line++) {
		while (i < len && (text[i] == ' ' || text[i] == '\t'))
			i++;
		if (i + 1 < len && text[i] == '/' && text[i + 1] == '/')
			return line;
		while (i < len && text[i] != '\n')
			i++;
		i++;
	}
	return 0;
}

/* Collections nested deeper than this are refused before libyaml's loader
 * sees them: it slows down quadratically with nesting (60,000 levels take
 * 30 s, 200,000 do not finish), and no config nests more than a few
 * levels. */
#define DOC_MAX_DEPTH 100

/* The nesting of text's collections, read from libyaml's events (so a
 * bracket inside a quoted string or a comment is not counted, whatever
 * quotes or apostrophes come before it), stopping at the first collection
 * past DOC_MAX_DEPTH: 0, or -EINVAL naming where it starts.  A syntax
 * error ends the count with 0: the load that follows reports it. */
static int check_depth(const struct zn_doc_node *at, const unsigned char *text, size_t len)
{
	struct zn_doc_node where = *at;
	yaml_parser_t parser;
	unsigned depth = 0;
	int rc = 0;

	if (!yaml_parser_initialize(&parser))
		return zn_error(-ENOMEM, "%s: out of memory creating the YAML parser",
				at->src->name);
	yaml_parser_set_input_string(&parser, text, len);
	for (bool done = false; !done && !rc;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&parser, &ev))
			break;
		switch (ev.type) {
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > DOC_MAX_DEPTH) {
				where.line = ev.start_mark.line + 1;
				where.column = ev.start_mark.column + 1;
				rc = zn_doc_fail(&where, -EINVAL, "nested deeper than %d levels: a "
								  "config nests a few; is this the "
								  "file meant?",
						 DOC_MAX_DEPTH);
			}
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* Copy libyaml's node graph into d: node i of `y` becomes nodes[i], so
 * links (and aliases, which share a node) carry over by index, without
 * recursion, whatever the nesting. */
static int copy_graph(struct zn_doc *d, yaml_document_t *y, const struct zn_doc_src *src,
		      struct zn_doc_node **nodes_out, size_t *count)
{
	size_t n = (size_t)(y->nodes.top - y->nodes.start);
	struct zn_doc_node *nodes = doc_alloc(d, n * sizeof(*nodes));

	if (!nodes)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *yn = &y->nodes.start[i];
		struct zn_doc_node *z = &nodes[i];
		z->line = yn->start_mark.line + 1;
		z->column = yn->start_mark.column + 1;
		z->src = src;
		if (yn->type == YAML_SCALAR_NODE) {
			char *text = doc_alloc(d, yn->data.scalar.length + 1);
			if (!text)
				return -ENOMEM;
			memcpy(text, yn->data.scalar.value, yn->data.scalar.length);
			z->kind = ZN_DOC_SCALAR;
			z->plain = yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
			z->text = text;
			z->len = yn->data.scalar.length;
		} else if (yn->type == YAML_SEQUENCE_NODE) {
			const yaml_node_item_t *it = yn->data.sequence.items.start;
			z->kind = ZN_DOC_LIST;
			z->n = (size_t)(yn->data.sequence.items.top - it);
			z->items = doc_alloc(d, z->n * sizeof(*z->items));
			if (!z->items)
				return -ENOMEM;
			for (size_t k = 0; k < z->n; k++)
				z->items[k] = &nodes[it[k] - 1];
		} else {
			const yaml_node_pair_t *pr = yn->data.mapping.pairs.start;
			z->kind = ZN_DOC_MAP;
			z->n = (size_t)(yn->data.mapping.pairs.top - pr);
			z->pairs = doc_alloc(d, z->n * sizeof(*z->pairs));
			if (!z->pairs)
				return -ENOMEM;
			for (size_t k = 0; k < z->n; k++)
				z->pairs[k] = (struct zn_doc_pair){ &nodes[pr[k].key - 1],
								    &nodes[pr[k].value - 1] };
		}
	}
	*nodes_out = nodes;
	*count = n;
	return 0;
}

struct key_ref {
	const struct zn_doc_node *key;
	size_t order; /* position of the pair in its mapping */
};

static bool same_key(const struct key_ref *a, const struct key_ref *b)
{
	return a->key->len == b->key->len && memcmp(a->key->text, b->key->text, a->key->len) == 0;
}

/* By text, then by position, so repeats end up adjacent and in file order. */
static int key_ref_cmp(const void *pa, const void *pb)
{
	const struct key_ref *a = pa, *b = pb;
	int c;

	if (a->key->len != b->key->len)
		return a->key->len < b->key->len ? -1 : 1;
	c = memcmp(a->key->text, b->key->text, a->key->len);
	if (c)
		return c;
	return a->order < b->order ? -1 : a->order > b->order;
}

/* ZN_DOC_UNIQUE_KEYS over every mapping of one parse.  Sorting keeps a
 * huge mapping from costing quadratic time. */
static int check_unique_keys(const struct zn_doc_node *nodes, size_t count)
{
	for (size_t m = 0; m < count; m++) {
		const struct zn_doc_node *map = &nodes[m];
		const struct key_ref *dup = NULL, *first = NULL;
		struct key_ref *refs;
		size_t nkeys = 0;
		int rc = 0;

		if (map->kind != ZN_DOC_MAP || map->n < 2)
			continue;
		refs = calloc(map->n, sizeof(*refs));
		if (!refs)
			return zn_error(-ENOMEM, "%s: out of memory checking for duplicate keys",
					map->src->name);
		for (size_t i = 0; i < map->n; i++)
			/* Complex keys are refused by whoever reads the mapping. */
			if (map->pairs[i].key->kind == ZN_DOC_SCALAR)
				refs[nkeys++] = (struct key_ref){ map->pairs[i].key, i };
		qsort(refs, nkeys, sizeof(*refs), key_ref_cmp);
		/* refs[i] is a second occurrence when it equals refs[i - 1] but
		 * refs[i - 2] is another key; of those, report the earliest. */
		for (size_t i = 1; i < nkeys; i++) {
			if (!same_key(&refs[i], &refs[i - 1]))
				continue;
			if (i >= 2 && same_key(&refs[i - 1], &refs[i - 2]))
				continue;
			if (!dup || refs[i].order < dup->order) {
				dup = &refs[i];
				first = &refs[i - 1];
			}
		}
		if (dup)
			rc = zn_doc_fail(dup->key, -EINVAL,
					 "duplicate key '%s' (first given at line %zu); remove one",
					 dup->key->text, first->key->line);
		free(refs);
		if (rc)
			return rc;
	}
	return 0;
}

/* After the first document: another one is an error (ZN_DOC_ONE). */
static int refuse_second(struct zn_doc *d, yaml_parser_t *parser, const struct zn_doc_node *at,
			 const unsigned char *text, size_t len)
{
	yaml_document_t extra;
	int rc = 0;

	if (!yaml_parser_load(parser, &extra))
		return syntax_error(d, parser, at, text, len);
	const yaml_node_t *r = yaml_document_get_root_node(&extra);
	if (r) {
		struct zn_doc_node where = *at;
		where.line = r->start_mark.line + 1;
		where.column = r->start_mark.column + 1;
		rc = zn_doc_fail(&where, -EINVAL,
				 "a second YAML document; a file may hold only one");
	}
	yaml_document_delete(&extra);
	return rc;
}

int zn_doc_parse(struct zn_doc *d, const char *text, size_t len, const char *name,
		 unsigned flags, struct zn_doc_node **root)
{
	struct zn_doc_src *src = doc_alloc(d, sizeof(*src));
	char *name_copy = doc_alloc(d, strlen(name) + 1);
	/* libyaml asserts on a NULL input even when it is empty. */
	const unsigned char *in = (const unsigned char *)(text ? text : "");
	struct zn_doc_node *nodes = NULL, *empty;
	yaml_parser_t parser;
	yaml_document_t y;
	size_t count = 0;
	int rc;

	*root = NULL;
	if (!src || !name_copy || !(empty = zn_doc_new_scalar(d, "", 0, NULL)))
		return zn_error(-ENOMEM, "%s: out of memory", name);
	memcpy(name_copy, name, strlen(name) + 1);
	*src = (struct zn_doc_src){ .name = name_copy, .lines = !(flags & ZN_DOC_NO_LINES) };
	empty->src = src;
	empty->line = empty->column = 1;
	d->err = (struct zn_doc_error){ 0 };
	if ((rc = check_depth(empty, in, len)))
		return rc;
	if (!yaml_parser_initialize(&parser))
		return zn_error(-ENOMEM, "%s: out of memory creating the YAML parser", name);
	yaml_parser_set_input_string(&parser, in, len);
	if (!yaml_parser_load(&parser, &y)) {
		/* yaml_parser_load frees the partial document itself. */
		rc = syntax_error(d, &parser, empty, in, len);
		size_t cl = slash_comment_line(in, len, d->err.line ? d->err.line : SIZE_MAX);
		if (cl && rc == -EINVAL) {
			struct zn_doc_node at = *empty;
			at.line = cl;
			at.column = 1;
			d->err.line = cl;
			d->err.column = 1;
			rc = zn_doc_fail(&at, -EINVAL, "'//' comments are neither JSON nor YAML: "
							 "remove them (YAML comments start with "
							 "'#')");
		}
		yaml_parser_delete(&parser);
		return rc;
	}
	rc = copy_graph(d, &y, src, &nodes, &count);
	yaml_document_delete(&y);
	if (rc)
		rc = zn_error(rc, "%s: out of memory", name);
	if (!rc && (flags & ZN_DOC_ONE))
		rc = refuse_second(d, &parser, empty, in, len);
	yaml_parser_delete(&parser);
	if (!rc && (flags & ZN_DOC_UNIQUE_KEYS))
		rc = check_unique_keys(nodes, count);
	if (!rc)
		*root = count ? &nodes[0] : empty;
	return rc;
}

int zn_doc_read_file(const char *path, size_t max_bytes, const char *what, char **text,
		     size_t *len)
{
	size_t cap = 16384, n = 0;
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int err;

	*text = NULL;
	*len = 0;
	if (fd < 0) {
		err = errno;
		return zn_error(-err, "cannot open '%s' (%s): %s", path, what, strerror(err));
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(fd);
		return zn_error(-EISDIR, "'%s' is a directory; it should be %s", path, what);
	}
	buf = malloc(cap + 1);
	/* Read to the end rather than trusting st_size: a pipe or /dev/zero
	 * has none, and a file may change while it is read.  The buffer
	 * grows to max_bytes + 1 at most: one byte more is too many. */
	while (buf) {
		if (n == cap) {
			char *bigger;
			if (cap > max_bytes)
				break;
			cap = ZN_MIN(cap * 2, max_bytes + 1);
			bigger = realloc(buf, cap + 1);
			if (!bigger) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = bigger;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = errno;
			free(buf);
			close(fd);
			return zn_error(-err, "cannot read '%s': %s", path, strerror(err));
		}
		if (r == 0) {
			close(fd);
			buf[n] = 0;
			*text = buf;
			*len = n;
			return 0;
		}
		n += (size_t)r;
	}
	close(fd);
	if (!buf)
		return zn_error(-ENOMEM, "out of memory reading '%s'", path);
	free(buf);
	return zn_error(-EFBIG, "'%s' is larger than %zu MiB; it should be %s", path,
			max_bytes >> 20, what);
}

int zn_doc_load_json(struct zn_doc *d, const char *path, size_t max_bytes, const char *what,
		     struct zn_doc_node **root)
{
	char *buf;
	size_t len;

	*root = NULL;
	ZN_TRY(zn_doc_read_file(path, max_bytes, what, &buf, &len));
	size_t first = strspn(buf, " \t\r\n");
	bool object = first < len && buf[first] == '{';
	int rc = object ? zn_doc_parse(d, buf, len, path, 0, root) : 0;
	free(buf);
	if (rc == -EINVAL) /* flags 0: a syntax error */
		return zn_error(-EINVAL, "'%s': bad JSON at line %zu, column %zu: %s; it should be %s",
				path, d->err.line, d->err.column, d->err.problem, what);
	if (rc)
		return rc;
	if (!object || (*root)->kind != ZN_DOC_MAP) {
		*root = NULL;
		return zn_error(-EINVAL, "'%s' is not a JSON object; it should be %s", path, what);
	}
	return 0;
}

/* ---- building ----------------------------------------------------------------- */

static struct zn_doc_node *new_node(struct zn_doc *d, enum zn_doc_kind kind,
				    const struct zn_doc_node *at)
{
	struct zn_doc_node *n = doc_alloc(d, sizeof(*n));
	if (n) {
		if (at)
			*n = *at;
		n->kind = kind;
		n->text = NULL;
		n->len = n->n = 0;
		n->items = NULL;
		n->pairs = NULL;
		n->plain = true;
	}
	return n;
}

struct zn_doc_node *zn_doc_new_scalar(struct zn_doc *d, const char *text, size_t len,
				      const struct zn_doc_node *at)
{
	struct zn_doc_node *n = new_node(d, ZN_DOC_SCALAR, at);
	char *copy = doc_alloc(d, len + 1);
	if (!n || !copy)
		return NULL;
	memcpy(copy, text, len);
	n->text = copy;
	n->len = len;
	return n;
}

struct zn_doc_node *zn_doc_new_map(struct zn_doc *d, const struct zn_doc_node *at)
{
	return new_node(d, ZN_DOC_MAP, at);
}

int zn_doc_map_add(struct zn_doc *d, struct zn_doc_node *map, struct zn_doc_node *key,
		   struct zn_doc_node *value)
{
	struct zn_doc_pair *pairs = doc_alloc(d, (map->n + 1) * sizeof(*pairs));
	if (!pairs)
		return -ENOMEM;
	if (map->n) /* a new mapping's pairs are NULL */
		memcpy(pairs, map->pairs, map->n * sizeof(*pairs));
	pairs[map->n] = (struct zn_doc_pair){ key, value };
	map->pairs = pairs;
	map->n++;
	return 0;
}

/* ---- reading ------------------------------------------------------------------ */

struct zn_doc_node *zn_doc_get(const struct zn_doc_node *map, const char *key)
{
	struct zn_doc_node *found = NULL;

	if (!map || map->kind != ZN_DOC_MAP)
		return NULL;
	for (size_t i = 0; i < map->n; i++) {
		const struct zn_doc_node *k = map->pairs[i].key;
		if (k->kind == ZN_DOC_SCALAR && strcmp(k->text, key) == 0)
			found = map->pairs[i].value;
	}
	return found;
}

static bool is_plain(const struct zn_doc_node *n)
{
	return n && n->kind == ZN_DOC_SCALAR && n->plain;
}

/* libyaml tags every scalar !!str, so YAML's null is recognised by its
 * spelling; a quoted "null" stays a string. */
bool zn_doc_is_null(const struct zn_doc_node *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	for (size_t i = 0; is_plain(n) && i < ZN_ARRAY_SIZE(nulls); i++)
		if (strcmp(n->text, nulls[i]) == 0)
			return true;
	return false;
}

const char *zn_doc_string(const struct zn_doc_node *n)
{
	return n && n->kind == ZN_DOC_SCALAR && !n->plain ? n->text : NULL;
}

int zn_doc_int(const struct zn_doc_node *n, long long *out)
{
	char *end;

	if (!is_plain(n))
		return -EINVAL;
	errno = 0;
	long long v = strtoll(n->text, &end, 10);
	if (!*n->text || *end || errno)
		return -EINVAL;
	*out = v;
	return 0;
}

int zn_doc_number(const struct zn_doc_node *n, double *out)
{
	char *end;

	if (!is_plain(n))
		return -EINVAL;
	errno = 0;
	double v = strtod(n->text, &end);
	if (!*n->text || *end || errno || !isfinite(v) || !strpbrk(n->text, "0123456789"))
		return -EINVAL;
	*out = v;
	return 0;
}

int zn_doc_bool(const struct zn_doc_node *n, bool *out)
{
	if (!is_plain(n) || (strcmp(n->text, "true") != 0 && strcmp(n->text, "false") != 0))
		return -EINVAL;
	*out = n->text[0] == 't';
	return 0;
}

const char *zn_doc_kind_name(const struct zn_doc_node *n)
{
	static const char *const names[] = {
		[ZN_DOC_SCALAR] = "a scalar", [ZN_DOC_LIST] = "a sequence", [ZN_DOC_MAP] = "a mapping",
	};
	return n ? names[n->kind] : "nothing";
}

const char *zn_doc_describe(const struct zn_doc_node *n, char *buf, size_t len)
{
	if (!n)
		snprintf(buf, len, "nothing");
	else if (n->kind == ZN_DOC_MAP)
		snprintf(buf, len, "an object");
	else if (n->kind == ZN_DOC_LIST)
		snprintf(buf, len, "a list");
	else if (n->plain)
		snprintf(buf, len, "%.40s", n->text);
	else
		snprintf(buf, len, "\"%.40s\" (a string)", n->text);
	return buf;
}
