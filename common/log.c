/* Log sink.  The library itself never prints: messages go to a sink the
 * application installs (the zinc command installs zn_log_stderr_sink). */
#include "zn_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

struct sink {
	zn_log_sink fn;
	void *user;
	enum zn_log_level max;
};

/* Replaced as a whole under a lock; readers copy it under the same lock so a
 * message never sees a half-installed sink.  Logging is rare (warnings,
 * start-up info), so a mutex is cheap enough. */
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sink current = { NULL, NULL, ZN_LOG_WARN };

zn_log_sink zn_log_set_sink(zn_log_sink fn, void *user, enum zn_log_level max_level)
{
	pthread_mutex_lock(&sink_lock);
	zn_log_sink old = current.fn;
	current = (struct sink){ fn, user, max_level };
	pthread_mutex_unlock(&sink_lock);
	return old;
}

void zn_log_stderr_sink(enum zn_log_level level, const char *msg, void *user)
{
	static const char *const names[] = {
		[ZN_LOG_ERROR] = "error", [ZN_LOG_WARN] = "warning",
		[ZN_LOG_INFO] = "info", [ZN_LOG_DEBUG] = "debug",
	};
	(void)user;
	fprintf(stderr, "zinc: %s: %s\n", names[level], msg);
}

void zn_log(enum zn_log_level level, const char *fmt, ...)
{
	struct sink s;
	char msg[1024];
	va_list ap;

	pthread_mutex_lock(&sink_lock);
	s = current;
	pthread_mutex_unlock(&sink_lock);
	if (!s.fn || level > s.max)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s.fn(level, msg, s.user);
}

bool zn_log_first(enum zn_once_topic topic)
{
	static atomic_bool said[ZN_ONCE_TOPICS];
	return (unsigned)topic < ZN_ONCE_TOPICS && !atomic_exchange(&said[topic], true);
}
