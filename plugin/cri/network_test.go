package cri

import (
	"math"
	"net"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	gocni "github.com/containerd/go-cni"
)

func TestPodIPsAreThePodInterfacesIPv4First(t *testing.T) {
	ipc := func(ip string) *gocni.IPConfig { return &gocni.IPConfig{IP: net.ParseIP(ip)} }
	result := &gocni.Result{Interfaces: map[string]*gocni.Config{
		// The bridge and the host side carry addresses of their own.
		"cni0":     {IPConfigs: []*gocni.IPConfig{ipc("10.88.0.1")}},
		"veth1234": {IPConfigs: []*gocni.IPConfig{ipc("10.88.0.99")}},
		"lo":       {IPConfigs: []*gocni.IPConfig{ipc("127.0.0.1")}, Sandbox: "/ns"},
		"eth0":     {IPConfigs: []*gocni.IPConfig{ipc("fd00::5"), ipc("10.88.0.5"), ipc("10.88.1.5")}, Sandbox: "/ns"},
	}}
	for range 20 { // map order must not matter
		ips, err := podIPs(result)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"10.88.0.5", "10.88.1.5", "fd00::5"}; !slices.Equal(ips, want) {
			t.Fatalf("pod IPs %v, want %v", ips, want)
		}
	}
	result.Interfaces["eth0"].IPConfigs = nil
	if _, err := podIPs(result); err == nil {
		t.Error("a pod interface without an address was accepted")
	}
	delete(result.Interfaces, "eth0")
	if _, err := podIPs(result); err == nil {
		t.Error("a result without the pod's interface gave IPs")
	}
}

func TestPodBandwidth(t *testing.T) {
	bw, err := podBandwidth(map[string]string{ingressBandwidthAnnotation: "1M", egressBandwidthAnnotation: "2.5M", "other": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (gocni.BandWidth{IngressRate: 1000000, IngressBurst: math.MaxUint32, EgressRate: 2500000, EgressBurst: math.MaxUint32}); bw == nil || *bw != want {
		t.Errorf("bandwidth %+v, want %+v", bw, want)
	}
	if bw, err := podBandwidth(map[string]string{egressBandwidthAnnotation: "10k"}); err != nil || bw == nil || bw.IngressRate != 0 || bw.EgressRate != 10000 {
		t.Errorf("egress alone: %+v, %v", bw, err)
	}
	if bw, err := podBandwidth(nil); bw != nil || err != nil {
		t.Errorf("no annotation: %+v, %v", bw, err)
	}
	for _, v := range []string{"fast", "999", "2P"} {
		if _, err := podBandwidth(map[string]string{ingressBandwidthAnnotation: v}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ingress %q: %v, want InvalidArgument", v, err)
		}
	}
}

// kubelet reads a pod's default interface unchecked: eth0, else the first.
func TestNetworkUsageDefaultInterface(t *testing.T) {
	dev := func(name string) netDevice { return netDevice{name: name, counters: make([]uint64, txDropped+1)} }
	if nu := networkUsage([]netDevice{dev("net1"), dev("eth0")}, 1); nu.GetDefaultInterface().GetName() != "eth0" {
		t.Errorf("default %v, want eth0", nu.GetDefaultInterface())
	}
	if nu := networkUsage([]netDevice{dev("net1"), dev("net2")}, 1); nu.GetDefaultInterface().GetName() != "net1" {
		t.Errorf("default %v, want the first, net1", nu.GetDefaultInterface())
	}
	if nu := networkUsage(nil, 1); nu != nil {
		t.Errorf("no interface: %v, want no network usage", nu)
	}
}
