/*
 * Minimal I/O for the QEMU test image: stdout and exit() through Xtensa semihosting.
 *
 * QEMU implements the Xtensa ISS "simcall" ABI when started with -semihosting
 * (target/xtensa/xtensa-semi.c): a2 = call number, a3..a5 = arguments, result in a2,
 * errno in a3. We need two calls: write (4) and exit (1). picolibc's tinystdio asks the
 * application for `stdin`/`stdout`/`stderr` FILE objects; Debian ships only libdummyhost,
 * which discards output, so we provide our own.
 */
#include <stdio.h>
#include <stdint.h>

enum { SIMCALL_EXIT = 1, SIMCALL_WRITE = 4 };

static int simcall(int nr, int a, int b, int c)
{
	register int a2 __asm__("a2") = nr;
	register int a3 __asm__("a3") = a;
	register int a4 __asm__("a4") = b;
	register int a5 __asm__("a5") = c;
	__asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
	return a2;
}

/* Line buffer: one simcall per line instead of one per character. */
static char line[128];
static unsigned line_len;

static void flush_line(void)
{
	if (line_len) simcall(SIMCALL_WRITE, 1, (int)(uintptr_t)line, (int)line_len);
	line_len = 0;
}

static int sim_putc(char c, FILE *f)
{
	(void)f;
	line[line_len++] = c;
	if (c == '\n' || line_len == sizeof line) flush_line();
	return (unsigned char)c;
}

static int sim_flush(FILE *f)
{
	(void)f;
	flush_line();
	return 0;
}

static FILE sim_stdio = FDEV_SETUP_STREAM(sim_putc, NULL, sim_flush, _FDEV_SETUP_WRITE);
FILE *const stdin = &sim_stdio;
FILE *const stdout = &sim_stdio;
FILE *const stderr = &sim_stdio;

/* picolibc's exit() runs atexit handlers and then calls _exit(). The exit status becomes
 * QEMU's own exit status, which is how `make check` learns whether the tests passed. */
void _exit(int status)
{
	flush_line();
	simcall(SIMCALL_EXIT, status, 0, 0);
	for (;;) {
	}
}
