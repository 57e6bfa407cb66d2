package cri

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxStatus reports a pod's state, IPs and namespaces.
func (s *Service) PodSandboxStatus(ctx context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	ctx = s.nsContext(ctx)
	_, m, err := s.findSandbox(ctx, r.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	id := m.ID
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
		info, _ := json.Marshal(map[string]any{
			"namespaces":      m.Namespaces,
			"runtimeHandler":  m.RuntimeHandler,
			"sandboxState":    s.sandboxStateDir(id),
			"pinnedNamespace": true,
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// sandboxState is READY while the pod's namespaces, files and init are
// there: after a reboot they are not, whatever was recorded, nor after its
// init died, and kubelet must make the pod again.
func (s *Service) sandboxState(m *sandboxMeta) runtimeapi.PodSandboxState {
	if !m.Ready || (m.Init != nil && !m.Init.alive()) {
		return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	// The pod's files live in the volatile state directory too.
	for _, p := range []string{m.Namespaces.Net, m.Namespaces.IPC, m.Namespaces.UTS, filepath.Join(s.sandboxStateDir(m.ID), "hosts")} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		}
	}
	return runtimeapi.PodSandboxState_SANDBOX_READY
}
