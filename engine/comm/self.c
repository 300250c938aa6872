/* The "self" comm backend: one rank and no peer.  Every collective of one
 * rank is a local copy at most (collectives.c), so its exchange is never
 * called. */
#include "comm/internal.h"

static int self_open(struct zn_comm *c)
{
	c->rank = 0;
	c->size = 1;
	c->local_rank = 0;
	return 0;
}

static void self_close(struct zn_comm *c)
{
	(void)c;
}

/* Never called: one rank has no peers. */
static int self_exchange(struct zn_comm *c, const struct zn_comm_xfer *x, int tag,
			 uint64_t deadline_ns, const char *what)
{
	(void)c, (void)x, (void)tag, (void)deadline_ns;
	return zn_error(-EINVAL, "comm self: %s has no peer to exchange with", what);
}

const struct zn_comm_ops zn_comm_self_ops = {
	.name = "self",
	.open = self_open,
	.close = self_close,
	.exchange = self_exchange,
};
