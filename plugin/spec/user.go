package spec

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// resolveUser is the user the container runs as, as containerd's CRI
// resolves it: the context's user (a uid or a name, with the context's
// group winning over the passwd entry's), else the image's, else root.
// The groups are the primary one; under the Merge policy (the default)
// the user's groups in the image's /etc/group, whoever the user is, the
// image's default included; then the context's supplemental groups.
func resolveUser(c *Container) (specs.User, error) {
	sc := c.Config.GetLinux().GetSecurityContext()
	spec, name := c.Image.Config.User, ""
	switch {
	case sc.GetRunAsUsername() != "":
		spec, name = sc.GetRunAsUsername(), sc.GetRunAsUsername()
	case sc.GetRunAsUser() != nil:
		spec = uidString(sc.GetRunAsUser())
	}
	if sc.GetRunAsGroup() != nil {
		spec += ":" + uidString(sc.GetRunAsGroup())
	}
	passwd, group := c.Image.Passwd, c.Image.Group
	u, err := user.GetExecUser(spec, &user.ExecUser{}, reader(passwd), reader(group))
	if err != nil {
		return specs.User{}, errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("user %q of the container cannot be resolved in the image: %v", spec, err))
	}
	out := specs.User{UID: uint32(u.Uid), GID: uint32(u.Gid)}

	// The primary group is always among the groups, as containerd and
	// critest have it; Strict leaves out only /etc/group's memberships.
	gids := []uint32{out.GID}
	if sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Merge {
		if name == "" {
			name = userName(passwd, u.Uid, spec)
		}
		gids = append(gids, memberOf(group, name)...)
	}
	for _, g := range sc.GetSupplementalGroups() {
		gids = append(gids, uint32(g))
	}
	slices.Sort(gids)
	out.AdditionalGids = slices.Compact(gids)
	return out, nil
}

func reader(data []byte) io.Reader {
	if data == nil {
		return nil
	}
	return strings.NewReader(string(data))
}

// userName is the passwd name of uid, or the name the spec gave.
func userName(passwd []byte, uid int, spec string) string {
	if passwd != nil {
		users, err := user.ParsePasswdFilter(reader(passwd), func(u user.User) bool { return u.Uid == uid })
		if err == nil && len(users) > 0 {
			return users[0].Name
		}
	}
	name, _, _ := strings.Cut(spec, ":")
	if _, err := strconv.Atoi(name); err == nil {
		return ""
	}
	return name
}

// memberOf lists the groups that name the user as a member, leaving out
// a group of the user's own name, as containerd does.
func memberOf(group []byte, name string) []uint32 {
	if group == nil || name == "" {
		return nil
	}
	groups, err := user.ParseGroupFilter(reader(group), func(g user.Group) bool {
		return g.Name != name && slices.Contains(g.List, name)
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	var gids []uint32
	for _, g := range groups {
		gids = append(gids, uint32(g.Gid))
	}
	return gids
}
