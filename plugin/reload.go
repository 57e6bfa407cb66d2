package plugin

import (
	"context"
	"os"
	"os/signal"
	"reflect"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/plugin/cri"
)

// configPollPeriod is how often config.toml is looked at for a change.
// Polling, not inotify: editors and configuration managers replace the
// file (a new inode) or write it in place, and a stat every few seconds
// sees both the same way.
const configPollPeriod = 2 * time.Second

// watchConfig reloads the plugin's configuration on SIGHUP (which would
// otherwise end the daemon: containerd does not handle it) and when
// config.toml changes. A configuration that does not load or validate is
// logged, naming the key, and the one in force stays. So it does while the
// file is missing or empty (an editor that moves it away, or truncates it,
// before it writes the new one): that is no configuration of defaults.
// A change is read once the file has stayed as it is for a poll period,
// not half written.
func watchConfig(ctx context.Context, path string, cur *config.Loaded, svc *cri.Service) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, unix.SIGHUP)
	tick := time.NewTicker(configPollPeriod)
	defer tick.Stop()
	seen := fileStamp(path)
	changed := seen
	for {
		why := "SIGHUP"
		select {
		case <-hup:
		case <-tick.C:
			now := fileStamp(path)
			if now == seen {
				continue
			}
			if now != changed {
				changed = now // still being written, perhaps: next time
				continue
			}
			why = "config.toml changed"
		}
		seen = fileStamp(path)
		changed = seen
		if seen.size == 0 {
			log.G(ctx).WithField("trigger", why).Warn("config.toml is missing or empty; the configuration in force stays")
			continue
		}
		next, err := config.Load(ctx, path)
		if err == nil {
			err = svc.Reload(ctx, next.Config)
		}
		if err != nil {
			log.G(ctx).WithError(err).WithField("trigger", why).Error("configuration not reloaded; the one in force stays")
			continue
		}
		if next.LogLevel != "" && next.LogLevel != cur.LogLevel {
			if err := log.SetLevel(next.LogLevel); err != nil {
				log.G(ctx).WithError(err).Error("[debug] level not applied")
			}
		}
		if next.Source != cur.Source || !reflect.DeepEqual(next.Translation, cur.Translation) {
			logSource(ctx, next)
		}
		cur = next
		log.G(ctx).WithField("trigger", why).Info("mine configuration in force")
	}
}

// fileStamp identifies a version of a file; a zero stamp means missing.
type stamp struct {
	ino, size int64
	mtime     time.Time
}

func fileStamp(path string) stamp {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return stamp{}
	}
	return stamp{ino: int64(st.Ino), size: st.Size, mtime: time.Unix(st.Mtim.Unix())}
}
