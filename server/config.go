package server

import (
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"klassenfunk/auth"
	"klassenfunk/push"
)

// Config is the whole configuration of one node. configs/klassenfunk.yaml
// documents every key; zero values mean the documented defaults, filled in
// by Defaults.
type Config struct {
	// Listen is the HTTP address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// DataDir holds the bbolt file and attachment blobs. Default ./data.
	DataDir string `yaml:"data_dir"`
	// OperatorToken, when set, is the operator token; otherwise one is
	// generated on first start, printed once and stored hashed.
	OperatorToken string `yaml:"operator_token"`
	// RedisURL switches to cluster mode when set.
	RedisURL string `yaml:"redis_url"`
	// TLSCertFile and TLSKeyFile turn on built-in TLS 1.3 (PEM files; a
	// renewed pair is picked up without a restart). Empty: plain HTTP,
	// for a TLS-terminating proxy in front or loopback only.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// RedisStartWait is how long a starting node waits for a Redis that
	// refuses connections or is loading its data. Default 60s.
	RedisStartWait time.Duration `yaml:"redis_start_wait"`
	// TrustedProxies may set X-Forwarded-For (CIDR prefixes or addresses).
	TrustedProxies []string `yaml:"trusted_proxies"`
	// GeoIPDB is a MaxMind-format country database (GeoLite2-Country or
	// compatible) for the users' login-country restriction. Empty: no
	// restriction can be set.
	GeoIPDB string `yaml:"geoip_db"`
	// LogFormat is "json" (default) or "text".
	LogFormat string `yaml:"log_format"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `yaml:"log_level"`
	// DrainDelay is how long a node that was told to stop (SIGTERM) keeps
	// its listener open after closing its WebSockets: /readyz is
	// unready, upgrades get 429, other requests are served. Time for a
	// load balancer to take the node out. Default 0, at most 1m.
	DrainDelay time.Duration `yaml:"drain_delay"`

	Auth      AuthConfig      `yaml:"auth"`
	Retention RetentionConfig `yaml:"retention"`
	Messenger MessengerConfig `yaml:"messenger"`
	Push      PushConfig      `yaml:"push"`
	Backup    BackupConfig    `yaml:"backup"`

	// NoSync turns off fsync of the bbolt file. For tests and benchmarks
	// only: a crash loses acknowledged writes.
	NoSync bool `yaml:"-"`
	// Now is the clock (tests). Nil means time.Now.
	Now func() time.Time `yaml:"-"`
}

// AuthConfig configures login and credentials.
type AuthConfig struct {
	Argon2              auth.Argon2Params `yaml:"argon2"`
	SessionIdle         time.Duration     `yaml:"session_idle"`
	TouchInterval       time.Duration     `yaml:"touch_interval"`
	MaxFailuresPerLogin int               `yaml:"max_failures_per_login"`
	MaxFailuresPerAddr  int               `yaml:"max_failures_per_addr"`
	FailureWindow       time.Duration     `yaml:"failure_window"`
}

// RetentionConfig says how long each data type is kept.
type RetentionConfig struct {
	// Messages: default 720h (30 days).
	Messages time.Duration `yaml:"messages"`
	// Attachments: default 720h (30 days).
	Attachments time.Duration `yaml:"attachments"`
	// LoginHistory: a login stays in its user's history (GET /me/logins,
	// the export) this long, or until the 10 newer ones push it out.
	// Default 2160h (90 days).
	LoginHistory time.Duration `yaml:"login_history"`
	// SweepInterval is how often expired data is deleted. Default 1m.
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// MessengerConfig configures the gateway and message limits.
type MessengerConfig struct {
	// MaxAttachmentBytes caps one attachment. Default 25 MiB.
	MaxAttachmentBytes int64 `yaml:"max_attachment_bytes"`
	// SendQueue is the per-connection queue length. Default 256.
	SendQueue int `yaml:"send_queue"`
	// SendRate is the sustained sends per second allowed per device on
	// each node (all its sockets and POST …/messages together); SendBurst
	// the burst. Defaults 20 and 100.
	SendRate  float64 `yaml:"send_rate"`
	SendBurst int     `yaml:"send_burst"`
	// ReadRate is the sustained history reads per second allowed per
	// device on each node (sync frames, GET …/messages pages and
	// messages, attachment uploads and downloads together); ReadBurst the
	// burst. Defaults 50 and 500.
	ReadRate  float64 `yaml:"read_rate"`
	ReadBurst int     `yaml:"read_burst"`
	// PingInterval between server pings. Default 30s.
	PingInterval time.Duration `yaml:"ping_interval"`
	// AuthTimeout waits for the first frame's auth. Default 10s.
	AuthTimeout time.Duration `yaml:"auth_timeout"`
	// MaxSocketsPerDevice and MaxSocketsPerUser bound the open WebSockets
	// of one device and one user on each node once the node holds
	// SocketCapsFrom sockets; a new one beyond closes the oldest with
	// 4409. Defaults 8 and 32; SocketCapsFrom 0 means three quarters of
	// the process's open-files limit.
	MaxSocketsPerDevice int `yaml:"max_sockets_per_device"`
	MaxSocketsPerUser   int `yaml:"max_sockets_per_user"`
	SocketCapsFrom      int `yaml:"socket_caps_from"`
	// SocketsCrowdedFrom: from this many open WebSockets on a node, a
	// device's new socket closes all its others with 4409 (after a
	// network blip every device reconnects before the node notices its
	// old sockets are dead). 0 means seven eighths of the open-files
	// limit.
	SocketsCrowdedFrom int `yaml:"sockets_crowded_from"`
	// SendTimeout bounds a send frame's store and publish in cluster mode
	// (Redis); past it the client gets an internal error frame. Default 5s.
	// Embedded mode sends have none: the local disk has no network.
	SendTimeout time.Duration `yaml:"send_timeout"`
}

// PushConfig configures the push providers. A provider is on exactly when
// its credentials are configured.
type PushConfig struct {
	FCMCredentials string `yaml:"fcm_credentials"`
	FCMEndpoint    string `yaml:"fcm_endpoint"`
	APNSKeyFile    string `yaml:"apns_key_file"`
	APNSKeyID      string `yaml:"apns_key_id"`
	APNSTeamID     string `yaml:"apns_team_id"`
	APNSEndpoint   string `yaml:"apns_endpoint"`
	CAFile         string `yaml:"ca_file"`
	// Tuning holds the relay's knobs (workers, coalesce window, backoff);
	// zero values are push's defaults. Not in the file: tests set them.
	Tuning push.Tuning `yaml:"-"`
}

// Defaults fills zero fields with their defaults.
func (c *Config) Defaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Retention.Messages == 0 {
		c.Retention.Messages = 30 * 24 * time.Hour
	}
	if c.Retention.Attachments == 0 {
		c.Retention.Attachments = 30 * 24 * time.Hour
	}
	if c.Retention.LoginHistory == 0 {
		c.Retention.LoginHistory = 90 * 24 * time.Hour
	}
	if c.Retention.SweepInterval == 0 {
		c.Retention.SweepInterval = time.Minute
	}
	if c.Messenger.MaxAttachmentBytes == 0 {
		c.Messenger.MaxAttachmentBytes = 25 << 20
	}
	if c.Backup.Daily == 0 {
		c.Backup.Daily = 14
	}
	if c.Backup.Weekly == 0 {
		c.Backup.Weekly = 13
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first configuration error.
func (c *Config) Validate() error {
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"retention.messages", c.Retention.Messages}, {"retention.attachments", c.Retention.Attachments}, {"retention.login_history", c.Retention.LoginHistory}, {"retention.sweep_interval", c.Retention.SweepInterval}} {
		if d.v < 0 {
			return fmt.Errorf("config: %s must not be negative, not %v", d.name, d.v)
		}
	}
	if c.Retention.SweepInterval != 0 && c.Retention.SweepInterval < time.Second {
		return fmt.Errorf("config: retention.sweep_interval must be at least 1s, not %v", c.Retention.SweepInterval)
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); c.LogLevel != "" && err != nil {
		return fmt.Errorf("config: log_level must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.DrainDelay < 0 || c.DrainDelay > time.Minute {
		return fmt.Errorf("config: drain_delay must be between 0 and 1m")
	}
	if c.Messenger.MaxSocketsPerDevice < 0 || c.Messenger.MaxSocketsPerUser < 0 || c.Messenger.SocketCapsFrom < 0 || c.Messenger.SocketsCrowdedFrom < 0 {
		return fmt.Errorf("config: messenger.max_sockets_per_device, max_sockets_per_user, socket_caps_from and sockets_crowded_from must not be negative")
	}
	if c.Messenger.MaxAttachmentBytes < 0 {
		return fmt.Errorf("config: messenger.max_attachment_bytes must not be negative")
	}
	if err := c.Push.validate(); err != nil {
		return err
	}
	switch c.LogFormat {
	case "", "json", "text":
	default:
		return fmt.Errorf("config: log_format must be json or text, not %q", c.LogFormat)
	}
	return nil
}

// validate checks the push endpoints: a typo there would otherwise show
// only as failed pushes, logged one by one.
func (p *PushConfig) validate() error {
	for _, e := range []struct{ name, v string }{{"push.fcm_endpoint", p.FCMEndpoint}, {"push.apns_endpoint", p.APNSEndpoint}} {
		if e.v == "" {
			continue
		}
		u, err := url.Parse(e.v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("config: %s must be an http(s) URL with a host, not %q", e.name, e.v)
		}
	}
	return nil
}

// Warnings returns what is allowed but probably not meant: settings that
// do nothing as they stand, a weak operator token.
func (c *Config) Warnings() []string {
	var w []string
	p := c.Push
	if p.APNSKeyFile == "" && (p.APNSKeyID != "" || p.APNSTeamID != "") {
		w = append(w, "push.apns_key_id or apns_team_id is set without apns_key_file: APNs stays off")
	}
	if p.FCMCredentials == "" && p.FCMEndpoint != "" {
		w = append(w, "push.fcm_endpoint is set without fcm_credentials: FCM stays off")
	}
	if p.APNSKeyFile == "" && p.APNSEndpoint != "" {
		w = append(w, "push.apns_endpoint is set without apns_key_file: APNs stays off")
	}
	if p.CAFile != "" && p.FCMCredentials == "" && p.APNSKeyFile == "" {
		w = append(w, "push.ca_file is set but no push provider is configured")
	}
	if t := c.OperatorToken; t != "" && len(t) < 32 {
		w = append(w, fmt.Sprintf("the operator token is %d characters long: use 32 or more random ones (anyone who guesses it can create schools and users)", len(t)))
	}
	return w
}

// maxSessionIdle is the longest idle time of a session: MISSION A7 wants a
// shared device's session data gone after at most a week of inactivity.
const maxSessionIdle = 7 * 24 * time.Hour

// validateLimits checks the durations and counts of auth and messenger: 0
// takes the default; a negative value, which would panic (a ticker) or
// break every socket (a queue), is an error that names the setting.
func (c *Config) validateLimits() error {
	a, m := &c.Auth, &c.Messenger
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"auth.session_idle", a.SessionIdle}, {"auth.touch_interval", a.TouchInterval},
		{"auth.failure_window", a.FailureWindow}, {"messenger.ping_interval", m.PingInterval},
		{"messenger.auth_timeout", m.AuthTimeout}, {"messenger.send_timeout", m.SendTimeout},
		{"redis_start_wait", c.RedisStartWait},
	} {
		if d.v < 0 {
			return fmt.Errorf("config: %s must not be negative, not %v", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int64
	}{
		{"auth.max_failures_per_login", int64(a.MaxFailuresPerLogin)}, {"auth.max_failures_per_addr", int64(a.MaxFailuresPerAddr)},
		{"messenger.send_queue", int64(m.SendQueue)}, {"messenger.send_burst", int64(m.SendBurst)},
		{"messenger.read_burst", int64(m.ReadBurst)},
	} {
		if n.v < 0 {
			return fmt.Errorf("config: %s must not be negative, not %d", n.name, n.v)
		}
	}
	if c.Backup.Daily < 0 || c.Backup.Weekly < 0 {
		return fmt.Errorf("config: backup.daily and backup.weekly must not be negative")
	}
	if m.SendRate < 0 {
		return fmt.Errorf("config: messenger.send_rate must not be negative, not %v", m.SendRate)
	}
	if m.ReadRate < 0 {
		return fmt.Errorf("config: messenger.read_rate must not be negative, not %v", m.ReadRate)
	}
	if a.SessionIdle > maxSessionIdle {
		return fmt.Errorf("config: auth.session_idle must be at most %v (a week), not %v", maxSessionIdle, a.SessionIdle)
	}
	return nil
}

func (c *Config) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("config: trusted_proxies: %q is neither an address nor a prefix", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// backupDir is where the node writes its backups (embedded mode).
func (c *Config) backupDir() string {
	if c.Backup.Dir != "" {
		return c.Backup.Dir
	}
	return filepath.Join(c.DataDir, "backups")
}

// BackupDir is backupDir for the command's start log.
func (c *Config) BackupDir() string { return c.backupDir() }

// attachmentDir is where attachments are kept as files: shared by the
// nodes of a cluster.
func (c *Config) attachmentDir() string { return filepath.Join(c.DataDir, "attachments") }
