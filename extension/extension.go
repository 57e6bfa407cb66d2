// Package extension is the one documented extension between mine's CRI
// plugin and its shim, beyond the runtime v2 task API itself.
//
// # CRI container logs
//
// kubelet reads container logs from a file, in the CRI log format:
//
//	2016-10-06T00:17:09.669794202Z stdout F a whole line
//	2016-10-06T00:17:09.669794203Z stderr P the first part of a longer line
//
// The shim writes that file itself, so a container never blocks on
// containerd and no line is lost while containerd restarts. The plugin
// asks for it by giving a task's stdout and stderr as a log URI:
//
//	crilog:///var/log/pods/ns_name_uid/ctr/0.log?max_line=16384
//
// Both streams name the same URI; the shim tags each line with its stream.
// max_line splits longer lines into partial (P) lines; -1 or absent means
// no limit. max_size, when set, makes the shim start the file over once it
// is larger: the plugin asks for it on the log it keeps for a container
// kubelet gave no log path, which only Attach reads. beneath, when set,
// is a directory the log file must stay in: the shim makes and opens the
// file through it without following any link out of it (the pod's log
// directory, which other processes of the node may write to).
//
// # Reopening a log
//
// kubelet rotates logs by renaming the file and asking the runtime to
// reopen it (ReopenContainerLog). The plugin sends the task API's Update
// for the container with the ReopenLogAnnotation annotation and no
// resources; the shim then closes and reopens the log file.
//
// # Container stdin
//
// A container started with stdin reads it from a FIFO the plugin writes to
// when a client attaches. Unless the container's stdin is "once", its
// input must outlive any writer, the plugin itself included (a restarted
// containerd opens the FIFO again): the plugin then names it
//
//	stdin:///run/containerd/.../stdin?keep_open=1
//
// and the shim holds a write end of its own, so it never reads end of
// file. A plain path is a FIFO read until its writers close it.
//
// # A shim's own figures
//
// The Stats response for any of a shim's tasks carries, besides the
// task's cgroup metrics, the figures of the shim itself (ShimStats): its
// pid and resident memory, and the log entries it has written for all the
// containers it has served. They are JSON in field ShimStatsField of the
// metrics message, a field the metrics types do not define, so that every
// other reader of the metrics (containerd, ctr) skips it as an unknown
// field. The plugin's statistics collector reads them on each pass.
package extension

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
)

// LogScheme is the URI scheme of a CRI log.
const LogScheme = "crilog"

// ReopenLogAnnotation in an Update request makes the shim reopen the
// container's CRI log instead of updating resources.
const ReopenLogAnnotation = "io.containerd.mine.v2.reopen-log"

// RunAtStartAnnotation, "true" in a container's OCI spec, tells the shim
// that its task is started as soon as it is created, as the plugin does
// with every CRI container: Create then mounts its root file
// system and opens its stdio, and Start runs `runc run --detach`, one runc
// process where create and start take two. In between, the task is
// CREATED with pid 0. Without it (ctr, other clients), Create runs runc
// create and the task has its pid before Start, as with containerd's runc
// shim.
const RunAtStartAnnotation = "io.containerd.mine.v2.run-at-start"

// RunAtCreateAnnotation, "true" in a container's OCI spec, tells the shim
// to make and run its init at Create with `runc run --detach`, and to
// only report it started at Start: one runc process where create and start
// take two, and the task has its pid when Create returns, as after runc
// create. The task is CREATED until Start although its init runs, so it
// suits a process whose running early harms nothing: the plugin sets it on
// pod inits. An init that exits before Start has its TaskExit without a
// TaskStart, and Start fails with FailedPrecondition.
const RunAtCreateAnnotation = "io.containerd.mine.v2.run-at-create"

// StdinScheme is the scheme of a kept-open stdin FIFO.
const StdinScheme = "stdin"

// KeptOpenStdinURI names a stdin FIFO the shim keeps open for writing.
func KeptOpenStdinURI(path string) string {
	u := url.URL{Scheme: StdinScheme, Path: path, RawQuery: "keep_open=1"}
	return u.String()
}

// ParseStdin returns a stdin FIFO's path and whether the shim keeps a
// write end open.
func ParseStdin(s string) (path string, keepOpen bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != StdinScheme {
		return s, false
	}
	return u.Path, u.Query().Get("keep_open") == "1"
}

// LogURI returns the stdio URI for a CRI log at path, an absolute path
// within the directory beneath ("" for none); maxSize 0 means the file
// grows until kubelet rotates it.
func LogURI(path, beneath string, maxLine int, maxSize int64) string {
	u := url.URL{Scheme: LogScheme, Path: path}
	q := url.Values{}
	if beneath != "" {
		q.Set("beneath", beneath)
	}
	if maxLine > 0 {
		q.Set("max_line", strconv.Itoa(maxLine))
	}
	if maxSize > 0 {
		q.Set("max_size", strconv.FormatInt(maxSize, 10))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Log is a parsed CRI log URI.
type Log struct {
	Path    string
	Beneath string // "": anywhere
	MaxLine int    // -1: no limit
	MaxSize int64  // 0: no limit
}

// ParseLogURI parses a CRI log URI; ok is false for anything else.
func ParseLogURI(s string) (l Log, ok bool, err error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != LogScheme {
		return l, false, nil
	}
	q := u.Query()
	l = Log{Path: u.Path, Beneath: q.Get("beneath"), MaxLine: -1}
	if !filepath.IsAbs(l.Path) {
		return l, true, fmt.Errorf("log URI %s: the path is not absolute", s)
	}
	if v := q.Get("max_line"); v != "" {
		if l.MaxLine, err = strconv.Atoi(v); err != nil {
			return l, true, fmt.Errorf("log URI %s: bad max_line: %w", s, err)
		}
	}
	if v := q.Get("max_size"); v != "" {
		if l.MaxSize, err = strconv.ParseInt(v, 10, 64); err != nil {
			return l, true, fmt.Errorf("log URI %s: bad max_size: %w", s, err)
		}
	}
	return l, true, nil
}
