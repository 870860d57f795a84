package chattemplate

// Token-level rewriting of tag bodies (see compat.go for why).

import (
	"fmt"
	"strings"
)

type tokKind int

const (
	tkSpace tokKind = iota
	tkString
	tkName
	tkNumber
	tkOp
	tkOpen
	tkClose
)

type tok struct {
	kind tokKind
	text string // output text
}

// tokenizeTag splits a tag body into tokens. String literals are re-encoded
// for the engine (decodePyString + quoteLiteral); overridden filter names
// get the hone_ prefix.
func tokenizeTag(s string) ([]tok, error) {
	var toks []tok
	for i := 0; i < len(s); {
		c := s[i]
		j := i + 1
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			for j < len(s) && strings.IndexByte(" \t\n\r", s[j]) >= 0 {
				j++
			}
			toks = append(toks, tok{tkSpace, s[i:j]})
		case c == '\'' || c == '"':
			j = stringEnd(s, i)
			if j-i < 2 || s[j-1] != c {
				return nil, fmt.Errorf("unterminated string literal")
			}
			lit := s[i+1 : j-1]
			toks = append(toks, tok{tkString, quoteLiteral(decodePyString(lit), strings.Count(lit, "\n"))})
		case isIdentByte(c) && !(c >= '0' && c <= '9'):
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			name := s[i:j]
			if overriddenFilters[name] && lastNonSpace(toks).text == "|" {
				name = filterPrefix + name
			}
			toks = append(toks, tok{tkName, name})
		case c >= '0' && c <= '9':
			for j < len(s) && (isIdentByte(s[j]) || s[j] == '.' && j+1 < len(s) && s[j+1] >= '0' && s[j+1] <= '9') {
				j++
			}
			toks = append(toks, tok{tkNumber, s[i:j]})
		case c == '(' || c == '[' || c == '{':
			toks = append(toks, tok{tkOpen, s[i:j]})
		case c == ')' || c == ']' || c == '}':
			toks = append(toks, tok{tkClose, s[i:j]})
		default:
			if j < len(s) {
				switch s[i : j+1] {
				case "==", "!=", "<=", ">=", "//", "**":
					j++
				}
			}
			toks = append(toks, tok{tkOp, s[i:j]})
		}
		i = j
	}
	return toks, nil
}

func lastNonSpace(toks []tok) tok {
	for i := len(toks) - 1; i >= 0; i-- {
		if toks[i].kind != tkSpace {
			return toks[i]
		}
	}
	return tok{}
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// rewriteTag rewrites one tag body.
func rewriteTag(body string, block bool) (string, error) {
	toks, err := tokenizeTag(body)
	if err != nil {
		return "", err
	}
	units, rest, err := group(toks, true)
	if err != nil {
		return "", err
	}
	if len(rest) > 0 {
		return "", fmt.Errorf("unbalanced %q", rest[0].text)
	}
	return rewriteLevel(units, block), nil
}

// unit is a token, or a whole bracket group already rewritten (kind tkOpen).
type unit struct {
	kind tokKind
	text string
	// For bracket groups: the opening bracket and whether it holds a
	// top-level ":" (a slice, or a dict literal).
	open  byte
	colon bool
}

// group collects tokens of one bracket level into units, rewriting nested
// groups; it returns at the first unmatched closer.
func group(toks []tok, top bool) ([]unit, []tok, error) {
	var units []unit
	for len(toks) > 0 {
		t := toks[0]
		toks = toks[1:]
		switch t.kind {
		case tkClose:
			if top {
				return nil, nil, fmt.Errorf("unbalanced %q", t.text)
			}
			return units, append([]tok{t}, toks...), nil
		case tkOpen:
			inner, rest, err := group(toks, false)
			if err != nil {
				return nil, nil, err
			}
			if len(rest) == 0 {
				return nil, nil, fmt.Errorf("unclosed %q", t.text)
			}
			colon := false
			for _, u := range inner {
				colon = colon || u.kind == tkOp && u.text == ":"
			}
			units = append(units, unit{kind: tkOpen, text: t.text + rewriteLevel(inner, false) + rest[0].text, open: t.text[0], colon: colon})
			toks = rest[1:]
		default:
			units = append(units, unit{kind: t.kind, text: t.text})
		}
	}
	return units, nil, nil
}

// stopWords end a "+" operand: operators and keywords binding more loosely
// than "+" in Jinja2's grammar, and statement keywords.
var stopWords = map[string]bool{
	",": true, ":": true, "=": true, "==": true, "!=": true, "<": true, ">": true,
	"<=": true, ">=": true, "|": false,
	"and": true, "or": true, "not": true, "if": true, "else": true, "elif": true,
	"in": true, "for": true, "set": true, "recursive": true, "macro": true,
	"call": true, "filter": true, "with": true,
}

// rewriteLevel turns every binary "a + b" at this level into
// (a)|hone_add((b)), respecting precedence: operands are the maximal runs
// between stop words, split at binary + and -, which associate left.
func rewriteLevel(units []unit, block bool) string {
	units = wrapSubscripts(units)
	var out strings.Builder
	var seg []unit
	flush := func() {
		out.WriteString(rewriteChain(seg))
		seg = seg[:0]
	}
	firstWord := block // the statement keyword of a block tag
	for i, u := range units {
		stop := (u.kind == tkOp || u.kind == tkName) && stopWords[u.text]
		if u.kind == tkName && firstWord {
			stop = true // statement keyword
		}
		if u.kind != tkSpace {
			firstWord = false
		}
		// "is not": the not belongs to the test.
		if stop && u.text == "not" && prevWord(units[:i]) == "is" {
			stop = false
		}
		if stop {
			flush()
			out.WriteString(u.text)
			continue
		}
		seg = append(seg, u)
	}
	flush()
	return out.String()
}

func prevWord(units []unit) string {
	for i := len(units) - 1; i >= 0; i-- {
		if units[i].kind != tkSpace {
			return units[i].text
		}
	}
	return ""
}

// rewriteChain rewrites one operand chain x0 op1 x1 op2 x2 ...
func rewriteChain(seg []unit) string {
	var operands []string
	var ops []string
	var cur strings.Builder
	operandStarted := false
	for _, u := range seg {
		binary := u.kind == tkOp && (u.text == "+" || u.text == "-") && operandStarted
		if binary {
			operands = append(operands, cur.String())
			ops = append(ops, u.text)
			cur.Reset()
			operandStarted = false
			continue
		}
		cur.WriteString(u.text)
		switch u.kind {
		case tkSpace:
		case tkOp:
			// After ".", "|", "~", "*" and friends an operand is still open.
			operandStarted = false
		default:
			operandStarted = true
		}
	}
	operands = append(operands, cur.String())
	if len(ops) == 0 {
		return operands[0]
	}
	// Keep leading/trailing spaces outside the parentheses.
	lead := operands[0][:len(operands[0])-len(strings.TrimLeft(operands[0], " \t\n\r"))]
	acc := strings.TrimLeft(operands[0], " \t\n\r")
	for k, op := range ops {
		if op == "+" {
			acc = "(" + acc + ")|" + filterPrefix + "add((" + operands[k+1] + "))"
		} else {
			acc = acc + "-" + operands[k+1]
		}
	}
	return lead + acc
}

// wrapSubscripts turns each subscript x[k] (not a slice) into
// (x|hone_item(k)). The engine reads "abc"['text'] and list['key'] as
// index 0 and lets undefined['k'] pass; Jinja2 yields undefined for the
// first two and raises for the last.
func wrapSubscripts(units []unit) []unit {
	out := make([]unit, 0, len(units))
	chain := -1 // index in out where the current postfix chain starts
	prev := ""  // previous non-space unit text
	for _, u := range units {
		switch {
		case u.kind == tkSpace:
			out = append(out, u)
			continue
		case u.kind == tkOpen && u.open == '[' && chain >= 0 && !u.colon:
			var b strings.Builder
			b.WriteString("(")
			for _, c := range out[chain:] {
				b.WriteString(c.text)
			}
			b.WriteString("|" + filterPrefix + "item(" + u.text[1:len(u.text)-1] + "))")
			out = append(out[:chain], unit{kind: tkOpen, text: b.String(), open: '('})
		case u.kind == tkOpen && chain >= 0 && u.open == '(':
			out = append(out, u) // call: still the same chain
		case u.kind == tkName && prev == ".":
			out = append(out, u) // attribute: still the same chain
		case u.kind == tkName && (stopWords[u.text] || u.text == "is" || prev == "|" || prev == "is"):
			out = append(out, u) // keyword, filter or test name
			chain = -1
		case u.kind == tkOp && u.text == ".":
			out = append(out, u)
		case u.kind == tkOp:
			out = append(out, u)
			chain = -1
		default: // name, literal or bracket group starting a primary
			out = append(out, u)
			chain = len(out) - 1
		}
		prev = u.text
	}
	return out
}
