// Command containerd is containerd's own daemon with mine's plugin built
// in: same flags, same config.toml, same socket. Built with the no_cri tag,
// so that containerd's CRI plugin is left out and mine serves the CRI.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
	"github.com/urfave/cli/v3"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/plugin"
)

func main() {
	app := command.App()
	// The plugin reads config.toml itself (containerd's CRI sections when
	// it has no section of its own) and again on reload, so it needs the
	// path the daemon was given.
	before := app.Before
	app.Before = func(ctx context.Context, cmd *cli.Command) (context.Context, error) {
		plugin.ConfigPath = cmd.String("config")
		if before != nil {
			return before(ctx, cmd)
		}
		return ctx, nil
	}
	app.Commands = append(app.Commands, mineConfigCommand)
	if err := app.Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		os.Exit(1)
	}
}

var mineConfigCommand = &cli.Command{
	Name:      "mine-config",
	Usage:     "Print the mine section equivalent to the CRI settings of a config.toml",
	ArgsUsage: "[config.toml]",
	Description: `Reads the configuration the daemon would (the --config file unless one is
given here) and prints the [plugins."io.containerd.grpc.v1.mine"] section it
amounts to: the file's own mine section, or the settings of containerd's CRI
sections that mine takes, with the keys taken and the keys ignored listed as
comments. Add the section to config.toml to switch to it explicitly.`,
	Action: func(ctx context.Context, cmd *cli.Command) error {
		path := cmd.String("config")
		if cmd.Args().Len() > 0 {
			path = cmd.Args().First()
		}
		l, err := config.Load(ctx, path)
		if err != nil {
			return err
		}
		return config.WriteSection(cmd.Root().Writer, l)
	},
}
