// The mambatrack program: one executable with subcommands. Errors from the library (bad data,
// configs, checkpoints) are printed as one clear line and give exit code 1.
#include <cstdio>
#include <cstring>
#include <string>

#include "commands/eval.hpp"
#include "commands/inspect.hpp"
#include "commands/pretrain_fm.hpp"
#include "commands/pretrain_mdm.hpp"
#include "commands/simulate.hpp"
#include "mambatrack/core/error.hpp"

namespace {
struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};
const Command kCommands[] = {
    {"simulate", "simulate TrackML-like events and write them in the Kaggle formats",
     mambatrack::cli::run_simulate},
    {"pretrain-mdm", "MAMBA-PT pretraining: masked detector module + next track prediction",
     mambatrack::cli::run_pretrain_mdm},
    {"pretrain-fm", "FM4NPP pretraining: k next-nearest-neighbour regression (Mamba or Mamba2)",
     mambatrack::cli::run_pretrain_fm},
    {"eval", "evaluate a checkpoint: MAMBA-PT MDM accuracies per mask rate and track length, NTP; FM4NPP k-NNN MSE",
     mambatrack::cli::run_eval},
    {"inspect", "print a checkpoint's config, tensor names, shapes, dtypes and parameter count",
     mambatrack::cli::run_inspect},
};

void usage() {
  std::printf("usage: mambatrack COMMAND [options]   (mambatrack COMMAND --help for its options)\n\ncommands:\n");
  for (const auto& c : kCommands) std::printf("  %-12s %s\n", c.name, c.summary);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const mambatrack::Error& e) {
      std::fprintf(stderr, "mambatrack %s: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "mambatrack: unknown command '%s'\n", argv[1]);
  usage();
  return 2;
}
