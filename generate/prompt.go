package generate

import (
	"context"
	"slices"
	"strings"

	"hone/chattemplate"
	"hone/engine"
	"hone/tokenizer"
)

// Prompter formats prompts for a model exactly as its training data was
// formatted (the chat template for chat models, BOS + text otherwise),
// and turns completions back into text. Safe for concurrent use.
type Prompter struct {
	tok  *tokenizer.Tokenizer
	tmpl *chattemplate.Template // nil: plain text
	stop []int
}

// NewPrompter loads the tokenizer (and, when chat is set, the chat
// template) of the HF model directory dir. Generation stops at any end id of
// the tokenizer files or config.json.
func NewPrompter(dir string, chat bool) (*Prompter, error) {
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	p := &Prompter{tok: tok, stop: slices.Clone(tok.Special().EOSIDs)}
	if cfg, err := engine.LoadConfig(dir); err == nil {
		for _, id := range cfg.EOSTokenID {
			if !slices.Contains(p.stop, id) {
				p.stop = append(p.stop, id)
			}
		}
	}
	if chat {
		if p.tmpl, err = chattemplate.FromModelDir(dir); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Encode returns the token ids the model completes for prompt.
func (p *Prompter) Encode(prompt string) ([]int, error) {
	if p.tmpl == nil {
		return p.tok.Encode(prompt, true), nil
	}
	return EncodeChat(p.tok, p.tmpl, []chattemplate.Message{{Role: "user", Content: prompt}})
}

// EncodeChat renders msgs with tmpl, the assistant's generation prompt
// appended, and encodes the text as chat training data is encoded: BOS
// first only when the tokenizer adds one and the template did not write it.
func EncodeChat(tok *tokenizer.Tokenizer, tmpl *chattemplate.Template, msgs []chattemplate.Message) ([]int, error) {
	text, err := tmpl.Render(msgs, chattemplate.Options{AddGenerationPrompt: true})
	if err != nil {
		return nil, err
	}
	ids := tok.Encode(text, false)
	if sp := tok.Special(); sp.AddBOS && sp.BOS >= 0 && !strings.HasPrefix(text, sp.BOSToken) {
		ids = append([]int{sp.BOS}, ids...)
	}
	return ids, nil
}

// Completion is a finished completion of a prompt.
type Completion struct {
	Text      string // special tokens such as the end-of-turn id removed
	PromptIDs []int  // the ids the model completed, BOS included as the model adds it
	IDs       []int  // the sampled ids, a stop token included
	Stopped   bool   // a stop id ended it (otherwise the budget or the context window)
}

// Complete samples a completion of prompt and returns its text (special
// tokens such as the end-of-turn id removed). params.StopIDs defaults to the
// model's end ids.
func (p *Prompter) Complete(ctx context.Context, m *engine.Model, prompt string, params Params) (string, error) {
	c, err := p.Generate(ctx, m, prompt, params)
	if err != nil {
		return "", err
	}
	return c.Text, nil
}

// Generate is Complete with the token ids of the prompt and the completion.
func (p *Prompter) Generate(ctx context.Context, m *engine.Model, prompt string, params Params) (*Completion, error) {
	ids, err := p.Encode(prompt)
	if err != nil {
		return nil, err
	}
	if params.StopIDs == nil {
		params.StopIDs = p.stop
	}
	out, err := Complete(ctx, m, ids, params)
	if err != nil {
		return nil, err
	}
	stopped := len(out) > 0 && slices.Contains(params.StopIDs, out[len(out)-1])
	return &Completion{Text: p.tok.Decode(out, true), PromptIDs: ids, IDs: out, Stopped: stopped}, nil
}
