package serving

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
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

// Stop strings are bounded as OpenAI bounds them: at most MaxStops, each
// at most MaxStopBytes long.
const (
	MaxStops     = 4
	MaxStopBytes = 256
)

// prefillChunk is the most prompt tokens one model call takes, so that a
// long prompt holds the device for a bounded time before another request
// gets its turn.
const prefillChunk = 64

// Request asks for one completion. Exactly one of Messages (rendered with
// the model's chat template, the assistant's turn opened) and Prompt (raw
// text, encoded as the tokenizer encodes text: BOS first for Llama) is set.
type Request struct {
	Messages []chattemplate.Message
	Prompt   string
	// MaxTokens bounds the completion; the prompt plus MaxTokens must fit
	// the context window. 0 means DefaultMaxTokens, or the room the
	// context window leaves if that is less.
	MaxTokens int
	// DefaultMaxTokens is the budget when MaxTokens is 0; 0 means
	// Config.DefaultMaxTokens.
	DefaultMaxTokens int
	// Temperature (default 1; 0 decodes greedily), TopP (default 1 = no
	// limit) and TopK (0 = no limit) filter sampling as HF does.
	Temperature *float64
	TopP        *float64
	TopK        int
	// Seed makes sampling repeatable; nil draws one.
	Seed *uint64
	// Stop ends the completion where its text first contains one of these
	// (at most MaxStops of at most MaxStopBytes); the stop string is not
	// part of the text.
	Stop []string
}

// Result is a finished completion.
type Result struct {
	Text             string
	FinishReason     string // FinishStop or FinishLength
	PromptTokens     int
	CompletionTokens int // every sampled token, an end token included
	// PromptTokenIDs are the ids the model completed (BOS included as the
	// model adds it); TokenIDs the sampled ids, an end token included.
	PromptTokenIDs, TokenIDs []int
	// TimedOut says the request's deadline ended the generation
	// (FinishReason is then FinishLength).
	TimedOut bool
}

// errDeadline is the cause of a context ended by the request deadline.
var errDeadline = errors.New("request deadline passed")

// Generate completes req with the model in dir. onText, when non-nil,
// receives the completion's text piece by piece as each piece becomes
// final (held back while it might still turn into a stop string or an
// incomplete UTF-8 character); the pieces add up to Result.Text. An error
// from onText ends the generation and is returned. onText is called
// without holding the device, so a slow reader delays only its own
// request.
func (s *Service) Generate(ctx context.Context, dir string, req Request, onText func(string) error) (*Result, error) {
	p, err := s.params(req)
	if err != nil {
		return nil, err
	}
	deadline := s.cfg.Clock().Add(s.cfg.RequestTimeout)
	ctx, cancel := context.WithDeadlineCause(ctx, deadline, errDeadline)
	defer cancel()
	l, release, err := s.model(ctx, dir)
	if err != nil {
		if context.Cause(ctx) == errDeadline {
			return nil, fmt.Errorf("the request deadline (%s, hone serve --request-timeout) passed before model %s was ready: %w",
				s.cfg.RequestTimeout, dir, err)
		}
		return nil, err
	}
	defer release()
	ids, err := l.encode(req)
	if err != nil {
		return nil, err
	}
	n := l.m.Config.MaxPositionEmbeddings
	field := "prompt"
	if len(req.Messages) > 0 {
		field = "messages"
	}
	if len(ids) >= n {
		return nil, invalidf(field, "the prompt is %d tokens; the model's context window is %d: shorten the %s", len(ids), n, field)
	}
	room := n - len(ids)
	if p.MaxNewTokens > room {
		return nil, invalidf("max_tokens", "max_tokens %d does not fit the context window: the prompt is %d tokens and the model's "+
			"context window is %d, so at most %d tokens can follow it; lower max_tokens to %d or less, or shorten the %s",
			p.MaxNewTokens, len(ids), n, room, room, field)
	}
	if p.MaxNewTokens == 0 {
		p.MaxNewTokens = cmp.Or(req.DefaultMaxTokens, s.cfg.DefaultMaxTokens)
		p.MaxNewTokens = min(p.MaxNewTokens, room)
	}
	p.StopIDs = l.stop
	res, err := s.decode(ctx, l, ids, p, req.Stop, deadline, onText)
	if res != nil && res.TimedOut {
		s.log.Warn("generation stopped at the request deadline", "dir", dir, "timeout", s.cfg.RequestTimeout,
			"completion_tokens", res.CompletionTokens, "max_tokens", p.MaxNewTokens)
	}
	return res, err
}

// decode generates after ids in the service's running batch, reading the
// tokens as they come and turning them into text.
func (s *Service) decode(ctx context.Context, l *loaded, ids []int, p generate.Params, stops []string, deadline time.Time,
	onText func(string) error) (*Result, error) {
	sl, err := s.batch.submit(l.m, ids, p)
	if err != nil {
		return nil, fmt.Errorf("%w: %d requests wait already (hone serve --max-queue); retry later", err, s.cfg.MaxQueue)
	}
	defer sl.leave()
	res := &Result{FinishReason: FinishLength, PromptTokens: len(ids), PromptTokenIDs: ids}
	txt := &textStream{tok: l.tok, stops: stops}
	var out []int
	stopped, err := s.read(ctx, sl, deadline, func(id int) (bool, error) {
		out = append(out, id)
		piece, hit := txt.push(id)
		if piece != "" && onText != nil {
			if err := onText(piece); err != nil {
				return false, err
			}
		}
		return hit, nil
	})
	switch {
	case errors.Is(err, errDeadline):
		res.TimedOut = true
	case err != nil:
		return nil, err
	case stopped:
		res.FinishReason = FinishStop
	}
	res.Text, res.CompletionTokens, res.TokenIDs = txt.text, len(out), out
	if len(out) > 0 && slices.Contains(l.stop, out[len(out)-1]) {
		res.FinishReason = FinishStop
	}
	if rest := txt.flush(); rest != "" && onText != nil {
		if err := onText(rest); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// read hands the slot's tokens to use one by one until the generation
// ends, use reports a stop string (stopped), or the request ends; the
// request deadline ends it with errDeadline.
func (s *Service) read(ctx context.Context, sl *slot, deadline time.Time, use func(id int) (stop bool, err error)) (stopped bool, err error) {
	for n := 0; ; {
		toks, ended, err := sl.read(n)
		if len(toks) == 0 {
			if ended {
				return false, err
			}
			select {
			case <-sl.wake:
				continue
			case <-ctx.Done():
				if context.Cause(ctx) == errDeadline {
					return false, errDeadline
				}
				return false, ctx.Err()
			}
		}
		for _, id := range toks {
			if s.cfg.Clock().After(deadline) {
				return false, errDeadline
			}
			n++
			if stop, err := use(id); stop || err != nil {
				return stop, err
			}
		}
	}
}

// params validates the sampling settings and fills defaults.
func (s *Service) params(req Request) (generate.Params, error) {
	p := generate.Params{MaxNewTokens: req.MaxTokens, Temperature: 1, TopP: 1, TopK: req.TopK}
	switch {
	case len(req.Messages) == 0 && req.Prompt == "":
		return p, invalidf("messages", "set messages or a prompt")
	case len(req.Messages) > 0 && req.Prompt != "":
		return p, invalidf("messages", "set messages or a prompt, not both")
	case req.MaxTokens < 0:
		return p, invalidf("max_tokens", "max_tokens %d must not be negative", req.MaxTokens)
	case req.DefaultMaxTokens < 0:
		return p, invalidf("max_tokens", "the default max_tokens %d must not be negative", req.DefaultMaxTokens)
	case req.TopK < 0:
		return p, invalidf("top_k", "top_k %d must not be negative", req.TopK)
	case len(req.Stop) > MaxStops:
		return p, invalidf("stop", "stop: at most %d stop strings, got %d", MaxStops, len(req.Stop))
	}
	if err := checkMessages(req.Messages); err != nil {
		return p, err
	}
	for i, st := range req.Stop {
		if len(st) > MaxStopBytes {
			return p, invalidf("stop", "stop[%d] is %d bytes; stop strings are at most %d bytes", i, len(st), MaxStopBytes)
		}
	}
	if req.Temperature != nil {
		if p.Temperature = *req.Temperature; p.Temperature < 0 || p.Temperature > 2 {
			return p, invalidf("temperature", "temperature %g must be in [0, 2]", p.Temperature)
		}
	}
	if req.TopP != nil {
		if p.TopP = *req.TopP; p.TopP <= 0 || p.TopP > 1 {
			return p, invalidf("top_p", "top_p %g must be in (0, 1]", p.TopP)
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
		return nil, invalidf("messages", "model %s has no chat template: send a prompt instead of messages", l.dir)
	}
	ids, err := generate.EncodeChat(l.tok, l.tmpl, req.Messages)
	if err != nil {
		var raise *chattemplate.RaiseError
		if errors.As(err, &raise) {
			return nil, invalidf("messages", "messages: %s", raise.Message)
		}
		return nil, invalidf("messages", "messages: the chat template failed: %v", err)
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
