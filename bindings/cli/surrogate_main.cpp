// marshal-surrogate: the process an isolated library runs in.
// Started by the host (engine/remote/surrogate.cpp) with its Cap'n Proto
// socket on fd 3, the crash pipe on fd 4 and the direct channel on fd 5; not a command for people.
#include "remote/surrogate.hpp"

#include <cstdio>
#include <malloc.h>
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
  // Large arguments and results (a 1 MiB inout array) are allocated and freed
  // on every call here: the decoded value, the engine's native buffer, the
  // result and the reply message. With glibc's defaults each such block is a
  // fresh mmap (or heap memory trimmed back to the system after the call)
  // that the kernel faults in page by page, call after call. This process is
  // ours, so its malloc keeps blocks up to 32 MiB in the heap and keeps up to
  // 64 MiB of freed memory for the next call. Only here: the remote layer in a
  // host's process (engine/remote, libmarshal) must not change the host's
  // malloc policy, so it reuses its own buffers instead (wire.hpp).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // The direct channel on fd 5, when the host gave one (a socket).
  struct stat s5 {};
  const int direct = fstat(5, &s5) == 0 && S_ISSOCK(s5.st_mode) ? 5 : -1;
  return marshal::engine::remote::run_surrogate(3, 4, direct);
}
