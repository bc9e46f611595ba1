// marshal tests: whether this build runs under ASan or TSan (gcc says so with
// __SANITIZE_*__, clang 16 only through __has_feature).
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MARSHAL_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MARSHAL_TEST_SANITIZED 1
#endif
#endif

namespace marshal::test {
#ifdef MARSHAL_TEST_SANITIZED
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
}  // namespace marshal::test
