package cri

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/containerd/log"

	"github.com/mine-runtime/mine/config"
)

// config is the configuration in force. Callers read it once per use:
// a reload may replace it between two calls.
func (s *Service) config() *config.Config {
	return s.cfg.Load()
}

// Reload puts a new configuration in force without touching running pods.
// Registry settings, runtime handlers, log line size and pull timeouts
// apply to what is pulled, run or created next; a handler that a pod
// uses cannot be removed. Settings bound to what is already running
// (snapshotter, CNI, stream server, stats period, OOM score floor) keep
// their values until a restart, and the log says so. On error the old
// configuration stays in force. Reload keeps next; the caller must not
// change it afterwards.
func (s *Service) Reload(ctx context.Context, next *config.Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := next.Validate(); err != nil {
		return err
	}
	cur := s.config()
	var pinned []string
	for _, f := range []struct {
		key       string
		cur, next any
	}{
		{"snapshotter", &cur.Snapshotter, &next.Snapshotter},
		{"cni", &cur.CNI, &next.CNI},
		{"stream_server_address", &cur.StreamServerAddress, &next.StreamServerAddress},
		{"stream_server_port", &cur.StreamServerPort, &next.StreamServerPort},
		{"stats_collect_period", &cur.StatsCollectPeriod, &next.StatsCollectPeriod},
		{"restrict_oom_score_adj", &cur.RestrictOOMScoreAdj, &next.RestrictOOMScoreAdj},
		{"sandbox_image", &cur.SandboxImage, &next.SandboxImage},
	} {
		c, n := reflect.ValueOf(f.cur).Elem(), reflect.ValueOf(f.next).Elem()
		if !reflect.DeepEqual(c.Interface(), n.Interface()) {
			pinned = append(pinned, f.key)
			n.Set(c)
		}
	}
	var inUse []string
	for _, sb := range s.records.allSandboxes() {
		if _, ok := next.Runtimes[sb.RuntimeHandler]; !ok && !slices.Contains(inUse, sb.RuntimeHandler) {
			inUse = append(inUse, sb.RuntimeHandler)
		}
	}
	if len(inUse) > 0 {
		slices.Sort(inUse)
		return fmt.Errorf("%s.runtimes: handler %s is used by running pods and cannot be removed", config.Section, strings.Join(inUse, ", "))
	}
	if !reflect.DeepEqual(cur.Registry, next.Registry) {
		if err := s.images.writeHostFiles(next.Registry); err != nil {
			return fmt.Errorf("registry hosts: %w", err)
		}
	}
	s.cfg.Store(next)
	if len(pinned) > 0 {
		log.G(ctx).WithField("keys", pinned).Warn("configuration reloaded; these settings keep their values until containerd restarts")
	} else {
		log.G(ctx).Info("configuration reloaded")
	}
	return nil
}
