package serving

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode/utf8"

	"hone/chattemplate"
	"hone/generate"
	"hone/tokenizer"
)

// Finish reasons, as OpenAI names them.
const (
	FinishStop   = "stop"   // an end-of-generation token or a stop string
	FinishLength = "length" // the token budget or the context window ran out
)

// MaxStops is the most stop strings a request may set.
const MaxStops = 4

// Request asks for one completion. Exactly one of Messages (rendered with
// the model's chat template, the assistant's turn opened) and Prompt (raw
// text, encoded as the tokenizer encodes text: BOS first for Llama) is set.
type Request struct {
	Messages []chattemplate.Message
	Prompt   string
	// MaxTokens bounds the completion; 0 means Config.DefaultMaxTokens.
	MaxTokens int
	// Temperature (default 1; 0 decodes greedily), TopP (default 1 = no
	// limit) and TopK (0 = no limit) filter sampling as HF does.
	Temperature *float64
	TopP        *float64
	TopK        int
	// Seed makes sampling repeatable; nil draws one.
	Seed *uint64
	// Stop ends the completion where its text first contains one of these
	// (at most MaxStops); the stop string is not part of the text.
	Stop []string
}

// Result is a finished completion.
type Result struct {
	Text             string
	FinishReason     string // FinishStop or FinishLength
	PromptTokens     int
	CompletionTokens int // every sampled token, an end token included
}

// Generate completes req with the model in dir. onText, when non-nil,
// receives the completion's text piece by piece as each piece becomes
// final (held back while it might still turn into a stop string or an
// incomplete UTF-8 character); the pieces add up to Result.Text. An error
// from onText ends the generation and is returned.
func (s *Service) Generate(ctx context.Context, dir string, req Request, onText func(string) error) (*Result, error) {
	p, err := s.params(req)
	if err != nil {
		return nil, err
	}
	l, err := s.model(ctx, dir)
	if err != nil {
		return nil, err
	}
	ids, err := l.encode(req)
	if err != nil {
		return nil, err
	}
	if n := l.m.Config.MaxPositionEmbeddings; len(ids) >= n {
		return nil, invalidf("the prompt is %d tokens; the model's context window is %d", len(ids), n)
	}
	p.StopIDs = l.stop

	select {
	case s.running <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.running }()

	txt := &textStream{tok: l.tok, stops: req.Stop}
	var stopped bool
	out, err := generate.Stream(ctx, l.m, ids, p, func(id int) (bool, error) {
		piece, hit := txt.push(id)
		if piece != "" && onText != nil {
			if err := onText(piece); err != nil {
				return false, err
			}
		}
		stopped = hit
		return !hit, nil
	})
	if err != nil {
		return nil, err
	}
	res := &Result{Text: txt.text, FinishReason: FinishLength, PromptTokens: len(ids), CompletionTokens: len(out)}
	if stopped || (len(out) > 0 && slices.Contains(l.stop, out[len(out)-1])) {
		res.FinishReason = FinishStop
	}
	if rest := txt.flush(); rest != "" && onText != nil {
		if err := onText(rest); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// params validates the sampling settings and fills defaults.
func (s *Service) params(req Request) (generate.Params, error) {
	p := generate.Params{MaxNewTokens: req.MaxTokens, Temperature: 1, TopP: 1, TopK: req.TopK}
	switch {
	case len(req.Messages) == 0 && req.Prompt == "":
		return p, invalidf("set messages or a prompt")
	case len(req.Messages) > 0 && req.Prompt != "":
		return p, invalidf("set messages or a prompt, not both")
	case req.MaxTokens < 0:
		return p, invalidf("max_tokens %d must not be negative", req.MaxTokens)
	case req.TopK < 0:
		return p, invalidf("top_k %d must not be negative", req.TopK)
	case len(req.Stop) > MaxStops:
		return p, invalidf("at most %d stop strings, got %d", MaxStops, len(req.Stop))
	}
	if p.MaxNewTokens == 0 {
		p.MaxNewTokens = s.cfg.DefaultMaxTokens
	}
	if req.Temperature != nil {
		if p.Temperature = *req.Temperature; p.Temperature < 0 || p.Temperature > 2 {
			return p, invalidf("temperature %g must be in [0, 2]", p.Temperature)
		}
	}
	if req.TopP != nil {
		if p.TopP = *req.TopP; p.TopP <= 0 || p.TopP > 1 {
			return p, invalidf("top_p %g must be in (0, 1]", p.TopP)
		}
	}
	if req.Seed != nil {
		p.Seed = *req.Seed
	} else {
		p.Seed = rand.Uint64()
	}
	return p, nil
}

// encode returns the prompt's token ids as the model was trained to see
// them.
func (l *loaded) encode(req Request) ([]int, error) {
	if req.Prompt != "" {
		return l.tok.Encode(req.Prompt, true), nil
	}
	if l.tmpl == nil {
		return nil, invalidf("model %s has no chat template: send a prompt instead of messages", l.dir)
	}
	ids, err := generate.EncodeChat(l.tok, l.tmpl, req.Messages)
	if err != nil {
		var raise *chattemplate.RaiseError
		if errors.As(err, &raise) {
			return nil, invalidf("messages: %s", raise.Message)
		}
		return nil, invalidf("messages: the chat template failed: %v", err)
	}
	return ids, nil
}

// textStream turns sampled ids into text pieces that will not change: text
// that might still become a stop string, or an incomplete UTF-8 character,
// is held back until it is decided.
type textStream struct {
	tok   *tokenizer.Tokenizer
	stops []string
	ids   []int
	text  string // the completion so far, cut at a stop string once hit
	sent  int    // bytes of text handed out
	out   string // text[:sent] when it was handed out
}

// push adds id and returns the newly final text, and whether a stop string
// was reached.
func (t *textStream) push(id int) (piece string, stopped bool) {
	t.ids = append(t.ids, id)
	t.text = t.tok.Decode(t.ids, true)
	end := len(t.text)
	for _, s := range t.stops {
		if s == "" {
			continue
		}
		if i := strings.Index(t.text, s); i >= 0 && i < end {
			end, stopped = i, true
		}
	}
	if stopped {
		t.text = t.text[:end]
		return t.take(end), true
	}
	// Hold back a tail that may still grow into a stop string...
	for _, s := range t.stops {
		for k := min(len(s)-1, len(t.text)); k > 0; k-- {
			if strings.HasSuffix(t.text, s[:k]) {
				end = min(end, len(t.text)-k)
				break
			}
		}
	}
	// ... or whose bytes are an incomplete character (decoded as U+FFFD).
	for end > t.sent && strings.HasSuffix(t.text[:end], string(utf8.RuneError)) {
		end -= utf8.RuneLen(utf8.RuneError)
	}
	return t.take(end), false
}

// flush returns what is left to hand out once generation has ended.
func (t *textStream) flush() string { return t.take(len(t.text)) }

// take hands out text[sent:end]. Decoding more ids only appends to the
// text of byte-level tokenizers; should a decoder ever rewrite text already
// handed out, nothing more is handed out.
func (t *textStream) take(end int) string {
	if end <= t.sent || end > len(t.text) || t.text[:t.sent] != t.out {
		return ""
	}
	piece := t.text[t.sent:end]
	t.sent, t.out = end, t.text[:end]
	return piece
}
