// marshal typed C++ API example: a zlib round trip and a struct out parameter.
// Run from the repository root (or pass the typemaps folder as argv[1]).
#include <marshal/marshal.hpp>

#include <cstdio>
#include <string>
#include <vector>

// A C struct, described by the typemap; the engine checks the C++ one matches.
struct timespec_t {
  long tv_sec;
  long tv_nsec;
};

int main(int argc, char** argv) try {
  const std::string dir = argc > 1 ? argv[1] : "typemaps";
  marshal::library zlib(dir + "/zlib.json");
  using bytes = std::vector<std::uint8_t>;
  // sourceLen and crc32's len are computed by the engine from the data
  // ("value": {"count_of": ...} in the typemap): the C++ signatures leave them out.
  auto compress2 = zlib.function<int(marshal::out<bytes>, marshal::inout<unsigned long>, std::span<const std::uint8_t>,
                                     int)>("compress2");
  auto uncompress = zlib.function<int(marshal::out<bytes>, marshal::inout<unsigned long>, std::span<const std::uint8_t>)>(
      "uncompress");
  auto crc32 = zlib.function<unsigned long(unsigned long, std::span<const std::uint8_t>)>("crc32");

  const std::string text = "C++ calls zlib through marshal, C++ calls zlib through marshal";
  const bytes input(text.begin(), text.end());
  std::printf("crc32: %lu\n", crc32(0, input));

  bytes packed;
  unsigned long packed_len = 256;  // in: the buffer's capacity; out: what compress2 wrote
  if (compress2(packed, packed_len, input, 9) != 0) return 1;
  bytes restored;
  unsigned long restored_len = 256;
  if (uncompress(restored, restored_len, packed) != 0) return 1;
  const bool same = restored == input;
  std::printf("zlib round trip: %zu bytes -> %lu bytes -> %lu bytes: %s\n", input.size(), packed_len, restored_len,
              same ? "identical" : "DIFFERENT");

  marshal::library libc(dir + "/libc.json");
  auto clock_gettime = libc.function<int(int, marshal::out<timespec_t>)>("clock_gettime");
  timespec_t now{};
  clock_gettime(1, now);  // CLOCK_MONOTONIC
  std::printf("clock_gettime: tv_sec %ld, tv_nsec in range: %s\n", now.tv_sec,
              now.tv_nsec >= 0 && now.tv_nsec < 1000000000 ? "yes" : "no");
  return same ? 0 : 1;
} catch (const marshal::error& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
