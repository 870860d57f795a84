package chattemplate

// Source pre-processing that makes github.com/ardanlabs/jinja render like
// Python Jinja2 as transformers configures it. The engine offers no hooks
// for its lexer or operators, so rewrite turns the template into an
// equivalent one the engine handles exactly:
//
//   - Whitespace control. The engine applies "-" markers, trim_blocks and
//     lstrip_blocks to the nearest text segment even when a tag sits in
//     between ("{% endfor %}{%- for %}" strips text before the endfor), and
//     treats whitespace after leading tags as start-of-template. It also
//     keeps the final newline Jinja2 drops (keep_trailing_newline=False).
//     rewrite applies Jinja2's lexer rules itself and emits every text run
//     as a string expression {{ '...' }}, so no text segment is left for the
//     engine to trim.
//   - String literals. Jinja2 decodes Python escapes (\r, \uXXXX, \x41,
//     octal, line continuations); the engine knows only \n \t \\ \' \".
//     Literals are re-emitted with only those escapes.
//   - Binary "+". Jinja2 raises on undefined + x (a missing variable or
//     attribute) and on str + int; the engine concatenates silently. Each
//     a + b becomes (a)|hone_add((b)), a filter with Python semantics.
//   - Printing. {{ x }} prints Python's str(x): "None" for none, "1.0"
//     for floats, Python reprs inside lists and dicts.
//   - Filters the engine gets wrong (tojson) are renamed to hone_* versions:
//     built-in filters are looked up before render data, so they cannot be
//     overridden any other way.
//
// Newlines are preserved (moved inside tags where text is dropped), so line
// numbers in engine errors refer to the caller's source.

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// filterPrefix namespaces replacement filters and helpers in render data.
const filterPrefix = "hone_"

// overriddenFilters are built-in filters replaced by hone_* versions. The
// engine's tojson uses encoding/json for indent= (sorted keys) and formats
// floats Go-style (1 instead of 1.0).
var overriddenFilters = map[string]bool{"tojson": true}

type itemKind int

const (
	itemText    itemKind = iota
	itemVar              // {{ }}
	itemBlock            // {% %}
	itemComment          // {# #}
)

type item struct {
	kind             itemKind
	text             string // text, or tag body without delimiters/markers
	left, right      byte   // whitespace markers: '-', '+' or 0
	line             int
	raw, rawBodyText bool
}

// rewrite converts a Jinja2 template into the engine-safe equivalent.
func rewrite(src string) (string, error) {
	// Jinja2 normalises newlines and drops one trailing newline.
	src = strings.ReplaceAll(src, "\r\n", "\n")
	src = strings.ReplaceAll(src, "\r", "\n")
	src = strings.TrimSuffix(src, "\n")

	items, err := lex(src)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(src) + len(src)/4)
	lineStarting := true
	for i, it := range items {
		if it.kind != itemText {
			if it.kind == itemComment || it.raw {
				// Nothing to render; keep the line count.
				b.WriteString("{#" + strings.Repeat("\n", strings.Count(it.text, "\n")) + "#}")
				continue
			}
			body, err := rewriteTag(it.text, it.kind == itemBlock)
			if err != nil {
				return "", fmt.Errorf("line %d: %w", it.line, err)
			}
			if it.kind == itemVar {
				// Print through hone_str: the engine prints none as ""
				// and 1.0 as "1", and quotes reprs differently.
				b.WriteString("{{(" + body + ")|" + filterPrefix + "str}}")
			} else {
				b.WriteString("{%" + body + "%}")
			}
			continue
		}
		var prev, next *item
		if i > 0 {
			prev = &items[i-1]
		}
		if i+1 < len(items) {
			next = &items[i+1]
		}
		text, dropped := it.text, 0
		// Right side of the previous tag.
		if prev != nil && !it.rawBodyText {
			switch {
			case prev.right == '-':
				t := strings.TrimLeftFunc(text, isPySpace)
				dropped += strings.Count(text[:len(text)-len(t)], "\n")
				lineStarting = strings.HasSuffix(text[:len(text)-len(t)], "\n")
				text = t
			case prev.kind != itemVar && prev.right != '+' && strings.HasPrefix(text, "\n"):
				text, dropped, lineStarting = text[1:], dropped+1, true // trim_blocks
			default:
				lineStarting = false
			}
		} else if prev != nil && prev.right == '-' {
			t := strings.TrimLeftFunc(text, isPySpace)
			dropped += strings.Count(text[:len(text)-len(t)], "\n")
			text = t
		}
		// Left side of the next tag.
		if next != nil {
			switch {
			case next.left == '-':
				t := strings.TrimRightFunc(text, isPySpace)
				dropped += strings.Count(text[len(t):], "\n")
				text = t
			case next.kind != itemVar && next.left != '+': // lstrip_blocks
				lpos := strings.LastIndexByte(text, '\n') + 1
				if (lpos > 0 || lineStarting) && lpos < len(text) && strings.TrimLeftFunc(text[lpos:], isPySpace) == "" {
					text = text[:lpos]
				}
			}
		}
		if text == "" {
			if dropped > 0 {
				b.WriteString("{#" + strings.Repeat("\n", dropped) + "#}")
			}
			continue
		}
		b.WriteString("{{ " + quoteLiteral(text, strings.Count(text, "\n")+dropped) + " }}")
	}
	return b.String(), nil
}

// isPySpace matches Python's str.isspace / regex \s.
func isPySpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

// quoteLiteral writes s as a single-quoted literal using only the escapes
// the engine decodes, followed by lines newlines (whitespace inside the tag)
// so the source keeps its line count.
func quoteLiteral(s string, lines int) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'" + strings.Repeat("\n", lines)
}

// lex splits src into text and tags following Jinja2's lexer: tags end at
// the first closer outside string literals and brackets; {% raw %} bodies
// are text.
func lex(src string) ([]item, error) {
	var items []item
	line := 1
	i := 0
	for i < len(src) {
		j := indexTagStart(src, i)
		if j < 0 {
			items = append(items, item{kind: itemText, text: src[i:], line: line})
			break
		}
		if j > i {
			items = append(items, item{kind: itemText, text: src[i:j], line: line})
			line += strings.Count(src[i:j], "\n")
		}
		it := item{line: line}
		var closer string
		switch src[j+1] {
		case '{':
			it.kind, closer = itemVar, "}}"
		case '%':
			it.kind, closer = itemBlock, "%}"
		default:
			it.kind, closer = itemComment, "#}"
		}
		k := j + 2
		if k < len(src) && (src[k] == '-' || src[k] == '+') {
			it.left = src[k]
			k++
		}
		var end int
		if it.kind == itemComment {
			e := strings.Index(src[k:], closer)
			if e < 0 {
				return nil, fmt.Errorf("line %d: unclosed comment", line)
			}
			end = k + e
		} else {
			e, err := tagBodyEnd(src, k, closer)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			end = e
		}
		body := src[k:end]
		if n := len(body); n > 0 && (body[n-1] == '-' || body[n-1] == '+') {
			it.right = body[n-1]
			body = body[:n-1]
		}
		it.text = body
		line += strings.Count(src[j:end+2], "\n")
		i = end + 2
		if it.kind == itemBlock && strings.TrimSpace(body) == "raw" {
			it.raw = true
			items = append(items, it)
			e := indexEndraw(src, i)
			if e < 0 {
				return nil, fmt.Errorf("line %d: unclosed raw block", it.line)
			}
			items = append(items, item{kind: itemText, text: src[i:e], line: line, rawBodyText: true})
			line += strings.Count(src[i:e], "\n")
			i = e
			continue
		}
		items = append(items, it)
	}
	// The tag after a raw body is its {% endraw %}: render nothing.
	for n := range items {
		if n > 0 && items[n-1].rawBodyText && items[n].kind == itemBlock {
			items[n].raw = true
		}
	}
	return items, nil
}

func indexTagStart(src string, i int) int {
	for {
		k := strings.IndexByte(src[i:], '{')
		if k < 0 || i+k+1 >= len(src) {
			return -1
		}
		k += i
		if c := src[k+1]; c == '{' || c == '%' || c == '#' {
			return k
		}
		i = k + 1
	}
}

// tagBodyEnd returns the index of closer ending the tag body starting at i.
// Like Jinja2, a closer inside a string or inside brackets does not count
// (so "{{ {'a': {'b': 1}} }}" is one tag).
func tagBodyEnd(src string, i int, closer string) (int, error) {
	depth := 0
	for i < len(src) {
		switch c := src[i]; {
		case c == '\'' || c == '"':
			i = stringEnd(src, i)
			continue
		case c == '(' || c == '[' || c == '{':
			depth++
		case (c == ')' || c == ']' || c == '}') && depth > 0:
			depth--
		case depth == 0 && strings.HasPrefix(src[i:], closer):
			return i, nil
		}
		i++
	}
	return 0, fmt.Errorf("unclosed tag")
}

// stringEnd returns the index after the string literal starting at i.
func stringEnd(s string, i int) int {
	q := s[i]
	i++
	for i < len(s) && s[i] != q {
		if s[i] == '\\' {
			i++
		}
		i++
	}
	return min(i+1, len(s))
}

// indexEndraw finds the start of the {% endraw %} tag at or after i.
func indexEndraw(src string, i int) int {
	for {
		k := strings.Index(src[i:], "{%")
		if k < 0 {
			return -1
		}
		k += i
		if strings.HasPrefix(strings.TrimLeft(src[k+2:], "-+ \t\n"), "endraw") {
			return k
		}
		i = k + 2
	}
}

// decodePyString decodes the body of a Jinja2 string literal the way
// Jinja2 does (Python unicode-escape on the literal's text).
func decodePyString(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case '\n':
		case '\\', '\'', '"':
			b.WriteByte(c)
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			if v, err := strconv.ParseUint(s[i+1:min(i+1+n, len(s))], 16, 32); err == nil && i+n < len(s) && utf8.ValidRune(rune(v)) {
				b.WriteRune(rune(v))
				i += n
			} else {
				b.WriteByte('\\')
				b.WriteByte(c)
			}
		default:
			if c >= '0' && c <= '7' {
				j := i
				for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
					j++
				}
				v, _ := strconv.ParseUint(s[i:j], 8, 32)
				b.WriteRune(rune(v))
				i = j - 1
			} else {
				b.WriteByte('\\')
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// addGlobals installs per-render globals and replacement filters. Render
// data shadows the engine's built-in globals, which is how these override
// them; the hone_* filters are reached through rewrite's renaming.
func addGlobals(data map[string]jinja.Value, now func() time.Time) {
	// The engine's raise_exception returns a plain error; ours is typed so
	// Render can surface the template's message as a *RaiseError.
	data["raise_exception"] = jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		msg := ""
		if len(args) > 0 {
			msg = printString(args[0])
		}
		return jinja.Undefined(), &RaiseError{Message: msg}
	})
	// The engine's strftime_now reads time.Now and knows few directives.
	data["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) == 0 || !args[0].IsString() {
			return jinja.Undefined(), fmt.Errorf("strftime_now: expected a format string")
		}
		return jinja.NewString(strftime(now(), args[0].AsString())), nil
	})
	data[filterPrefix+"tojson"] = jinja.NewCallable("tojson", filterToJSON)
	data[filterPrefix+"add"] = jinja.NewCallable("+", pyAdd)
	data[filterPrefix+"item"] = jinja.NewCallable("[]", pyItem)
	data[filterPrefix+"str"] = jinja.NewCallable("str", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) == 0 {
			return jinja.NewString(""), nil
		}
		return jinja.NewString(pyStr(args[0])), nil
	})
}

// pyAdd is Python's binary + on template values: numbers add, str+str and
// list+list concatenate, and anything else (notably an undefined operand)
// is an error, as it is in Jinja2.
func pyAdd(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) != 2 {
		return jinja.Undefined(), fmt.Errorf("+: expected two operands")
	}
	a, b := args[0], args[1]
	num := func(v jinja.Value) bool { return v.IsInt() || v.IsFloat() || v.IsBool() }
	switch {
	case a.IsUndefined() || b.IsUndefined():
		return jinja.Undefined(), fmt.Errorf("undefined value used as an operand of +")
	case a.IsString() && b.IsString():
		return jinja.NewString(a.AsString() + b.AsString()), nil
	case a.IsList() && b.IsList():
		items := make([]jinja.Value, 0, a.AsList().Len()+b.AsList().Len())
		items = append(append(items, a.AsList().Items...), b.AsList().Items...)
		return jinja.NewList(items), nil
	case num(a) && num(b):
		if a.IsFloat() || b.IsFloat() {
			return jinja.NewFloat(asFloat(a) + asFloat(b)), nil
		}
		return jinja.NewInt(asInt(a) + asInt(b)), nil
	}
	return jinja.Undefined(), fmt.Errorf("unsupported operand types for +: %s and %s", typeName(a), typeName(b))
}

func asInt(v jinja.Value) int64 {
	if v.IsBool() {
		if v.AsBool() {
			return 1
		}
		return 0
	}
	return v.AsInt()
}

func asFloat(v jinja.Value) float64 {
	if v.IsFloat() {
		return v.AsFloat()
	}
	return float64(asInt(v))
}

func typeName(v jinja.Value) string {
	switch {
	case v.IsNone():
		return "NoneType"
	case v.IsBool():
		return "bool"
	case v.IsInt():
		return "int"
	case v.IsFloat():
		return "float"
	case v.IsString():
		return "str"
	case v.IsList():
		return "list"
	case v.IsDict():
		return "dict"
	}
	return "object"
}

// pyItem is Jinja2's sandboxed obj[key]: dict key lookup, list and string
// indexing by integer (negative from the end), undefined for anything else
// that fails, and an error when obj itself is undefined.
func pyItem(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) != 2 {
		return jinja.Undefined(), fmt.Errorf("[]: expected one subscript")
	}
	obj, key := args[0], args[1]
	index := func(n int) (int, bool) {
		if !key.IsInt() && !key.IsBool() {
			return 0, false
		}
		i := int(asInt(key))
		if i < 0 {
			i += n
		}
		return i, i >= 0 && i < n
	}
	switch {
	case obj.IsUndefined():
		return jinja.Undefined(), fmt.Errorf("cannot subscript an undefined value")
	case obj.IsDict():
		if key.IsString() {
			if v, ok := obj.AsDict().Get(key.AsString()); ok {
				return v, nil
			}
		}
	case obj.IsList():
		if i, ok := index(obj.AsList().Len()); ok {
			return obj.AsList().Get(i), nil
		}
	case obj.IsString():
		r := []rune(obj.AsString())
		if i, ok := index(len(r)); ok {
			return jinja.NewString(string(r[i])), nil
		}
	}
	return jinja.Undefined(), nil
}
