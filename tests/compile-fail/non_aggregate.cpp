// expect: must be an aggregate
#include <marshal/marshal.hpp>
struct Point {
  Point(int x, int y) : x(x), y(y) {}
  int x, y;
};
int main() {
  marshal::plain_library lib("libc.so.6");
  auto f = lib.function<int(Point)>("f");
  return f(Point{1, 2});
}
