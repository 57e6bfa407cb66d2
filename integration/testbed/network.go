package testbed

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// cniNetwork is the pod network of one test bed: a bridge of its own with
// a subnet of its own, so that beds do not collide.
type cniNetwork struct {
	Bridge string
	Subnet string // 10.200.N.0/24
	// hostportChains tells whether portmap's iptables chains existed
	// before the bed: if not, teardown removes them.
	hostportChains bool
}

func newCNINetwork(dir string) *cniNetwork {
	sum := sha256.Sum256([]byte(dir))
	return &cniNetwork{
		Bridge:         fmt.Sprintf("mine%x", sum[:4]),
		Subnet:         fmt.Sprintf("10.200.%d.0/24", sum[4]),
		hostportChains: natChainExists("CNI-HOSTPORT-DNAT"),
	}
}

// writeConfig writes bridge + host-local + portmap; go-cni adds loopback.
func (n *cniNetwork) writeConfig(confDir string) error {
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "mine-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, n.Bridge, n.Subnet)
	return os.WriteFile(filepath.Join(confDir, "10-mine-test.conflist"), []byte(conf), 0o644)
}

// remove deletes the bridge and, if the bed created them, portmap's
// chains. CNI DEL removes each pod's own rules; these outlive the pods.
func (n *cniNetwork) remove() error {
	var errs []string
	if out, err := exec.Command("ip", "link", "show", n.Bridge).CombinedOutput(); err == nil {
		if out, err := exec.Command("ip", "link", "del", n.Bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("delete bridge %s: %v: %s", n.Bridge, err, out))
		}
	} else {
		_ = out
	}
	if !n.hostportChains && natChainExists("CNI-HOSTPORT-DNAT") {
		if err := removeHostportChains(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func natChainExists(chain string) bool {
	return exec.Command("iptables", "-w", "-t", "nat", "-S", chain).Run() == nil
}

// removeHostportChains deletes the rules jumping to portmap's chains, then
// the chains. Rules are replayed through the shell, which keeps their
// quoted comments whole.
func removeHostportChains() error {
	out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").Output()
	if err != nil {
		return err
	}
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "-N" && strings.HasPrefix(f[1], "CNI-HOSTPORT-"):
			chains = append(chains, f[1])
		case len(f) > 2 && f[0] == "-A" && !strings.HasPrefix(f[1], "CNI-") && strings.Contains(line, "-j CNI-HOSTPORT-"):
			rule := "iptables -w -t nat -D" + strings.TrimPrefix(line, "-A")
			if out, err := exec.Command("sh", "-c", rule).CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v: %s", rule, err, out)
			}
		}
	}
	for _, c := range chains {
		exec.Command("iptables", "-w", "-t", "nat", "-F", c).Run()
	}
	for _, c := range chains {
		if out, err := exec.Command("iptables", "-w", "-t", "nat", "-X", c).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -X %s: %v: %s", c, err, out)
		}
	}
	return nil
}
