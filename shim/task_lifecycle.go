package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/mine-runtime/mine/cgroup"
	"github.com/mine-runtime/mine/failpoint"
)

// deleteWaitTimeout bounds how long deleting a created-but-never-started
// container waits for runc's forced delete to reap its init.
const deleteWaitTimeout = 5 * time.Second

func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	if r.ID == "" || r.Bundle == "" {
		return nil, errdefs.ErrInvalidArgument.WithMessage("create needs a container id and a bundle")
	}
	created := make(chan struct{})
	s.mu.Lock()
	_, exists := s.containers[r.ID]
	if _, underway := s.creating[r.ID]; !exists && !underway {
		s.creating[r.ID] = created
	} else {
		exists = true
	}
	s.mu.Unlock()
	if exists {
		return nil, errdefs.ErrAlreadyExists.WithMessage("container " + r.ID + " already exists in this shim")
	}
	// Counted in creating now: the claim `start` left has done its work.
	unclaim(s.socket, r.ID)
	defer func() {
		s.mu.Lock()
		s.endCreateLocked(r.ID, created)
		s.mu.Unlock()
	}()

	opts, err := decodeOptions(r.Options)
	if err != nil {
		return nil, err
	}
	if err := writeOptions(r.Bundle, opts); err != nil {
		return nil, err
	}
	c := &container{
		id:     r.ID,
		bundle: r.Bundle,
		runc:   newRunc(opts, s.namespace, r.Bundle),
		opts:   opts,
		execs:  make(map[string]*process),
	}
	// runc reports a spec it cannot read at create; what cannot be read
	// here is false.
	spec, _ := readSpec(filepath.Join(r.Bundle, "config.json"), r.ID)
	c.ownPIDNamespace = spec.ownPIDNamespace
	defer func() {
		if retErr != nil && c.rootfs != "" {
			if err := mount.UnmountRecursive(c.rootfs, 0); err != nil {
				log.G(ctx).WithError(err).Warn("unmount rootfs after failed create")
			}
		}
	}()
	if len(r.Rootfs) > 0 {
		rootfs := filepath.Join(r.Bundle, "rootfs")
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, err
		}
		if err := mount.All(mount.FromProto(r.Rootfs), rootfs); err != nil {
			return nil, fmt.Errorf("mount rootfs: %w", err)
		}
		c.rootfs = rootfs
		if err := failpoint.Inject(ctx, failpoint.Mount); err != nil {
			return nil, fmt.Errorf("mount rootfs: %w", err)
		}
	}

	stdio := stdioPaths{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}
	p := newProcess(r.ID, "", stdio)
	c.init = p
	pio, err := newProcessIO(stdio, opts.IoUID, opts.IoGID)
	if err != nil {
		return nil, err
	}
	p.io = pio

	if r.Checkpoint == "" && spec.runAtCreate {
		return s.createRunning(ctx, c, r)
	}
	if r.Checkpoint != "" || spec.runAtStart {
		// Restored, not created: runc restore makes and runs its init at
		// Start, as containerd's runc shim does. containerd gives the
		// CRIU images' directory (criu_image_path, or a checkpoint image
		// it unpacked). Or made and run at Start by runc run.
		c.restoreFrom = r.Checkpoint
		c.madeAtStart = true
		s.mu.Lock()
		s.containers[r.ID] = c
		s.mu.Unlock()
		s.publishCreate(r, 0)
		return &taskAPI.CreateTaskResponse{}, nil
	}

	s.beginStart()
	pid, err := s.runcCreate(ctx, c)
	if err == nil {
		// Before the container is visible to other RPCs.
		c.init.pid = pid
		s.watchContainer(c)
	}
	s.mu.Lock()
	if err == nil {
		s.containers[r.ID] = c
	}
	s.endStartLocked(p, pid)
	s.mu.Unlock()
	if err != nil {
		pio.Close()
		if c.stopOOMWatch != nil {
			c.stopOOMWatch()
		}
		_ = c.runc.Delete(context.WithoutCancel(ctx), r.ID, &runc.DeleteOpts{Force: true})
		return nil, err
	}

	s.publishCreate(r, pid)
	return &taskAPI.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// publishCreate publishes a created task's TaskCreate: pid is 0 for one
// made at Start.
func (s *service) publishCreate(r *taskAPI.CreateTaskRequest, pid int) {
	s.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO: &eventstypes.TaskIO{
			Stdin:    r.Stdin,
			Stdout:   r.Stdout,
			Stderr:   r.Stderr,
			Terminal: r.Terminal,
		},
		Checkpoint: r.Checkpoint,
		Pid:        uint32(pid),
	})
}

// createRunning is Create for a container whose init runs from Create on
// (specFacts.runAtCreate): startInit makes it with runc run, and it is
// reported CREATED, with its pid, until Start. The container is stored
// first, so that an exit reaped at once finds it (its event waits, on a
// start gate, for TaskCreate), but the task API sees it only once Create
// has returned (service.created).
func (s *service) createRunning(ctx context.Context, c *container, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	p := c.init
	gate := make(chan struct{})
	c.startedAtCreate = true
	s.mu.Lock()
	p.startGate = gate
	s.containers[r.ID] = c
	s.mu.Unlock()
	pid, err := s.startInit(ctx, c)
	if err != nil {
		s.mu.Lock()
		delete(s.containers, r.ID)
		p.abandonLocked()
		s.mu.Unlock()
		close(gate)
		p.io.Close()
		return nil, err
	}
	// A task by the time its TaskCreate is out: a client that answers the
	// event with State finds it.
	s.mu.Lock()
	s.endCreateLocked(r.ID, s.creating[r.ID])
	s.mu.Unlock()
	s.publishCreate(r, pid)
	// From here an exit waits for Start's own gate if a Start is under way;
	// an init that exits before any Start has its TaskExit with no
	// TaskStart, as a created task killed before its start does, and Start
	// then fails (FailedPrecondition).
	s.mu.Lock()
	p.startGate = nil
	s.mu.Unlock()
	close(gate)
	return &taskAPI.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// startInit makes and runs the init of a container made at Start (or at
// Create, startedAtCreate): with `runc restore` for one created from a
// checkpoint, its init coming back running with the processes and memory
// the images hold; with `runc run --detach` otherwise. Its stdio is
// connected as a created one's is.
func (s *service) startInit(ctx context.Context, c *container) (int, error) {
	pidFile := filepath.Join(c.bundle, initPidFile)
	what := "runc run"
	var err error
	s.beginStart()
	if c.restoreFrom != "" {
		what = "runc restore"
		_, err = c.runc.Restore(context.WithoutCancel(ctx), c.id, c.bundle, &runc.RestoreOpts{
			CheckpointOpts: runc.CheckpointOpts{ImagePath: c.restoreFrom, WorkDir: filepath.Join(c.bundle, "criu-work")},
			IO:             c.init.io.runcIO(),
			ConsoleSocket:  c.init.io.consoleSocket(),
			Detach:         true,
			PidFile:        pidFile,
			NoPivot:        c.opts.NoPivotRoot,
		})
	} else if err = failpoint.Inject(context.WithoutCancel(ctx), failpoint.RuncStart); err == nil {
		// Not cut short by the caller going away, as runc create is not;
		// nor is a hang at the failpoint, which stands for a slow runc.
		_, err = c.runc.Run(context.WithoutCancel(ctx), c.id, c.bundle, c.initOpts(pidFile, true))
		// go-runc's Run, unlike its Create, keeps the container's ends of
		// the stdio pipes open in the shim: the container's exit would
		// never reach the log copier as end of file.
		if closer, ok := c.init.io.runcIO().(runc.StartCloser); ok {
			if cerr := closer.CloseAfterStart(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			// After runc made the container: it must be deleted.
			err = failpoint.Inject(ctx, failpoint.RuncCreate)
		}
	}
	pid := 0
	if err == nil {
		pid, err = runc.ReadPidFile(pidFile)
	}
	if err == nil {
		err = c.init.io.start()
	}
	var cg any
	if err == nil {
		if cg, err = cgroup.Load(pid); err != nil {
			log.G(ctx).WithError(err).WithField("id", c.id).Warn("load cgroup")
			cg, err = nil, nil
		}
	}
	if err != nil {
		// Its process goes with the forced delete, and its exit with
		// nobody told of a start: the init stays unmade, pid 0.
		_ = c.runc.Delete(context.WithoutCancel(ctx), c.id, &runc.DeleteOpts{Force: true})
		s.mu.Lock()
		s.endStartLocked(c.init, 0)
		s.mu.Unlock()
		return 0, runcError(c.bundle, fmt.Errorf("%s %s: %w", what, c.id, err))
	}
	s.mu.Lock()
	c.cgroup = cg
	if cg != nil {
		c.stopOOMWatch = s.watchOOM(c.id, cg)
	}
	s.endStartLocked(c.init, pid)
	if c.init.status == task.Status_CREATED && !c.startedAtCreate {
		c.init.status = task.Status_RUNNING
	}
	s.mu.Unlock()
	return pid, nil
}

// initOpts are runc's options for making the container's init, by runc
// create or (detach) runc run.
func (c *container) initOpts(pidFile string, detach bool) *runc.CreateOpts {
	return &runc.CreateOpts{
		PidFile:       pidFile,
		IO:            c.init.io.runcIO(),
		ConsoleSocket: c.init.io.consoleSocket(),
		Detach:        detach,
		NoPivot:       c.opts.NoPivotRoot,
		NoNewKeyring:  c.opts.NoNewKeyring,
	}
}

// runcCreate runs `runc create` and connects the new init's stdio.
func (s *service) runcCreate(ctx context.Context, c *container) (int, error) {
	pidFile := filepath.Join(c.bundle, initPidFile)
	// Not cut short by the caller going away (containerd dying, say):
	// runc killed half way leaves a cgroup and a runc init no delete
	// finds. Whole, the container is deleted as any other.
	err := c.runc.Create(context.WithoutCancel(ctx), c.id, c.bundle, c.initOpts(pidFile, false))
	if err == nil {
		// After runc made the container: it must be deleted.
		err = failpoint.Inject(ctx, failpoint.RuncCreate)
	}
	if err != nil {
		return 0, runcError(c.bundle, fmt.Errorf("runc create %s: %w", c.id, err))
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("read init pid: %w", err)
	}
	if err := c.init.io.start(); err != nil {
		return pid, err
	}
	return pid, nil
}

func decodeOptions(a interface{ GetTypeUrl() string }) (runtimeOptions, error) {
	if a == nil || a.GetTypeUrl() == "" {
		return runtimeOptions{}, nil
	}
	v, err := typeurl.UnmarshalAny(a.(typeurl.Any))
	if err != nil {
		return runtimeOptions{}, errdefs.ErrInvalidArgument.WithMessage("runtime options: " + err.Error())
	}
	o, ok := v.(*options.Options)
	if !ok {
		return runtimeOptions{}, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("runtime options of type %T are not runc options", v))
	}
	return optionsFromProto(o), nil
}

func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err == nil && p.status != task.Status_CREATED {
		err = errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("process %s is %s, not created", p.id(), p.status))
	}
	if err == nil && p.startGate != nil {
		err = errdefs.ErrFailedPrecondition.WithMessage("process " + p.id() + " is already being started")
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	gate := make(chan struct{})
	p.startGate = gate
	s.mu.Unlock()
	defer close(gate)

	if p.isInit() && c.madeAtStart {
		pid, err := s.startInit(ctx, c)
		if err != nil {
			return nil, err
		}
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(pid)})
		return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
	}
	if p.isInit() {
		// One made and run at Create is only reported started.
		if !c.startedAtCreate {
			err := failpoint.Inject(ctx, failpoint.RuncStart)
			if err == nil {
				err = c.runc.Start(ctx, c.id)
			}
			if err != nil {
				return nil, runcError(c.bundle, fmt.Errorf("runc start %s: %w", c.id, err))
			}
		}
		s.mu.Lock()
		if p.status == task.Status_CREATED {
			p.status = task.Status_RUNNING
		}
		s.mu.Unlock()
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(p.pid)})
		return &taskAPI.StartResponse{Pid: uint32(p.pid)}, nil
	}

	pid, err := s.startExec(ctx, c, p)
	if err != nil {
		s.releaseUnstarted(p)
		return nil, err
	}
	s.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: p.execID, Pid: uint32(pid)})
	return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
}

// releaseUnstarted ends an exec whose start failed before it had a pid:
// its waiters return and its stdio is closed. One that got a pid was
// killed, and its exit comes through the reaper like any other.
func (s *service) releaseUnstarted(p *process) {
	s.mu.Lock()
	abandoned := p.pid == 0
	if abandoned {
		p.abandonLocked()
	}
	pio := p.io
	s.mu.Unlock()
	if abandoned && pio != nil {
		pio.Close()
	}
}

func (s *service) startExec(ctx context.Context, c *container, p *process) (int, error) {
	var spec specs.Process
	if err := json.Unmarshal(p.spec, &spec); err != nil {
		return 0, errdefs.ErrInvalidArgument.WithMessage("exec process spec: " + err.Error())
	}
	pio, err := newProcessIO(p.stdio, c.opts.IoUID, c.opts.IoGID)
	if err != nil {
		return 0, err
	}
	pidFile := filepath.Join(c.bundle, p.execID+".pid")
	defer os.Remove(pidFile)

	s.beginStart()
	err = c.runc.Exec(ctx, c.id, spec, &runc.ExecOpts{
		PidFile:       pidFile,
		IO:            pio.runcIO(),
		ConsoleSocket: pio.consoleSocket(),
		Detach:        true,
	})
	pid := 0
	if err == nil {
		pid, err = runc.ReadPidFile(pidFile)
	}
	if err == nil {
		err = pio.start()
	}
	s.mu.Lock()
	p.io = pio
	if err == nil {
		p.status = task.Status_RUNNING
	}
	s.endStartLocked(p, pid)
	s.mu.Unlock()
	if err != nil {
		if pid > 0 {
			// stdio could not be connected: the exec must not run unseen.
			_ = syscallKill(pid)
		}
		return 0, runcError(c.bundle, fmt.Errorf("runc exec %s in %s: %w", p.execID, c.id, err))
	}
	return pid, nil
}

func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptyResponse, error) {
	if r.ExecID == "" {
		return nil, errdefs.ErrInvalidArgument.WithMessage("exec needs an exec id")
	}
	if r.Spec == nil {
		return nil, errdefs.ErrInvalidArgument.WithMessage("exec needs a process spec")
	}
	s.mu.Lock()
	c, _, err := s.lookup(r.ID, "")
	if err == nil {
		if _, ok := c.execs[r.ExecID]; ok {
			err = errdefs.ErrAlreadyExists.WithMessage("exec " + r.ExecID + " already exists")
		} else if c.init.status == task.Status_STOPPED {
			err = errdefs.ErrFailedPrecondition.WithMessage("container " + r.ID + " has stopped")
		}
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	p := newProcess(r.ID, r.ExecID, stdioPaths{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal})
	p.spec = r.Spec.Value
	c.execs[r.ExecID] = p
	s.mu.Unlock()

	s.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	for waitedForCreate := false; ; {
		var over <-chan struct{}
		forCreate := false
		if err == nil && p.startUnderway() {
			// A process being started is deleted once its start is
			// over: deleted now, an exec would start unseen, with nobody
			// to reap or wait for it.
			over = p.startGate
		} else if err != nil && r.ExecID == "" {
			// A container being created is deleted once its Create is
			// over. containerd, restarted after it died in a Create,
			// finds no task here, deletes the container and shuts the
			// shim down: what the Create goes on to make (runc is not cut
			// short) must not be left running in a shim nobody knows of.
			// containerd's runc shim answers NotFound and leaves it; this
			// holds containerd's start-up until the Create is over, at
			// most its shim clean-up timeout (5 s by default).
			over, forCreate = s.creating[r.ID]
		}
		if over == nil {
			break
		}
		s.mu.Unlock()
		select {
		case <-over:
			if forCreate && !waitedForCreate {
				waitedForCreate = true
				// What the Create made is deleted whole even if
				// containerd stops waiting meanwhile: a runc delete cut
				// short would leave it running. The Shutdown containerd
				// sent then found the shim busy; it is taken up here.
				callerCtx := ctx
				ctx = context.WithoutCancel(ctx)
				defer func() {
					if callerCtx.Err() != nil {
						go s.Shutdown(context.Background(), &taskAPI.ShutdownRequest{})
					}
				}()
			}
		case <-ctx.Done():
			if forCreate {
				// containerd gives up on the container: it is deleted
				// once its Create is over, or now if that just happened.
				s.mu.Lock()
				if _, underway := s.creating[r.ID]; underway {
					s.abandoned[r.ID] = true
				} else {
					go s.deleteAbandoned(r.ID)
				}
				s.mu.Unlock()
			}
			return nil, ctx.Err()
		}
		s.mu.Lock()
		c, p, err = s.lookup(r.ID, r.ExecID)
	}
	if errdefs.IsNotFound(err) && r.ExecID == "" {
		// containerd gives up on a container `start` handed this shim
		// before its Create came (it died in between): the claim goes
		// now, and the Shutdown that follows may end the shim at once
		// rather than claimTTL later.
		unclaim(s.socket, r.ID)
	}
	if err == nil && (p.status == task.Status_RUNNING || p.status == task.Status_PAUSED) {
		err = errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("cannot delete %s: it is %s", p.id(), p.status))
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if !p.isInit() {
		delete(c.execs, r.ExecID)
		// One never started has no exit to wait for: its waiters are
		// released now.
		p.abandonLocked()
		s.mu.Unlock()
		<-p.exited
		if p.io != nil {
			p.io.closeAfterCopies()
		}
		return &taskAPI.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.exitCode), ExitedAt: protobuf.ToTimestamp(exitTime(p))}, nil
	}
	neverStarted := p.status == task.Status_CREATED
	unmade := neverStarted && p.pid == 0 && c.madeAtStart
	if unmade {
		// Waiting to be made at Start (restored, or run), or that failed:
		// runc has no container and there is no process to reap.
		p.abandonLocked()
	}
	s.mu.Unlock()

	// runc delete --force kills an init that was created but never
	// started; its exit then comes through the reaper like any other.
	// An init that has exited is deleted without --force, which would
	// sleep 100 ms before looking (runc's killContainer): that sleep was
	// a third of a pod's teardown. runc still kills what is left in the
	// cgroup of a container that shares its PID namespace.
	force := neverStarted
	if !unmade {
		if err = failpoint.Inject(ctx, failpoint.RuncDelete); err == nil {
			err = c.runc.Delete(ctx, c.id, &runc.DeleteOpts{Force: force})
		}
		if err != nil && !force {
			err = c.runc.Delete(ctx, c.id, &runc.DeleteOpts{Force: true})
		}
		if err != nil {
			log.G(ctx).WithError(runcError(c.bundle, err)).Warn("runc delete")
		}
	}
	if neverStarted && !unmade {
		select {
		case <-p.exited:
		case <-time.After(deleteWaitTimeout):
			log.G(ctx).WithField("id", c.id).Warn("init not reaped after forced delete")
			s.mu.Lock()
			p.status = task.Status_STOPPED
			s.mu.Unlock()
			p.markExited()
		}
	} else if !unmade {
		<-p.exited
	}
	p.io.closeAfterCopies()
	if c.stopOOMWatch != nil {
		c.stopOOMWatch()
	}
	if c.rootfs != "" {
		err := failpoint.Inject(ctx, failpoint.Unmount)
		if err == nil {
			err = mount.UnmountRecursive(c.rootfs, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("unmount rootfs of %s: %w", c.id, err)
		}
	}

	s.mu.Lock()
	delete(s.containers, c.id)
	// Execs added but never started go with their container: nothing could
	// start them any more, and their waiters must not wait for ever.
	for _, x := range c.execs {
		x.abandonLocked()
	}
	s.mu.Unlock()
	s.leaveIfIdleLater()

	exitedAt := protobuf.ToTimestamp(exitTime(p))
	s.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: c.id,
		ID:          c.id,
		Pid:         uint32(p.pid),
		ExitStatus:  uint32(p.exitCode),
		ExitedAt:    exitedAt,
	})
	return &taskAPI.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.exitCode), ExitedAt: exitedAt}, nil
}
