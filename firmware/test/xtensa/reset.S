/*
 * Reset stub for QEMU's xtensa "sim" machine.
 *
 * The simulator starts executing at the start of sysrom (0x50000000) and leaves the stack
 * pointer (a1) unset; picolibc's crt0 (_start) expects a valid stack. So the first code in the
 * image sets a1 to __stack (from lx106-sim.ld) and jumps to _start, which clears .bss,
 * copies .data, runs constructors, calls main() and exit()s with its result.
 */
	.section .text.init.enter, "ax"
	.align 4
	.global __sim_reset
__sim_reset:
	j	1f
	.align 4
.Lstack:
	.word	__stack
.Lstart:
	.word	_start
1:
	l32r	a1, .Lstack
	l32r	a0, .Lstart
	jx	a0
