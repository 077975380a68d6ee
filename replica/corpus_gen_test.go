package replica

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// TestWriteFuzzCorpus regenerates the committed seed corpus of
// FuzzDecodeMsg when FERRY_WRITE_CORPUS=1; otherwise it checks that every
// committed seed still decodes as it did (valid seeds stay valid).
func TestWriteFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeMsg")
	seeds := map[string][]byte{}
	add := func(name string, m *wireMsg) {
		b, err := encodeMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		seeds["valid-"+name] = b
	}
	add("hello", &wireMsg{T: msgHello, Hello: &helloMsg{Replica: "r", Name: "n", Policy: "p", Cursor: 9,
		Colls: []string{"a", "b"}, Nonce: make([]byte, reconNonceLen), Recon: true, Gen: 3, Seq: 12}})
	add("hello-raw", &wireMsg{T: msgHello, Hello: &helloMsg{Replica: fpWire.EncodeToString(make([]byte, 32)), Name: "n",
		Policy: strings.Repeat("0f", 32), Colls: []string{"a"}, Nonce: make([]byte, reconNonceLen), Seq: 1}})
	add("recon-split", &wireMsg{T: msgRecon, Recon: &reconMsg{Ranges: []reconRange{
		{Lo: 0, Hi: 1024, Mode: rangeSplit, Parts: []byte{partFP, partEmpty, partItems + 1, partEmpty, partFP, partItems, partEmpty, partEmpty,
			partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty}, FP: make([]byte, 2*reconFPLen), Items: make([]byte, 3*reconItemLen)},
		{Lo: 7, Hi: 8, Sub: 0x13, Mode: rangeSplit, Parts: []byte{partFP, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty,
			partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partEmpty, partItems}, FP: make([]byte, reconFPLen), Items: make([]byte, reconItemLen)},
		{Lo: 9, Hi: 10, Sub: 0x1a5, Mode: rangeItems, Items: make([]byte, reconItemLen)},
		{Lo: 9, Hi: 10, Sub: 0x1a6, Mode: rangeEmpty}}}})
	seeds["invalid-recon-split-short"] = mustEncode(t, &wireMsg{T: msgRecon, Recon: &reconMsg{Ranges: []reconRange{
		{Lo: 0, Hi: 1024, Mode: rangeSplit, Parts: []byte{partFP}, FP: make([]byte, reconFPLen)}}}})
	seeds["invalid-recon-sub-of-range"] = mustEncode(t, &wireMsg{T: msgRecon, Recon: &reconMsg{Ranges: []reconRange{
		{Lo: 0, Hi: 2, Sub: 0x10, Mode: rangeEmpty}}}})
	twice, err := wireEnc.Marshal(&helloWire{Replica: "r", Policy: "p", PolicyRaw: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	frame, err := wireEnc.Marshal(&struct {
		V     uint8           `cbor:"1,keyasint"`
		T     msgType         `cbor:"2,keyasint"`
		Hello cbor.RawMessage `cbor:"3,keyasint"`
	}{ProtocolVersion, msgHello, twice})
	if err != nil {
		t.Fatal(err)
	}
	seeds["invalid-hello-policy-twice"] = append([]byte{frameRaw}, frame...)
	add("recon", &wireMsg{T: msgRecon, Recon: &reconMsg{Reply: true,
		Ranges: []reconRange{{Lo: 0, Hi: 64, FP: make([]byte, reconFPLen)}, {Lo: 64, Hi: 65, Mode: rangeItems, Items: make([]byte, 2*reconItemLen)},
			{Lo: 65, Hi: 1024, Mode: rangeEmpty}},
		Heads: []reconHeads{{Tag: make([]byte, reconTagLen), Heads: [][]byte{head(1)}, Round: 1}, {Tag: make([]byte, reconTagLen), Lack: true}}}})
	add("ack", &wireMsg{T: msgAck, Ack: &ackMsg{Applied: 3, Asked: 1, Need: []needMsg{{Collection: "c", ID: "i"}}}})
	add("idle", &wireMsg{T: msgIdle, Idle: &idleMsg{Seq: 4, Applied: 2}})
	add("error", &wireMsg{T: msgError, Err: &errMsg{Code: errCodePolicy, Text: "no"}})
	var recs []recordChanges
	for i := range 40 {
		recs = append(recs, recordChanges{Collection: "notes", ID: fmt.Sprint(i), Heads: [][]byte{head(byte(i))}, Changes: []byte("change bytes change bytes")})
	}
	add("batch-deflate", &wireMsg{T: msgBatch, Batch: &batchMsg{Records: recs, UpTo: 40}})
	seeds["invalid-empty"] = []byte{}
	seeds["invalid-encoding"] = []byte{9, 0xa0}
	seeds["invalid-deflate"] = []byte{frameDeflate, 1, 2, 3}
	seeds["invalid-huge-array"] = []byte{frameRaw, 0xa3, 0x01, 0x01, 0x02, 0x02, 0x04, 0xa1, 0x01, 0x9a, 0xff, 0xff, 0xff, 0xff}
	if os.Getenv("FERRY_WRITE_CORPUS") == "1" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range seeds {
		_, err := decodeMsg(b)
		if valid := name[:5] == "valid"; valid != (err == nil) {
			t.Errorf("seed %s: decode error %v", name, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < len(seeds) {
		t.Fatalf("committed corpus in %s: %d files, %v (run with FERRY_WRITE_CORPUS=1)", dir, len(entries), err)
	}
}

func mustEncode(t *testing.T, m *wireMsg) []byte {
	t.Helper()
	b, err := encodeMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
