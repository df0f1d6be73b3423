// Embedding unioncam in a C++ service: open an engine directory once, explain images.
// Build: the `unioncam_embed_example` target. Run: unioncam_embed_example ENGINE_DIR IMAGE
#include <iostream>
#include <unioncam/unioncam.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " ENGINE_DIR IMAGE\n";
    return 2;
  }
  try {
    const unioncam::Engine engine(argv[1]);  // checks every file's sha256, compiles once
    const std::vector<unioncam::RgbImage> images{unioncam::read_image(argv[2])};
    unioncam::ExplainOptions options;       // UnionCAM, top-1 class, exact
    const unioncam::Explanation result = engine.explain(images, options).front();
    std::cout << result.class_name << " p=" << result.probability << " branch=" << result.union_parts->branch
              << " beta_fused=" << result.union_parts->beta_fused << " passes=" << result.masked_passes << "\n";
    // result.cam: result.height x result.width floats in [0, 1], row-major.
  } catch (const unioncam::Error& error) {  // one-line, actionable messages
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
