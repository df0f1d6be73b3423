// unioncam-cpp: the command line entry point. User errors print one line and exit 2.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "options.hpp"
#include "run_explain.hpp"

int main(int argc, char** argv) {
  try {
    const unioncam::cli::Command command =
        unioncam::cli::parse_command(std::vector<std::string>(argv + 1, argv + argc));
    if (command.kind == unioncam::cli::Command::Kind::help) {
      std::fputs(unioncam::cli::usage().c_str(), stdout);
      return 0;
    }
    return unioncam::cli::run_explain(command.explain);
  } catch (const unioncam::Error& exc) {
    std::fprintf(stderr, "error: %s\n", exc.what());
    return 2;
  } catch (const std::exception& exc) {
    std::fprintf(stderr, "error: internal error (a bug, please report it): %s\n", exc.what());
    return 3;
  }
}
