package config

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// The default configs containerd prints (`containerd config default`,
// stock v2.4.2 and v1.7.29 binaries) and a kubeadm-style 1.x one.
func TestLoadContainerdDefaults(t *testing.T) {
	for _, tc := range []struct {
		file string
		want func(*Config)
	}{
		// config_path = '' and no mirrors: containerd 2.x's own default.
		{"containerd-2.4-default.toml", func(c *Config) {
			c.Registry.ConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"
		}},
		{"containerd-1.7-default.toml", func(c *Config) {
			c.Registry.ConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"
			c.EnableUnprivilegedPorts, c.EnableUnprivilegedICMP = false, false
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			l, err := Load(context.Background(), filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if l.Source != FromContainerdCRI {
				t.Fatalf("source = %v", l.Source)
			}
			want := Default()
			want.DefaultRuntimeName = "runc"
			want.Runtimes = map[string]Runtime{"runc": {RuntimeType: DefaultRuntimeType}}
			tc.want(want)
			if !reflect.DeepEqual(l.Config, want) {
				t.Fatalf("config:\n%+v\nwant\n%+v", l.Config, want)
			}
			ignored := strings.Join(l.Translation.Ignored, "\n")
			if !strings.Contains(ignored, "pause") || !strings.Contains(ignored, "without a pause image") {
				t.Errorf("the sandbox image is not reported ignored with its reason:\n%s", ignored)
			}
			took := strings.Join(l.Translation.Took, "\n")
			for _, k := range []string{"max_container_log_line_size", "conf_dir", "stream_server_port", "runtimes.runc", "cdi_spec_dirs"} {
				if !strings.Contains(took, k) {
					t.Errorf("%s not reported taken:\n%s", k, took)
				}
			}
			for _, line := range l.Translation.Ignored {
				for _, k := range []string{"max_container_log_line_size", "config_path", "runtime_type"} {
					if strings.Contains(line, "."+k+" ") {
						t.Errorf("%q is taken but reported ignored", line)
					}
				}
			}
		})
	}
}

func TestLoadKubeadmStyle(t *testing.T) {
	l, err := Load(context.Background(), "testdata/kubeadm.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if got := c.Runtimes; len(got) != 1 || got["runc"].RuntimeType != DefaultRuntimeType || !got["runc"].Options.SystemdCgroup {
		t.Errorf("runtimes = %+v, want runc on mine's shim with SystemdCgroup", got)
	}
	if c.DefaultRuntimeName != "runc" || c.MaxContainerLogLineSize != 32768 || !reflect.DeepEqual(c.CNI.BinDirs, []string{"/opt/cni/bin"}) {
		t.Errorf("config = %+v", c)
	}
	if c.EnableUnprivilegedPorts || c.EnableUnprivilegedICMP {
		t.Error("a 1.x config without enable_unprivileged_* turns them on")
	}
	if got := c.Registry.Mirrors["docker.io"].Endpoints; !reflect.DeepEqual(got, []string{"https://mirror.example.com"}) {
		t.Errorf("mirrors = %v", c.Registry.Mirrors)
	}
	if u, p, ok := c.Registry.Credentials("registry.example.com"); !ok || u != "robot" || p != "s3cret" {
		t.Errorf("credentials = %q %q %v", u, p, ok)
	}
	if red := c.Redacted(); red.Registry.Configs["registry.example.com"].Auth.Password != "<redacted>" || red.Registry.Configs["registry.example.com"].Auth.Username != "robot" {
		t.Errorf("redacted: %+v", red.Registry.Configs["registry.example.com"].Auth)
	}
	if _, secret, _ := c.Registry.Credentials("registry.example.com"); secret != "s3cret" {
		t.Error("Redacted changed the configuration itself")
	}
	if _, _, ok := c.Registry.Credentials("docker.io"); ok {
		t.Error("credentials for a host that has none")
	}
	ignored := strings.Join(l.Translation.Ignored, "\n")
	if !strings.Contains(ignored, `runtimes.kata (runtime_type "io.containerd.kata.v2"`) {
		t.Errorf("the kata handler is not reported left out:\n%s", ignored)
	}
	files := c.Registry.HostFiles()
	want := "server = \"https://registry-1.docker.io\"\n\n[host.\"https://mirror.example.com\"]\ncapabilities = [\"pull\", \"resolve\"]\nca = \"/etc/containerd/mirror-ca.pem\"\n"
	if files["docker.io"] != want {
		t.Errorf("docker.io hosts.toml:\n%s\nwant\n%s", files["docker.io"], want)
	}
	// The rendered file must be one containerd reads.
	var parsed map[string]any
	if err := toml.Unmarshal([]byte(files["docker.io"]), &parsed); err != nil {
		t.Fatal(err)
	}
}

func TestLoadPrefersMineSection(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	data, err := os.ReadFile("testdata/kubeadm.toml")
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, "\n[plugins.\"io.containerd.grpc.v1.mine\"]\n  max_container_log_line_size = 100\n"...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Load(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if l.Source != FromMineSection || l.Config.MaxContainerLogLineSize != 100 || l.Config.DefaultRuntimeName != "mine" {
		t.Fatalf("source %v, config %+v", l.Source, l.Config)
	}
}

func TestLoadRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ toml, want string }{
		"unknown key in mine's section": {
			"[plugins.\"io.containerd.grpc.v1.mine\"]\n  max_container_log_lin_size = 1\n", "max_container_log_lin_size"},
		"invalid value in mine's section": {
			"[plugins.\"io.containerd.grpc.v1.mine\"]\n  image_pull_timeout = \"soon\"\n", Section + ".image_pull_timeout"},
		"default handler of another shim": {
			"version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'kata'\n" +
				"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]\n  runtime_type = 'io.containerd.kata.v2'\n" +
				"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = 'io.containerd.runc.v2'\n",
			`default_runtime_name: "kata" is not a runc handler`},
		"bad translated value": {
			"version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  stats_collect_period = 'often'\n", Section + ".stats_collect_period"},
		"relative CDI spec directory": {
			"version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  cdi_spec_dirs = ['cdi']\n", Section + ".cdi_spec_dirs"},
		"bad mirror": {
			"version = 2\n[plugins.'io.containerd.grpc.v1.cri'.registry.mirrors.'docker.io']\n  endpoint = ['ftp://mirror']\n", "registry.mirrors.docker.io.endpoint"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(context.Background(), path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestLoadWithoutFile(t *testing.T) {
	l, err := Load(context.Background(), filepath.Join(t.TempDir(), "none.toml"))
	if err != nil || l.Source != FromDefaults || !reflect.DeepEqual(l.Config, Default()) {
		t.Fatalf("%+v, %v", l, err)
	}
}

// WriteSection's output, put in a config.toml, loads back to the same
// configuration: what `containerd mine-config` prints is what runs.
func TestWriteSectionRoundTrip(t *testing.T) {
	l, err := Load(context.Background(), "testdata/kubeadm.toml")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteSection(&out, l); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, append([]byte("version = 3\n"), out.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := Load(context.Background(), path)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if back.Source != FromMineSection || !reflect.DeepEqual(back.Config, l.Config) {
		t.Fatalf("round trip:\n%+v\nwant\n%+v\n%s", back.Config, l.Config, out.String())
	}
	if !strings.Contains(out.String(), "# Set there but not used by mine:") {
		t.Errorf("no ignored keys in:\n%s", out.String())
	}
}

// What containerd accepts of a 1.x config carries over: endpoints without
// a scheme; secrets of keys mine does not take stay out of the log; a 2.x
// config that sets only the stream server is not taken for a 1.x one.
func TestTranslationDetails(t *testing.T) {
	write := func(content string) string {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	l, err := Load(context.Background(), write(`version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["mirror.example.com:5000", "localhost:5001", "http://plain.example.com"]
[plugins."io.containerd.grpc.v1.cri".registry.auths."registry.example.com"]
  password = "hunter2"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://mirror.example.com:5000", "http://localhost:5001", "http://plain.example.com"}
	if got := l.Config.Registry.Mirrors["docker.io"].Endpoints; !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
	ignored := strings.Join(l.Translation.Ignored, "\n")
	if strings.Contains(ignored, "hunter2") || !strings.Contains(ignored, "registry.auths.registry.example.com.password (value not shown)") {
		t.Errorf("ignored:\n%s", ignored)
	}
	l, err = Load(context.Background(), write("version = 2\n[plugins.'io.containerd.grpc.v1.cri']\n  enable_cdi = true\n  cdi_spec_dirs = ['/opt/cdi']\n  ignore_image_defined_volumes = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Config.CDISpecDirs; !reflect.DeepEqual(got, []string{"/opt/cdi"}) {
		t.Errorf("cdi_spec_dirs %v, want [/opt/cdi]", got)
	}
	if !l.Config.IgnoreImageDefinedVolumes {
		t.Error("ignore_image_defined_volumes not taken")
	}
	if ignored := strings.Join(l.Translation.Ignored, "\n"); !strings.Contains(ignored, "enable_cdi = true (CDI is always on") {
		t.Errorf("enable_cdi not reported ignored with its reason:\n%s", ignored)
	}
	// containerd takes a line size of 0 or less for no limit, and a
	// colon-separated list of hosts.toml directories.
	l, err = Load(context.Background(), write("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  max_container_log_line_size = 0\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/a/certs.d:/b/certs.d'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.MaxContainerLogLineSize != -1 || l.Config.Registry.ConfigPath != "/a/certs.d:/b/certs.d" {
		t.Errorf("line size %d, config_path %q", l.Config.MaxContainerLogLineSize, l.Config.Registry.ConfigPath)
	}
	l, err = Load(context.Background(), write("version = 3\n[plugins.'io.containerd.grpc.v1.cri']\n  stream_server_port = '10010'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !l.Config.EnableUnprivilegedPorts || l.Config.StreamServerPort != "10010" {
		t.Errorf("a 2.x stream-only config read as 1.x: %+v", l.Config)
	}
}

// An unknown key is named by its path alone: the lines around it, where a
// password may be, are not quoted into the log.
func TestUnknownKeyQuotesNoSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	content := "version = 3\n[plugins.\"io.containerd.grpc.v1.mine\".registry.configs.\"r.example\".auth]\n  username = \"robot\"\n  password = \"s3cret\"\n  pasword = \"s3cret\"\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "pasword") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v: want the unknown key named, and no secret", err)
	}
}
