package cri

import (
	"net"
	"slices"
	"testing"

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
