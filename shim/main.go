package shim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"
)

// flags are the shim binary's command line, as containerd's runtime v2
// manager passes it.
type flags struct {
	namespace string
	id        string
	address   string // containerd's gRPC address
	bundle    string
	debug     bool
	action    string // start, delete, or "" to serve
}

// Main is containerd-shim-mine-v2. It implements the runtime v2 shim
// protocol itself, rather than through containerd's pkg/shim, so that the
// binary links only what a shim needs: a shim runs once per pod, and its
// resident set is paid for on every node.
func Main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", RuntimeName, err)
		os.Exit(1)
	}
}

func run() error {
	var f flags
	var showVersion, info bool
	fs := flag.NewFlagSet(filepath.Base(os.Args[0]), flag.ContinueOnError)
	fs.BoolVar(&f.debug, "debug", false, "enable debug output in logs")
	fs.BoolVar(&showVersion, "v", false, "show the shim version and exit")
	fs.BoolVar(&showVersion, "version", false, "show the shim version and exit")
	fs.BoolVar(&info, "info", false, "read runtime options on stdin, print the runtime info protobuf and exit")
	fs.StringVar(&f.namespace, "namespace", "", "namespace that owns the shim")
	fs.StringVar(&f.id, "id", "", "id of the task")
	fs.StringVar(&f.address, "address", "", "grpc address back to containerd")
	fs.StringVar(&f.bundle, "bundle", "", "path to the bundle if not the working directory")
	fs.String("socket", "", "unused: the shim serves on the socket it inherits")
	fs.String("debug-socket", "", "unused")
	fs.String("publish-binary", "", "unused: events go to $TTRPC_ADDRESS")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	f.action = fs.Arg(0)

	switch {
	case showVersion:
		fmt.Printf("%s:\n  Version:  %s\n  Revision: %s\n  Go version: %s\n", filepath.Base(os.Args[0]), version.Version, version.Revision, version.GoVersion)
		return nil
	case info:
		ri, err := runtimeInfo(os.Stdin)
		if err != nil {
			return err
		}
		return writeProto(ri)
	}
	if f.namespace == "" {
		return errors.New("shim namespace cannot be empty")
	}
	ctx := log.WithLogger(context.Background(), log.L.WithField("runtime", RuntimeName).WithField("namespace", f.namespace))
	if f.debug {
		_ = log.SetLevel("debug")
	}

	switch f.action {
	case "start":
		// containerd reads start's stdout and stderr together as its
		// result: a log line would corrupt it. Failures are the error.
		log.L.Logger.SetOutput(io.Discard)
		input, err := io.ReadAll(io.LimitReader(os.Stdin, 10<<20))
		if err != nil {
			return fmt.Errorf("read bootstrap parameters: %w", err)
		}
		params := &bootapi.BootstrapParams{}
		if err := proto.Unmarshal(input, params); err != nil || len(input) == 0 {
			return fmt.Errorf("containerd sent no bootstrap parameters (containerd 2.3 or newer is needed): %v", err)
		}
		if params.InstanceID != f.id || params.Namespace != f.namespace {
			return fmt.Errorf("bootstrap parameters for %s/%s do not match the command line %s/%s", params.Namespace, params.InstanceID, f.namespace, f.id)
		}
		result, err := start(ctx, f, params)
		if err != nil {
			return err
		}
		return writeProto(result)
	case "delete":
		resp, err := cleanup(ctx, f)
		if err != nil {
			return err
		}
		return writeProto(resp)
	case "":
		return serve(ctx, f)
	default:
		return fmt.Errorf("unknown action %q", f.action)
	}
}

func writeProto(m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(data)
	return err
}
