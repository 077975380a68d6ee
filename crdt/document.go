package crdt

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/automerge/automerge-go"
)

// Actor binds a Doc to the replica that writes it.
type Actor struct {
	// ReplicaID names the writing replica; it must be non-empty. The
	// Automerge actor id is derived from it (ActorIDFor), with Session
	// when that is set.
	ReplicaID string
	// Priority is recorded with every write for the priority policy.
	Priority int
	// Clock stamps writes; nil means a private clock over time.Now.
	Clock *Clock
	// Session, when not empty, names one opening of the replica's store
	// (replica.Open sets a random one), and the Automerge actor id is
	// derived from ReplicaID and Session (SessionActorID). A store restored
	// from an older copy then never writes a change under an (actor,
	// sequence number) pair its peers already hold from the lost history,
	// which they would refuse for ever ("duplicate seq"). Automerge's own
	// advice: one actor per process, never reused (automerge.org, "Actor
	// IDs"). Write metadata names the replica by ReplicaID either way.
	Session string
}

func (a Actor) validate() error {
	if a.ReplicaID == "" {
		return fmt.Errorf("%w: empty replica id", ErrBadActor)
	}
	return nil
}

// ActorIDFor returns the Automerge actor id (hex) ferry uses for a replica:
// the first 16 bytes of SHA-256("ferry-actor/1\x00" + replicaID).
func ActorIDFor(replicaID string) string {
	h := sha256.Sum256([]byte("ferry-actor/1\x00" + replicaID))
	return hex.EncodeToString(h[:16])
}

// SessionActorID returns the Automerge actor id (hex) of one session of a
// replica: the first 16 bytes of SHA-256("ferry-actor/2\x00" + replicaID +
// "\x00" + session).
func SessionActorID(replicaID, session string) string {
	h := sha256.Sum256([]byte("ferry-actor/2\x00" + replicaID + "\x00" + session))
	return hex.EncodeToString(h[:16])
}

func (a Actor) automergeID() string {
	if a.Session == "" {
		return ActorIDFor(a.ReplicaID)
	}
	return SessionActorID(a.ReplicaID, a.Session)
}

// Doc is one record: a JSON-like document over an Automerge document, with
// hidden per-field write metadata. Every mutating method commits exactly one
// Automerge change (or none when it changes nothing) whose message carries
// the write-set. A Doc is safe for concurrent use.
type Doc struct {
	mu    sync.Mutex
	am    *automerge.Doc
	actor Actor
	clock *Clock
	cache *changeCache
	// saved are the heads at the last Load, Save or SaveIncremental:
	// SaveIncremental returns the changes since them. automerge-go's own
	// SaveIncremental cannot serve: right after Load it returns the whole
	// history, so a write after a load would look like the whole record.
	saved []automerge.ChangeHash
	// wasSaved: loaded, or saved at least once (Saved).
	wasSaved bool
	// size is the estimated C memory the document holds (Footprint);
	// released is set by Release.
	size     atomic.Int64
	released atomic.Bool
}

// New returns an empty document written by actor.
func New(actor Actor) (*Doc, error) {
	return wrap(automerge.New(), actor)
}

// Load opens a saved document (Save output, optionally followed by
// SaveIncremental chunks) for writing by actor. Bytes that do not load give
// ErrBadDocument.
func Load(b []byte, actor Actor) (*Doc, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	var am *automerge.Doc
	err := guard(func() error {
		var err error
		am, err = automerge.Load(b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: load: %w", ErrBadDocument, err)
	}
	d, err := wrap(am, actor)
	if err != nil {
		return nil, err
	}
	d.saved = am.Heads() // everything loaded is saved already
	d.wasSaved = true
	d.size.Add(docPerByte * int64(len(b)))
	noteGarbage(resultGarbage + int64(len(b))) // Load's and Heads' results
	return d, nil
}

// FromAutomerge wraps an existing Automerge document (for example one made
// by a plain Automerge client). The Doc takes ownership of am. Nothing of
// am counts as saved: the first SaveIncremental returns all its changes.
func FromAutomerge(am *automerge.Doc, actor Actor) (*Doc, error) { return wrap(am, actor) }

func wrap(am *automerge.Doc, actor Actor) (*Doc, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	if err := am.SetActorID(actor.automergeID()); err != nil {
		return nil, fmt.Errorf("crdt: set actor: %w", err)
	}
	d := shell(actor)
	d.am = am
	return d, nil
}

// shell returns a Doc of a validated actor without its Automerge document
// (the caller sets am).
func shell(actor Actor) *Doc {
	clock := actor.Clock
	if clock == nil {
		clock = NewClock(nil, 0)
	}
	d := &Doc{actor: actor, clock: clock, cache: newChangeCache()}
	d.size.Store(docBase)
	return d
}

// guard runs fn, turning a panic inside automerge-go (its internal `must`
// paths) into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("automerge panic: %v", r)
		}
	}()
	return fn()
}

// Actor returns the actor the document is bound to.
func (d *Doc) Actor() Actor { return d.actor }

// Clock returns the clock that stamps this document's writes.
func (d *Doc) Clock() *Clock { return d.clock }

// Automerge returns the underlying Automerge document, for callers that
// need raw access (sync protocol, benchmarks). Writes made through it carry
// no ferry metadata and are treated like a plain Automerge client's.
func (d *Doc) Automerge() *automerge.Doc { return d.am }

// Save returns the whole document in Automerge's compressed format. It
// moves SaveIncremental's starting point to the current heads.
func (d *Doc) Save() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.am.Save()
	d.saved = d.am.Heads()
	d.wasSaved = true
	noteGarbage(2*resultGarbage + perSavedByte*int64(len(b)))
	return b
}

// SaveIncremental returns the changes made or merged since the last Load,
// Save or SaveIncremental (concatenated change chunks, empty when there
// are none), appendable to the saved bytes: Load accepts the
// concatenation. Right after Load it returns nothing, whatever the
// document's history (unlike automerge-go's SaveIncremental, which then
// returns every change). It costs O(changes returned), not O(history).
func (d *Doc) SaveIncremental() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	chs, err := d.changesSince(d.saved)
	if err != nil {
		// The saved heads are always this document's own: only a failure
		// inside automerge-go gets here. automerge-go's own incremental
		// save returns a superset (duplicates are harmless to Load).
		var b []byte
		if gerr := guard(func() error { b = d.am.SaveIncremental(); return nil }); gerr != nil {
			b = d.am.Save()
		}
		d.saved = d.am.Heads()
		d.wasSaved = true
		return b
	}
	d.saved = d.am.Heads()
	d.wasSaved = true
	b := automerge.SaveChanges(chs)
	noteGarbage(2*resultGarbage + perSavedByte*int64(len(b)))
	return b
}

// Saved reports whether the document was loaded or saved (Save or
// SaveIncremental) at least once: a new document that was not gives its
// whole history from SaveIncremental.
func (d *Doc) Saved() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.wasSaved
}

// Heads returns the current heads.
func (d *Doc) Heads() Heads {
	d.mu.Lock()
	defer d.mu.Unlock()
	noteGarbage(resultGarbage)
	return d.am.Heads()
}

// Changes returns the changes not reachable from since (all changes when
// since is empty), dependencies first. Hashes in since that the document
// lacks are an error. The changes borrow from this document (an
// automerge-go property): keep d alive until they are applied elsewhere.
func (d *Doc) Changes(since ...automerge.ChangeHash) ([]*automerge.Change, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range since {
		if !d.hasChange(h) {
			return nil, fmt.Errorf("%w: unknown head %s", ErrNotFound, h)
		}
	}
	return d.changesSince(since)
}

// ChangesSince returns Changes(since...) encoded as concatenated change
// bytes, the form MergeChanges accepts.
func (d *Doc) ChangesSince(since ...automerge.ChangeHash) ([]byte, error) {
	chs, err := d.Changes(since...)
	if err != nil {
		return nil, err
	}
	return automerge.SaveChanges(chs), nil
}

// HasChange reports whether the document contains the change.
func (d *Doc) HasChange(h automerge.ChangeHash) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hasChange(h)
}

func (d *Doc) hasChange(h automerge.ChangeHash) bool {
	var ok bool
	_ = guard(func() error {
		c, err := d.am.Change(h)
		ok = err == nil && c != nil
		return nil
	})
	return ok
}

// ---- reading --------------------------------------------------------------

// Get returns the application value at path (see ParsePath): maps as
// map[string]any, lists as []any, text as string, counters as int64, times
// in UTC. A missing path gives ErrNotFound; the empty path gives ToMap().
func (d *Doc) Get(path any) (any, error) {
	p, err := ParsePath(path)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return d.ToMap()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.lookup(p)
	if err != nil {
		return nil, err
	}
	n, err := fromAM(v)
	if err != nil {
		return nil, err
	}
	return n.toGo(), nil
}

// Kind returns the kind of the value at path.
func (d *Doc) Kind(path any) (ValueKind, error) {
	p, err := ParsePath(path)
	if err != nil {
		return KindNone, err
	}
	if len(p) == 0 {
		return KindMap, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.lookup(p)
	if err != nil {
		return KindNone, err
	}
	return amKind(v), nil
}

// ToMap returns the application-visible document: every field except
// ferry's hidden metadata.
func (d *Doc) ToMap() (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.rootNode(d.am)
	if err != nil {
		return nil, err
	}
	noteGarbage(valueGarbage * n.count())
	return n.toGo().(map[string]any), nil
}

// rootNode reads the application part of doc as a node.
func (d *Doc) rootNode(doc *automerge.Doc) (*node, error) {
	vals, err := doc.RootMap().Values()
	if err != nil {
		return nil, err
	}
	n := &node{k: KindMap, m: make(map[string]*node, len(vals))}
	for k, v := range vals {
		if isReserved(k) {
			continue
		}
		c, err := fromAM(v)
		if err != nil {
			return nil, err
		}
		n.m[k] = c
	}
	return n, nil
}

// Deleted reports whether the record is deleted (DeleteRecord and not
// written since).
func (d *Doc) Deleted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	noteGarbage(4 * resultGarbage)
	m, ok := d.fieldMeta(d.am, "")
	return ok && m.Deleted
}

// FieldMeta returns the hidden metadata of the last write to a field (a
// key-only path), and whether there is any.
func (d *Doc) FieldMeta(path any) (WriteMeta, bool, error) {
	p, err := ParsePath(path)
	if err != nil {
		return WriteMeta{}, false, err
	}
	keys := make([]string, len(p))
	for i, e := range p {
		switch x := e.(type) {
		case string:
			keys[i] = x
		case dotted:
			keys[i] = string(x)
		default:
			return WriteMeta{}, false, fmt.Errorf("%w: field paths have no list indexes", ErrBadPath)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.fieldMeta(d.am, pointer(keys))
	return m.Meta, ok, nil
}

func (d *Doc) fieldMeta(doc *automerge.Doc, ptr string) (fieldMeta, bool) {
	v, err := doc.RootMap().Get(metaKey(ptr))
	if err != nil || v.Kind() != automerge.KindBytes {
		return fieldMeta{}, false
	}
	m, err := decodeFieldMeta(v.Bytes())
	if err != nil {
		return fieldMeta{}, false
	}
	return m, true
}

func isReserved(rootKey string) bool { return strings.HasPrefix(rootKey, MetaPrefix) }

// lookup walks p from the root.
func (d *Doc) lookup(p Path) (*automerge.Value, error) {
	if k, ok := rootKey(p); ok && isReserved(k) {
		return nil, fmt.Errorf("%w: %q is reserved", ErrBadPath, k)
	}
	cur := d.am.Root()
	for i, e := range p {
		next, err := child(cur, e)
		if err != nil {
			return nil, fmt.Errorf("%w (at %s)", err, p[:i+1])
		}
		cur = next
	}
	return cur, nil
}

func rootKey(p Path) (string, bool) {
	if len(p) == 0 {
		return "", false
	}
	switch x := p[0].(type) {
	case string:
		return x, true
	case dotted:
		return string(x), true
	}
	return "", false
}

// child steps one element into v.
func child(v *automerge.Value, e any) (*automerge.Value, error) {
	switch v.Kind() {
	case automerge.KindMap:
		var key string
		switch x := e.(type) {
		case string:
			key = x
		case dotted:
			key = string(x)
		default:
			return nil, fmt.Errorf("%w: index %v into a map", ErrBadPath, e)
		}
		c, err := v.Map().Get(key)
		if err != nil {
			return nil, err
		}
		if c.IsVoid() {
			return nil, ErrNotFound
		}
		return c, nil
	case automerge.KindList:
		idx, ok := listIndex(e)
		if !ok {
			return nil, fmt.Errorf("%w: key %v into a list", ErrBadPath, e)
		}
		l := v.List()
		if idx >= l.Len() {
			return nil, ErrNotFound
		}
		return l.Get(idx)
	case automerge.KindVoid:
		return nil, ErrNotFound
	}
	return nil, fmt.Errorf("%w: %v into a %s", ErrBadPath, e, amKind(v))
}

func listIndex(e any) (int, bool) {
	switch x := e.(type) {
	case int:
		return x, true
	case dotted:
		return atoiElem(string(x))
	}
	return 0, false
}

// ---- writing ----------------------------------------------------------------

// tx collects one change: Automerge operations plus write-set entries.
type tx struct {
	d       *Doc
	meta    WriteMeta // the change's meta
	ws      writeSet
	metas   map[string]fieldMeta // field pointer -> metadata to store
	order   []string
	touched bool                   // an Automerge operation was made
	heads   []automerge.ChangeHash // heads when the change began: its deps
}

// write runs fn inside one change and commits it. fn must validate its
// input before its first Automerge operation: automerge-go cannot roll back.
func (d *Doc) write(fn func(t *tx) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.newTx(WriteMeta{HLC: d.clock.Now(), ReplicaID: d.actor.ReplicaID, Priority: d.actor.Priority})
	ferr := guard(func() error { return fn(t) })
	ops := int64(1 + len(t.ws.E) + len(t.order))
	d.size.Add(opLive * ops)
	noteGarbage(opGarbage * ops)
	if err := t.commit(); err != nil {
		return errors.Join(ferr, err)
	}
	return ferr
}

func (d *Doc) newTx(m WriteMeta) *tx {
	// The generation is computed before any operation: reading the heads
	// with operations pending would make automerge-go commit them.
	heads := d.am.Heads()
	return &tx{d: d, meta: m, heads: heads, ws: writeSet{M: m, G: d.nextGen(heads)}, metas: map[string]fieldMeta{}}
}

// record adds a write-set entry and the matching field metadata. meta is
// nil for the change's own meta.
func (t *tx) record(e wsEntry, meta *WriteMeta) {
	if meta != nil && *meta == t.meta {
		meta = nil
	}
	e.Meta = meta
	t.ws.E = append(t.ws.E, e)
	m := t.meta
	if meta != nil {
		m = *meta
	}
	t.setMeta(e.Path, fieldMeta{Meta: m, Deleted: e.Op == opDel || e.Op == opDelRecord})
}

func (t *tx) setMeta(ptr string, m fieldMeta) {
	if _, ok := t.metas[ptr]; !ok {
		t.order = append(t.order, ptr)
	}
	t.metas[ptr] = m
}

func (t *tx) commit() error {
	if len(t.ws.E) == 0 && !t.touched {
		return nil
	}
	root := t.d.am.RootMap()
	for _, ptr := range t.order {
		if err := root.Set(metaKey(ptr), encodeFieldMeta(t.metas[ptr])); err != nil {
			return err
		}
	}
	msg := encodeWriteSet(&t.ws)
	when := time.UnixMilli(t.meta.HLC.WallMillis)
	return guard(func() error {
		h, err := t.d.am.Commit(msg, automerge.CommitOptions{Time: &when, AllowEmpty: true})
		if err == nil {
			ws := t.ws
			t.d.cache.put(&chMeta{hash: h, deps: t.heads, gen: ws.G, ws: &ws, meta: ws.M})
		}
		return err
	})
}

// target is a resolved write location.
type target struct {
	field   []string         // key-only prefix: the field the write is recorded against
	inList  bool             // the write goes inside a list at field
	parent  *automerge.Value // container holding the last element
	last    any              // last element (string key or int index)
	created bool             // intermediate maps were created
}

// locate resolves p for writing. With create, missing intermediate maps
// are created (recorded as mkmap entries with meta); with force, values of
// the wrong kind on the way are replaced by maps as well.
func (t *tx) locate(p Path, create, force bool, meta *WriteMeta) (*target, error) {
	if len(p) == 0 {
		return nil, fmt.Errorf("%w: empty path", ErrBadPath)
	}
	if k, ok := rootKey(p); !ok {
		return nil, fmt.Errorf("%w: the root is a map", ErrBadPath)
	} else if isReserved(k) {
		return nil, fmt.Errorf("%w: %q is reserved", ErrBadPath, k)
	}
	tg := &target{}
	cur := t.d.am.Root()
	for i := 0; i < len(p)-1; i++ {
		e := p[i]
		switch cur.Kind() {
		case automerge.KindMap:
			key, ok := mapKey(e)
			if !ok {
				return nil, fmt.Errorf("%w: index %v into a map", ErrBadPath, e)
			}
			if !tg.inList {
				tg.field = append(tg.field, key)
			}
			next, err := cur.Map().Get(key)
			if err != nil {
				return nil, err
			}
			if next.Kind() != automerge.KindMap && (next.Kind() != automerge.KindList || force) {
				if next.IsVoid() && !create || !next.IsVoid() && !force {
					if next.IsVoid() {
						return nil, fmt.Errorf("%w: %s", ErrNotFound, p[:i+1])
					}
					return nil, fmt.Errorf("%w: %s is a %s", ErrBadPath, p[:i+1], amKind(next))
				}
				if tg.inList {
					return nil, fmt.Errorf("%w: cannot create maps inside a list element", ErrBadPath)
				}
				if _, err := t.mkMap(cur.Map(), key, tg.field, meta); err != nil {
					return nil, err
				}
				tg.created = true
				if next, err = cur.Map().Get(key); err != nil {
					return nil, err
				}
			}
			cur = next
		case automerge.KindList:
			idx, ok := listIndex(e)
			if !ok {
				return nil, fmt.Errorf("%w: key %v into a list", ErrBadPath, e)
			}
			tg.inList = true
			l := cur.List()
			if idx >= l.Len() {
				return nil, fmt.Errorf("%w: %s", ErrNotFound, p[:i+1])
			}
			next, err := l.Get(idx)
			if err != nil {
				return nil, err
			}
			if next.Kind() != automerge.KindMap && (next.Kind() != automerge.KindList || force) {
				return nil, fmt.Errorf("%w: %s is a %s", ErrBadPath, p[:i+1], amKind(next))
			}
			cur = next
		default:
			return nil, fmt.Errorf("%w: %s is a %s", ErrBadPath, p[:i], amKind(cur))
		}
	}
	last := p[len(p)-1]
	switch cur.Kind() {
	case automerge.KindMap:
		key, ok := mapKey(last)
		if !ok {
			return nil, fmt.Errorf("%w: index %v into a map", ErrBadPath, last)
		}
		if !tg.inList {
			tg.field = append(tg.field, key)
		}
		last = key
	case automerge.KindList:
		idx, ok := listIndex(last)
		if !ok {
			return nil, fmt.Errorf("%w: key %v into a list", ErrBadPath, last)
		}
		tg.inList = true
		last = idx
	}
	tg.parent, tg.last = cur, last
	return tg, nil
}

func mapKey(e any) (string, bool) {
	switch x := e.(type) {
	case string:
		return x, true
	case dotted:
		return string(x), true
	}
	return "", false
}

// mkMap creates a new map at m[key] and records it.
func (t *tx) mkMap(m *automerge.Map, key string, field []string, meta *WriteMeta) (*automerge.Map, error) {
	nm := automerge.NewMap()
	if err := m.Set(key, nm); err != nil {
		return nil, err
	}
	t.touched = true
	t.record(wsEntry{Path: pointer(field), Op: opMkMap}, meta)
	return nm, nil
}

// putNew writes n as a brand-new value at m[key] (creating objects).
func putNew(m *automerge.Map, key string, n *node) error {
	return placeNew(func(v any) error { return m.Set(key, v) }, n)
}

// insertNode inserts n before idx in l.
func insertNode(l *automerge.List, idx int, n *node) error {
	return placeNew(func(v any) error { return l.Insert(idx, v) }, n)
}

func appendNodes(l *automerge.List, ns []*node) error {
	for _, c := range ns {
		if err := insertNode(l, l.Len(), c); err != nil {
			return err
		}
	}
	return nil
}

// placeNew writes n as a brand-new value with place (a map key's Set or a
// list's Insert), then fills the map or list it created.
func placeNew(place func(v any) error, n *node) error {
	switch n.k {
	case KindMap:
		nm := automerge.NewMap()
		if err := place(nm); err != nil {
			return err
		}
		for _, k := range sortedKeys(n.m) {
			if err := putNew(nm, k, n.m[k]); err != nil {
				return err
			}
		}
		return nil
	case KindList:
		nl := automerge.NewList()
		if err := place(nl); err != nil {
			return err
		}
		return appendNodes(nl, n.l)
	case KindText:
		return place(automerge.NewText(n.s))
	case KindCounter:
		return place(automerge.NewCounter(n.i))
	}
	return place(n.amScalar())
}

// setListElem overwrites l[idx] with n.
func setListElem(l *automerge.List, idx int, n *node) error {
	switch n.k {
	case KindMap, KindList, KindText, KindCounter:
		if err := l.Delete(idx); err != nil {
			return err
		}
		return insertNode(l, idx, n)
	}
	return l.Set(idx, n.amScalar())
}

// assign writes n at m[key] recording entries against field. With replace,
// keys of an existing map that n lacks are deleted (Set); without, they are
// kept (Put's merge).
func (t *tx) assign(m *automerge.Map, key string, field []string, n *node, replace bool, meta *WriteMeta) error {
	ptr := pointer(field)
	cur, err := m.Get(key)
	if err != nil {
		return err
	}
	if n.k == KindMap {
		var cm *automerge.Map
		if cur.Kind() == automerge.KindMap {
			cm = cur.Map()
		} else {
			if cm, err = t.mkMap(m, key, field, meta); err != nil {
				return err
			}
		}
		if replace && cur.Kind() == automerge.KindMap {
			keys, err := cm.Keys()
			if err != nil {
				return err
			}
			for _, k := range sortedStrings(keys) {
				if _, ok := n.m[k]; !ok {
					if err := cm.Delete(k); err != nil {
						return err
					}
					t.touched = true
					t.record(wsEntry{Path: pointer(append(field[:len(field):len(field)], k)), Op: opDel}, meta)
				}
			}
		}
		for _, k := range sortedKeys(n.m) {
			if err := t.assign(cm, k, append(field[:len(field):len(field)], k), n.m[k], replace, meta); err != nil {
				return err
			}
		}
		return nil
	}
	if !cur.IsVoid() {
		old, err := fromAM(cur)
		if err == nil && (equalNodes(old, n) || readsAs(old, n)) {
			return nil // unchanged: no operation, no entry
		}
	}
	if err := putNew(m, key, n); err != nil {
		return err
	}
	t.touched = true
	t.record(wsEntry{Path: ptr, Op: opSet, Val: n.encode()}, meta)
	return nil
}

func sortedStrings(s []string) []string {
	m := make(map[string]struct{}, len(s))
	for _, k := range s {
		m[k] = struct{}{}
	}
	return sortedKeys(m)
}

// touch prepares a write: a deleted record comes back to life.
func (t *tx) touch() {
	if m, ok := t.d.fieldMeta(t.d.am, ""); ok && m.Deleted {
		t.setMeta("", fieldMeta{Meta: t.meta})
	}
}

// Set writes value at path, creating missing parent maps. A map value
// replaces the map at path field by field (keys it lacks are deleted; the
// map object is kept so concurrent edits to other keys merge); any other
// value replaces what was there. Writing an equal scalar is a no-op. A
// value that would not read back exactly (NaN, ±Inf, an empty or invalid
// UTF-8 key, a time finer than a millisecond or beyond int64 milliseconds;
// see docs/crdt.md#values) gives ErrUnsupportedValue and changes nothing.
func (d *Doc) Set(path any, value any) error {
	p, err := writePath(path)
	if err != nil {
		return err
	}
	n, err := fromGo(value)
	if err != nil {
		return err
	}
	return d.write(func(t *tx) error { return t.set(p, n, true) })
}

func (t *tx) set(p Path, n *node, replace bool) error {
	tg, err := t.locate(p, true, false, nil)
	if err != nil {
		return err
	}
	t.touch()
	if tg.inList {
		if err := t.setInList(tg, n); err != nil {
			return err
		}
		t.touched = true
		t.record(wsEntry{Path: pointer(tg.field), Op: opEdit}, nil)
		return nil
	}
	return t.assign(tg.parent.Map(), tg.last.(string), tg.field, n, replace, nil)
}

func (t *tx) setInList(tg *target, n *node) error {
	switch tg.parent.Kind() {
	case automerge.KindList:
		l := tg.parent.List()
		idx := tg.last.(int)
		if idx >= l.Len() {
			return fmt.Errorf("%w: index %d of %d", ErrNotFound, idx, l.Len())
		}
		return setListElem(l, idx, n)
	case automerge.KindMap:
		return putNew(tg.parent.Map(), tg.last.(string), n)
	}
	return fmt.Errorf("%w: not a container", ErrBadPath)
}

// Put merges fields into the record: each key is written as by Set, except
// that nested maps are merged key by key (keys the new value lacks are kept).
// All fields go into one change.
func (d *Doc) Put(fields map[string]any) error {
	n, err := fromGo(fields)
	if err != nil {
		return err
	}
	for k := range n.m {
		if isReserved(k) {
			return fmt.Errorf("%w: %q is reserved", ErrBadPath, k)
		}
	}
	return d.write(func(t *tx) error {
		t.touch()
		root := t.d.am.RootMap()
		for _, k := range sortedKeys(n.m) {
			if err := t.assign(root, k, []string{k}, n.m[k], false, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// Delete removes the value at path. A missing path gives ErrNotFound.
func (d *Doc) Delete(path any) error {
	p, err := writePath(path)
	if err != nil {
		return err
	}
	return d.write(func(t *tx) error {
		tg, err := t.locate(p, false, false, nil)
		if err != nil {
			return err
		}
		if _, err := child(tg.parent, tg.last); err != nil {
			return err
		}
		if tg.inList {
			if tg.parent.Kind() == automerge.KindList {
				err = tg.parent.List().Delete(tg.last.(int))
			} else {
				err = tg.parent.Map().Delete(tg.last.(string))
			}
			if err != nil {
				return err
			}
			t.touched = true
			t.record(wsEntry{Path: pointer(tg.field), Op: opEdit}, nil)
			return nil
		}
		if err := tg.parent.Map().Delete(tg.last.(string)); err != nil {
			return err
		}
		t.touched = true
		t.record(wsEntry{Path: pointer(tg.field), Op: opDel}, nil)
		return nil
	})
}

// DeleteRecord deletes every field and marks the record deleted (Deleted
// reports true until the next write). A concurrent edit on another replica
// is an edit/delete conflict.
func (d *Doc) DeleteRecord() error {
	return d.write(func(t *tx) error {
		root := t.d.am.RootMap()
		keys, err := root.Keys()
		if err != nil {
			return err
		}
		for _, k := range sortedStrings(keys) {
			if isReserved(k) {
				continue
			}
			if err := root.Delete(k); err != nil {
				return err
			}
		}
		t.touched = true
		t.record(wsEntry{Path: "", Op: opDelRecord}, nil)
		return nil
	})
}

// NewText creates a collaborative text at path (Set(path, Text(s))).
func (d *Doc) NewText(path any, s string) error { return d.Set(path, Text(s)) }

// SpliceText deletes del characters (Unicode code points) at pos of the
// text at path and inserts s there.
func (d *Doc) SpliceText(path any, pos, del int, s string) error {
	p, err := writePath(path)
	if err != nil {
		return err
	}
	if pos < 0 || del < 0 {
		return fmt.Errorf("%w: negative splice bounds", ErrBadPath)
	}
	if _, err := fromGo(s); err != nil {
		return err
	}
	return d.editObject(p, automerge.KindText, func(v *automerge.Value) error {
		tx := v.Text()
		if pos+del > tx.Len() {
			return fmt.Errorf("%w: splice [%d,%d) beyond text length %d", ErrBadPath, pos, pos+del, tx.Len())
		}
		return tx.Splice(pos, del, s)
	})
}

// Increment adds delta to the counter at path.
func (d *Doc) Increment(path any, delta int64) error {
	p, err := writePath(path)
	if err != nil {
		return err
	}
	return d.editObject(p, automerge.KindCounter, func(v *automerge.Value) error {
		cur, err := v.Counter().Get()
		if err != nil {
			return err
		}
		if sum := cur + delta; (delta > 0 && sum < cur) || (delta < 0 && sum > cur) {
			// Automerge would wrap around silently.
			return fmt.Errorf("%w: counter %s is %d; adding %d overflows int64", ErrUnsupportedValue, p, cur, delta)
		}
		return v.Counter().Inc(delta)
	})
}

// ListInsert inserts values before index idx of the list at path (idx ==
// length appends).
func (d *Doc) ListInsert(path any, idx int, values ...any) error {
	p, ns, err := listArgs(path, values)
	if err != nil {
		return err
	}
	return d.editObject(p, automerge.KindList, func(v *automerge.Value) error {
		l := v.List()
		if idx < 0 || idx > l.Len() {
			return fmt.Errorf("%w: insert at %d of %d", ErrBadPath, idx, l.Len())
		}
		for i, n := range ns {
			if err := insertNode(l, idx+i, n); err != nil {
				return err
			}
		}
		return nil
	})
}

// ListAppend appends values to the list at path.
func (d *Doc) ListAppend(path any, values ...any) error {
	p, ns, err := listArgs(path, values)
	if err != nil {
		return err
	}
	return d.editObject(p, automerge.KindList, func(v *automerge.Value) error {
		return appendNodes(v.List(), ns)
	})
}

// listArgs checks a list edit's path and converts its values.
func listArgs(path any, values []any) (Path, []*node, error) {
	p, err := writePath(path)
	if err != nil {
		return nil, nil, err
	}
	ns := make([]*node, len(values))
	for i, v := range values {
		if ns[i], err = fromGo(v); err != nil {
			return nil, nil, err
		}
	}
	return p, ns, nil
}

// ListDelete deletes n elements starting at idx from the list at path.
func (d *Doc) ListDelete(path any, idx, n int) error {
	p, err := writePath(path)
	if err != nil {
		return err
	}
	return d.editObject(p, automerge.KindList, func(v *automerge.Value) error {
		l := v.List()
		if idx < 0 || n < 0 || idx+n > l.Len() {
			return fmt.Errorf("%w: delete [%d,%d) of %d", ErrBadPath, idx, idx+n, l.Len())
		}
		for range n {
			if err := l.Delete(idx); err != nil {
				return err
			}
		}
		return nil
	})
}

// editObject runs fn on the object of kind k at p, recording an edit.
func (d *Doc) editObject(p Path, k automerge.Kind, fn func(v *automerge.Value) error) error {
	return d.write(func(t *tx) error {
		if len(p) == 0 {
			return fmt.Errorf("%w: empty path", ErrBadPath)
		}
		tg, err := t.locate(p, false, false, nil)
		if err != nil {
			return err
		}
		v, err := child(tg.parent, tg.last)
		if err != nil {
			return err
		}
		if v.Kind() != k {
			return fmt.Errorf("%w: %s is a %s, not a %s", ErrBadPath, p, amKind(v), k)
		}
		if err := fn(v); err != nil {
			return err
		}
		t.touch()
		t.touched = true
		t.record(wsEntry{Path: pointer(tg.field), Op: opEdit}, nil)
		return nil
	})
}
