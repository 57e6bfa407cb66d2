package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A pod's containers share one shim. `start` hands a new container to the
// pod's shim when one answers on the group's socket, and containerd then
// sends that shim the container's Create. Meanwhile the shim may be told to
// shut down, its last container deleted: without more, it would exit
// between the hand-over and the Create, and the container would fail to
// start. The two sides agree through the group's lock and claims:
//
//   - `start`, holding the group's lock, leaves a claim naming the container
//     when it hands it to the running shim;
//   - Create, once the container counts in the shim (creating), removes
//     the claim;
//   - Shutdown, holding the same lock, stays up while a claim is fresh
//     (and looks again once it is not), else unlinks the socket before it
//     lets the lock go, so any later `start` starts a new shim.
//
// A claim whose Create never comes (containerd died in between) goes stale
// after claimTTL and is ignored.
const claimTTL = 30 * time.Second

func lockPath(socket string) string  { return socket + ".lock" }
func claimsDir(socket string) string { return socket + ".claims" }

// lockGroup takes the group's lock, blocking. The lock file may be
// removed by a shim that leaves (removeGroupFiles); a lock taken on a file
// no longer at the path is no lock, so it is taken again.
func lockGroup(socket string) (unlock func(), err error) {
	path := lockPath(socket)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var held, named unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &named) == nil && held.Ino == named.Ino {
			return func() { f.Close() }, nil
		}
		f.Close()
	}
}

// claim records that the container is being handed to the running shim.
// Called with the group's lock held.
func claim(socket, id string) error {
	dir := claimsDir(socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, filepath.Base(id)), nil, 0o600)
}

// unclaim removes the container's claim, if any.
func unclaim(socket, id string) {
	if socket != "" {
		_ = os.Remove(filepath.Join(claimsDir(socket), filepath.Base(id)))
	}
}

// freshClaims counts the claims younger than claimTTL and removes older
// ones. Called with the group's lock held.
func freshClaims(socket string) int {
	entries, err := os.ReadDir(claimsDir(socket))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if time.Since(info.ModTime()) < claimTTL {
			n++
		} else {
			_ = os.Remove(filepath.Join(claimsDir(socket), e.Name()))
		}
	}
	return n
}

// removeGroupFiles removes the group's socket, claims and lock file if the
// socket is the one of inode ino, or there is no socket any more; a socket
// of another inode is a shim started for the group since, which owns
// them. Called with the group's lock held.
func removeGroupFiles(socket string, ino uint64) error {
	var st unix.Stat_t
	switch err := unix.Stat(socket, &st); {
	case err == nil && st.Ino != ino:
		return nil
	case err == nil:
		if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	_ = os.RemoveAll(claimsDir(socket))
	if err := os.Remove(lockPath(socket)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ownsSocket tells whether the group's socket is still the one of inode
// ino: once it is not, it never is again.
func ownsSocket(socket string, ino uint64) bool {
	var st unix.Stat_t
	return unix.Stat(socket, &st) == nil && st.Ino == ino
}
