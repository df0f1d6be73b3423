// `unioncam-cpp explain`: images through the library into files, like `unioncam-rt explain`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "options.hpp"

namespace unioncam::cli {

/// Image files named explicitly are kept whatever their suffix (a bad one is reported);
/// folders contribute their .png/.jpg/.jpeg files, sorted. Throws `ImageError` for a folder
/// without images.
std::vector<std::filesystem::path> list_images(const std::vector<std::string>& inputs);

/// Output stems; a repeated stem gets -2, -3... appended.
std::vector<std::string> unique_stems(const std::vector<std::filesystem::path>& paths);

/// Explains every input into `config.out_dir`; returns the exit code (0, or 1 when some
/// images could not be read). Option and engine errors are thrown before any work.
int run_explain(const ExplainConfig& config);

}  // namespace unioncam::cli
