package messenger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"klassenfunk/auth"
	"klassenfunk/internal/ctxtime"
	"klassenfunk/internal/ids"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// blobPath is where an attachment's bytes live. IDs are URL-safe base64,
// so they are safe file names.
func (n *Node) blobPath(id string) string { return filepath.Join(n.cfg.AttachmentDir, id) }

// Upload stores an encrypted attachment: the bytes go to a temporary file
// that is fsync'd and renamed into place, then the metadata is stored. A
// failure at any point leaves nothing behind.
func (n *Node) Upload(ctx context.Context, p auth.Principal, body io.Reader) (storage.Attachment, error) {
	if n.cfg.AttachmentDir == "" {
		return storage.Attachment{}, proto.Errorf(proto.CodeForbidden, "attachments are not configured")
	}
	id := ids.New()
	tmp, err := os.CreateTemp(n.cfg.AttachmentDir, id+"-*.tmp")
	if err != nil {
		return storage.Attachment{}, err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // a no-op after the rename
	size, err := io.Copy(tmp, io.LimitReader(body, n.cfg.MaxAttachmentBytes+1))
	if err == nil && size > n.cfg.MaxAttachmentBytes {
		err = proto.Errorf(proto.CodePayloadTooLarge, "attachments are limited to %d bytes", n.cfg.MaxAttachmentBytes)
	}
	if err == nil && size == 0 {
		err = proto.Errorf(proto.CodeInvalidRequest, "the attachment is empty")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = proto.Errorf(proto.CodePayloadTooLarge, "attachments are limited to %d bytes", n.cfg.MaxAttachmentBytes)
		}
		return storage.Attachment{}, err
	}
	if err := os.Rename(tmpName, n.blobPath(id)); err != nil {
		return storage.Attachment{}, fmt.Errorf("attachment rename: %w", err)
	}
	syncDir(n.cfg.AttachmentDir)
	now := n.now().UTC()
	a := storage.Attachment{ID: id, Uploader: p.User.ID, Size: size, CreatedAt: now, ExpiresAt: now.Add(n.cfg.AttachmentRetention)}
	if err := n.store.PutAttachment(ctx, a); err != nil {
		os.Remove(n.blobPath(id))
		return storage.Attachment{}, err
	}
	return a, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// canRead reports whether p may read attachment a: its uploader, or a
// member of a conversation with a message that references it.
func (n *Node) canRead(ctx context.Context, p auth.Principal, a *storage.Attachment) (bool, error) {
	if a.Uploader == p.User.ID {
		return true, nil
	}
	for _, cid := range a.Conversations {
		c, err := n.store.Conversation(ctx, cid)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if _, ok := c.Member(p.User.ID); ok {
			return true, nil
		}
	}
	return false, nil
}

// attachmentUsable checks that a message of p may reference attachment id.
func (n *Node) attachmentUsable(ctx context.Context, p auth.Principal, id string, now time.Time) error {
	a, err := n.store.Attachment(ctx, id, now)
	if err == nil {
		var ok bool
		ok, err = n.canRead(ctx, p, &a)
		if err == nil && !ok {
			err = storage.ErrNotFound
		}
	}
	if errors.Is(err, storage.ErrNotFound) {
		return proto.Errorf(proto.CodeInvalidRequest, "unknown attachment %q", id)
	}
	return err
}

// OpenAttachment returns the attachment's metadata and bytes for p.
func (n *Node) OpenAttachment(ctx context.Context, p auth.Principal, id string) (storage.Attachment, *os.File, error) {
	a, err := n.store.Attachment(ctx, id, n.now())
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return a, nil, errNotFound
		}
		return a, nil, err
	}
	ok, err := n.canRead(ctx, p, &a)
	if err != nil {
		return a, nil, err
	}
	if !ok {
		return a, nil, errNotFound
	}
	f, err := os.Open(n.blobPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return a, nil, errNotFound
	}
	return a, f, err
}

// CountDeleted adds n records of kind that another part of the node's
// retention deleted (sessions) to klassenfunk_retention_deleted_total.
func (n *Node) CountDeleted(kind string, count int) {
	n.metrics.expired.WithLabelValues(kind).Add(float64(count))
}

// sweepBatch bounds the records one sweep transaction deletes.
const sweepBatch = 1000

// Sweep deletes expired messages and attachments (with their blobs). It
// loops in batches until nothing expired is left, and rests after each
// full batch as long as the batch took.
//
// A sweep is background work that shares the store (and, on a small
// node, the core) with the senders: at a steady state it deletes as many
// messages as they write. Batches back to back held off the store's
// checkpoints until appends waited for room (seconds of latency at 15,000
// msgs/s); the rests leave at least half of the time to them
// (docs/performance.md).
func (n *Node) Sweep(ctx context.Context) error {
	now := n.now()
	for {
		start := time.Now()
		k, err := n.store.DeleteExpiredMessages(ctx, now, sweepBatch)
		n.metrics.expired.WithLabelValues("messages").Add(float64(k))
		if err != nil {
			return fmt.Errorf("sweep messages: %w", err)
		}
		if k < sweepBatch {
			break
		}
		if n.sweptBatch != nil {
			n.sweptBatch(ctx)
		}
		if err := ctxtime.Sleep(ctx, time.Since(start)); err != nil {
			return fmt.Errorf("sweep messages: %w", err)
		}
	}
	for {
		start := time.Now()
		gone, err := n.store.DeleteExpiredAttachments(ctx, now, sweepBatch)
		for _, id := range gone {
			if err := os.Remove(n.blobPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
				n.log.Warn("remove attachment blob", "err", err)
			}
		}
		n.metrics.expired.WithLabelValues("attachments").Add(float64(len(gone)))
		if err != nil {
			return fmt.Errorf("sweep attachments: %w", err)
		}
		if len(gone) < sweepBatch {
			break
		}
		if err := ctxtime.Sleep(ctx, time.Since(start)); err != nil {
			return fmt.Errorf("sweep attachments: %w", err)
		}
	}
	return nil
}
