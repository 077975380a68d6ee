package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ferrysync/ferry/transport"
)

// State is where a peer's (or the replica's) sync stands.
type State int

const (
	// Offline: the peer cannot be reached (or was never synced); every
	// change is kept locally and sent when it can be.
	Offline State = iota
	// Syncing: a session is running.
	Syncing
	// Conflict: the last sync succeeded, and conflicts wait for the user.
	Conflict
	// UpToDate: the last sync succeeded and nothing waits for the user.
	UpToDate
	// Error: the last sync failed for a reason other than reachability; it
	// is retried with backoff.
	Error
	// Stale: sessions complete, but one side's store went back in time
	// (replaced, wiped or restored from an older copy) since the two last
	// agreed: either may lack records the other believes it holds. Warning
	// says which.
	Stale
)

var stateNames = [...]string{"offline", "syncing", "conflict", "up-to-date", "error", "stale"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalText writes the state's name (for JSON output).
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Status is the sync status of one peer, or (Peer empty) of the replica.
type Status struct {
	Peer          string    `json:"peer,omitempty"`
	State         State     `json:"state"`
	Attempt       int       `json:"attempt,omitempty"`    // failed attempts in a row
	LastError     string    `json:"last_error,omitempty"` // the last failure
	NextRetry     time.Time `json:"next_retry,omitzero"`  // when the loop tries again
	LastSync      time.Time `json:"last_sync,omitzero"`   // end of the last successful session
	OpenConflicts int       `json:"open_conflicts"`       // conflicts queued for the user
	Warning       string    `json:"warning,omitempty"`    // why the state is Stale (kept until the stores are healed)
	Progress      SyncStats `json:"progress"`             // the running (or last) session's counts
}

// statusBoard holds every peer's status. Its mutex guards only memory.
type statusBoard struct {
	now   func() time.Time
	mu    sync.Mutex
	peers map[string]*Status
}

func (b *statusBoard) get(peer string) *Status {
	s := b.peers[peer]
	if s == nil {
		s = &Status{Peer: peer, State: Offline}
		b.peers[peer] = s
	}
	return s
}

func (b *statusBoard) begin(peer string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(peer)
	s.State = Syncing
	s.Progress = SyncStats{Peer: peer}
}

func (b *statusBoard) progress(peer string, st SyncStats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(peer).Progress = st
}

// end moves a peer out of Syncing: to Conflict or UpToDate on success, to
// Offline when the peer could not be reached, to Error otherwise.
func (b *statusBoard) end(peer string, st SyncStats, err error, open int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(peer)
	s.Progress = st
	s.OpenConflicts = open
	switch {
	case err == nil:
		s.Attempt, s.LastError = 0, ""
		s.LastSync = b.now()
		s.State = UpToDate
		if open > 0 {
			s.State = Conflict
		}
		if s.Warning != "" {
			s.State = Stale
		}
	default:
		s.Attempt++
		s.LastError = err.Error()
		s.State = Error
		if unreachable(err) {
			s.State = Offline
		}
	}
}

// unreachable tells network failures (Offline) from other errors.
func unreachable(err error) bool {
	return errors.Is(err, ErrDisconnected) || errors.Is(err, transport.ErrRefused) || errors.Is(err, transport.ErrCut) ||
		errors.Is(err, transport.ErrClosed) || errors.Is(err, context.DeadlineExceeded) || isNetErr(err)
}

// warn marks peer Stale for the reason why; the mark stays (and is saved
// with the status) until the stores are healed.
func (b *statusBoard) warn(peer, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(peer).Warning = why
}

func (b *statusBoard) failedDial(peer string, err error, next time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(peer)
	s.Attempt++
	s.LastError = err.Error()
	s.State = Offline
	s.NextRetry = next
}

func (b *statusBoard) scheduled(peer string, next time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(peer).NextRetry = next
}

func (b *statusBoard) snapshot() []Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Status, 0, len(b.peers))
	for _, s := range b.peers {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

func (b *statusBoard) peer(peer string) Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return *b.get(peer)
}

// overall folds the peers' states into the replica's: Syncing if any
// session runs, else Error if any failed, else Conflict if conflicts wait,
// else Offline if a peer is unreachable or none was ever synced, else
// UpToDate.
func overall(peers []Status, open int) Status {
	out := Status{State: UpToDate, OpenConflicts: open}
	if len(peers) == 0 {
		out.State = Offline
	}
	rank := map[State]int{UpToDate: 0, Offline: 1, Conflict: 2, Stale: 3, Error: 4, Syncing: 5}
	for _, p := range peers {
		st := p.State
		if st == Conflict {
			st = UpToDate // conflicts are counted below, once
		}
		if rank[st] > rank[out.State] {
			out.State = st
			out.LastError = p.LastError
			out.Warning = p.Warning
		}
		if p.LastSync.After(out.LastSync) {
			out.LastSync = p.LastSync
		}
	}
	if out.State == UpToDate && open > 0 {
		out.State = Conflict
	}
	return out
}

// Status returns the replica's overall status and each peer's.
func (r *Replica) Status(ctx context.Context) (Status, []Status) {
	peers := r.status.snapshot()
	open := r.openConflicts(ctx)
	for i := range peers {
		peers[i].OpenConflicts = open
		if peers[i].State == UpToDate && open > 0 {
			peers[i].State = Conflict
		}
	}
	return overall(peers, open), peers
}

func (r *Replica) openConflicts(ctx context.Context) int {
	list, err := r.queue.List(ctx)
	if err != nil {
		return 0
	}
	return len(list)
}

const nsStatus = "status"

// saveStatus persists a peer's status so it survives restarts (a best
// effort: a failure to save it loses no data).
func (r *Replica) saveStatus(ctx context.Context, peer string) {
	s := r.status.peer(peer)
	s.Progress = SyncStats{Peer: s.Progress.Peer, RecordsSent: s.Progress.RecordsSent, RecordsReceived: s.Progress.RecordsReceived,
		BytesSent: s.Progress.BytesSent, BytesReceived: s.Progress.BytesReceived, Conflicts: s.Progress.Conflicts,
		InvalidNames: s.Progress.InvalidNames}
	if s.State == Syncing {
		return
	}
	b, err := json.Marshal(s)
	if err == nil {
		_ = r.store.Slots(nsStatus).Put(ctx, peer, b)
	}
}

// loadStatus restores the peers' last known status at open.
func (r *Replica) loadStatus(ctx context.Context) error {
	return r.store.Slots(nsStatus).Range(ctx, func(peer string, b []byte) error {
		var s Status
		if json.Unmarshal(b, &s) != nil {
			return nil // an unreadable status is forgotten, not fatal
		}
		r.status.mu.Lock()
		r.status.peers[peer] = &s
		r.status.mu.Unlock()
		return nil
	})
}

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("%w: unknown state %q", ErrInvalid, b)
}

func (r *Replica) publishStatus(peer string) {
	s := r.status.peer(peer)
	r.events.publish(Event{Kind: EventStatus, Peer: peer, Status: &s})
}
