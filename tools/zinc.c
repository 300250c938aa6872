/* zinc — the command: one binary, one subcommand per job. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "zinc/common.h"

static int cmd_version(int argc, char **argv);

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} commands[] = {
	{ "train", cmd_train, "train the model a config describes (DeepSpeed keys)" },
	{ "plan", cmd_plan, "memory a config needs per tier (device, host, nvme) against this "
	  "machine's" },
	{ "nvme-bench", cmd_nvme_bench, "measure NVMe throughput and print the best aio: block" },
	{ "offload-bench", cmd_offload_bench,
	  "measure the NVMe optimizer step against its I/O and Adam bound" },
	{ "adam-bench", cmd_adam_bench, "measure the CPU Adam against memory bandwidth" },
	{ "consolidate", cmd_consolidate,
	  "join a checkpoint saved by several ranks into one model.safetensors" },
	{ "config", cmd_config, "list config keys, or check a config file (--check FILE)" },
	{ "prepare-data", cmd_prepare_data, "turn text files into byte-level llm.c token shards" },
	{ "version", cmd_version, "print the version" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: zinc COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-14s %s\n", commands[i].name, commands[i].help);
	fprintf(out, "\n`zinc COMMAND --help` describes a command's options.\n");
}

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("zinc %s\n", zn_version());
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(argc - 1, argv + 1);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0) {
			int rc = commands[i].run(argc - 1, argv + 1);
			/* A command that failed has said why and released what it
			 * holds; it ends here, without the libraries' exit-time
			 * destructors: OpenBLAS's joins its threads, and one left
			 * inside its allocator (which retries a failed mmap for
			 * ever) would hang the exit after the message. */
			fflush(NULL);
			if (rc != 0)
				_exit(rc);
			return rc;
		}
	fprintf(stderr, "zinc: unknown command '%s'; run `zinc --help` for the list\n", argv[1]);
	return 2;
}
