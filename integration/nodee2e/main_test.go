//go:build nodee2e

// Package nodee2e runs a real kubelet, v1.37.2 in standalone mode, against
// the daemon: static pods from a manifest directory, checked through what
// kubelet itself reports (/pods, /stats/summary, /containerLogs,
// /metrics/probes, its log) and through the CRI. It is `make node-e2e`,
// kept out of `go test ./...` by its build tag.
//
// MINE_E2E_RUNTIME=stock runs the same pods against stock containerd
// v2.4.2 (`make node-e2e-stock`), so that both timing tables compare.
package nodee2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

const (
	defaultKubelet  = "/usr/local/lib/mine-node-e2e/kubelet-v1.37.2/kubelet"
	defaultStockDir = "/usr/local/lib/mine-bench/containerd-v2.4.2"
	// setuidImage is busybox with /bin/euid setuid root.
	setuidImage = "busybox-setuid:latest"
)

var (
	runtimeName string // mine or stock
	bed         *testbed.Bed
	kubelet     *testbed.Kubelet
	cri         runtimeapi.RuntimeServiceClient
	watch       *podWatch
	// hostPaths holds the hostPath volumes' directories.
	hostPaths string
	// netnsAtStart is /var/run/netns before any pod ran, and netnsDir
	// whether the directory itself existed: stock containerd makes it.
	netnsAtStart []string
	netnsDir     bool
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	flag.Parse()
	// The pods all run from the start and their checks only wait: they
	// wait together, whatever -parallel defaults to on this machine.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", strconv.Itoa(len(podTests)))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "node e2e runs kubelet and containers and needs root")
		return 1
	}
	runtimeName = env("MINE_E2E_RUNTIME", "mine")
	if runtimeName != "mine" && runtimeName != "stock" {
		fmt.Fprintf(os.Stderr, "MINE_E2E_RUNTIME=%s: want mine or stock\n", runtimeName)
		return 1
	}
	dir, err := os.MkdirTemp("", "mine-node-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	netnsAtStart = netnsEntries()
	_, err = os.Stat(netnsPath)
	netnsDir = err == nil
	code = 1
	if err := setUp(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "set-up:", err)
	} else {
		code = m.Run()
		watch.stop()
	}
	if code != 0 && kubelet != nil {
		fmt.Fprintf(os.Stderr, "\nkubelet log (%s), last lines:\n%s\n", kubelet.Log, kubelet.Tail(40))
	}
	if err := tearDown(); err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
		fmt.Fprintln(os.Stderr, "kept for its logs:", dir)
		return 1
	}
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "kept for its logs:", dir)
	}
	return code
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// setUp starts the runtime under test, pulls the images, starts kubelet
// and places every pod's manifest at once, as a node's boot does.
func setUp(ctx context.Context, dir string) error {
	var err error
	switch runtimeName {
	case "mine":
		var binDir string
		if binDir, err = filepath.Abs(env("MINE_BIN_DIR", "../../bin")); err != nil {
			return err
		}
		bed, err = testbed.Start(ctx, binDir, "")
	case "stock":
		bed, err = testbed.StartStock(ctx, env("MINE_STOCK_DIR", defaultStockDir))
	}
	if err != nil {
		bed = nil // a bed that failed to start has closed itself
		return err
	}
	if err := pushSetuidImage(dir); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+bed.Daemon.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	cri = runtimeapi.NewRuntimeServiceClient(conn)
	images := runtimeapi.NewImageServiceClient(conn)
	// Pulled beforehand, as node e2e suites do, so that the timings are
	// the runtime's and kubelet's, not the registry's.
	pulls := []string{"busybox", setuidImage}
	if runtimeName == "stock" {
		pulls = append(pulls, testbed.PauseImage)
	}
	for _, ref := range pulls {
		if _, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	hostPaths = filepath.Join(dir, "host-paths")
	if err := os.MkdirAll(hostPaths, 0o755); err != nil {
		return err
	}
	kubelet, err = testbed.NewKubelet(filepath.Join(dir, "kubelet"), env("MINE_KUBELET", defaultKubelet), "unix://"+bed.Daemon.Address, "")
	if err != nil {
		return err
	}
	if err := kubelet.Start(ctx); err != nil {
		return err
	}
	watch = startWatch(kubelet)
	for _, p := range podTests {
		if err := placeManifest(p.manifest); err != nil {
			return err
		}
	}
	return nil
}

// pushSetuidImage builds the euid helper, statically, and serves busybox
// with it installed setuid root.
func pushSetuidImage(dir string) error {
	bin := filepath.Join(dir, "euid")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./testdata/euid")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build testdata/euid: %v: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	base, err := testbed.BusyboxImage()
	if err != nil {
		return err
	}
	img, err := testbed.WithEntries(base, testbed.Entry{Path: "bin/euid", Mode: 0o4755, Data: data})
	if err != nil {
		return err
	}
	_, err = bed.Registry.Push("library/"+setuidImage, img)
	return err
}

// placeManifest renders testdata/pods/NAME.yaml into the static pod
// directory. It is written beside it first and renamed in, so that
// kubelet never reads half a file.
func placeManifest(name string) error {
	tmpl, err := template.ParseFiles(filepath.Join("testdata/pods", name+".yaml"))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, map[string]string{
		"Image":       "busybox:latest",
		"SetuidImage": setuidImage,
		"HostPaths":   hostPaths,
	})
	if err != nil {
		return err
	}
	tmp := filepath.Join(kubelet.Dir, name+".yaml")
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	watch.placed(podName(name))
	return os.Rename(tmp, filepath.Join(kubelet.Manifests, name+".yaml"))
}

// podName is the name kubelet gives the static pod of a manifest.
func podName(manifest string) string {
	return manifest + "-" + kubelet.NodeName
}

// tearDown removes the pods through kubelet, as an operator would, then
// stops kubelet and the runtime. Each part reports what was left behind.
func tearDown() error {
	var errs []string
	if kubelet != nil {
		if err := removeAllPods(3 * time.Minute); err != nil {
			errs = append(errs, err.Error())
		}
		if err := kubelet.Teardown(); err != nil {
			errs = append(errs, "kubelet: "+err.Error())
		}
	}
	if bed != nil {
		if err := bed.Close(); err != nil {
			errs = append(errs, runtimeName+": "+err.Error())
		}
	}
	if !netnsDir {
		os.Remove(netnsPath) // only if empty: a namespace left is reported
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// removeAllPods removes every manifest and waits until the runtime holds
// no pod sandbox and no container: kubelet stops them at once, and its
// garbage collector, which runs every minute, removes them.
func removeAllPods(timeout time.Duration) error {
	entries, err := os.ReadDir(kubelet.Manifests)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(kubelet.Manifests, e.Name())); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		left, err := criLeftovers()
		if err == nil && left == "" {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("after removing the manifests: %w", err)
			}
			return fmt.Errorf("%v after removing the manifests, the runtime still has %s", timeout, left)
		}
		select {
		case <-kubelet.Exited():
			return fmt.Errorf("kubelet exited while removing the pods")
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// criLeftovers describes the sandboxes and containers the runtime still
// has, "" for none.
func criLeftovers() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return "", err
	}
	ctrs, err := cri.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return "", err
	}
	var left []string
	for _, p := range pods.Items {
		left = append(left, fmt.Sprintf("sandbox %s (%s, %s)", p.Id[:12], p.GetMetadata().GetName(), p.State))
	}
	for _, c := range ctrs.Containers {
		left = append(left, fmt.Sprintf("container %s (%s of %s, %s)", c.Id[:12], c.GetMetadata().GetName(), c.Labels["io.kubernetes.pod.name"], c.State))
	}
	return strings.Join(left, ", "), nil
}
