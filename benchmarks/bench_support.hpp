// marshal benchmarks: what the C++ drivers share (bench_calls.cpp, bench_remote.cpp):
// the timing loop and the JSON line run_all.py reads.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace marshal::bench {

inline volatile double sink;  // every result is consumed

// allocs: C++ allocations (operator new) per call, or -1 when the driver does
// not count them (allocation_counter unset).
struct Stat { double median, low, high, allocs = -1; };
struct Row { std::string scenario, impl; Stat s; };

// Set by a driver that replaces the global operator new to count allocations
// (bench_calls.cpp): the engine allocates through it, so measure() reports
// allocations per call too.
inline std::atomic<long>* allocation_counter = nullptr;

// ns per iteration of body(iterations), over `reps` repetitions after a
// warm-up; then allocations per call over a short run, when counted.
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
  Stat st{ns[ns.size() / 2], ns.front(), ns.back()};
  if (allocation_counter) {
    // A body's own setup (a result, an argument list made once per body) is
    // spread over the calls: 1000 of them, fewer for the slowest scenarios.
    const long k = std::max(1L, std::min(iterations, 1000L));
    const long before = allocation_counter->load(std::memory_order_relaxed);
    sink = body(k);
    st.allocs = static_cast<double>(allocation_counter->load(std::memory_order_relaxed) - before) / static_cast<double>(k);
  }
  return st;
}

// One line: [{"implementation": I, "scenarios": {S: {"median", "min", "max"}}}, ...].
inline void print_json(const std::vector<Row>& rows) {
  std::map<std::string, std::string> by_impl;
  std::vector<std::string> impls;
  for (const Row& r : rows) {
    if (!by_impl.count(r.impl)) impls.push_back(r.impl);
    char item[320];
    char allocs[64] = "";
    if (r.s.allocs >= 0) std::snprintf(allocs, sizeof allocs, ", \"allocs\": %.3f", r.s.allocs);
    std::snprintf(item, sizeof item, "\"%s\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f%s}", r.scenario.c_str(),
                  r.s.median, r.s.low, r.s.high, allocs);
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
