package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/term"

	"klassenfunk/client"
	"klassenfunk/proto"
)

func newFlags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

func cmdLogin(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "login")
	name := fs.String("name", "", "device name shown in the device list (default: kfchat on <hostname>)")
	osName := fs.String("os", "linux", "device OS: ios, android, web, macos, windows or linux")
	shared := fs.Bool("shared", false, "shared device: a session credential that ends after inactivity, instead of a trusted device")
	rest, err := parse(fs, args, 1, 1, "login LOGIN [--name NAME] [--os OS] [--shared]")
	if err != nil {
		return err
	}
	login := rest[0]
	if *name == "" {
		host, _ := os.Hostname()
		*name = "kfchat on " + host
	}
	st, err := e.stateFor(login)
	if err != nil {
		return err
	}
	pw, err := readPassword(e)
	if err != nil {
		return err
	}
	acc, err := client.Login(ctx, st, e.server, login, pw, client.LoginOptions{DeviceName: *name, OS: *osName, Shared: *shared})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "logged in as %s (%s), user id %s, device %s, %s credential\nstate: %s\n",
		clean(acc.User.DisplayName), clean(acc.User.Login), acc.User.ID, acc.Device.ID, acc.Credential.Kind, st.Dir())
	return nil
}

// readPassword reads the password without echo from a terminal, or as the
// first line of stdin otherwise.
func readPassword(e *env) (string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, "Password: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no password on stdin")
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}

func cmdLogout(ctx context.Context, e *env, args []string) error {
	if _, err := parse(newFlags(e, "logout"), args, 0, 0, "logout"); err != nil {
		return err
	}
	c, acc, st, err := e.chat()
	if err != nil {
		return err
	}
	if err := c.API.Logout(ctx); err != nil && !errors.Is(err, client.ErrRevoked) {
		return err
	}
	acc.Credential = client.Credential{}
	acc.TrustID = ""
	if err := st.SaveAccount(acc); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "logged out")
	return nil
}

func cmdWhoami(ctx context.Context, e *env, args []string) error {
	if _, err := parse(newFlags(e, "whoami"), args, 0, 0, "whoami"); err != nil {
		return err
	}
	c, acc, st, err := e.chat()
	if err != nil {
		return err
	}
	u, err := c.API.Me(ctx)
	if err != nil {
		return err
	}
	w := e.stdout
	fmt.Fprintf(w, "user\t%s\nlogin\t%s\nname\t%s\nrole\t%s\nschool\t%s\n", u.ID, clean(u.Login), clean(u.DisplayName), u.Role, u.School)
	fmt.Fprintf(w, "device\t%s (%s credential)\nserver\t%s\nstate\t%s\n", acc.Device.ID, acc.Credential.Kind, acc.Server, st.Dir())
	return nil
}

func cmdConversations(ctx context.Context, e *env, args []string) error {
	if _, err := parse(newFlags(e, "conversations"), args, 0, 0, "conversations"); err != nil {
		return err
	}
	c, acc, _, err := e.chat()
	if err != nil {
		return err
	}
	convs, err := c.API.Conversations(ctx)
	if err != nil {
		return err
	}
	for _, cv := range convs {
		var label string
		if cv.Kind == "group" {
			label = strconv.Quote(cv.Title)
		} else {
			var others []string
			for _, m := range cv.Members {
				if m.UserID != acc.User.ID {
					others = append(others, m.UserID)
				}
			}
			label = "with " + strings.Join(others, ", ")
		}
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%d members\tlast_seq %d\n", cv.ID, cv.Kind, clean(label), len(cv.Members), cv.LastSeq)
	}
	return nil
}

func cmdDirect(ctx context.Context, e *env, args []string) error {
	rest, err := parse(newFlags(e, "direct"), args, 1, 1, "direct USER_ID")
	if err != nil {
		return err
	}
	c, _, _, err := e.chat()
	if err != nil {
		return err
	}
	cv, err := c.API.Direct(ctx, rest[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, cv.ID)
	return nil
}

func cmdGroup(ctx context.Context, e *env, args []string) error {
	rest, err := parse(newFlags(e, "group"), args, 1, -1, "group TITLE USER_ID…")
	if err != nil {
		return err
	}
	c, _, _, err := e.chat()
	if err != nil {
		return err
	}
	var members []client.Member
	for _, id := range rest[1:] {
		members = append(members, client.Member{UserID: id, CanWrite: true})
	}
	cv, err := c.API.Group(ctx, rest[0], members)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, cv.ID)
	return nil
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdSend(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "send")
	var attach multiFlag
	fs.Var(&attach, "attach", "attach a file (repeatable)")
	rest, err := parse(fs, args, 1, -1, "send [--attach FILE]… CONV TEXT…")
	if err != nil {
		return err
	}
	conv, text := rest[0], strings.Join(rest[1:], " ")
	if text == "" && len(attach) == 0 {
		return usageError("usage: kfchat send [--attach FILE]… CONV TEXT… (nothing to send)")
	}
	c, _, _, err := e.chat()
	if err != nil {
		return err
	}
	var files []client.File
	for _, p := range attach {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, client.File{Name: filepath.Base(p), Type: mime.TypeByExtension(filepath.Ext(p)), Data: data})
	}
	res, err := c.Send(ctx, conv, text, files)
	if err != nil {
		return err
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(e.stderr, "kfchat: warning: device %s has an unusable key and cannot read this message\n", clean(s))
	}
	fmt.Fprintf(e.stdout, "%s\tseq %d\n", res.Message.ID, res.Message.Seq)
	return nil
}

func cmdHistory(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "history")
	after := fs.Uint64("after", 0, "only messages after this seq")
	limit := fs.Int("limit", 100, "at most this many messages (1 to 500)")
	rest, err := parse(fs, args, 1, 1, "history CONV [--after N] [--limit N]")
	if err != nil {
		return err
	}
	c, _, _, err := e.chat()
	if err != nil {
		return err
	}
	msgs, more, err := c.API.History(ctx, rest[0], *after, *limit)
	if err != nil {
		return err
	}
	for i := range msgs {
		printMessage(e, c, &msgs[i], true)
	}
	if more {
		fmt.Fprintf(e.stderr, "kfchat: more messages follow: kfchat history %s --after %d\n", rest[0], msgs[len(msgs)-1].Seq)
	}
	return nil
}

// printMessage decrypts m and prints "[conv] sender: text" (plus one line
// per attachment) to stdout, or a diagnostic to stderr when it does not
// decrypt. withSeq prefixes the seq (history).
func printMessage(e *env, c *client.Chat, m *proto.Message, withSeq bool) {
	prefix := "[" + clean(m.Conversation) + "] "
	if withSeq {
		prefix = fmt.Sprintf("%s#%d ", prefix, m.Seq)
	}
	sender := clean(m.Sender.UserID)
	content, err := c.Open(m)
	if err != nil {
		fmt.Fprintf(e.stderr, "kfchat: message %s in %s from %s: cannot decrypt: %v\n", clean(m.ID), clean(m.Conversation), sender, err)
		return
	}
	var b strings.Builder
	if content.Text != "" || len(content.Attachments) == 0 {
		fmt.Fprintf(&b, "%s%s: %s\n", prefix, sender, clean(content.Text))
	}
	for _, a := range content.Attachments {
		fmt.Fprintf(&b, "%s%s: [attachment %q, %d bytes: kfchat save %s]\n", prefix, sender, clean(a.Name), a.Size, clean(m.ID))
	}
	io.WriteString(e.stdout, b.String()) // one write per message; os.Stdout is unbuffered
}

func cmdListen(ctx context.Context, e *env, args []string) error {
	if _, err := parse(newFlags(e, "listen"), args, 0, 0, "listen"); err != nil {
		return err
	}
	c, acc, st, err := e.chat()
	if err != nil {
		return err
	}
	sess := client.NewSession(client.SessionConfig{
		BaseURL:   acc.Server,
		Token:     acc.Credential.Token,
		Cursors:   st,
		OnMessage: func(m *proto.Message) { printMessage(e, c, m, false) },
		OnEvent: func(ev client.Event) {
			switch ev.Kind {
			case client.EventDisconnected:
				if ev.Retry > 0 {
					fmt.Fprintf(e.stderr, "kfchat: disconnected (%v); reconnecting in %v\n", ev.Err, ev.Retry.Round(time.Millisecond))
				}
			case client.EventError:
				fmt.Fprintf(e.stderr, "kfchat: %v\n", ev.Err)
			default:
				fmt.Fprintf(e.stderr, "kfchat: %s\n", ev.Kind)
			}
		},
	})
	err = sess.Run(ctx)
	switch {
	case ctx.Err() != nil:
		return nil // Ctrl-C or SIGTERM
	case errors.Is(err, client.ErrRevoked):
		acc.Credential = client.Credential{}
		acc.TrustID = ""
		st.SaveAccount(acc)
		return fmt.Errorf("this device's credential was revoked or has expired; log in again (%w)", err)
	}
	return err
}

func cmdSave(ctx context.Context, e *env, args []string) error {
	rest, err := parse(newFlags(e, "save"), args, 1, 2, "save MESSAGE_ID [DIR]")
	if err != nil {
		return err
	}
	dir := "."
	if len(rest) == 2 {
		dir = rest[1]
	}
	c, _, _, err := e.chat()
	if err != nil {
		return err
	}
	m, err := c.API.Message(ctx, rest[0])
	if err != nil {
		return err
	}
	content, err := c.Open(m)
	if err != nil {
		return err
	}
	if len(content.Attachments) == 0 {
		return errors.New("the message has no attachments")
	}
	for i, a := range content.Attachments {
		data, err := c.FetchAttachment(ctx, m, a)
		if err != nil {
			return err
		}
		name := safeFileName(a.Name, i)
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // never overwrite
		if err != nil {
			return err
		}
		_, werr := f.Write(data)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return werr
		}
		fmt.Fprintf(e.stdout, "%s\t%d bytes\n", p, len(data))
	}
	return nil
}

// safeFileName keeps only the base name of a sender-chosen name, without
// control characters and leading dots; i numbers a replacement name.
func safeFileName(name string, i int) string {
	name = filepath.Base(filepath.Clean("/" + strings.ReplaceAll(name, "\\", "/")))
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	name = strings.TrimLeft(name, ".") // no hidden files, no ".."
	if name == "" || name == "/" {
		name = fmt.Sprintf("attachment-%d", i+1)
	}
	return name
}

func cmdDevices(ctx context.Context, e *env, args []string) error {
	if _, err := parse(newFlags(e, "devices"), args, 0, 0, "devices"); err != nil {
		return err
	}
	c, _, _, err := e.chat()
	if err != nil {
		return err
	}
	ts, err := c.API.Trusts(ctx)
	if err != nil {
		return err
	}
	for _, t := range ts {
		mark := ""
		if t.Current {
			mark = "\t(this device)"
		}
		push := "no"
		if t.Push {
			push = "yes"
		}
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\tcreated %s\tlast used %s\tpush %s%s\n", t.ID, clean(t.DeviceName), t.OS,
			t.CreatedAt.Format(time.RFC3339), t.LastUsedAt.Format(time.RFC3339), push, mark)
	}
	return nil
}

func cmdRevoke(ctx context.Context, e *env, args []string) error {
	rest, err := parse(newFlags(e, "revoke"), args, 1, 1, "revoke TRUST_ID")
	if err != nil {
		return err
	}
	c, acc, st, err := e.chat()
	if err != nil {
		return err
	}
	if err := c.API.RevokeTrust(ctx, rest[0]); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "revoked %s\n", rest[0])
	if rest[0] == acc.TrustID {
		acc.Credential = client.Credential{}
		acc.TrustID = ""
		if err := st.SaveAccount(acc); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "that was this device: logged out")
	}
	return nil
}

// clean makes text from other users safe for a terminal: control
// characters (including newlines and escape sequences) and bidirectional
// overrides are shown as escapes instead of acting on the terminal.
func clean(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == unicode.ReplacementChar, unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r),
			r == '\u2028', r == '\u2029':
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
