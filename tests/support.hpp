// marshal tests: helpers shared by the unit files.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#ifndef MARSHAL_SOURCE_DIR
#error "MARSHAL_SOURCE_DIR must be defined by the build"
#endif

namespace marshal::test {

inline std::string source_path(const std::string& relative) { return std::string(MARSHAL_SOURCE_DIR) + "/" + relative; }

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace marshal::test
