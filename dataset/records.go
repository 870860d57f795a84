package dataset

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"hone/chattemplate"
)

// record is one valid JSONL line of chat or instruct data.
type record struct {
	file     string
	line     int
	rowGroup int // a table row: its row group and row (line is 0)
	row      int64
	msgs     []chattemplate.Message // chat
	prompt   string                 // instruct
	response string                 // instruct
}

// at places p at the record.
func (r record) at(p Problem) Problem {
	p.File, p.Line, p.RowGroup, p.Row = r.file, r.line, r.rowGroup, r.row
	return p
}

// dataFiles lists the files making up path: the file itself, or for a folder
// its *.jsonl (chat, instruct) or *.txt (cpt) files in name order.
func dataFiles(path string, task Task) ([]string, []Problem, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: data %w", err)
	}
	if !st.IsDir() {
		return []string{path}, nil, nil
	}
	ext := ".jsonl"
	if task == CPT {
		ext = ".txt"
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: data %w", err)
	}
	var files []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(strings.ToLower(e.Name()), ext) {
			files = append(files, filepath.Join(path, e.Name()))
		}
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, []Problem{{File: path, Rule: RuleNoFiles, Message: fmt.Sprintf("the folder holds no %s files", ext)}}, nil
	}
	return files, nil, nil
}

// readJSONL calls fn for every non-blank line of file (1-based line numbers),
// and reports an empty file. progress receives the bytes read.
func readJSONL(file string, fn func(line int, b []byte) error, progress func(int64)) ([]Problem, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	line, nonBlank := 0, 0
	for {
		b, err := r.ReadBytes('\n')
		if len(b) > 0 {
			line++
			progress(int64(len(b)))
			b = bytes.TrimRight(b, "\r\n")
			if len(bytes.TrimSpace(b)) > 0 {
				nonBlank++
				if err := fn(line, b); err != nil {
					return nil, err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dataset: %s: %w", file, err)
		}
	}
	if nonBlank == 0 {
		return []Problem{{File: file, Rule: RuleEmptyFile, Message: "the file holds no records"}}, nil
	}
	return nil, nil
}

// lineChecker collects the problems of one line.
type lineChecker struct {
	file     string
	line     int
	rowGroup int // a table row: its row group and row (line is 0)
	row      int64
	problems []Problem
}

func (c *lineChecker) add(field, rule, format string, a ...any) {
	c.problems = append(c.problems, Problem{File: c.file, Line: c.line, Field: field, Rule: rule, Message: fmt.Sprintf(format, a...)})
}

// object parses b as a JSON object; nil after reporting a problem.
func (c *lineChecker) object(field string, b []byte) map[string]json.RawMessage {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		if field == "" {
			if json.Valid(b) {
				c.add(field, RuleWrongType, "a line must be a JSON object, got %s", jsonKind(b))
			} else {
				c.add(field, RuleInvalidJSON, "not valid JSON")
			}
		} else {
			c.add(field, RuleWrongType, "must be a JSON object, got %s", jsonKind(b))
		}
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		c.add(field, RuleInvalidJSON, "not valid JSON: %v", err)
		return nil
	}
	return m
}

// str reads a JSON string value; ok false after reporting a problem.
func (c *lineChecker) str(field string, raw json.RawMessage, nonEmpty bool) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		c.add(field, RuleWrongType, "must be a string, got %s", jsonKind(raw))
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		c.add(field, RuleInvalidJSON, "%v", err)
		return "", false
	}
	if nonEmpty && strings.TrimSpace(s) == "" {
		c.add(field, RuleEmptyContent, "must not be empty")
		return "", false
	}
	return s, true
}

// keys reports missing and unexpected keys of m; allowed lists the optional ones.
func (c *lineChecker) keys(prefix string, m map[string]json.RawMessage, required, allowed []string) bool {
	ok := true
	for _, k := range required {
		if _, has := m[k]; !has {
			c.add(prefix+k, RuleMissingKey, "missing key %q", k)
			ok = false
		}
	}
	var extra []string
	for k := range m {
		if !slices.Contains(required, k) && !slices.Contains(allowed, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	for _, k := range extra {
		c.add(prefix+k, RuleExtraKey, "unexpected key %q (allowed: %s)", k, strings.Join(append(slices.Clone(required), allowed...), ", "))
		ok = false
	}
	return ok
}

func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// openLine checks that a line is UTF-8 holding a JSON object and returns
// the object, or nil with the problem recorded in the checker.
func openLine(file string, line int, b []byte) (*lineChecker, record, map[string]json.RawMessage) {
	c := &lineChecker{file: file, line: line}
	rec := record{file: file, line: line}
	if !utf8.Valid(b) {
		c.add("", RuleInvalidUTF8, "the line is not valid UTF-8 (at byte %d)", invalidUTF8At(b))
		return c, rec, nil
	}
	return c, rec, c.object("", b)
}

// parseChat validates one chat line.
func parseChat(file string, line int, b []byte) (record, []Problem) {
	c, rec, top := openLine(file, line, b)
	if top == nil {
		return rec, c.problems
	}
	c.keys("", top, []string{"messages"}, nil)
	raw, has := top["messages"]
	if !has {
		return rec, c.problems
	}
	raw = bytes.TrimSpace(raw)
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' {
		c.add("messages", RuleWrongType, "must be an array of messages, got %s", jsonKind(raw))
		return rec, c.problems
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		c.add("messages", RuleInvalidJSON, "%v", err)
		return rec, c.problems
	}
	if len(items) == 0 {
		c.add("messages", RuleNoAssistant, "messages is empty")
		return rec, c.problems
	}
	roleOK := true
	for i, it := range items {
		field := fmt.Sprintf("messages[%d]", i)
		m := c.object(field, it)
		if m == nil {
			roleOK = false
			continue
		}
		c.keys(field+".", m, []string{"role", "content"}, nil)
		var msg chattemplate.Message
		if r, has := m["role"]; has {
			if s, ok := c.str(field+".role", r, false); ok {
				switch s {
				case "system", "user", "assistant":
					msg.Role = s
				default:
					c.add(field+".role", RuleInvalidRole, "role must be system, user or assistant, got %q", s)
				}
			}
		}
		if msg.Role == "" {
			roleOK = false
		}
		if r, has := m["content"]; has {
			msg.Content, _ = c.str(field+".content", r, true)
		}
		rec.msgs = append(rec.msgs, msg)
	}
	if roleOK {
		checkRoleOrder(c, rec.msgs)
	}
	return rec, c.problems
}

// checkRoleOrder applies the chat rules on roles.
func checkRoleOrder(c *lineChecker, msgs []chattemplate.Message) {
	k := 0 // index among the non-system messages
	for i, m := range msgs {
		field := fmt.Sprintf("messages[%d].role", i)
		if m.Role == "system" {
			if i != 0 {
				c.add(field, RuleRoleOrder, "system is allowed only as the first message")
				return
			}
			continue
		}
		want := "user"
		if k%2 == 1 {
			want = "assistant"
		}
		if m.Role != want {
			c.add(field, RuleRoleOrder, "expected %s here (user and assistant alternate, starting with user), got %s", want, m.Role)
			return
		}
		k++
	}
	if k < 2 {
		c.add("messages", RuleNoAssistant, "the conversation has no assistant message")
		return
	}
	if msgs[len(msgs)-1].Role != "assistant" {
		c.add(fmt.Sprintf("messages[%d].role", len(msgs)-1), RuleLastAssistant, "the last message must be from the assistant")
	}
}

// parseInstruct validates one instruct line.
func parseInstruct(file string, line int, b []byte) (record, []Problem) {
	c, rec, top := openLine(file, line, b)
	if top == nil {
		return rec, c.problems
	}
	respKey := "response"
	_, hasResp := top["response"]
	_, hasComp := top["completion"]
	switch {
	case hasResp && hasComp:
		c.add("completion", RuleExtraKey, "give either response or completion, not both")
		return rec, c.problems
	case hasComp:
		respKey = "completion"
	}
	c.keys("", top, []string{"prompt", respKey}, nil)
	if v, has := top["prompt"]; has {
		rec.prompt, _ = c.str("prompt", v, true)
	}
	if v, has := top[respKey]; has {
		rec.response, _ = c.str(respKey, v, true)
	}
	return rec, c.problems
}

// invalidUTF8At returns the offset of the first invalid UTF-8 byte of b.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}
