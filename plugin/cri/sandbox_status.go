package cri

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// PodSandboxStatus reports a pod's state, IPs and namespaces; verbose,
// also its init, namespaces' paths, CNI result, runtime and config.
func (s *Service) PodSandboxStatus(ctx context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	ctx = s.nsContext(ctx)
	c, m, err := s.findSandbox(ctx, r.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	st := &runtimeapi.PodSandboxStatus{
		Id:             m.ID,
		Metadata:       m.config.GetMetadata(),
		State:          s.sandboxState(m),
		CreatedAt:      m.CreatedAt,
		Labels:         m.config.GetLabels(),
		Annotations:    m.config.GetAnnotations(),
		RuntimeHandler: m.RuntimeHandler,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{
			Options: m.config.GetLinux().GetSecurityContext().GetNamespaceOptions(),
		}},
	}
	if len(m.IPs) > 0 && st.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		st.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: m.IPs[0]}
		for _, ip := range m.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
	if r.Verbose {
		info, err := s.sandboxInfo(ctx, c, m)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

// sandboxInfo is the verbose status. Its keys are containerd's CRI's
// where they mean the same, which crictl inspectp and tools read.
type sandboxInfo struct {
	// Pid is the pod's init's (the pod init or the pause container), 0
	// without one or once it has exited.
	Pid           uint32 `json:"pid"`
	ProcessStatus string `json:"processStatus,omitempty"`
	// Namespaces are the paths the pod's namespaces are pinned at.
	Namespaces      podns.Paths                  `json:"namespaces"`
	NetNSClosed     bool                         `json:"netNamespaceClosed"`
	CNIResult       json.RawMessage              `json:"cniResult"`
	RuntimeHandler  string                       `json:"runtimeHandler"`
	RuntimeType     string                       `json:"runtimeType"`
	RuntimeOptions  any                          `json:"runtimeOptions"`
	Image           string                       `json:"image,omitempty"`
	SnapshotKey     string                       `json:"snapshotKey,omitempty"`
	Snapshotter     string                       `json:"snapshotter,omitempty"`
	Config          *runtimeapi.PodSandboxConfig `json:"config"`
	RuntimeSpec     *oci.Spec                    `json:"runtimeSpec"`
	SandboxState    string                       `json:"sandboxState"`
	PinnedNamespace bool                         `json:"pinnedNamespace"`
}

func (s *Service) sandboxInfo(ctx context.Context, c containerd.Container, m *sandboxMeta) (string, error) {
	rec, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return "", err
	}
	info := sandboxInfo{
		Namespaces:      m.Namespaces,
		CNIResult:       s.network.result(m.ID),
		RuntimeHandler:  m.RuntimeHandler,
		RuntimeType:     rec.Runtime.Name,
		Image:           rec.Image,
		SnapshotKey:     rec.SnapshotKey,
		Snapshotter:     rec.Snapshotter,
		Config:          m.config,
		SandboxState:    s.sandboxStateDir(m.ID),
		PinnedNamespace: true,
	}
	if m.Init != nil {
		info.ProcessStatus = "stopped"
		if m.Init.alive() {
			info.Pid, info.ProcessStatus = uint32(m.Init.Pid), "running"
		}
	}
	if m.Namespaces.Net != "" {
		_, err := os.Stat(m.Namespaces.Net)
		info.NetNSClosed = err != nil
	}
	if rec.Runtime.Options != nil {
		if opts, err := typeurl.UnmarshalAny(rec.Runtime.Options); err == nil {
			info.RuntimeOptions = opts
		}
	}
	if spec, err := c.Spec(ctx); err == nil {
		info.RuntimeSpec = spec
	}
	data, err := json.Marshal(info)
	return string(data), err
}

// sandboxState is READY while the pod's namespaces, files and init are
// there: after a reboot they are not, whatever was recorded, nor after its
// init died, and kubelet must make the pod again. A pod found to have lost
// them is noted in the records, for the lists (listedSandboxState).
func (s *Service) sandboxState(m *sandboxMeta) runtimeapi.PodSandboxState {
	if !m.Ready {
		return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	if !s.podIntact(m) {
		// Whoever finds it first, this or the init's exit event
		// (watchExits), tells kubelet's evented PLEG.
		if s.records.markLost(m.ID) {
			s.publish(context.Background(), m.ID, m.ID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
		}
		return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	return runtimeapi.PodSandboxState_SANDBOX_READY
}

func (s *Service) podIntact(m *sandboxMeta) bool {
	if m.Init != nil && !m.Init.alive() {
		return false
	}
	// The pod's files live in the volatile state directory too.
	for _, p := range []string{m.Namespaces.Net, m.Namespaces.IPC, m.Namespaces.UTS, filepath.Join(s.sandboxStateDir(m.ID), "hosts")} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// listedSandboxState is sandboxState from memory, for the lists kubelet
// makes every second: a pod's init's exit and its files' loss are noted
// when they happen (the exit watch) or are found (start-up, every
// re-subscription, every PodSandboxStatus), not looked for at every list.
func (s *Service) listedSandboxState(m *sandboxMeta) runtimeapi.PodSandboxState {
	if !m.Ready || s.records.isLost(m.ID) {
		return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	return runtimeapi.PodSandboxState_SANDBOX_READY
}
