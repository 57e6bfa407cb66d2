package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	gocni "github.com/containerd/go-cni"
	"github.com/containerd/log"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/failpoint"
)

// network attaches pods to the CNI network configured in cni.conf_dir.
type network struct {
	mu  sync.Mutex
	cni gocni.CNI
	// resultPath is where a pod's CNI result is kept for its verbose
	// status, so that it survives restarts of the daemon; "" keeps none.
	resultPath func(id string) string
}

func newNetwork(cfg *config.Config) (*network, error) {
	c, err := gocni.New(
		// The pod network alone: package podns brings lo up itself.
		gocni.WithMinNetworkCount(1),
		gocni.WithPluginConfDir(cfg.CNI.ConfDir),
		gocni.WithPluginDir(cfg.CNI.BinDirs),
		gocni.WithInterfacePrefix("eth"),
	)
	if err != nil {
		return nil, fmt.Errorf("CNI: %w", err)
	}
	return &network{cni: c}, nil
}

// load reads the configuration again: it may have been installed after
// the daemon started, as network add-ons do.
func (n *network) load() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.cni.Load(gocni.WithDefaultConf); err != nil {
		return fmt.Errorf("no CNI network configuration: %w", err)
	}
	return nil
}

// status is nil once a pod network is configured.
func (n *network) status() error {
	if err := n.load(); err != nil {
		return err
	}
	return n.cni.Status()
}

// cniTimeout bounds a CNI ADD or DEL: a plugin that never returns is
// killed (libcni runs it with the context) rather than holding the pod's
// name, and a configuration reload, for good. RunPodSandbox goes on after
// kubelet gives up, so that its retry finds the pod; this is kubelet's own
// deadline for it (twice its default runtime request timeout).
const cniTimeout = 4 * time.Minute

// cniOpts are the arguments and capabilities a pod's CNI ADD and DEL
// get, those containerd's CRI gives: port mappings, DNS, bandwidth, the
// pod's annotations and its cgroup parent.
func cniOpts(id string, cfg *runtimeapi.PodSandboxConfig) []gocni.NamespaceOpts {
	md := cfg.GetMetadata()
	opts := []gocni.NamespaceOpts{gocni.WithLabels(map[string]string{
		"K8S_POD_NAMESPACE":          md.GetNamespace(),
		"K8S_POD_NAME":               md.GetName(),
		"K8S_POD_INFRA_CONTAINER_ID": id,
		"K8S_POD_UID":                md.GetUid(),
		"IgnoreUnknown":              "1",
	}), gocni.WithCapability(podAnnotationsCapability, cfg.GetAnnotations())}
	var ports []gocni.PortMapping
	for _, p := range cfg.GetPortMappings() {
		if p.HostPort <= 0 {
			continue
		}
		ports = append(ports, gocni.PortMapping{
			HostPort:      p.HostPort,
			ContainerPort: p.ContainerPort,
			Protocol:      strings.ToLower(p.Protocol.String()),
			HostIP:        p.HostIp,
		})
	}
	if len(ports) > 0 {
		opts = append(opts, gocni.WithCapabilityPortMap(ports))
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		opts = append(opts, gocni.WithCapabilityDNS(gocni.DNS{Servers: dns.Servers, Searches: dns.Searches, Options: dns.Options}))
	}
	// RunPodSandbox refused a pod whose bandwidth does not parse.
	if bw, err := podBandwidth(cfg.GetAnnotations()); err == nil && bw != nil {
		opts = append(opts, gocni.WithCapabilityBandWidth(*bw))
	}
	if parent := cfg.GetLinux().GetCgroupParent(); parent != "" {
		opts = append(opts, gocni.WithCapabilityCgroupPath(parent))
	}
	return opts
}

// podAnnotationsCapability hands CNI plugins that ask for it the pod's
// annotations, under containerd's name.
const podAnnotationsCapability = "io.kubernetes.cri.pod-annotations"

// The annotations kubelet passes a pod's traffic shaping in.
const (
	ingressBandwidthAnnotation = "kubernetes.io/ingress-bandwidth"
	egressBandwidthAnnotation  = "kubernetes.io/egress-bandwidth"
)

// podBandwidth is the pod's traffic shaping for CNI's bandwidth plugin, in
// bits per second, nil when no annotation asks for any.
func podBandwidth(annotations map[string]string) (*gocni.BandWidth, error) {
	ingress, err := bandwidthRate(annotations, ingressBandwidthAnnotation)
	if err != nil {
		return nil, err
	}
	egress, err := bandwidthRate(annotations, egressBandwidthAnnotation)
	if err != nil {
		return nil, err
	}
	if ingress == 0 && egress == 0 {
		return nil, nil
	}
	// As containerd: no burst limit to speak of.
	bw := &gocni.BandWidth{}
	if ingress != 0 {
		bw.IngressRate, bw.IngressBurst = ingress, math.MaxUint32
	}
	if egress != 0 {
		bw.EgressRate, bw.EgressBurst = egress, math.MaxUint32
	}
	return bw, nil
}

// bandwidthRate is the rate an annotation asks for, 0 where it is not
// set. One that does not parse, or is below 1 kbit/s or above 1 Pbit/s,
// is InvalidArgument, as containerd refuses it.
func bandwidthRate(annotations map[string]string, key string) (uint64, error) {
	v, ok := annotations[key]
	if !ok {
		return 0, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, invalid(fmt.Sprintf("annotation %s: %q is not a rate: %v", key, v, err))
	}
	if q.Cmp(resource.MustParse("1k")) < 0 || q.Cmp(resource.MustParse("1P")) > 0 {
		return 0, invalid(fmt.Sprintf("annotation %s: %s is outside 1k to 1P bits per second", key, v))
	}
	return uint64(q.Value()), nil
}

// setup runs CNI ADD for a pod and returns its IPs, IPv4 first.
func (n *network) setup(ctx context.Context, id, netns string, cfg *runtimeapi.PodSandboxConfig) ([]string, error) {
	if err := n.load(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	result, err := n.cni.Setup(ctx, id, netns, cniOpts(id, cfg)...)
	if err == nil {
		// After ADD did its work: what it allocated must be released.
		err = failpoint.Inject(ctx, failpoint.CNIAdd)
	}
	if err != nil {
		return nil, fmt.Errorf("CNI ADD for pod %s: %w", id, err)
	}
	n.keepResult(ctx, id, result)
	return podIPs(result)
}

// podIPs are the addresses of the pod's own interface, eth0 (not the
// bridge's or the host side's, which a result may list too), IPv4 first,
// each family in the result's order, so that the pod IP is the same on
// every status and after every restart.
func podIPs(result *gocni.Result) ([]string, error) {
	iface := result.Interfaces[podInterface]
	if iface == nil || len(iface.IPConfigs) == 0 {
		// A pod without an address is not ready for anything, as with
		// containerd's CRI.
		return nil, fmt.Errorf("CNI result gives %s of the pod no address", podInterface)
	}
	var v4, v6 []string
	for _, ipc := range iface.IPConfigs {
		if ipc.IP.To4() != nil {
			v4 = append(v4, ipc.IP.String())
		} else {
			v6 = append(v6, ipc.IP.String())
		}
	}
	return append(v4, v6...), nil
}

// podInterface is the pod's interface: go-cni names it from the "eth"
// prefix given above, as kubelet expects.
const podInterface = "eth0"

// teardown runs CNI DEL; deleting twice is harmless, as CNI requires.
func (n *network) teardown(ctx context.Context, id, netns string, cfg *runtimeapi.PodSandboxConfig) error {
	if err := n.load(); err != nil {
		return err
	}
	if err := failpoint.Inject(ctx, failpoint.CNIDel); err != nil {
		return fmt.Errorf("CNI DEL for pod %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	if err := n.cni.Remove(ctx, id, netns, cniOpts(id, cfg)...); err != nil {
		return fmt.Errorf("CNI DEL for pod %s: %w", id, err)
	}
	if n.resultPath != nil {
		os.Remove(n.resultPath(id))
	}
	return nil
}

// keepResult writes a pod's CNI result where its verbose status reads it.
// Failing to is no reason to fail the pod.
func (n *network) keepResult(ctx context.Context, id string, result *gocni.Result) {
	if n.resultPath == nil {
		return
	}
	data, err := json.Marshal(result)
	if err == nil {
		err = os.WriteFile(n.resultPath(id), data, 0o600)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("keep the pod's CNI result")
	}
}

// result is a pod's CNI result as kept, nil without one (a pod in the
// host's network).
func (n *network) result(id string) json.RawMessage {
	if n.resultPath == nil {
		return nil
	}
	data, err := os.ReadFile(n.resultPath(id))
	if err != nil || !json.Valid(data) {
		return nil
	}
	return data
}

// configJSON is the CNI configuration loaded, as JSON.
func (n *network) configJSON() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	data, err := json.Marshal(n.cni.GetConfig())
	return string(data), err
}
