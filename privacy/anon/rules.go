package anon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Sentinel errors. Every error the package returns wraps one of them.
var (
	// ErrBadRules: a Rules value (or its JSON form) is invalid.
	ErrBadRules = errors.New("anon: bad rules")
	// ErrBadSecret: the device secret is too short.
	ErrBadSecret = errors.New("anon: bad secret")
	// ErrBadEpoch: the epoch label is empty, too long or has characters
	// outside [A-Za-z0-9._-].
	ErrBadEpoch = errors.New("anon: bad epoch")
	// ErrRandom: the randomness source failed while drawing noise.
	ErrRandom = errors.New("anon: randomness source failed")
)

// Kind names what a FieldRule does with a field.
type Kind string

// The rule kinds.
const (
	Drop         Kind = "drop"         // remove the field (same as naming no rule)
	Keep         Kind = "keep"         // share the value as is (timestamps excepted)
	Pseudonymize Kind = "pseudonymize" // replace by a keyed, per-epoch token
	Generalize   Kind = "generalize"   // coarsen: bucket, truncate, prefix or decimals
	Noise        Kind = "noise"        // add discrete Laplace noise to an integer
)

// Unit is the unit a time is truncated to by a generalize rule.
type Unit string

// Truncation units. Truncated times are written as UTC strings: "2006",
// "2006-01", "2006-01-02", "2006-01-02T15".
const (
	Year  Unit = "year"
	Month Unit = "month"
	Day   Unit = "day"
	Hour  Unit = "hour"
)

// BucketFormat is how a numeric bucket is written.
type BucketFormat string

// Bucket formats.
const (
	// Floor writes the bucket's lower bound as a number (the default).
	Floor BucketFormat = "floor"
	// Range writes "lo-hi", the half-open interval [lo, hi).
	Range BucketFormat = "range"
)

// Limits on rule parameters.
const (
	// MinFieldEpsilon is the smallest budget one noised field may get; it
	// bounds the noise scale (Sensitivity / epsilon).
	MinFieldEpsilon = 1e-3
	// MaxSensitivity bounds FieldRule.Sensitivity.
	MaxSensitivity = 1 << 40
	// MaxDecimals bounds FieldRule.Decimals.
	MaxDecimals = 10
	// MaxLabel is the longest purpose or epoch label.
	MaxLabel = 64
	// MaxPathDepth is the most elements a field path may have.
	MaxPathDepth = 16
)

// RecordID is the top-level field that holds a record's id. No rule but
// Drop may name it: record ids never leave the device, not even
// pseudonymized (a per-epoch token of the id would let a destination link
// successive versions of one record, that is, its history).
const RecordID = "id"

// MetaPrefix starts the keys under which ferry keeps hidden write metadata
// (actor ids, clocks, history). No rule may name such a key and Apply drops
// every key with this prefix at any depth, even inside kept values.
const MetaPrefix = "_ferry"

// Rules says what of one collection may leave the device for one purpose.
// Its JSON form is documented in docs/privacy-anon.md.
type Rules struct {
	Collection string `json:"collection"`
	Purpose    string `json:"purpose"`
	// Fields maps a dotted path ("address.city") to its rule. Paths walk
	// maps only; a list is a leaf. No path may be a prefix of another.
	// Fields no path names are dropped.
	Fields map[string]FieldRule `json:"fields"`
	// QuasiIdentifiers are paths (each named in Fields with keep,
	// pseudonymize or generalize) whose output values, together, could
	// single out a person; records are grouped by them for k-anonymity.
	QuasiIdentifiers []string `json:"quasi_identifiers,omitempty"`
	// K: groups of fewer than K records are withheld. 0 or 1 withholds
	// nothing; with QuasiIdentifiers set K must be at least 2. With K >= 2
	// and no QuasiIdentifiers, all records form one group, so a share of
	// fewer than K records is withheld whole.
	K int `json:"k,omitempty"`
	// Epsilon is the differential-privacy budget spent per record per
	// share by the noise rules together (each noised field spends its
	// FieldRule.Epsilon, or an even split of what the explicit ones leave).
	// It must be > 0 when there is a noise rule. It covers the noised
	// values only; see docs/privacy-anon.md.
	Epsilon float64 `json:"epsilon,omitempty"`
}

// FieldRule is the rule for one field path.
type FieldRule struct {
	Kind Kind `json:"kind"`

	// Generalize takes exactly one of Bucket, Truncate, Prefix, Decimals.

	// Bucket is a bucket width W > 0 for numbers: v becomes floor(v/W)*W,
	// written as Format says.
	Bucket float64      `json:"bucket,omitempty"`
	Format BucketFormat `json:"format,omitempty"`
	// Truncate cuts a time (time.Time or an RFC 3339 string) to the unit.
	Truncate Unit `json:"truncate,omitempty"`
	// Prefix keeps the first Prefix characters (runes) of a string.
	Prefix int `json:"prefix,omitempty"`
	// Decimals rounds a number, or the "lat" and "lon" of a location map
	// (other keys of the map are dropped), to that many decimals (0..10).
	Decimals *int `json:"decimals,omitempty"`

	// Noise parameters.

	// Sensitivity is the largest change of the count that the event to be
	// hidden can cause (default 1).
	Sensitivity int64 `json:"sensitivity,omitempty"`
	// Epsilon is this field's share of Rules.Epsilon; 0 means an even
	// split of what the fields with an explicit share leave.
	Epsilon float64 `json:"epsilon,omitempty"`
}

// ParseRules decodes the JSON form of Rules strictly (unknown keys and
// trailing data are errors) and validates it.
func ParseRules(data []byte) (Rules, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Rules
	if err := dec.Decode(&r); err != nil {
		return Rules{}, fmt.Errorf("%w: %w", ErrBadRules, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Rules{}, fmt.Errorf("%w: trailing data after the rules object", ErrBadRules)
	}
	if err := r.Validate(); err != nil {
		return Rules{}, err
	}
	return r, nil
}

// Validate reports every problem of r, joined; each wraps ErrBadRules.
func (r Rules) Validate() error {
	_, err := compile(r)
	return err
}

// compiled is a validated Rules value, ready to apply.
type compiled struct {
	rules   Rules
	root    *node
	paths   []string   // sorted
	qis     [][]string // split quasi-identifier paths
	fieldEp map[string]float64
	epsilon float64 // spent per record per share (sum of fieldEp)
}

// node is one level of the rule tree: a leaf holds a rule, an inner node
// its children.
type node struct {
	rule     *FieldRule
	path     string
	children map[string]*node
}

func compile(r Rules) (*compiled, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrBadRules}, args...)...))
	}
	if r.Collection == "" {
		bad("collection is empty")
	}
	if err := checkLabel(r.Purpose); err != nil {
		bad("purpose %q: %s", r.Purpose, err)
	}
	if len(r.Fields) == 0 {
		bad("no fields: nothing would be shared")
	}
	if r.K < 0 {
		bad("k = %d is negative", r.K)
	}
	if len(r.QuasiIdentifiers) > 0 && r.K < 2 {
		bad("quasi_identifiers set but k = %d (must be >= 2)", r.K)
	}
	if math.IsNaN(r.Epsilon) || math.IsInf(r.Epsilon, 0) || r.Epsilon < 0 {
		bad("epsilon %v is not a finite number >= 0", r.Epsilon)
	}

	c := &compiled{rules: r, root: &node{children: map[string]*node{}}, fieldEp: map[string]float64{}}
	for p := range r.Fields {
		c.paths = append(c.paths, p)
	}
	sort.Strings(c.paths)

	var noiseFields, unset []string
	explicit := 0.0
	for _, p := range c.paths {
		fr := r.Fields[p]
		segs, err := splitPath(p)
		if err != nil {
			bad("field %q: %s", p, err)
			continue
		}
		for j := 1; j < len(segs); j++ {
			if pre := strings.Join(segs[:j], "."); hasField(r.Fields, pre) {
				bad("field %q is a prefix of field %q", pre, p)
			}
		}
		if p == RecordID && fr.Kind != Drop {
			bad("field %q: record ids never leave the device (only drop is allowed)", p)
		}
		if err := checkRule(fr); err != nil {
			bad("field %q: %s", p, err)
			continue
		}
		if fr.Kind == Noise {
			noiseFields = append(noiseFields, p)
			if fr.Epsilon == 0 {
				unset = append(unset, p)
			} else {
				explicit += fr.Epsilon
				c.fieldEp[p] = fr.Epsilon
			}
		}
		if fr.Kind == Drop {
			continue // nothing to walk to
		}
		n := c.root
		for _, s := range segs {
			if n.children == nil {
				break // under a leaf: reported as a prefix overlap
			}
			child := n.children[s]
			if child == nil {
				child = &node{children: map[string]*node{}}
				n.children[s] = child
			}
			n = child
		}
		rule := fr
		n.rule, n.path, n.children = &rule, p, nil
	}

	if len(noiseFields) > 0 {
		switch {
		case r.Epsilon <= 0:
			bad("noise rules need epsilon > 0")
		case explicit > r.Epsilon*(1+1e-12):
			bad("field epsilons sum to %v, more than epsilon %v", explicit, r.Epsilon)
		case len(unset) > 0:
			each := (r.Epsilon - explicit) / float64(len(unset))
			if each < MinFieldEpsilon {
				bad("epsilon left for %v is %v per field, below %v", unset, each, MinFieldEpsilon)
			}
			for _, p := range unset {
				c.fieldEp[p] = each
			}
		}
		for _, p := range noiseFields {
			c.epsilon += c.fieldEp[p]
		}
	}

	seen := map[string]bool{}
	for _, q := range r.QuasiIdentifiers {
		if seen[q] {
			bad("quasi-identifier %q listed twice", q)
			continue
		}
		seen[q] = true
		fr, ok := r.Fields[q]
		switch {
		case !ok:
			bad("quasi-identifier %q is not a field", q)
			continue
		case fr.Kind == Drop:
			bad("quasi-identifier %q is dropped", q)
			continue
		case fr.Kind == Noise:
			bad("quasi-identifier %q is noised (group on generalized values instead)", q)
			continue
		}
		segs, err := splitPath(q)
		if err != nil {
			continue // reported with the field
		}
		c.qis = append(c.qis, segs)
	}

	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func hasField(f map[string]FieldRule, p string) bool {
	_, ok := f[p]
	return ok
}

func checkRule(fr FieldRule) error {
	hasGen := fr.Bucket != 0 || fr.Format != "" || fr.Truncate != "" || fr.Prefix != 0 || fr.Decimals != nil
	hasNoise := fr.Sensitivity != 0 || fr.Epsilon != 0
	switch fr.Kind {
	case Drop, Keep, Pseudonymize:
		if hasGen || hasNoise {
			return fmt.Errorf("%s takes no parameters", fr.Kind)
		}
	case Generalize:
		if hasNoise {
			return errors.New("sensitivity and epsilon belong to noise rules")
		}
		methods := 0
		if fr.Bucket != 0 {
			methods++
			if math.IsNaN(fr.Bucket) || math.IsInf(fr.Bucket, 0) || fr.Bucket <= 0 {
				return fmt.Errorf("bucket %v is not a finite width > 0", fr.Bucket)
			}
			if fr.Format != "" && fr.Format != Floor && fr.Format != Range {
				return fmt.Errorf("format %q is not floor or range", fr.Format)
			}
		} else if fr.Format != "" {
			return errors.New("format goes with bucket")
		}
		if fr.Truncate != "" {
			methods++
			switch fr.Truncate {
			case Year, Month, Day, Hour:
			default:
				return fmt.Errorf("truncate %q is not hour, day, month or year", fr.Truncate)
			}
		}
		if fr.Prefix != 0 {
			methods++
			if fr.Prefix < 1 {
				return fmt.Errorf("prefix %d is not >= 1", fr.Prefix)
			}
		}
		if fr.Decimals != nil {
			methods++
			if *fr.Decimals < 0 || *fr.Decimals > MaxDecimals {
				return fmt.Errorf("decimals %d is not in 0..%d", *fr.Decimals, MaxDecimals)
			}
		}
		if methods != 1 {
			return errors.New("generalize takes exactly one of bucket, truncate, prefix, decimals")
		}
	case Noise:
		if hasGen {
			return errors.New("generalize parameters on a noise rule")
		}
		if fr.Sensitivity < 0 || fr.Sensitivity > MaxSensitivity {
			return fmt.Errorf("sensitivity %d is not in 1..%d", fr.Sensitivity, int64(MaxSensitivity))
		}
		if math.IsNaN(fr.Epsilon) || math.IsInf(fr.Epsilon, 0) || fr.Epsilon < 0 ||
			(fr.Epsilon != 0 && fr.Epsilon < MinFieldEpsilon) {
			return fmt.Errorf("epsilon %v is not 0 (even split) or a finite number >= %v", fr.Epsilon, MinFieldEpsilon)
		}
	case "":
		return errors.New("kind is missing")
	default:
		return fmt.Errorf("unknown kind %q", fr.Kind)
	}
	return nil
}

func splitPath(p string) ([]string, error) {
	if p == "" {
		return nil, errors.New("empty path")
	}
	segs := strings.Split(p, ".")
	if len(segs) > MaxPathDepth {
		return nil, fmt.Errorf("more than %d elements", MaxPathDepth)
	}
	for _, s := range segs {
		if s == "" {
			return nil, errors.New("empty path element")
		}
		if strings.HasPrefix(s, MetaPrefix) {
			return nil, fmt.Errorf("%q is ferry metadata and never leaves the device", s)
		}
	}
	return segs, nil
}

// checkLabel accepts 1..MaxLabel characters from [A-Za-z0-9._-]; "/" in
// particular is excluded, so "ferry-pseudonym/<purpose>/<epoch>" has one
// parse.
func checkLabel(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxLabel {
		return fmt.Errorf("longer than %d bytes", MaxLabel)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q outside [A-Za-z0-9._-]", c)
		}
	}
	return nil
}
