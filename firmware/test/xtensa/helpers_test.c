/*
 * Host test of libgcc_helpers.c: every lxh_* function against the compiler's own operators,
 * on edge values and a pseudo-random sweep. Runs with ASan/UBSan in `make check`.
 * Prints "N passed, M failed" like the unit tests.
 */
#include <stdint.h>
#include <stdio.h>

uint32_t lxh_udivsi3(uint32_t, uint32_t);
uint32_t lxh_umodsi3(uint32_t, uint32_t);
int32_t lxh_divsi3(int32_t, int32_t);
uint64_t lxh_udivdi3(uint64_t, uint64_t);
uint64_t lxh_umoddi3(uint64_t, uint64_t);
int64_t lxh_divdi3(int64_t, int64_t);
uint64_t lxh_umulsidi3(uint32_t, uint32_t);
uint64_t lxh_muldi3(uint64_t, uint64_t);

static long passed, failed;

static void check(int ok, const char *what, uint64_t a, uint64_t b)
{
	if (ok) {
		passed++;
		return;
	}
	if (failed++ < 10)
		printf("FAIL %s(0x%llx, 0x%llx)\n", what, (unsigned long long)a, (unsigned long long)b);
}

static uint64_t state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) /* xorshift64 */
{
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return state;
}

static void pair(uint64_t a, uint64_t b)
{
	uint32_t a32 = (uint32_t)a, b32 = (uint32_t)b;
	int32_t sa32 = (int32_t)a32, sb32 = (int32_t)b32;
	int64_t sa = (int64_t)a, sb = (int64_t)b;

	check(lxh_umulsidi3(a32, b32) == (uint64_t)a32 * b32, "umulsidi3", a32, b32);
	check(lxh_muldi3(a, b) == a * b, "muldi3", a, b);
	if (b32 != 0) {
		check(lxh_udivsi3(a32, b32) == a32 / b32, "udivsi3", a32, b32);
		check(lxh_umodsi3(a32, b32) == a32 % b32, "umodsi3", a32, b32);
		if (!(sa32 == INT32_MIN && sb32 == -1)) /* overflows in C too */
			check(lxh_divsi3(sa32, sb32) == sa32 / sb32, "divsi3", a32, b32);
	}
	if (b != 0) {
		check(lxh_udivdi3(a, b) == a / b, "udivdi3", a, b);
		check(lxh_umoddi3(a, b) == a % b, "umoddi3", a, b);
		if (!(sa == INT64_MIN && sb == -1))
			check(lxh_divdi3(sa, sb) == sa / sb, "divdi3", a, b);
	}
}

int main(void)
{
	static const uint64_t edges[] = {
		0, 1, 2, 3, 7, 10, 60, 400, 86400, 146097, 0x7fffffffull, 0x80000000ull,
		0xffffffffull, 0x100000000ull, 0x7fffffffffffffffull, 0x8000000000000000ull,
		0xffffffffffffffffull, 0xfffffffffffeae80ull /* -86400 */, 0xffffffff80000000ull,
	};
	const size_t n = sizeof edges / sizeof edges[0];
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			pair(edges[i], edges[j]);
	for (int i = 0; i < 200000; i++) {
		uint64_t a = rnd(), b = rnd();
		int shift = (int)(rnd() % 64); /* divisors of every magnitude */
		pair(a, b >> shift);
		pair(a >> (rnd() % 64), b >> shift);
	}
	printf("%ld passed, %ld failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
