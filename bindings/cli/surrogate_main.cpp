// marshal-surrogate: the process an isolated library runs in.
// Started by the host (engine/remote/surrogate.cpp) with its Cap'n Proto
// socket on fd 3 and the crash pipe on fd 4; not a command for people.
#include "remote/surrogate.hpp"

#include <cstdio>
#include <sys/socket.h>
#include <sys/stat.h>

int main() {
  struct stat s3 {}, s4 {};
  if (fstat(3, &s3) != 0 || !S_ISSOCK(s3.st_mode) || fstat(4, &s4) != 0 || !S_ISFIFO(s4.st_mode)) {
    std::fprintf(stderr,
                 "marshal-surrogate: runs a library isolated from its host (marshal call --isolate); "
                 "it is started by marshal, not by hand\n");
    return 2;
  }
  return marshal::engine::remote::run_surrogate(3, 4);
}
