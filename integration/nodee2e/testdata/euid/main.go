// Command euid prints its real and effective user IDs. Installed setuid
// root in a test image, it shows whether exec honoured the setuid bit:
// busybox cannot, as it drops the privileges of a setuid applet itself.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("uid=%d euid=%d\n", os.Getuid(), os.Geteuid())
}
