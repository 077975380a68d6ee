package crdt

import (
	"time"

	"github.com/automerge/automerge-go"
)

// SecondsThreshold separates the two units Automerge implementations write
// change times in. The change format has no unit field: automerge-go (and
// so ferry) writes milliseconds since the Unix epoch, while
// @automerge/automerge (JS) and the Rust library write seconds. A raw time
// below 1e11 is 1973-03-03 when read as milliseconds but the year 5138 when
// read as seconds, so any raw value in (0, SecondsThreshold) is taken as
// seconds, and any larger one as milliseconds.
//
// Limits: a millisecond clock set before March 1973 would be read as
// seconds (then in the far past or, multiplied, the years 1970-5138), and
// a second clock past the year 5138 as milliseconds; neither occurs with a
// working clock. Times <= 0 mean "not set".
const SecondsThreshold = 100_000_000_000

// ChangeTime returns the time a change was committed, in UTC with
// millisecond precision, reading the raw time in the unit its writer used
// (see SecondsThreshold). Changes written by ferry carry their exact time in
// their write-set and are read as such. The zero time.Time means the writer
// set no time (raw value 0) or a negative one.
func ChangeTime(c *automerge.Change) time.Time {
	if c == nil {
		return time.Time{}
	}
	if ws, ok, err := decodeWriteSet(c.Message()); ok && err == nil {
		return time.UnixMilli(ws.M.HLC.WallMillis).UTC()
	}
	return rawChangeTime(c.Timestamp().UnixMilli())
}

// rawChangeTime interprets a change's raw time field (automerge-go reports
// it as milliseconds whatever the writer meant).
func rawChangeTime(raw int64) time.Time {
	ms, ok := rawChangeMillis(raw)
	if !ok {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// rawChangeMillis converts a raw change time to milliseconds since the
// epoch; ok is false when no time was set.
func rawChangeMillis(raw int64) (ms int64, ok bool) {
	switch {
	case raw <= 0:
		return 0, false
	case raw < SecondsThreshold:
		return raw * 1000, true
	}
	return raw, true
}
