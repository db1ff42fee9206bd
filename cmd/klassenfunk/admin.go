package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"klassenfunk/auth"
	"klassenfunk/proto"
	"klassenfunk/server"
	"klassenfunk/storage"
)

const adminUsage = `Usage: klassenfunk admin [flags] <task> [task flags]

Operator tasks. By default they go through the operator API of the running
server (POST /api/v1/schools, …), authenticated with the operator token from
KLASSENFUNK_OPERATOR_TOKEN or --token-file. With --offline they open the data
directory directly; the server must be stopped then (the database is locked
while it runs).

Tasks:
  create-school NAME                 create a school, print its id
  list-schools                       list schools (id and name)
  stats                              print the statistics as JSON: counts only, no
                                     personal data (GET /api/v1/admin/stats)
  create-user --school ID --login LOGIN --name "DISPLAY NAME" --role admin|teacher|student|parent
                                     create a user; the password is read from the
                                     terminal (twice) or from the first line of stdin.
                                     It never appears on the command line.
  operator-token --reset             (--offline only) replace the operator token and
                                     print the new one once
  export-tombstones [--out FILE]     write the list of erased accounts (user id, time)
                                     as JSON; keep it apart from the backups, newer
                                     than the newest backup
  reapply-erasures --tombstones FILE erase again, in a restored database, every account
                                     the file lists (run it before opening the server
                                     to users again; see docs/data-rights.md)
  backup                             write a backup now into the backup directory
                                     (embedded mode; the server also writes one a day)
  restore [--tombstones FILE] BACKUP (--offline only) put the backup's database and
                                     attachments in place, move the replaced data
                                     aside, and erase again every account erased
                                     since (docs/data-rights.md)

Flags:
`

type adminEnv struct {
	server    string
	tokenFile string
	offline   bool
	config    string
	data      string
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
}

func admin(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	env := adminEnv{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage); fs.PrintDefaults() }
	fs.StringVar(&env.server, "server", "", "base URL of the running server (default: http:// + the configured listen address)")
	fs.StringVar(&env.tokenFile, "token-file", "", "file holding the operator token (default: $KLASSENFUNK_OPERATOR_TOKEN)")
	fs.BoolVar(&env.offline, "offline", false, "work on the data directory of a stopped server")
	fs.StringVar(&env.config, "config", defaultConfigFile, "configuration file (for the listen address and data directory)")
	fs.StringVar(&env.data, "data", "", "data directory (with --offline; overrides the configuration)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	task, targs := rest[0], rest[1:]
	if !adminTasks[task] {
		fs.Usage()
		return fmt.Errorf("unknown admin task %q", task)
	}
	if task == "operator-token" && (!env.offline || len(targs) != 1 || targs[0] != "--reset") {
		const u = "usage: klassenfunk admin --offline operator-token --reset (the server must be stopped)"
		if asksForHelp(targs) {
			fmt.Fprintln(stderr, u)
			return flag.ErrHelp
		}
		return errors.New(u)
	}
	if usage, ok := plainTasks[task]; ok {
		var err error
		if targs, err = taskArgs(usage, targs, stderr); err != nil {
			return err
		}
	}
	if task == "restore" {
		return restore(env, targs) // opens the data directory itself
	}
	var ops adminOps
	if env.offline {
		o, err := openOffline(env, task == "create-school")
		if err != nil {
			return err
		}
		defer o.close()
		ops = o
	} else {
		a, err := newAPIOps(env)
		if err != nil {
			return err
		}
		ops = a
	}
	ctx := context.Background()
	switch task {
	case "create-school":
		if len(targs) != 1 {
			return errors.New("usage: " + plainTasks[task])
		}
		id, err := ops.createSchool(ctx, targs[0])
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, id)
		return nil
	case "list-schools":
		schools, err := ops.listSchools(ctx)
		if err != nil {
			return err
		}
		for _, s := range schools {
			fmt.Fprintf(stdout, "%s\t%s\n", s.ID, s.Name)
		}
		return nil
	case "stats":
		if len(targs) != 0 {
			return errors.New("usage: " + plainTasks[task])
		}
		st, err := ops.stats(ctx)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "create-user":
		return createUser(ctx, ops, env, targs)
	case "backup":
		return backup(ctx, ops, env, targs)
	case "export-tombstones":
		return exportTombstones(ctx, ops, env, targs)
	case "reapply-erasures":
		return reapplyErasures(ctx, ops, env, targs)
	case "operator-token": // checked above: --offline, --reset
		tok, err := ops.(*offlineOps).auth.ResetOperatorToken(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	default:
		fs.Usage()
		return fmt.Errorf("unknown admin task %q", task)
	}
}

// adminTasks are the tasks admin knows.
var adminTasks = map[string]bool{
	"create-school": true, "list-schools": true, "stats": true, "create-user": true,
	"export-tombstones": true, "reapply-erasures": true, "operator-token": true,
	"backup": true, "restore": true,
}

// plainTasks are the tasks without flags of their own, with their usage.
var plainTasks = map[string]string{
	"create-school": "klassenfunk admin create-school NAME",
	"list-schools":  "klassenfunk admin list-schools",
	"stats":         "klassenfunk admin stats",
	"backup":        "klassenfunk admin backup",
}

// taskArgs parses the arguments of a plain task before anything is opened
// or sent: -h and --help print its usage (and return flag.ErrHelp) instead
// of becoming a school named "--help", an unknown flag is an error, and
// "--" lets a name begin with '-'.
func taskArgs(usage string, args []string, stderr io.Writer) ([]string, error) {
	fs := flag.NewFlagSet(usage, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "Usage: %s\n", usage) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return fs.Args(), nil
}

func createUser(ctx context.Context, ops adminOps, env adminEnv, args []string) error {
	fs := flag.NewFlagSet("create-user", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	school := fs.String("school", "", "school id")
	login := fs.String("login", "", "login name")
	name := fs.String("name", "", "display name")
	role := fs.String("role", "", "admin, teacher, student or parent")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *school == "" || *login == "" || *name == "" || *role == "" || fs.NArg() > 0 {
		return errors.New("usage: klassenfunk admin create-user --school ID --login LOGIN --name NAME --role ROLE")
	}
	if !storage.Role(*role).Valid() {
		return fmt.Errorf("role must be admin, teacher, student or parent, not %q", *role)
	}
	pw, err := readPassword(env)
	if err != nil {
		return err
	}
	u, err := ops.createUser(ctx, auth.NewUser{
		School: *school, Login: *login, DisplayName: *name, Role: storage.Role(*role),
		ClientHash: auth.ClientHash(*login, pw),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s\t%s\t%s\n", u.ID, u.Login, u.Role)
	return nil
}

// readPassword reads the new password without echo from a terminal (asked
// twice), or as the first line of stdin otherwise.
func readPassword(env adminEnv) (string, error) {
	if f, ok := env.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(env.stderr, "Password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(env.stderr, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.stderr)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(a, b) {
			return "", errors.New("the passwords differ")
		}
		return checkPassword(string(a))
	}
	line, err := bufio.NewReader(env.stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no password on stdin")
	}
	return checkPassword(strings.TrimRight(line, "\r\n"))
}

func checkPassword(pw string) (string, error) {
	if len(pw) < 8 {
		return "", errors.New("the password must have at least 8 characters")
	}
	return pw, nil
}

type schoolRow struct{ ID, Name string }

// adminOps is one way of doing the operator tasks.
type adminOps interface {
	createSchool(ctx context.Context, name string) (string, error)
	listSchools(ctx context.Context) ([]schoolRow, error)
	createUser(ctx context.Context, nu auth.NewUser) (auth.UserView, error)
	stats(ctx context.Context) (auth.Stats, error)
}

type offlineOps struct {
	store *storage.Bolt
	auth  *auth.Service
	cfg   server.Config
}

// openOffline opens the data directory's database. Only create (the
// first step of setting a server up before its first start) may make a
// new one: any other task on a directory without one has the wrong
// directory (a typo in --data, another working directory), and would
// otherwise report on, or re-apply erasures to, an empty database while
// the real one stays as it was.
func openOffline(env adminEnv, create bool) (*offlineOps, error) {
	cfg, err := offlineConfig(env)
	if err != nil {
		return nil, err
	}
	dbPath := filepath.Join(cfg.DataDir, "klassenfunk.db")
	if _, err := os.Stat(dbPath); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("no database at %s: give the server's data directory with --data (or data_dir in --config)", dbPath)
		}
		fmt.Fprintf(env.stderr, "creating a new database at %s\n", dbPath)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	st, err := storage.OpenBolt(dbPath, nil)
	if err != nil {
		return nil, fmt.Errorf("%w (is the server running? then leave out --offline)", err)
	}
	a, err := auth.New(auth.Config{Store: st, Argon2: cfg.Auth.Argon2})
	if err != nil {
		st.Close()
		return nil, err
	}
	return &offlineOps{store: st, auth: a, cfg: cfg}, nil
}

// offlineConfig is the configuration of an offline task: --config, with
// --data over its data directory.
func offlineConfig(env adminEnv) (server.Config, error) {
	cfg, err := loadConfig(env.config, env.config != defaultConfigFile)
	if err != nil {
		return cfg, err
	}
	if env.data != "" {
		cfg.DataDir = env.data
	}
	cfg.Defaults()
	return cfg, nil
}

func (o *offlineOps) close() { o.store.Close() }

func (o *offlineOps) createSchool(ctx context.Context, name string) (string, error) {
	s, err := o.auth.CreateSchool(ctx, name)
	return s.ID, err
}

func (o *offlineOps) listSchools(ctx context.Context) ([]schoolRow, error) {
	ss, err := o.store.Schools(ctx)
	out := make([]schoolRow, 0, len(ss))
	for _, s := range ss {
		out = append(out, schoolRow{s.ID, s.Name})
	}
	return out, err
}

func (o *offlineOps) stats(ctx context.Context) (auth.Stats, error) { return o.auth.Stats(ctx) }

func (o *offlineOps) createUser(ctx context.Context, nu auth.NewUser) (auth.UserView, error) {
	u, err := o.auth.CreateUser(ctx, nu)
	if pe, ok := errors.AsType[*proto.Error](err); ok && pe.Code == proto.CodeNotFound {
		return auth.UserView{}, errNoSchool(nu.School)
	}
	return auth.ViewUser(u), err
}

func errNoSchool(id string) error {
	return fmt.Errorf("no school with the id %q (klassenfunk admin list-schools lists them)", id)
}

type apiOps struct {
	base  string
	token string
	hc    *http.Client
}

func newAPIOps(env adminEnv) (*apiOps, error) {
	base := env.server
	hc := &http.Client{Timeout: 30 * time.Second}
	if base == "" {
		cfg, err := loadConfig(env.config, env.config != defaultConfigFile)
		if err != nil {
			return nil, err
		}
		cfg.Defaults()
		base = "http://" + localAddr(cfg.Listen)
		if cfg.TLSCertFile != "" {
			tc, err := ownServerTLS(cfg.TLSCertFile)
			if err != nil {
				return nil, err
			}
			base = "https://" + localAddr(cfg.Listen)
			hc.Transport = &http.Transport{TLSClientConfig: tc}
		}
	}
	tok := os.Getenv("KLASSENFUNK_OPERATOR_TOKEN")
	if env.tokenFile != "" {
		b, err := os.ReadFile(env.tokenFile)
		if err != nil {
			return nil, err
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return nil, errors.New("no operator token: set KLASSENFUNK_OPERATOR_TOKEN or --token-file (or use --offline with the server stopped)")
	}
	return &apiOps{base: strings.TrimRight(base, "/"), token: tok, hc: hc}, nil
}

// localAddr is the configured listen address as this machine reaches it:
// an unspecified host (0.0.0.0, ::, none) is the loopback address.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// ownServerTLS is how the admin tasks reach the node's built-in TLS on its
// own machine: the certificate file's chain is trusted (beside the
// system's roots, for a self-signed one), and the name checked is the one
// in the certificate, as the connection goes to a local address.
func ownServerTLS(certFile string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	var leaf *x509.Certificate
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
		roots.AddCert(c)
		if leaf == nil {
			leaf = c
		}
	}
	if leaf == nil {
		return nil, fmt.Errorf("%s holds no certificate", certFile)
	}
	name := leaf.Subject.CommonName
	switch {
	case len(leaf.DNSNames) > 0:
		name = leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		name = leaf.IPAddresses[0].String()
	}
	return &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS13}, nil
}

func (a *apiOps) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+"/api/v1"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is the server running? with it stopped, use --offline)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return &apiError{code: e.Error.Code, msg: e.Error.Message, status: resp.StatusCode}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (a *apiOps) createSchool(ctx context.Context, name string) (string, error) {
	var out struct{ ID string }
	err := a.call(ctx, "POST", "/schools", map[string]string{"name": name}, &out)
	return out.ID, err
}

func (a *apiOps) listSchools(ctx context.Context) ([]schoolRow, error) {
	var out []schoolRow
	err := a.call(ctx, "GET", "/schools", nil, &out)
	return out, err
}

func (a *apiOps) createUser(ctx context.Context, nu auth.NewUser) (auth.UserView, error) {
	var out auth.UserView
	err := a.call(ctx, "POST", "/schools/"+url.PathEscape(nu.School)+"/users", map[string]string{
		"login": nu.Login, "display_name": nu.DisplayName, "role": string(nu.Role),
		"client_hash": base64.StdEncoding.EncodeToString(nu.ClientHash),
	}, &out)
	if e, ok := err.(*apiError); ok && e.status == http.StatusNotFound {
		return out, errNoSchool(nu.School)
	}
	return out, err
}

// apiError is an error answer of the operator API.
type apiError struct {
	code, msg string
	status    int
}

func (e *apiError) Error() string {
	return fmt.Sprintf("server: %s: %s (HTTP %d)", e.code, e.msg, e.status)
}

func (a *apiOps) stats(ctx context.Context) (auth.Stats, error) {
	var out auth.Stats
	err := a.call(ctx, "GET", "/admin/stats", nil, &out)
	return out, err
}
