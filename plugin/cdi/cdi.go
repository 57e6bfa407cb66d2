// Package cdi gives containers the devices of the Container Device
// Interface: a device plugin or DRA driver writes a spec file describing a
// device (its nodes, mounts, environment and hooks) into a CDI spec
// directory, and kubelet asks for the device by its qualified name,
// vendor.com/class=name.
package cdi

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// Requested lists the devices a container asks for: those of its config's
// CDI devices (as kubelet sends them for device plugins and DRA), then
// those of its cdi.k8s.io/ annotations (the older way), each once.
func Requested(cfg *runtimeapi.ContainerConfig) ([]string, error) {
	var names []string
	for _, d := range cfg.GetCDIDevices() {
		names = append(names, d.GetName())
	}
	_, annotated, err := cdi.ParseAnnotations(cfg.GetAnnotations())
	if err != nil {
		return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("CDI device annotations: %v", err))
	}
	slices.Sort(annotated) // from a map
	var out []string
	for _, name := range append(names, annotated...) {
		if slices.Contains(out, name) {
			continue
		}
		if _, _, _, err := parser.ParseQualifiedName(name); err != nil {
			return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("CDI device %q: %v", name, err))
		}
		out = append(out, name)
	}
	return out, nil
}

// Inject applies the devices' edits to the container's spec, as their spec
// files in dirs say now. The files are read for each container that asks
// for a device, so that a spec a driver has just written is seen, and no
// directory is watched when no container asks for any.
//
// A device no spec file describes is FailedPrecondition: its driver may
// not have written it yet, and kubelet retries. An invalid spec file of
// some other device is no reason to refuse this one (CDI itself fails
// the injection where it matters), as with containerd.
func Inject(s *specs.Spec, dirs []string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return fmt.Errorf("CDI: %w", err)
	}
	unresolved, err := cache.InjectDevices(s, names...)
	if len(unresolved) > 0 {
		return errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("CDI devices %s are not described by any spec file in %s", strings.Join(unresolved, ", "), strings.Join(dirs, ", ")))
	}
	if err != nil {
		return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("inject CDI devices %s: %v", strings.Join(names, ", "), err))
	}
	return nil
}
