package auth

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"klassenfunk/proto"
	"klassenfunk/storage"
)

// The users' data rights: erasure (POST /me/erase) and access (GET
// /me/export), and the operator's side of erasure (tombstones). What is
// erased and what is kept is in docs/data-rights.md.

// Erase erases the caller's account after checking clientHash against its
// password (Argon2, in a hash slot): a wrong hash is 401 and counts as a
// failed login of the account (the same brute-force lock applies). Then the
// store removes the account with everything stored under it and records a
// tombstone; every credential is announced as revoked (OnRevoke: open
// sockets close with 4401, pushes stop) and OnErase closes whatever else
// of the user is open.
func (s *Service) Erase(ctx context.Context, p Principal, clientHash []byte) error {
	if len(clientHash) != ClientHashLen {
		return proto.Errorf(proto.CodeInvalidRequest, "client_hash must be 32 bytes, base64")
	}
	now := s.now()
	key := strings.ToLower(p.User.Login)
	wait, ticket, err := s.byLogin.Acquire(ctx, key, now)
	if err != nil {
		return fmt.Errorf("brute-force counter: %w", err)
	}
	if wait > 0 {
		return &proto.Error{Code: proto.CodeRateLimited, Message: "too many failed attempts; try again later", RetryAfter: wait}
	}
	u, err := s.store.User(ctx, p.User.ID)
	if err != nil {
		s.releaseFailure(s.byLogin, key, ticket)
		if errors.Is(err, storage.ErrNotFound) {
			return errUnauthorized
		}
		return err
	}
	var ok bool
	var verr error
	if err := s.withHashSlot(ctx, func() { ok, verr = verifyPassword(clientHash, u.PasswordHash) }); err != nil {
		s.releaseFailure(s.byLogin, key, ticket)
		return err
	}
	if verr != nil {
		s.releaseFailure(s.byLogin, key, ticket)
		return fmt.Errorf("verify password of user %s: %w", u.ID, verr)
	}
	if !ok {
		// Counted by acquire.
		if err := s.store.RecordLoginFailure(ctx, u.ID); err != nil {
			s.log.Warn("record login failure", "err", err)
		}
		return errWrongPassword
	}
	s.clearFailures(s.byLogin, key)
	removed, err := s.store.EraseUser(ctx, u.ID, now.UTC())
	if err != nil {
		return fmt.Errorf("erase user %s: %w", u.ID, err)
	}
	for _, c := range removed {
		s.cfg.OnRevoke(c)
	}
	s.cfg.OnErase(u.ID)
	s.log.Info("account erased", "user", u.ID, "credentials", len(removed))
	return nil
}

// Tombstones lists the erased accounts (operator).
func (s *Service) Tombstones(ctx context.Context) ([]storage.Tombstone, error) {
	return s.store.Tombstones(ctx)
}

// ReapplyErasures erases again every account of tombs, keeping their
// erasure times: after a backup was restored, what was erased since the
// backup is gone again. It returns how many credentials it removed (any
// open sockets of them close, as on a first erasure).
func (s *Service) ReapplyErasures(ctx context.Context, tombs []storage.Tombstone) (removedCreds int, err error) {
	for _, t := range tombs {
		if t.UserID == "" || t.ErasedAt.IsZero() {
			return removedCreds, proto.Errorf(proto.CodeInvalidRequest, "every tombstone needs user_id and erased_at")
		}
	}
	for _, t := range tombs {
		removed, err := s.store.EraseUser(ctx, t.UserID, t.ErasedAt)
		if err != nil {
			return removedCreds, fmt.Errorf("erase user %s: %w", t.UserID, err)
		}
		for _, c := range removed {
			s.cfg.OnRevoke(c)
		}
		if len(removed) > 0 {
			s.cfg.OnErase(t.UserID)
		}
		removedCreds += len(removed)
	}
	if removedCreds > 0 {
		s.log.Warn("erasures reapplied: restored accounts were erased again", "tombstones", len(tombs), "credentials", removedCreds)
	}
	return removedCreds, nil
}

// Export.

// exportPage is how many messages one read of the export fetches.
const exportPage = 500

// Export is everything stored of one user, read before the archive is
// written (messages excepted: they are streamed from the store while the
// archive is written, so that an early failure can still be answered with
// an error status).
type Export struct {
	UserID        string
	At            time.Time // the time the export was taken
	Profile       exportProfile
	Devices       []exportDevice
	Logins        []storage.LoginEvent
	Conversations []exportConversation
	Keys          []exportKey
	Notices       []storage.Notice
	Uploads       []exportUpload

	s *Service
}

type exportSchool struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type exportProfile struct {
	ID          string       `json:"id"`
	Login       string       `json:"login"`
	DisplayName string       `json:"display_name"`
	Role        storage.Role `json:"role"`
	School      exportSchool `json:"school"`
	CreatedAt   time.Time    `json:"created_at"`
	Disabled    bool         `json:"disabled"`
	// Countries is the login-country restriction; null: none.
	Countries []string `json:"allowed_countries"`
}

type exportDevice struct {
	ID         string           `json:"id"`
	Kind       storage.CredKind `json:"kind"`
	DeviceID   string           `json:"device_id"`
	DeviceName string           `json:"device_name"`
	OS         string           `json:"os"`
	CreatedAt  time.Time        `json:"created_at"`
	LastUsedAt time.Time        `json:"last_used_at"`
	ExpiresAt  *time.Time       `json:"expires_at,omitempty"`
	Push       bool             `json:"push"`
	Provider   string           `json:"push_provider,omitempty"`
}

type exportConversation struct {
	ID        string           `json:"id"`
	Kind      storage.ConvKind `json:"kind"`
	Title     string           `json:"title,omitempty"`
	Creator   string           `json:"creator"`
	CreatedAt time.Time        `json:"created_at"`
	Members   []storage.Member `json:"members"`
	LastSeq   uint64           `json:"last_seq"`
}

type exportKey struct {
	DeviceID  string `json:"device_id"`
	PublicKey []byte `json:"public_key"`
}

// exportUpload is an attachment the user uploaded (its bytes are not in
// the archive).
type exportUpload struct {
	ID            string    `json:"id"`
	Size          int64     `json:"size"`
	CreatedAt     time.Time `json:"created_at"`
	ExpiresAt     time.Time `json:"expires_at"`
	Conversations []string  `json:"conversations"` // with a message that references it
}

type exportSender struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
}

type exportMessage struct {
	ID           string            `json:"id"`
	Conversation string            `json:"conversation"`
	Seq          uint64            `json:"seq"`
	Sender       exportSender      `json:"sender"`
	SentAt       time.Time         `json:"sent_at"`
	ExpiresAt    time.Time         `json:"expires_at"`
	Ciphertext   []byte            `json:"ciphertext"`
	Keys         map[string][]byte `json:"keys"`
	Attachments  []string          `json:"attachments"` // [] when none, as in the API's message
}

// CollectExport reads everything of the caller except the messages.
func (s *Service) CollectExport(ctx context.Context, p Principal) (*Export, error) {
	now := s.now().UTC()
	u, err := s.store.User(ctx, p.User.ID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, errUnauthorized
		}
		return nil, err
	}
	e := &Export{UserID: u.ID, At: now, s: s}
	e.Profile = exportProfile{
		ID: u.ID, Login: u.Login, DisplayName: u.DisplayName, Role: u.Role,
		School: exportSchool{ID: u.School}, CreatedAt: u.CreatedAt, Disabled: u.Disabled, Countries: u.Countries,
	}
	if sc, err := s.store.School(ctx, u.School); err == nil {
		e.Profile.School.Name = sc.Name
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	creds, err := s.store.CredentialsOf(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	e.Devices = make([]exportDevice, 0, len(creds))
	for _, c := range creds {
		d := exportDevice{
			ID: c.ID, Kind: c.Kind, DeviceID: c.DeviceID, DeviceName: c.DeviceName, OS: c.OS,
			CreatedAt: c.CreatedAt, LastUsedAt: c.LastUsedAt, Push: c.Push != nil,
		}
		if !c.ExpiresAt.IsZero() {
			exp := c.ExpiresAt
			d.ExpiresAt = &exp
		}
		if c.Push != nil {
			d.Provider = c.Push.Provider
		}
		e.Devices = append(e.Devices, d)
	}
	if e.Logins, err = s.logins(ctx, u.ID); err != nil {
		return nil, err
	}
	convs, err := s.store.ConversationsOf(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	e.Conversations = make([]exportConversation, 0, len(convs))
	for _, c := range convs {
		e.Conversations = append(e.Conversations, exportConversation{
			ID: c.ID, Kind: c.Kind, Title: c.Title, Creator: c.Creator, CreatedAt: c.CreatedAt,
			Members: c.Members, LastSeq: c.LastSeq,
		})
	}
	keys, err := s.store.DeviceKeysOf(ctx, []string{u.ID})
	if err != nil {
		return nil, err
	}
	e.Keys = make([]exportKey, 0, len(keys))
	for _, k := range keys {
		e.Keys = append(e.Keys, exportKey{DeviceID: k.DeviceID, PublicKey: k.PublicKey})
	}
	if e.Notices, err = s.store.Notices(ctx, u.ID); err != nil {
		return nil, err
	}
	uploads, err := s.store.AttachmentsOf(ctx, u.ID, now)
	if err != nil {
		return nil, err
	}
	e.Uploads = make([]exportUpload, 0, len(uploads))
	for _, a := range uploads {
		e.Uploads = append(e.Uploads, exportUpload{
			ID: a.ID, Size: a.Size, CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt,
			Conversations: append([]string{}, a.Conversations...),
		})
	}
	return e, nil
}

// Filename is the archive's name: klassenfunk-export-<date>.zip.
func (e *Export) Filename() string {
	return "klassenfunk-export-" + e.At.Format(time.DateOnly) + ".zip"
}

// WriteZip writes the archive to w, reading the messages page by page
// (unexpired ones as of e.At, with only the user's own wrapped keys).
func (e *Export) WriteZip(ctx context.Context, w io.Writer) error {
	zw := zip.NewWriter(w)
	file := func(name string) (io.Writer, error) {
		return zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: e.At})
	}
	f, err := file("README.txt")
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, exportReadme); err != nil {
		return err
	}
	for _, part := range []struct {
		name string
		v    any
	}{
		{"profile.json", e.Profile},
		{"devices.json", e.Devices},
		{"logins.json", e.Logins},
		{"conversations.json", e.Conversations},
		{"keys.json", e.Keys},
		{"notices.json", e.Notices},
		{"attachments.json", e.Uploads},
	} {
		f, err := file(part.name)
		if err != nil {
			return err
		}
		b, err := json.MarshalIndent(part.v, "", "  ")
		if err != nil {
			return fmt.Errorf("export %s: %w", part.name, err)
		}
		if _, err := f.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	f, err = file("messages.json")
	if err != nil {
		return err
	}
	if err := e.writeMessages(ctx, f); err != nil {
		return err
	}
	return zw.Close()
}

// writeMessages streams a JSON array of the messages, one per line.
func (e *Export) writeMessages(ctx context.Context, w io.Writer) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	mine := proto.KeyName(e.UserID, "")
	first := true
	for _, c := range e.Conversations {
		var after uint64
		for {
			msgs, more, err := e.s.store.MessagesAfter(ctx, c.ID, after, exportPage, e.At)
			if err != nil {
				return fmt.Errorf("export messages of %s: %w", c.ID, err)
			}
			for _, m := range msgs {
				after = m.Seq
				keys := map[string][]byte{}
				for k, v := range m.Keys {
					if strings.HasPrefix(k, mine) {
						keys[k] = v
					}
				}
				em := exportMessage{
					ID: m.ID, Conversation: m.Conversation, Seq: m.Seq,
					Sender: exportSender{UserID: m.SenderUser, DeviceID: m.SenderDevice},
					SentAt: m.SentAt, ExpiresAt: m.ExpiresAt, Ciphertext: m.Ciphertext,
					Keys: keys, Attachments: m.Attachments,
				}
				if em.Attachments == nil {
					em.Attachments = []string{}
				}
				b, err := json.Marshal(em)
				if err != nil {
					return err
				}
				sep := ",\n"
				if first {
					sep, first = "\n", false
				}
				if _, err := io.WriteString(w, sep); err != nil {
					return err
				}
				if _, err := w.Write(b); err != nil {
					return err
				}
			}
			if !more || len(msgs) == 0 {
				break
			}
		}
	}
	_, err := io.WriteString(w, "\n]\n")
	return err
}

const exportReadme = `Klassenfunk – Datenauskunft / data export
=========================================

DEUTSCH

Dieses Archiv enthält alle Daten, die der Klassenfunk-Server zu Ihrem Konto
gespeichert hat, zum Zeitpunkt des Exports. Alle Zeiten sind UTC (RFC 3339),
Binärwerte sind Base64.

  profile.json        Ihr Konto: ID, Anmeldename, Anzeigename, Rolle, Schule,
                      angelegt am, gesperrt ja/nein, erlaubte Länder für die
                      Anmeldung (null = keine Einschränkung, [] = kein Land).
                      Ihr Passwort ist nicht gespeichert, nur ein Hash davon;
                      auch der ist nicht enthalten.
  devices.json        Vertrauensstellungen (persönliche Geräte, "trust") und
                      Sitzungen (geteilte Geräte, "session"): Geräte-ID, Name,
                      Betriebssystem, angelegt, zuletzt benutzt, Ablauf einer
                      Sitzung, ob Push eingerichtet ist und über welchen
                      Anbieter. Zugangs-Token, Push-Token und Push-Schlüssel
                      sind nicht enthalten.
  logins.json         Die letzten erfolgreichen Anmeldungen: Zeit, IP-Adresse
                      (gekürzt), Gerätename, Fehlversuche davor.
  conversations.json  Ihre Unterhaltungen: ID, Art (direkt/Gruppe), Titel,
                      Ersteller, Mitglieder mit Schreibrecht, letzte
                      Nachrichtennummer.
  messages.json       Die gespeicherten, noch nicht abgelaufenen Nachrichten
                      dieser Unterhaltungen, wie der Server sie hat:
                      verschlüsselt (ciphertext), mit Absender, Zeiten und
                      nur den für Ihre Geräte verschlüsselten Schlüsseln
                      (keys). Lesbar sind sie nur mit dem privaten Schlüssel
                      Ihres Geräts; der Server kennt ihn nicht.
  keys.json           Die öffentlichen Schlüssel Ihrer Geräte.
  notices.json        Systemhinweise an Sie, z. B. abgewiesene Anmeldungen
                      aus einem nicht erlaubten Land (Zeit, Land, gekürzte
                      IP-Adresse).
  attachments.json    Die Anhänge, die Sie hochgeladen haben (auch nie
                      gesendete): ID, Größe, hochgeladen am, Ablauf und die
                      Unterhaltungen, in denen eine Nachricht auf sie
                      verweist. Der Inhalt ist verschlüsselt und nicht im
                      Archiv.

Nachrichten und Anhänge löscht der Server nach der eingestellten
Aufbewahrungszeit (üblich: 30 Tage nach dem Senden); die Anhänge selbst
sind über die App abrufbar, solange sie gespeichert sind.

ENGLISH

This archive holds everything the Klassenfunk server stores about your
account, as of the time of the export. Times are UTC (RFC 3339), binary
values are base64.

  profile.json        Your account: id, login, display name, role, school,
                      created, disabled or not, countries allowed to log in
                      from (null = no restriction, [] = no country). Your
                      password is not stored, only a hash of it, and that
                      is not included either.
  devices.json        Trust relationships (personal devices, "trust") and
                      sessions (shared devices, "session"): device id, name,
                      OS, created, last used, a session's expiry, whether
                      push is set up and with which provider. Access tokens,
                      push tokens and push secrets are not included.
  logins.json         Your last successful logins: time, IP address
                      (anonymised), device name, failed attempts before.
  conversations.json  Your conversations: id, kind (direct/group), title,
                      creator, members with their write right, last message
                      number.
  messages.json       The stored, unexpired messages of those conversations
                      as the server has them: encrypted (ciphertext), with
                      sender, times and only the wrapped keys for your own
                      devices (keys). Only your device's private key can
                      read them; the server does not know it.
  keys.json           The public keys of your devices.
  notices.json        System messages to you, e.g. logins refused from a
                      country you did not allow (time, country, anonymised
                      IP address).
  attachments.json    The attachments you uploaded (also those never
                      sent): id, size, uploaded, expiry and the
                      conversations with a message that references them.
                      Their content is encrypted and not in the archive.

The server deletes messages and attachments after the configured retention
(usually 30 days after sending); the attachments themselves can be fetched
with the app while they are stored.
`
