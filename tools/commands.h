/* The zinc command's subcommands.  Each returns the process exit status:
 * 0 success, 1 a runtime failure, 2 bad usage or bad input. */
#ifndef ZN_TOOLS_COMMANDS_H
#define ZN_TOOLS_COMMANDS_H

int cmd_nvme_bench(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_adam_bench(int argc, char **argv);
int cmd_offload_bench(int argc, char **argv);
int cmd_prepare_data(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_consolidate(int argc, char **argv);

#endif
