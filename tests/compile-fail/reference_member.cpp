// expect: must hold plain fields, not references
#include <marshal/marshal.hpp>
struct Holder {
  int& ref;
};
int main() {
  marshal::library lib("typemaps/libc.json");
  auto f = lib.function<int(Holder)>("f");
  int x = 0;
  return f(Holder{x});
}
