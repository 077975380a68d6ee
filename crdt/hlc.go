package crdt

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Timestamp is a hybrid-logical-clock reading: milliseconds of physical time
// plus a logical counter that orders events within the same millisecond (or
// while the physical clock lags behind a remote one).
type Timestamp struct {
	_          struct{} `cbor:",toarray"`
	WallMillis int64
	Logical    uint32
}

// Compare returns -1, 0 or +1 as t is before, equal to or after u.
func (t Timestamp) Compare(u Timestamp) int {
	switch {
	case t.WallMillis < u.WallMillis:
		return -1
	case t.WallMillis > u.WallMillis:
		return 1
	case t.Logical < u.Logical:
		return -1
	case t.Logical > u.Logical:
		return 1
	}
	return 0
}

// IsZero reports whether t is the zero timestamp.
func (t Timestamp) IsZero() bool { return t.WallMillis == 0 && t.Logical == 0 }

// String renders t as "<wall millis>.<logical>", e.g. "1700000000123.4".
func (t Timestamp) String() string {
	return strconv.FormatInt(t.WallMillis, 10) + "." + strconv.FormatUint(uint64(t.Logical), 10)
}

// Time returns the physical part of t.
func (t Timestamp) Time() time.Time { return time.UnixMilli(t.WallMillis).UTC() }

// ParseTimestamp parses the String form.
func ParseTimestamp(s string) (Timestamp, error) {
	w, l, ok := strings.Cut(s, ".")
	if !ok {
		return Timestamp{}, fmt.Errorf("crdt: bad timestamp %q", s)
	}
	wall, err := strconv.ParseInt(w, 10, 64)
	if err != nil {
		return Timestamp{}, fmt.Errorf("crdt: bad timestamp %q: %w", s, err)
	}
	logical, err := strconv.ParseUint(l, 10, 32)
	if err != nil {
		return Timestamp{}, fmt.Errorf("crdt: bad timestamp %q: %w", s, err)
	}
	return Timestamp{WallMillis: wall, Logical: uint32(logical)}, nil
}

// timestampSize is the length of the binary encoding.
const timestampSize = 12

// MarshalBinary encodes t in 12 bytes: big-endian wall millis then logical,
// so byte order equals timestamp order for non-negative wall times.
func (t Timestamp) MarshalBinary() ([]byte, error) {
	b := make([]byte, timestampSize)
	binary.BigEndian.PutUint64(b, uint64(t.WallMillis))
	binary.BigEndian.PutUint32(b[8:], t.Logical)
	return b, nil
}

// UnmarshalBinary decodes the MarshalBinary form.
func (t *Timestamp) UnmarshalBinary(b []byte) error {
	if len(b) != timestampSize {
		return fmt.Errorf("crdt: timestamp: want %d bytes, got %d", timestampSize, len(b))
	}
	t.WallMillis = int64(binary.BigEndian.Uint64(b))
	t.Logical = binary.BigEndian.Uint32(b[8:])
	return nil
}

// DefaultMaxDrift is how far ahead of local physical time a remote timestamp
// may be before Observe refuses it. One hour tolerates unsynchronised phone
// and laptop clocks (typically seconds to minutes off) while stopping a device
// whose clock is set days or a time zone ahead from dragging every other
// replica's clock forward and winning every timestamp conflict until then.
const DefaultMaxDrift = time.Hour

// Clock is a hybrid logical clock. Now never goes backwards, even when the
// physical time source does. It is safe for concurrent use.
type Clock struct {
	now      func() time.Time
	maxDrift time.Duration

	mu   sync.Mutex
	last Timestamp
}

// NewClock returns a clock reading physical time from now (time.Now when nil)
// and refusing remote timestamps more than maxDrift ahead (DefaultMaxDrift
// when maxDrift <= 0).
func NewClock(now func() time.Time, maxDrift time.Duration) *Clock {
	if now == nil {
		now = time.Now
	}
	if maxDrift <= 0 {
		maxDrift = DefaultMaxDrift
	}
	return &Clock{now: now, maxDrift: maxDrift}
}

// MaxDrift reports the configured drift bound.
func (c *Clock) MaxDrift() time.Duration { return c.maxDrift }

// PhysicalNow reads the clock's physical time source.
func (c *Clock) PhysicalNow() time.Time { return c.now() }

// Now returns a timestamp strictly greater than every timestamp this clock
// has returned or observed.
func (c *Clock) Now() Timestamp {
	pt := c.now().UnixMilli()
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt > c.last.WallMillis {
		c.last = Timestamp{WallMillis: pt}
	} else {
		c.last.Logical++
	}
	return c.last
}

// Last returns the latest timestamp issued or observed.
func (c *Clock) Last() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Observe merges a remote timestamp so that later Now readings are greater
// than it. A remote more than MaxDrift ahead of local physical time is
// refused with ErrClockSkew and leaves the clock unchanged.
func (c *Clock) Observe(remote Timestamp) error {
	pt := c.now().UnixMilli()
	if remote.WallMillis > pt+c.maxDrift.Milliseconds() {
		return fmt.Errorf("%w: remote %s is %s ahead (max %s)", ErrClockSkew, remote,
			time.Duration(remote.WallMillis-pt)*time.Millisecond, c.maxDrift)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if remote.Compare(c.last) > 0 {
		c.last = remote
	}
	return nil
}
