package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"klassenfunk/auth"
	"klassenfunk/server"
)

const shippedConfig = "../../configs/klassenfunk.yaml"

// documentedDefaults is what configs/klassenfunk.yaml and API.md document.
func documentedDefaults() server.Config {
	return server.Config{
		Listen:         "127.0.0.1:8080",
		DataDir:        "./data",
		TrustedProxies: []string{},
		LogFormat:      "json",
		LogLevel:       "info",
		Auth: server.AuthConfig{
			Argon2:              auth.Argon2Params{Memory: 19456, Time: 2, Threads: 1},
			SessionIdle:         30 * time.Minute,
			TouchInterval:       time.Minute,
			MaxFailuresPerLogin: 5,
			MaxFailuresPerAddr:  20,
			FailureWindow:       15 * time.Minute,
		},
		RedisStartWait: time.Minute,
		Retention:      server.RetentionConfig{Messages: 720 * time.Hour, Attachments: 720 * time.Hour, LoginHistory: 2160 * time.Hour, SweepInterval: time.Minute},
		Backup:         server.BackupConfig{Daily: 14, Weekly: 13},
		Messenger: server.MessengerConfig{
			MaxAttachmentBytes:  25 << 20,
			SendQueue:           256,
			SendRate:            20,
			SendBurst:           100,
			ReadRate:            50,
			ReadBurst:           500,
			PingInterval:        30 * time.Second,
			AuthTimeout:         10 * time.Second,
			MaxSocketsPerDevice: 8,
			MaxSocketsPerUser:   32,
			SendTimeout:         5 * time.Second,
		},
	}
}

func TestShippedConfig(t *testing.T) {
	clearEnv(t)
	cfg, err := loadConfig(shippedConfig, true)
	if err != nil {
		t.Fatalf("load %s: %v", shippedConfig, err)
	}
	if want := documentedDefaults(); !reflect.DeepEqual(cfg, want) {
		t.Fatalf("shipped config\n%+v\nwant the documented defaults\n%+v", cfg, want)
	}
	// The built-in defaults agree with the file where Config.Defaults
	// fills them.
	var zero server.Config
	zero.Defaults()
	tests := map[string]struct{ file, builtin any }{
		"listen":               {cfg.Listen, zero.Listen},
		"data_dir":             {cfg.DataDir, zero.DataDir},
		"log_format":           {cfg.LogFormat, zero.LogFormat},
		"log_level":            {cfg.LogLevel, zero.LogLevel},
		"retention":            {cfg.Retention, zero.Retention},
		"max_attachment_bytes": {cfg.Messenger.MaxAttachmentBytes, zero.Messenger.MaxAttachmentBytes},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.file, tc.builtin) {
				t.Fatalf("file %v, built-in default %v", tc.file, tc.builtin)
			}
		})
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("shipped config does not validate: %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := map[string]struct {
		path     string
		explicit bool
		env      map[string]string
		wantErr  string
		check    func(c server.Config) bool
	}{
		"missing default file": {path: filepath.Join(dir, "absent.yaml"),
			check: func(c server.Config) bool { return reflect.DeepEqual(c, server.Config{}) }},
		"missing named file": {path: filepath.Join(dir, "absent.yaml"), explicit: true, wantErr: "config"},
		"empty file": {path: write("empty.yaml", ""), explicit: true,
			check: func(c server.Config) bool { return reflect.DeepEqual(c, server.Config{}) }},
		"unknown key":        {path: write("unknown.yaml", "listen: 1.2.3.4:5\nlisten_adress: x\n"), explicit: true, wantErr: "listen_adress"},
		"unknown nested key": {path: write("nested.yaml", "auth:\n  session_idel: 5m\n"), explicit: true, wantErr: "session_idel"},
		"wrong type":         {path: write("type.yaml", "auth:\n  max_failures_per_login: many\n"), explicit: true, wantErr: "config"},
		"bad duration":       {path: write("dur.yaml", "retention:\n  messages: 30 days\n"), explicit: true, wantErr: "config"},
		"values": {path: write("values.yaml", "listen: 0.0.0.0:9000\nretention:\n  messages: 48h\nauth:\n  argon2:\n    memory_kib: 65536\n"), explicit: true,
			check: func(c server.Config) bool {
				return c.Listen == "0.0.0.0:9000" && c.Retention.Messages == 48*time.Hour && c.Auth.Argon2.Memory == 65536 && c.Auth.Argon2.Time == 0
			}},
		"environment beats the file": {path: shippedConfig, explicit: true,
			env: map[string]string{"KLASSENFUNK_RETENTION_MESSAGES": "1h", "KLASSENFUNK_LISTEN": ":9999"},
			check: func(c server.Config) bool {
				return c.Retention.Messages == time.Hour && c.Listen == ":9999" && c.Retention.Attachments == 720*time.Hour
			}},
		"bad environment": {path: shippedConfig, explicit: true,
			env: map[string]string{"KLASSENFUNK_SWEEP_INTERVAL": "often"}, wantErr: "KLASSENFUNK_SWEEP_INTERVAL"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := loadConfig(tc.path, tc.explicit)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if !tc.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}

func TestApplyEnv(t *testing.T) {
	tests := map[string]struct {
		env     map[string]string
		wantErr string
		check   func(c server.Config) bool
	}{
		"nothing set": {env: nil,
			check: func(c server.Config) bool { return reflect.DeepEqual(c, documentedDefaults()) }},
		"retention messages": {env: map[string]string{"KLASSENFUNK_RETENTION_MESSAGES": "1h"},
			check: func(c server.Config) bool {
				want := documentedDefaults()
				want.Retention.Messages = time.Hour
				return reflect.DeepEqual(c, want)
			}},
		"all durations": {env: map[string]string{
			"KLASSENFUNK_RETENTION_MESSAGES":      "90m",
			"KLASSENFUNK_RETENTION_ATTACHMENTS":   "24h",
			"KLASSENFUNK_RETENTION_LOGIN_HISTORY": "168h",
			"KLASSENFUNK_SWEEP_INTERVAL":          "15s",
			"KLASSENFUNK_SESSION_IDLE":            "10m",
		}, check: func(c server.Config) bool {
			return c.Retention.Messages == 90*time.Minute && c.Retention.Attachments == 24*time.Hour &&
				c.Retention.LoginHistory == 168*time.Hour &&
				c.Retention.SweepInterval == 15*time.Second && c.Auth.SessionIdle == 10*time.Minute
		}},
		"empty duration keeps the file's": {env: map[string]string{"KLASSENFUNK_RETENTION_MESSAGES": ""},
			check: func(c server.Config) bool { return c.Retention.Messages == 720*time.Hour }},
		"bad duration":          {env: map[string]string{"KLASSENFUNK_RETENTION_MESSAGES": "30 days"}, wantErr: "KLASSENFUNK_RETENTION_MESSAGES"},
		"duration without unit": {env: map[string]string{"KLASSENFUNK_RETENTION_ATTACHMENTS": "720"}, wantErr: "KLASSENFUNK_RETENTION_ATTACHMENTS"},
		"zero duration":         {env: map[string]string{"KLASSENFUNK_SWEEP_INTERVAL": "0s"}, wantErr: "KLASSENFUNK_SWEEP_INTERVAL"},
		"negative duration":     {env: map[string]string{"KLASSENFUNK_SESSION_IDLE": "-5m"}, wantErr: "KLASSENFUNK_SESSION_IDLE"},
		"strings": {env: map[string]string{
			"KLASSENFUNK_LISTEN":          "0.0.0.0:8443",
			"KLASSENFUNK_DATA":            "/var/lib/klassenfunk",
			"KLASSENFUNK_OPERATOR_TOKEN":  "kfop_from_env",
			"KLASSENFUNK_REDIS_URL":       "redis://r:6379/0",
			"KLASSENFUNK_FCM_CREDENTIALS": "/etc/fcm.json",
			"KLASSENFUNK_FCM_ENDPOINT":    "https://fcm.example",
			"KLASSENFUNK_APNS_KEY_FILE":   "/etc/apns.p8",
			"KLASSENFUNK_APNS_KEY_ID":     "KEYID",
			"KLASSENFUNK_APNS_TEAM_ID":    "TEAMID",
			"KLASSENFUNK_APNS_ENDPOINT":   "https://apns.example",
			"KLASSENFUNK_PUSH_CA_FILE":    "/etc/ca.pem",
		}, check: func(c server.Config) bool {
			return c.Listen == "0.0.0.0:8443" && c.DataDir == "/var/lib/klassenfunk" && c.OperatorToken == "kfop_from_env" &&
				c.RedisURL == "redis://r:6379/0" && c.Push == server.PushConfig{
				FCMCredentials: "/etc/fcm.json", FCMEndpoint: "https://fcm.example",
				APNSKeyFile: "/etc/apns.p8", APNSKeyID: "KEYID", APNSTeamID: "TEAMID",
				APNSEndpoint: "https://apns.example", CAFile: "/etc/ca.pem",
			}
		}},
		"trusted proxies": {env: map[string]string{"KLASSENFUNK_TRUSTED_PROXIES": "10.0.0.0/8,192.168.1.1"},
			check: func(c server.Config) bool {
				return reflect.DeepEqual(c.TrustedProxies, []string{"10.0.0.0/8", "192.168.1.1"}) && c.Validate() == nil
			}},
		"geoip database": {env: map[string]string{"KLASSENFUNK_GEOIP_DB": "/var/lib/GeoLite2-Country.mmdb"},
			check: func(c server.Config) bool {
				want := documentedDefaults()
				want.GeoIPDB = "/var/lib/GeoLite2-Country.mmdb"
				return reflect.DeepEqual(c, want)
			}},
		"unsafe no fsync":      {env: map[string]string{"KLASSENFUNK_UNSAFE_NO_FSYNC": "1"}, check: func(c server.Config) bool { return c.NoSync }},
		"unsafe no fsync off":  {env: map[string]string{"KLASSENFUNK_UNSAFE_NO_FSYNC": "0"}, check: func(c server.Config) bool { return !c.NoSync }},
		"unsafe no fsync typo": {env: map[string]string{"KLASSENFUNK_UNSAFE_NO_FSYNC": "banana"}, wantErr: "KLASSENFUNK_UNSAFE_NO_FSYNC"},
		"unrelated variables ignored": {env: map[string]string{"KLASSENFUNK_NOPE": "x", "LISTEN": "x"},
			check: func(c server.Config) bool { return reflect.DeepEqual(c, documentedDefaults()) }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := documentedDefaults()
			lookup := func(k string) (string, bool) {
				v, ok := tc.env[k]
				return v, ok
			}
			err := applyEnv(&cfg, lookup)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("applyEnv: %v", err)
			}
			if !tc.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}

func TestListenLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:0": true, "localhost:0": true,
		"0.0.0.0:0": false, ":0": false, "192.0.2.1:0": false, "banana": false,
	} {
		ln, err := listenLoopback(addr)
		if ln != nil {
			ln.Close()
		}
		if (err == nil) != ok {
			t.Errorf("listenLoopback(%q): %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestAsksForHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"serve", "--help"}, true},
		{[]string{"admin", "create-school", "-h"}, true},
		{[]string{"admin"}, false},
		{[]string{"admin", "create-school", "--", "--help"}, false},
	} {
		if got := asksForHelp(tc.args); got != tc.want {
			t.Errorf("asksForHelp(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
