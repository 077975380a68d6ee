package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"filippo.io/age"
	"github.com/ferrysync/ferry/replica"
	"github.com/ferrysync/ferry/storage"
)

// Backups: export and import.

var exportCmd = &command{name: "export", args: "FILE [--recipient AGE-RECIPIENT]...", summary: "write an encrypted backup (age format) of every record",
	example: "ferry export backup.age --recipient age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &exportCommand{env: e}
		fs.Var(&c.recipients, "recipient", "encrypt to this age X25519 recipient (repeatable); without it, to the backup passphrase ($FERRY_BACKUP_PASSPHRASE, else the store passphrase)")
		return c
	}}

// exportCommand is `ferry export FILE`: the backup is written to
// FILE.partial and renamed over FILE once whole.
type exportCommand struct {
	*env
	recipients listFlag // age X25519 recipients; none: the backup passphrase
}

func (c *exportCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	if err := needArgs(args, 1); err != nil {
		return err
	}
	opts := storage.ExportOptions{}
	for _, s := range c.recipients {
		rec, err := age.ParseX25519Recipient(s)
		if err != nil {
			return usagef("bad recipient %q: %v", s, err)
		}
		opts.Recipients = append(opts.Recipients, rec)
	}
	if len(opts.Recipients) == 0 {
		p, err := e.backupPassphrase()
		if err != nil {
			return err
		}
		opts.Passphrase = p
		if e.fastKDF() {
			opts.ScryptWorkFactor = 10
		}
	}
	return e.withReplica(ctx, func(r *replica.Replica) error {
		tmp := args[0] + ".partial"
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		pw := &progressIO{show: e.progressPrinter("exported bytes"), w: f}
		st, err := r.Backup(ctx, pw, opts)
		pw.done()
		if e.progress {
			fmt.Fprintln(e.stderr)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, args[0])
		}
		if err != nil {
			os.Remove(tmp)
			return err
		}
		fmt.Fprintf(e.stdout, "exported %d records to %s (%d bytes)\n", st.Records, args[0], st.Bytes)
		return nil
	})
}

var importCmd = &command{name: "import", args: "FILE [--identity AGE-IDENTITY-FILE]", summary: "merge a backup into this store (verified whole first; newer data is never lost)",
	example: "ferry import backup.age",
	new: func(e *env, fs *flag.FlagSet) runner {
		c := &importCommand{env: e}
		fs.StringVar(&c.identity, "identity", "", "an age identity file for a recipient backup; without it, the backup passphrase")
		return c
	}}

// importCommand is `ferry import FILE`.
type importCommand struct {
	*env
	identity string // an age identity file, or "" for the backup passphrase
}

func (c *importCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	if err := needArgs(args, 1); err != nil {
		return err
	}
	opts := storage.ImportOptions{}
	if idf := c.identity; idf != "" {
		b, err := os.ReadFile(idf)
		if err != nil {
			return err
		}
		ids, err := age.ParseIdentities(bytes.NewReader(b))
		if err != nil {
			return inputf("identity file %s: %v", idf, err)
		}
		opts.Identities = ids
	} else {
		p, err := e.backupPassphrase()
		if err != nil {
			return err
		}
		opts.Passphrase = p
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	return e.withReplica(ctx, func(r *replica.Replica) error {
		info, _ := f.Stat()
		size := 0
		if info != nil {
			size = int(info.Size())
		}
		pr := &progressIO{show: e.progressPrinter("verified bytes"), r: f, total: size}
		st, err := r.Restore(ctx, pr, opts)
		pr.done()
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "imported %d records: %d new, %d merged, %d unchanged\n", st.Records, st.Created, st.Merged, st.Unchanged)
		return nil
	})
}

func (e *env) backupPassphrase() ([]byte, error) {
	if p := e.getenv("FERRY_BACKUP_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return e.passphrase(false)
}

// progressIO counts the bytes through a reader or writer and shows them
// (on a terminal only; the printer is silent otherwise), at most every
// 256 KiB.
type progressIO struct {
	show        func(done, total int)
	r           io.Reader
	w           io.Writer
	n, total    int
	lastShownAt int
}

func (p *progressIO) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.add(n)
	return n, err
}

func (p *progressIO) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.add(n)
	return n, err
}

func (p *progressIO) add(n int) {
	p.n += n
	if p.n-p.lastShownAt >= 256<<10 {
		p.lastShownAt = p.n
		p.show(p.n, p.total)
	}
}

func (p *progressIO) done() {
	if p.n != p.lastShownAt {
		p.show(p.n, p.total)
	}
}
