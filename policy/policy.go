package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/internal/names"
)

// Kind names a conflict policy.
type Kind string

const (
	// Merge accepts the CRDT's deterministic winner (Automerge's choice).
	Merge Kind = "merge"
	// Timestamp picks the latest HLC; the greater replica id breaks ties.
	Timestamp Kind = "timestamp"
	// Priority picks the highest priority (the writing replica's, or a
	// field of the value); ties fall to Timestamp.
	Priority Kind = "priority"
	// User writes the Timestamp winner provisionally and queues the
	// conflict for the user; after the deadline the fallback decides.
	User Kind = "user"
)

// DefaultDeadline is how long a user-policy conflict waits for the user.
const DefaultDeadline = 24 * time.Hour

// ErrBadPolicy reports an invalid policy file or rule.
var ErrBadPolicy = errkind.New("policy: bad policy", errkind.Invalid)

// ErrStale: the queued conflict was superseded by a newer write to its
// field; deciding it now would overwrite that write, so it was closed
// instead.
var ErrStale = errors.New("policy: conflict superseded by a newer write")

// Clamps bounds the times of writes that some replica received before
// their recorded time (crdt.Doc.ClockClamps: clock notes kept in the
// document): such a write counts as made at its clamp when candidates are
// ordered by time. Nil clamps nothing.
type Clamps map[crdt.WriteKey]crdt.Timestamp

// Time returns the time candidate c counts as: its HLC, or its clamp when
// that is earlier.
func (cl Clamps) Time(c crdt.Candidate) crdt.Timestamp {
	if t, ok := cl[crdt.WriteKey{ReplicaID: c.ReplicaID, HLC: c.HLC}]; ok && t.Compare(c.HLC) < 0 {
		return t
	}
	return c.HLC
}

// Rule is the policy for a collection or a field.
type Rule struct {
	Policy Kind `json:"policy"`
	// PriorityField, for Priority: read the priority from this key path
	// (dotted, relative to the conflicting field) of each candidate value
	// instead of the writing replica's priority. A candidate without a
	// numeric field there ranks lowest.
	PriorityField string `json:"priority_field,omitempty"`
	// Deadline, for User: how long the user has (DefaultDeadline when 0).
	Deadline Duration `json:"deadline,omitempty"`
	// Fallback, for User: the policy that decides after the deadline
	// (Timestamp when empty; must not be User).
	Fallback Kind `json:"fallback,omitempty"`
	// FallbackPriorityField is PriorityField for a Priority fallback.
	FallbackPriorityField string `json:"fallback_priority_field,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("24h").
type Duration time.Duration

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: duration: %w", ErrBadPolicy, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%w: duration %q", ErrBadPolicy, s)
	}
	*d = Duration(v)
	return nil
}

func (r Rule) normalized() Rule {
	if r.Policy == "" {
		r.Policy = Timestamp
	}
	if r.Policy == User {
		if r.Deadline == 0 {
			r.Deadline = Duration(DefaultDeadline)
		}
		if r.Fallback == "" {
			r.Fallback = Timestamp
		}
	} else {
		r.Deadline, r.Fallback, r.FallbackPriorityField = 0, "", ""
	}
	if r.Policy != Priority {
		r.PriorityField = ""
	}
	if r.Fallback != Priority {
		r.FallbackPriorityField = ""
	}
	return r
}

func (r Rule) validate() error {
	switch r.Policy {
	case Merge, Timestamp, Priority, User:
	default:
		return fmt.Errorf("%w: unknown policy %q", ErrBadPolicy, r.Policy)
	}
	switch r.Fallback {
	case "", Merge, Timestamp, Priority:
	default:
		return fmt.Errorf("%w: fallback %q", ErrBadPolicy, r.Fallback)
	}
	return nil
}

// Collection is a collection's default rule plus per-field overrides keyed
// by field path (dotted "profile.address" or JSON pointer "/profile/address").
// The longest path that is the conflicting field or one of its parents wins.
type Collection struct {
	Rule
	Fields map[string]Rule `json:"fields,omitempty"`
}

// Set is the policy configuration peers must share (compare Fingerprint).
type Set struct {
	Version     int                   `json:"version"`
	Default     Rule                  `json:"default"`
	Collections map[string]Collection `json:"collections,omitempty"`

	fields map[string]map[string]Rule // collection -> pointer -> rule
}

// NewSet returns a set whose default rule is def (Timestamp when zero).
func NewSet(def Rule) *Set {
	s := &Set{Version: 1, Default: def}
	_ = s.prepare()
	return s
}

// SetCollection sets a collection's rule and field overrides.
func (s *Set) SetCollection(name string, c Collection) error {
	if s.Collections == nil {
		s.Collections = map[string]Collection{}
	}
	s.Collections[name] = c
	return s.prepare()
}

// Parse reads the JSON policy file format (see docs/policy.md).
func Parse(b []byte) (*Set, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Set
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("%w: version %d (want 1)", ErrBadPolicy, s.Version)
	}
	if err := s.prepare(); err != nil {
		return nil, err
	}
	return &s, nil
}

// LoadFile reads a policy file.
func LoadFile(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

func (s *Set) prepare() error {
	if s.Version == 0 {
		s.Version = 1
	}
	if err := s.Default.validateOrEmpty(); err != nil {
		return err
	}
	s.Default = s.Default.normalized()
	s.fields = map[string]map[string]Rule{}
	for name, c := range s.Collections {
		if err := names.Check("collection", name); err != nil {
			return fmt.Errorf("%w: %w", ErrBadPolicy, err)
		}
		if err := c.Rule.validateOrEmpty(); err != nil {
			return fmt.Errorf("collection %q: %w", name, err)
		}
		if c.Policy == "" {
			c.Rule = s.Default
		}
		c.Rule = c.Rule.normalized()
		fm := map[string]Rule{}
		for f, r := range c.Fields {
			if err := r.validate(); err != nil {
				return fmt.Errorf("collection %q field %q: %w", name, f, err)
			}
			ptr, err := fieldPointer(f)
			if err != nil {
				return fmt.Errorf("collection %q: %w", name, err)
			}
			if _, dup := fm[ptr]; dup {
				return fmt.Errorf("%w: collection %q: field %q given twice", ErrBadPolicy, name, f)
			}
			fm[ptr] = r.normalized()
		}
		s.fields[name] = fm
		s.Collections[name] = c
	}
	return nil
}

func (r Rule) validateOrEmpty() error {
	if r.Policy == "" {
		return nil
	}
	return r.validate()
}

func fieldPointer(f string) (string, error) {
	if f == "" {
		return "", fmt.Errorf("%w: empty field path", ErrBadPolicy)
	}
	if strings.HasPrefix(f, "/") {
		if _, err := crdt.PointerToPath(f); err != nil {
			return "", fmt.Errorf("%w: field %q", ErrBadPolicy, f)
		}
		return f, nil
	}
	parts := strings.Split(f, ".")
	for _, p := range parts {
		if p == "" {
			return "", fmt.Errorf("%w: field %q", ErrBadPolicy, f)
		}
	}
	return crdt.FieldPointer(parts...), nil
}

// RuleFor returns the rule for a field (JSON pointer) of a collection.
func (s *Set) RuleFor(collection, path string) Rule {
	c, ok := s.Collections[collection]
	if !ok {
		return s.Default
	}
	best, bestLen := c.Rule, -1
	for p, r := range s.fields[collection] {
		if (path == p || strings.HasPrefix(path, p+"/")) && len(p) > bestLen {
			best, bestLen = r, len(p)
		}
	}
	return best
}

type canonRule struct {
	Policy                Kind   `json:"policy"`
	PriorityField         string `json:"priority_field"`
	Deadline              int64  `json:"deadline_ns"`
	Fallback              Kind   `json:"fallback"`
	FallbackPriorityField string `json:"fallback_priority_field"`
}

func canon(r Rule) canonRule {
	return canonRule{r.Policy, r.PriorityField, int64(r.Deadline), r.Fallback, r.FallbackPriorityField}
}

// Fingerprint is a hash of the set's canonical encoding: equal for sets
// that decide every conflict the same way, whatever their file layout.
func (s *Set) Fingerprint() string {
	type field struct {
		Path string    `json:"path"`
		Rule canonRule `json:"rule"`
	}
	type coll struct {
		Name   string    `json:"name"`
		Rule   canonRule `json:"rule"`
		Fields []field   `json:"fields"`
	}
	out := struct {
		V           int       `json:"v"`
		Default     canonRule `json:"default"`
		Collections []coll    `json:"collections"`
	}{V: 1, Default: canon(s.Default)}
	names := make([]string, 0, len(s.Collections))
	for n := range s.Collections {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := coll{Name: n, Rule: canon(s.Collections[n].Rule), Fields: []field{}}
		for p, r := range s.fields[n] {
			c.Fields = append(c.Fields, field{p, canon(r)})
		}
		sort.Slice(c.Fields, func(i, j int) bool { return c.Fields[i].Path < c.Fields[j].Path })
		out.Collections = append(out.Collections, c)
	}
	b, _ := json.Marshal(out)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ---- deciding ---------------------------------------------------------------

// Decision is what a policy decided for one conflict.
type Decision struct {
	Collection string
	RecordID   string
	Conflict   crdt.Conflict
	Rule       Rule
	// Policy is the policy that picked Winner (for User: Timestamp, the
	// provisional pick).
	Policy      Kind
	Winner      int
	Provisional bool
	// By is written into the resolution: "policy:<kind>", "user",
	// "fallback:<kind>".
	By string
}

// Decide applies the set's rule for the conflict's field. It reads only the
// conflict (which holds only what is in the documents), so every replica
// decides the same.
func (s *Set) Decide(collection string, c crdt.Conflict) Decision {
	return s.DecideClamped(collection, c, nil)
}

// DecideClamped is Decide with candidate times bounded by cl (the clock
// notes of the conflict's document).
func (s *Set) DecideClamped(collection string, c crdt.Conflict, cl Clamps) Decision {
	r := s.RuleFor(collection, c.Path)
	d := Decision{Collection: collection, Conflict: c, Rule: r, Policy: r.Policy, By: "policy:" + string(r.Policy)}
	switch r.Policy {
	case User:
		d.Winner, d.Policy, d.Provisional = PickClamped(Timestamp, "", c, cl), Timestamp, true
		d.By = "user:provisional"
	default:
		d.Winner = PickClamped(r.Policy, r.PriorityField, c, cl)
	}
	return d
}

// Pick returns the index of the winning candidate under policy k (User
// picks like Timestamp).
func Pick(k Kind, priorityField string, c crdt.Conflict) int {
	return PickClamped(k, priorityField, c, nil)
}

// PickClamped is Pick with candidate times bounded by cl.
func PickClamped(k Kind, priorityField string, c crdt.Conflict, cl Clamps) int {
	if len(c.Candidates) == 0 {
		return -1
	}
	switch k {
	case Merge:
		if c.CRDTWinner >= 0 && c.CRDTWinner < len(c.Candidates) {
			return c.CRDTWinner
		}
	case Priority:
		best := 0
		for i := 1; i < len(c.Candidates); i++ {
			pi, pb := prio(c.Candidates[i], priorityField), prio(c.Candidates[best], priorityField)
			if pi > pb || pi == pb && laterThan(c.Candidates[i], c.Candidates[best], cl) {
				best = i
			}
		}
		return best
	}
	best := 0
	for i := 1; i < len(c.Candidates); i++ {
		if laterThan(c.Candidates[i], c.Candidates[best], cl) {
			best = i
		}
	}
	return best
}

func prio(c crdt.Candidate, field string) float64 {
	if field == "" {
		return float64(c.Priority)
	}
	v, ok := c.Field(strings.Split(field, ".")...)
	if !ok {
		return math.Inf(-1)
	}
	switch x := v.(type) {
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	case float64:
		if math.IsNaN(x) {
			return math.Inf(-1)
		}
		return x
	}
	return math.Inf(-1)
}

// laterThan orders candidates for Timestamp: HLC (clamped by cl), then
// the recorded HLC, then replica id, then change hash (a total order, so
// every replica that holds the same clock notes agrees).
func laterThan(a, b crdt.Candidate, cl Clamps) bool {
	if c := cl.Time(a).Compare(cl.Time(b)); c != 0 {
		return c > 0
	}
	if c := a.HLC.Compare(b.HLC); c != 0 {
		return c > 0
	}
	if a.ReplicaID != b.ReplicaID {
		return a.ReplicaID > b.ReplicaID
	}
	return bytes.Compare(a.Change[:], b.Change[:]) > 0
}
