// marshal tests: the doctest runner shared by every unit-<feature>.cpp file.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
