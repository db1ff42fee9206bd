package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

const pushUsage = `Usage: klassenfunk push [flags] test <user id>

Sends a test push to every registered device of the user through the
running server (POST /api/v1/admin/push-test), so that an operator can check
the FCM and APNs credentials. The apps receive a sealed {"t":"test"} blob.
Prints one line per device: trust id, provider, os, outcome (sent,
dead_token, retried, failed, provider_off) and details. Device tokens are
never shown. Exits non-zero unless every device was reached.

Authenticated with the operator token from KLASSENFUNK_OPERATOR_TOKEN or
--token-file.

Flags:
`

// pushCmd is "klassenfunk push …".
func pushCmd(args []string, stdout, stderr io.Writer) error {
	env := adminEnv{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, pushUsage); fs.PrintDefaults() }
	fs.StringVar(&env.server, "server", "", "base URL of the running server (default: http:// + the configured listen address)")
	fs.StringVar(&env.tokenFile, "token-file", "", "file holding the operator token (default: $KLASSENFUNK_OPERATOR_TOKEN)")
	fs.StringVar(&env.config, "config", defaultConfigFile, "configuration file (for the listen address)")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 2 || rest[0] != "test" {
		fs.Usage()
		return flag.ErrHelp
	}
	a, err := newAPIOps(env)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out struct {
		Devices []struct {
			TrustID  string `json:"trust_id"`
			Provider string `json:"provider"`
			OS       string `json:"os"`
			Outcome  string `json:"outcome"`
			Detail   string `json:"detail"`
		} `json:"devices"`
	}
	if err := a.call(ctx, "POST", "/admin/push-test", map[string]string{"user_id": rest[1]}, &out); err != nil {
		return err
	}
	if len(out.Devices) == 0 {
		return errors.New("the user has no device registered for push")
	}
	failed := 0
	for _, d := range out.Devices {
		fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\t%s\n", d.TrustID, d.Provider, d.OS, d.Outcome, d.Detail)
		if d.Outcome != "sent" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d devices not reached", failed, len(out.Devices))
	}
	return nil
}

// parseInterspersed parses the flags of fs wherever they stand among args
// ("push test U --server URL" as well as "push --server URL test U") and
// returns the other arguments in order; "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}
