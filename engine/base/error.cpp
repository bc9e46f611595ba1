// marshal engine, base: the error id table and this thread's last error.
#include "base/error.hpp"

#include <utility>

namespace marshal::engine {

const char* error_id_name(ErrorId id) {
  switch (id) {
#define MARSHAL_ERROR_NAME(id, name) \
  case ErrorId::id: return name;
    MARSHAL_ERROR_IDS(MARSHAL_ERROR_NAME)
#undef MARSHAL_ERROR_NAME
  }
  return "unknown";
}

bool error_id_from_name(std::string_view name, ErrorId& id) {
#define MARSHAL_ERROR_LOOKUP(i, n) \
  if (name == n) {                 \
    id = ErrorId::i;               \
    return true;                   \
  }
  MARSHAL_ERROR_IDS(MARSHAL_ERROR_LOOKUP)
#undef MARSHAL_ERROR_LOOKUP
  return false;
}

namespace {
thread_local Error last;
}

const Error& last_error() { return last; }
void clear_last_error() { last = Error{}; }

bool set_error(std::string& out, Error e) {
  last = std::move(e);
  out = last.message;
  return false;
}

Error& raise_error(ErrorId id, std::string message) {
  last = Error{};
  last.id = id;
  last.message = std::move(message);
  return last;
}

Error& error_for(const std::string& inner) {
  if (last.id == ErrorId::none || last.message != inner) raise_error(ErrorId::unclassified, inner);
  return last;
}

ErrorId error_id_of(const std::string& message, ErrorId otherwise) {
  return last.id != ErrorId::none && last.message == message ? last.id : otherwise;
}

Error& prefix_error(std::string& out, const std::string& prefix, const std::string& inner) {
  Error& e = error_for(inner);
  e.message = prefix + inner;
  out = e.message;
  return e;
}

}  // namespace marshal::engine
