// Unit test runner. Built for the host (with ASan/UBSan) and for the lx106 CPU under QEMU.
// With the argument --demo-failure, or built with -DUNIT_DEMO_FAILURE (QEMU passes no
// arguments), it runs one deliberately failing check instead, so `make check` can prove that
// a failure really turns into a non-zero exit status on both.
#include <stdio.h>
#include <string.h>

#include "harness.h"

int main(int argc, char** argv) {
#ifdef UNIT_DEMO_FAILURE
  (void)argc;
  (void)argv;
  const bool demoFailure = true;
#else
  const bool demoFailure = argc > 1 && strcmp(argv[1], "--demo-failure") == 0;
#endif
  if (demoFailure) {
    CHECK_EQ(1 + 1, 3);
  } else {
    testTime();
    testBackoff();
    testLed();
    testDeviceCore();
  }
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
