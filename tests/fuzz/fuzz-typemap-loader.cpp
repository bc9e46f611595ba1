// marshal fuzz target: the typemap loader, bytes in.
// The entry `marshal check` uses (Context::load_text). Any input may fail with
// errors; none may crash, hang, leak or trip a sanitizer. Besides, what the
// contract promises of every outcome is checked: a failure has at least one
// error, every error is one line anchored at a JSON Pointer, and every loaded
// struct or union holds its fields inside its size.
#include "fuzz_support.hpp"

#include "types/layout.hpp"

#include <bit>

using namespace marshal;
using namespace marshal::engine;

namespace {

void check_records(const Context& ctx, const Typemap& tm) {
  const TypeRegistry& reg = ctx.types();
  for (const auto& [name, id] : tm.types) {
    const TypeDesc& d = reg.get(id);
    (void)reg.spell(id);
    if (d.kind != Kind::struct_ && d.kind != Kind::union_) continue;
    if (d.align == 0 || !std::has_single_bit(d.align) || d.size % d.align != 0)
      fuzz::finding("layout", name + ": size " + std::to_string(d.size) + ", align " + std::to_string(d.align));
    for (const Field& f : d.as<RecordInfo>().fields) {
      const TypeDesc& t = reg.get(f.type);
      if (f.is_bitfield || t.has(flag_variable_size)) continue;
      if (std::uint64_t{f.offset} + t.size > d.size)
        fuzz::finding("layout", name + "." + f.name + " at " + std::to_string(f.offset) + " (" +
                                    std::to_string(t.size) + " bytes) is outside the record's " +
                                    std::to_string(d.size) + " bytes");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > fuzz::max_input) return -1;
  Context ctx;
  LoadResult r = ctx.load_text(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
  if (r.ok()) {
    if (!r.errors.empty()) fuzz::finding("loader", "a loaded typemap with errors");
    check_records(ctx, *r.typemap);
    return 0;
  }
  if (r.errors.empty()) fuzz::finding("loader", "a failed load without an error");
  for (const Diagnostic& d : r.errors) {
    const std::string line = d.text();
    if (line.find('\n') != std::string::npos || line.find('\r') != std::string::npos)
      fuzz::finding("loader", "an error spanning lines: " + nlohmann::json(line).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    if (!d.pointer.empty() && d.pointer[0] != '/')
      fuzz::finding("loader", "an error not anchored at a JSON Pointer: " + line);
  }
  return 0;
}
