package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/log"
	"github.com/pelletier/go-toml/v2"
	"github.com/sirupsen/logrus"
)

// PluginURI is the plugin's key under [plugins] in config.toml.
const PluginURI = "io.containerd.grpc.v1.mine"

// Source says which part of config.toml a configuration came from.
type Source int

const (
	// FromDefaults: the file has neither a mine section nor a CRI one.
	FromDefaults Source = iota
	// FromMineSection: the file's [plugins."io.containerd.grpc.v1.mine"].
	FromMineSection
	// FromContainerdCRI: translated from containerd's own CRI sections.
	FromContainerdCRI
)

func (s Source) String() string {
	return [...]string{"defaults", Section, "containerd's CRI sections"}[s]
}

// Loaded is the daemon's config.toml as far as mine is concerned.
type Loaded struct {
	Config      *Config
	Source      Source
	Translation Translation // set when Source is FromContainerdCRI
	// LogLevel is config.toml's [debug] level, applied on reload.
	LogLevel string
}

// Load reads the daemon's config.toml the way containerd does (imports
// merged, old versions' plugin names migrated) and returns mine's
// configuration, validated: the mine section when there is one, else the
// equivalent of containerd's CRI sections, else the defaults. A missing
// file gives the defaults, as containerd runs without one.
func Load(ctx context.Context, path string) (*Loaded, error) {
	// containerd's loader warns of old versions and unknown keys; the
	// daemon said so when it loaded the same file, and a reload or
	// mine-config need not say it again.
	quiet := logrus.New()
	quiet.Out = io.Discard
	ctx = log.WithLogger(ctx, logrus.NewEntry(quiet))
	daemon := &srvconfig.Config{Version: version.ConfigVersion}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return &Loaded{Config: Default()}, nil
	}
	if err := srvconfig.LoadConfig(ctx, path, daemon); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l := &Loaded{LogLevel: daemon.Debug.Level}
	if section, ok := daemon.Plugins[PluginURI]; ok {
		cfg, err := decodeSection(section)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, Section, err)
		}
		l.Config, l.Source = cfg, FromMineSection
	} else {
		cfg, tr, found, err := FromContainerd(daemon.Plugins)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		l.Config, l.Source, l.Translation = cfg, FromContainerdCRI, tr
		if !found {
			l.Config, l.Source = Default(), FromDefaults
		}
	}
	if err := l.Config.Validate(); err != nil {
		return nil, err
	}
	return l, nil
}

// decodeSection decodes the section over the defaults, as containerd does
// for a plugin (handlers excepted), but refuses keys mine does not know: a misspelt key would
// otherwise be a setting silently not in force.
func decodeSection(section any) (*Config, error) {
	raw, err := toml.Marshal(section)
	if err != nil {
		return nil, err
	}
	// Handlers named in the section replace the default one rather than
	// join it: the operator's list is the list.
	cfg := Default()
	defaultRuntimes := cfg.Runtimes
	cfg.Runtimes = nil
	defer func() {
		if cfg.Runtimes == nil {
			cfg.Runtimes = defaultRuntimes
		}
	}()
	dec := toml.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			// By their names alone: go-toml's own message quotes the
			// lines around each, and a password among them would be
			// logged.
			var keys []string
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return nil, fmt.Errorf("unknown keys: %s", strings.Join(keys, ", "))
		}
		return nil, err
	}
	return cfg, nil
}

// WriteSection writes cfg as config.toml's mine section, with what a
// translation took and ignored as comments above it.
func WriteSection(w io.Writer, l *Loaded) error {
	fmt.Fprintf(w, "# mine's CRI settings, from %s.\n", l.Source)
	if l.Source == FromContainerdCRI {
		fmt.Fprintln(w, "#\n# Taken from containerd's CRI sections:")
		for _, k := range l.Translation.Took {
			fmt.Fprintf(w, "#   %s\n", k)
		}
		if len(l.Translation.Ignored) > 0 {
			fmt.Fprintln(w, "#\n# Set there but not used by mine:")
			for _, k := range l.Translation.Ignored {
				fmt.Fprintf(w, "#   %s\n", k)
			}
		}
		fmt.Fprintln(w, "#\n# With this section in config.toml, mine reads it and no longer the CRI sections.")
	}
	out, err := toml.Marshal(map[string]any{"plugins": map[string]any{PluginURI: l.Config}})
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}
