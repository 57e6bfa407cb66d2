package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// The sections of containerd's own CRI plugin. containerd 2.x splits its
// settings over the first three; containerd 1.x (config version 2) keeps
// all of them in the last, with runtimes under containerd.runtimes.
const (
	criRuntime = "io.containerd.cri.v1.runtime"
	criImages  = "io.containerd.cri.v1.images"
	criGRPC    = "io.containerd.grpc.v1.cri"
)

// containerdHostsDirs is where containerd looks for hosts.toml files when
// its config names no config_path and no mirrors.
const containerdHostsDirs = "/etc/containerd/certs.d:/etc/docker/certs.d"

// RuncRuntimeType is containerd's runc shim; handlers of this type are
// served by mine's shim with the same OCI runtime options.
const RuncRuntimeType = "io.containerd.runc.v2"

// Translation says where a configuration came from, for the operator.
type Translation struct {
	// Took lists the keys of containerd's CRI sections that mine applies,
	// each with the mine key it became.
	Took []string
	// Ignored lists the keys that were set (to something other than a
	// zero value) but mean nothing to mine, with why where it helps.
	Ignored []string
}

// FromContainerd reads the settings of containerd's own CRI plugin that
// mean the same thing for mine, so a node's config.toml serves as it is.
// plugins is config.toml's [plugins] table; found is false when it has no
// CRI section at all.
func FromContainerd(plugins map[string]any) (cfg *Config, tr Translation, found bool, err error) {
	r := &reader{plugins: plugins, took: map[string]bool{}}
	for _, s := range []string{criRuntime, criImages, criGRPC} {
		if _, ok := plugins[s].(map[string]any); ok {
			found = true
		}
	}
	if !found {
		return nil, tr, false, nil
	}
	cfg = Default()
	// containerd 2.x's place for each setting comes first, then 1.x's.
	r.str(&cfg.Snapshotter, "snapshotter", criImages+".snapshotter", criGRPC+".containerd.snapshotter")
	r.str(&cfg.Registry.ConfigPath, "registry.config_path", criImages+".registry.config_path", criGRPC+".registry.config_path")
	if err := r.decode(&cfg.Registry.Mirrors, "registry.mirrors", criImages+".registry.mirrors", criGRPC+".registry.mirrors"); err != nil {
		return nil, tr, true, err
	}
	// containerd takes an endpoint without a scheme as https (http for
	// localhost); mine's own section wants the scheme spelt out.
	for host, m := range cfg.Registry.Mirrors {
		for i, e := range m.Endpoints {
			if !strings.Contains(e, "://") {
				scheme := "https://"
				if h, _, _ := strings.Cut(e, ":"); h == "localhost" || h == "127.0.0.1" || h == "::1" {
					scheme = "http://"
				}
				m.Endpoints[i] = scheme + e
			}
		}
		cfg.Registry.Mirrors[host] = m
	}
	if err := r.decode(&cfg.Registry.Configs, "registry.configs", criImages+".registry.configs", criGRPC+".registry.configs"); err != nil {
		return nil, tr, true, err
	}
	// containerd's own default where its config sets neither (its
	// `config default` prints config_path = ''), on Linux.
	if cfg.Registry.ConfigPath == "" && len(cfg.Registry.Mirrors) == 0 {
		cfg.Registry.ConfigPath = containerdHostsDirs
	}
	r.str(&cfg.CNI.ConfDir, "cni.conf_dir", criRuntime+".cni.conf_dir", criGRPC+".cni.conf_dir")
	if !r.strs(&cfg.CNI.BinDirs, "cni.bin_dirs", criRuntime+".cni.bin_dirs") {
		var dir string
		if r.str(&dir, "cni.bin_dirs", criRuntime+".cni.bin_dir", criGRPC+".cni.bin_dir") {
			cfg.CNI.BinDirs = []string{dir}
		}
	}
	if r.int(&cfg.MaxContainerLogLineSize, "max_container_log_line_size", criRuntime+".max_container_log_line_size", criGRPC+".max_container_log_line_size") && cfg.MaxContainerLogLineSize <= 0 {
		cfg.MaxContainerLogLineSize = -1 // containerd's "no limit" for 0 as for -1
	}
	r.bool(&cfg.RestrictOOMScoreAdj, "restrict_oom_score_adj", criRuntime+".restrict_oom_score_adj", criGRPC+".restrict_oom_score_adj")
	r.str(&cfg.ImagePullProgressTimeout, "image_pull_progress_timeout", criImages+".image_pull_progress_timeout", criGRPC+".image_pull_progress_timeout")
	if v, _ := r.get(criRuntime + ".stats_collect_period").(string); v != "" { // "" is containerd's "the default"
		r.str(&cfg.StatsCollectPeriod, "stats_collect_period", criRuntime+".stats_collect_period")
	}
	// Off in containerd 1.x unless set, on in 2.x.
	if containerd1x(plugins) {
		cfg.EnableUnprivilegedPorts, cfg.EnableUnprivilegedICMP = false, false
	}
	r.bool(&cfg.EnableUnprivilegedPorts, "enable_unprivileged_ports", criRuntime+".enable_unprivileged_ports", criGRPC+".enable_unprivileged_ports")
	r.bool(&cfg.EnableUnprivilegedICMP, "enable_unprivileged_icmp", criRuntime+".enable_unprivileged_icmp", criGRPC+".enable_unprivileged_icmp")
	r.bool(&cfg.IgnoreImageDefinedVolumes, "ignore_image_defined_volumes", criRuntime+".ignore_image_defined_volumes", criGRPC+".ignore_image_defined_volumes")
	r.strs(&cfg.CDISpecDirs, "cdi_spec_dirs", criRuntime+".cdi_spec_dirs", criGRPC+".cdi_spec_dirs")
	r.str(&cfg.StreamServerAddress, "stream_server_address", criGRPC+".stream_server_address")
	r.str(&cfg.StreamServerPort, "stream_server_port", criGRPC+".stream_server_port")

	if err := r.runtimes(cfg); err != nil {
		return nil, tr, true, err
	}
	tr.Took = r.tookList
	tr.Ignored = r.ignored()
	if err := cfg.Validate(); err != nil {
		return nil, tr, true, fmt.Errorf("containerd's CRI settings do not make a valid mine configuration: %w", err)
	}
	return cfg, tr, true, nil
}

// containerd1x tells a containerd 1.x config (all CRI settings in
// io.containerd.grpc.v1.cri) from a 2.x one, which keeps only the stream
// server there: the file's version is gone once containerd's loader has
// migrated it.
func containerd1x(plugins map[string]any) bool {
	if _, ok := plugins[criRuntime]; ok {
		return false
	}
	if _, ok := plugins[criImages]; ok {
		return false
	}
	old, _ := plugins[criGRPC].(map[string]any)
	for _, k := range []string{"containerd", "cni", "registry", "sandbox_image", "max_container_log_line_size", "restrict_oom_score_adj", "enable_unprivileged_ports", "enable_unprivileged_icmp"} {
		if _, ok := old[k]; ok {
			return true
		}
	}
	return false
}

// runtimes maps the handlers. Those of containerd's runc shim become mine's
// shim with their OCI runtime options; other shims cannot write CRI logs
// as mine's does, so they are left out, and naming one as the default is
// an error rather than a node that quietly runs pods elsewhere.
func (r *reader) runtimes(cfg *Config) error {
	section, table := "", map[string]any(nil)
	for _, p := range []string{criRuntime + ".containerd", criGRPC + ".containerd"} {
		if t, ok := r.get(p + ".runtimes").(map[string]any); ok {
			section, table = p, t
			break
		}
	}
	if table == nil {
		return nil
	}
	handlers := map[string]Runtime{}
	for _, name := range slices.Sorted(maps.Keys(table)) {
		h, _ := table[name].(map[string]any)
		key := section + ".runtimes." + name
		typ, _ := h["runtime_type"].(string)
		if typ != RuncRuntimeType && typ != DefaultRuntimeType {
			r.took[key] = true
			r.skipped = append(r.skipped, fmt.Sprintf("%s (runtime_type %q: only runc handlers are served, by mine's shim)", quoteKey(key), typ))
			continue
		}
		rt := Runtime{RuntimeType: DefaultRuntimeType}
		r.took[key+".runtime_type"] = true
		r.tookList = append(r.tookList, fmt.Sprintf("%s -> runtimes.%s (%s)", quoteKey(key), name, DefaultRuntimeType))
		r.str(&rt.Options.BinaryName, "runtimes."+name+".options.BinaryName", key+".options.BinaryName")
		r.str(&rt.Options.Root, "runtimes."+name+".options.Root", key+".options.Root")
		r.bool(&rt.Options.SystemdCgroup, "runtimes."+name+".options.SystemdCgroup", key+".options.SystemdCgroup")
		handlers[name] = rt
	}
	if len(handlers) == 0 {
		return fmt.Errorf("%s: no handler of type %s, which mine serves", quoteKey(section+".runtimes"), RuncRuntimeType)
	}
	cfg.Runtimes = handlers
	if !r.str(&cfg.DefaultRuntimeName, "default_runtime_name", section+".default_runtime_name") {
		cfg.DefaultRuntimeName = "runc" // containerd's default
	}
	if _, ok := handlers[cfg.DefaultRuntimeName]; !ok {
		return fmt.Errorf("%s: %q is not a runc handler, and mine serves no other", quoteKey(section+".default_runtime_name"), cfg.DefaultRuntimeName)
	}
	return nil
}

type reader struct {
	plugins  map[string]any
	took     map[string]bool // dotted keys under plugins, taken or dealt with
	tookList []string
	skipped  []string // ignored as a whole, with the reason
}

// get follows a dotted path whose first element is a plugin URI.
func (r *reader) get(path string) any {
	var v any = r.plugins
	for _, uri := range []string{criRuntime, criImages, criGRPC} {
		if rest, ok := strings.CutPrefix(path, uri+"."); ok {
			v = r.plugins[uri]
			path = rest
			break
		}
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// first finds the first of paths that is set, and marks it taken.
func (r *reader) first(mine string, paths []string) (any, bool) {
	for _, p := range paths {
		if v := r.get(p); v != nil {
			r.took[p] = true
			r.tookList = append(r.tookList, quoteKey(p)+" -> "+mine)
			return v, true
		}
	}
	return nil, false
}

func (r *reader) str(dst *string, mine string, paths ...string) bool {
	v, ok := r.first(mine, paths)
	if !ok {
		return false
	}
	switch v := v.(type) {
	case string:
		*dst = v
	case int64: // stream_server_port written as a number
		*dst = strconv.FormatInt(v, 10)
	default:
		*dst = fmt.Sprint(v)
	}
	return true
}

func (r *reader) strs(dst *[]string, mine string, paths ...string) bool {
	v, ok := r.first(mine, paths)
	if !ok {
		return false
	}
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		out = append(out, fmt.Sprint(e))
	}
	*dst = out
	return true
}

// decode takes a whole table whose shape mine shares.
func (r *reader) decode(dst any, mine string, paths ...string) error {
	v, ok := r.first(mine, paths)
	if !ok {
		return nil
	}
	raw, err := toml.Marshal(v)
	if err == nil {
		err = toml.Unmarshal(raw, dst)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", quoteKey(paths[0]), err)
	}
	// An empty table, as default configs print them, sets nothing.
	if v := reflect.ValueOf(dst).Elem(); v.Kind() == reflect.Map && v.Len() == 0 {
		v.SetZero()
	}
	return nil
}

func (r *reader) int(dst *int, mine string, paths ...string) bool {
	v, ok := r.first(mine, paths)
	if !ok {
		return false
	}
	switch v := v.(type) {
	case int64:
		*dst = int(v)
	case float64:
		*dst = int(v)
	default:
		// Left to Validate to refuse, naming mine's key.
		*dst = 0
	}
	return true
}

func (r *reader) bool(dst *bool, mine string, paths ...string) bool {
	v, ok := r.first(mine, paths)
	if !ok {
		return false
	}
	b, _ := v.(bool)
	*dst = b
	return true
}

// why says why a commonly set key is not taken. The sandbox image is left
// out on purpose: containerd's default config names one whether or not the
// operator cares, and taking it would make every pod start wait on a pause
// container (and a registry) that mine does not need; an operator who wants
// pause containers sets sandbox_image in mine's section.
var why = map[string]string{
	"pinned_images.sandbox": "pods hold their namespaces without a pause image",
	"sandbox_image":         "pods hold their namespaces without a pause image",
	"enable_selinux":        "no SELinux support",
	"disable_apparmor":      "AppArmor is applied where the kernel has it",
	"enable_cdi":            "CDI is always on, as in containerd 2.x",
}

// ignored lists the leaves of the CRI sections that are set and not taken.
func (r *reader) ignored() []string {
	out := slices.Clone(r.skipped)
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if r.took[prefix] {
			return
		}
		if m, ok := v.(map[string]any); ok {
			for _, k := range slices.Sorted(maps.Keys(m)) {
				walk(prefix+"."+k, m[k])
			}
			return
		}
		if isZero(v) {
			return
		}
		line := fmt.Sprintf("%s = %v", quoteKey(prefix), v)
		if strings.Contains(prefix, ".registry.") {
			// Credentials and headers live there: the key is enough.
			line = quoteKey(prefix) + " (value not shown)"
		}
		for suffix, reason := range why {
			if strings.HasSuffix(prefix, "."+suffix) {
				line += " (" + reason + ")"
			}
		}
		out = append(out, line)
	}
	for _, s := range []string{criImages, criRuntime, criGRPC} {
		if t, ok := r.plugins[s].(map[string]any); ok {
			for _, k := range slices.Sorted(maps.Keys(t)) {
				walk(s+"."+k, t[k])
			}
		}
	}
	return out
}

func isZero(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case bool:
		return !v
	case int64:
		return v == 0
	case float64:
		return v == 0
	case []any:
		return len(v) == 0
	case time.Duration:
		return v == 0
	}
	return false
}

// quoteKey writes a dotted key under plugins as config.toml spells it.
func quoteKey(path string) string {
	for _, uri := range []string{criRuntime, criImages, criGRPC} {
		if rest, ok := strings.CutPrefix(path, uri+"."); ok {
			return fmt.Sprintf("plugins.%q.%s", uri, rest)
		}
	}
	return path
}
