package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"klassenfunk/server"
)

// defaultConfigFile is read when --config is not given; a missing default
// file is fine (built-in defaults), a missing named file is an error.
const defaultConfigFile = "configs/klassenfunk.yaml"

// loadConfig reads the YAML file, then applies KLASSENFUNK_* environment
// overrides, then fills defaults. Precedence: flags (applied by the caller)
// > environment > file > defaults.
func loadConfig(path string, explicit bool) (server.Config, error) {
	var cfg server.Config
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
	default:
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := applyEnv(&cfg, os.LookupEnv); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// applyEnv applies the environment overrides of API.md ("Running").
func applyEnv(cfg *server.Config, lookup func(string) (string, bool)) error {
	str := map[string]*string{
		"KLASSENFUNK_LISTEN":          &cfg.Listen,
		"KLASSENFUNK_DATA":            &cfg.DataDir,
		"KLASSENFUNK_OPERATOR_TOKEN":  &cfg.OperatorToken,
		"KLASSENFUNK_REDIS_URL":       &cfg.RedisURL,
		"KLASSENFUNK_LOG_FORMAT":      &cfg.LogFormat,
		"KLASSENFUNK_LOG_LEVEL":       &cfg.LogLevel,
		"KLASSENFUNK_FCM_CREDENTIALS": &cfg.Push.FCMCredentials,
		"KLASSENFUNK_FCM_ENDPOINT":    &cfg.Push.FCMEndpoint,
		"KLASSENFUNK_TLS_CERT_FILE":   &cfg.TLSCertFile,
		"KLASSENFUNK_TLS_KEY_FILE":    &cfg.TLSKeyFile,
		"KLASSENFUNK_APNS_KEY_FILE":   &cfg.Push.APNSKeyFile,
		"KLASSENFUNK_APNS_KEY_ID":     &cfg.Push.APNSKeyID,
		"KLASSENFUNK_APNS_TEAM_ID":    &cfg.Push.APNSTeamID,
		"KLASSENFUNK_APNS_ENDPOINT":   &cfg.Push.APNSEndpoint,
		"KLASSENFUNK_PUSH_CA_FILE":    &cfg.Push.CAFile,
		"KLASSENFUNK_GEOIP_DB":        &cfg.GeoIPDB,
	}
	for k, p := range str {
		if v, ok := lookup(k); ok {
			*p = v
		}
	}
	dur := map[string]*time.Duration{
		"KLASSENFUNK_RETENTION_MESSAGES":      &cfg.Retention.Messages,
		"KLASSENFUNK_RETENTION_ATTACHMENTS":   &cfg.Retention.Attachments,
		"KLASSENFUNK_RETENTION_LOGIN_HISTORY": &cfg.Retention.LoginHistory,
		"KLASSENFUNK_SWEEP_INTERVAL":          &cfg.Retention.SweepInterval,
		"KLASSENFUNK_SESSION_IDLE":            &cfg.Auth.SessionIdle,
		"KLASSENFUNK_DRAIN_DELAY":             &cfg.DrainDelay,
	}
	for k, p := range dur {
		v, ok := lookup(k)
		if !ok || v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("config: %s=%q is not a positive Go duration (e.g. 720h)", k, v)
		}
		*p = d
	}
	// For benchmarks only (a same-run baseline): commits without fsync,
	// so a crash loses acknowledged messages. serve warns loudly.
	switch v, _ := lookup("KLASSENFUNK_UNSAFE_NO_FSYNC"); v {
	case "", "0":
	case "1":
		cfg.NoSync = true
	default:
		return fmt.Errorf("config: KLASSENFUNK_UNSAFE_NO_FSYNC=%q: set 1 (benchmarks only) or leave it out", v)
	}
	if v, ok := lookup("KLASSENFUNK_TRUSTED_PROXIES"); ok && v != "" {
		cfg.TrustedProxies = strings.Split(v, ",")
	}
	return nil
}
