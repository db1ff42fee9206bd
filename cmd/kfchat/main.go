// Command kfchat is the reference chat client of Klassenfunk: a thin CLI
// over package client that encrypts and decrypts end to end.
//
//	kfchat [--server URL] [--state DIR] [--login LOGIN] <command> [args]
//
// Run kfchat --help for the commands; docs/client.md describes them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"klassenfunk/client"
)

const usage = `Usage: kfchat [global flags] <command> [args]

Commands:
  login LOGIN [--name NAME] [--os OS] [--shared]
                        log this device in (password from the terminal, or the
                        first line of stdin), create the device key pair and
                        publish its public key
  logout                end this device's credential
  whoami                show the logged-in user (with its user id) and device
  conversations         list conversations
  direct USER_ID        create (or find) the direct conversation with a user;
                        prints its id
  group TITLE USER_ID…  create a group (teachers and admins)
  send [--attach FILE]… CONV TEXT…
                        encrypt and send a message
  history CONV [--after N] [--limit N]
                        print stored messages of a conversation, decrypted
  listen                print messages as they arrive, decrypted, one line each:
                        [conversation] sender: text   (until Ctrl-C)
  save MESSAGE_ID [DIR] download and decrypt the attachments of a message
  devices               list this account's trusted devices
  revoke TRUST_ID       revoke a trusted device

Global flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "kfchat:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a wrong command line.
type usageError string

func (e usageError) Error() string { return string(e) }

// env is what every command gets.
type env struct {
	server     string
	serverSet  bool
	stateDir   string
	login      string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	flagOutput io.Writer
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("kfchat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	defServer := os.Getenv("KFCHAT_SERVER")
	if defServer == "" {
		defServer = "http://127.0.0.1:8080"
	}
	fs.StringVar(&e.server, "server", defServer, "server base URL ($KFCHAT_SERVER)")
	fs.StringVar(&e.stateDir, "state", os.Getenv("KFCHAT_STATE"), "state directory ($KFCHAT_STATE; default $XDG_CONFIG_HOME/kfchat/<host>/<login>)")
	fs.StringVar(&e.login, "login", os.Getenv("KFCHAT_LOGIN"), "which login's default state directory to use ($KFCHAT_LOGIN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { e.serverSet = e.serverSet || f.Name == "server" })
	e.server = strings.TrimRight(e.server, "/")
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	cmd, cargs := rest[0], rest[1:]
	switch cmd {
	case "login":
		return cmdLogin(ctx, e, cargs)
	case "logout":
		return cmdLogout(ctx, e, cargs)
	case "whoami":
		return cmdWhoami(ctx, e, cargs)
	case "conversations", "convs":
		return cmdConversations(ctx, e, cargs)
	case "direct":
		return cmdDirect(ctx, e, cargs)
	case "group":
		return cmdGroup(ctx, e, cargs)
	case "send":
		return cmdSend(ctx, e, cargs)
	case "history":
		return cmdHistory(ctx, e, cargs)
	case "listen":
		return cmdListen(ctx, e, cargs)
	case "save":
		return cmdSave(ctx, e, cargs)
	case "devices":
		return cmdDevices(ctx, e, cargs)
	case "revoke":
		return cmdRevoke(ctx, e, cargs)
	case "help", "-h", "--help":
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usage)
		fs.PrintDefaults()
		return nil
	}
	fs.Usage()
	return usageError(fmt.Sprintf("unknown command %q", cmd))
}

// stateFor opens the state directory for login (at login time) or, for
// the other commands, the one chosen by --state, --login or, when the
// server has exactly one, that one.
func (e *env) stateFor(login string) (*client.State, error) {
	dir := e.stateDir
	if dir == "" {
		if login == "" {
			login = e.login
		}
		if login == "" {
			var err error
			if login, err = e.onlyLogin(); err != nil {
				return nil, err
			}
		}
		var err error
		if dir, err = client.DefaultStateDir(e.server, login); err != nil {
			return nil, err
		}
	}
	return client.OpenState(dir)
}

// onlyLogin finds the single logged-in account of the server under the
// default state location.
func (e *env) onlyLogin() (string, error) {
	base, err := client.DefaultStateDir(e.server, "")
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var logins []string
	for _, en := range entries {
		if _, err := os.Stat(filepath.Join(base, en.Name(), "account.json")); err == nil {
			logins = append(logins, en.Name())
		}
	}
	switch len(logins) {
	case 0:
		return "", fmt.Errorf("not logged in to %s (kfchat login LOGIN)", e.server)
	case 1:
		return logins[0], nil
	}
	return "", usageError(fmt.Sprintf("several logins for %s (%s): choose one with --login", e.server, strings.Join(logins, ", ")))
}

// chat loads the logged-in device.
func (e *env) chat() (*client.Chat, *client.Account, *client.State, error) {
	st, err := e.stateFor("")
	if err != nil {
		return nil, nil, nil, err
	}
	c, acc, err := client.LoadChat(st)
	if errors.Is(err, client.ErrNotLoggedIn) {
		return nil, nil, nil, fmt.Errorf("not logged in (state %s): kfchat login LOGIN", st.Dir())
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if e.serverSet && e.server != strings.TrimRight(acc.Server, "/") {
		return nil, nil, nil, fmt.Errorf("state %s belongs to %s, not %s", st.Dir(), acc.Server, e.server)
	}
	return c, acc, st, nil
}

// noArgs parses a command's flag set and insists on no positional
// arguments beyond min..max.
func parse(fs *flag.FlagSet, args []string, min, max int, synopsis string) ([]string, error) {
	fs.Usage = func() { fmt.Fprintf(fs.Output(), "Usage: kfchat %s\n", synopsis); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	rest := fs.Args()
	if len(rest) < min || (max >= 0 && len(rest) > max) {
		return nil, usageError("usage: kfchat " + synopsis)
	}
	return rest, nil
}
