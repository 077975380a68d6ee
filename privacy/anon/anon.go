package anon

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"sync"
)

// Anonymizer applies one Rules value under one pseudonym epoch. It holds
// the derived pseudonym key, never the device secret, and never exposes the
// key (its String and GoString print no key material). It is safe for
// concurrent use.
type Anonymizer struct {
	c     *compiled
	key   []byte
	epoch string
	noise map[string]laplace // by field path

	mu  sync.Mutex // guards smp
	smp sampler
}

type laplace struct{ s, t *big.Int }

// Option configures New.
type Option func(*options)

type options struct {
	random io.Reader
}

// WithRandom sets the source of the noise's randomness (crypto/rand.Reader
// by default). Tests pass a seeded reader to draw a fixed sequence; in
// production anything but a cryptographic source voids the privacy
// guarantee.
func WithRandom(r io.Reader) Option { return func(o *options) { o.random = r } }

// New returns an Anonymizer for rules under the pseudonym epoch (a label
// such as EpochFor returns). The secret is the device's pseudonym secret,
// at least MinSecret bytes and not all zero, that never leaves the device; New keeps only
// the key derived from it for rules.Purpose and epoch.
func New(secret []byte, epoch string, rules Rules, opts ...Option) (*Anonymizer, error) {
	c, err := compile(rules)
	if err != nil {
		return nil, err
	}
	if len(secret) < MinSecret {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrBadSecret, len(secret), MinSecret)
	}
	if allZero(secret) {
		return nil, fmt.Errorf("%w: all zero (never filled?)", ErrBadSecret)
	}
	if err := checkLabel(epoch); err != nil {
		return nil, fmt.Errorf("%w: %q: %s", ErrBadEpoch, epoch, err)
	}
	o := options{random: rand.Reader}
	for _, opt := range opts {
		opt(&o)
	}
	if o.random == nil {
		o.random = rand.Reader
	}
	key, err := pseudonymKey(secret, rules.Purpose, epoch)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSecret, err)
	}
	a := &Anonymizer{c: c, key: key, epoch: epoch, noise: map[string]laplace{}, smp: sampler{r: o.random}}
	for p, ep := range c.fieldEp {
		sens := rules.Fields[p].Sensitivity
		if sens == 0 {
			sens = 1
		}
		s, t := laplaceParams(ep, sens)
		a.noise[p] = laplace{s, t}
	}
	return a, nil
}

// String describes a without key material.
func (a *Anonymizer) String() string {
	return fmt.Sprintf("anon.Anonymizer{collection: %q, purpose: %q, epoch: %q}", a.c.rules.Collection, a.c.rules.Purpose, a.epoch)
}

// GoString is String, so %#v prints no key material either.
func (a *Anonymizer) GoString() string { return a.String() }

// Epoch returns the pseudonym epoch of a.
func (a *Anonymizer) Epoch() string { return a.epoch }

// Rules returns the rules a applies.
func (a *Anonymizer) Rules() Rules { return a.c.rules }

// Result is what Apply produces: the records that may leave the device and
// the counts for the share ledger.
type Result struct {
	// Records are fresh maps of normalized values (see docs), sorted by
	// their canonical encoding so their order says nothing of the input's.
	Records []map[string]any
	// Withheld counts input records left out by k-anonymity.
	Withheld int
	// DroppedFields counts values removed because no rule named them, a
	// drop rule did, or they were ferry metadata or the record id (a
	// removed subtree counts once). Withheld records are counted too.
	DroppedFields int
	// Rejected counts values a rule named but could not take (a type the
	// rule does not fit, a raw timestamp under keep, a non-finite number),
	// and which were removed.
	Rejected int
	// Epsilon is the differential-privacy budget this share spent per
	// record (the sum of the noise fields' epsilons; 0 without noise).
	Epsilon float64
}

// Apply anonymizes records. It does not modify them. The only error is a
// failure of the randomness source (ErrRandom).
func (a *Anonymizer) Apply(records []map[string]any) (Result, error) {
	res := Result{Records: []map[string]any{}, Epsilon: a.c.epsilon}
	type row struct {
		rec map[string]any
		qi  string
		enc []byte
	}
	rows := make([]row, 0, len(records))
	groups := map[string]int{}
	for _, in := range records {
		out, err := a.walk(a.c.root, in, &res)
		if err != nil {
			return Result{}, err
		}
		qi := a.qiKey(out)
		groups[qi]++
		rows = append(rows, row{rec: out, qi: qi})
	}
	kept := rows[:0]
	for _, r := range rows {
		if a.c.rules.K > 1 && groups[r.qi] < a.c.rules.K {
			res.Withheld++
			continue
		}
		r.enc = canonical(r.rec)
		kept = append(kept, r)
	}
	slices.SortStableFunc(kept, func(x, y row) int { return bytes.Compare(x.enc, y.enc) })
	for _, r := range kept {
		res.Records = append(res.Records, r.rec)
	}
	return res, nil
}

// walk builds the output for the map m under rule-tree node n.
func (a *Anonymizer) walk(n *node, m map[string]any, res *Result) (map[string]any, error) {
	out := map[string]any{}
	for k, v := range m {
		if strings.HasPrefix(k, MetaPrefix) {
			res.DroppedFields++
			continue
		}
		child := n.children[k]
		if child == nil {
			res.DroppedFields++
			continue
		}
		if child.rule == nil {
			sub, ok := v.(map[string]any)
			if !ok {
				res.Rejected++
				continue
			}
			o, err := a.walk(child, sub, res)
			if err != nil {
				return nil, err
			}
			if len(o) > 0 {
				out[k] = o
			}
			continue
		}
		val, ok, err := a.apply(child, v, res)
		if err != nil {
			return nil, err
		}
		if !ok {
			res.Rejected++
			continue
		}
		out[k] = val
	}
	return out, nil
}

// apply runs a leaf rule on v. A nil value stays nil under every rule.
func (a *Anonymizer) apply(n *node, v any, res *Result) (any, bool, error) {
	if v == nil {
		return nil, true, nil
	}
	switch n.rule.Kind {
	case Keep:
		val, ok := copyValue(v, 0, &res.DroppedFields, &res.Rejected)
		return val, ok, nil
	case Pseudonymize:
		val, ok := a.pseudonymize(v)
		return val, ok, nil
	case Generalize:
		val, ok := generalize(n.rule, v)
		return val, ok, nil
	case Noise:
		i, _, isInt, ok := number(v)
		if !ok || !isInt {
			return nil, false, nil
		}
		p := a.noise[n.path]
		a.mu.Lock()
		z, err := a.smp.discreteLaplace(p.s, p.t)
		a.mu.Unlock()
		if err != nil {
			return nil, false, err
		}
		return addNoise(i, z), true, nil
	}
	return nil, false, nil
}

// pseudonymize replaces a scalar, or each scalar of a list, by its token.
func (a *Anonymizer) pseudonymize(v any) (any, bool) {
	if l, ok := v.([]any); ok {
		out := make([]any, len(l))
		for i, e := range l {
			s, ok := scalar(e)
			if !ok || s == nil {
				return nil, false
			}
			out[i] = token(a.key, s)
		}
		return out, true
	}
	s, ok := scalar(v)
	if !ok {
		return nil, false
	}
	return token(a.key, s), true
}

// qiKey is the canonical encoding of the record's quasi-identifier values
// (absent and null told apart).
func (a *Anonymizer) qiKey(rec map[string]any) string {
	if len(a.c.qis) == 0 {
		return ""
	}
	tuple := make([]any, len(a.c.qis))
	for i, segs := range a.c.qis {
		v, ok := lookup(rec, segs)
		tuple[i] = []any{ok, v}
	}
	return string(canonical(tuple))
}

func lookup(m map[string]any, segs []string) (any, bool) {
	var cur any = m
	for _, s := range segs {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[s]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}
