package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"filippo.io/age"
)

// The committed seed corpora under testdata/fuzz/<Target>/ hold valid and
// invalid inputs. TestFuzzCorpus checks that the valid ones are still valid
// (so the fuzzers start from inputs that reach deep code); with
// FERRY_WRITE_FUZZ_SEEDS=1 it (re)writes them first.

type seed struct {
	name  string
	data  []byte
	valid bool
}

func corpusSeeds(t *testing.T) map[string][]seed {
	ek := fixedKeys(t, 1)
	env, _ := ek.sealNew(kindMeta, fuzzEnvKey, []byte("meta plaintext"))
	envEmpty, _ := ek.sealNew(kindMeta, fuzzEnvKey, nil)
	hdr := testHeader(t, false).encode()
	hdrRot := testHeader(t, true).encode()
	stream := rawStream(t, bkHeader{K: backupKind, V: 1, Records: 1, Slots: 1},
		bkRecord{K: "record", C: "c", ID: "i", Doc: validDoc(t)}, bkSlot{K: "slot", NS: "n", Key: "k", Value: []byte("v")})
	backup := seedBackup(t)
	wal, walEnds := synthLog(4)
	return map[string][]seed{
		// FuzzScanLog: "valid" means not damaged (clean or torn).
		"FuzzScanLog": {
			{"valid", wal, true}, {"torn", wal[:walEnds[2]-3], true},
			{"damaged", flip(wal, (walEnds[1]+walEnds[2])/2), false},
		},
		"FuzzEnvelope": {
			{"valid", env, true}, {"valid-empty", envEmpty, true},
			{"flipped", flip(env, len(env)-1), false}, {"short", env[:envOverhead-1], false}, {"wrong-version", flip(env, 0), false},
		},
		"FuzzHeader": {
			{"valid", hdr, true}, {"valid-rotating", hdrRot, true},
			{"flipped", flip(hdr, 40), false}, {"truncated", hdr[:100], false},
		},
		"FuzzBackupStream": {
			{"valid", stream, true}, {"valid-empty", rawStream(t, bkHeader{K: backupKind, V: 1}), true},
			{"bad-hash", flip(stream, len(stream)-1), false}, {"truncated", stream[:len(stream)/2], false},
		},
		"FuzzImport": {
			{"valid", backup, true}, {"truncated", backup[:len(backup)-10], false},
			{"flipped", flip(backup, len(backup)/2), false}, {"not-age", []byte("age-encryption.org/v1\n-> X25519 abc\n"), false},
		},
	}
}

func encodeFuzzFile(b []byte) []byte { return []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)) }

func decodeFuzzFile(b []byte) ([]byte, error) {
	s, ok := strings.CutPrefix(string(b), "go test fuzz v1\n[]byte(")
	if !ok {
		return nil, errors.New("not a single-[]byte fuzz file")
	}
	s = strings.TrimSuffix(strings.TrimSpace(s), ")")
	v, err := strconv.Unquote(s)
	return []byte(v), err
}

func TestFuzzCorpus(t *testing.T) {
	seeds := corpusSeeds(t)
	if os.Getenv("FERRY_WRITE_FUZZ_SEEDS") == "1" {
		for target, ss := range seeds {
			dir := filepath.Join("testdata", "fuzz", target)
			os.MkdirAll(dir, 0o755)
			for _, s := range ss {
				if err := os.WriteFile(filepath.Join(dir, "seed-"+s.name), encodeFuzzFile(s.data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	ek := fixedKeys(t, 1)
	id := testIdentity(t)
	check := map[string]func([]byte) error{
		"FuzzScanLog": func(b []byte) error {
			if scanLog(b, maxInlineVal).damaged {
				return errors.New("damaged")
			}
			return nil
		},
		"FuzzEnvelope":     func(b []byte) error { _, _, err := ek.open(nil, kindMeta, fuzzEnvKey, b); return err },
		"FuzzHeader":       func(b []byte) error { _, err := decodeHeader(b); return err },
		"FuzzBackupStream": func(b []byte) error { _, err := readBackupStream(bytes.NewReader(b), 1<<20, amCheck); return err },
		"FuzzImport": func(b []byte) error {
			s := newMemStore(t)
			_, err := s.Import(context.Background(), bytes.NewReader(b), ImportOptions{Identities: []age.Identity{id}}, amImporter{s})
			return err
		},
	}
	for target, ss := range seeds {
		for _, s := range ss {
			raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", target, "seed-"+s.name))
			if err != nil {
				t.Fatalf("%s/%s: %v (run with FERRY_WRITE_FUZZ_SEEDS=1)", target, s.name, err)
			}
			data, err := decodeFuzzFile(raw)
			if err != nil {
				t.Fatalf("%s/%s: %v", target, s.name, err)
			}
			if err := check[target](data); (err == nil) != s.valid {
				t.Fatalf("%s/%s: valid=%v but got %v", target, s.name, s.valid, err)
			}
		}
	}
}
