package relay

import (
	"context"
)

// migrateBadger: placeholder, replaced below.
func migrateBadger(ctx context.Context, dir string, opts ServerOptions) error { return nil }
