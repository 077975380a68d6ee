package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The relay's disk and log hold none of the payloads, nor the space key
// in any common encoding, nor the passphrase it came from; they do hold
// what the relay is meant to see (space ID, member keys), which shows the
// scan reads what is there.
func TestCanaryRelaySeesNothing(t *testing.T) {
	sink := newLogSink()
	r := newTestRelay(t, ServerOptions{Logger: sink.logger()})
	passphrase := "canary passphrase: violet-armadillo-Quixote-8814"
	key := sha256.Sum256([]byte(passphrase))
	space := SpaceFromKey(key, r.url)
	a, b := newDevice(t, r), newDevice(t, r)
	if err := a.c.CreateSpace(t.Context(), space); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.UpdateMembers(t.Context(), space, []ed25519.PublicKey{b.pub()}, nil); err != nil {
		t.Fatal(err)
	}
	payloads := []string{
		"CANARY-PAYLOAD-zebra-4471",
		`{"name":"Ada Lovelace","iban":"DE44500105175407324931"}`,
		strings.Repeat("CANARY-BULK-compressible-", 3000),
	}
	for _, p := range payloads {
		a.send(t, space, p)
	}
	got, err := b.receive(t, space)
	wantPayloads(t, "b", got, err, payloads...)
	r.restart() // flush memtables to disk
	a.send(t, space, "CANARY-UNACKED-walrus-0093")
	r.restart()

	needles := map[string][]byte{"passphrase": []byte(passphrase), "key": key[:]}
	for i, p := range append(payloads, "CANARY-UNACKED-walrus-0093") {
		needles["payload "+string(rune('0'+i))] = []byte(p)[:min(len(p), 40)]
	}
	needles["key hex"] = []byte(hex.EncodeToString(key[:]))
	needles["key HEX"] = []byte(strings.ToUpper(hex.EncodeToString(key[:])))
	needles["key base64"] = []byte(base64.StdEncoding.EncodeToString(key[:]))
	needles["key base64url"] = []byte(base64.RawURLEncoding.EncodeToString(key[:]))
	needles["key base32"] = []byte(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(key[:]))
	needles["bundle key"] = aeadKey(space.Key)

	var files int
	var disk bytes.Buffer
	err = filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		disk.Write(data)
		disk.WriteByte(0)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := sink.Bytes()
	for where, hay := range map[string][]byte{"relay data dir": disk.Bytes(), "relay log": logs} {
		for name, n := range needles {
			if bytes.Contains(hay, n) {
				t.Errorf("%s contains the %s", where, name)
			}
		}
		if !bytes.Contains(hay, []byte(space.ID)) {
			t.Errorf("control: %s does not contain the space ID; the scan sees nothing", where)
		}
	}
	if !bytes.Contains(disk.Bytes(), a.pub()) {
		t.Error("control: member key not found on disk")
	}
	if files < 3 || disk.Len() < 8<<10 {
		t.Errorf("control: scanned %d files, %d bytes", files, disk.Len())
	}
}
