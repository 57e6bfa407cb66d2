package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func init() {
	// As containerd registers it: the daemon decodes the features by it.
	typeurl.Register(&features.Features{}, "types.containerd.io", "opencontainers/runtime-spec", strconv.Itoa(specs.VersionMajor), "features", "Features")
}

// runtimeInfo answers `-info`: the shim's name and version and, for the
// OCI runtime the options on stdin name, its features, which containerd
// checks before it creates a task with idmapped mounts (pods in a user
// namespace of their own).
func runtimeInfo(stdin *os.File) (*types.RuntimeInfo, error) {
	info := &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: version.Version, Revision: version.Revision},
	}
	var data []byte
	// containerd always pipes the options in; by hand, on a terminal,
	// there are none to wait for.
	if fi, err := stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		if data, err = io.ReadAll(stdin); err != nil {
			return nil, err
		}
	}
	var opts runtimeOptions
	if len(data) > 0 {
		var a anypb.Any
		if err := proto.Unmarshal(data, &a); err != nil {
			return nil, fmt.Errorf("runtime options: %w", err)
		}
		o, err := decodeOptions(&a)
		if err != nil {
			return nil, err
		}
		opts = o
		info.Options = &a
	}
	binary := opts.BinaryName
	if binary == "" {
		binary = "runc"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "features").Output()
	if err != nil {
		return info, nil // a runtime without the command (crun 1.8.1): no features to tell
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return nil, fmt.Errorf("%s features: %w", binary, err)
	}
	if info.Features, err = typeurl.MarshalAnyToProto(&f); err != nil {
		return nil, err
	}
	return info, nil
}
