// Package plugin is mine's containerd plugin: it runs inside containerd,
// uses containerd's services in-process, and serves the Kubernetes CRI on
// containerd's socket.
package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"google.golang.org/grpc"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/plugin/cri"
	"github.com/mine-runtime/mine/plugin/nri"
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
			// Its section configures NRI, which this plugin runs.
			plugins.NRIApiPlugin,
		},
		InitFn: initPlugin,
	})
}

// ConfigPath is the daemon's config.toml, which the plugin reads itself
// at start and on reload; cmd/containerd sets it from --config. Empty
// when the plugin is built into a daemon that does not: the section
// containerd decoded is used then, and never reloaded.
var ConfigPath string

// Plugin is the running plugin: containerd serves its gRPC services.
type Plugin struct {
	cri *cri.Service
}

func initPlugin(ic *plugin.InitContext) (any, error) {
	loaded := &config.Loaded{Config: ic.Config.(*config.Config), Source: config.FromMineSection}
	err := loaded.Config.Validate()
	if ConfigPath != "" {
		loaded, err = config.Load(ic.Context, ConfigPath)
	}
	if err != nil {
		// containerd only logs a plugin that fails to load and carries on;
		// a node whose runtime is misconfigured must not come up looking
		// healthy, so the daemon stops here, naming the bad key.
		fmt.Fprintf(os.Stderr, "containerd: invalid configuration: %v\n", err)
		log.G(ic.Context).WithError(err).Error("invalid configuration, refusing to start")
		os.Exit(1)
	}
	logSource(ic.Context, loaded)
	cfg := loaded.Config
	client, err := containerd.New("",
		containerd.WithDefaultNamespace(cri.Namespace),
		containerd.WithInMemoryServices(ic))
	if err != nil {
		return nil, fmt.Errorf("containerd client: %w", err)
	}
	nriConfig, err := nriSection(ic)
	if err != nil {
		return nil, err
	}
	svc, err := cri.New(ic.Context, cri.Options{
		Client:   client,
		Config:   cfg,
		RootDir:  ic.Properties[plugins.PropertyRootDir],
		StateDir: ic.Properties[plugins.PropertyStateDir],
		Address:  ic.Properties[plugins.PropertyGRPCAddress],
		NRI:      nriConfig,
		Version:  version.Version,
		SnapshotterRoot: func(name string) string {
			if p := ic.Plugins().Get(plugins.SnapshotPlugin, name); p != nil {
				return p.Meta.Exports["root"]
			}
			return ""
		},
	})
	if err != nil {
		return nil, err
	}
	if ConfigPath != "" {
		go watchConfig(context.WithoutCancel(ic.Context), ConfigPath, loaded, svc)
	}
	log.G(ic.Context).WithField("default_runtime", cfg.DefaultRuntimeName).
		WithField("root", filepath.Clean(ic.Properties[plugins.PropertyRootDir])).Info("mine CRI plugin ready")
	return &Plugin{cri: svc}, nil
}

// nriSection is containerd's NRI section as containerd decoded it, nil
// when NRI is off: disabled there, or its plugin among disabled_plugins.
// containerd's own NRI plugin reads the section and is only started by
// containerd's CRI; this plugin runs NRI in its place.
func nriSection(ic *plugin.InitContext) (*nri.Config, error) {
	p := ic.Plugins().Get(plugins.NRIApiPlugin, "nri")
	if p == nil {
		return nil, nil
	}
	cfg, err := nri.ConfigFrom(p.Config)
	if err != nil || cfg.Disable {
		return nil, err
	}
	return &cfg, nil
}

// logSource says once where the configuration came from; translated from
// containerd's CRI sections, which keys were taken and which ignored.
func logSource(ctx context.Context, l *config.Loaded) {
	entry := log.G(ctx).WithField("source", l.Source.String())
	if l.Source != config.FromContainerdCRI {
		entry.Info("mine configuration loaded")
		return
	}
	entry.WithField("took", l.Translation.Took).Info("mine configuration taken from containerd's CRI sections; `containerd mine-config` prints the equivalent mine section")
	if len(l.Translation.Ignored) > 0 {
		entry.WithField("ignored", l.Translation.Ignored).Warn("settings of containerd's CRI sections that mine does not use")
	}
}

// Register serves the CRI RuntimeService and ImageService on containerd's
// gRPC server.
func (p *Plugin) Register(s *grpc.Server) error {
	p.cri.Register(s)
	return nil
}
