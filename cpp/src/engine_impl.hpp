// Engine's private state, shared by engine.cpp (opening, accessors) and explain.cpp.
#pragma once

#include <string>

#include "manifest.hpp"
#include "openvino_graphs.hpp"
#include "unioncam/unioncam.hpp"

namespace unioncam {

struct Engine::Impl {
  Impl(const std::string& directory, const EngineOptions& options)
      : manifest(detail::load_manifest(directory)), options(options), graphs(directory, manifest, options) {}

  detail::Manifest manifest;
  EngineOptions options;
  detail::OpenVinoGraphs graphs;
};

}  // namespace unioncam
