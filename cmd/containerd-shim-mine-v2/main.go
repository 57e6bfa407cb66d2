// Command containerd-shim-mine-v2 is mine's runtime v2 shim: containerd
// forks it for the first container of a pod, and it then runs all of the
// pod's containers with runc.
package main

import "github.com/mine-runtime/mine/shim"

func main() {
	shim.Main()
}
