package cri

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/extension"
)

// shimBinary is run as the init of pods that share a PID namespace.
const shimBinary = "containerd-shim-mine-v2"

// sharesPIDNamespace tells whether a pod's containers share one PID
// namespace, which then needs an init process to hold it.
func sharesPIDNamespace(cfg *runtimeapi.PodSandboxConfig) bool {
	return cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_POD
}

// sandboxSpec is the OCI spec of the pod's record in containerd. For a pod
// sharing a PID namespace it runs the shim binary as the pod's init from an
// empty, read-only root (package extension); otherwise nothing runs it.
func (s *Service) sandboxSpec(ctx context.Context, m *sandboxMeta, cfg *runtimeapi.PodSandboxConfig, rt config.Runtime) (*oci.Spec, error) {
	if !sharesPIDNamespace(cfg) {
		return &oci.Spec{Version: specs.Version}, nil
	}
	bin, err := exec.LookPath(shimBinary)
	if err != nil {
		return nil, fmt.Errorf("the pod init is the shim binary: %w", err)
	}
	root := filepath.Join(s.sandboxState(m.ID), "init-root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	opts := []oci.SpecOpts{
		oci.WithRootFSPath(root),
		oci.WithRootFSReadonly(),
		oci.WithProcessArgs("/pod-init", extension.PodInitAction),
		oci.WithMounts([]specs.Mount{{Destination: "/pod-init", Type: "bind", Source: bin, Options: []string{"rbind", "ro"}}}),
		oci.WithCapabilities(nil),
		oci.WithNoNewPrivileges,
		oci.WithCgroup(cgroupsPath(cfg.GetLinux().GetCgroupParent(), m.ID, rt.Options.SystemdCgroup)),
		oci.WithAnnotations(map[string]string{
			annotationSandboxID:     m.ID,
			annotationContainerType: "sandbox",
		}),
	}
	for typ, path := range map[specs.LinuxNamespaceType]string{
		specs.NetworkNamespace: m.Namespaces.Net,
		specs.IPCNamespace:     m.Namespaces.IPC,
		specs.UTSNamespace:     m.Namespaces.UTS,
	} {
		if path == "" {
			opts = append(opts, oci.WithHostNamespace(typ))
		} else {
			opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: typ, Path: path}))
		}
	}
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: m.ID}, opts...)
}

// podPIDNamespace is the PID namespace of a pod's init, "" for a pod
// without one.
func (s *Service) podPIDNamespace(ctx context.Context, sandboxID string) (string, error) {
	c, err := s.client.LoadContainer(ctx, sandboxID)
	if err != nil {
		return "", err
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/proc/%d/ns/pid", task.Pid()), nil
}

// stopPodInit ends a pod's init, if it has one.
func stopPodInit(ctx context.Context, c containerd.Container) error {
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}
