// marshal benchmarks: what the C++ drivers share (bench_calls.cpp, bench_remote.cpp):
// the timing loop and the JSON line run_all.py reads.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace marshal::bench {

inline volatile double sink;  // every result is consumed

struct Stat { double median, low, high; };
struct Row { std::string scenario, impl; Stat s; };

// ns per iteration of body(iterations), over `reps` repetitions after a warm-up.
inline Stat measure(long iterations, int reps, const std::function<double(long)>& body) {
  body(std::max(1L, iterations / 20));  // warm up
  std::vector<double> ns;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    sink = body(iterations);
    auto t1 = std::chrono::steady_clock::now();
    ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(iterations));
  }
  std::sort(ns.begin(), ns.end());
  return {ns[ns.size() / 2], ns.front(), ns.back()};
}

// One line: [{"implementation": I, "scenarios": {S: {"median", "min", "max"}}}, ...].
inline void print_json(const std::vector<Row>& rows) {
  std::map<std::string, std::string> by_impl;
  std::vector<std::string> impls;
  for (const Row& r : rows) {
    if (!by_impl.count(r.impl)) impls.push_back(r.impl);
    char item[256];
    std::snprintf(item, sizeof item, "\"%s\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f}", r.scenario.c_str(),
                  r.s.median, r.s.low, r.s.high);
    std::string& s = by_impl[r.impl];
    s += (s.empty() ? "" : ", ") + std::string(item);
  }
  std::string out = "[";
  for (const std::string& i : impls)
    out += (out.size() > 1 ? ", " : "") + std::string("{\"implementation\": \"") + i + "\", \"scenarios\": {" +
           by_impl[i] + "}}";
  std::printf("%s]\n", out.c_str());
}

}  // namespace marshal::bench
