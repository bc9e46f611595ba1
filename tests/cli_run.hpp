// marshal tests: running the `marshal` command (MARSHAL_EXE) as a user would,
// stdout and stderr apart (tools and generate suites).
#pragma once

#include <doctest/doctest.h>

#include "support.hpp"

#include <array>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MARSHAL_EXE
#error "MARSHAL_EXE must be defined by the build"
#endif

namespace marshal::test {

struct Run {
  int status = -1;
  std::string out;
  std::string err;
};

// A file in the temporary folder, unique to this process.
inline std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("marshal-tools-" + std::to_string(::getpid()) + "-" + name)).string();
}

// Runs marshal with (already shell-quoted) arguments.
inline Run run(const std::string& args) {
  const std::string err_file = temp_path("stderr");
  Run r;
  FILE* p = ::popen((std::string(MARSHAL_EXE) + " " + args + " 2>" + err_file).c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = read_text(err_file);
  std::filesystem::remove(err_file);
  return r;
}

// A draft with every "$question" removed (they ask about meaning, not layout).
inline nlohmann::ordered_json without_questions(nlohmann::ordered_json j) {
  if (j.is_object()) {
    j.erase("$question");
    for (auto& [k, v] : j.items()) v = without_questions(v);
  } else if (j.is_array()) {
    for (auto& v : j) v = without_questions(v);
  }
  return j;
}

}  // namespace marshal::test
