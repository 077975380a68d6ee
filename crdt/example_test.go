package crdt_test

import (
	"fmt"
	"time"

	"github.com/ferrysync/ferry/crdt"
)

func fixedClock(ms int64) *crdt.Clock {
	return crdt.NewClock(func() time.Time { return time.UnixMilli(ms) }, 0)
}

func ExampleDoc() {
	d, err := crdt.New(crdt.Actor{ReplicaID: "laptop", Clock: fixedClock(1_700_000_000_000)})
	if err != nil {
		panic(err)
	}
	_ = d.Put(map[string]any{"title": "groceries", "items": []any{"milk"}})
	_ = d.Set("owner.name", "ada")
	_ = d.ListAppend("items", "eggs")
	_ = d.NewText("note", "buy")
	_ = d.SpliceText("note", 3, 0, " soon")
	_ = d.Set("visits", crdt.Counter(0))
	_ = d.Increment("visits", 2)
	m, _ := d.ToMap()
	fmt.Println(m)
	name, _ := d.Get("owner.name")
	fmt.Println(name)
	// Output:
	// map[items:[milk eggs] note:buy soon owner:map[name:ada] title:groceries visits:2]
	// ada
}

func ExampleDoc_Set() {
	d, _ := crdt.New(crdt.Actor{ReplicaID: "laptop", Clock: fixedClock(1_700_000_000_000)})
	_ = d.Set("profile.address.city", "Paris")
	_ = d.Set([]any{"profile", "tags"}, []any{"a", "b"})
	_ = d.Set([]any{"profile", "tags", 1}, "c")
	err := d.Set("bad", make(chan int))
	fmt.Println(d.Get("profile"))
	fmt.Println(err)
	// Output:
	// map[address:map[city:Paris] tags:[a c]] <nil>
	// crdt: unsupported value: chan int
}

func ExampleDoc_MergeRemote() {
	a, _ := crdt.New(crdt.Actor{ReplicaID: "a", Clock: fixedClock(1_700_000_000_000)})
	_ = a.Set("status", "draft")
	b, _ := crdt.Load(a.Save(), crdt.Actor{ReplicaID: "b", Clock: fixedClock(1_700_000_000_500)})
	_ = a.Set("status", "done")
	_ = b.Set("status", "archived")
	_ = b.Set("tag", "x") // a different field: no conflict
	res, _ := a.MergeFrom(b)
	for _, c := range res.Conflicts {
		fmt.Println(c.Path, c.Kind)
		for _, cd := range c.Candidates {
			fmt.Println(" ", cd.Value, cd.ReplicaID, cd.HLC)
		}
		// Keep the latest write (what policy.Timestamp would do).
		_ = a.Resolve(crdt.Resolution{Conflict: c, Winner: latest(c), By: "example"})
	}
	fmt.Println(a.ToMap())
	// Output:
	// /status value
	//   done a 1700000000000.1
	//   archived b 1700000000500.0
	// map[status:archived tag:x] <nil>
}

func latest(c crdt.Conflict) int {
	best := 0
	for i, cd := range c.Candidates {
		if cd.HLC.Compare(c.Candidates[best].HLC) > 0 {
			best = i
		}
	}
	return best
}
