package main

// start is the program's entry point in place of Go's runtime (the
// Makefile links with -E main.start), written against the kernel alone:
// it blocks SIGTERM, SIGINT and SIGCHLD, then waits for them one at a
// time; on SIGCHLD it reaps every exited child, on either of the others
// it exits with status 0. Blocked, the signals are queued even for the
// init of a PID namespace, which the kernel otherwise spares every signal
// it has no handler for.
//
// Never call it from Go: the runtime's other threads would take the
// signals it waits for.
func start()
