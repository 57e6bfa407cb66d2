// Command nonewprivs prints its effective user ID, as the upstream
// nonewprivs test image does. Installed setuid root, it runs as root
// unless no_new_privs keeps exec from honouring the setuid bit: critest's
// NoNewPrivs specs tell the two apart by its output.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
