// Package anon anonymizes records for one-way shares with outside
// destinations (analytics, model-improvement servers).
//
// A Rules value, one per collection and purpose, names what may leave:
// every field path gets a rule (drop, keep, pseudonymize, generalize or
// noise) and every field no rule names is dropped, so data minimization is
// the default. The output is a set of fresh records: no record ids, no ferry
// metadata (keys starting with "_ferry", which hold actor ids, clocks and
// history), no raw timestamps, in an order that says nothing about the input
// order.
//
//   - pseudonymize: HMAC-SHA256 under a key derived on the device with HKDF
//     from the device secret, the purpose and an epoch; the same value gives
//     the same token within one (purpose, epoch) and unlinkable tokens across
//     purposes and epochs. The key never leaves the Anonymizer.
//   - generalize: numeric buckets, times truncated to an hour, day, month or
//     year, string prefixes, numbers or lat/lon locations rounded.
//   - noise: exact discrete Laplace (two-sided geometric) noise on integer
//     counts, with Rules.Epsilon the privacy budget per record per share.
//   - k-anonymity: after the rules, records are grouped by their
//     quasi-identifiers and every group smaller than Rules.K is withheld.
//
// # Usage
//
//	rules, err := anon.ParseRules(rulesJSON)
//	epoch := anon.EpochFor(now, anon.Monthly) // "2026-11"
//	a, err := anon.New(deviceSecret, epoch, rules)
//	res, err := a.Apply(records)
//	// res.Records leave the device; res.Withheld, res.DroppedFields,
//	// res.Rejected and res.Epsilon go to the share ledger.
//
// See docs/privacy-anon.md for the rule format, the key derivation and the
// privacy budget.
package anon
