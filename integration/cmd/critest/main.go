// Command critest runs cri-tools' conformance suite, critest, against our
// containerd: `make critest`. Every image critest asks for is built here
// from busybox and served from the loopback registry, which the daemon
// reaches for registry.k8s.io, k8s.gcr.io and gcr.io through hosts.toml.
// It ends with "critest: N passed, N failed, N skipped".
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// skip are the specs this machine cannot run: AppArmor's (the kernel has
// no AppArmor), and the one pulling an upstream image by its exact digest,
// which no locally built image can have.
//
// The helpers upstream images carry are small Go programs of ours
// (helpers/): a setuid one for NoNewPrivs, and an nginx stand-in whose
// process is named nginx with nginx's rewritten process title, for HostPID
// and ContainerPID; the default image's shell is Debian's dynamic busybox
// (dynamicBusybox), for MaskedPaths.
const skip = `[Aa]pp[Aa]rmor|public image with digest`

func main() {
	binDir := flag.String("bin", "bin", "directory with containerd and containerd-shim-mine-v2")
	focus := flag.String("focus", "", "only the specs matching this regular expression")
	flag.Parse()
	if err := run(*binDir, *focus); err != nil {
		fmt.Fprintln(os.Stderr, "critest:", err)
		os.Exit(1)
	}
}

func run(binDir, focus string) (retErr error) {
	ctx := context.Background()
	bed, err := testbed.Start(ctx, binDir, "")
	if err != nil {
		return err
	}
	defer func() {
		if err := bed.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if err := pushImages(bed.Registry); err != nil {
		return err
	}
	for _, host := range []string{"registry.k8s.io", "k8s.gcr.io", "gcr.io"} {
		if err := bed.Daemon.RouteRegistry(host, bed.Registry.Host); err != nil {
			return err
		}
	}
	endpoint := "unix://" + bed.Daemon.Address
	args := []string{
		"-runtime-endpoint", endpoint, "-image-endpoint", endpoint,
		"-nri-socket", bed.Daemon.NRISocket(),
		"-ginkgo.no-color", "-ginkgo.skip", skip, "-ginkgo.timeout", "25m",
		"-ginkgo.json-report", filepath.Join(bed.Daemon.Dir, "critest.json"),
	}
	if focus != "" {
		args = append(args, "-ginkgo.focus", focus)
	}
	// critest makes shared memory segments on the host with ipcmk and
	// leaves them: remove those that were not there before.
	before := shmSegments()
	defer func() {
		for id := range shmSegments() {
			if !before[id] {
				exec.Command("ipcrm", "-m", id).Run()
			}
		}
	}()
	cmd := exec.Command("critest", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("critest (make critest builds it): %w", err)
	}
	summary := regexp.MustCompile(`(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped`)
	var passed, failed, skipped string
	s := bufio.NewScanner(io.TeeReader(out, os.Stdout))
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		if m := summary.FindStringSubmatch(s.Text()); m != nil {
			passed, failed, skipped = m[1], m[2], m[4]
		}
	}
	runErr := cmd.Wait()
	if passed == "" {
		return fmt.Errorf("no summary from critest: %v", runErr)
	}
	printSkipped(filepath.Join(bed.Daemon.Dir, "critest.json"), focus)
	fmt.Printf("\ncritest: %s passed, %s failed, %s skipped\n", passed, failed, skipped)
	if failed != "0" {
		return fmt.Errorf("%s critest specs failed", failed)
	}
	return nil
}

// printSkipped lists the specs that were skipped and why: by the skip
// list, or by the spec itself (its message), from ginkgo's JSON report.
// Specs ginkgo leaves out of its tree on this OS are not in it.
func printSkipped(report, focus string) {
	skipRe, focusRe := regexp.MustCompile(skip), regexp.MustCompile(focus)
	data, err := os.ReadFile(report)
	if err != nil {
		fmt.Fprintln(os.Stderr, "critest: no report:", err)
		return
	}
	var suites []struct {
		SpecReports []struct {
			ContainerHierarchyTexts []string
			LeafNodeText            string
			State                   string
			Failure                 struct{ Message string }
		}
	}
	if err := json.Unmarshal(data, &suites); err != nil {
		fmt.Fprintln(os.Stderr, "critest: report:", err)
		return
	}
	fmt.Println("\nskipped specs:")
	for _, suite := range suites {
		for _, r := range suite.SpecReports {
			if r.State != "skipped" || r.LeafNodeText == "" {
				continue
			}
			name := strings.Join(append(r.ContainerHierarchyTexts, r.LeafNodeText), " ")
			why := "critest runs it only with -benchmark"
			switch {
			case r.Failure.Message != "":
				why = r.Failure.Message
			case skipRe.MatchString(name):
				why = "the skip list: " + skip
			case !focusRe.MatchString(name):
				continue // not asked for
			}
			fmt.Printf("  %s (%s)\n", name, why)
		}
	}
}

// pushImages serves every image critest pulls.
func pushImages(reg *testbed.Registry) error {
	base, err := testbed.BusyboxImage()
	if err != nil {
		return err
	}
	shell, err := dynamicBusybox()
	if err != nil {
		return err
	}
	variant := func(name string, from v1.Image, files map[string]string, change func(*v1.Config)) (v1.Image, error) {
		img := from
		var err error
		// A file of its own makes each variant a distinct image.
		f := map[string]string{"etc/critest-image": name + "\n"}
		for k, v := range files {
			f[k] = v
		}
		if img, err = testbed.WithFiles(img, f); err != nil {
			return nil, err
		}
		if change != nil {
			img, err = testbed.WithConfig(img, change)
		}
		return img, err
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\nuser1000:x:1000:1000::/home:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
	group := "root:x:0:\nwww-data:x:33:\nuser1000:x:1000:\ngroup50000:x:50000:user1000\nnogroup:x:65534:\n"
	users := map[string]string{"etc/passwd": passwd, "etc/group": group}
	helpers, err := buildHelpers()
	if err != nil {
		return err
	}
	// A web server that looks enough like nginx and httpd to critest: its
	// process is named nginx, its command line says "master process", it
	// writes nginx.pid, and its log mentions httpd.
	if base, err = testbed.WithEntries(base,
		testbed.Entry{Path: "usr/sbin/nginx", Mode: 0o755, Data: helpers["nginx"]},
		testbed.Entry{Path: "usr/bin/nonewprivs", Mode: 0o4755, Data: helpers["nonewprivs"]},
	); err != nil {
		return err
	}
	webOn := func(port string) func(c *v1.Config) {
		return func(c *v1.Config) {
			c.Cmd = []string{"/usr/sbin/nginx", "-p", port}
			c.ExposedPorts = map[string]struct{}{port + "/tcp": {}}
		}
	}
	web := webOn("80")
	// Debian's busybox has neither ipcs nor pgrep: scripts do what critest
	// asks of them.
	tools := map[string]string{
		"usr/bin/ipcs":  "#!/bin/sh\ncat /proc/sysvipc/shm\n",
		"usr/bin/pgrep": "#!/bin/sh\nfound=1\nfor d in /proc/[0-9]*; do\n  n=$(cat $d/comm 2>/dev/null) || continue\n  case \"$n\" in *\"$1\"*) echo ${d#/proc/}; found=0;; esac\ndone\nexit $found\n",
	}
	page := map[string]string{"www/index.html": "<html><body><h1>Welcome to nginx!</h1></body></html>\n"}
	sleep := func(c *v1.Config) { c.Cmd = []string{"sleep", "2147483647"} }

	images := []struct {
		refs   []string
		files  map[string]string
		change func(*v1.Config)
	}{
		{[]string{"e2e-test-images/busybox:1.29-2"}, tools, nil}, // from shell, below
		{[]string{"e2e-test-images/nginx:1.14-2", "e2e-test-images/httpd:2.4.39-4"}, page, web},
		{[]string{"pause:3.9", "pause:3.10"}, nil, sleep},
		{[]string{"k8s-staging-cri-tools/test-image-user-uid:latest"}, users, func(c *v1.Config) { c.User = "1002" }},
		{[]string{"k8s-staging-cri-tools/test-image-user-username:latest"}, users, func(c *v1.Config) { c.User = "www-data" }},
		{[]string{"k8s-staging-cri-tools/test-image-user-uid-group:latest"}, users, func(c *v1.Config) { c.User = "1003:users" }},
		{[]string{"k8s-staging-cri-tools/test-image-user-username-group:latest"}, users, func(c *v1.Config) { c.User = "www-data:www-data" }},
		{[]string{"k8s-staging-cri-tools/test-image-predefined-group:latest"}, users, func(c *v1.Config) { c.User = "1000" }},
		{[]string{"k8s-staging-cri-tools/test-image-latest:latest"}, nil, nil},
		{[]string{"k8s-staging-cri-tools/test-image-tag:test", "k8s-staging-cri-tools/test-image-tag:all"}, nil, nil},
		{[]string{"k8s-staging-cri-tools/test-image-1:latest"}, nil, nil},
		{[]string{"k8s-staging-cri-tools/test-image-2:latest"}, nil, nil},
		{[]string{"k8s-staging-cri-tools/test-image-3:latest"}, nil, nil},
		{[]string{"k8s-staging-cri-tools/test-image-tags:1", "k8s-staging-cri-tools/test-image-tags:2", "k8s-staging-cri-tools/test-image-tags:3"}, nil, nil},
		{[]string{"k8s-staging-cri-tools/hostnet-nginx-amd64:latest"}, page, webOn("12003")},
		{[]string{"e2e-test-images/nonewprivs:1.3"}, nil, func(c *v1.Config) { c.Cmd = []string{"/usr/bin/nonewprivs"} }},
	}
	for _, im := range images {
		from := base
		if im.refs[0] == "e2e-test-images/busybox:1.29-2" {
			from = shell
		}
		img, err := variant(strings.Join(im.refs, ","), from, im.files, im.change)
		if err != nil {
			return err
		}
		for _, ref := range im.refs {
			if _, err := reg.Push(ref, img); err != nil {
				return err
			}
		}
	}
	return nil
}

// dynamicBusybox is busybox as the upstream e2e image has it: a shell that
// execs the commands it finds on PATH (MaskedPaths' spec masks /bin/ls and
// expects sh to fail to run it), which Debian's dynamically linked busybox
// is and busybox-static is not. hack/install-critest.sh fetches it; its
// libraries come from the host.
func dynamicBusybox() (v1.Image, error) {
	bin := filepath.Join(os.Getenv("BUSYBOX_DIR"), "bin/busybox")
	if os.Getenv("BUSYBOX_DIR") == "" {
		bin = "/usr/local/lib/mine-critest/busybox/bin/busybox"
	}
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s (run hack/install-critest.sh): %w", bin, err)
	}
	libs := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		var p string
		switch {
		case len(f) >= 3 && f[1] == "=>":
			p = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			p = f[0]
		default:
			continue
		}
		libs[strings.TrimPrefix(p, "/")] = p
	}
	return testbed.BusyboxImageFrom(bin, libs)
}

// buildHelpers builds the helper programs, static, and returns them by
// name.
func buildHelpers() (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "critest-helpers-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := map[string][]byte{}
	for _, name := range []string{"nginx", "nonewprivs"} {
		bin := filepath.Join(dir, name)
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./integration/cmd/critest/helpers/"+name)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build helper %s: %v: %s", name, err, msg)
		}
		if out[name], err = os.ReadFile(bin); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// shmSegments lists the host's System V shared memory segment ids.
func shmSegments() map[string]bool {
	ids := map[string]bool{}
	data, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return ids
	}
	for i, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 1 {
			ids[f[1]] = true
		}
	}
	return ids
}
