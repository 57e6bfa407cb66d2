package config

import (
	"strings"
	"testing"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("default config does not validate: %v", err)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		key    string
		mutate func(*Config)
	}{
		{"snapshotter", func(c *Config) { c.Snapshotter = "" }},
		{"default_runtime_name", func(c *Config) { c.DefaultRuntimeName = "nope" }},
		{"runtimes.mine.runtime_type", func(c *Config) { c.Runtimes["mine"] = Runtime{RuntimeType: "runc"} }},
		// Another shim would run pods without their CRI logs.
		{"runtimes.kata.runtime_type", func(c *Config) { c.Runtimes["kata"] = Runtime{RuntimeType: "io.containerd.kata.v2"} }},
		{"runtimes.mine.options.Root", func(c *Config) {
			c.Runtimes["mine"] = Runtime{RuntimeType: DefaultRuntimeType, Options: RuntimeOptions{Root: "rel"}}
		}},
		{"registry.config_path", func(c *Config) { c.Registry.ConfigPath = "certs.d" }},
		{"registry", func(c *Config) { c.Registry.Mirrors = map[string]Mirror{"../x": {Endpoints: []string{"https://m"}}} }},
		{"cni.bin_dirs", func(c *Config) { c.CNI.BinDirs = nil }},
		{"cni.conf_dir", func(c *Config) { c.CNI.ConfDir = "" }},
		{"max_container_log_line_size", func(c *Config) { c.MaxContainerLogLineSize = -5 }},
		{"image_pull_progress_timeout", func(c *Config) { c.ImagePullProgressTimeout = "soon" }},
		{"image_pull_timeout", func(c *Config) { c.ImagePullTimeout = "-1m" }},
		{"stats_collect_period", func(c *Config) { c.StatsCollectPeriod = "often" }},
		{"stream_server_address", func(c *Config) { c.StreamServerAddress = "localhost:1" }},
		{"stream_server_port", func(c *Config) { c.StreamServerPort = "70000" }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			c := Default()
			tc.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("bad value accepted")
			}
			if want := Section + "." + tc.key + ":"; !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %s", err, want)
			}
		})
	}
}

func TestDurations(t *testing.T) {
	c := Default()
	c.ImagePullProgressTimeout = "90s"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.PullProgressTimeout().Seconds(); got != 90 {
		t.Fatalf("progress timeout = %vs, want 90s", got)
	}
}
