package amjs_test

import (
	"encoding/base64"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/ferrysync/ferry/internal/amjs"
)

// TestRoundTrip: a document saved by the JS library loads in automerge-go
// with the value the script wrote.
func TestRoundTrip(t *testing.T) {
	out := amjs.Run(t, `
import * as A from "@automerge/automerge"
const d = A.from({title: "from js"})
process.stdout.write(Buffer.from(A.save(d)).toString("base64"))
`)
	raw, err := base64.StdEncoding.DecodeString(string(out))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := automerge.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, err := doc.Path("title").Get()
	if err != nil {
		t.Fatal(err)
	}
	// Automerge 3 writes strings as Text objects by default.
	if v.Kind() != automerge.KindText {
		t.Fatalf("title kind = %v, want text", v.Kind())
	}
	got, err := v.Text().Get()
	if err != nil {
		t.Fatal(err)
	}
	if got != "from js" {
		t.Fatalf("title = %q, want %q", got, "from js")
	}
}
