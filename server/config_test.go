package server_test

import (
	"strings"
	"testing"
	"time"

	"klassenfunk/server"
)

// TestConfigValidate: a value that would panic, break every socket, burn a
// core or silently mean something else is refused with an error naming
// its setting; zero values (the defaults) and sound ones pass.
func TestConfigValidate(t *testing.T) {
	tests := map[string]struct {
		change func(*server.Config)
		want   string // "" means valid
	}{
		"defaults": {func(*server.Config) {}, ""},
		"sound values": {func(c *server.Config) {
			c.Messenger.PingInterval = 15 * time.Second
			c.Auth.SessionIdle = 24 * time.Hour
		}, ""},
		"a week of idle session": {func(c *server.Config) { c.Auth.SessionIdle = 7 * 24 * time.Hour }, ""},
		"negative ping_interval": {func(c *server.Config) { c.Messenger.PingInterval = -time.Second }, "messenger.ping_interval"},
		"negative auth_timeout":  {func(c *server.Config) { c.Messenger.AuthTimeout = -time.Second }, "messenger.auth_timeout"},
		"negative send_timeout":  {func(c *server.Config) { c.Messenger.SendTimeout = -time.Second }, "messenger.send_timeout"},
		"negative send_queue":    {func(c *server.Config) { c.Messenger.SendQueue = -5 }, "messenger.send_queue"},
		"negative send_rate":     {func(c *server.Config) { c.Messenger.SendRate = -1 }, "messenger.send_rate"},
		"negative send_burst":    {func(c *server.Config) { c.Messenger.SendBurst = -1 }, "messenger.send_burst"},
		"negative session_idle":  {func(c *server.Config) { c.Auth.SessionIdle = -time.Second }, "auth.session_idle"},
		"session_idle > a week":  {func(c *server.Config) { c.Auth.SessionIdle = 200 * time.Hour }, "auth.session_idle"},
		"negative touch":         {func(c *server.Config) { c.Auth.TouchInterval = -time.Second }, "auth.touch_interval"},
		"negative window":        {func(c *server.Config) { c.Auth.FailureWindow = -time.Second }, "auth.failure_window"},
		"negative failures":      {func(c *server.Config) { c.Auth.MaxFailuresPerLogin = -1 }, "auth.max_failures_per_login"},
		"negative addr failures": {func(c *server.Config) { c.Auth.MaxFailuresPerAddr = -1 }, "auth.max_failures_per_addr"},
		"negative start wait":    {func(c *server.Config) { c.RedisStartWait = -time.Second }, "redis_start_wait"},
		"negative retention":     {func(c *server.Config) { c.Retention.Attachments = -time.Hour }, "retention.attachments"},
		"negative login history": {func(c *server.Config) { c.Retention.LoginHistory = -time.Hour }, "retention.login_history"},
		"sweep every 1ns":        {func(c *server.Config) { c.Retention.SweepInterval = time.Nanosecond }, "retention.sweep_interval"},
		"unknown log_level":      {func(c *server.Config) { c.LogLevel = "banana" }, "log_level"},
		"log_level warn":         {func(c *server.Config) { c.LogLevel = "warn" }, ""},
		"fcm_endpoint a word":    {func(c *server.Config) { c.Push.FCMEndpoint = "banana" }, "push.fcm_endpoint"},
		"apns_endpoint no host":  {func(c *server.Config) { c.Push.APNSEndpoint = "https://" }, "push.apns_endpoint"},
		"fcm_endpoint a URL":     {func(c *server.Config) { c.Push.FCMEndpoint = "https://fcm.example/v1" }, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var c server.Config
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func TestConfigWarnings(t *testing.T) {
	var c server.Config
	c.OperatorToken = strings.Repeat("x", 40)
	if w := c.Warnings(); len(w) != 0 {
		t.Fatalf("warnings for a sound config: %q", w)
	}
	c.OperatorToken = "tok"
	c.Push.APNSKeyID, c.Push.CAFile = "KEY", "/etc/ca.pem"
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{"operator token is 3 characters", "APNs stays off", "no push provider"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q do not say %q", w, want)
		}
	}
}
