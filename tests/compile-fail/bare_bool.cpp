// expect: bool is ambiguous without a typemap
#include <marshal/marshal.hpp>
int main() {
  marshal::plain_library lib("libc.so.6");
  auto f = lib.function<bool(int)>("isalpha");
  return f('a') ? 0 : 1;
}
