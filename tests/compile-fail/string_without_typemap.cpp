// expect: strings need a typemap
#include <marshal/marshal.hpp>
#include <string>
int main() {
  marshal::plain_library lib("libc.so.6");
  auto f = lib.function<unsigned long(std::string)>("strlen");
  return static_cast<int>(f("abc"));
}
