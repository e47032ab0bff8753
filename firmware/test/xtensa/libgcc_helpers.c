/*
 * Integer arithmetic helpers that Debian's xtensa-lx106-elf libgcc does not ship.
 *
 * The lx106 (ESP8266) CPU has a 32-bit multiplier that returns only the low word and no
 * divider, so GCC lowers `/`, `%` and widening multiplies to calls into libgcc. The ESP8266
 * Arduino toolchain ships them; Debian's package lacks these eight:
 *   __udivsi3 __divsi3 __umodsi3 __umulsidi3 __muldi3 __udivdi3 __umoddi3 __divdi3
 * This file provides them for the QEMU test image only (never for the real firmware).
 *
 * Rules for this file, so it can never call itself recursively:
 *   - no `/` or `%` at all; division is restoring shift-subtract;
 *   - multiplication only on 32-bit values (the `mull` instruction), products of 16-bit halves
 *     so nothing is lost;
 *   - 64-bit shifts, adds and compares are fine (inline code, or __ashldi3/__lshrdi3 which
 *     libgcc has).
 *
 * The functions are defined under lxh_* names and aliased to the libgcc names only when
 * building for xtensa. On the host, test/xtensa/helpers_test.c compares lxh_* against the
 * native operators.
 */
#include <stdint.h>

typedef uint32_t u32;
typedef int32_t s32;
typedef uint64_t u64;
typedef int64_t s64;

/* Restoring division: one quotient bit per step. Division by zero yields an all-ones
 * quotient and returns the dividend as remainder (C leaves it undefined; tests never do it). */
u32 lxh_udivmod32(u32 n, u32 d, u32 *rem)
{
	u32 q = 0, r = 0;
	if (d == 0) {
		if (rem) *rem = n;
		return 0xffffffffu;
	}
	for (int i = 31; i >= 0; i--) {
		r = (r << 1) | ((n >> i) & 1u);
		if (r >= d) {
			r -= d;
			q |= 1u << i;
		}
	}
	if (rem) *rem = r;
	return q;
}

u64 lxh_udivmod64(u64 n, u64 d, u64 *rem)
{
	u64 q = 0, r = 0;
	if (d == 0) {
		if (rem) *rem = n;
		return ~(u64)0;
	}
	for (int i = 63; i >= 0; i--) {
		/* r can exceed 2^63 only if d does, and then the compare below is still exact
		 * because we test the carry out of the shift explicitly. */
		u32 carry = (u32)(r >> 63);
		r = (r << 1) | ((n >> i) & 1u);
		if (carry || r >= d) {
			r -= d;
			q |= (u64)1 << i;
		}
	}
	if (rem) *rem = r;
	return q;
}

u32 lxh_udivsi3(u32 a, u32 b) { return lxh_udivmod32(a, b, 0); }

u32 lxh_umodsi3(u32 a, u32 b)
{
	u32 r;
	lxh_udivmod32(a, b, &r);
	return r;
}

/* Signed division truncates toward zero (C99): divide magnitudes, then fix the sign.
 * Magnitudes are taken in unsigned arithmetic so INT32_MIN does not overflow. */
s32 lxh_divsi3(s32 a, s32 b)
{
	u32 ua = a < 0 ? 0u - (u32)a : (u32)a;
	u32 ub = b < 0 ? 0u - (u32)b : (u32)b;
	u32 q = lxh_udivmod32(ua, ub, 0);
	return (s32)(((a < 0) != (b < 0)) ? 0u - q : q);
}

u64 lxh_udivdi3(u64 a, u64 b) { return lxh_udivmod64(a, b, 0); }

u64 lxh_umoddi3(u64 a, u64 b)
{
	u64 r;
	lxh_udivmod64(a, b, &r);
	return r;
}

s64 lxh_divdi3(s64 a, s64 b)
{
	u64 ua = a < 0 ? 0u - (u64)a : (u64)a;
	u64 ub = b < 0 ? 0u - (u64)b : (u64)b;
	u64 q = lxh_udivmod64(ua, ub, 0);
	return (s64)(((a < 0) != (b < 0)) ? 0u - q : q);
}

/* 32x32 -> 64 from four 16x16 -> 32 products, each exact in 32 bits. */
u64 lxh_umulsidi3(u32 a, u32 b)
{
	u32 al = a & 0xffffu, ah = a >> 16;
	u32 bl = b & 0xffffu, bh = b >> 16;
	u32 ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
	return ((u64)hh << 32) + ((u64)lh << 16) + ((u64)hl << 16) + (u64)ll;
}

/* Low 64 bits of a 64x64 product: the a_hi*b_hi term only affects bits >= 64, and the
 * cross terms only their low 32 bits matter (plain 32-bit multiplies). */
u64 lxh_muldi3(u64 a, u64 b)
{
	u32 alo = (u32)a, ahi = (u32)(a >> 32);
	u32 blo = (u32)b, bhi = (u32)(b >> 32);
	u32 cross = alo * bhi + ahi * blo;
	return lxh_umulsidi3(alo, blo) + ((u64)cross << 32);
}

#if defined(__XTENSA__)
/* The names GCC emits calls to. */
u32 __udivsi3(u32, u32) __attribute__((alias("lxh_udivsi3")));
u32 __umodsi3(u32, u32) __attribute__((alias("lxh_umodsi3")));
s32 __divsi3(s32, s32) __attribute__((alias("lxh_divsi3")));
u64 __udivdi3(u64, u64) __attribute__((alias("lxh_udivdi3")));
u64 __umoddi3(u64, u64) __attribute__((alias("lxh_umoddi3")));
s64 __divdi3(s64, s64) __attribute__((alias("lxh_divdi3")));
u64 __umulsidi3(u32, u32) __attribute__((alias("lxh_umulsidi3")));
u64 __muldi3(u64, u64) __attribute__((alias("lxh_muldi3")));
#endif
