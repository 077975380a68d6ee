package crdt

import (
	"fmt"
	"strconv"
	"strings"
)

// MetaPrefix is the reserved root-key prefix under which ferry keeps its
// hidden write metadata. Applications can neither read nor write root keys
// that start with it.
const MetaPrefix = "_ferry"

// Path addresses a value inside a document: string elements are map keys,
// int elements are list indexes. Build one with ParsePath or as a literal.
type Path []any

// ParsePath accepts a dotted string ("profile.address.city", where a numeric
// element indexes a list when the value there is a list and is a map key
// otherwise), a Path, or a []any of string keys and int indexes.
func ParsePath(p any) (Path, error) {
	switch v := p.(type) {
	case string:
		if v == "" {
			return Path{}, nil
		}
		parts := strings.Split(v, ".")
		out := make(Path, len(parts))
		for i, s := range parts {
			if s == "" {
				return nil, fmt.Errorf("%w: empty element in %q", ErrBadPath, v)
			}
			out[i] = dotted(s)
		}
		return out, nil
	case Path:
		return checkElems([]any(v))
	case []any:
		return checkElems(v)
	case []string:
		out := make(Path, len(v))
		for i, s := range v {
			out[i] = s
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: %T is not a path", ErrBadPath, p)
	}
}

// dotted marks a dotted-string element that may be a list index.
type dotted string

func checkElems(v []any) (Path, error) {
	out := make(Path, len(v))
	for i, e := range v {
		switch x := e.(type) {
		case string:
			out[i] = x
		case dotted:
			out[i] = x
		case int:
			if x < 0 {
				return nil, fmt.Errorf("%w: negative index %d", ErrBadPath, x)
			}
			out[i] = x
		case int64:
			if x < 0 {
				return nil, fmt.Errorf("%w: negative index %d", ErrBadPath, x)
			}
			out[i] = int(x)
		default:
			return nil, fmt.Errorf("%w: element %d has type %T (want string or int)", ErrBadPath, i, e)
		}
	}
	return out, nil
}

// writePath parses a path for a write. Empty keys are refused: a foreign
// document may have them (and reads reach them), but automerge-go's core
// cannot write them, and a write that fails halfway cannot be rolled back.
func writePath(path any) (Path, error) {
	p, err := ParsePath(path)
	if err != nil {
		return nil, err
	}
	for i, e := range p {
		if s, ok := e.(string); ok && s == "" {
			return nil, fmt.Errorf("%w: element %d is an empty key; ferry cannot write under empty map keys (automerge-go refuses them)", ErrBadPath, i)
		}
	}
	return p, nil
}

// String renders p in dotted form.
func (p Path) String() string {
	var b strings.Builder
	for i, e := range p {
		if i > 0 {
			b.WriteByte('.')
		}
		fmt.Fprint(&b, e)
	}
	return b.String()
}

// pointer renders a key-only path as an RFC 6901 JSON pointer ("" is the
// root). It is the canonical field name used in metadata and write-sets.
func pointer(keys []string) string {
	var b strings.Builder
	for _, k := range keys {
		b.WriteByte('/')
		k = strings.ReplaceAll(k, "~", "~0")
		k = strings.ReplaceAll(k, "/", "~1")
		b.WriteString(k)
	}
	return b.String()
}

// splitPointer is the inverse of pointer.
func splitPointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("%w: pointer %q", ErrBadPath, p)
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		s = strings.ReplaceAll(s, "~1", "/")
		parts[i] = strings.ReplaceAll(s, "~0", "~")
	}
	return parts, nil
}

// PointerToPath converts a field pointer (as in Conflict.Path) to a Path.
func PointerToPath(ptr string) (Path, error) {
	keys, err := splitPointer(ptr)
	if err != nil {
		return nil, err
	}
	out := make(Path, len(keys))
	for i, k := range keys {
		out[i] = k
	}
	return out, nil
}

// FieldPointer renders a key-only path as the pointer used in Conflict.Path.
func FieldPointer(keys ...string) string { return pointer(keys) }

// isUnder reports whether pointer q equals p or lies below it.
func isUnder(q, p string) bool {
	if p == "" {
		return true
	}
	return q == p || (len(q) > len(p) && q[:len(p)] == p && q[len(p)] == '/')
}

// strictlyUnder reports whether q lies strictly below p.
func strictlyUnder(q, p string) bool { return q != p && isUnder(q, p) }

// parentPointer returns the pointer of p's parent ("" for top-level fields).
func parentPointer(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return ""
	}
	return p[:i]
}

func atoiElem(s string) (int, bool) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
