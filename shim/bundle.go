package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/mine-runtime/mine/extension"
)

// Files the shim keeps in a container's bundle. They outlive the shim, so
// that `containerd-shim-mine-v2 delete` after a crash and a restarted
// containerd can still learn what happened.
const (
	exitFile    = "exit.json"    // the init's exit, written before TaskExit
	optionsFile = "options.json" // the runtime options the container runs with
	initPidFile = "init.pid"
	runcLogFile = "log.json"
	socketFile  = "shim-socket" // the path of the group's socket
)

// DefaultRuncRoot is the parent of runc's state directories; each
// containerd namespace gets its own below it, as with the runc shim.
const DefaultRuncRoot = "/run/containerd/runc"

type exitRecord struct {
	Pid      int       `json:"pid"`
	Status   int       `json:"status"`
	ExitedAt time.Time `json:"exited_at"`
}

func writeExitRecord(bundle string, r exitRecord) error {
	return writeJSONAtomic(filepath.Join(bundle, exitFile), r)
}

func readExitRecord(bundle string) (exitRecord, error) {
	var r exitRecord
	data, err := os.ReadFile(filepath.Join(bundle, exitFile))
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(data, &r)
}

// runtimeOptions is the subset of containerd's runc options we honour.
type runtimeOptions struct {
	BinaryName    string `json:"binary_name,omitempty"`
	Root          string `json:"root,omitempty"`
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
	NoPivotRoot   bool   `json:"no_pivot_root,omitempty"`
	NoNewKeyring  bool   `json:"no_new_keyring,omitempty"`
	IoUID         int    `json:"io_uid,omitempty"`
	IoGID         int    `json:"io_gid,omitempty"`
}

func optionsFromProto(o *options.Options) runtimeOptions {
	if o == nil {
		return runtimeOptions{}
	}
	return runtimeOptions{
		BinaryName:    o.BinaryName,
		Root:          o.Root,
		SystemdCgroup: o.SystemdCgroup,
		NoPivotRoot:   o.NoPivotRoot,
		NoNewKeyring:  o.NoNewKeyring,
		IoUID:         int(o.IoUid),
		IoGID:         int(o.IoGid),
	}
}

func writeOptions(bundle string, o runtimeOptions) error {
	return writeJSONAtomic(filepath.Join(bundle, optionsFile), o)
}

func readOptions(bundle string) (runtimeOptions, error) {
	var o runtimeOptions
	data, err := os.ReadFile(filepath.Join(bundle, optionsFile))
	if errors.Is(err, os.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return o, err
	}
	return o, json.Unmarshal(data, &o)
}

// newRunc returns the runc (or crun, or any OCI runtime with runc's CLI)
// a container is driven with.
func newRunc(o runtimeOptions, namespace, bundle string) *runc.Runc {
	root := o.Root
	if root == "" {
		root = DefaultRuncRoot
	}
	cmd := o.BinaryName
	if cmd == "" {
		cmd = runc.DefaultCommand
	}
	return &runc.Runc{
		Command:       cmd,
		Root:          filepath.Join(root, namespace),
		Log:           filepath.Join(bundle, runcLogFile),
		LogFormat:     runc.JSON,
		PdeathSignal:  unix.SIGKILL,
		Setpgid:       true,
		SystemdCgroup: o.SystemdCgroup,
	}
}

// runcError adds what runc logged last to an error from one of its
// commands: without it "exit status 1" is all a user sees.
func runcError(bundle string, err error) error {
	data, rerr := os.ReadFile(filepath.Join(bundle, runcLogFile))
	if rerr != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(lines[i]), &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") {
			return fmt.Errorf("%w: %s", err, entry.Msg)
		}
	}
	return err
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// specFacts is what the shim takes from a container's OCI spec.
type specFacts struct {
	// group: the shim the container belongs in (groupAnnotations), its
	// own id without one.
	group string
	// ownPIDNamespace: the spec gives the container a new PID namespace.
	ownPIDNamespace bool
	// runAtStart: the task is started as soon as it is created (package
	// extension's RunAtStartAnnotation).
	runAtStart bool
	// runAtCreate: the task's init runs from Create on (package
	// extension's RunAtCreateAnnotation).
	runAtCreate bool
}

// readSpec reads the OCI spec at specPath of container id.
func readSpec(specPath, id string) (specFacts, error) {
	data, err := os.ReadFile(specPath)
	if err != nil {
		return specFacts{}, fmt.Errorf("read OCI spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
		Linux       struct {
			Namespaces []specs.LinuxNamespace `json:"namespaces"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return specFacts{}, fmt.Errorf("parse OCI spec: %w", err)
	}
	facts := specFacts{
		group:       id,
		runAtStart:  spec.Annotations[extension.RunAtStartAnnotation] == "true",
		runAtCreate: spec.Annotations[extension.RunAtCreateAnnotation] == "true",
	}
	for _, a := range groupAnnotations {
		if g := spec.Annotations[a]; g != "" {
			facts.group = g
			break
		}
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			facts.ownPIDNamespace = ns.Path == ""
		}
	}
	return facts, nil
}
