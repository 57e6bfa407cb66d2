// Package nri is the runtime end of the Node Resource Interface
// (github.com/containerd/nri): the NRI socket and pre-installed plugins,
// set up from containerd's own [plugins."io.containerd.nri.v1.nri"]
// section, so a node's NRI settings mean the same with mine as with
// containerd's CRI. The CRI service (plugin/cri/nri.go) tells it of every
// pod and container change; this package holds what is NRI's alone.
package nri

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	nrigen "github.com/containerd/nri/pkg/runtime-tools/generate"
	validator "github.com/containerd/nri/plugins/default-validator"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pelletier/go-toml/v2"
)

// Config is containerd's NRI section, the keys mine reads. Defaults are
// containerd 2.x's: on, at /var/run/nri/nri.sock.
type Config struct {
	Disable                   bool                              `toml:"disable"`
	SocketPath                string                            `toml:"socket_path"`
	PluginPath                string                            `toml:"plugin_path"`
	PluginConfigPath          string                            `toml:"plugin_config_path"`
	PluginRegistrationTimeout Duration                          `toml:"plugin_registration_timeout"`
	PluginRequestTimeout      Duration                          `toml:"plugin_request_timeout"`
	DisableConnections        bool                              `toml:"disable_connections"`
	DefaultValidator          *validator.DefaultValidatorConfig `toml:"default_validator"`
}

// Duration is a TOML duration as containerd writes it ("2s").
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// DefaultConfig is the configuration without a section in config.toml.
func DefaultConfig() Config {
	return Config{
		SocketPath:                adaptation.DefaultSocketPath,
		PluginPath:                adaptation.DefaultPluginPath,
		PluginConfigPath:          adaptation.DefaultPluginConfigPath,
		PluginRegistrationTimeout: Duration(adaptation.DefaultPluginRegistrationTimeout),
		PluginRequestTimeout:      Duration(adaptation.DefaultPluginRequestTimeout),
	}
}

// ConfigFrom reads the section as containerd decoded it (the NRI plugin's
// config in containerd's plugin registry, any type with containerd's TOML
// keys); nil gives the defaults.
func ConfigFrom(section any) (Config, error) {
	cfg := DefaultConfig()
	if section == nil {
		return cfg, nil
	}
	raw, err := toml.Marshal(section)
	if err != nil {
		return cfg, err
	}
	if err := toml.NewDecoder(bytes.NewReader(raw)).Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("NRI section: %w", err)
	}
	return cfg, nil
}

// Runtime is NRI as the CRI service drives it; nil when NRI is disabled,
// and every method of a nil Runtime does nothing.
type Runtime struct {
	*adaptation.Adaptation
	// plugins is how many plugins are connected, as NRI last said (-1,
	// "maybe some", before it first does): with none, the service does
	// not build the requests at all.
	plugins atomic.Int64
}

// New sets NRI up; Start opens its socket and starts plugins.
func New(cfg Config, name, version string, sync adaptation.SyncFn, update adaptation.UpdateFn) (*Runtime, error) {
	if cfg.Disable {
		return nil, nil
	}
	r := &Runtime{}
	r.plugins.Store(-1)
	opts := []adaptation.Option{adaptation.WithMetrics(pluginCount{r})}
	if cfg.SocketPath != "" {
		opts = append(opts, adaptation.WithSocketPath(cfg.SocketPath))
	}
	if cfg.PluginPath != "" {
		opts = append(opts, adaptation.WithPluginPath(cfg.PluginPath))
	}
	if cfg.PluginConfigPath != "" {
		opts = append(opts, adaptation.WithPluginConfigPath(cfg.PluginConfigPath))
	}
	if cfg.DisableConnections {
		opts = append(opts, adaptation.WithDisabledExternalConnections())
	}
	if cfg.DefaultValidator != nil {
		opts = append(opts, adaptation.WithDefaultValidator(cfg.DefaultValidator))
	}
	// NRI keeps its timeouts process-wide.
	if cfg.PluginRegistrationTimeout > 0 {
		adaptation.SetPluginRegistrationTimeout(time.Duration(cfg.PluginRegistrationTimeout))
	}
	if cfg.PluginRequestTimeout > 0 {
		adaptation.SetPluginRequestTimeout(time.Duration(cfg.PluginRequestTimeout))
	}
	a, err := adaptation.New(name, version, sync, update, opts...)
	if err != nil {
		return nil, err
	}
	r.Adaptation = a
	return r, nil
}

// Active tells whether any plugin may be listening.
func (r *Runtime) Active() bool { return r != nil && r.plugins.Load() != 0 }

// BlockSync holds back a plugin's synchronisation until unblock: a pod or
// container being made is then either in a new plugin's Synchronize or
// told to it as an event, never lost in between.
func (r *Runtime) BlockSync() (unblock func()) {
	if r == nil {
		return func() {}
	}
	return r.BlockPluginSync().Unblock
}

// Adjust applies a plugin's adjustment of a container being created to
// its spec; injectCDI gives it the CDI devices a plugin adds.
func Adjust(spec *specs.Spec, adjust *adaptation.ContainerAdjustment, injectCDI func(*specs.Spec, []string) error) error {
	g := nrigen.SpecGenerator(specEditor{spec}, nrigen.WithCDIDeviceInjector(injectCDI))
	return g.Adjust(adjust)
}

// pluginCount keeps Runtime.plugins from what NRI reports.
type pluginCount struct{ r *Runtime }

func (pluginCount) RecordPluginInvocation(string, string, error)      {}
func (pluginCount) RecordPluginLatency(string, string, time.Duration) {}
func (pluginCount) RecordPluginAdjustments(string, string, *adaptation.ContainerAdjustment, int, int) {
}
func (p pluginCount) UpdatePluginCount(n int) { p.r.plugins.Store(int64(n)) }
