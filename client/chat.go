package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"klassenfunk/internal/ids"
	"klassenfunk/proto"
)

// Chat is a logged-in device: the API client together with the device's
// key. It encrypts what it sends and decrypts what it receives.
type Chat struct {
	API  *Client
	Key  *DeviceKey
	Self Addr
}

// File is an attachment to send.
type File struct {
	Name string
	Type string
	Data []byte
}

// NewClientID returns a fresh random client_id.
func NewClientID() string { return ids.New() }

// Prepare encrypts content for every member device of conversation (GET
// /conversations/{id}/devices, plus this device) and returns the send,
// ready for [Client.Post] or [Session.Send]. It sets content.ClientID when
// empty. skipped lists devices whose key was unusable.
func (c *Chat) Prepare(ctx context.Context, conversation string, content *Content, attachmentIDs []string) (snd *proto.Send, skipped []string, err error) {
	if content.ClientID == "" {
		content.ClientID = NewClientID()
	}
	pt, err := EncodeContent(content)
	if err != nil {
		return nil, nil, err
	}
	if len(pt)+Overhead > proto.MaxCiphertextSize {
		return nil, nil, fmt.Errorf("client: message of %d bytes is too long (at most %d encrypted)", len(pt), proto.MaxCiphertextSize)
	}
	devs, err := c.API.Devices(ctx, conversation)
	if err != nil {
		return nil, nil, fmt.Errorf("member devices: %w", err)
	}
	sealed, err := c.Key.SealMessage(conversation, c.Self, pt, devs)
	if err != nil {
		return nil, nil, err
	}
	return &proto.Send{
		Conversation: conversation,
		ClientID:     content.ClientID,
		Ciphertext:   sealed.Ciphertext,
		Keys:         sealed.Keys,
		Attachments:  attachmentIDs,
	}, sealed.Skipped, nil
}

// UploadFiles encrypts and uploads attachments for a message to
// conversation and returns their references for the message content.
func (c *Chat) UploadFiles(ctx context.Context, conversation string, files []File) ([]AttachmentRef, error) {
	refs := make([]AttachmentRef, 0, len(files))
	for _, f := range files {
		sealed, key, err := SealAttachment(conversation, c.Self, f.Data)
		if err != nil {
			return nil, err
		}
		a, err := c.API.Upload(ctx, sealed)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", f.Name, err)
		}
		refs = append(refs, AttachmentRef{ID: a.ID, Key: key, Name: f.Name, Type: f.Type, Size: int64(len(f.Data))})
	}
	return refs, nil
}

// SendResult is what [Chat.Send] returns.
type SendResult struct {
	Message *proto.Message
	// Skipped lists member devices with an unusable public key.
	Skipped []string
}

// Send encrypts text and files for the conversation's member devices and
// stores the message with POST /conversations/{id}/messages. Network
// failures and 5xx/429 answers are retried a few times with the same
// client_id, which the server stores once.
func (c *Chat) Send(ctx context.Context, conversation, text string, files []File) (*SendResult, error) {
	refs, err := c.UploadFiles(ctx, conversation, files)
	if err != nil {
		return nil, err
	}
	content := &Content{Text: text, Attachments: refs}
	var attIDs []string
	for _, r := range refs {
		attIDs = append(attIDs, r.ID)
	}
	snd, skipped, err := c.Prepare(ctx, conversation, content, attIDs)
	if err != nil {
		return nil, err
	}
	wait := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		m, err := c.API.Post(ctx, snd)
		if err == nil {
			return &SendResult{Message: m, Skipped: skipped}, nil
		}
		var ae *APIError
		retry := !errors.As(err, &ae) || ae.Status >= 500 || ae.Code == proto.CodeRateLimited
		if !retry || attempt == 3 || ctx.Err() != nil {
			return nil, err
		}
		if ae != nil && ae.RetryAfter > wait {
			wait = ae.RetryAfter
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// Open decrypts a received message and parses its content.
func (c *Chat) Open(m *proto.Message) (*Content, error) {
	pt, err := c.Key.OpenMessage(c.Self, m)
	if err != nil {
		return nil, err
	}
	return DecodeContent(pt)
}

// FetchAttachment downloads and decrypts one attachment of a decrypted
// message m. The attachment must be listed in the message's cleartext
// attachments as well.
func (c *Chat) FetchAttachment(ctx context.Context, m *proto.Message, ref AttachmentRef) ([]byte, error) {
	listed := false
	for _, id := range m.Attachments {
		listed = listed || id == ref.ID
	}
	if !listed {
		return nil, fmt.Errorf("%w: attachment %q is not part of message %s", ErrFormat, ref.ID, m.ID)
	}
	sealed, err := c.API.Download(ctx, ref.ID)
	if err != nil {
		return nil, err
	}
	data, err := OpenAttachment(m.Conversation, Addr{m.Sender.UserID, m.Sender.DeviceID}, ref.Key, sealed)
	if err != nil {
		return nil, fmt.Errorf("attachment %s: %w", ref.ID, err)
	}
	return data, nil
}
