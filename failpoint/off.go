//go:build !failpoints

package failpoint

import "context"

// Inject is a no-op: failpoints are not compiled in.
func Inject(context.Context, string) error { return nil }
