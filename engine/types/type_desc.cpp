// marshal engine: type descriptors: kind and encoding names, pointer-likeness.
#include "types/type_desc.hpp"

#include <cstddef>
#include <string_view>

namespace marshal::engine {

std::string_view kind_name(Kind k) {
  switch (k) {
#define MARSHAL_KIND_NAME(id, spelling) \
  case Kind::id: return spelling;
    MARSHAL_KINDS(MARSHAL_KIND_NAME)
#undef MARSHAL_KIND_NAME
  }
  return "?";
}

std::string_view encoding_name(Encoding e) {
  switch (e) {
    case Encoding::utf8: return "utf8";
    case Encoding::utf16: return "utf16";
    case Encoding::utf32: return "utf32";
    case Encoding::wchar: return "wchar";
    case Encoding::latin1: return "latin1";
    case Encoding::ascii: return "ascii";
    case Encoding::bytes: return "bytes";
  }
  return "?";
}

std::size_t encoding_unit(Encoding e) {
  switch (e) {
    case Encoding::utf8: case Encoding::latin1: case Encoding::ascii: case Encoding::bytes: return 1;
    case Encoding::utf16: return 2;
    case Encoding::utf32: return 4;
    case Encoding::wchar: return sizeof(wchar_t);
  }
  return 1;
}

bool is_pointer_like(const TypeDesc& d) {
  switch (d.kind) {
    case Kind::pointer: case Kind::ptr: case Kind::callback: case Kind::interface: return true;
    case Kind::handle: return d.as<HandleInfo>().by_pointer;
    case Kind::string: return !d.as<StringInfo>().inline_storage;
    case Kind::void_: case Kind::integer: case Kind::floating: case Kind::boolean: case Kind::array:
    case Kind::struct_: case Kind::union_: case Kind::enum_: return false;
  }
  return false;
}

}  // namespace marshal::engine
