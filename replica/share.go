package replica

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"

	"github.com/ferrysync/ferry/collector"
	"github.com/ferrysync/ferry/privacy/anon"
	"github.com/ferrysync/ferry/privacy/consent"
	"github.com/ferrysync/ferry/transport"
)

// ShareOptions describe a one-way, anonymized share of a collection with
// an outside destination (a model-improvement server, say).
type ShareOptions struct {
	// Rules say, field by field, what may leave and how it is
	// anonymized; fields they do not name are dropped. Rules.Collection
	// and Rules.Purpose name what is shared and why.
	Rules anon.Rules
	// Destination receives the anonymized batch.
	Destination collector.Destination
	// DestinationID names the destination in grants and in the ledger
	// (its URL, for an HTTP endpoint).
	DestinationID string
	// Period is how often pseudonyms change (monthly when empty): tokens
	// of one epoch cannot be linked to another's.
	Period anon.Period
}

// ShareResult reports what a share sent.
type ShareResult struct {
	GrantID  string  `json:"grant_id"`
	Records  int     `json:"records"`  // records sent
	Withheld int     `json:"withheld"` // records withheld by k-anonymity
	Bytes    int64   `json:"bytes"`    // size of the records as JSON
	Epsilon  float64 `json:"epsilon"`  // privacy budget spent per record
	Epoch    string  `json:"epoch"`
}

// Share sends an anonymized copy of a collection to an outside
// destination. It needs a live grant for that collection, purpose and
// destination; a grant limited to some fields narrows the rules to those
// fields. What leaves is a batch of fresh records: no history, no actor
// ids, no record ids, no timestamps but those a rule generalizes. The
// share is recorded in the consent ledger.
func (r *Replica) Share(ctx context.Context, opts ShareOptions) (ShareResult, error) {
	if r.isClosed() {
		return ShareResult{}, ErrClosed
	}
	if err := checkCollection(opts.Rules.Collection); err != nil {
		return ShareResult{}, err
	}
	rules := opts.Rules
	if pd, ok := opts.Destination.(*PeerDestination); ok {
		if fp := transport.Fingerprint(pd.Conn.RemoteIdentity()); fp != opts.DestinationID {
			return ShareResult{}, fmt.Errorf("%w: the connection is to %s, the grant is for %s", ErrNoConsent, short(fp), short(opts.DestinationID))
		}
	}
	g, ok := r.consent.Allowed(opts.DestinationID, rules.Collection, rules.Purpose)
	if !ok {
		return ShareResult{}, fmt.Errorf("%w: no live grant to share %q with %s for %q", ErrNoConsent, rules.Collection, opts.DestinationID, rules.Purpose)
	}
	if len(g.Fields) > 0 {
		allowed := map[string]bool{}
		for _, f := range g.Fields {
			allowed[f] = true
		}
		narrowed := map[string]anon.FieldRule{}
		for path, fr := range rules.Fields {
			if allowed[path] {
				narrowed[path] = fr
			}
		}
		rules.Fields = narrowed
		var qi []string
		for _, q := range rules.QuasiIdentifiers {
			if allowed[q] {
				qi = append(qi, q)
			}
		}
		rules.QuasiIdentifiers = qi
	}
	secret, err := r.pseudonymSecret(ctx)
	if err != nil {
		return ShareResult{}, err
	}
	period := opts.Period
	if period == "" {
		period = anon.Monthly
	}
	epoch, err := anon.EpochFor(r.opts.Now(), period)
	if err != nil {
		return ShareResult{}, fmt.Errorf("replica: share: %w", err)
	}
	a, err := anon.New(secret, epoch, rules)
	if err != nil {
		return ShareResult{}, fmt.Errorf("replica: share: %w", err)
	}
	page, err := r.List(ctx, rules.Collection, ListOptions{})
	if err != nil {
		return ShareResult{}, err
	}
	records := make([]map[string]any, 0, len(page.Items))
	for _, it := range page.Items {
		m, err := r.Get(ctx, rules.Collection, it.ID)
		if err != nil {
			return ShareResult{}, err
		}
		records = append(records, m)
	}
	res, err := a.Apply(records)
	if err != nil {
		return ShareResult{}, fmt.Errorf("replica: share: %w", err)
	}
	// Revocation wins: check again right before anything leaves.
	if _, ok := r.consent.Allowed(opts.DestinationID, rules.Collection, rules.Purpose); !ok {
		return ShareResult{}, fmt.Errorf("%w: grant revoked", ErrNoConsent)
	}
	out := ShareResult{GrantID: g.ID, Records: len(res.Records), Withheld: res.Withheld, Epsilon: res.Epsilon, Epoch: epoch}
	if b, err := json.Marshal(res.Records); err == nil {
		out.Bytes = int64(len(b))
	}
	if len(res.Records) > 0 {
		if err := opts.Destination.Send(ctx, collector.Batch{Purpose: rules.Purpose, Collection: rules.Collection, Records: res.Records}); err != nil {
			return out, fmt.Errorf("replica: share to %s: %w", opts.DestinationID, err)
		}
	}
	if err := r.consent.RecordShare(ctx, consent.Share{GrantID: g.ID, Collection: rules.Collection, Purpose: rules.Purpose,
		Destination: opts.DestinationID, Records: out.Records, Bytes: out.Bytes}); err != nil {
		return out, fmt.Errorf("replica: ledger: %w", err)
	}
	return out, nil
}

// pseudonymSecret is the device's key for pseudonyms. It never leaves the
// device: it is not in backups and never sent.
func (r *Replica) pseudonymSecret(ctx context.Context) ([]byte, error) {
	self := r.store.Slots(nsSelf)
	b, ok, err := self.Get(ctx, "pseudonym-secret")
	if err != nil {
		return nil, fmt.Errorf("replica: pseudonym secret: %w", err)
	}
	if ok {
		return b, nil
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := self.Put(ctx, "pseudonym-secret", b); err != nil {
		return nil, fmt.Errorf("replica: pseudonym secret: %w", err)
	}
	return b, nil
}

// PeerDestination sends anonymized batches to another ferry replica (or
// any program using ReceiveShare) over an authenticated transport
// connection, and waits for its acknowledgement. The share's
// DestinationID must be that peer's fingerprint.
type PeerDestination struct {
	Conn transport.Conn
}

var _ collector.Destination = (*PeerDestination)(nil)

const shareAck = "ferry-share-ok"

// Send implements collector.Destination.
func (d *PeerDestination) Send(ctx context.Context, batch collector.Batch) error {
	b, err := collector.EncodeBatch(collector.CBOR, batch)
	if err != nil {
		return fmt.Errorf("replica: share: %w", err)
	}
	if err := d.Conn.Send(ctx, b); err != nil {
		return fmt.Errorf("replica: share: %w", err)
	}
	ack, err := d.Conn.Recv(ctx)
	if err != nil {
		return fmt.Errorf("replica: share: waiting for the acknowledgement: %w", err)
	}
	if string(ack) != shareAck {
		return fmt.Errorf("%w: share not acknowledged", ErrProtocol)
	}
	return nil
}

// ReceiveShare reads one anonymized batch a PeerDestination sent over
// conn, checks it with the collector's bounds, and acknowledges it.
func ReceiveShare(ctx context.Context, conn transport.Conn) (collector.Batch, error) {
	b, err := conn.Recv(ctx)
	if err != nil {
		return collector.Batch{}, fmt.Errorf("replica: receive share: %w", err)
	}
	batch, err := collector.DecodeBatch(collector.CBOR, b)
	if err != nil {
		return collector.Batch{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if err := conn.Send(ctx, []byte(shareAck)); err != nil {
		return collector.Batch{}, fmt.Errorf("replica: receive share: %w", err)
	}
	return batch, nil
}
