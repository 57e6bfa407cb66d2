package config

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// HostFiles renders Mirrors and Configs as containerd's hosts.toml files,
// keyed by the directory each goes in (a host, ":port" written "_port_",
// "_default" for "*"), so that one resolver, containerd's hosts.toml
// reader, serves both ways of configuring registries.
func (r Registry) HostFiles() map[string]string {
	hosts := map[string]bool{}
	for h := range r.Mirrors {
		hosts[h] = true
	}
	for h, c := range r.Configs {
		if c.TLS != nil {
			hosts[h] = true
		}
	}
	files := map[string]string{}
	for _, host := range slices.Sorted(maps.Keys(hosts)) {
		var b strings.Builder
		if host != "*" {
			server := "https://" + host
			if host == "docker.io" {
				server = "https://registry-1.docker.io"
			}
			fmt.Fprintf(&b, "server = %q\n", server)
			r.writeTLS(&b, host)
		}
		for _, e := range r.Mirrors[host].Endpoints {
			u, err := url.Parse(e)
			if err != nil {
				continue // refused by Validate
			}
			fmt.Fprintf(&b, "\n[host.%q]\ncapabilities = [\"pull\", \"resolve\"]\n", strings.TrimSuffix(e, "/"))
			r.writeTLS(&b, u.Host)
		}
		files[hostDir(host)] = b.String()
	}
	return files
}

func (r Registry) writeTLS(b *strings.Builder, host string) {
	t := r.Configs[host].TLS
	if t == nil {
		return
	}
	if t.InsecureSkipVerify {
		b.WriteString("skip_verify = true\n")
	}
	if t.CAFile != "" {
		fmt.Fprintf(b, "ca = %q\n", t.CAFile)
	}
	if t.CertFile != "" {
		fmt.Fprintf(b, "client = [[%q, %q]]\n", t.CertFile, t.KeyFile)
	}
}

func hostDir(host string) string {
	if host == "*" {
		return "_default"
	}
	if i := strings.LastIndex(host, ":"); i > 0 {
		return host[:i] + "_" + host[i+1:] + "_"
	}
	return host
}

// Credentials are the configured credentials for a host as it is reached
// (a registry's or a mirror's), as user and secret; an identity token is
// a secret with no user.
func (r Registry) Credentials(host string) (user, secret string, ok bool) {
	a := r.Configs[host].Auth
	if a == nil {
		return "", "", false
	}
	if a.IdentityToken != "" {
		return "", a.IdentityToken, true
	}
	if a.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return "", "", false // refused by Validate
		}
		user, secret, _ = strings.Cut(string(raw), ":")
		return user, secret, true
	}
	return a.Username, a.Password, a.Username != "" || a.Password != ""
}

// Redacted is c with registry secrets replaced, for showing it (crictl
// info): containerd shows them, we do not.
func (c *Config) Redacted() *Config {
	out := *c
	if len(c.Registry.Configs) == 0 {
		return &out
	}
	out.Registry.Configs = make(map[string]RegistryHost, len(c.Registry.Configs))
	for host, h := range c.Registry.Configs {
		if a := h.Auth; a != nil {
			red := *a
			for _, secret := range []*string{&red.Password, &red.Auth, &red.IdentityToken} {
				if *secret != "" {
					*secret = "<redacted>"
				}
			}
			h.Auth = &red
		}
		out.Registry.Configs[host] = h
	}
	return &out
}
