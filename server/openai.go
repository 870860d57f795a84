package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"hone/client"
	"hone/serving"
)

// The OpenAI-compatible surface: /v1/models, /v1/chat/completions and
// /v1/completions, translated to and from the native generate call. Only
// what the native API can honour is accepted; requests for anything else
// (n > 1, log probabilities, tools, penalties, echo, suffix) are refused
// with 400 rather than silently ignored. Unknown fields are ignored, as
// OpenAI-compatible servers do. A bad request's error names the field at
// fault in "param". A completion stopped by the request deadline (hone
// serve --request-timeout) ends as one whose budget ran out: the text so
// far with finish_reason "length".

// paramError is a bad request that names the request field at fault, as
// OpenAI's error "param" does.
type paramError struct {
	param string
	err   error
}

func (e paramError) Error() string { return e.err.Error() }
func (e paramError) Unwrap() error { return e.err }

func badParam(param, msg string) error { return paramError{param, badRequest{msg}} }

// oaiParam is the request field err names, or "".
func oaiParam(err error) string {
	var p paramError
	if errors.As(err, &p) {
		return p.param
	}
	return serving.InvalidParam(err)
}

// oaiStop is OpenAI's stop: a string or a list of strings.
type oaiStop []string

func (s *oaiStop) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = oaiStop{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop: want a string or a list of strings")
	}
	*s = many
	return nil
}

// oaiContent is a message's content: a string or a list of text parts.
type oaiContent string

func (c *oaiContent) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*c = oaiContent(one)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content: want a string or a list of text parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return fmt.Errorf("content part of type %q: only text is supported", p.Type)
		}
		sb.WriteString(p.Text)
	}
	*c = oaiContent(sb.String())
	return nil
}

// oaiCommon holds the fields chat and text completions share.
type oaiCommon struct {
	Model         string   `json:"model"`
	MaxTokens     *int     `json:"max_tokens"`
	Temperature   *float64 `json:"temperature"`
	TopP          *float64 `json:"top_p"`
	TopK          int      `json:"top_k"` // an extension, as other OpenAI-compatible servers offer
	Seed          *int64   `json:"seed"`
	Stop          oaiStop  `json:"stop"`
	N             *int     `json:"n"`
	Stream        bool     `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	Logprobs         json.RawMessage `json:"logprobs"`
	// budgetParam names the field the token budget came from.
	budgetParam string
}

type oaiChatRequest struct {
	oaiCommon
	// Messages are decoded one by one in native, so that an error names
	// the message at fault (messages[2].content).
	Messages            []json.RawMessage `json:"messages"`
	MaxCompletionTokens *int              `json:"max_completion_tokens"`
	Tools               json.RawMessage   `json:"tools"`
}

type oaiCompletionRequest struct {
	oaiCommon
	Prompt json.RawMessage `json:"prompt"`
	Echo   bool            `json:"echo"`
	Suffix string          `json:"suffix"`
	BestOf *int            `json:"best_of"`
}

// native translates the shared fields; maxTokens is the request's budget.
func (c *oaiCommon) native(maxTokens *int) (client.GenerateRequest, error) {
	req := client.GenerateRequest{Model: c.Model, Temperature: c.Temperature, TopP: c.TopP, TopK: c.TopK, Stop: c.Stop}
	switch {
	case c.N != nil && *c.N != 1:
		return req, badParam("n", fmt.Sprintf("n=%d: only n=1 is supported", *c.N))
	case c.PresencePenalty != nil && *c.PresencePenalty != 0, c.FrequencyPenalty != nil && *c.FrequencyPenalty != 0:
		return req, badRequest{"presence_penalty and frequency_penalty are not supported"}
	case len(c.Logprobs) > 0 && string(c.Logprobs) != "null" && string(c.Logprobs) != "false":
		return req, badParam("logprobs", "logprobs are not supported")
	case maxTokens != nil && *maxTokens < 1:
		return req, badParam(c.budgetParam, fmt.Sprintf("%s %d must be at least 1", c.budgetParam, *maxTokens))
	}
	if maxTokens != nil {
		req.MaxTokens = *maxTokens
	}
	if c.Seed != nil {
		seed := uint64(*c.Seed)
		req.Seed = &seed
	}
	return req, nil
}

func (r *oaiChatRequest) native() (client.GenerateRequest, error) {
	budget := r.MaxTokens
	r.budgetParam = "max_tokens"
	if r.MaxCompletionTokens != nil {
		budget, r.budgetParam = r.MaxCompletionTokens, "max_completion_tokens"
	}
	req, err := r.oaiCommon.native(budget)
	if err != nil {
		return req, err
	}
	if len(r.Tools) > 0 && string(r.Tools) != "null" && string(r.Tools) != "[]" {
		return req, badParam("tools", "tools are not supported")
	}
	if len(r.Messages) == 0 {
		return req, badParam("messages", "messages is required")
	}
	for i, raw := range r.Messages {
		m, err := decodeMessage(i, raw)
		if err != nil {
			return req, err
		}
		req.Messages = append(req.Messages, m)
	}
	return req, nil
}

// decodeMessage reads messages[i]: an object with a string role and a
// content that is a string, a list of text parts or null. The role itself
// is checked by package serving, for the native API too.
func decodeMessage(i int, raw json.RawMessage) (client.ChatMessage, error) {
	field := fmt.Sprintf("messages[%d]", i)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return client.ChatMessage{}, badParam(field, field+": want an object with role and content")
	}
	var role string
	if r, ok := m["role"]; !ok {
		return client.ChatMessage{}, badParam(field+".role", field+".role is missing: want system, user or assistant")
	} else if err := json.Unmarshal(r, &role); err != nil {
		return client.ChatMessage{}, badParam(field+".role", field+".role: want a string (system, user or assistant)")
	}
	if role == "developer" { // OpenAI's newer name for the system role
		role = "system"
	}
	var content oaiContent
	if c, ok := m["content"]; !ok {
		return client.ChatMessage{}, badParam(field+".content", field+".content is missing")
	} else if err := json.Unmarshal(c, &content); err != nil {
		return client.ChatMessage{}, badParam(field+".content", fmt.Sprintf("%s.%v", field, err))
	}
	return client.ChatMessage{Role: role, Content: string(content)}, nil
}

func (r *oaiCompletionRequest) native() (client.GenerateRequest, error) {
	r.budgetParam = "max_tokens"
	req, err := r.oaiCommon.native(r.MaxTokens)
	if err != nil {
		return req, err
	}
	switch {
	case r.Echo:
		return req, badParam("echo", "echo is not supported")
	case r.Suffix != "":
		return req, badParam("suffix", "suffix is not supported")
	case r.BestOf != nil && *r.BestOf != 1:
		return req, badParam("best_of", "best_of: only 1 is supported")
	}
	var one string
	var many []string
	if err := json.Unmarshal(r.Prompt, &one); err == nil {
		req.Prompt = one
	} else if err := json.Unmarshal(r.Prompt, &many); err == nil && len(many) == 1 {
		req.Prompt = many[0]
	} else {
		return req, badParam("prompt", "prompt: want one string (token arrays and several prompts are not supported)")
	}
	if req.Prompt == "" {
		return req, badParam("prompt", "prompt must not be empty")
	}
	return req, nil
}

// oaiUsage is OpenAI's token usage.
type oaiUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func usageOf(u client.Usage) *oaiUsage {
	return &oaiUsage{u.PromptTokens, u.CompletionTokens, u.TotalTokens}
}

// oaiMessage is an assistant message or a streamed delta of one.
type oaiMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// oaiChoice is one choice of a response or a chunk: Message for chat
// responses, Delta for chat chunks, Text for text completions.
type oaiChoice struct {
	Index        int         `json:"index"`
	Message      *oaiMessage `json:"message,omitempty"`
	Delta        *oaiMessage `json:"delta,omitempty"`
	Text         *string     `json:"text,omitempty"`
	Logprobs     any         `json:"logprobs"`
	FinishReason *string     `json:"finish_reason"`
}

// oaiResponse is a response or a streamed chunk.
type oaiResponse struct {
	ID      string      `json:"id"`
	Object  string      `json:"object"`
	Created int64       `json:"created"`
	Model   string      `json:"model"`
	Choices []oaiChoice `json:"choices"`
	Usage   *oaiUsage   `json:"usage,omitempty"`
}

type oaiModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// oaiModelList is OpenAI's GET /v1/models body.
type oaiModelList struct {
	Object string     `json:"object"`
	Data   []oaiModel `json:"data"`
}

func (s *Server) openAIRoutes() {
	s.mux.HandleFunc("GET /v1/models", s.listOpenAIModels)
	s.mux.HandleFunc("GET /v1/models/{model...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("model")
		v, err := s.resolveModel(r.Context(), name)
		if err != nil {
			s.openAIFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, oaiModel{ID: name, Object: "model", Created: v.CreatedAt.Unix(), OwnedBy: "hone"})
	})
	s.mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var body oaiChatRequest
		if err := s.decodeLoose(r, &body); err != nil {
			s.openAIFail(w, r, err)
			return
		}
		req, err := body.native()
		if err != nil {
			s.openAIFail(w, r, err)
			return
		}
		s.complete(w, r, req, &body.oaiCommon, true)
	})
	s.mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) {
		var body oaiCompletionRequest
		if err := s.decodeLoose(r, &body); err != nil {
			s.openAIFail(w, r, err)
			return
		}
		req, err := body.native()
		if err != nil {
			s.openAIFail(w, r, err)
			return
		}
		s.complete(w, r, req, &body.oaiCommon, false)
	})
}

// listOpenAIModels lists every endpoint (by name), registered version
// ("c.s.m/N") and alias ("c.s.m@alias") as a model id.
func (s *Server) listOpenAIModels(w http.ResponseWriter, r *http.Request) {
	vs, err := s.cat.List(r.Context())
	if err != nil {
		s.openAIFail(w, r, err)
		return
	}
	data, err := s.endpointModels(r.Context())
	if err != nil {
		s.openAIFail(w, r, err)
		return
	}
	for _, v := range vs {
		id := versionID(v)
		data = append(data, oaiModel{ID: id, Object: "model", Created: v.CreatedAt.Unix(), OwnedBy: "hone"})
		base, _, _ := strings.Cut(id, "/")
		for _, a := range v.Aliases {
			data = append(data, oaiModel{ID: base + "@" + a, Object: "model", Created: v.CreatedAt.Unix(), OwnedBy: "hone"})
		}
	}
	writeJSON(w, http.StatusOK, oaiModelList{Object: "list", Data: data})
}

// completeWhole answers a completion as one JSON response.
func (s *Server) completeWhole(w http.ResponseWriter, r *http.Request, req client.GenerateRequest, head oaiResponse, defaultMax int,
	chat bool, fail func(error)) {
	res, err := s.generate(r.Context(), req, defaultMax, nil)
	if err != nil {
		fail(err)
		return
	}
	head.Model, head.Usage = res.Model, usageOf(res.Usage)
	choice := oaiChoice{FinishReason: &res.FinishReason}
	if chat {
		choice.Message = &oaiMessage{Role: "assistant", Content: &res.Text}
	} else {
		choice.Text = &res.Text
	}
	head.Choices = []oaiChoice{choice}
	writeJSON(w, http.StatusOK, head)
}

// complete answers a chat (chat true) or text completion, as one JSON
// response or, when asked, as server-sent events ending with [DONE].
func (s *Server) complete(w http.ResponseWriter, r *http.Request, req client.GenerateRequest, c *oaiCommon, chat bool) {
	head := oaiResponse{ID: "cmpl-" + randomID(), Object: "text_completion", Created: s.clock().Unix()}
	defaultMax := 16 // OpenAI's default for text completions
	if chat {
		head.ID, head.Object = "chatcmpl-"+randomID(), "chat.completion"
		defaultMax = 0 // the server's default
	}
	fail := func(err error) {
		if c.budgetParam != "max_tokens" && oaiParam(err) == "max_tokens" {
			err = paramError{c.budgetParam, err}
		}
		s.openAIFail(w, r, err)
	}
	if !c.Stream {
		s.completeWhole(w, r, req, head, defaultMax, chat, fail)
		return
	}
	if chat {
		head.Object = "chat.completion.chunk"
	}
	ev := &eventStream{w: w}
	// The stream starts with the first piece of text, so that a request
	// refused before any text (unknown model, bad messages) still gets its
	// HTTP status.
	start := func(model string) {
		if ev.started {
			return
		}
		ev.begin()
		head.Model = model
		if chat {
			empty := ""
			ev.send(chunk(head, oaiChoice{Delta: &oaiMessage{Role: "assistant", Content: &empty}}))
		}
	}
	res, err := s.generate(r.Context(), req, defaultMax, func(model, piece string) error {
		start(model)
		if chat {
			ev.send(chunk(head, oaiChoice{Delta: &oaiMessage{Content: &piece}}))
		} else {
			ev.send(chunk(head, oaiChoice{Text: &piece}))
		}
		return ev.err
	})
	if err != nil {
		if !ev.started {
			fail(err)
			return
		}
		code, name := s.openAIStatus(r, err)
		ev.send(map[string]any{"error": oaiError(code, name, oaiParam(err), s.publicMessage(r, code, err))})
		return
	}
	start(res.Model)
	last := oaiChoice{FinishReason: &res.FinishReason}
	if chat {
		last.Delta = &oaiMessage{}
	} else {
		empty := ""
		last.Text = &empty
	}
	ev.send(chunk(head, last))
	if c.StreamOptions != nil && c.StreamOptions.IncludeUsage {
		tail := head
		tail.Choices, tail.Usage = []oaiChoice{}, usageOf(res.Usage)
		ev.send(tail)
	}
	ev.done()
}

func chunk(head oaiResponse, c oaiChoice) oaiResponse {
	head.Choices = []oaiChoice{c}
	return head
}

// eventStream writes server-sent events; err is the first write error.
type eventStream struct {
	w       http.ResponseWriter
	started bool
	err     error
}

func (e *eventStream) begin() {
	e.started = true
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	e.w.WriteHeader(http.StatusOK)
}

func (e *eventStream) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		e.err = err
		return
	}
	e.write("data: " + string(b) + "\n\n")
}

func (e *eventStream) done() { e.write("data: [DONE]\n\n") }

func (e *eventStream) write(s string) {
	if e.err != nil {
		return
	}
	if _, err := e.w.Write([]byte(s)); err != nil {
		e.err = fmt.Errorf("stream to client: %w", err)
		return
	}
	if f, ok := e.w.(http.Flusher); ok {
		f.Flush()
	}
}

// decodeLoose reads a JSON body, ignoring unknown fields.
func (s *Server) decodeLoose(r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, s.max)).Decode(v); err != nil {
		return badRequest{fmt.Sprintf("request body: %v", err)}
	}
	return nil
}

// openAIStatus maps err with statusOf and names it as OpenAI does.
func (s *Server) openAIStatus(r *http.Request, err error) (int, string) {
	code, name := statusOf(err)
	if code == http.StatusNotFound {
		name = "model_not_found" // models are the only resource under /v1
	}
	return code, name
}

func (s *Server) openAIFail(w http.ResponseWriter, r *http.Request, err error) {
	code, name := s.openAIStatus(r, err)
	writeJSON(w, code, map[string]any{"error": oaiError(code, name, oaiParam(err), s.publicMessage(r, code, err))})
}

// oaiError is OpenAI's error object; param names the request field at
// fault ("" for none).
func oaiError(status int, code, param, msg string) map[string]any {
	typ := "invalid_request_error"
	switch {
	case status >= 500:
		typ = "server_error"
	case status == http.StatusTooManyRequests:
		typ = "requests" // OpenAI's type for request-rate limits
	}
	var p any
	if param != "" {
		p = param
	}
	return map[string]any{"message": msg, "type": typ, "param": p, "code": code}
}

// writeOpenAIError writes OpenAI's error body.
func writeOpenAIError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": oaiError(status, code, "", msg)})
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b) //nolint:errcheck // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}
