// Package chattemplate renders a model's Hugging Face chat_template.
//
// Contract: for the inputs it accepts, Render produces output byte-identical
// to transformers' apply_chat_template(..., tokenize=False), which renders
// with Python Jinja2 (ImmutableSandboxedEnvironment, trim_blocks=True,
// lstrip_blocks=True, the loopcontrols extension, a no-op {% generation %}
// tag, the raise_exception and strftime_now globals, and a tojson filter
// that is plain json.dumps with ensure_ascii=False). The template context is
// what apply_chat_template passes: messages, tools (none when absent),
// documents (none), add_generation_prompt, bos_token, eos_token, plus
// Options.Extra.
//
// Rendering uses github.com/ardanlabs/jinja. Where that engine differs from
// Jinja2 on real chat templates, this package corrects it: see compat.go.
// chattemplate/testdata/renders.json, produced by
// tools/reference/chattemplate/render_fixtures.py with real Jinja2, pins the
// expected bytes for every known template.
//
// Key order: JSON objects keep insertion order in Python, so tools are
// rendered in the order given. Go maps have no order; for []map[string]any
// keys are rendered sorted. Use Options.ToolsJSON to keep the order of a
// JSON document (e.g. a dataset line) exactly.
//
// A *Template is immutable after Parse and safe for concurrent Render calls:
// every Render builds its own scope and its own stateful globals.
package chattemplate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one chat turn as apply_chat_template receives it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Options carries the non-message template variables.
type Options struct {
	// AddGenerationPrompt appends the assistant header for inference.
	AddGenerationPrompt bool
	// Tools are function schemas; nil means no tools (the template sees
	// tools = none, as transformers passes tools=None). Map keys render in
	// sorted order; use ToolsJSON to control key order.
	Tools []map[string]any
	// ToolsJSON, when non-empty, is a JSON array used instead of Tools, with
	// object keys kept in document order (as Python's json.loads keeps them).
	ToolsJSON json.RawMessage
	// BOSToken and EOSToken are the bos_token/eos_token variables. When
	// empty, the tokens FromModelDir found are used.
	BOSToken, EOSToken string
	// Now is the clock behind strftime_now; default time.Now.
	Now func() time.Time
	// Extra holds further variables (e.g. enable_thinking, date_string).
	// They override the standard ones of the same name.
	Extra map[string]any
}

// ErrNoTemplate reports a tokenizer_config.json without a chat_template.
var ErrNoTemplate = errors.New("chattemplate: no chat_template")

// RaiseError is returned when a template calls raise_exception(msg).
type RaiseError struct{ Message string }

func (e *RaiseError) Error() string { return "chat template raised: " + e.Message }

// Template is a compiled chat template.
type Template struct {
	src      string
	compiled *jinja.Template
	bos, eos string
}

// Parse compiles src. Errors name the position (line) in the template.
func Parse(src string) (*Template, error) {
	rewritten, err := rewrite(src)
	if err != nil {
		return nil, fmt.Errorf("chattemplate: parse: %w", err)
	}
	c, err := jinja.Compile(rewritten)
	if err != nil {
		// The rewrite keeps line structure, so the engine's line numbers
		// refer to the caller's source too.
		return nil, fmt.Errorf("chattemplate: parse: %w", err)
	}
	return &Template{src: src, compiled: c}, nil
}

// Source returns the template text as given to Parse.
func (t *Template) Source() string { return t.src }

// BOSToken returns the bos_token found by FromModelDir ("" otherwise).
func (t *Template) BOSToken() string { return t.bos }

// EOSToken returns the eos_token found by FromModelDir ("" otherwise).
func (t *Template) EOSToken() string { return t.eos }

// FromModelDir loads the chat template of the Hugging Face model in dir from
// its tokenizer_config.json, along with its bos_token and eos_token.
func FromModelDir(dir string) (*Template, error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("chattemplate: %w", err)
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("chattemplate: %s: %w", path, err)
	}
	src, err := chatTemplateField(cfg.ChatTemplate)
	if err != nil {
		return nil, fmt.Errorf("chattemplate: %s: %w", path, err)
	}
	if src == "" {
		return nil, fmt.Errorf("%w in %s: this looks like a base model; use the instruct or cpt task, or supply a chat template", ErrNoTemplate, path)
	}
	t, err := Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.bos, t.eos = tokenField(cfg.BOS), tokenField(cfg.EOS)
	return t, nil
}

// chatTemplateField decodes chat_template: a string, or a list of named
// templates (transformers' multi-template form) from which "default" is used.
func chatTemplateField(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("chat_template is neither a string nor a list of {name, template}: %w", err)
	}
	for _, e := range list {
		if e.Name == "default" {
			return e.Template, nil
		}
	}
	return "", nil
}

// tokenField decodes a special token given as a string or as an AddedToken
// object {"content": ...}.
func tokenField(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}

// errEnginePanic marks a panic of the template engine turned into an error.
var errEnginePanic = errors.New("internal error of the template engine")

// Render renders msgs with opt. A panic of the template engine is returned
// as an error: templates come with models, and one that trips a bug must
// fail the request or run, not the process.
func (t *Template) Render(msgs []Message, opt Options) (out string, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, err = "", fmt.Errorf("chattemplate: render: %w (please report it with the model's chat template): %v", errEnginePanic, v)
		}
	}()
	data, err := t.context(msgs, opt)
	if err != nil {
		return "", err
	}
	out, err = t.compiled.RenderValues(data)
	if err != nil {
		var re *RaiseError
		if errors.As(err, &re) {
			return "", re
		}
		return "", fmt.Errorf("chattemplate: render: %w", err)
	}
	return out, nil
}

// context builds the variables apply_chat_template passes to the template.
func (t *Template) context(msgs []Message, opt Options) (map[string]jinja.Value, error) {
	ms := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		// Build the dict by hand: role before content, as Python's dict
		// from the message keeps them (FromGoValue would sort keys).
		d := jinja.NewDict()
		d.AsDict().Set("role", jinja.NewString(m.Role))
		d.AsDict().Set("content", jinja.NewString(m.Content))
		ms[i] = d
	}
	tools := jinja.None()
	switch {
	case len(opt.ToolsJSON) > 0:
		v, err := decodeOrderedJSON(opt.ToolsJSON)
		if err != nil {
			return nil, fmt.Errorf("chattemplate: ToolsJSON: %w", err)
		}
		tools = v
	case opt.Tools != nil:
		items := make([]jinja.Value, len(opt.Tools))
		for i, tool := range opt.Tools {
			items[i] = jinja.FromGoValue(tool)
		}
		tools = jinja.NewList(items)
	}
	bos, eos := opt.BOSToken, opt.EOSToken
	if bos == "" {
		bos = t.bos
	}
	if eos == "" {
		eos = t.eos
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(ms),
		"tools":                 tools,
		"documents":             jinja.None(),
		"add_generation_prompt": jinja.NewBool(opt.AddGenerationPrompt),
		"bos_token":             jinja.NewString(bos),
		"eos_token":             jinja.NewString(eos),
	}
	addGlobals(data, now)
	for k, v := range opt.Extra {
		data[k] = jinja.FromGoValue(v)
	}
	return data, nil
}
