package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// defaultKubelet is where hack/install-kubelet.sh (make kubelet) puts the
// kubelet `make node-e2e` runs.
const defaultKubelet = "/usr/local/lib/mine-node-e2e/kubelet-v1.37.2/kubelet"

// staticPod is a pod as an operator writes one: kubelet adds what it adds
// to every pod (its cgroup parent below its cgroup root, its labels and
// annotations, a PID namespace per container, resources of a best-effort
// pod).
const staticPod = `apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
`

// measureKubelet runs a real kubelet, standalone, against the daemon and
// times n static pods, one at a time, from their manifest's placement to
// kubelet reporting them Running: the pod's start as a node sees it,
// kubelet's own work included. kubelet runs with its evented PLEG, which
// learns of the container's start from GetContainerEvents; with the
// generic one, a start would wait up to a second for the next relist and
// the figure would be mostly that wait. One pod first warms kubelet up.
func measureKubelet(ctx context.Context, d *testbed.Daemon, binary string, n int, out samples) (retErr error) {
	c, closeCRI, err := dial(ctx, d)
	if err != nil {
		return err
	}
	defer closeCRI()
	dir, err := os.MkdirTemp("", "mine-bench-kubelet-")
	if err != nil {
		return err
	}
	k, err := testbed.NewKubelet(dir, binary, "unix://"+d.Address, "featureGates:\n  EventedPLEG: true\n")
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	defer func() {
		// Manifests gone and kubelet stopped first, or it would restart
		// the pods the CRI removes; its cgroups go last, empty.
		os.RemoveAll(k.Manifests)
		k.Stop()
		if err := c.removeAll(ctx); err != nil && retErr == nil {
			retErr = err
		}
		if err := k.Teardown(); err != nil && retErr == nil {
			retErr = fmt.Errorf("kubelet: %w", err)
		}
		if retErr == nil {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "bench: kubelet's directory kept for its log:", dir)
		}
	}()
	if err := k.Start(ctx); err != nil {
		return err
	}
	for i := range n + 1 {
		name := fmt.Sprintf("bench-%d", i)
		tmp := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf(staticPod, name)), 0o644); err != nil {
			return err
		}
		t0 := time.Now()
		if err := os.Rename(tmp, filepath.Join(k.Manifests, name+".yaml")); err != nil {
			return err
		}
		if err := waitRunning(ctx, k, name+"-"+k.NodeName); err != nil {
			return err
		}
		if i > 0 {
			out.ms("kubelet.start", time.Since(t0))
		}
	}
	return nil
}

// waitRunning polls kubelet's /pods, every 10 ms (the figure's
// resolution), until the pod's phase is Running.
func waitRunning(ctx context.Context, k *testbed.Kubelet, pod string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, err := k.ReadOnly(ctx, "/pods")
		if err == nil {
			var list struct {
				Items []struct {
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
					Status struct {
						Phase string `json:"phase"`
					} `json:"status"`
				} `json:"items"`
			}
			if err := json.Unmarshal(data, &list); err != nil {
				return err
			}
			for _, p := range list.Items {
				if p.Metadata.Name == pod && p.Status.Phase == "Running" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s not Running 60 s after its manifest was placed:\n%s", pod, k.Tail(20))
		}
		time.Sleep(10 * time.Millisecond) // polling is the measurement itself
	}
}

// removeAll stops and removes every pod of the daemon.
func (c *cri) removeAll(ctx context.Context) error {
	pods, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var ids []string
	for _, p := range pods.Items {
		ids = append(ids, p.Id)
	}
	return c.removePods(ctx, ids)
}
