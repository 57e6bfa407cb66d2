// Package plugin is mine's containerd plugin: it runs inside containerd,
// uses containerd's services in-process, and serves the Kubernetes CRI on
// containerd's socket.
package plugin

import (
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/mine-runtime/mine/config"
)

// ID is the plugin's ID; with its type it makes the config section name
// io.containerd.grpc.v1.mine.
const ID = "mine"

func init() {
	registry.Register(&plugin.Registration{
		Type:   plugins.GRPCPlugin,
		ID:     ID,
		Config: config.Default(),
		Requires: []plugin.Type{
			plugins.EventPlugin,
			plugins.ServicePlugin,
		},
		InitFn: initPlugin,
	})
}

// Plugin is the running plugin.
type Plugin struct {
	config *config.Config
}

func initPlugin(ic *plugin.InitContext) (any, error) {
	cfg := ic.Config.(*config.Config)
	if err := cfg.Validate(); err != nil {
		// containerd only logs a plugin that fails to load and carries on;
		// a node whose runtime is misconfigured must not come up looking
		// healthy, so the daemon stops here, naming the bad key.
		fmt.Fprintf(os.Stderr, "containerd: invalid configuration: %v\n", err)
		log.G(ic.Context).WithError(err).Error("invalid configuration, refusing to start")
		os.Exit(1)
	}
	log.G(ic.Context).WithField("default_runtime", cfg.DefaultRuntimeName).Info("mine plugin ready")
	return &Plugin{config: cfg}, nil
}
