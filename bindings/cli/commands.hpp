// marshal command line: one function per subcommand.
#pragma once

#include "typemap/context.hpp"

#include <string>
#include <vector>

namespace marshal::cli {
using namespace marshal::engine;

using Args = std::vector<std::string>;

int cmd_check(const Args& args);
int cmd_layout(const Args& args);
int cmd_call(const Args& args);
int cmd_serve(const Args& args);

bool wants_help(const Args& args);

// Loads a typemap into ctx, or prints its errors (all, or the first only) on
// stderr and returns nullptr.
const Typemap* load_or_report(Context& ctx, const std::string& path, bool all_errors);

}  // namespace marshal::cli
