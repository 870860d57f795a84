package chattemplate

// Python-compatible JSON: the tojson filter as transformers defines it
// (json.dumps, ensure_ascii=False, insertion key order), and an
// order-preserving decoder for Options.ToolsJSON.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// filterToJSON implements transformers' tojson(x, ensure_ascii=False,
// indent=None, separators=None, sort_keys=False).
func filterToJSON(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), fmt.Errorf("tojson: missing value")
	}
	// Positional parameters follow the Python signature.
	param := func(pos int, name string) (jinja.Value, bool) {
		if v, ok := kwargs[name]; ok {
			return v, true
		}
		if len(args) > pos {
			return args[pos], true
		}
		return jinja.Value{}, false
	}
	enc := pyEncoder{itemSep: ", ", keySep: ": "}
	if v, ok := param(1, "ensure_ascii"); ok {
		enc.ascii = v.IsTruthy()
	}
	if v, ok := param(2, "indent"); ok && !v.IsNone() && !v.IsUndefined() {
		enc.indented = true
		enc.itemSep = ","
		switch {
		case v.IsInt():
			enc.indent = strings.Repeat(" ", int(max(v.AsInt(), 0)))
		case v.IsString():
			enc.indent = v.AsString()
		default:
			return jinja.Undefined(), fmt.Errorf("tojson: indent must be an int or a string")
		}
	}
	if v, ok := param(3, "separators"); ok && !v.IsNone() && !v.IsUndefined() {
		if !v.IsList() || v.AsList().Len() != 2 || !v.AsList().Items[0].IsString() || !v.AsList().Items[1].IsString() {
			return jinja.Undefined(), fmt.Errorf("tojson: separators must be two strings")
		}
		enc.itemSep, enc.keySep = v.AsList().Items[0].AsString(), v.AsList().Items[1].AsString()
	}
	if v, ok := param(4, "sort_keys"); ok {
		enc.sortKeys = v.IsTruthy()
	}
	var b strings.Builder
	if err := enc.encode(&b, args[0], 0); err != nil {
		return jinja.Undefined(), err
	}
	return jinja.NewString(b.String()), nil
}

type pyEncoder struct {
	ascii, sortKeys, indented bool
	indent, itemSep, keySep   string
}

func (e *pyEncoder) newline(b *strings.Builder, depth int) {
	b.WriteByte('\n')
	for range depth {
		b.WriteString(e.indent)
	}
}

func (e *pyEncoder) encode(b *strings.Builder, v jinja.Value, depth int) error {
	switch {
	case v.IsNone():
		b.WriteString("null")
	case v.IsBool():
		b.WriteString(strconv.FormatBool(v.AsBool()))
	case v.IsInt():
		b.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		b.WriteString(pyFloatJSON(v.AsFloat()))
	case v.IsString():
		writePyJSONString(b, v.AsString(), e.ascii)
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteString(e.itemSep)
			}
			if e.indented {
				e.newline(b, depth+1)
			}
			if err := e.encode(b, it, depth+1); err != nil {
				return err
			}
		}
		if e.indented {
			e.newline(b, depth)
		}
		b.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		keys := d.OrderedKeys()
		if len(keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		if e.sortKeys {
			keys = append([]string(nil), keys...)
			sortStrings(keys)
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(e.itemSep)
			}
			if e.indented {
				e.newline(b, depth+1)
			}
			writePyJSONString(b, k, e.ascii)
			b.WriteString(e.keySep)
			val, _ := d.Get(k)
			if err := e.encode(b, val, depth+1); err != nil {
				return err
			}
		}
		if e.indented {
			e.newline(b, depth)
		}
		b.WriteByte('}')
	case v.IsUndefined():
		// json.dumps cannot serialise jinja2's Undefined; Python raises.
		return fmt.Errorf("tojson: Object of type Undefined is not JSON serializable")
	default:
		return fmt.Errorf("tojson: value of type %s is not JSON serializable", v.String())
	}
	return nil
}

// sortStrings sorts by code point, as Python sorts str keys.
func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// writePyJSONString quotes s like Python's json encoder: short escapes for
// " \ \n \r \t \b \f, \u00XX (lowercase hex) for other control characters,
// and, only when ascii is set, \uXXXX (surrogate pairs) for non-ASCII. Go's
// encoding/json differs: it also escapes U+2028/U+2029 and uses \u0008.
func writePyJSONString(b *strings.Builder, s string, ascii bool) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || (ascii && r == 0x7f):
				fmt.Fprintf(b, `\u%04x`, r)
			case ascii && r > 0x7f:
				if r > 0xffff {
					r -= 0x10000
					fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
				} else {
					fmt.Fprintf(b, `\u%04x`, r)
				}
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyFloatJSON formats f as Python's float.__repr__ (which json.dumps uses):
// shortest round-trip digits, positional notation for exponents in
// [-4, 16), otherwise d.ddde+XX; always a ".0" for integral values.
func pyFloatJSON(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return pyFloatRepr(f)
}

func pyFloatRepr(f float64) string {
	if f == 0 {
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // e.g. -1.2345e+06
	sign := ""
	if s[0] == '-' {
		sign, s = "-", s[1:]
	}
	mant, expStr, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		return fmt.Sprintf("%s%se%s%02d", sign, m, es, exp)
	}
	if exp < 0 {
		return sign + "0." + strings.Repeat("0", -exp-1) + digits
	}
	if len(digits) <= exp+1 {
		return sign + digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	}
	return sign + digits[:exp+1] + "." + digits[exp+1:]
}

// decodeOrderedJSON decodes JSON into engine values, keeping object key
// order (Python's json.loads does) and integer/float distinction.
func decodeOrderedJSON(raw []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return jinja.Undefined(), err
	}
	if dec.More() {
		return jinja.Undefined(), fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			var items []jinja.Value
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return jinja.NewList(items), nil
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				d.AsDict().Set(kt.(string), v)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return d, nil
		}
		return jinja.Undefined(), fmt.Errorf("unexpected %v", t)
	case json.Number:
		return jinja.FromGoValue(t), nil
	case string:
		if !utf8.ValidString(t) {
			return jinja.Undefined(), fmt.Errorf("invalid UTF-8 in JSON string")
		}
		return jinja.NewString(t), nil
	default:
		return jinja.FromGoValue(t), nil
	}
}

// printString is Python's str() for a value passed to raise_exception.
func printString(v jinja.Value) string { return pyStr(v) }

// pyStr is Python's str(v) as Jinja2 prints it ("" for undefined).
func pyStr(v jinja.Value) string {
	switch {
	case v.IsString():
		return v.AsString()
	case v.IsUndefined():
		return ""
	}
	return pyRepr(v)
}

// pyRepr is Python's repr(v) for template values.
func pyRepr(v jinja.Value) string {
	switch {
	case v.IsNone():
		return "None"
	case v.IsBool():
		if v.AsBool() {
			return "True"
		}
		return "False"
	case v.IsInt():
		return strconv.FormatInt(v.AsInt(), 10)
	case v.IsFloat():
		f := v.AsFloat()
		switch {
		case math.IsNaN(f):
			return "nan"
		case math.IsInf(f, 1):
			return "inf"
		case math.IsInf(f, -1):
			return "-inf"
		}
		return pyFloatRepr(f)
	case v.IsString():
		return pyStrRepr(v.AsString())
	case v.IsList():
		parts := make([]string, len(v.AsList().Items))
		for i, it := range v.AsList().Items {
			parts[i] = pyRepr(it)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case v.IsDict():
		d := v.AsDict()
		parts := make([]string, 0, d.Len())
		for _, k := range d.OrderedKeys() {
			val, _ := d.Get(k)
			parts = append(parts, pyStrRepr(k)+": "+pyRepr(val))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case v.IsUndefined():
		return "Undefined"
	}
	return v.String()
}

// pyStrRepr quotes s like Python's repr: single quotes unless s contains
// ' and no ", backslash escapes for \\, the quote and control characters.
func pyStrRepr(s string) string {
	q := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == '\\' || r == rune(q):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}
