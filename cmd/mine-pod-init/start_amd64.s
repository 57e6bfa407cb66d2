#include "textflag.h"

// Linux x86-64 system call numbers and constants.
#define SYS_rt_sigprocmask	14
#define SYS_wait4		61
#define SYS_rt_sigtimedwait	128
#define SYS_exit_group		231
#define SIG_BLOCK		0
#define WNOHANG			1
#define SIGCHLD			17
// The signal set: bit n-1 for signal n (SIGINT 2, SIGTERM 15, SIGCHLD 17).
#define WAITED			((1<<1)|(1<<14)|(1<<16))

// func start(): the kernel enters here with the stack pointer at argc
// and no register set; there is no return.
TEXT ·start(SB), NOSPLIT|NOFRAME, $0-0
	SUBQ	$16, SP
	MOVQ	$WAITED, AX
	MOVQ	AX, 0(SP)		// sigset_t on the stack

	// rt_sigprocmask(SIG_BLOCK, &set, NULL, sizeof set)
	MOVQ	$SIG_BLOCK, DI
	MOVQ	SP, SI
	MOVQ	$0, DX
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigprocmask, AX
	SYSCALL

wait:
	// rt_sigtimedwait(&set, NULL, NULL, sizeof set): the signal, or
	// -errno (EINTR) to wait again.
	MOVQ	SP, DI
	MOVQ	$0, SI
	MOVQ	$0, DX
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigtimedwait, AX
	SYSCALL
	CMPQ	AX, $SIGCHLD
	JEQ	reap
	CMPQ	AX, $0
	JLT	wait

	// SIGTERM or SIGINT: exit_group(0)
	MOVQ	$0, DI
	MOVQ	$SYS_exit_group, AX
	SYSCALL

reap:
	// wait4(-1, NULL, WNOHANG, NULL) while it reaps a child: one SIGCHLD
	// stands for any number of exits.
	MOVQ	$-1, DI
	MOVQ	$0, SI
	MOVQ	$WNOHANG, DX
	MOVQ	$0, R10
	MOVQ	$SYS_wait4, AX
	SYSCALL
	CMPQ	AX, $0
	JGT	reap
	JMP	wait
