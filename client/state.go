package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"klassenfunk/internal/ids"
)

// State file names inside a state directory.
const (
	accountFile = "account.json" // server, user, device info and the credential
	deviceFile  = "device.json"  // device id and X25519 private key
	cursorsFile = "cursors.json" // last contiguous seq per conversation
)

// State is one user's state directory on one device: mode 0700, every file
// 0600, written atomically (temporary file, fsync, rename). Files readable
// by group or others are refused, as ssh does with its keys.
type State struct {
	dir string
}

// Account is what a login leaves behind (account.json).
type Account struct {
	// Server is the base URL the account belongs to.
	Server string `json:"server"`
	// User is the logged-in user.
	User User `json:"user"`
	// Device is what was sent as device at login.
	Device DeviceInfo `json:"device"`
	// Credential is the trust or session credential. Its token is a
	// secret: whoever holds it is this device.
	Credential Credential `json:"credential"`
	// TrustID is the trust relationship of a personal device.
	TrustID string `json:"trust_id,omitempty"`
	// LoggedInAt is when the credential was issued.
	LoggedInAt time.Time `json:"logged_in_at"`
}

// Self returns this device's address.
func (a *Account) Self() Addr { return Addr{a.User.ID, a.Device.ID} }

// deviceRecord is device.json.
type deviceRecord struct {
	ID         string `json:"id"`
	PrivateKey []byte `json:"private_key"`
}

// DefaultStateDir returns the default state directory of login on
// server: <user config dir>/kfchat/<server host>/<login>, where the user
// config dir is $XDG_CONFIG_HOME (or ~/.config) on Linux. Characters that
// are unsafe in a path become '_'.
func DefaultStateDir(server, login string) (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	host, err := ServerHost(server)
	if err != nil {
		return "", err
	}
	if login == "" {
		return filepath.Join(base, "kfchat", host), nil
	}
	return filepath.Join(base, "kfchat", host, safeName(strings.ToLower(login))), nil
}

// ServerHost returns the host[:port] of a server URL as a safe directory
// name.
func ServerHost(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("server %q is not an http:// or https:// URL", server)
	}
	return safeName(u.Host), nil
}

func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_', r == '@':
			return r
		}
		return '_'
	}, s)
	if s == "" || s == "." || s == ".." {
		s = "_" + s
	}
	return s
}

// OpenState opens (creating it when needed) the state directory dir with
// mode 0700.
func OpenState(dir string) (*State, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state dir %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	return &State{dir: dir}, nil
}

// Dir returns the directory.
func (s *State) Dir() string { return s.dir }

// readFile reads a state file, refusing one that group or others can read.
func (s *State) readFile(name string) ([]byte, error) {
	p := filepath.Join(s.dir, name)
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: it must be readable by its owner only (chmod 600 %s)", p, fi.Mode().Perm(), p)
	}
	return io.ReadAll(io.LimitReader(f, 16<<20))
}

// writeFile replaces a state file atomically with mode 0600.
func (s *State) writeFile(name string, data []byte) error {
	tmp, err := os.CreateTemp(s.dir, "."+name+".*.tmp") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(s.dir, name))
}

func (s *State) readJSON(name string, v any) error {
	b, err := s.readFile(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(s.dir, name), err)
	}
	return nil
}

func (s *State) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return s.writeFile(name, append(b, '\n'))
}

// Account returns the stored account; ErrNotLoggedIn when there is none
// or its credential was removed.
func (s *State) Account() (*Account, error) {
	var a Account
	if err := s.readJSON(accountFile, &a); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotLoggedIn
		}
		return nil, err
	}
	if a.Credential.Token == "" {
		return &a, ErrNotLoggedIn
	}
	return &a, nil
}

// SaveAccount stores the account.
func (s *State) SaveAccount(a *Account) error { return s.writeJSON(accountFile, a) }

// Device returns this installation's device id and key pair, creating both
// on first use. They stay the same across logins.
func (s *State) Device() (string, *DeviceKey, error) {
	var rec deviceRecord
	err := s.readJSON(deviceFile, &rec)
	if err == nil {
		k, err := ParseDeviceKey(rec.PrivateKey)
		if err != nil || rec.ID == "" {
			return "", nil, fmt.Errorf("%s: invalid device record: %v", filepath.Join(s.dir, deviceFile), err)
		}
		return rec.ID, k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", nil, err
	}
	k, err := GenerateDeviceKey()
	if err != nil {
		return "", nil, err
	}
	rec = deviceRecord{ID: "kfchat-" + ids.New(), PrivateKey: k.Bytes()}
	if err := s.writeJSON(deviceFile, rec); err != nil {
		return "", nil, err
	}
	return rec.ID, k, nil
}

// LoadCursors implements [CursorStore]: the cursors from cursors.json, or
// an empty map when there is none yet.
func (s *State) LoadCursors() (map[string]uint64, error) {
	c := make(map[string]uint64)
	err := s.readJSON(cursorsFile, &c)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	return c, err
}

// SaveCursors implements [CursorStore].
func (s *State) SaveCursors(c map[string]uint64) error { return s.writeJSON(cursorsFile, c) }
