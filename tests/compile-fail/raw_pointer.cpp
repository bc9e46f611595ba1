// expect: a raw pointer is ambiguous
#include <marshal/marshal.hpp>
int main() {
  marshal::library lib("typemaps/libc.json");
  auto f = lib.function<unsigned long(const char*)>("strlen");
  return static_cast<int>(f("abc"));
}
