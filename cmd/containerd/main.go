// Command containerd is containerd's own daemon with mine's plugin built
// in: same flags, same config.toml, same socket. Built with the no_cri tag,
// so that containerd's CRI plugin is left out and mine serves the CRI.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	_ "github.com/mine-runtime/mine/plugin"
)

func main() {
	if err := command.App().Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		os.Exit(1)
	}
}
