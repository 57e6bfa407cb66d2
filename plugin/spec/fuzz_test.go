package spec

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzGenerate feeds arbitrary container and pod configs (protobuf, as
// they arrive over the CRI) through Validate and Generate, as
// CreateContainer does: nothing may panic, and a request both accept must
// give a spec runc can run: a process with arguments, absolute mount
// destinations, a parent mount before its children, known namespaces.
func FuzzGenerate(f *testing.F) {
	ctr, _ := proto.Marshal(kubeletContainer())
	pod, _ := proto.Marshal(kubeletPod())
	f.Add(ctr, pod, false)
	priv := kubeletContainer()
	priv.Linux.SecurityContext.Privileged = true
	privCtr, _ := proto.Marshal(priv)
	f.Add(privCtr, pod, true)
	f.Fuzz(func(t *testing.T, ctrData, podData []byte, v2 bool) {
		cfg, podCfg := &runtimeapi.ContainerConfig{}, &runtimeapi.PodSandboxConfig{}
		if proto.Unmarshal(ctrData, cfg) != nil || proto.Unmarshal(podData, podCfg) != nil {
			return
		}
		c := input()
		c.Config, c.Pod.Config = cfg, podCfg
		for _, m := range cfg.GetMounts() {
			c.HostPaths[m.GetHostPath()] = m.GetHostPath()
		}
		h := v1Node()
		if v2 {
			h = v2Node()
		}
		if Validate(cfg, podCfg) != nil {
			return
		}
		s, err := Generate(c, h)
		if err != nil {
			return
		}
		if s.Process == nil || len(s.Process.Args) == 0 || s.Process.Args[0] == "" {
			t.Fatalf("a spec without a command: %+v", s.Process)
		}
		if s.Root == nil || s.Linux == nil {
			t.Fatal("a spec without a root or Linux section")
		}
		seen := map[string]int{}
		for i, m := range s.Mounts {
			if !filepath.IsAbs(m.Destination) {
				t.Fatalf("mount destination %q is not absolute", m.Destination)
			}
			seen[filepath.Clean(m.Destination)] = i
		}
		for i, m := range s.Mounts {
			for dir := filepath.Dir(filepath.Clean(m.Destination)); dir != "/"; dir = filepath.Dir(dir) {
				if j, ok := seen[dir]; ok && j > i {
					t.Fatalf("mount %s comes before its parent %s", m.Destination, dir)
				}
			}
		}
		for _, ns := range s.Linux.Namespaces {
			switch ns.Type {
			case "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time":
			default:
				t.Fatalf("namespace of type %q", ns.Type)
			}
		}
		for _, e := range s.Process.Env {
			if !strings.Contains(e, "=") {
				t.Fatalf("environment entry %q has no '='", e)
			}
		}
	})
}
