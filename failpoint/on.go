//go:build failpoints

package failpoint

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Inject acts as the named failpoint is armed: nil when it is not.
func Inject(ctx context.Context, name string) error {
	path := os.Getenv(Env)
	if path == "" {
		return nil
	}
	action, ok := take(path, name)
	if !ok {
		return nil
	}
	switch action {
	case "crash":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not caught; this is not reached
	case "hang":
		for armed(path, name) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("failpoint %s: %w", name, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil
	default:
		return fmt.Errorf("failpoint %s: injected failure", name)
	}
}

// take reports the failpoint's action if it is armed and has acts left,
// and counts this one.
func take(path, name string) (string, bool) {
	action, count, ok := lookup(path, name)
	if !ok {
		return "", false
	}
	fired, _ := os.ReadFile(path + ".fired")
	n := 0
	for _, line := range strings.Split(string(fired), "\n") {
		if line == name {
			n++
		}
	}
	if n >= count {
		return "", false
	}
	f, err := os.OpenFile(path+".fired", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		f.WriteString(name + "\n")
		f.Close()
	}
	return action, true
}

// armed tells whether the file still arms the failpoint.
func armed(path, name string) bool {
	_, _, ok := lookup(path, name)
	return ok
}

func lookup(path, name string) (action string, count int, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != name {
			continue
		}
		count = 1
		if len(f) > 2 {
			if n, err := strconv.Atoi(f[2]); err == nil {
				count = n
			}
		}
		return f[1], count, true
	}
	return "", 0, false
}
