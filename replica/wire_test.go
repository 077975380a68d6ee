package replica

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"testing"
)

func head(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestWireRoundTrip(t *testing.T) {
	msgs := []*wireMsg{
		{T: msgHello, Hello: &helloMsg{Replica: "abc", Name: "laptop", Policy: "p1", Cursor: 42}},
		{T: msgBatch, Batch: &batchMsg{UpTo: 9, Records: []recordChanges{
			{Collection: "notes", ID: "n1", Heads: [][]byte{head(1)}, Changes: []byte{1, 2, 3}},
			{Collection: "notes", ID: "n2", Changes: []byte{4}, Partial: true},
		}}},
		{T: msgAck, Ack: &ackMsg{Applied: 9}},
		{T: msgIdle, Idle: &idleMsg{Seq: 9, Applied: 3}},
		{T: msgAck, Ack: &ackMsg{Applied: 2, Asked: 1, Need: []needMsg{{Collection: "notes", ID: "n1"}}}},
		{T: msgError, Err: &errMsg{Code: errCodePolicy, Text: "policy mismatch"}},
	}
	for _, m := range msgs {
		b, err := encodeMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMsg(b)
		if err != nil {
			t.Fatalf("decode %d: %v", m.T, err)
		}
		again, err := encodeMsg(got)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("type %d: re-encoding differs (deterministic encoding broken)", m.T)
		}
	}
}

func TestWireRejects(t *testing.T) {
	valid := func(m *wireMsg) []byte {
		b, err := wireEnc.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{frameRaw}, b...)
	}
	cases := map[string][]byte{
		"empty":           nil,
		"garbage":         []byte("not cbor at all"),
		"wrong version":   valid(&wireMsg{V: 99, T: msgAck, Ack: &ackMsg{}}),
		"no body":         valid(&wireMsg{V: ProtocolVersion, T: msgAck}),
		"two bodies":      valid(&wireMsg{V: ProtocolVersion, T: msgAck, Ack: &ackMsg{}, Idle: &idleMsg{}}),
		"tag/body differ": valid(&wireMsg{V: ProtocolVersion, T: msgHello, Ack: &ackMsg{}}),
		"unknown type":    valid(&wireMsg{V: ProtocolVersion, T: 77, Ack: &ackMsg{}}),
		"short head": valid(&wireMsg{V: ProtocolVersion, T: msgBatch, Batch: &batchMsg{Records: []recordChanges{
			{Collection: "c", ID: "i", Heads: [][]byte{{1, 2}}, Changes: []byte{1}}}}}),
		"no name": valid(&wireMsg{V: ProtocolVersion, T: msgBatch, Batch: &batchMsg{Records: []recordChanges{
			{Collection: "", ID: "i", Heads: [][]byte{head(1)}}}}}),
		"changes without heads": valid(&wireMsg{V: ProtocolVersion, T: msgBatch, Batch: &batchMsg{Records: []recordChanges{
			{Collection: "c", ID: "i", Changes: []byte{1}}}}}),
		"empty hello": valid(&wireMsg{V: ProtocolVersion, T: msgHello, Hello: &helloMsg{}}),
		// An array header claiming 2^32 elements must fail before allocation.
		"huge array":       {frameRaw, 0xa3, 0x01, 0x01, 0x02, 0x02, 0x04, 0xa1, 0x01, 0x9a, 0xff, 0xff, 0xff, 0xff},
		"unknown encoding": {7, 0xa0},
		"bad deflate":      {frameDeflate, 0xff, 0xff, 0xff},
		"deflate bomb":     bomb(t),
	}
	for name, b := range cases {
		if _, err := decodeMsg(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

// bomb is a small deflate frame that inflates past maxInflated.
func bomb(t *testing.T) []byte {
	var buf bytes.Buffer
	buf.WriteByte(frameDeflate)
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	zero := make([]byte, 1<<20)
	for range maxInflated/len(zero) + 2 {
		w.Write(zero)
	}
	w.Close()
	if buf.Len() > 64<<10 {
		t.Fatalf("bomb is %d bytes", buf.Len())
	}
	return buf.Bytes()
}

// TestWireCompresses: a batch with repetitive content is sent compressed
// and decodes to the same message.
func TestWireCompresses(t *testing.T) {
	var recs []recordChanges
	for i := range 50 {
		recs = append(recs, recordChanges{Collection: "notes", ID: fmt.Sprintf("note-%d", i), Heads: [][]byte{head(byte(i))},
			Changes: bytes.Repeat([]byte("_ferry:/title replica-fingerprint "), 10)})
	}
	m := &wireMsg{T: msgBatch, Batch: &batchMsg{Records: recs, UpTo: 50}}
	raw, _ := wireEnc.Marshal(m)
	b, err := encodeMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != frameDeflate || len(b)*3 > len(raw) {
		t.Fatalf("frame of %d bytes (encoding %d) for %d bytes of CBOR", len(b), b[0], len(raw))
	}
	got, err := decodeMsg(b)
	if err != nil || len(got.Batch.Records) != 50 || got.Batch.Records[49].ID != "note-49" {
		t.Fatalf("decode: %v", err)
	}
}

// TestWireVersionMismatch: another protocol version is told apart from a
// malformed message, so the session says why it was refused.
func TestWireVersionMismatch(t *testing.T) {
	b, err := wireEnc.Marshal(&wireMsg{V: ProtocolVersion + 1, T: msgAck, Ack: &ackMsg{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = decodeMsg(append([]byte{frameRaw}, b...))
	if !errors.Is(err, ErrVersionMismatch) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want ErrVersionMismatch (and ErrProtocol)", err)
	}
}

func FuzzDecodeMsg(f *testing.F) {
	for _, m := range []*wireMsg{
		{T: msgHello, Hello: &helloMsg{Replica: "abc", Policy: "p", Cursor: 1}},
		{T: msgBatch, Batch: &batchMsg{UpTo: 1, Records: []recordChanges{{Collection: "c", ID: "i", Heads: [][]byte{head(7)}, Changes: []byte{9}}}}},
		{T: msgIdle, Idle: &idleMsg{Seq: 1}},
	} {
		b, err := encodeMsg(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeBatch(b); err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("decodeBatch: error not ErrProtocol: %v", err)
		} else if err == nil && m.T != msgBatch && m.V != ProtocolVersion {
			t.Fatalf("decodeBatch read a version %d message of type %d", m.V, m.T)
		}
		m, err := decodeMsg(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error not ErrProtocol: %v", err)
			}
			return
		}
		if _, err := encodeMsg(m); err != nil {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
	})
}

// TestDecodeBatchReadsOlderBatches: a record parked in the store or a
// relay bundle written by an older build (protocol 2 or 3) is still read
// after an upgrade; a live frame of another version is still refused, and
// so is anything but a batch, or a version outside the range. (Found in
// review: after the bump to 4, a device with a parked record failed every
// relay pull with "parked record: corrupt".)
func TestDecodeBatchReadsOlderBatches(t *testing.T) {
	rec := recordChanges{Collection: "notes", ID: "n1", Heads: [][]byte{bytes.Repeat([]byte{7}, 32)}, Changes: []byte("c")}
	frame := func(v uint8, m wireMsg) []byte {
		m.V = v
		b, err := wireEnc.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{frameRaw}, b...)
	}
	batch := wireMsg{T: msgBatch, Batch: &batchMsg{Records: []recordChanges{rec}, UpTo: 9}}
	for v := uint8(minBatchVersion); v <= ProtocolVersion; v++ {
		m, err := decodeBatch(frame(v, batch))
		if err != nil || m.T != msgBatch || len(m.Batch.Records) != 1 || m.Batch.Records[0].ID != "n1" || m.Batch.UpTo != 9 {
			t.Fatalf("version %d batch: %+v, %v", v, m, err)
		}
		if _, err := decodeMsg(frame(v, batch)); (v == ProtocolVersion) != (err == nil) {
			t.Fatalf("decodeMsg of a version %d batch: %v", v, err)
		}
	}
	for _, v := range []uint8{0, 1, ProtocolVersion + 1} {
		if _, err := decodeBatch(frame(v, batch)); !errors.Is(err, ErrVersionMismatch) {
			t.Fatalf("version %d batch: %v, want ErrVersionMismatch", v, err)
		}
	}
	if _, err := decodeBatch(frame(ProtocolVersion-1, wireMsg{T: msgAck, Ack: &ackMsg{}})); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("an older ack: %v, want ErrVersionMismatch", err)
	}
}
