// Package names holds the one rule for collection names and record ids,
// and the one encoding of keys built from several names. Every package
// that checks a name or joins names into a key uses it, so that two
// different (collection, id) pairs can never share a key anywhere.
//
// # Usage
//
//	if err := names.Check("record id", id); err != nil {
//		return fmt.Errorf("%w: %w", ErrInvalid, err)
//	}
//	key := names.RecordKey(collection, id)
package names
