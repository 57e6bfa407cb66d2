package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// kubelet's bandwidth annotations reach CNI's bandwidth plugin, chained in
// the node's network: the pod's traffic is shaped on the host (a token
// bucket on its veth for what it receives, on an ifb device for what it
// sends), and the shaping goes with the pod. A rate that does not parse
// is InvalidArgument, before anything is made.
func TestCRIPodBandwidth(t *testing.T) {
	dir := t.TempDir()
	d, err := testbed.NewDaemon(dir, binDir, "")
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "mine-test",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
`, d.Network.Bridge, d.Network.Subnet)
	if err := os.WriteFile(filepath.Join(d.CNIConfDir(), "10-mine-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startOwnDaemon(t, d, err)
	c := newCRI(t)
	ctx := testContext(t)

	pod := podConfig(t, "bandwidth-bad")
	pod.Annotations = map[string]string{"kubernetes.io/egress-bandwidth": "fast"}
	if _, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an egress bandwidth of %q: %v, want InvalidArgument", "fast", err)
	}

	before := shaping(t)
	pod = podConfig(t, "bandwidth")
	pod.Annotations = map[string]string{"kubernetes.io/ingress-bandwidth": "3M", "kubernetes.io/egress-bandwidth": "5M"}
	podID := c.runPod(t, pod)
	got := shaping(t)
	for _, rate := range []string{"rate 3Mbit", "rate 5Mbit"} {
		if strings.Count(got, rate) != strings.Count(before, rate)+1 {
			t.Errorf("no token bucket at %s on the host:\n%s", rate, got)
		}
	}
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if after := shaping(t); after != before {
		t.Errorf("the pod's shaping outlived it:\n%s\nbefore the pod:\n%s", after, before)
	}
}

// shaping lists the host's token-bucket qdiscs and the bandwidth plugin's
// ifb devices (bwp...; loading the ifb module also makes ifb0 and ifb1).
func shaping(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, args := range [][]string{{"tc", "qdisc", "show"}, {"ip", "-o", "link", "show", "type", "ifb"}} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "tbf") || strings.Contains(line, ": bwp") {
				lines = append(lines, line)
			}
		}
	}
	return strings.Join(lines, "\n")
}
