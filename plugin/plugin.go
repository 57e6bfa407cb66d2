// Package plugin is mine's containerd plugin: it runs inside containerd,
// uses containerd's services in-process, and serves the Kubernetes CRI on
// containerd's socket.
package plugin

import (
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"google.golang.org/grpc"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/plugin/cri"
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
			plugins.LeasePlugin,
			plugins.SandboxStorePlugin,
			plugins.TransferPlugin,
			plugins.MountManagerPlugin,
		},
		InitFn: initPlugin,
	})
}

// Plugin is the running plugin: containerd serves its gRPC services.
type Plugin struct {
	cri *cri.Service
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
	client, err := containerd.New("",
		containerd.WithDefaultNamespace(cri.Namespace),
		containerd.WithInMemoryServices(ic))
	if err != nil {
		return nil, fmt.Errorf("containerd client: %w", err)
	}
	svc, err := cri.New(ic.Context, cri.Options{
		Client:   client,
		Config:   cfg,
		RootDir:  ic.Properties[plugins.PropertyRootDir],
		StateDir: ic.Properties[plugins.PropertyStateDir],
		Address:  ic.Properties[plugins.PropertyGRPCAddress],
	})
	if err != nil {
		return nil, err
	}
	log.G(ic.Context).WithField("default_runtime", cfg.DefaultRuntimeName).
		WithField("root", filepath.Clean(ic.Properties[plugins.PropertyRootDir])).Info("mine CRI plugin ready")
	return &Plugin{cri: svc}, nil
}

// Register serves the CRI RuntimeService and ImageService on containerd's
// gRPC server.
func (p *Plugin) Register(s *grpc.Server) error {
	p.cri.Register(s)
	return nil
}
