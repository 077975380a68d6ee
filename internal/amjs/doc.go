// Package amjs runs scripts against the reference Automerge implementation
// (@automerge/automerge on Node.js), so tests can check ferry against
// documents made by other Automerge applications.
//
// # Usage
//
//	out := amjs.Run(t, `
//	  import * as A from "@automerge/automerge"
//	  let d = A.from({n: 1})
//	  process.stdout.write(Buffer.from(A.save(d)).toString("base64"))
//	`)
//
// The package is installed once per checkout into internal/amjs/js/node_modules
// (npm, from package-lock.json), under a file lock so parallel test binaries
// share one install. Where Node.js or npm is absent the test is skipped with
// the reason logged; where the install fails it is skipped too, except under
// CI=true, where it fails the test (CI can reach the npm registry).
package amjs
