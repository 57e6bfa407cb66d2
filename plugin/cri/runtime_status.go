package cri

import (
	"context"
	"encoding/json"
	"maps"
	"runtime"
	"slices"

	"github.com/containerd/containerd/v2/version"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RuntimeName is what Version reports.
const RuntimeName = "mine"

// Version reports the runtime and CRI versions.
func (s *Service) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       RuntimeName,
		RuntimeVersion:    version.Version,
		RuntimeApiVersion: "v1",
	}, nil
}

// Status reports whether the runtime and the pod network are ready, and
// the runtime handlers with their features; verbose, also the
// configuration and the CNI network's, under containerd's CRI's keys.
func (s *Service) Status(ctx context.Context, r *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	network := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	cniErr := s.network.status()
	if cniErr != nil {
		network.Status = false
		network.Reason = "NetworkPluginNotReady"
		network.Message = cniErr.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			network,
		}},
		RuntimeHandlers: s.runtimeHandlers(ctx),
		// kubelet refuses pods with supplementalGroupsPolicy: Strict
		// unless the runtime says it applies it (package spec does).
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	if r.GetVerbose() {
		info, err := s.statusInfo(cniErr)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Info = info
	}
	return resp, nil
}

// runtimeHandlers lists the configured handlers, sorted, after the default
// one under the name "": kubelet looks a pod without a runtime class up
// by that name, and says "Unknown runtime handler" at every sync of such
// a pod when it is missing. As with containerd's CRI.
func (s *Service) runtimeHandlers(ctx context.Context) []*runtimeapi.RuntimeHandler {
	cfg := s.config()
	names := slices.Sorted(maps.Keys(cfg.Runtimes))
	var handlers []*runtimeapi.RuntimeHandler
	if def, ok := cfg.Runtimes[cfg.DefaultRuntimeName]; ok {
		handlers = append(handlers, &runtimeapi.RuntimeHandler{Name: "", Features: handlerFeatures(ctx, def)})
	}
	for _, name := range names {
		handlers = append(handlers, &runtimeapi.RuntimeHandler{Name: name, Features: handlerFeatures(ctx, cfg.Runtimes[name])})
	}
	return handlers
}

// statusInfo is the verbose status: the plugin's configuration, the Go
// version, the CNI configuration loaded and how its last load went, each
// a JSON value, as crictl info shows them.
func (s *Service) statusInfo(cniErr error) (map[string]string, error) {
	info := map[string]string{}
	for key, v := range map[string]any{"config": s.config().Redacted(), "golang": runtime.Version()} {
		data, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		info[key] = string(data)
	}
	cniConfig, err := s.network.configJSON()
	if err != nil {
		return nil, err
	}
	info["cniconfig"] = cniConfig
	info["lastCNILoadStatus"] = "OK"
	if cniErr != nil {
		info["lastCNILoadStatus"] = cniErr.Error()
	}
	return info, nil
}
