// marshal command line: one function per subcommand.
#pragma once

#include <string>
#include <vector>

namespace marshal::cli {

using Args = std::vector<std::string>;

int cmd_check(const Args& args);
int cmd_layout(const Args& args);
int cmd_call(const Args& args);

bool wants_help(const Args& args);

}  // namespace marshal::cli
