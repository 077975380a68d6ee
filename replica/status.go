package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ferrysync/ferry/crdt"
	"github.com/ferrysync/ferry/storage"
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
	// ClockSkew, for a peer: its own writes arrived stamped ahead of this
	// replica's clock by more than Options.MaxClockDrift (nil when never).
	ClockSkew *ClockSkew `json:"clock_skew,omitempty"`
	// ClockSkews, for the replica: every writer whose latest write was
	// seen stamped ahead beyond the bound, peers or not (writes relayed by
	// a peer count for their writer).
	ClockSkews []ClockSkew `json:"clock_skews,omitempty"`
	// ClockBehind, for the replica: more of the writers it hears from are
	// ahead of its clock than agree with it, so its own clock is probably
	// behind; it clamps no one's writes until that changes.
	ClockBehind bool `json:"clock_behind,omitempty"`
}

// ClockSkew reports a writer whose writes arrived stamped ahead of this
// replica's clock by more than the bound (Options.MaxClockDrift). Their
// times were clamped for deciding conflicts (docs/policy.md), so the
// writer does not win every conflict; its clock needs fixing.
type ClockSkew struct {
	// Replica is the writer: an identity fingerprint, or "automerge:" and
	// the actor id for a plain Automerge client.
	Replica string `json:"replica"`
	// Ahead is how far ahead of this replica's clock the writer's latest
	// write was when it arrived: a lower bound of the writer's clock
	// error, since a write arrives after it is made. JSON: nanoseconds.
	Ahead time.Duration `json:"ahead_ns"`
	// Writes counts the writes that arrived ahead beyond the bound (in
	// the session, in SyncStats; since the store was created, in Status).
	Writes int `json:"writes"`
	// Seen is when the latest write arrived, by this replica's clock.
	Seen time.Time `json:"seen"`
	// Latest is the time stamped on the writer's latest write seen.
	Latest time.Time `json:"latest"`
}

// statusBoard holds every peer's status. Its mutex guards only memory.
type statusBoard struct {
	now   func() time.Time
	bound time.Duration // Options.MaxClockDrift
	mu    sync.Mutex
	peers map[string]*Status
	// clocks: every other writer's latest observed clock (Ahead may be
	// within the bound, or negative); session: per peer, the writers seen
	// ahead in its running (or last) session.
	clocks  map[string]*ClockSkew
	session map[string]map[string]*ClockSkew
}

// observeClocks records how far ahead of now the latest writes of each
// writer in times are, and reports whether this replica's own clock is
// trustworthy: it is, unless more of the writers it has heard from are
// ahead of it beyond the bound than agree with it (itself included). A
// replica whose clock is behind sees every other writer ahead; it must
// not clamp their writes, or it would reorder the writes of replicas
// whose clocks are right (docs/policy.md, "Clocks").
func (b *statusBoard) observeClocks(times map[string]crdt.Timestamp, now time.Time) (trust bool, changed []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.clocks == nil {
		b.clocks = map[string]*ClockSkew{}
	}
	for w, ts := range times {
		c := b.clocks[w]
		if c == nil {
			c = &ClockSkew{Replica: w}
			b.clocks[w] = c
		}
		if !c.Latest.IsZero() && !ts.Time().After(c.Latest) {
			continue // an older write of the writer, relayed late: says nothing of its clock now
		}
		c.Latest = ts.Time()
		c.Ahead = time.Duration(ts.WallMillis-now.UnixMilli()) * time.Millisecond
		c.Seen = now
		changed = append(changed, w)
	}
	sort.Strings(changed)
	return b.trustLocked(), changed
}

func (b *statusBoard) trustLocked() bool {
	agree, ahead := 1, 0
	for _, c := range b.clocks {
		if c.Ahead > b.bound {
			ahead++
		} else {
			agree++
		}
	}
	return agree >= ahead
}

// noteSkew counts writes that arrived ahead (delivered by peer, "" for
// an import) into the writers' totals and the peer's session.
func (b *statusBoard) noteSkew(peer string, fws []crdt.FutureWrite, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.clocks == nil {
		b.clocks = map[string]*ClockSkew{}
	}
	if b.session == nil {
		b.session = map[string]map[string]*ClockSkew{}
	}
	if peer != "" && b.session[peer] == nil {
		b.session[peer] = map[string]*ClockSkew{}
	}
	for _, fw := range fws {
		w := fw.Write.ReplicaID
		for _, m := range []map[string]*ClockSkew{b.clocks, b.session[peer]} {
			if m == nil {
				continue
			}
			s := m[w]
			if s == nil {
				s = &ClockSkew{Replica: w, Ahead: fw.Ahead, Seen: at}
				m[w] = s
			}
			s.Writes++
		}
	}
}

// sessionSkews returns the writers seen ahead in peer's session.
func (b *statusBoard) sessionSkews(peer string) []ClockSkew {
	b.mu.Lock()
	defer b.mu.Unlock()
	return sortedSkews(b.session[peer], 0)
}

// skewsLocked returns the writers whose latest write was ahead beyond
// the bound.
func (b *statusBoard) skewsLocked() []ClockSkew { return sortedSkews(b.clocks, b.bound) }

func sortedSkews(m map[string]*ClockSkew, bound time.Duration) []ClockSkew {
	var out []ClockSkew
	for _, s := range m {
		if s.Ahead > bound {
			out = append(out, *s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Replica < out[j].Replica })
	return out
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
	delete(b.session, peer)
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

// unwarn clears peer's Stale mark: a relay space's notices (a member
// dropped, a heal under way) are set again by each sync they still hold.
func (b *statusBoard) unwarn(peer string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(peer).Warning = ""
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
		st := *s
		if sk := b.clocks[st.Peer]; sk != nil && sk.Ahead > b.bound {
			c := *sk
			st.ClockSkew = &c
		}
		out = append(out, st)
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
	all := overall(peers, open)
	r.status.mu.Lock()
	all.ClockSkews = r.status.skewsLocked()
	all.ClockBehind = !r.status.trustLocked()
	r.status.mu.Unlock()
	return all, peers
}

func (r *Replica) openConflicts(ctx context.Context) int {
	list, err := r.queue.List(ctx)
	if err != nil {
		return 0
	}
	return len(list)
}

const nsSkew = "clock-skew"

// observeClocks records the clocks of the writers whose writes a merge
// added (delivered by peer; "" for an import; before and after are the
// document's heads around the merge), notes in the document the writes
// stamped beyond the bound (unless this replica's own clock looks
// behind), and returns those writes and the writers whose observation
// changed. The caller holds the record's lock and persists the changed
// observations with its batch (clockWrites): one write per batch, not one
// per record.
func (r *Replica) observeClocks(d *crdt.Doc, before, after crdt.Heads) ([]crdt.FutureWrite, []string, error) {
	if before.Equal(after) {
		return nil, nil, nil // the merge added nothing
	}
	writes, err := d.AddedWrites(before)
	times := crdt.LatestTimes(writes)
	if err != nil || len(times) == 0 {
		return nil, nil, err
	}
	now := r.opts.Now()
	trust, changed := r.status.observeClocks(times, now)
	fws, err := d.NoteFutureWritesOf(writes, now, r.clock.MaxDrift(), trust)
	if err != nil {
		return nil, nil, err
	}
	r.status.noteSkew("", fws, now)
	return fws, changed, nil
}

// reportSkew adds writes that arrived ahead to peer's session and tells
// watchers (an EventClockSkew per writer).
func (r *Replica) reportSkew(peer string, fws []crdt.FutureWrite) {
	if len(fws) == 0 {
		return
	}
	if peer != "" {
		r.status.mu.Lock()
		if r.status.session == nil {
			r.status.session = map[string]map[string]*ClockSkew{}
		}
		if r.status.session[peer] == nil {
			r.status.session[peer] = map[string]*ClockSkew{}
		}
		for _, fw := range fws {
			w := fw.Write.ReplicaID
			s := r.status.session[peer][w]
			if s == nil {
				s = &ClockSkew{Replica: w, Ahead: fw.Ahead, Seen: r.opts.Now()}
				r.status.session[peer][w] = s
			}
			s.Writes++
			if fw.Ahead > s.Ahead {
				s.Ahead = fw.Ahead
			}
		}
		r.status.mu.Unlock()
	}
	seen := map[string]bool{}
	for _, fw := range fws {
		w := fw.Write.ReplicaID
		if seen[w] {
			continue
		}
		seen[w] = true
		r.status.mu.Lock()
		var sk ClockSkew
		if c := r.status.clocks[w]; c != nil {
			sk = *c
		}
		r.status.mu.Unlock()
		sk.Replica = w
		r.events.publish(Event{Kind: EventClockSkew, Peer: peer, Skew: &sk})
	}
}

// clockWrites returns the slot writes that persist the writers' clock
// observations, in writer order. They ride in the batch of the records
// that taught them; losing them (a failed batch) loses no data.
func (r *Replica) clockWrites(writers map[string]bool) []storage.SlotWrite {
	ws := make([]string, 0, len(writers))
	for w := range writers {
		ws = append(ws, w)
	}
	sort.Strings(ws)
	var out []storage.SlotWrite
	r.status.mu.Lock()
	defer r.status.mu.Unlock()
	for _, w := range ws {
		c := r.status.clocks[w]
		if c == nil {
			continue
		}
		if b, err := json.Marshal(c); err == nil {
			out = append(out, storage.SlotWrite{Namespace: nsSkew, Key: w, Value: b})
		}
	}
	return out
}

// loadSkews restores the writers' clock observations at open.
func (r *Replica) loadSkews(ctx context.Context) error {
	return r.store.Slots(nsSkew).Range(ctx, func(w string, b []byte) error {
		var s ClockSkew
		if json.Unmarshal(b, &s) != nil || s.Replica != w {
			return nil // unreadable: forgotten, not fatal
		}
		r.status.mu.Lock()
		if r.status.clocks == nil {
			r.status.clocks = map[string]*ClockSkew{}
		}
		r.status.clocks[w] = &s
		r.status.mu.Unlock()
		return nil
	})
}

const nsStatus = "status"

// saveStatus persists a peer's status so it survives restarts (a best
// effort: a failure to save it loses no data).
func (r *Replica) saveStatus(ctx context.Context, peer string) {
	s := r.status.peer(peer)
	s.Progress = SyncStats{Peer: s.Progress.Peer, RecordsSent: s.Progress.RecordsSent, RecordsReceived: s.Progress.RecordsReceived,
		BytesSent: s.Progress.BytesSent, BytesReceived: s.Progress.BytesReceived, Conflicts: s.Progress.Conflicts,
		InvalidNames: s.Progress.InvalidNames, ClockSkew: s.Progress.ClockSkew}
	s.ClockSkew = nil // kept in its own namespace
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
