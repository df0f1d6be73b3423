// SHA-256 (FIPS 180-4), for checking engine files against their manifest.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace unioncam::detail {

/// Incremental SHA-256: `update` any number of times, then `hex_digest` once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t size);
  /// Lower-case hex of the digest; finishes the hash (no `update` after it).
  std::string hex_digest();

 private:
  void compress(const std::uint8_t* block);

  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t total_bytes_ = 0;
};

/// SHA-256 of a string, lower-case hex.
std::string sha256_hex(const std::string& data);

/// SHA-256 of a file's bytes, lower-case hex. Throws `EngineDirError` if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace unioncam::detail
