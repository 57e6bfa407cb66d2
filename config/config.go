// Package config is the plugin's section of containerd's config.toml,
// [plugins."io.containerd.grpc.v1.mine"]. Where a setting means what it
// means in containerd's CRI plugin it keeps containerd's name, so an
// operator's config carries over.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Section is the plugin's table in config.toml, used to name keys in errors.
const Section = `plugins."io.containerd.grpc.v1.mine"`

// Config is the plugin's configuration.
type Config struct {
	// Snapshotter unpacks images and prepares container root filesystems.
	Snapshotter string `toml:"snapshotter"`
	// DefaultRuntimeName is the runtime handler used when a pod names none.
	DefaultRuntimeName string `toml:"default_runtime_name"`
	// Runtimes are the runtime handlers pods may ask for, by name.
	Runtimes map[string]Runtime `toml:"runtimes"`
	// SandboxImage, when set, holds each pod's namespaces with a pause
	// container of this image, the classic way. Empty (the default) holds
	// them without any image, so starting a pod never contacts a registry.
	SandboxImage string   `toml:"sandbox_image"`
	Registry     Registry `toml:"registry"`
	CNI          CNI      `toml:"cni"`
	// MaxContainerLogLineSize splits longer log lines into partial lines;
	// -1 means no limit.
	MaxContainerLogLineSize int `toml:"max_container_log_line_size"`
	// ImagePullProgressTimeout fails a pull that receives nothing for this
	// long; "0s" disables it.
	ImagePullProgressTimeout string `toml:"image_pull_progress_timeout"`
	// ImagePullTimeout bounds a whole pull; "0s" disables it.
	ImagePullTimeout string `toml:"image_pull_timeout"`
	// StatsCollectPeriod is how often containers' CPU, memory and
	// writable-layer figures are read in the background, for the list
	// RPCs to answer from; "0s" reads them on every call instead.
	StatsCollectPeriod string `toml:"stats_collect_period"`
	// RestrictOOMScoreAdj clamps containers' oom_score_adj to no lower than
	// the daemon's own. It is turned on automatically where the daemon
	// lacks CAP_SYS_RESOURCE, since lowering would fail there.
	RestrictOOMScoreAdj bool `toml:"restrict_oom_score_adj"`
	// EnableUnprivilegedPorts lets containers of pods with their own
	// network namespace bind ports below 1024 without privileges
	// (net.ipv4.ip_unprivileged_port_start=0), and EnableUnprivilegedICMP
	// lets them ping (net.ipv4.ping_group_range covering every group),
	// unless the pod sets those sysctls itself. Both on, as in containerd 2.x.
	EnableUnprivilegedPorts bool `toml:"enable_unprivileged_ports"`
	EnableUnprivilegedICMP  bool `toml:"enable_unprivileged_icmp"`
	// IgnoreImageDefinedVolumes leaves out the volumes an image's config
	// declares (a Dockerfile's VOLUME). By default each gets a directory
	// of the container's own, with what the image has there, as in
	// containerd.
	IgnoreImageDefinedVolumes bool `toml:"ignore_image_defined_volumes"`
	// CDISpecDirs are the directories of Container Device Interface spec
	// files, which describe the devices (such as GPUs) that kubelet asks
	// for by name for a container; for a device named in several, the
	// later directory's spec wins. CDI is always on, as in containerd 2.x.
	CDISpecDirs []string `toml:"cdi_spec_dirs"`
	// StreamServerAddress and StreamServerPort are where exec, attach and
	// port-forward streams are served; port "0" picks a free port.
	StreamServerAddress string `toml:"stream_server_address"`
	StreamServerPort    string `toml:"stream_server_port"`
}

// Runtime is one runtime handler.
type Runtime struct {
	// RuntimeType is the containerd runtime (shim) the handler runs pods
	// with, such as io.containerd.mine.v2.
	RuntimeType string `toml:"runtime_type"`
	// Options are handed to the shim; their names follow containerd's runc
	// options.
	Options RuntimeOptions `toml:"options"`
}

// RuntimeOptions configure the OCI runtime binary the shim drives.
type RuntimeOptions struct {
	// BinaryName is the OCI runtime to run: runc by default, crun works too.
	BinaryName string `toml:"BinaryName"`
	// Root is the OCI runtime's state directory.
	Root string `toml:"Root"`
	// SystemdCgroup makes the runtime manage cgroups through systemd.
	SystemdCgroup bool `toml:"SystemdCgroup"`
}

// Registry configures where images come from.
type Registry struct {
	// ConfigPath is a directory of hosts.toml files (or several, separated
	// by colons, the first that has a host's winning), one directory per
	// registry host, as containerd reads them.
	ConfigPath string `toml:"config_path"`
	// Mirrors and Configs are containerd 1.x's way to say the same, kept
	// so that its configs carry over: mirror endpoints tried in order
	// before the registry itself ("*" for every registry), and per host
	// credentials and TLS. A registry with a directory under config_path
	// is configured by its hosts.toml alone.
	Mirrors map[string]Mirror       `toml:"mirrors,omitempty"`
	Configs map[string]RegistryHost `toml:"configs,omitempty"`
}

// Mirror lists a registry's mirror endpoints, as URLs.
type Mirror struct {
	Endpoints []string `toml:"endpoint"`
}

// RegistryHost is the credentials and TLS settings for one host.
type RegistryHost struct {
	Auth *RegistryAuth `toml:"auth,omitempty"`
	TLS  *RegistryTLS  `toml:"tls,omitempty"`
}

// RegistryAuth is a host's credentials: a user and password, their
// base64 "user:password" form in Auth, or an identity token.
type RegistryAuth struct {
	Username      string `toml:"username,omitempty"`
	Password      string `toml:"password,omitempty"`
	Auth          string `toml:"auth,omitempty"`
	IdentityToken string `toml:"identitytoken,omitempty"`
}

// RegistryTLS is a host's TLS settings, files as absolute paths.
type RegistryTLS struct {
	InsecureSkipVerify bool   `toml:"insecure_skip_verify,omitempty"`
	CAFile             string `toml:"ca_file,omitempty"`
	CertFile           string `toml:"cert_file,omitempty"`
	KeyFile            string `toml:"key_file,omitempty"`
}

// CNI configures pod networking.
type CNI struct {
	BinDirs []string `toml:"bin_dirs"`
	ConfDir string   `toml:"conf_dir"`
}

// DefaultRuntimeType is the runtime type of mine's own shim.
const DefaultRuntimeType = "io.containerd.mine.v2"

// Default returns the configuration a stock node runs with.
func Default() *Config {
	return &Config{
		Snapshotter:        "overlayfs",
		DefaultRuntimeName: "mine",
		Runtimes: map[string]Runtime{
			"mine": {RuntimeType: DefaultRuntimeType},
		},
		Registry: Registry{ConfigPath: "/etc/containerd/certs.d"},
		CNI: CNI{
			BinDirs: []string{"/opt/cni/bin"},
			ConfDir: "/etc/cni/net.d",
		},
		MaxContainerLogLineSize:  16 * 1024,
		ImagePullProgressTimeout: "5m0s",
		ImagePullTimeout:         "30m0s",
		StatsCollectPeriod:       "10s",
		EnableUnprivilegedPorts:  true,
		EnableUnprivilegedICMP:   true,
		CDISpecDirs:              []string{"/etc/cdi", "/var/run/cdi"},
		StreamServerAddress:      "127.0.0.1",
		StreamServerPort:         "0",
	}
}

var runtimeTypeRE = regexp.MustCompile(`^io\.containerd\.[a-z0-9_-]+\.v[0-9]+$`)

// Validate checks every setting and names the key of each bad one.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", Section, key, fmt.Sprintf(format, args...)))
	}
	if c.Snapshotter == "" {
		bad("snapshotter", "must name a snapshotter, such as overlayfs")
	}
	if len(c.Runtimes) == 0 {
		bad("runtimes", "at least one runtime handler is needed")
	}
	if _, ok := c.Runtimes[c.DefaultRuntimeName]; !ok {
		bad("default_runtime_name", "%q is not one of the configured runtimes", c.DefaultRuntimeName)
	}
	for name, r := range c.Runtimes {
		key := "runtimes." + name
		switch {
		case !runtimeTypeRE.MatchString(r.RuntimeType):
			bad(key+".runtime_type", "must be a containerd runtime type like %s, got %q", DefaultRuntimeType, r.RuntimeType)
		case r.RuntimeType != DefaultRuntimeType:
			// Refused rather than accepted and broken: mine's shim writes
			// containers' CRI logs and holds their stdin (package
			// extension), which another shim does not do.
			bad(key+".runtime_type", "only %s is supported (it writes the CRI logs other shims leave to the CRI plugin); choose another OCI runtime with options.BinaryName, got %q", DefaultRuntimeType, r.RuntimeType)
		}
		if r.Options.Root != "" && !filepath.IsAbs(r.Options.Root) {
			bad(key+".options.Root", "must be an absolute path, got %q", r.Options.Root)
		}
	}
	for _, dir := range c.CDISpecDirs {
		if !filepath.IsAbs(dir) {
			bad("cdi_spec_dirs", "must be absolute paths, got %q", dir)
		}
	}
	for _, dir := range filepath.SplitList(c.Registry.ConfigPath) {
		if !filepath.IsAbs(dir) {
			bad("registry.config_path", "must be absolute paths, separated by colons, got %q", dir)
		}
	}
	for _, hosts := range [][]string{slices.Collect(maps.Keys(c.Registry.Mirrors)), slices.Collect(maps.Keys(c.Registry.Configs))} {
		for _, host := range hosts {
			if host == "" || host == "." || host == ".." || strings.ContainsAny(host, "/\\") {
				bad("registry", "%q is not a registry host", host)
			}
		}
	}
	for host, m := range c.Registry.Mirrors {
		for _, e := range m.Endpoints {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("registry.mirrors."+host+".endpoint", "must be http:// or https:// URLs, got %q", e)
			}
		}
	}
	for host, h := range c.Registry.Configs {
		if a := h.Auth; a != nil && a.Auth != "" {
			if raw, err := base64.StdEncoding.DecodeString(a.Auth); err != nil || !strings.Contains(string(raw), ":") {
				bad("registry.configs."+host+".auth.auth", "must be base64 of user:password")
			}
		}
		if t := h.TLS; t != nil {
			for key, f := range map[string]string{"ca_file": t.CAFile, "cert_file": t.CertFile, "key_file": t.KeyFile} {
				if f != "" && !filepath.IsAbs(f) {
					bad("registry.configs."+host+".tls."+key, "must be an absolute path, got %q", f)
				}
			}
			if (t.CertFile == "") != (t.KeyFile == "") {
				bad("registry.configs."+host+".tls", "cert_file and key_file go together")
			}
		}
	}
	if len(c.CNI.BinDirs) == 0 {
		bad("cni.bin_dirs", "at least one directory is needed")
	}
	for _, d := range c.CNI.BinDirs {
		if !filepath.IsAbs(d) {
			bad("cni.bin_dirs", "must be absolute paths, got %q", d)
		}
	}
	if !filepath.IsAbs(c.CNI.ConfDir) {
		bad("cni.conf_dir", "must be an absolute path, got %q", c.CNI.ConfDir)
	}
	if c.MaxContainerLogLineSize == 0 || c.MaxContainerLogLineSize < -1 {
		bad("max_container_log_line_size", "must be a positive number of bytes or -1 for no limit, got %d", c.MaxContainerLogLineSize)
	}
	for key, v := range map[string]string{
		"image_pull_progress_timeout": c.ImagePullProgressTimeout,
		"image_pull_timeout":          c.ImagePullTimeout,
		"stats_collect_period":        c.StatsCollectPeriod,
	} {
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			bad(key, "must be a duration such as \"5m\" (\"0s\" disables it), got %q", v)
		}
	}
	if net.ParseIP(c.StreamServerAddress) == nil {
		bad("stream_server_address", "must be an IP address, got %q", c.StreamServerAddress)
	}
	if p, err := strconv.ParseUint(c.StreamServerPort, 10, 16); err != nil || p > 65535 {
		bad("stream_server_port", "must be a port number (0 picks a free one), got %q", c.StreamServerPort)
	}
	return errors.Join(errs...)
}

// PullProgressTimeout is image_pull_progress_timeout, parsed; call after Validate.
func (c *Config) PullProgressTimeout() time.Duration {
	return validDuration(c.ImagePullProgressTimeout)
}

// PullTimeout is image_pull_timeout, parsed; call after Validate.
func (c *Config) PullTimeout() time.Duration {
	return validDuration(c.ImagePullTimeout)
}

// StatsPeriod is stats_collect_period, parsed; call after Validate.
func (c *Config) StatsPeriod() time.Duration {
	return validDuration(c.StatsCollectPeriod)
}

// validDuration parses a duration Validate has checked.
func validDuration(v string) time.Duration {
	d, _ := time.ParseDuration(v)
	return d
}
