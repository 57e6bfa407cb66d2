package cri

import (
	"testing"

	"github.com/distribution/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCredentialRegistry(t *testing.T) {
	named, err := reference.ParseNormalizedNamed("busybox")
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"":                            "docker.io", // the image's own registry
		"https://index.docker.io/v1/": "docker.io",
		"registry.example.com:5000":   "registry.example.com:5000",
		"https://quay.io":             "quay.io",
		"quay.io/org":                 "quay.io",
	} {
		if got := credentialRegistry(named, &runtimeapi.AuthConfig{ServerAddress: addr}); got != want {
			t.Errorf("server_address %q: %q, want %q", addr, got, want)
		}
	}
}
