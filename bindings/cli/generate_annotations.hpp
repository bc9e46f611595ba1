// marshal generate: what a header's annotations say about a function's parameters
// and return. SAL macros (predefined as clang `annotate` attributes), GObject-
// Introspection comment annotations and doxygen `@param[dir]`, read into notes.
#pragma once

#include <clang-c/Index.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace marshal::cli::annotations {

enum class Direction { in, out, inout };

const char* direction_name(Direction d);

// How many elements a pointer parameter points to, as an annotation states it.
struct Extent {
  enum class Kind { one, count, fixed, zero_terminated };
  Kind kind = Kind::one;
  std::string expr;    // count: the annotation's C expression ("n", "*pLen", "16")
  long long fixed = 0;  // fixed: GI (array fixed-size=N)
};

// What one annotation says, with its spelling (the reason, or half of a conflict).
struct Note {
  std::string source;  // e.g. "SAL _In_reads_(n)", "GI (out)", "doxygen @param[out]"
  std::optional<Direction> dir;
  std::optional<Extent> extent;
  bool bytes = false;             // the extent counts bytes, not elements
  std::string length;             // SAL _Out_writes_to_: what the callee wrote (an expression)
  bool nullable = false;          // SAL _opt_, GI (nullable) / (allow-none) / (optional)
  bool text = false;              // NUL-terminated text: SAL _z_, GI (type utf8)
  bool outptr = false;            // SAL _Outptr_: the callee writes one pointer through T **
  bool caller_allocates = false;  // GI (out caller-allocates)
  std::string transfer;           // GI (transfer full|none|container|floating)
  std::string scope;              // GI (scope call|notified|async|forever)
  std::string conflict;           // one source contradicting itself: GI (in) (out)
};

struct FunctionNotes {
  std::map<std::string, std::vector<Note>> params;  // by parameter name
  std::vector<Note> returns;
  // Annotations that were read but say nothing the draft can use (an unknown GI
  // annotation, a doc line naming no parameter): printed on stderr, never guessed at.
  std::vector<std::string> ignored;
};

// The SAL macros generate defines before the headers: each becomes
// __attribute__((annotate("sal:NAME(ARGS)"))) so libclang keeps it on the
// parameter (or function, for _Ret_ ones) as a CXCursor_AnnotateAttr child.
std::string sal_prelude();

// Reads the SAL attributes on a FunctionDecl and its parameters, and the GI and
// doxygen annotations in its doc comment. names: its parameters, in order.
FunctionNotes read(CXCursor function, const std::vector<std::string>& names);

// Splits "a, f(b, c)" at top-level commas, trimming spaces.
std::vector<std::string> split_arguments(const std::string& s);

}  // namespace marshal::cli::annotations
