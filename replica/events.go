package replica

import "sync"

// EventKind tells what an Event reports.
type EventKind int

const (
	// EventRecord: a record changed, by a local write or a merge.
	EventRecord EventKind = iota + 1
	// EventStatus: the sync status of a peer or of the replica changed.
	EventStatus
	// EventConflict: a conflict was queued for the user, or closed
	// (Reason says which, and why).
	EventConflict
	// EventClockSkew: writes arrived stamped further ahead of this
	// replica's clock than Options.MaxClockDrift allows; Skew says whose
	// and by how much. Their times were clamped (see docs/policy.md).
	EventClockSkew
)

// Event is one change a watcher is told of.
type Event struct {
	Kind       EventKind
	Collection string // EventRecord, EventConflict
	ID         string // record id (EventRecord), conflict id (EventConflict)
	Seq        uint64 // feed position (EventRecord)
	Deleted    bool   // the record is deleted (EventRecord)
	Local      bool   // written by this replica (EventRecord)
	Peer       string // the peer whose sync delivered it, or whose status changed
	Status     *Status
	// Reason, for EventConflict: "queued", or who closed it: "user",
	// "fallback", "remote" (another replica's decision arrived),
	// "superseded" (a newer conflict on the field replaced it) or
	// "newer-write" (a write made after it changed the field).
	Reason string
	// Skew, for EventClockSkew: the writer whose clock runs ahead.
	Skew *ClockSkew
}

// hub fans events out to watchers. A watcher that falls behind loses
// events rather than blocking writers; it is told by a gap in Seq and can
// rescan.
type hub struct {
	mu     sync.Mutex
	subs   map[chan Event]struct{}
	closed bool
}

func newHub() *hub { return &hub{subs: map[chan Event]struct{}{}} }

func (h *hub) subscribe(buf int) chan Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan Event, buf)
	if h.closed {
		close(ch)
		return ch
	}
	h.subs[ch] = struct{}{}
	return ch
}

func (h *hub) unsubscribe(ch chan Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

func (h *hub) publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		close(ch)
		delete(h.subs, ch)
	}
}
