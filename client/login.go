package client

import (
	"context"
	"fmt"
	"time"
)

// LoginOptions describe the device at login.
type LoginOptions struct {
	// DeviceName is shown in the user's list of devices. Empty means the
	// OS.
	DeviceName string
	// OS is ios, android, web, macos, windows or linux. Empty means linux.
	OS string
	// Shared asks for a session credential (shared device: ends after
	// inactivity, no push) instead of a trust credential.
	Shared bool
	// ClientHash, when set, is used instead of deriving it from the
	// password (tests; apps that cache it).
	ClientHash []byte
}

// Login logs this state directory's device in: it derives the
// client_hash, logs in with the device id of the state (created on first
// use, with the device key pair), publishes the device's public key with
// PUT /keys, and stores the account with its credential.
func Login(ctx context.Context, st *State, server, login, password string, opt LoginOptions) (*Account, error) {
	devID, key, err := st.Device()
	if err != nil {
		return nil, err
	}
	if opt.OS == "" {
		opt.OS = "linux"
	}
	dev := DeviceInfo{ID: devID, Name: opt.DeviceName, OS: opt.OS, Personal: !opt.Shared}
	api := New(server, "")
	hash := opt.ClientHash
	if hash == nil {
		hash = ClientHash(login, password)
	}
	res, err := api.LoginHash(ctx, login, hash, dev)
	if err != nil {
		return nil, err
	}
	acc := &Account{
		Server:     api.BaseURL,
		User:       res.User,
		Device:     dev,
		Credential: res.Credential,
		TrustID:    res.TrustID,
		LoggedInAt: time.Now().UTC(),
	}
	if err := st.SaveAccount(acc); err != nil {
		return nil, err
	}
	if err := api.PutKey(ctx, key.PublicKey()); err != nil {
		return acc, fmt.Errorf("publish device key: %w", err)
	}
	return acc, nil
}

// LoadChat returns the logged-in device of a state directory.
func LoadChat(st *State) (*Chat, *Account, error) {
	acc, err := st.Account()
	if err != nil {
		return nil, nil, err
	}
	id, key, err := st.Device()
	if err != nil {
		return nil, nil, err
	}
	if id != acc.Device.ID {
		return nil, nil, fmt.Errorf("state %s: device id %q of the key does not match the login's %q; log in again", st.Dir(), id, acc.Device.ID)
	}
	return &Chat{API: New(acc.Server, acc.Credential.Token), Key: key, Self: acc.Self()}, acc, nil
}
