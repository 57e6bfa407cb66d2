package cri

import (
	"strings"

	"github.com/moby/sys/signal"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// stopSignal is the signal that stops a container, by name: the one its
// CRI config asks for, else its image's, else SIGTERM, as with
// containerd's CRI.
func stopSignal(m *containerMeta) string {
	if sig := m.config.GetStopSignal(); sig != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		if name := ociSignalName(sig); name != "" {
			return name
		}
	}
	if m.StopSignal != "" {
		return m.StopSignal
	}
	return "SIGTERM"
}

// ociSignalName is a CRI signal's name as the OCI and images write it:
// SIGNAL_SIGRTMINPLUS3 is SIGRTMIN+3. "" for a value the CRI does not
// define.
func ociSignalName(sig runtimeapi.Signal) string {
	name, ok := runtimeapi.Signal_name[int32(sig)]
	if !ok || sig == runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		return ""
	}
	name = strings.TrimPrefix(name, "SIGNAL_")
	name = strings.Replace(name, "PLUS", "+", 1)
	return strings.Replace(name, "MINUS", "-", 1)
}

// criSignal is the CRI's value for a signal an image or the OCI names:
// SIGTERM, TERM, 15 and sigterm are all SIGNAL_SIGTERM. A signal the CRI
// has no value for is SIGNAL_RUNTIME_DEFAULT.
func criSignal(name string) runtimeapi.Signal {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	n = strings.Replace(strings.Replace(n, "+", "PLUS", 1), "-", "MINUS", 1)
	if v, ok := runtimeapi.Signal_value["SIGNAL_"+n]; ok {
		return runtimeapi.Signal(v)
	}
	// A number, or an alias: the CRI value of the same signal, the lowest
	// where two names share one (SIGABRT for SIGIOT).
	want, err := signal.ParseSignal(name)
	if err != nil {
		return runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT
	}
	for v := int32(1); ; v++ {
		sig := runtimeapi.Signal(v)
		oci := ociSignalName(sig)
		if oci == "" {
			return runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT
		}
		if got, err := signal.ParseSignal(oci); err == nil && got == want {
			return sig
		}
	}
}
