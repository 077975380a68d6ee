package anon_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/privacy/anon"
)

func Example() {
	rules, err := anon.ParseRules([]byte(`{
	  "collection": "workouts",
	  "purpose": "fitness-stats",
	  "fields": {
	    "user":    {"kind": "pseudonymize"},
	    "age":     {"kind": "generalize", "bucket": 10, "format": "range"},
	    "started": {"kind": "generalize", "truncate": "day"},
	    "sport":   {"kind": "keep"}
	  },
	  "quasi_identifiers": ["age"],
	  "k": 2
	}`))
	if err != nil {
		panic(err)
	}
	epoch, _ := anon.EpochFor(time.Date(2026, 11, 5, 9, 0, 0, 0, time.UTC), anon.Monthly)
	secret := []byte("an example secret, 32 bytes long") // in ferry: derived from the store's master key
	a, err := anon.New(secret, epoch, rules)
	if err != nil {
		panic(err)
	}
	day := time.Date(2026, 11, 4, 18, 30, 0, 0, time.UTC)
	res, err := a.Apply([]map[string]any{
		{"id": "r1", "_ferry": map[string]any{"actor": "a1"}, "user": "ann", "age": 34, "started": day, "sport": "run", "notes": "knee hurts"},
		{"id": "r2", "user": "bob", "age": 38, "started": day.Add(time.Hour), "sport": "swim"},
		{"id": "r3", "user": "cy", "age": 71, "started": day, "sport": "run"}, // alone in 70-80
	})
	if err != nil {
		panic(err)
	}
	for _, r := range res.Records {
		out, _ := json.Marshal(r)
		fmt.Println(string(out))
	}
	fmt.Println("epoch:", epoch, "withheld:", res.Withheld)
	// Output:
	// {"age":"30-40","sport":"swim","started":"2026-11-04","user":"iqbxivv5y2wun37w"}
	// {"age":"30-40","sport":"run","started":"2026-11-04","user":"ur4xrvp7lmgnalvy"}
	// epoch: 2026-11 withheld: 1
}
