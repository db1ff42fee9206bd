package messenger

import (
	"encoding/binary"
	"encoding/json"
	"errors"

	"klassenfunk/proto"
	"klassenfunk/storage"
)

// The form of an event between nodes (RedisBroker). It is binary: the
// message in the store's own compact form, which costs a fraction of JSON
// to encode and decode (JSON was a fifth of a receiving node's CPU
// profile):
//
//	0x02
//	origin node id: uvarint(len)+bytes
//	kind, then exclude device and credential id (uvarint(len)+bytes each), then close code: uvarints
//	uvarint(0) without a message, else uvarint(seq+1) and the message (storage.AppendMessageValue) to the end
//
// The origin comes first so that a node spots its own events by prefix
// (eventOrigin). Events in JSON (starting with '{'), as earlier builds
// publish them, are still read.
const binaryEvent = 0x02

var errCorruptEvent = errors.New("messenger: corrupt event")

// eventOrigin is how every event published by the node with id starts.
func eventOrigin(id string) []byte {
	return appendEventStr([]byte{binaryEvent}, id)
}

// appendEvent appends ev as published by the node whose eventOrigin is
// origin.
func appendEvent(buf, origin []byte, ev *Event) ([]byte, error) {
	buf = append(buf, origin...)
	buf = binary.AppendUvarint(buf, uint64(ev.Kind))
	buf = appendEventStr(buf, ev.ExcludeDevice)
	buf = appendEventStr(buf, ev.CredID)
	buf = binary.AppendUvarint(buf, uint64(ev.Code))
	if ev.Message == nil {
		return binary.AppendUvarint(buf, 0), nil
	}
	buf = binary.AppendUvarint(buf, ev.Message.Seq+1)
	return storage.AppendMessageValue(buf, ev.Message)
}

func appendEventStr(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// decodeEvent reads an event in either form into ev.
func decodeEvent(b []byte, ev *Event) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, ev)
	}
	if len(b) == 0 || b[0] != binaryEvent {
		return errCorruptEvent
	}
	b = b[1:]
	var err error
	uvarint := func() uint64 {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			err = errCorruptEvent
			return 0
		}
		b = b[n:]
		return x
	}
	str := func() string {
		n := uvarint()
		if n > uint64(len(b)) {
			err = errCorruptEvent
			return ""
		}
		s := string(b[:n])
		b = b[n:]
		return s
	}
	str() // the origin
	kind := uvarint()
	ev.ExcludeDevice, ev.CredID = str(), str()
	code := uvarint()
	seq := uvarint()
	if err != nil || kind > 255 || code > 65535 {
		return errCorruptEvent
	}
	ev.Kind, ev.Code = EventKind(kind), proto.CloseCode(code)
	if seq == 0 {
		if len(b) != 0 {
			return errCorruptEvent
		}
		return nil
	}
	ev.Message = &storage.Message{}
	if err := storage.DecodeMessageValue(b, ev.Message); err != nil {
		return err
	}
	ev.Message.Seq = seq - 1
	return nil
}
