#include "harness.h"

#include <stdio.h>
#include <string.h>

int g_passed = 0;
int g_failed = 0;

namespace {

// printf("%lld") support varies between the C libraries we run on; format 64-bit values by hand.
const char* i64(int64_t v, char* buf, size_t size) {
  char tmp[24];
  size_t n = 0;
  uint64_t mag = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
  do {
    tmp[n++] = (char)('0' + mag % 10);
    mag /= 10;
  } while (mag != 0 && n < sizeof tmp);
  size_t i = 0;
  if (v < 0 && i + 1 < size) buf[i++] = '-';
  while (n > 0 && i + 1 < size) buf[i++] = tmp[--n];
  buf[i] = '\0';
  return buf;
}

}  // namespace

bool checkTrue(bool ok, const char* expr, const char* file, int line) {
  if (ok) {
    g_passed++;
  } else {
    g_failed++;
    printf("FAIL %s:%d: %s\n", file, line, expr);
  }
  return ok;
}

bool checkEqInt(int64_t got, int64_t want, const char* expr, const char* file, int line) {
  if (got == want) {
    g_passed++;
    return true;
  }
  char a[24], b[24];
  g_failed++;
  printf("FAIL %s:%d: %s: got %s, want %s\n", file, line, expr, i64(got, a, sizeof a),
         i64(want, b, sizeof b));
  return false;
}

bool checkEqStr(const char* got, const char* want, const char* expr, const char* file, int line) {
  if (got != nullptr && want != nullptr && strcmp(got, want) == 0) {
    g_passed++;
    return true;
  }
  g_failed++;
  printf("FAIL %s:%d: %s: got \"%s\", want \"%s\"\n", file, line, expr, got ? got : "(null)",
         want ? want : "(null)");
  return false;
}

uint32_t scriptedRandomNext(void* context) {
  ScriptedRandom* r = static_cast<ScriptedRandom*>(context);
  if (r->next < r->count) return r->values[r->next++];
  return r->fallback;
}
